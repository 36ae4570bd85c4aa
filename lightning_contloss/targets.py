"""The target embedding table: the one source of truth for what the model regresses onto."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_contloss._arguments import bool_arg, check_allocation, int_arg, real_arg, seed_arg
from lightning_contloss._fingerprint import table_fingerprint
from lightning_contloss._ppmi import ppmi_svd
from lightning_contloss._vector_files import check_encoding, is_binary_name, read_rows
from lightning_contloss.functional._checks import ROW_BLOCK, nonfinite_per_row

__all__ = ["Coverage", "TargetEmbeddings"]

log = logging.getLogger(__name__)

OOVPolicy = Literal["random", "mean", "error"]


@dataclass
class Coverage:
    """How many vocabulary words a pretrained-vector file covered.

    Args:
        found: vocabulary words that had a vector in the file.
        total: size of the vocabulary.
        missing: the vocabulary words with no vector, in vocabulary order.
        file_rows: rows read from the file.
        zero: found words whose vector in the file is all zeros, in vocabulary order. They
            count as found, but a zero row has no direction: cosine decoding never returns
            it and the cosine-based losses cannot pull a prediction towards it.

    Example:
        >>> Coverage(found=3, total=4, missing=["zyx"], file_rows=10)
        Coverage(found=3/4 (75.00%), missing=['zyx'])
        >>> Coverage(found=3, total=3, file_rows=3, zero=["<pad>"])
        Coverage(found=3/3 (100.00%), missing=[], zero=['<pad>'])
    """

    found: int
    total: int
    missing: list[str] = field(default_factory=list)
    file_rows: int = 0
    zero: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.found / self.total if self.total else 0.0

    def __repr__(self) -> str:
        text = f"Coverage(found={self.found}/{self.total} ({100 * self.ratio:.2f}%), missing={_head(self.missing)}"
        return text + (f", zero={_head(self.zero)})" if self.zero else ")")


def _head(words: list[str], n: int = 10) -> str:
    more = f" (+{len(words) - n} more)" if len(words) > n else ""
    return f"{words[:n]}{more}"


def _normalize_(table: Tensor) -> Tensor:
    """``F.normalize(table, dim=-1)`` in place (the same values): no second V × D copy for a large table."""
    return table.div_(table.norm(dim=-1, keepdim=True).clamp_min(1e-12))


def _unit_sphere(num: int, dim: int, generator: torch.Generator) -> Tensor:
    # A normalised isotropic Gaussian is uniform on the sphere.
    return _normalize_(torch.randn(num, dim, generator=generator, dtype=torch.float32))


def _check_vocab(vocab: Sequence[str], size: int | None = None) -> list[str]:
    """``vocab`` as a list of distinct words, ``size`` of them when given."""
    if isinstance(vocab, str) or not isinstance(vocab, Iterable):
        raise TypeError(f"vocab must be a list of words, got {type(vocab).__name__}")
    words = list(vocab)
    bad = next((i for i, w in enumerate(words) if not isinstance(w, str)), None)
    if bad is not None:
        raise TypeError(
            f"vocab must hold words (str), but entry {bad} is {type(words[bad]).__name__} {words[bad]!r}; "
            "pass the words, not their ids"
        )
    if size is not None and len(words) != size:
        raise ValueError(
            f"the vocabulary has {len(words)} words but the table has {size} rows; "
            "pass one word per row, in row order"
        )
    seen: dict[str, int] = {}
    dupes: list[str] = []
    for i, w in enumerate(words):
        if w in seen and len(dupes) < 10:
            dupes.append(f"{w!r} (ids {seen[w]} and {i})")
        seen.setdefault(w, i)
    if dupes:
        raise ValueError(
            f"the vocabulary has duplicate words: {', '.join(dupes)}; every word must map to exactly one id"
        )
    return words


def _warn_zero_rows(weight: Tensor, special: Tensor, vocab: list[str] | None) -> None:
    """Warn about all-zero rows that decoding may be asked for: they have no direction."""
    zero = ~weight.any(dim=-1) & ~special
    if not bool(zero.any()):
        return
    ids = zero.nonzero().flatten().tolist()
    named = ids[:10] if vocab is None else [f"{i} ({vocab[i]!r})" for i in ids[:10]]
    more = f" (+{len(ids) - 10} more)" if len(ids) > 10 else ""
    warnings.warn(
        f"{len(ids)} rows of the target table are all zero: ids {', '.join(map(str, named))}{more}. A zero row "
        "has no direction, so cosine decoding never returns it and cosine losses cannot learn it; give those "
        "words a vector (e.g. from_file(..., oov='random') for missing ones) or mark them special",
        UserWarning,
        stacklevel=3,
    )


# Co-occurrence pairs are keyed as a * V + b in int64.
_MAX_CORPUS_VOCAB = 2**31 - 1


def _special_list(special_ids: object) -> list[int | str]:
    """``special_ids`` as a list; a single word or id is an error, not a sequence of characters."""
    if isinstance(special_ids, (str, bytes)) or not isinstance(special_ids, Iterable):
        raise TypeError(
            f"special_ids must be a list of ids or words, got {type(special_ids).__name__} {special_ids!r}; "
            "wrap a single one in a list, e.g. special_ids=['<pad>']"
        )
    return list(special_ids)


def _token_stream(token_ids: object) -> Tensor:
    """``token_ids`` as a flat int64 CPU tensor; float, bool or non-numeric ids are an error, not truncated."""
    if isinstance(token_ids, Tensor):
        if token_ids.is_floating_point() or token_ids.is_complex() or token_ids.dtype == torch.bool:
            raise TypeError(f"token_ids must be integer ids, got a {token_ids.dtype} tensor; round or cast it first")
        _check_materialised(token_ids, "token_ids")
        return token_ids.detach().to("cpu", torch.int64).flatten()
    try:
        array = np.asarray(token_ids)
    except (TypeError, ValueError):
        raise TypeError(f"token_ids must be a flat sequence of integer ids, got {type(token_ids).__name__}") from None
    if array.size == 0:
        return torch.zeros(0, dtype=torch.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"token_ids must be integer ids, got {array.dtype} values; round or cast them first")
    if array.dtype.kind == "u" and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"token id {array.max()} is too large for an int64 id")
    return torch.from_numpy(array.astype(np.int64).reshape(-1))


def _parse_extra_state(state: Any, size: int, what: str) -> tuple[list[str] | None, bool | None]:
    """The vocabulary and ``normalized`` flag of an extra-state dict; ``None`` for "keep the current one"."""
    if not isinstance(state, dict):
        raise ValueError(f"{what} must be a dict with 'vocab' and 'normalized', got {type(state).__name__}")
    vocab = state.get("vocab")
    if vocab is not None:
        if isinstance(vocab, str) or not isinstance(vocab, (list, tuple)):
            raise ValueError(f"{what} has a 'vocab' of type {type(vocab).__name__}; it must be a list of words")
        try:
            vocab = _check_vocab(vocab, size)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{what} does not fit these targets: {err}") from None
    normalized = state.get("normalized")
    if normalized is not None and not isinstance(normalized, bool):
        raise ValueError(f"{what} has 'normalized'={normalized!r}; it must be True or False")
    return vocab, normalized


def _check_materialised(tensor: Tensor, what: str) -> None:
    if tensor.is_meta:
        raise ValueError(
            f"{what} is on the meta device, so it has no values; build the targets from real data "
            "(materialise the model or load its checkpoint first)"
        )


def _check_table(weight: object, what: str, *, normalized: bool) -> Tensor:
    """The checks of every table, built (the constructor) or loaded (a checkpoint): ``weight`` as a tensor.

    A non-empty, materialised, finite, floating-point ``[V, D]`` tensor; with ``normalized``,
    every row has norm 1 (or 0: a zero row stays zero when normalised), to the precision of its dtype.
    """
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"{what} must be a 2-D [V, D] tensor, got {shape}")
    if weight.shape[0] == 0 or weight.shape[1] == 0:
        raise ValueError(f"{what} must have at least one row and one column, got {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor, got {weight.dtype}; call .float() first")
    _check_materialised(weight, what)
    bad = nonfinite_per_row(weight) > 0
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:10].tolist()
        raise ValueError(f"{what} has NaN or inf in rows {rows}; clean or drop those rows before building targets")
    if normalized:
        _check_unit_rows(weight, what)
    return weight


def _check_unit_rows(weight: Tensor, what: str) -> None:
    # A unit row stored in bf16 is off by up to half its eps; 1e-3 still catches any row that was
    # never normalised (raw word vectors have norms of 2 to 10).
    tol = max(1e-3, 4 * torch.finfo(weight.dtype).eps)
    acc = torch.float64 if weight.dtype == torch.float64 else torch.float32
    # A block at a time: a half-precision table is not copied whole to float32.
    norms = torch.cat([torch.linalg.vector_norm(block, dim=-1, dtype=acc) for block in weight.split(ROW_BLOCK)])
    bad = ((norms - 1).abs() > tol) & (norms != 0)
    if bool(bad.any()):
        ids = bad.nonzero().flatten()
        shown = ", ".join(f"{float(n):.3g}" for n in norms[ids[:3]])
        raise ValueError(
            f"{what} has rows {ids[:10].tolist()}{' …' if ids.numel() > 10 else ''} of norm {shown}, but "
            "normalized=True says every row has norm 1; normalise them first (weight = F.normalize(weight, dim=-1)) "
            "or save the table with normalized=False (TargetEmbeddings.from_tensor(weight, normalize=False))"
        )


class TargetEmbeddings(nn.Module):
    """A frozen ``[V, D]`` table of target embeddings plus an optional vocabulary.

    The table is a buffer: it goes into ``state_dict`` (so into checkpoints), moves with
    ``.to(device)`` and receives no gradient. The vocabulary and the marked special ids
    travel in the state dict too. Losses read the table for look-ups and negatives; decoders
    build their index from it and never return a marked special id.

    Args:
        weight: ``[V, D]`` float table.
        vocab: optional list of ``V`` distinct words, in row order.
        normalize: L2-normalise the rows (default). ``False`` keeps raw norms.
        special_ids: ids (ints, or words when ``vocab`` is given) to exclude from decoding,
            e.g. padding, ``<unk>`` or ``<eos>``.

    Example:
        >>> t = TargetEmbeddings.random(1000, 64, seed=0)
        >>> len(t), t.dim, tuple(t.weight.shape)
        (1000, 64, (1000, 64))
        >>> t(torch.tensor([[1, 2]])).shape
        torch.Size([1, 2, 64])
    """

    weight: Tensor
    special_mask: Tensor

    def __init__(
        self,
        weight: Tensor,
        vocab: Sequence[str] | None = None,
        *,
        normalize: bool = True,
        special_ids: Iterable[int | str] = (),
    ) -> None:
        super().__init__()
        # Rows are normalised here, so only a checkpoint's table is held to unit norms.
        weight = _check_table(weight, "weight", normalized=False)
        normalize = bool_arg(normalize, "normalize")
        specials = _special_list(special_ids)
        words = _check_vocab(vocab, weight.shape[0]) if vocab is not None else None
        table = weight.detach().clone()
        if normalize:
            table = _normalize_(table)
        self.register_buffer("weight", table)
        self.register_buffer("special_mask", torch.zeros(table.shape[0], dtype=torch.bool, device=table.device))
        self.normalized = normalize
        self._vocab: list[str] | None = words
        self._token_to_id: dict[str, int] | None = {w: i for i, w in enumerate(words)} if words else None
        self.coverage: Coverage | None = None
        self.mark_special(*specials)
        _warn_zero_rows(self.weight, self.special_mask, words)

    # ------------------------------------------------------------------ basic views
    @property
    def dim(self) -> int:
        """D, the embedding dimension the head must regress."""
        return int(self.weight.shape[1])

    def __len__(self) -> int:
        return int(self.weight.shape[0])

    @property
    def vocab(self) -> list[str] | None:
        """The words in row order, or ``None`` when the table has no vocabulary."""
        return self._vocab

    @property
    def id_to_token(self) -> list[str]:
        """Row id to word; raises when the table was built without a vocabulary."""
        if self._vocab is None:
            raise ValueError("these targets have no vocabulary; pass vocab=[...] when building them")
        return self._vocab

    @property
    def token_to_id(self) -> dict[str, int]:
        """Word to row id; raises when the table was built without a vocabulary."""
        if self._token_to_id is None:
            raise ValueError("these targets have no vocabulary; pass vocab=[...] when building them")
        return self._token_to_id

    @property
    def special_ids(self) -> Tensor:
        """The marked ids (int64, sorted), which decoders never return."""
        self._require_values("special_ids")
        return self.special_mask.nonzero().flatten()

    def _require_values(self, what: str) -> None:
        if self.weight.is_meta:
            raise ValueError(
                f"these targets are on the meta device, so {what} has no values; "
                "materialise them first (e.g. .to_empty(device='cpu') and load a checkpoint)"
            )

    def mark_special(self, *ids: int | str) -> TargetEmbeddings:
        """Mark ids (or words, when there is a vocabulary) as special: excluded from decoding.

        Example:
            >>> t = TargetEmbeddings.random(5, 4, vocab=["<pad>", "a", "b", "c", "<eos>"])
            >>> t.mark_special("<pad>", 4).special_ids.tolist()
            [0, 4]
        """
        resolved: list[int] = []
        for i in ids:
            if isinstance(i, str):
                if self._token_to_id is None:
                    raise ValueError(f"cannot mark {i!r}: these targets have no vocabulary; mark ids instead")
                if i not in self._token_to_id:
                    raise ValueError(f"cannot mark {i!r} as special: it is not in the vocabulary")
                resolved.append(self._token_to_id[i])
            else:
                try:
                    j = int_arg(i, "a special id")
                except TypeError:
                    raise TypeError(
                        f"special ids must be int ids or words (str), got {type(i).__name__} {i!r}"
                    ) from None
                if not 0 <= j < len(self):
                    raise ValueError(f"special id {j} is out of range; valid ids are 0..{len(self) - 1}")
                resolved.append(j)
        if resolved:
            self.special_mask[torch.tensor(resolved, device=self.special_mask.device)] = True
        return self

    def forward(self, ids: Tensor) -> Tensor:
        """Look up target rows: ``ids [...] -> [..., D]``, ids integers in ``0..V-1``.

        Example:
            >>> TargetEmbeddings.random(5, 3)(torch.tensor([7]))
            Traceback (most recent call last):
            ...
            ValueError: ids [7] are out of range: the target table has 5 rows, so valid ids are 0..4
        """
        if not isinstance(ids, Tensor):
            raise TypeError(f"ids must be an integer tensor of token ids, got {type(ids).__name__}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"ids must be an integer tensor of token ids, got {ids.dtype}; round or cast it first")
        if ids.dtype not in (torch.int32, torch.int64):
            ids = ids.long()
        if ids.device != self.weight.device and not self.weight.is_meta:
            raise ValueError(
                f"ids are on {ids.device} but the target table is on {self.weight.device}; move them to one device"
            )
        if ids.numel() and not ids.is_meta:
            bad = (ids < 0) | (ids >= len(self))
            if bool(bad.any()):
                raise ValueError(
                    f"ids {ids[bad].unique()[:5].tolist()} are out of range: the target table has {len(self)} "
                    f"rows, so valid ids are 0..{len(self) - 1}"
                )
        return F.embedding(ids, self.weight)

    def content_hash(self) -> str:
        """A hex digest of the table and the special mask: equal tables give equal hashes.

        Example:
            >>> TargetEmbeddings.random(10, 4).content_hash() == TargetEmbeddings.random(10, 4).content_hash()
            True
        """
        self._require_values("content_hash()")
        return table_fingerprint(self.weight, self.special_mask)

    def extra_repr(self) -> str:
        vocab = "with vocab" if self._vocab is not None else "no vocab"
        specials = "?" if self.special_mask.is_meta else int(self.special_mask.sum())
        return f"V={len(self)}, D={self.dim}, normalized={self.normalized}, {vocab}, specials={specials}"

    # ------------------------------------------------------------------ checkpointing
    def get_extra_state(self) -> dict[str, Any]:
        """The vocabulary and the ``normalized`` flag, saved in ``state_dict`` as ``_extra_state``."""
        return {"vocab": self._vocab, "normalized": self.normalized}

    def set_extra_state(self, state: Any) -> None:
        """Restore the vocabulary and ``normalized`` from :meth:`get_extra_state`'s dict.

        A vocabulary of ``None``, or none at all (older checkpoints), keeps the current one:
        loading never erases a vocabulary. A vocabulary that does not fit this table (not
        ``V`` distinct strings) raises ``ValueError`` and changes nothing.
        """
        vocab, normalized = _parse_extra_state(state, len(self), "the state dict")
        if vocab is not None:
            self._vocab = vocab
            self._token_to_id = {w: i for i, w in enumerate(vocab)}
        if normalized is not None:
            self.normalized = normalized

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Everything is checked before anything is copied, so a rejected state dict leaves the
        # table, the special mask and the vocabulary as they were.
        self._check_state(state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        # No extra state (a checkpoint from before it existed) keeps the vocabulary, like a
        # vocabulary of None, instead of failing a strict load.
        extra = prefix + "_extra_state"
        if extra in missing_keys:
            missing_keys.remove(extra)

    def _check_state(self, state_dict: dict[str, Any], prefix: str) -> None:
        """Give a checkpoint's table the constructor's checks (and warnings) before anything is copied."""
        shape = tuple(self.weight.shape)
        keys = {name: prefix + name for name in ("weight", "special_mask", "_extra_state")}
        mask = state_dict.get(keys["special_mask"], self.special_mask)
        if not isinstance(mask, Tensor) or tuple(mask.shape) != shape[:1] or mask.dtype != torch.bool:
            got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(
                f"the state dict's {keys['special_mask']!r} is {got} but must be a bool ({shape[0]},) mask, "
                "one entry per row"
            )
        vocab, normalized = self._vocab, self.normalized
        if keys["_extra_state"] in state_dict:
            words, flag = _parse_extra_state(
                state_dict[keys["_extra_state"]], shape[0], f"the state dict's {keys['_extra_state']!r}"
            )
            vocab = words if words is not None else vocab
            normalized = flag if flag is not None else normalized
        if keys["weight"] not in state_dict:
            return
        weight = state_dict[keys["weight"]]
        if not isinstance(weight, Tensor) or tuple(weight.shape) != shape or not weight.is_floating_point():
            got = f"{weight.dtype} {tuple(weight.shape)}" if isinstance(weight, Tensor) else type(weight).__name__
            raise ValueError(
                f"the state dict's {keys['weight']!r} is {got} but these targets are a float {shape} table; "
                f"build targets of that shape before loading, e.g. TargetEmbeddings.random(V, D)"
            )
        _check_table(weight, f"the state dict's {keys['weight']!r}", normalized=normalized)
        # Targets built on the meta device have no marks yet: all rows count as decodable.
        special = torch.zeros(shape[0], dtype=torch.bool) if mask.is_meta else mask
        _warn_zero_rows(weight, special.to(weight.device), vocab)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def random(
        cls,
        num_embeddings: int,
        dim: int,
        seed: int = 0,
        *,
        vocab: Sequence[str] | None = None,
        special_ids: Iterable[int | str] = (),
    ) -> TargetEmbeddings:
        """Fixed random targets, uniform on the unit sphere (Tokarchuk & Niculae, 2024).

        Args:
            num_embeddings: V.
            dim: D.
            seed: the same seed gives the same table on every machine.

        Example:
            >>> t = TargetEmbeddings.random(4, 3, seed=1)
            >>> torch.allclose(t.weight.norm(dim=-1), torch.ones(4))
            True
        """
        num_embeddings, dim = int_arg(num_embeddings, "num_embeddings"), int_arg(dim, "dim")
        if num_embeddings <= 0 or dim <= 0:
            raise ValueError(f"random targets need V > 0 and D > 0, got V={num_embeddings}, D={dim}")
        g = torch.Generator().manual_seed(seed_arg(seed))
        what = f"a random table of num_embeddings={num_embeddings} × dim={dim}"
        check_allocation(num_embeddings * dim * 4, what, "a smaller V or D")
        return cls(_unit_sphere(num_embeddings, dim, g), vocab, special_ids=special_ids)

    @classmethod
    def from_tensor(
        cls,
        weight: Tensor,
        vocab: Sequence[str] | None = None,
        *,
        normalize: bool = True,
        special_ids: Iterable[int | str] = (),
    ) -> TargetEmbeddings:
        """Targets from a ``[V, D]`` tensor (copied, detached).

        Example:
            >>> TargetEmbeddings.from_tensor(torch.eye(3), vocab=["a", "b", "c"]).token_to_id["b"]
            1
        """
        return cls(weight, vocab, normalize=normalize, special_ids=special_ids)

    @classmethod
    def from_embedding(
        cls,
        embedding: nn.Embedding,
        vocab: Sequence[str] | None = None,
        *,
        normalize: bool = True,
        special_ids: Iterable[int | str] = (),
    ) -> TargetEmbeddings:
        """A frozen copy of a model's input embedding; its ``padding_idx`` is marked special.

        Example:
            >>> emb = torch.nn.Embedding(10, 8, padding_idx=0)
            >>> TargetEmbeddings.from_embedding(emb).special_ids.tolist()
            [0]
        """
        if not isinstance(embedding, nn.Embedding):
            raise ValueError(
                f"from_embedding takes an nn.Embedding, got {type(embedding).__name__}; for a plain tensor "
                "use from_tensor(weight)"
            )
        specials = _special_list(special_ids)
        if embedding.padding_idx is not None:
            specials.append(int(embedding.padding_idx))
        return cls(embedding.weight.detach().float(), vocab, normalize=normalize, special_ids=specials)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        vocab: Sequence[str],
        *,
        oov: OOVPolicy = "random",
        normalize: bool = True,
        binary: bool | None = None,
        seed: int = 0,
        special_ids: Iterable[int | str] = (),
        encoding: str = "utf-8",
    ) -> TargetEmbeddings:
        """Targets for ``vocab`` read from a word2vec / GloVe / fastText vector file.

        Text files have one ``word v1 ... vD`` line per word, with an optional ``count dim``
        header (word2vec, fastText). Binary word2vec files (``binary=True``, or a ``.bin``
        suffix) are read too; gzip files are decompressed on the fly. The file is streamed:
        only rows of vocabulary words are kept, written straight into the ``[V, D]`` table.
        ``result.coverage`` says how many words were found and lists those that were not.
        A damaged or misread file raises a ``ValueError`` naming the file, the line or entry,
        and the fix (``encoding=``, ``binary=``, downloading it again).

        Args:
            path: the vector file.
            vocab: the V words of the output vocabulary, in id order.
            oov: what a word missing from the file gets: ``"random"`` (a seeded random
                direction, scaled to the mean norm of the found rows), ``"mean"`` (the mean of
                the found rows) or ``"error"`` (raise, listing missing words).
            normalize: L2-normalise the rows.
            binary: force binary (True) or text (False); ``None`` decides by the suffix.
            seed: seed of the random OOV rows.
            special_ids: ids or words to exclude from decoding.
            encoding: the file's text encoding (of the words, in a binary file; bytes that
                are not valid there become U+FFFD, so those words are reported missing).

        Example:
            >>> import tempfile, pathlib
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "vec.txt"
            >>> _ = p.write_text("the 1 0 0\\ncat 0 1 0\\n")
            >>> t = TargetEmbeddings.from_file(p, ["the", "cat", "dog"])
            >>> t.coverage
            Coverage(found=2/3 (66.67%), missing=['dog'])
        """
        if oov not in ("random", "mean", "error"):
            raise ValueError(f"oov must be 'random', 'mean' or 'error', got {oov!r}")
        encoding = check_encoding(encoding)
        seed = seed_arg(seed)
        if binary is not None:
            bool_arg(binary, "binary")
        normalize = bool_arg(normalize, "normalize")
        special_ids = _special_list(special_ids)
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")
        path = Path(path)
        if not path.exists():
            raise ValueError(f"vector file {str(path)!r} does not exist")
        if not path.is_file():
            raise ValueError(f"vector file {str(path)!r} is not a regular file; pass the path of the vector file")
        words = _check_vocab(vocab)
        if not words:
            raise ValueError("the vocabulary is empty; pass the words of the output vocabulary")
        if binary is None:
            binary = is_binary_name(path)
        table, found, rows = read_rows(path, words, binary=binary, encoding=encoding)
        missing = [w for w, f in zip(words, found) if not f]
        zero = [w for w, z in zip(words, found & ~table.any(axis=1)) if z]
        coverage = Coverage(found=int(found.sum()), total=len(words), missing=missing, file_rows=rows, zero=zero)
        if missing:
            if oov == "error":
                raise ValueError(
                    f"{len(missing)} of {len(words)} vocabulary words are not in {path.name}, e.g. "
                    f"{missing[:10]}; pass oov='random' or oov='mean' to fill them"
                )
            if not found.any():
                raise ValueError(
                    f"none of the {len(words)} vocabulary words is in {path.name}; "
                    "check the file and the vocabulary's casing"
                )
            fill = torch.from_numpy(table[found])
            if oov == "mean":
                table[~found] = fill.mean(dim=0).numpy()
            else:
                g = torch.Generator().manual_seed(seed)
                scale = float(fill.norm(dim=-1).mean())
                table[~found] = (_unit_sphere(len(missing), table.shape[1], g) * scale).numpy()
        log.info("loaded %s from %s: %r", table.shape, path, coverage)
        result = cls(torch.from_numpy(table), words, normalize=normalize, special_ids=special_ids)
        result.coverage = coverage
        return result

    @classmethod
    def from_corpus(
        cls,
        token_ids: Tensor | np.ndarray | Sequence[int],
        vocab_size: int,
        dim: int,
        window: int = 5,
        *,
        vocab: Sequence[str] | None = None,
        alpha: float = 0.75,
        niter: int = 6,
        seed: int = 0,
        special_ids: Iterable[int | str] = (),
    ) -> TargetEmbeddings:
        """Targets from the corpus itself: PPMI co-occurrence followed by a truncated SVD.

        Counts symmetric co-occurrences within ``window`` tokens (weighted by 1/distance),
        turns them into positive PMI with context-distribution smoothing ``alpha`` (Levy et al.,
        2015), and keeps ``U·sqrt(S)`` of a randomized rank-``dim`` SVD. Everything is sparse,
        so a 1M-token corpus with a 10k vocabulary takes seconds. Ids never seen in the corpus
        get a seeded random direction.

        Args:
            token_ids: ``[N]`` ids of the training text (a flat stream).
            vocab_size: V.
            dim: D (must be < V).
            window: context half-width.
            alpha: smoothing exponent of the context distribution.
            niter: power iterations of the randomized SVD.
            seed: seed of the SVD and of the rows of unseen ids.

        Example:
            >>> ids = torch.randint(0, 50, (5000,), generator=torch.Generator().manual_seed(0))
            >>> TargetEmbeddings.from_corpus(ids, vocab_size=50, dim=8).weight.shape
            torch.Size([50, 8])
        """
        vocab_size, dim = int_arg(vocab_size, "vocab_size"), int_arg(dim, "dim")
        window, niter = int_arg(window, "window"), int_arg(niter, "niter", minimum=0)
        alpha, seed = real_arg(alpha, "alpha", 0.0, 1.0), seed_arg(seed)
        ids = _token_stream(token_ids)
        if ids.numel() < 2:
            raise ValueError("from_corpus needs a corpus of at least two tokens")
        if not 0 < dim < vocab_size:
            raise ValueError(f"dim must be in 1..vocab_size-1, got dim={dim}, vocab_size={vocab_size}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
            raise ValueError(
                f"token ids span {int(ids.min())}..{int(ids.max())} but vocab_size={vocab_size}; "
                f"valid ids are 0..{vocab_size - 1}"
            )
        if vocab_size > _MAX_CORPUS_VOCAB:
            raise ValueError(f"vocab_size must be at most {_MAX_CORPUS_VOCAB} for corpus targets, got {vocab_size}")
        # The randomized SVD holds a few dense [V, dim + 10] float32 factors at once.
        factors = 4 * vocab_size * (dim + 10) * 4
        check_allocation(factors, f"the PPMI-SVD of vocab_size={vocab_size}, dim={dim}", "a smaller vocab_size or dim")
        emb = ppmi_svd(ids, vocab_size, dim, window, alpha, niter, seed)
        unseen = emb.norm(dim=-1) == 0
        if bool(unseen.all()):
            raise ValueError(
                f"token_ids ({ids.numel()} tokens) has no pair of tokens with positive PMI within window={window}, "
                "so there is nothing to factorise; pass a longer, more varied corpus, or use random targets"
            )
        if bool(unseen.any()):
            g = torch.Generator().manual_seed(seed)
            emb[unseen] = _unit_sphere(int(unseen.sum()), dim, g) * float(emb[~unseen].norm(dim=-1).mean())
        return cls(emb, vocab, special_ids=special_ids)

    def mix(self, other: TargetEmbeddings, alpha: float | Tensor) -> TargetEmbeddings:
        """Row-wise mixture ``normalize((1 - alpha)·self + alpha·other)`` of two tables.

        Tokarchuk & Niculae (2024) found random targets best for rare words and pretrained
        ones competitive for frequent words; a per-token ``alpha`` (``[V]``, e.g. 1 for rare
        and 0 for frequent ids) gives their mixed strategy, a float a uniform blend. Both
        tables are normalised first so neither dominates by scale. Vocabulary and special ids
        are kept from ``self``.

        Args:
            other: a table of the same ``[V, D]`` shape.
            alpha: weight of ``other``, a float or a ``[V]`` tensor, in [0, 1].

        Example:
            >>> a, b = TargetEmbeddings.random(10, 4, seed=0), TargetEmbeddings.random(10, 4, seed=1)
            >>> torch.allclose(a.mix(b, 0.0).weight, a.weight)
            True
        """
        if not isinstance(other, TargetEmbeddings):
            raise TypeError(f"other must be a TargetEmbeddings, got {type(other).__name__}")
        self._require_values("mix()")
        other._require_values("mix()")
        if other.weight.shape != self.weight.shape:
            raise ValueError(
                f"cannot mix a {tuple(self.weight.shape)} table with a {tuple(other.weight.shape)} one; "
                "both need the same V and D"
            )
        if isinstance(alpha, bool) or not isinstance(alpha, (Real, Tensor, Sequence, np.ndarray)):
            raise TypeError(f"alpha must be a float or a [V] tensor, got {type(alpha).__name__}")
        try:
            a = torch.as_tensor(alpha, dtype=self.weight.dtype, device=self.weight.device)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"alpha must be a float or a [V] tensor of floats, got {alpha!r}") from None
        if a.dim() == 1:
            if a.shape[0] != len(self):
                raise ValueError(f"per-token alpha has {a.shape[0]} entries but the table has {len(self)} rows")
            a = a[:, None]
        elif a.dim() != 0:
            raise ValueError(f"alpha must be a float or a [V] tensor, got shape {tuple(a.shape)}")
        if not bool(((a >= 0) & (a <= 1)).all()):
            raise ValueError("alpha must lie in [0, 1] (NaN is not allowed)")
        mixed = (1 - a) * F.normalize(self.weight, dim=-1) + a * F.normalize(other.weight.to(self.weight), dim=-1)
        return type(self)(mixed, self._vocab, normalize=True, special_ids=self.special_ids.tolist())
