"""Recall of an approximate k-NN search against the exact one, counting tied scores as found."""

from __future__ import annotations

from torch import Tensor

from lightning_contloss.metrics.decoding_recall import _decoding_recall_update

__all__ = ["knn_recall"]


def knn_recall(approx_scores: Tensor, exact_scores: Tensor, rtol: float = 1e-5) -> float:
    """Fraction of approximate results that are as good as the exact k-th neighbour.

    A result counts as found when its score is at least the exact k-th best score, within
    ``rtol · max(1, |score|)``. For ``k = 1`` this is recall@1; it differs from comparing ids
    only on exact ties (e.g. duplicate rows), where either id is a correct answer. It is the
    functional twin of :class:`~lightning_contloss.metrics.DecodingRecall` given scores (one
    update function serves both), so ``tune_ef`` tunes to the recall the callback logs.

    Args:
        approx_scores: ``[N, k]`` scores of the approximate search, in the decoder's space.
        exact_scores: ``[N, k]`` scores of the exact search, best first.
        rtol: relative tolerance for rounding differences between the two searches.

    Returns:
        recall in [0, 1]; 1.0 for an empty batch.

    Example:
        >>> knn_recall(torch.tensor([[0.9], [0.5]]), torch.tensor([[0.9], [0.7]]))
        0.5
    """
    if approx_scores.shape != exact_scores.shape or approx_scores.dim() != 2:
        raise ValueError(
            f"approx_scores {tuple(approx_scores.shape)} and exact_scores {tuple(exact_scores.shape)} must "
            "both be [N, k]"
        )
    if approx_scores.numel() == 0:
        return 1.0
    total, count = _decoding_recall_update(
        None, None, approx_scores.shape[1], approx_scores=approx_scores, exact_scores=exact_scores, rtol=rtol
    )
    return float(total / count)
