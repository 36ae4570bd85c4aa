"""Recall@k of an approximate decoder (HNSW) against exact search."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_contloss.metrics.neighbor_accuracy import _check_ids

__all__ = ["DecodingRecall", "decoding_recall"]


def _decoding_recall_update(
    approx_ids: Tensor,
    exact_ids: Tensor,
    k: int,
    target: Tensor | None = None,
    ignore_index: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Sum of per-query recalls and the number of queries counted."""
    _check_ids(approx_ids, "approx_ids")
    _check_ids(exact_ids, "exact_ids")
    if target is not None:
        _check_ids(target, "target")
        if target.shape != approx_ids.shape[:-1]:
            raise ValueError(
                f"target has shape {tuple(target.shape)} but approx_ids {tuple(approx_ids.shape)}; "
                "pass one target id per query, or no target"
            )
    if approx_ids.dim() == 0 or approx_ids.shape[:-1] != exact_ids.shape[:-1]:
        raise ValueError(
            f"approx_ids has shape {tuple(approx_ids.shape)} and exact_ids {tuple(exact_ids.shape)}; "
            "pass both as [..., K] results for the same queries"
        )
    for name, ids in (("approx_ids", approx_ids), ("exact_ids", exact_ids)):
        if ids.shape[-1] < k:
            raise ValueError(f"{name} has {ids.shape[-1]} ids per query but k={k}; query both decoders with k >= {k}")
    approx = approx_ids.reshape(-1, approx_ids.shape[-1])[:, :k]
    exact = exact_ids.reshape(-1, exact_ids.shape[-1])[:, :k].to(approx.device)
    # Negative ids are "no result" (hnswlib pads with -1 when fewer than k rows can be returned):
    # they never match, and a query's recall is over the exact results it actually has.
    valid = exact >= 0
    if target is not None and ignore_index is not None:
        valid &= (target.reshape(-1, 1) != ignore_index).to(valid.device)
    found = (exact.unsqueeze(-1) == approx.unsqueeze(-2)).any(dim=-1) & valid
    have = valid.sum(dim=-1)
    counted = have > 0
    recall = found.sum(dim=-1)[counted].float() / have[counted]
    return recall.sum(), counted.sum()


def decoding_recall(
    approx_ids: Tensor,
    exact_ids: Tensor,
    k: int = 1,
    target: Tensor | None = None,
    ignore_index: int | None = None,
) -> Tensor:
    """Mean ``|approx top-k ∩ exact top-k| / k`` over queries.

    Args:
        approx_ids: ``[..., K]`` ids from the approximate decoder, best first.
        exact_ids: ``[..., K']`` ids from exact search for the same queries; negative ids mean
            "no result" and shrink that query's denominator.
        k: how many results of each are compared.
        target: optional ``[...]`` true ids of the queries, only to skip padding.
        ignore_index: queries whose target is this id are skipped.

    Returns:
        Scalar float recall in ``[0, 1]``; NaN when no query has an exact result.

    Example:
        >>> decoding_recall(torch.tensor([[1, 2], [5, 6]]), torch.tensor([[2, 1], [5, 9]]), k=2)
        tensor(0.7500)
    """
    total, count = _decoding_recall_update(approx_ids, exact_ids, k, target, ignore_index)
    return total / count


class DecodingRecall(Metric):
    """Recall@k of an approximate decoder against exact search, averaged over queries.

    Args:
        k: how many results of each decoder are compared.
        ignore_index: queries whose target (passed to ``update``) is this id are skipped.
        kwargs: passed to ``torchmetrics.Metric``.

    Example:
        >>> m = DecodingRecall(k=2)
        >>> m.update(torch.tensor([[1, 2], [5, 6]]), torch.tensor([[2, 1], [5, 9]]))
        >>> m.compute()
        tensor(0.7500)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    recall_sum: Tensor
    total: Tensor

    def __init__(self, k: int = 1, ignore_index: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        self.k = k
        self.ignore_index = ignore_index
        self.add_state("recall_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, approx_ids: Tensor, exact_ids: Tensor, target: Tensor | None = None) -> None:
        """Add queries: ``approx_ids [..., K]``, ``exact_ids [..., K']`` (best first), optional ``target [...]``."""
        recall, count = _decoding_recall_update(approx_ids, exact_ids, self.k, target, self.ignore_index)
        self.recall_sum += recall.to(self.recall_sum.device)
        self.total += count.to(self.total.device)

    def compute(self) -> Tensor:
        """Mean recall@k over the queries so far (NaN when none was counted)."""
        return self.recall_sum / self.total
