"""SynMarginLoss: a hinge against one synthetic negative a token, as a differentiable torchmetrics Metric."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from torch import Tensor

from lightning_contloss.functional._checks import Batch
from lightning_contloss.functional.scoring import Space
from lightning_contloss.functional.syn_margin import (
    DEFAULT_SYN_MARGIN,
    _check_syn_margin_loss_args,
    _syn_margin_loss_tokens,
)
from lightning_contloss.losses.base import ContinuousLoss, Targets
from lightning_contloss.losses.registry import register_loss

__all__ = ["SynMarginLoss"]


@register_loss("synmargin")
class SynMarginLoss(ContinuousLoss):
    """Syn-margin hinge, one synthetic negative a token (see :func:`~lightning_contloss.functional.syn_margin_loss`).

    The negative is built from the prediction and its target (Bhat, Kumar & Tsvetkov, 2019), so
    a token costs ``O(D)`` whatever V is. Only the direction of ``pred`` is trained: decodes by
    cosine.

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        margin: the hinge margin, >= 0.
        synthetic: ``"projection"`` (``u_orth``, the paper's syn-margin) or ``"difference"`` (``u_diff``).
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> import torch
        >>> loss = SynMarginLoss(torch.eye(2))
        >>> loss(torch.tensor([[1.0, 1.0]]), torch.tensor([0])), loss.decode_space
        (tensor(0.5000), 'cosine')
    """

    decode_space: ClassVar[Space] = "cosine"

    def __init__(
        self,
        targets: Targets | None = None,
        *,
        margin: float = DEFAULT_SYN_MARGIN,
        synthetic: Literal["projection", "difference"] = "projection",
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        _check_syn_margin_loss_args(margin, synthetic)
        super().__init__(targets, ignore_index=ignore_index, **kwargs)
        self.margin = margin
        self.synthetic = synthetic

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        return _syn_margin_loss_tokens(
            pred, ids, table, margin=self.margin, synthetic=self.synthetic, ignore_index=self.ignore_index
        )
