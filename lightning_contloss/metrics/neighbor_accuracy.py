"""Neighbour accuracy: the share of tokens whose target is among the first k decoded ids."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_contloss.functional._checks import check_ignore_index, check_positive_int

__all__ = ["NeighborAccuracy", "neighbor_accuracy"]


def _check_ids(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        what = str(x.dtype) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be an integer tensor of token ids, got {what}")


def _neighbor_accuracy_update(
    topk_ids: Tensor, target: Tensor, k: int, ignore_index: int | None
) -> tuple[Tensor, Tensor]:
    """Hits and counted tokens of one batch; the maths shared by the function and the Metric."""
    _check_ids(topk_ids, "topk_ids")
    _check_ids(target, "target")
    if topk_ids.shape == target.shape:
        topk_ids = topk_ids.unsqueeze(-1)
    if topk_ids.dim() == 0 or topk_ids.shape[:-1] != target.shape:
        raise ValueError(
            f"topk_ids has shape {tuple(topk_ids.shape)} but target has shape {tuple(target.shape)}; "
            "pass topk_ids [..., K] (or [...] for top-1) with target [...]"
        )
    if topk_ids.shape[-1] < k:
        raise ValueError(
            f"topk_ids has {topk_ids.shape[-1]} ids per token but k={k}; decode with k >= {k} "
            f"or build the metric with k <= {topk_ids.shape[-1]}"
        )
    ids = topk_ids.reshape(-1, topk_ids.shape[-1])[:, :k]
    flat = target.reshape(-1).to(ids.device)
    hit = (ids == flat.unsqueeze(-1)).any(dim=-1)
    if ignore_index is None:
        return hit.sum(), torch.tensor(flat.numel(), device=ids.device)
    keep = flat != ignore_index
    return (hit & keep).sum(), keep.sum()


def neighbor_accuracy(topk_ids: Tensor, target: Tensor, k: int = 1, ignore_index: int | None = None) -> Tensor:
    """Share of tokens whose target is among the first ``k`` predicted ids.

    Args:
        topk_ids: ``[..., K]`` decoded ids, best first (``[...]`` is read as top-1), ``K >= k``.
        target: ``[...]`` true ids.
        k: how many of the decoded ids count.
        ignore_index: target id to skip (padding).

    Returns:
        Scalar float accuracy in ``[0, 1]``; NaN when no token counts (none given, or all ignored).

    Example:
        >>> neighbor_accuracy(torch.tensor([[3, 1], [2, 0], [5, 4]]), torch.tensor([1, 2, 9]), k=2)
        tensor(0.6667)
    """
    check_positive_int(k, "k")
    check_ignore_index(ignore_index)
    hits, total = _neighbor_accuracy_update(topk_ids, target, k, ignore_index)
    return hits.float() / total


class NeighborAccuracy(Metric):
    """Token accuracy of a k-NN decoder: is the target among the first ``k`` decoded ids?

    ``k=1`` is exact-match accuracy (``val/acc@1``). Padding is skipped via ``ignore_index``.
    States are sums, so DDP sync adds them across processes.

    Args:
        k: how many of the decoded ids count.
        ignore_index: target id to skip (padding).
        kwargs: passed to ``torchmetrics.Metric``.

    Example:
        >>> m = NeighborAccuracy(k=1, ignore_index=-100)
        >>> m.update(torch.tensor([[4, 7], [2, 3]]), torch.tensor([4, 3]))
        >>> m.update(torch.tensor([[1, 0]]), torch.tensor([-100]))
        >>> m.compute()
        tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    correct: Tensor
    total: Tensor

    def __init__(self, k: int = 1, ignore_index: int | None = None, **kwargs: Any) -> None:
        check_positive_int(k, "k")
        check_ignore_index(ignore_index)
        super().__init__(**kwargs)
        self.k = k
        self.ignore_index = ignore_index
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, topk_ids: Tensor, target: Tensor) -> None:
        """Add a batch: ``topk_ids [..., K]`` decoded ids, best first, and ``target [...]``."""
        hits, total = _neighbor_accuracy_update(topk_ids, target, self.k, self.ignore_index)
        self.correct += hits.to(self.correct.device)
        self.total += total.to(self.total.device)

    def compute(self) -> Tensor:
        """Accuracy over every counted token so far (NaN when none was counted)."""
        return self.correct.float() / self.total
