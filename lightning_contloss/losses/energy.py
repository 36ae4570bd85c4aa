"""EnergyLoss: the energy score of a generative head's samples, as a differentiable torchmetrics Metric."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from lightning_contloss.functional._checks import Batch
from lightning_contloss.functional.energy import DEFAULT_BETA, _check_energy_loss_args, _energy_loss_tokens
from lightning_contloss.functional.scoring import Space
from lightning_contloss.losses.base import ContinuousLoss, Targets
from lightning_contloss.losses.registry import register_loss

__all__ = ["EnergyLoss"]


@register_loss("energy")
class EnergyLoss(ContinuousLoss):
    """Energy score of S samples per position (see :func:`~lightning_contloss.functional.energy_loss`).

    Called as ``loss(pred, ids)`` with ``pred [..., S, D]`` the samples of a
    :class:`~lightning_contloss.generative_head.GenerativeHead` (S is read from the shape), or
    ``pred [..., D]`` one point per position, scored as a point mass (``‖ê − e_w‖^β``; that is how
    the head's eval-mode mean is scored as ``val/loss``). The score is Euclidean, so it decodes
    by L2: on a unit-norm table (``TargetEmbeddings.random``, or ``normalize=True``) that ranks
    as cosine does, while on an unnormalised table long rows weigh more.

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        beta: the exponent β in (0, 2); 1 as in CALM.
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> import torch
        >>> from lightning_contloss.targets import TargetEmbeddings
        >>> loss = EnergyLoss(TargetEmbeddings.random(100, 16), ignore_index=-100)
        >>> samples = torch.randn(2, 5, 8, 16, requires_grad=True)  # [B, T, S, D]
        >>> ids = torch.tensor([[1, 2, 3, -100, -100], [4, 5, 6, 7, 8]])
        >>> loss(samples, ids).backward()
        >>> samples.grad[0, 3].abs().sum().item(), loss.decode_space
        (0.0, 'l2')
    """

    decode_space: ClassVar[Space] = "l2"

    def __init__(
        self,
        targets: Targets | None = None,
        *,
        beta: float = DEFAULT_BETA,
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        _check_energy_loss_args(beta)
        super().__init__(targets, ignore_index=ignore_index, **kwargs)
        self.beta = beta

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        return _energy_loss_tokens(pred, ids, table, beta=self.beta, ignore_index=self.ignore_index)
