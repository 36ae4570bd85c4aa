"""Calibration: the one κ of a continuous model's distribution over its vocabulary.

A continuous model predicts a vector ``ê``; read with a concentration κ it gives the
distribution ``p(w | x) ∝ exp(κ·cos(ê, e_w))`` over the rows of the target table. The same
distribution, with the same κ, gives the perplexity (``val/vmf_ppl``), BrierLM's samples and
``generate(do_sample=True)``'s draws. κ comes from, in this order:

1. **the loss**, when it learns κ per prediction: a vMF loss's concentration
   (``kappa_min + ‖ê‖``); nothing to fit;
2. **a fitted κ̂**: :class:`~lightning_contloss.DecodingCallback` fits it on the first
   validation tokens of each validation epoch and stores it here, or you fit it with
   :meth:`~lightning_contloss.ContinuousOutputMixin.continuous_calibrate` on a few batches. It is
   a buffer, so it is saved in checkpoints and ``state_dict``;
3. **InfoNCE's temperature**: ``κ = 1/τ``, the concentration the loss trained with;
4. otherwise ``κ = 1`` (the raw cosine, close to uniform among the nearest tokens), with a
   warning, once.

A sampling temperature ``T`` divides the logits, as in Hugging Face: draws come from
``softmax(κ·cos / T)``.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_contloss.functional._checks import check_ignore_index, check_number
from lightning_contloss.functional.vmf_distribution import fit_kappa, vmf_log_prob, vmf_sample
from lightning_contloss.losses import InfoNCELoss, VMFLoss
from lightning_contloss.targets import TargetEmbeddings

__all__ = ["Calibration", "KappaSource"]

KappaSource = Literal["loss", "fitted", "temperature", "none"]
_Loss = TypeVar("_Loss", bound=nn.Module)


class Calibration(nn.Module):
    """The κ of ``p(w | x) ∝ exp(κ·cos(ê, e_w))`` for a module's loss; logits, draws and log-probabilities under it.

    ``replace_softmax_head`` gives every converted module one, as ``continuous_calibration``.

    Args:
        loss: the module's continuous loss (a loss or a composition), bound to its targets.

    Example:
        >>> from lightning_contloss.losses import CosineLoss
        >>> cal = Calibration(CosineLoss(TargetEmbeddings.random(20, 8, seed=0)))
        >>> cal.kappa is None, cal.source
        (True, 'none')
        >>> pred = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
        >>> nearest = (F.normalize(pred, dim=-1) @ F.normalize(cal.table.weight, dim=-1).T).argmax(-1)
        >>> kappa = cal.fit(pred, nearest)
        >>> cal.source, cal.kappa == kappa, kappa > 10  # the nearest token always right: a large κ
        ('fitted', True, True)
    """

    fitted: Tensor

    def __init__(self, loss: Metric) -> None:
        super().__init__()
        # NaN: no κ̂ fitted yet. A buffer, so checkpoints keep it.
        self.register_buffer("fitted", torch.tensor(math.nan))
        # Read, never owned: the module registers the loss itself (one copy in state_dict).
        self.__dict__["_loss"] = loss
        self.__dict__["_warned"] = False

    # ------------------------------------------------------------------ κ
    @property
    def kappa(self) -> float | None:
        """The fitted κ̂, or ``None`` before any fit. Set it to a number >= 0, or ``None`` to forget it."""
        value = float(self.fitted)
        return None if math.isnan(value) else value

    @kappa.setter
    def kappa(self, value: float | None) -> None:
        if value is not None:
            check_number(value, "kappa", low=0.0, why="a concentration; None forgets the fitted value")
        with torch.no_grad():
            self.fitted.fill_(math.nan if value is None else float(value))

    @property
    def source(self) -> KappaSource:
        """Where κ comes from now: ``"loss"`` (vMF), ``"fitted"``, ``"temperature"`` (InfoNCE) or ``"none"``."""
        if self._find(VMFLoss) is not None:
            return "loss"
        if self.kappa is not None:
            return "fitted"
        if self._find(InfoNCELoss) is not None:
            return "temperature"
        return "none"

    def current_kappa(self) -> float | None:
        """The κ the distribution uses (``None`` for a vMF loss: its concentration, per prediction)."""
        source = self.source
        if source == "loss":
            return None
        if source == "fitted":
            return self.kappa
        info_nce = self._find(InfoNCELoss)
        if info_nce is not None:
            return 1.0 / info_nce.current_temperature
        if not self.__dict__["_warned"]:
            self.__dict__["_warned"] = True
            warnings.warn(
                "this model has no calibrated κ: its distribution uses κ = 1, close to uniform among the "
                "nearest tokens, so sampling is nearly random. Fit κ̂ with lm.continuous_calibrate(pred, ids) "
                "on a few validation batches, or validate once with DecodingCallback (it stores κ̂)",
                UserWarning,
                stacklevel=3,
            )
        return 1.0

    # ------------------------------------------------------------------ the distribution
    def query(self, pred: Tensor, temperature: float = 1.0) -> Tensor:
        """``q [..., D]`` with ``q·e_w/‖e_w‖ = κ·cos(ê, e_w) / T``: the logits' natural parameter.

        Args:
            pred: ``[..., D]`` predictions ``ê``.
            temperature: T > 0; the logits are divided by it.
        """
        check_number(temperature, "temperature", low=0.0, low_open=True, why="it divides the logits")
        vmf = self._find(VMFLoss)
        if vmf is not None:
            return vmf.concentration(pred.float()) / temperature
        kappa = self.current_kappa()
        assert kappa is not None
        return F.normalize(pred.float(), dim=-1) * (kappa / temperature)

    def logits(self, pred: Tensor, rows: Tensor, temperature: float = 1.0) -> Tensor:
        """``κ·cos(ê, e_w) / T`` of each prediction ``[..., D]`` and its own candidates ``[..., k, D]``: ``[..., k]``.

        Example:
            >>> from lightning_contloss.losses import InfoNCELoss
            >>> cal = Calibration(InfoNCELoss(temperature=0.5))
            >>> cal.logits(torch.tensor([[1.0, 0.0]]), torch.tensor([[[3.0, 0.0], [0.0, 1.0]]]))
            tensor([[2., 0.]])
        """
        if rows.shape[:-2] != pred.shape[:-1] or rows.shape[-1] != pred.shape[-1]:
            raise ValueError(
                f"rows have shape {tuple(rows.shape)} but pred has shape {tuple(pred.shape)}; "
                "rows must be [..., k, D] for pred [..., D]"
            )
        q = self.query(pred, temperature)
        return (q.unsqueeze(-2) * F.normalize(rows.to(q), dim=-1)).sum(-1)

    def sample(
        self,
        pred: Tensor,
        num_samples: int = 1,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Exact draws over the whole table (special ids never drawn): ``pred [..., D] -> ids [num_samples, ...]``."""
        table = self.table
        q = self.query(pred, temperature)
        return vmf_sample(q, table.weight, num_samples, exclude_mask=_exclude(table), generator=generator)

    def log_prob(self, pred: Tensor, target: Tensor) -> Tensor:
        """``log p(target | ê)`` over the whole table: ``[..., D], [...] -> [...]`` (``-inf`` on special ids)."""
        table = self.table
        return vmf_log_prob(self.query(pred), target, table.weight, exclude_mask=_exclude(table))

    def fit(self, pred: Tensor, target: Tensor, *, ignore_index: int | None = None) -> float:
        """Fit κ̂ by maximum likelihood on predictions and their true targets, store it and return it.

        Fit on held-out tokens (a few validation batches: κ̂ is one scalar, a few hundred tokens
        pin it); padding (``ignore_index``) and special targets are left out.

        Args:
            pred: ``[..., D]`` predictions.
            target: ``[...]`` their target ids.
            ignore_index: target id to skip (padding).
        """
        if self._find(VMFLoss) is not None:
            raise ValueError(
                "a vMF loss learns κ itself (the prediction's norm, plus kappa_min): perplexity, BrierLM and "
                "sampling use it, so there is nothing to fit"
            )
        check_ignore_index(ignore_index)
        if not isinstance(pred, Tensor) or not isinstance(target, Tensor) or target.shape != pred.shape[:-1]:
            raise ValueError(
                "pass pred [..., D] and target [...] (one target id per prediction), got "
                f"{_shape(pred)} and {_shape(target)}"
            )
        table = self.table
        exclude = _exclude(table)
        flat_p, flat_t = pred.reshape(-1, pred.shape[-1]), target.reshape(-1).to(pred.device)
        keep = flat_t != ignore_index if ignore_index is not None else torch.ones_like(flat_t, dtype=torch.bool)
        if exclude is not None:
            inside = (flat_t >= 0) & (flat_t < len(table))
            keep &= ~(inside & exclude.to(flat_t.device)[flat_t.clamp(0, len(table) - 1)])
        if not bool(keep.any()):
            raise ValueError("no token to fit κ̂ on (all are padding or special ids); pass validation predictions")
        weight = table.weight
        kappa = fit_kappa(
            flat_p[keep].to(weight.device), flat_t[keep].to(weight.device), weight, exclude_mask=exclude
        )
        self.kappa = kappa
        stored = self.kappa  # as the buffer holds it (float32), so the value returned is the one used
        assert stored is not None
        return stored

    # ------------------------------------------------------------------ helpers
    @property
    def table(self) -> TargetEmbeddings:
        """The target table the loss is bound to."""
        for module in self.__dict__["_loss"].modules():
            targets = getattr(module, "targets", None)
            if isinstance(targets, TargetEmbeddings):
                return targets
        raise RuntimeError("the loss is not bound to a TargetEmbeddings; call replace_softmax_head(...) first")

    def _find(self, cls: type[_Loss]) -> _Loss | None:
        return next((m for m in self.__dict__["_loss"].modules() if isinstance(m, cls)), None)

    def extra_repr(self) -> str:
        kappa = self.kappa
        return f"source={self.source!r}" + (f", kappa={kappa:.4g}" if kappa is not None else "")


def _exclude(table: TargetEmbeddings) -> Tensor | None:
    return table.special_mask if bool(table.special_mask.any()) else None


def _shape(x: object) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__
