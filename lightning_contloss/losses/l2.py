"""L2Loss: the squared L2 distance ``‖ê − e_w‖²`` as a differentiable torchmetrics Metric."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from lightning_contloss.functional._checks import Batch
from lightning_contloss.functional.l2 import _l2_loss_tokens
from lightning_contloss.functional.scoring import Space
from lightning_contloss.losses.base import ContinuousLoss
from lightning_contloss.losses.registry import register_loss

__all__ = ["L2Loss"]


@register_loss("l2")
class L2Loss(ContinuousLoss):
    """Squared L2 loss ``‖ê − e_w‖²``, summed over D (see :func:`~lightning_contloss.functional.l2_loss`).

    It trains the norm of ``pred`` as well as its direction, so it decodes by L2 distance.

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> import torch
        >>> loss = L2Loss(torch.eye(3))
        >>> loss(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([0]))
        tensor(1.)
        >>> loss.decode_space
        'l2'
    """

    decode_space: ClassVar[Space] = "l2"

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        return _l2_loss_tokens(pred, ids, table, ignore_index=self.ignore_index)
