"""Which buffered rows the likelihood metrics (``vmf_ppl``, BrierLM) score: pure functions of the buffer's shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "AUTO_METRIC_STRIDE",
    "AUTO_METRIC_TOKENS",
    "likelihood_budget",
    "pick_likelihood_rows",
    "sequence_shape",
]

# metric_tokens="auto": at most this many tokens per epoch and process for vmf_ppl and brier_lm...
AUTO_METRIC_TOKENS = 8192
# ...taken from one sequence in this many when the decoder does not score every row (HNSW): each
# such token costs a pass over the whole table, what a softmax twin's logits cost, so the
# likelihood metrics cost about 1/16 of a softmax validation's output layer. Exact search scores
# every row anyway and shares that pass (ExactDecoder.query_with_log_partition): every sequence.
AUTO_METRIC_STRIDE = 16

# A pick: (first flat row, whole sequences, sequence length).
Pick = tuple[int, int, int]


def sequence_shape(pred: Tensor) -> tuple[int, int]:
    """``(sequences, length)`` of one step's predictions ``pred [..., T, D]``; ``[N, D]`` is N sequences of 1.

    Example:
        >>> sequence_shape(torch.zeros(4, 8, 16)), sequence_shape(torch.zeros(5, 16))
        ((4, 8), (5, 1))
    """
    length = pred.shape[-2] if pred.dim() > 2 else 1
    return pred.numel() // max(length * pred.shape[-1], 1), length


def likelihood_budget(metric_tokens: int | Literal["auto"], shared: bool, scored: int) -> tuple[int, int]:
    """``(tokens left to score this epoch, stride)`` for ``metric_tokens``, after ``scored`` tokens.

    ``"auto"`` scores up to :data:`AUTO_METRIC_TOKENS` tokens, every sequence when the decoder
    ``shared`` its scores (exact search in cosine space), else one in :data:`AUTO_METRIC_STRIDE`;
    an int budget takes every sequence.

    Example:
        >>> likelihood_budget("auto", shared=False, scored=0), likelihood_budget(20, shared=False, scored=8)
        ((8192, 16), (12, 1))
    """
    auto = metric_tokens == "auto"
    budget = (AUTO_METRIC_TOKENS if auto else int(metric_tokens)) - scored
    return budget, AUTO_METRIC_STRIDE if auto and not shared else 1


def pick_likelihood_rows(
    shapes: Sequence[tuple[int, int]],
    budget: int,
    stride: int = 1,
    seen: int = 0,
    world_size: int = 1,
    rank: int = 0,
) -> list[Pick]:
    """The buffer's rows to score: ``(first flat row, sequences, length)`` per pick, in buffer order.

    Whole sequences (BrierLM scores n-grams), until ``budget`` tokens are taken (the last
    sequence may pass it). With ``stride == 1`` each buffered batch gives one prefix pick. With a
    larger stride a sequence is picked when its global index is a multiple of ``stride``; the
    index counts the epoch's sequences (``seen`` before this buffer) in the sample order of an
    unshuffled ``DistributedSampler`` (this rank's i-th sequence is sample ``i·world_size +
    rank``), so that the ranks together pick the one-process run's sequences.

    Args:
        shapes: ``(sequences, length)`` of each buffered batch (see :func:`sequence_shape`).
        budget: tokens left to score this epoch; nothing is picked at 0 or below.
        stride: score one sequence in ``stride``.
        seen: sequences this rank saw earlier in the epoch.
        world_size: processes sharing the epoch.
        rank: this process's global rank.

    Example:
        >>> pick_likelihood_rows([(4, 8), (4, 8)], budget=20)  # 20 tokens: 3 whole sequences of 8
        [(0, 3, 8)]
        >>> pick_likelihood_rows([(40, 8)], budget=8192, stride=16)
        [(0, 1, 8), (128, 1, 8), (256, 1, 8)]
        >>> pick_likelihood_rows([(40, 8)], budget=8192, stride=16, world_size=2, rank=1)  # global 2i + 1: odd
        []
    """
    picks: list[Pick] = []
    offset = 0
    for sequences, length in shapes:
        if budget > 0:
            wanted = -(-budget // length)
            if stride == 1:
                count = min(sequences, wanted)
                picks.append((offset, count, length))
            else:
                global_index = (torch.arange(seen, seen + sequences) * world_size + rank) % stride
                on_stride = (global_index == 0).nonzero().flatten()[:wanted].tolist()
                picks.extend((offset + seq * length, 1, length) for seq in on_stride)
                count = len(on_stride)
            budget -= count * length
        seen += sequences
        offset += sequences * length
    return picks
