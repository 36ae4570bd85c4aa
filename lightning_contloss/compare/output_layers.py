"""The output layer of each softmax-family head of ``compare``: the full softmax and its large-vocabulary rivals."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_contloss.compare.spec import OUTPUT_LAYER_OPTIONS, SOFTMAX_HEADS
from lightning_contloss.examples.adaptive_softmax import AdaptiveSoftmax
from lightning_contloss.examples.cce_softmax import CutCrossEntropySoftmax
from lightning_contloss.examples.chunked_softmax import ChunkedSoftmax
from lightning_contloss.examples.output_layer import FullSoftmax, OutputLayer
from lightning_contloss.examples.sampled_softmax import SampledSoftmax

__all__ = ["build_output_layer", "split_options"]


def split_options(head: str, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(SoftmaxLM options, output-layer options)`` of a softmax-family run's ``model_kwargs``.

    Example:
        >>> split_options("sampled", {"lr": 0.002, "num_negatives": 64})
        ({'lr': 0.002}, {'num_negatives': 64})
    """
    own = set(OUTPUT_LAYER_OPTIONS[head])
    return {k: v for k, v in options.items() if k not in own}, {k: v for k, v in options.items() if k in own}


def build_output_layer(
    head: str, in_features: int, vocab_size: int, counts: Tensor | None = None, **options: Any
) -> OutputLayer:
    """The output layer of softmax-family ``head`` (one of ``SOFTMAX_HEADS``).

    Args:
        head: ``"softmax"``, ``"adaptive"``, ``"sampled"``, ``"chunked"`` or ``"cce"``.
        in_features: the body's hidden size H.
        vocab_size: V.
        counts: ``[V]`` training counts (frequency ranks for the adaptive clusters and the
            sampled softmax's log-uniform proposal).
        options: the head's own options (``OUTPUT_LAYER_OPTIONS[head]``).

    Example:
        >>> type(build_output_layer("chunked", 8, 100, chunk_size=30)).__name__
        'ChunkedSoftmax'
    """
    if head not in SOFTMAX_HEADS:
        raise ValueError(f"unknown softmax-family head {head!r}; choose one of {', '.join(SOFTMAX_HEADS)}")
    if head == "adaptive":
        return AdaptiveSoftmax(in_features, vocab_size, counts=counts, **options)
    if head == "sampled":
        return SampledSoftmax(in_features, vocab_size, counts=counts, **options)
    if head == "chunked":
        return ChunkedSoftmax(in_features, vocab_size, **options)
    if head == "cce":
        return CutCrossEntropySoftmax(in_features, vocab_size, **options)
    return FullSoftmax(in_features, vocab_size)
