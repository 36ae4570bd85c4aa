"""Subword (BPE) vocabularies for the translation example, trained offline with Hugging Face ``tokenizers``.

A :class:`SubwordVocabulary` is a :class:`~lightning_contloss.examples.data.Vocabulary` whose
words are BPE pieces, with the translation specials ``<pad> <unk> <eos> <bos>`` at ids 0-3 (as
the word-level target vocabulary has them), so models, batches and checkpoints treat both kinds
alike. It is trained on one side's training sentences and saved as one JSON file that also
records what it was trained on (a SHA-256 of the lines, the size asked for, the case folding);
loading checks that record against the data, so a file trained on another corpus, split or
language is refused rather than silently used. :func:`subword_vocabulary` trains once and
reloads from a cache folder after that. ``tokenizers`` is an optional extra:
``pip install 'lightning-contloss[mt]'``.

Text is NFC-normalised, lower-cased (as the word-level :func:`tokenize` does, so a word-level
and a BPE model learn the same task), runs of whitespace become one space; the pre-tokenizer
marks word starts with ``▁`` and splits punctuation off, and BPE merges within what is left.
Decoding joins the pieces and turns ``▁`` back into spaces, so ``decode_text(encode_text(s))``
is ``s`` after that normalisation (characters never seen in training come back as ``<unk>``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from lightning_contloss.examples.data import BOS, EOS, PAD, UNK, Vocabulary

__all__ = ["SUBWORD_SPECIALS", "SubwordVocabulary", "parse_vocab", "subword_vocabulary", "text_fingerprint"]

SUBWORD_SPECIALS = (PAD, UNK, EOS, BOS)
_FORMAT = "lightning-contloss-bpe/1"
_WORD_START = "\u2581"  # ▁, SentencePiece's word-start mark
# Pairs seen once are not merged: a piece made for one occurrence is noise in the table.
_MIN_FREQUENCY = 2
_SPEC = re.compile(r"bpe-([1-9][0-9]*)(k?)")


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as err:
        raise ImportError(
            "subword vocabularies come from the 'tokenizers' package; install it with: "
            "pip install 'lightning-contloss[mt]'"
        ) from err
    return tokenizers


def parse_vocab(vocab: str) -> int | None:
    """The BPE size a vocabulary choice asks for: ``None`` for ``"word"``, N for ``"bpe-N"`` or ``"bpe-Nk"``.

    Example:
        >>> parse_vocab("word"), parse_vocab("bpe-8k"), parse_vocab("bpe-500")
        (None, 8000, 500)
    """
    if vocab == "word":
        return None
    match = _SPEC.fullmatch(vocab) if isinstance(vocab, str) else None
    if match is None:
        raise ValueError(f"vocab must be 'word' or 'bpe-<size>' such as 'bpe-8k' or 'bpe-32000', got {vocab!r}")
    size = int(match.group(1)) * (1000 if match.group(2) else 1)
    if size <= len(SUBWORD_SPECIALS):
        raise ValueError(
            f"a BPE vocabulary needs more than {len(SUBWORD_SPECIALS)} entries (its specials), got {vocab!r}"
        )
    return size


def text_fingerprint(lines: Sequence[str]) -> str:
    """SHA-256 (hex) of the lines, each ended by a newline: what a tokenizer file records it was trained on.

    Example:
        >>> text_fingerprint(["a", "b"]) == text_fingerprint(["a", "b"]) != text_fingerprint(["a b"])
        True
    """
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


class SubwordVocabulary(Vocabulary):
    """A BPE vocabulary: the pieces of a Hugging Face ``tokenizers`` BPE model, ``<pad> <unk> <eos> <bos>`` first.

    Build one with :meth:`train`, :meth:`load` or :func:`subword_vocabulary`; the constructor
    takes a trained tokenizer's JSON and the record of what it was trained on.

    Args:
        tokenizer_json: the ``tokenizers.Tokenizer`` as JSON (``Tokenizer.to_str()``).
        size: the vocabulary size asked for at training (the table may be smaller: training stops
            when no pair occurs twice).
        lowercase: whether the tokenizer lower-cases its input.
        fingerprint: :func:`text_fingerprint` of the training lines.
        lines: how many lines it was trained on.

    Example:
        >>> lines = ["the cat sat on the mat.", "the dog sat on the log.", "a cat and a dog."] * 5
        >>> v = SubwordVocabulary.train(lines, size=60)
        >>> v.words[:4], v.eos_id, v.bos_id
        (['<pad>', '<unk>', '<eos>', '<bos>'], 2, 3)
        >>> v.decode_text(v.encode_text("The  cat sat."))
        'the cat sat.'
    """

    def __init__(self, tokenizer_json: str, *, size: int, lowercase: bool, fingerprint: str, lines: int) -> None:
        tok = _tokenizers().Tokenizer.from_str(tokenizer_json)
        words = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
        if words[: len(SUBWORD_SPECIALS)] != list(SUBWORD_SPECIALS):
            raise ValueError(
                f"a subword vocabulary needs the specials {list(SUBWORD_SPECIALS)} at ids 0-3, but this tokenizer "
                f"starts with {words[:4]}; train it with SubwordVocabulary.train"
            )
        super().__init__(words, specials=SUBWORD_SPECIALS)
        self._tokenizer = tok
        self.size = size
        self.lowercase = lowercase
        self.fingerprint = fingerprint
        self.lines = lines

    def __repr__(self) -> str:
        return f"SubwordVocabulary(size={len(self)}, asked={self.size}, lowercase={self.lowercase})"

    # ------------------------------------------------------------------ building
    @classmethod
    def train(cls, lines: Sequence[str], size: int, *, lowercase: bool = True) -> SubwordVocabulary:
        """Train a BPE tokenizer of at most ``size`` entries (specials included) on ``lines``.

        Args:
            lines: one side's training sentences.
            size: the vocabulary size to reach; a small corpus may stop short of it.
            lowercase: lower-case the text first (the word-level tokenizer does).
        """
        if size <= len(SUBWORD_SPECIALS):
            raise ValueError(f"size must be more than {len(SUBWORD_SPECIALS)} (the specials), got {size}")
        lines = list(lines)
        if not any(line.strip() for line in lines):
            raise ValueError("no text to train a BPE vocabulary on; pass the training sentences")
        tk = _tokenizers()
        tok = tk.Tokenizer(tk.models.BPE(unk_token=UNK))
        norm = [tk.normalizers.NFC(), *([tk.normalizers.Lowercase()] if lowercase else [])]
        tok.normalizer = tk.normalizers.Sequence(
            [*norm, tk.normalizers.Replace(tk.Regex(r"\s+"), " "), tk.normalizers.Strip()]
        )
        # Punctuation is split off as the word tokenizer does, so "earth." and "earth," share "▁earth".
        tok.pre_tokenizer = tk.pre_tokenizers.Sequence(
            [tk.pre_tokenizers.Metaspace(_WORD_START, prepend_scheme="always"), tk.pre_tokenizers.Punctuation()]
        )
        tok.decoder = tk.decoders.Metaspace(_WORD_START, prepend_scheme="always")
        trainer = tk.trainers.BpeTrainer(
            vocab_size=size, min_frequency=_MIN_FREQUENCY, special_tokens=list(SUBWORD_SPECIALS), show_progress=False
        )
        tok.train_from_iterator(lines, trainer)
        return cls(tok.to_str(), size=size, lowercase=lowercase, fingerprint=text_fingerprint(lines), lines=len(lines))

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary to ``path`` (JSON; written to a temporary file first, then renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.state()), encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(
        cls, path: str | Path, *, lines: Sequence[str] | None = None, size: int | None = None
    ) -> SubwordVocabulary:
        """Read a vocabulary saved by :meth:`save`; with ``lines``/``size``, check it was trained for them.

        Args:
            path: the file.
            lines: the training sentences it must have been trained on (see :meth:`check`).
            size: the vocabulary size it must have been trained for.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(
                f"no tokenizer file at {str(path)!r}; train one with SubwordVocabulary.train(lines, size).save(path), "
                "or pass no tokenizer file so the datamodule trains (and caches) it"
            )
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            vocab = cls.from_state(state)
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{str(path)!r} is not a subword vocabulary saved by SubwordVocabulary.save ({err}); "
                "delete it and train again"
            ) from None
        vocab.check(lines=lines, size=size, name=str(path))
        return vocab

    def check(
        self, *, lines: Sequence[str] | None = None, size: int | None = None, name: str = "the tokenizer"
    ) -> None:
        """Raise unless this vocabulary was trained for ``size`` entries on exactly ``lines``.

        Args:
            lines: the training sentences of the side it is used for.
            size: the vocabulary size asked for.
            name: how the error names the vocabulary (its file).
        """
        if size is not None and size != self.size:
            raise ValueError(
                f"{name} was trained for a bpe-{self.size} vocabulary but bpe-{size} was asked for; "
                f"ask for vocab='bpe-{self.size}' or train a tokenizer of size {size}"
            )
        if lines is not None and text_fingerprint(lines) != self.fingerprint:
            raise ValueError(
                f"{name} was trained on other text than these {len(lines)} training sentences (it saw {self.lines}): "
                "a tokenizer of the other language, another corpus or another split; pass the tokenizer trained on "
                "this side's training split, or none so that one is trained"
            )

    def state(self) -> dict[str, Any]:
        """What :meth:`save` writes and a checkpoint keeps: the tokenizer and its training record."""
        return {
            "format": _FORMAT,
            "size": self.size,
            "lowercase": self.lowercase,
            "data": {"sha256": self.fingerprint, "lines": self.lines},
            "tokenizer": json.loads(self._tokenizer.to_str()),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SubwordVocabulary:
        """The vocabulary of a :meth:`state` dictionary."""
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"expected format {_FORMAT!r}, found {found!r}")
        return cls(
            json.dumps(state["tokenizer"]),
            size=int(state["size"]),
            lowercase=bool(state["lowercase"]),
            fingerprint=str(state["data"]["sha256"]),
            lines=int(state["data"]["lines"]),
        )

    # ------------------------------------------------------------------ text
    def pieces(self, text: str) -> list[str]:
        """The BPE pieces of ``text`` (word starts marked ``▁``).

        Example:
            >>> v = SubwordVocabulary.train(["the cat sat.", "the cat ran."] * 3, size=30)
            >>> v.pieces("The cat.")
            ['▁the', '▁cat', '.']
        """
        return list(self._tokenizer.encode(text, add_special_tokens=False).tokens)

    def encode_text(self, text: str) -> list[int]:
        """The ids of ``text``'s pieces (no ``<eos>``)."""
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode_text(self, ids: Sequence[int] | Tensor) -> str:
        """Detokenised text of ids: pieces joined, ``▁`` turned back into spaces (``<unk>`` kept as is)."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        return str(self._tokenizer.decoder.decode(self.decode(ids)))


def _cache_name(size: int, lowercase: bool, fingerprint: str) -> str:
    return f"bpe-{size}-{'lower' if lowercase else 'cased'}-{fingerprint[:16]}.json"


def subword_vocabulary(
    lines: Sequence[str], size: int, cache_dir: str | Path | None = None, *, lowercase: bool = True
) -> SubwordVocabulary:
    """A BPE vocabulary of ``lines``: loaded from ``cache_dir`` when trained before, else trained (and saved there).

    The file is named by the size, the case folding and the lines' fingerprint, so other data or
    another size never reuses it. ``cache_dir=None`` trains without saving.

    Args:
        lines: one side's training sentences.
        size: vocabulary size (specials included).
        cache_dir: folder of cached tokenizer files, or ``None``.
        lowercase: lower-case the text first.

    Example:
        >>> import tempfile
        >>> lines = ["the cat sat.", "the cat ran."] * 3
        >>> with tempfile.TemporaryDirectory() as d:
        ...     a = subword_vocabulary(lines, 30, d)
        ...     b = subword_vocabulary(lines, 30, d)  # read back from the file
        ...     names = [p.name for p in Path(d).iterdir()]
        >>> a.words == b.words, len(names), names[0].startswith("bpe-30-lower-")
        (True, 1, True)
    """
    if cache_dir is None:
        return SubwordVocabulary.train(lines, size, lowercase=lowercase)
    if Path(cache_dir).exists() and not Path(cache_dir).is_dir():
        raise ValueError(f"the tokenizer cache {str(cache_dir)!r} is not a folder; pass a folder (made if missing)")
    path = Path(cache_dir) / _cache_name(size, lowercase, text_fingerprint(lines))
    if path.is_file():
        return SubwordVocabulary.load(path, lines=lines, size=size)
    vocab = SubwordVocabulary.train(lines, size, lowercase=lowercase)
    vocab.save(path)
    return vocab
