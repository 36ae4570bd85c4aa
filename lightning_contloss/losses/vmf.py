"""VMFLoss: the regularised von Mises-Fisher NLL as a differentiable torchmetrics Metric."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from torch import Tensor

from lightning_contloss.functional._checks import Batch
from lightning_contloss.functional.scoring import Space
from lightning_contloss.functional.vmf import (
    DEFAULT_KUMAR_LAMBDA,
    DEFAULT_LAMBDA1,
    DEFAULT_LAMBDA2,
    LOSS_DEFAULT_KAPPA_MIN,
    LOSS_DEFAULT_REGULARIZER,
    _check_vmf_nll_args,
    _vmf_nll_tokens,
    vmf_concentration,
)
from lightning_contloss.losses.base import ContinuousLoss, Targets
from lightning_contloss.losses.registry import register_loss

__all__ = ["VMFLoss"]


@register_loss("vmf")
class VMFLoss(ContinuousLoss):
    """Regularised von Mises-Fisher NLL (see :func:`~lightning_contloss.functional.vmf_nll`).

    Its defaults are the setting that learns from the first step: Kumar & Tsvetkov's own
    regulariser ``log(1 + κ)·(0.2 − cos)`` and a concentration floor ``kappa_min=1``. The
    reference code's ``regularizer="default"`` form (``vmf_nll``'s default) collapsed to κ = 0 on a
    PTB Transformer LM, below the unigram baseline (``benchmarks/results/quality.md``).

    ``decode_space`` is ``"cosine"``: for a fixed prediction the vMF density ranks words by
    ``κ·cos(ê, e_w)`` and κ is the same for every word. That is inner-product ranking on a
    normalised table, and stays right when the table was built with ``normalize=False``, since
    the loss itself normalises the rows.

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        lambda1: weight of the κ penalty (reg1, ``regularizer="default"`` only); 0.02 as in the reference code.
        lambda2: scale of the dot product (reg2, ``regularizer="default"`` only); 0.1 as in the reference code.
        approx: use Kumar & Tsvetkov's approximation of ``log C_m`` (gradient only).
        regularizer: ``"kumar"`` (default), ``log(1 + κ)·(kumar_lambda − cos)``, or ``"default"``
            (reg1 and reg2, the reference code's ``_nllvmf``).
        kumar_lambda: λ of the ``"kumar"`` form, in [0, 1); 0.2 as in the reference code.
        kappa_min: concentration floor, κ = kappa_min + ‖ê‖ (default 1; 0 for κ = ‖ê‖).
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> import torch
        >>> from lightning_contloss.targets import TargetEmbeddings
        >>> loss = VMFLoss(TargetEmbeddings.random(100, 32))  # regularizer="kumar", kappa_min=1.0
        >>> pred = torch.randn(4, 32, requires_grad=True)
        >>> loss(pred, torch.tensor([1, 2, 3, 4])).backward()
        >>> bool(torch.isfinite(pred.grad).all())
        True
    """

    decode_space: ClassVar[Space] = "cosine"

    def __init__(
        self,
        targets: Targets | None = None,
        *,
        lambda1: float = DEFAULT_LAMBDA1,
        lambda2: float = DEFAULT_LAMBDA2,
        approx: bool = False,
        regularizer: Literal["default", "kumar"] = LOSS_DEFAULT_REGULARIZER,
        kumar_lambda: float = DEFAULT_KUMAR_LAMBDA,
        kappa_min: float = LOSS_DEFAULT_KAPPA_MIN,
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        _check_vmf_nll_args(lambda1, lambda2, approx, regularizer, kumar_lambda, kappa_min)
        super().__init__(targets, ignore_index=ignore_index, **kwargs)
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.approx = approx
        self.regularizer = regularizer
        self.kumar_lambda = kumar_lambda
        self.kappa_min = kappa_min

    def concentration(self, pred: Tensor) -> Tensor:
        """``κ·ê/‖ê‖`` for this loss's κ (see :func:`~lightning_contloss.functional.vmf_concentration`).

        What a likelihood metric that reads κ from the norm must be given.

        Example:
            >>> import torch
            >>> VMFLoss(kappa_min=2.0).concentration(torch.tensor([[0.0, 1.0]]))
            tensor([[0., 3.]])
        """
        return vmf_concentration(pred, self.kappa_min)

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        return _vmf_nll_tokens(
            pred,
            ids,
            table,
            lambda1=self.lambda1,
            lambda2=self.lambda2,
            approx=self.approx,
            ignore_index=self.ignore_index,
            regularizer=self.regularizer,
            kumar_lambda=self.kumar_lambda,
            kappa_min=self.kappa_min,
        )
