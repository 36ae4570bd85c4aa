"""How spread out a model's top-1 predictions are: distinct ids predicted and the top id's share."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_contloss.functional._checks import check_ignore_index, check_positive_int
from lightning_contloss.metrics.neighbor_accuracy import _check_ids

__all__ = ["PredictionSpread", "prediction_spread"]


def _prediction_spread_update(
    pred_ids: Tensor, target: Tensor | None, num_classes: int, ignore_index: int | None
) -> Tensor:
    """``[num_classes]`` int64 counts of the predicted ids, skipping positions whose target is ignored."""
    _check_ids(pred_ids, "pred_ids")
    if target is not None:
        _check_ids(target, "target")
    ids = pred_ids.flatten()
    if target is not None and ignore_index is not None:
        if target.shape != pred_ids.shape:
            raise ValueError(
                f"target shape {tuple(target.shape)} differs from pred_ids {tuple(pred_ids.shape)}; "
                f"pass the targets of the same positions"
            )
        ids = ids[target.flatten().to(ids.device) != ignore_index]
    if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < num_classes:
        raise ValueError(f"pred_ids must lie in 0..{num_classes - 1}; set num_classes to the vocabulary size")
    return torch.bincount(ids.long(), minlength=num_classes)


def _prediction_spread_compute(counts: Tensor) -> dict[str, Tensor]:
    total = counts.sum()
    top_share = counts.max() / total if total > 0 else torch.tensor(0.0, device=counts.device)
    return {"distinct_pred": (counts > 0).sum(), "top_pred_share": top_share.float()}


def prediction_spread(
    pred_ids: Tensor, num_classes: int, target: Tensor | None = None, ignore_index: int | None = None
) -> dict[str, Tensor]:
    """Distinct top-1 ids predicted and the share of the most predicted one, for one batch.

    Args:
        pred_ids: ``[...]`` integer top-1 predictions.
        num_classes: V.
        target: ``[...]`` the true ids, only read to skip ``ignore_index`` positions.
        ignore_index: target id whose positions are not counted (padding), or ``None``.

    Returns:
        ``{"distinct_pred": int64 scalar, "top_pred_share": float scalar in [0, 1]}`` (0 when
        nothing was counted).

    Example:
        >>> out = prediction_spread(torch.tensor([1, 1, 3, 1, 2]), 5, torch.tensor([0, 1, 2, 3, -1]), ignore_index=-1)
        >>> out["distinct_pred"].item(), out["top_pred_share"].item()
        (2, 0.75)
    """
    check_positive_int(num_classes, "num_classes")
    check_ignore_index(ignore_index)
    return _prediction_spread_compute(_prediction_spread_update(pred_ids, target, num_classes, ignore_index))


class PredictionSpread(Metric):
    """Counts top-1 predicted ids over an epoch to expose collapse onto a few frequent words.

    ``compute()`` returns ``{"distinct_pred": number of distinct ids predicted,
    "top_pred_share": share of predictions taken by the most predicted id}``. The state is
    one ``[V]`` count vector summed across processes, so the result is exact under DDP.
    :func:`prediction_spread` is the one-batch twin.

    Args:
        num_classes: V.
        ignore_index: target id whose positions are not counted (padding), or ``None``.
        kwargs: passed to ``torchmetrics.Metric``.

    Example:
        >>> m = PredictionSpread(num_classes=5)
        >>> m.update(torch.tensor([[1, 1, 3, 1]]))
        >>> {k: round(v.item(), 2) for k, v in m.compute().items()}
        {'distinct_pred': 2, 'top_pred_share': 0.75}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    counts: Tensor

    def __init__(self, num_classes: int, ignore_index: int | None = None, **kwargs: Any) -> None:
        check_positive_int(num_classes, "num_classes")
        check_ignore_index(ignore_index)
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("counts", torch.zeros(num_classes, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred_ids: Tensor, target: Tensor | None = None) -> None:
        """Add a batch of predicted ids.

        Args:
            pred_ids: ``[...]`` integer top-1 predictions.
            target: ``[...]`` the true ids, only read to skip ``ignore_index`` positions.
        """
        counts = _prediction_spread_update(pred_ids, target, self.num_classes, self.ignore_index)
        self.counts += counts.to(self.counts.device)

    def compute(self) -> dict[str, Tensor]:
        """``distinct_pred`` and ``top_pred_share`` over everything counted so far."""
        return _prediction_spread_compute(self.counts)
