"""Padded vocabularies: a softmax layer wider than the real vocabulary (litgpt, Megatron, ``pad_to_multiple_of``).

Libraries round the output layer up to a multiple of 64 … 1024 rows for fast matrix products;
the extra ids are never real tokens. A continuous head needs target rows for the real
vocabulary only: the decoder's table then has no padding rows, so no padding id can be decoded.
"""

from __future__ import annotations

__all__ = ["MAX_PAD_FRACTION", "PAD_MULTIPLES", "padding_multiple", "vocab_fits", "vocab_hint"]

# Multiples that libraries round a vocabulary up to (HF's pad_to_multiple_of=64, Megatron's
# 128 × tensor-parallel size, litgpt's default padding_multiple=512). Only "V rounded up to one
# of these" counts as padding, so a target table for the wrong vocabulary is still refused.
PAD_MULTIPLES: tuple[int, ...] = (64, 128, 256, 512, 1024)
# Padding is a few rows: at most 1/MAX_PAD_FRACTION of the layer (10001 -> 10240 pads 2.3%).
# A larger gap is more likely a target table for the wrong vocabulary.
MAX_PAD_FRACTION = 16


def padding_multiple(out_features: int, vocab_size: int) -> int | None:
    """The multiple that ``vocab_size`` was rounded up to to give ``out_features``, or ``None``.

    ``None`` too when the padding would be ``out_features / MAX_PAD_FRACTION`` rows or more.

    Args:
        out_features: the softmax layer's width.
        vocab_size: the number of target rows (the real vocabulary).

    Example:
        >>> padding_multiple(10240, 10000), padding_multiple(1024, 1000), padding_multiple(1024, 900)
        (256, 64, None)
    """
    if not 0 < vocab_size < out_features or (out_features - vocab_size) * MAX_PAD_FRACTION >= out_features:
        return None
    for multiple in PAD_MULTIPLES:
        if -(-vocab_size // multiple) * multiple == out_features:
            return multiple
    return None


def vocab_fits(out_features: int, vocab_size: int, padded_size: int | None = None) -> bool:
    """Whether ``vocab_size`` target rows fit a softmax layer of width ``out_features``.

    They fit when the sizes are equal, when ``out_features`` is ``vocab_size`` rounded up to a
    multiple in :data:`PAD_MULTIPLES` (by less than ``1 / MAX_PAD_FRACTION`` of the layer),
    or when the model's config declares the layer padded
    (``padded_size == out_features``, e.g. litgpt's ``padded_vocab_size``).

    Example:
        >>> vocab_fits(10240, 10000), vocab_fits(1000, 999), vocab_fits(10100, 10000, padded_size=10100)
        (True, False, True)
    """
    if vocab_size == out_features or padding_multiple(out_features, vocab_size) is not None:
        return True
    return padded_size is not None and padded_size == out_features and 0 < vocab_size < out_features


def vocab_hint(out_features: int) -> str:
    """What to do when the target rows do not fit a layer of width ``out_features``.

    Example:
        >>> vocab_hint(1000)[:52]
        "build targets for the model's vocabulary (V=1000), o"
    """
    multiples = ", ".join(map(str, PAD_MULTIPLES))
    return (
        f"build targets for the model's vocabulary (V={out_features}), or, if the layer is padded beyond the real "
        f"vocabulary (litgpt and Megatron round V up to a multiple of {multiples}), for the real tokens only "
        "(e.g. V=config.vocab_size): padding ids then have no target row and are never decoded. For any other "
        f"padding, build {out_features} rows and mark the padding ids special so they are never decoded: "
        f"TargetEmbeddings.random({out_features}, D, special_ids=range(real_vocab_size, {out_features}))"
    )
