"""ReWELoss: cross-entropy plus a weighted cosine term, for a softmax head with a regression head beside it."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from lightning_contloss.functional._checks import sum_count
from lightning_contloss.functional.rewe import DEFAULT_LAM, _check_rewe_loss_args, _rewe_loss_tokens
from lightning_contloss.functional.scoring import Space
from lightning_contloss.losses.base import Targets, _TableBoundLoss

__all__ = ["ReWELoss"]


class ReWELoss(_TableBoundLoss):
    """ReWE: ``CE(logits, w) + λ·(1 − cos(ê, e_w))``, called as ``loss(logits, pred, ids)``.

    For models that keep their softmax head and add a regression head (see
    :func:`~lightning_contloss.functional.rewe_loss`). The regression head decodes by cosine.

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        lam: λ, the weight of the cosine term.
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> import torch
        >>> loss = ReWELoss(torch.eye(2), lam=1.0)
        >>> loss(torch.zeros(1, 2), torch.tensor([[1.0, 1.0]]), torch.tensor([0]))
        tensor(0.9860)
    """

    decode_space: ClassVar[Space] = "cosine"

    def __init__(
        self,
        targets: Targets | None = None,
        *,
        lam: float = DEFAULT_LAM,
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        _check_rewe_loss_args(lam)
        super().__init__(targets, ignore_index=ignore_index, **kwargs)
        self.lam = lam

    def update(self, logits: Tensor, pred: Tensor, ids: Tensor) -> None:
        """Add the loss of a batch to the running sum and count."""
        self._accumulate(*self._batch(logits, pred, ids))

    def _batch(self, logits: Tensor, pred: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        table = self._table(pred)
        return sum_count(*_rewe_loss_tokens(logits, pred, ids, table, lam=self.lam, ignore_index=self.ignore_index))
