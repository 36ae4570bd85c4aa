"""How spread out a model's top-1 predictions are: distinct ids predicted and the top id's share."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_contloss.functional._checks import check_ignore_index, check_positive_int
from lightning_contloss.metrics.neighbor_accuracy import _check_ids

__all__ = ["PredictionSpread"]


class PredictionSpread(Metric):
    """Counts top-1 predicted ids over an epoch to expose collapse onto a few frequent words.

    ``compute()`` returns ``{"distinct_pred": number of distinct ids predicted,
    "top_pred_share": share of predictions taken by the most predicted id}``. The state is
    one ``[V]`` count vector summed across processes, so the result is exact under DDP.

    Args:
        num_classes: V.
        ignore_index: target id whose positions are not counted (padding), or ``None``.

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

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        check_positive_int(num_classes, "num_classes")
        check_ignore_index(ignore_index)
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("counts", torch.zeros(num_classes, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred_ids: Tensor, target: Tensor | None = None) -> None:
        """Add a batch of predicted ids.

        Args:
            pred_ids: ``[...]`` int64 top-1 predictions.
            target: ``[...]`` the true ids, only read to skip ``ignore_index`` positions.
        """
        _check_ids(pred_ids, "pred_ids")
        if target is not None:
            _check_ids(target, "target")
        ids = pred_ids.flatten()
        if target is not None and self.ignore_index is not None:
            if target.shape != pred_ids.shape:
                raise ValueError(
                    f"target shape {tuple(target.shape)} differs from pred_ids {tuple(pred_ids.shape)}; "
                    f"pass the targets of the same positions"
                )
            ids = ids[target.flatten() != self.ignore_index]
        if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < self.num_classes:
            raise ValueError(f"pred_ids must lie in 0..{self.num_classes - 1}; set num_classes to the vocabulary size")
        self.counts += torch.bincount(ids.long(), minlength=self.num_classes).to(self.counts.device)

    def compute(self) -> dict[str, Tensor]:
        total = self.counts.sum()
        top_share = self.counts.max() / total if total > 0 else torch.tensor(0.0, device=self.counts.device)
        return {"distinct_pred": (self.counts > 0).sum(), "top_pred_share": top_share.float()}
