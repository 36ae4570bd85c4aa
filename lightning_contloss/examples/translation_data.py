"""Example translation data: a word tokenizer, the committed Bible corpus and a length-bucketed datamodule.

Each side gets its own vocabulary from the training split: word-level (sentences tokenized by
:func:`tokenize` into lower-cased words and punctuation marks, a
:class:`~lightning_contloss.examples.data.Vocabulary` of the frequent words) or BPE (a
:class:`~lightning_contloss.examples.subword.SubwordVocabulary`). :func:`encode_text` and
:func:`decode_ids` turn text into ids and ids back into detokenised text for either kind.
Batches are :class:`TranslationBatch` triples of padded id tensors. The package ships one
aligned corpus, :func:`bible_corpus` (Spanish Reina-Valera 1909 and English King James verses,
both public domain) with a fixed, stored train/valid/test split.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_contloss.examples.data import BOS, EOS, PAD, UNK, Vocabulary
from lightning_contloss.examples.subword import SubwordVocabulary, parse_vocab, subword_vocabulary, text_fingerprint

__all__ = [
    "BIBLE_DIR",
    "BibleDataModule",
    "LengthBucketSampler",
    "ParallelText",
    "TranslationBatch",
    "TranslationDataModule",
    "TranslationPairs",
    "bible_corpus",
    "build_vocabularies",
    "collate_pairs",
    "decode_ids",
    "detokenize",
    "encode_text",
    "read_lines",
    "tokenize",
]

BIBLE_DIR = Path(__file__).resolve().parent / "bible"
Split = Literal["train", "valid", "test"]
SPLITS: tuple[Split, ...] = ("train", "valid", "test")
# A word (letters, digits, underscore; accents included), an English clitic such as 's or 'll
# (kept apart as GloVe's and the Penn Treebank's tokenizers do, so more words have GloVe rows),
# or any other single non-space character (punctuation).
_TOKEN = re.compile(r"\w+|'\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Word-level tokens of ``text``: NFC-normalised, lower-cased words, clitics and punctuation marks.

    A token is a run of word characters (accented letters count), an apostrophe clitic
    (``'s``, ``'ll``) or one punctuation mark; whitespace only separates. Nothing is lost but
    case and spacing, so ``" ".join(tokenize(s))`` is the tokenized text BLEU is computed on.

    Example:
        >>> tokenize("EN el principio crió Dios los cielos y la tierra.")
        ['en', 'el', 'principio', 'crió', 'dios', 'los', 'cielos', 'y', 'la', 'tierra', '.']
        >>> tokenize("The LORD's word: peace!")
        ['the', 'lord', "'s", 'word', ':', 'peace', '!']
    """
    return _TOKEN.findall(unicodedata.normalize("NFC", text).lower())


# Spacing the tokenizer drops, put back by detokenize: no space before closing punctuation and
# apostrophes, none after opening marks, none around hyphens and dashes (so "beth - el" is
# "beth-el" again, as 13a BLEU tokenisation, which keeps hyphenated words whole, expects).
_NO_SPACE_BEFORE = frozenset(".,;:!?)]}’'-—")
_NO_SPACE_AFTER = frozenset("([{¿¡-—\\")
_APOSTROPHES = frozenset("’'")
_CLITICS = frozenset({"s", "t", "ll", "re", "ve", "d", "m"})


def detokenize(tokens: Sequence[str]) -> str:
    """Text of word-level tokens: spaces between them except where punctuation attaches.

    No space before ``. , ; : ! ? ) ] }``, apostrophes and clitics (``'s``); none after
    ``( [ { ¿ ¡ \\``; none around ``-`` and ``—``; an apostrophe joins a following ``s``, ``t``,
    ``ll``, ``re``, ``ve``, ``d`` or ``m`` (``wife ’ s`` → ``wife’s``, ``moses ’ rod`` →
    ``moses’ rod``). On the packaged Bible verses ``detokenize(tokenize(s))`` gives back every
    line, lower-cased (the tests check it); other spacing conventions may differ in spaces only.

    Example:
        >>> detokenize(tokenize("¿Quién es? The LORD’s house, (saith he): Beth-el."))
        '¿quién es? the lord’s house, (saith he): beth-el.'
        >>> detokenize(["moses", "’", "rod", "and", "the", "lord", "'s", "word"])
        "moses’ rod and the lord's word"
    """
    out: list[str] = []
    prev: str | None = None
    for tok in tokens:
        attached = (
            prev is None
            or prev in _NO_SPACE_AFTER
            or tok in _NO_SPACE_BEFORE
            or (tok.startswith("'") and len(tok) > 1)
            or (prev in _APOSTROPHES and tok in _CLITICS)
        )
        if not attached:
            out.append(" ")
        out.append(tok)
        prev = tok
    return "".join(out)


def encode_text(vocab: Vocabulary, text: str) -> list[int]:
    """The ids of ``text`` (no ``<eos>``): BPE pieces for a ``SubwordVocabulary``, else :func:`tokenize` words.

    Example:
        >>> v = Vocabulary.build("the lord said".split())
        >>> encode_text(v, "The LORD said unto")
        [5, 3, 4, 1]
    """
    if isinstance(vocab, SubwordVocabulary):
        return vocab.encode_text(text)
    return [int(i) for i in vocab.encode(tokenize(text))]


def decode_ids(vocab: Vocabulary, ids: Sequence[int]) -> str:
    """Detokenised text of ids: BPE pieces joined, or words put together by :func:`detokenize`.

    Example:
        >>> v = Vocabulary.build("the lord said .".split())
        >>> decode_ids(v, encode_text(v, "The LORD said."))
        'the lord said.'
    """
    if isinstance(vocab, SubwordVocabulary):
        return vocab.decode_text(ids)
    return detokenize(vocab.decode(list(ids)))


def read_lines(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """The lines of a text file (``.gz`` is decompressed), without line ends; blank lines are kept.

    Blank lines are kept so that line ``i`` of a source file stays aligned with line ``i`` of
    its target file.

    Example:
        >>> lines = read_lines(BIBLE_DIR / "kjv.en.gz")
        >>> len(lines), lines[0]
        (31084, 'In the beginning God created the heaven and the earth.')
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is not a file; pass a plain-text or .gz file, one sentence per line")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding=encoding) as f:
                return f.read().splitlines()
        return path.read_text(encoding=encoding).splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{str(path)!r} is not valid {encoding} text ({err.reason} at byte {err.start}); "
            "pass encoding=... or convert the file"
        ) from None


class ParallelText(NamedTuple):
    """Aligned sentences of one split: ``src[i]`` translates to ``tgt[i]``."""

    src: list[str]
    tgt: list[str]


def bible_corpus(direction: Literal["es-en", "en-es"] = "es-en") -> dict[Split, ParallelText]:
    """The committed Bible verses by the stored split (1,000 valid, 1,000 test, 29,084 train).

    The split is the list of line indices in ``bible/split.json`` (drawn once with seed 13 and
    stored), so it never changes; see ``bible/README.md`` for the sources and licence.

    Args:
        direction: ``"es-en"`` (Spanish source, English target) or ``"en-es"``.

    Example:
        >>> corpus = bible_corpus()
        >>> [len(corpus[s].src) for s in ("train", "valid", "test")]
        [29084, 1000, 1000]
    """
    if direction not in ("es-en", "en-es"):
        raise ValueError(f"direction must be 'es-en' or 'en-es', got {direction!r}")
    es = read_lines(BIBLE_DIR / "rv1909.es.gz")
    en = read_lines(BIBLE_DIR / "kjv.en.gz")
    split = json.loads((BIBLE_DIR / "split.json").read_text(encoding="utf-8"))
    src, tgt = (es, en) if direction == "es-en" else (en, es)
    held = {"valid": split["valid"], "test": split["test"]}
    taken = set(held["valid"]) | set(held["test"])
    out: dict[Split, ParallelText] = {
        "train": ParallelText([src[i] for i in range(len(src)) if i not in taken],
                              [tgt[i] for i in range(len(tgt)) if i not in taken]),
    }
    for name in ("valid", "test"):
        out[name] = ParallelText([src[i] for i in held[name]], [tgt[i] for i in held[name]])
    return out


class TranslationBatch(NamedTuple):
    """A padded batch: ``src [B, S]``, ``tgt_in [B, T]`` (BOS first) and ``tgt_out [B, T]`` (EOS last).

    ``tgt_out`` is ``tgt_in`` moved one left: position ``t`` of ``tgt_in`` is the input from
    which ``tgt_out[:, t]`` is predicted. Each side is padded with its vocabulary's ``<pad>``.
    """

    src: Tensor
    tgt_in: Tensor
    tgt_out: Tensor


class TranslationPairs(Dataset[tuple[Tensor, Tensor]]):
    """Encoded sentence pairs: item ``i`` is ``(src_ids [S_i], tgt_ids [T_i])``, each ending in ``<eos>``.

    ``sources`` and ``references`` keep the kept pairs' original sentences (what translation
    starts from and what BLEU scores against).

    Args:
        text: the aligned sentences.
        src_vocab: source vocabulary, word-level or BPE (unknown words become ``<unk>``).
        tgt_vocab: target vocabulary, the same kind.
        max_len: drop pairs with more than this many tokens (words or BPE pieces) on either side
            (``<eos>`` not counted); ``None`` keeps all.

    Example:
        >>> v = Vocabulary.build("a b".split(), specials=(PAD, UNK, EOS, BOS))
        >>> pairs = TranslationPairs(ParallelText(["a b", "b b b"], ["b", "a a a"]), v, v, max_len=2)
        >>> len(pairs), [t.tolist() for t in pairs[0]]
        (1, [[4, 5, 2], [5, 2]])
    """

    def __init__(
        self, text: ParallelText, src_vocab: Vocabulary, tgt_vocab: Vocabulary, max_len: int | None = None
    ) -> None:
        if len(text.src) != len(text.tgt):
            raise ValueError(
                f"the source has {len(text.src)} sentences but the target {len(text.tgt)}; "
                "pass aligned files, one translation per line"
            )
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be at least 1 or None, got {max_len}")
        self.src: list[Tensor] = []
        self.tgt: list[Tensor] = []
        self.references: list[str] = []
        self.sources: list[str] = []
        src_eos, tgt_eos = src_vocab.eos_id, tgt_vocab.eos_id
        for s, t in zip(text.src, text.tgt):
            s_ids, t_ids = encode_text(src_vocab, s), encode_text(tgt_vocab, t)
            if not s_ids or not t_ids:
                continue  # a verse missing on one side; nothing to learn from
            if max_len is not None and (len(s_ids) > max_len or len(t_ids) > max_len):
                continue
            self.src.append(torch.tensor([*s_ids, src_eos], dtype=torch.int64))
            self.tgt.append(torch.tensor([*t_ids, tgt_eos], dtype=torch.int64))
            self.sources.append(s)
            self.references.append(t)

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.src[i], self.tgt[i]

    @property
    def lengths(self) -> list[int]:
        """Per pair, the longer side's length in ids (what a bucket's padding is decided by)."""
        return [max(len(s), len(t)) for s, t in zip(self.src, self.tgt)]


def collate_pairs(
    items: Sequence[tuple[Tensor, Tensor]], src_pad: int, tgt_pad: int, bos_id: int
) -> TranslationBatch:
    """Pad a list of ``(src_ids, tgt_ids)`` pairs into a :class:`TranslationBatch`.

    Args:
        items: pairs as :class:`TranslationPairs` yields them (each side ending in ``<eos>``).
        src_pad: source ``<pad>`` id.
        tgt_pad: target ``<pad>`` id.
        bos_id: target ``<bos>`` id, put before each target to make ``tgt_in``.

    Example:
        >>> b = collate_pairs([(torch.tensor([5, 2]), torch.tensor([7, 8, 2])), (torch.tensor([6, 6, 2]),
        ...     torch.tensor([9, 2]))], src_pad=0, tgt_pad=0, bos_id=3)
        >>> b.src.tolist(), b.tgt_in.tolist(), b.tgt_out.tolist()
        ([[5, 2, 0], [6, 6, 2]], [[3, 7, 8], [3, 9, 0]], [[7, 8, 2], [9, 2, 0]])
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    bsz = len(items)
    s_len = max(len(s) for s, _ in items)
    t_len = max(len(t) for _, t in items)
    src = torch.full((bsz, s_len), src_pad, dtype=torch.int64)
    tgt_in = torch.full((bsz, t_len), tgt_pad, dtype=torch.int64)
    tgt_out = torch.full((bsz, t_len), tgt_pad, dtype=torch.int64)
    for i, (s, t) in enumerate(items):
        src[i, : len(s)] = s
        tgt_out[i, : len(t)] = t
        tgt_in[i, 0] = bos_id
        tgt_in[i, 1 : len(t)] = t[:-1]
    return TranslationBatch(src, tgt_in, tgt_out)


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar-length pairs, so little compute goes to padding.

    For training (``shuffle=True``) the indices are shuffled, cut into pools of
    ``pool_batches × batch_size``, each pool sorted by length and cut into batches, and the
    batches shuffled; the order depends only on ``seed`` and the epoch (:meth:`set_epoch`,
    advanced after each full pass). Without shuffling, batches follow the sorted lengths.

    Args:
        lengths: per item, its length.
        batch_size: items per batch.
        shuffle: randomise as above (training) or not (evaluation).
        seed: seed of the shuffles.
        pool_batches: batches per sorting pool; larger pools pad less but mix lengths less randomly.

    Example:
        >>> s = LengthBucketSampler([5, 1, 4, 2, 3, 6], batch_size=2, shuffle=False)
        >>> list(s)
        [[1, 3], [4, 2], [0, 5]]
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0, pool_batches: int = 50
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if pool_batches < 1:
            raise ValueError(f"pool_batches must be at least 1, got {pool_batches}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_batches = pool_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of epoch ``epoch`` on the next pass."""
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def batches(self, epoch: int) -> list[list[int]]:
        """The batches of epoch ``epoch`` (the same call always gives the same batches)."""
        order = list(range(len(self.lengths)))
        if not self.shuffle:
            order.sort(key=lambda i: self.lengths[i])
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng = random.Random(self.seed * 1_000_003 + epoch)
        rng.shuffle(order)
        pool = self.pool_batches * self.batch_size
        out: list[list[int]] = []
        for p in range(0, len(order), pool):
            chunk = sorted(order[p : p + pool], key=lambda i: self.lengths[i])
            out += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches(self.epoch)
        if self.shuffle:
            self.epoch += 1
        return iter(batches)


TokenizerFile = str | Path | SubwordVocabulary
_ARGUMENT = {"source": "src_tokenizer", "target": "tgt_tokenizer"}


def build_vocabularies(
    train: ParallelText,
    vocab: str = "word",
    *,
    min_count: int = 2,
    max_src_vocab: int = 16000,
    max_tgt_vocab: int = 16000,
    tokenizer_dir: str | Path | None = None,
    src_tokenizer: TokenizerFile | None = None,
    tgt_tokenizer: TokenizerFile | None = None,
) -> tuple[Vocabulary, Vocabulary]:
    """The source and target vocabularies of the training sentences, word-level or BPE.

    ``vocab="word"``: a :class:`Vocabulary` of each side's :func:`tokenize` words seen at least
    ``min_count`` times, at most ``max_src_vocab``/``max_tgt_vocab`` entries (source specials
    ``<pad> <unk> <eos>``, target ones also ``<bos>``). ``vocab="bpe-8k"`` (any ``"bpe-N"`` or
    ``"bpe-Nk"``): a :class:`SubwordVocabulary` per side, of at most N entries, specials
    ``<pad> <unk> <eos> <bos>`` at ids 0-3 on both sides; each is trained on its side's training
    sentences, or read from ``tokenizer_dir`` where it was trained before
    (:func:`~lightning_contloss.examples.subword.subword_vocabulary`), or given as
    ``src_tokenizer``/``tgt_tokenizer`` (a file saved by ``SubwordVocabulary.save``, or the object),
    which must have been trained for this size on exactly this side's training sentences.

    Args:
        train: the training sentences.
        vocab: ``"word"`` or ``"bpe-<size>"``.
        min_count: word-level only: drop words seen fewer times than this.
        max_src_vocab: word-level only: largest source vocabulary, specials included.
        max_tgt_vocab: word-level only: largest target vocabulary, specials included.
        tokenizer_dir: BPE only: folder that caches trained tokenizers; ``None`` trains without saving.
        src_tokenizer: BPE only: the source tokenizer to use instead of training one.
        tgt_tokenizer: BPE only: the target tokenizer.

    Example:
        >>> text = ParallelText(["el perro come.", "el gato come."] * 3, ["the dog eats.", "the cat eats."] * 3)
        >>> src, tgt = build_vocabularies(text, "bpe-30")
        >>> type(tgt).__name__, tgt.words[:4], decode_ids(tgt, encode_text(tgt, "The cat eats."))
        ('SubwordVocabulary', ['<pad>', '<unk>', '<eos>', '<bos>'], 'the cat eats.')
    """
    size = parse_vocab(vocab)
    if size is None:
        if src_tokenizer is not None or tgt_tokenizer is not None:
            raise ValueError("src_tokenizer/tgt_tokenizer are BPE tokenizers; pass vocab='bpe-<size>' with them")
        src = Vocabulary.build((w for s in train.src for w in tokenize(s)), min_count=min_count, max_size=max_src_vocab)
        tgt = Vocabulary.build(
            (w for s in train.tgt for w in tokenize(s)),
            specials=(PAD, UNK, EOS, BOS),
            min_count=min_count,
            max_size=max_tgt_vocab,
        )
        return src, tgt
    sides = {"source": train.src, "target": train.tgt}
    given = {"source": src_tokenizer, "target": tgt_tokenizer}
    out: dict[str, Vocabulary] = {}
    for side, lines in sides.items():
        tok = given[side]
        if tok is None:
            out[side] = subword_vocabulary(lines, size, tokenizer_dir)
            continue
        name = f"the {side} tokenizer" + ("" if isinstance(tok, SubwordVocabulary) else f" {str(tok)!r}")
        loaded = tok if isinstance(tok, SubwordVocabulary) else SubwordVocabulary.load(tok)
        other = "target" if side == "source" else "source"
        if loaded.fingerprint == text_fingerprint(sides[other]) != text_fingerprint(lines):
            raise ValueError(
                f"{name} was trained on the {other} sentences (the other language); pass it as "
                f"{_ARGUMENT[other]} and the {side} side's own tokenizer as {_ARGUMENT[side]}"
            )
        loaded.check(lines=lines, size=size, name=name)
        out[side] = loaded
    return out["source"], out["target"]


class TranslationDataModule(L.LightningDataModule):
    """Padded, length-bucketed :class:`TranslationBatch` es of a parallel corpus.

    The vocabularies come from the training split only (:func:`build_vocabularies`):
    word-level (each side tokenized by :func:`tokenize`, words seen fewer than ``min_count``
    times become ``<unk>``) or BPE (``vocab="bpe-8k"``). The target vocabulary has ``<pad>
    <unk> <eos> <bos>`` at ids 0-3. Training pairs longer than ``max_train_len`` tokens (words
    or pieces) on either side are dropped (they cost the most and teach the least); validation
    and test keep every pair. ``valid_pairs``/``test_pairs`` hold the original sentences: the
    sources to translate and the references BLEU scores against.

    Args:
        corpus: ``{"train", "valid"[, "test"]}`` aligned sentences, e.g. :func:`bible_corpus`.
        batch_size: sentence pairs per batch.
        max_train_len: longest training sentence in tokens, either side.
        min_count: word-level: drop words seen fewer times than this in training.
        max_src_vocab: word-level: largest source vocabulary, specials included.
        max_tgt_vocab: word-level: largest target vocabulary, specials included.
        max_train_pairs: keep only the first this many training pairs (quick runs).
        num_workers: ``DataLoader`` worker processes.
        seed: seed of the training batch order.
        vocab: ``"word"`` or ``"bpe-<size>"`` (``"bpe-8k"``, ``"bpe-32k"``, ``"bpe-500"``).
        tokenizer_dir: BPE: folder where trained tokenizers are cached and reloaded from (keyed by
            the training text, the size and the case folding); ``None`` trains them every time.
        src_tokenizer: BPE: a source tokenizer file (or ``SubwordVocabulary``) to use instead.
        tgt_tokenizer: BPE: a target tokenizer file (or ``SubwordVocabulary``) to use instead.

    Example:
        >>> text = ParallelText(["a b", "b a", "a"] * 4, ["x y", "y x", "x"] * 4)
        >>> dm = TranslationDataModule({"train": text, "valid": text}, batch_size=4, min_count=1)
        >>> b = next(iter(dm.val_dataloader()))
        >>> dm.tgt_vocab.words, b.src.shape, b.tgt_in[0, 0].item() == dm.tgt_vocab.bos_id
        (['<pad>', '<unk>', '<eos>', '<bos>', 'x', 'y'], torch.Size([4, 2]), True)
    """

    def __init__(
        self,
        corpus: dict[Split, ParallelText],
        batch_size: int = 64,
        max_train_len: int | None = 50,
        min_count: int = 2,
        max_src_vocab: int = 16000,
        max_tgt_vocab: int = 16000,
        max_train_pairs: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        vocab: str = "word",
        tokenizer_dir: str | Path | None = None,
        src_tokenizer: TokenizerFile | None = None,
        tgt_tokenizer: TokenizerFile | None = None,
    ) -> None:
        super().__init__()
        missing = [s for s in ("train", "valid") if s not in corpus]
        if missing:
            raise ValueError(f"corpus has no {missing} split; pass {{'train': ..., 'valid': ...[, 'test': ...]}}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be 0 or more, got {num_workers}")
        train = corpus["train"]
        if max_train_pairs is not None:
            if max_train_pairs < 1:
                raise ValueError(f"max_train_pairs must be at least 1 or None, got {max_train_pairs}")
            train = ParallelText(train.src[:max_train_pairs], train.tgt[:max_train_pairs])
        self.vocab = vocab
        self.src_vocab, self.tgt_vocab = build_vocabularies(
            train,
            vocab,
            min_count=min_count,
            max_src_vocab=max_src_vocab,
            max_tgt_vocab=max_tgt_vocab,
            tokenizer_dir=tokenizer_dir,
            src_tokenizer=src_tokenizer,
            tgt_tokenizer=tgt_tokenizer,
        )
        self.train_pairs = TranslationPairs(train, self.src_vocab, self.tgt_vocab, max_len=max_train_len)
        if len(self.train_pairs) == 0:
            raise ValueError(
                f"no training pair is within max_train_len={max_train_len} tokens on both sides; "
                "raise max_train_len or pass more data"
            )
        self.valid_pairs = TranslationPairs(corpus["valid"], self.src_vocab, self.tgt_vocab)
        self.test_pairs: TranslationPairs | None = (
            TranslationPairs(corpus["test"], self.src_vocab, self.tgt_vocab) if "test" in corpus else None
        )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_sampler = LengthBucketSampler(self.train_pairs.lengths, batch_size, shuffle=True, seed=seed)

    @property
    def src_vocab_size(self) -> int:
        """Source vocabulary size (rows of the encoder's embedding)."""
        return len(self.src_vocab)

    @property
    def tgt_vocab_size(self) -> int:
        """Target vocabulary size V (what the output layer must cover)."""
        return len(self.tgt_vocab)

    @property
    def unigram_counts(self) -> Tensor:
        """``[V]`` int64 count of each target id among the training targets (``<eos>`` included)."""
        return torch.bincount(torch.cat(self.train_pairs.tgt), minlength=len(self.tgt_vocab))

    def collate(self, items: Sequence[tuple[Tensor, Tensor]]) -> TranslationBatch:
        """:func:`collate_pairs` with this datamodule's pad and BOS ids."""
        return collate_pairs(items, self.src_vocab.pad_id, self.tgt_vocab.pad_id, self.tgt_vocab.bos_id)

    def _loader(self, pairs: TranslationPairs, sampler: LengthBucketSampler) -> DataLoader[TranslationBatch]:
        return DataLoader(
            pairs,  # type: ignore[arg-type]
            batch_sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader[TranslationBatch]:
        return self._loader(self.train_pairs, self.train_sampler)

    def val_dataloader(self) -> DataLoader[TranslationBatch]:
        return self._loader(self.valid_pairs, LengthBucketSampler(self.valid_pairs.lengths, self.batch_size, False))

    def test_dataloader(self) -> DataLoader[TranslationBatch]:
        if self.test_pairs is None:
            raise ValueError(f"{type(self).__name__} has no test split; pass corpus['test'] or run validate instead")
        return self._loader(self.test_pairs, LengthBucketSampler(self.test_pairs.lengths, self.batch_size, False))


class BibleDataModule(TranslationDataModule):
    """:class:`TranslationDataModule` over the committed Bible verses (:func:`bible_corpus`).

    Args:
        direction: ``"es-en"`` or ``"en-es"``.
        batch_size: sentence pairs per batch.
        max_train_len: longest training sentence in tokens, either side.
        min_count: drop words seen fewer times than this in training.
        max_train_pairs: keep only the first this many training pairs (quick runs).
        num_workers: ``DataLoader`` worker processes.
        seed: seed of the training batch order.
        vocab: ``"word"`` or ``"bpe-<size>"`` such as ``"bpe-8k"`` (see :func:`build_vocabularies`).
        tokenizer_dir: BPE: folder caching the trained tokenizers; ``None`` trains them every time.
        src_tokenizer: BPE: a source tokenizer file to use instead of training one.
        tgt_tokenizer: BPE: a target tokenizer file.

    Example:
        >>> dm = BibleDataModule(max_train_pairs=2000)
        >>> len(dm.train_pairs) <= 2000, len(dm.valid_pairs), dm.tgt_vocab.words[:5]
        (True, 1000, ['<pad>', '<unk>', '<eos>', '<bos>', ','])
    """

    def __init__(
        self,
        direction: Literal["es-en", "en-es"] = "es-en",
        batch_size: int = 64,
        max_train_len: int | None = 50,
        min_count: int = 2,
        max_train_pairs: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        vocab: str = "word",
        tokenizer_dir: str | Path | None = None,
        src_tokenizer: str | Path | None = None,
        tgt_tokenizer: str | Path | None = None,
    ) -> None:
        super().__init__(
            bible_corpus(direction),
            batch_size=batch_size,
            max_train_len=max_train_len,
            min_count=min_count,
            max_train_pairs=max_train_pairs,
            num_workers=num_workers,
            seed=seed,
            vocab=vocab,
            tokenizer_dir=tokenizer_dir,
            src_tokenizer=src_tokenizer,
            tgt_tokenizer=tgt_tokenizer,
        )
        # Paths as text: checkpoints keep these hyper-parameters, and weights-only loading refuses Path objects.
        tokenizer_dir, src_tokenizer, tgt_tokenizer = (
            None if p is None else str(p) for p in (tokenizer_dir, src_tokenizer, tgt_tokenizer)
        )
        self.save_hyperparameters()
