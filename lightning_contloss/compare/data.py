"""The corpus of a comparison: PTB or a text file, in its own vocabulary or in GloVe's (all 400k words or N)."""

from __future__ import annotations

from typing import Any

import torch

from lightning_contloss.compare.corpus import corpus_lines
from lightning_contloss.compare.spec import DataOptions
from lightning_contloss.examples.continuous_lm import _glove_arrays
from lightning_contloss.examples.data import (
    EOS,
    PAD,
    UNK,
    LMDataModule,
    PTBDataModule,
    TextDataModule,
    Vocabulary,
    lines_to_tokens,
)

__all__ = ["DataOptions", "build_datamodule", "glove_vocabulary"]


def glove_vocabulary(train_tokens: list[str], size: int | None = None) -> tuple[Vocabulary, int]:
    """GloVe's 400k words (or ``size`` ids of them) as a vocabulary whose first ids are the words ``train_tokens`` uses.

    Order: the three specials, the GloVe words that occur in ``train_tokens`` (in GloVe's own
    frequency order), then the rest of GloVe, most frequent first, cut at ``size`` ids. The
    second value, the number of ids up to the last training word, is the input-vocabulary size:
    a model needs input embeddings only for those, while its output layer covers every id.

    Args:
        train_tokens: the training token stream (for the order and the counts).
        size: total ids to keep (e.g. 128,000, a subword-sized output layer), at least the
            specials plus the training words; ``None`` keeps all of GloVe.

    Returns:
        ``(vocabulary, input_vocab_size)``.
    """
    _, index = _glove_arrays()  # insertion order is GloVe's id (frequency) order
    specials = (PAD, UNK, EOS)
    seen = set(train_tokens)
    glove_words = [w for w in index if w not in specials]
    words = [*specials, *(w for w in glove_words if w in seen), *(w for w in glove_words if w not in seen)]
    input_size = len(specials) + sum(1 for w in glove_words if w in seen)
    if size is not None:
        if not input_size <= size <= len(words):
            raise ValueError(
                f"output_vocab_size={size} must be between {input_size} (the specials and the {input_size - 3} "
                f"GloVe words of the training text) and {len(words)} (all of GloVe)"
            )
        words = words[:size]
    position = {w: i for i, w in enumerate(words)}
    counts = torch.zeros(len(words), dtype=torch.int64)
    unk = position[UNK]
    ids = torch.tensor([position.get(t, unk) for t in train_tokens], dtype=torch.int64)
    counts.index_add_(0, ids, torch.ones_like(ids))
    return Vocabulary(words, counts, specials), input_size


def build_datamodule(options: DataOptions) -> LMDataModule:
    """The datamodule for ``options`` (PTB, a text file, or either mapped into GloVe's vocabulary).

    Args:
        options: the corpus and its limits.

    Example:
        >>> dm = build_datamodule(DataOptions(max_train_tokens=2000, max_valid_tokens=500))
        >>> dm.vocab_size, dm.valid_ids.numel()
        (10001, 500)
    """
    common: dict[str, Any] = {
        "batch_size": options.batch_size,
        "seq_len": options.seq_len,
        "max_train_tokens": options.max_train_tokens,
        "max_valid_tokens": options.max_valid_tokens,
    }
    if options.output_vocab == "corpus":
        if options.path is None:
            return PTBDataModule(**common)
        return TextDataModule(options.path, encoding=options.encoding, **common)
    if options.output_vocab != "glove":
        raise ValueError(f"output_vocab must be 'corpus' or 'glove', got {options.output_vocab!r}")
    train_lines, valid_lines = corpus_lines(options)
    train_tokens = list(lines_to_tokens(train_lines))
    vocab, input_size = glove_vocabulary(train_tokens, options.output_vocab_size)
    return LMDataModule(
        vocab,
        vocab.encode(train_tokens),
        vocab.encode(lines_to_tokens(valid_lines)),
        input_vocab_size=input_size,
        **common,
    )
