"""CosineLoss: ``1 − cos(ê, e_w)`` as a differentiable torchmetrics Metric."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from lightning_contloss.functional._checks import Batch
from lightning_contloss.functional.cosine import _cosine_loss_tokens
from lightning_contloss.functional.scoring import Space
from lightning_contloss.losses.base import ContinuousLoss
from lightning_contloss.losses.registry import register_loss

__all__ = ["CosineLoss"]


@register_loss("cosine")
class CosineLoss(ContinuousLoss):
    """Cosine loss ``1 − cos(ê, e_w)`` (see :func:`~lightning_contloss.functional.cosine_loss`).

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> import torch
        >>> from lightning_contloss.targets import TargetEmbeddings
        >>> loss = CosineLoss(TargetEmbeddings.random(100, 16), ignore_index=-100)
        >>> pred = torch.randn(2, 5, 16, requires_grad=True)
        >>> ids = torch.tensor([[1, 2, 3, -100, -100], [4, 5, 6, 7, 8]])
        >>> batch = loss(pred, ids)
        >>> batch.backward()
        >>> pred.grad[0, 3].abs().sum().item(), loss.decode_space
        (0.0, 'cosine')
    """

    decode_space: ClassVar[Space] = "cosine"

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        return _cosine_loss_tokens(pred, ids, table, ignore_index=self.ignore_index)
