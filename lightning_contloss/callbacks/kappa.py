"""KappaEstimator: one κ̂ per epoch for the likelihood metrics of a loss that leaves the norm free."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_contloss.functional.vmf_distribution import _FIT_CACHE_BUDGET, fit_kappa
from lightning_contloss.targets import TargetEmbeddings

__all__ = ["KAPPA_FIT_TOKENS", "KappaEstimator", "kappa_fit_tokens", "loss_concentration"]

# κ̂ is one scalar at the minimum of a convex NLL, where an error ε moves the NLL (and so vmf_ppl)
# only by O(ε²): a few hundred tokens pin it well, and each Newton step is an exp pass over
# tokens × V scores.
KAPPA_FIT_TOKENS = 512
# ...fewer for a large V, so that their [N, V] scores stay in fit_kappa's cache and each Newton
# step is an exp pass, not another product over the table (83 tokens at V = 400k).
_KAPPA_FIT_MIN_TOKENS = 64


def kappa_fit_tokens(vocab_size: int) -> int:
    """Tokens per epoch that κ̂ is fitted on: 512, or fewer for a large table (at least 64).

    Example:
        >>> kappa_fit_tokens(10_000), kappa_fit_tokens(400_000), kappa_fit_tokens(10_000_000)
        (512, 83, 64)
    """
    return max(_KAPPA_FIT_MIN_TOKENS, min(KAPPA_FIT_TOKENS, _FIT_CACHE_BUDGET // max(vocab_size, 1)))


def loss_concentration(loss: nn.Module, pred: Tensor) -> Tensor | None:
    """``pred [..., D]`` scaled to the κ its loss trains (``κ·ê/‖ê‖``); ``None`` when no loss inside fixes κ.

    Asks each module of ``loss`` (a loss, a composition such as ``VMFLoss() + 0.1 *
    CosineLoss()``, a warm start) for its ``concentration(pred)`` and returns the first answer
    that is not ``None``. Pass ``pred[:0]`` to ask only whether the loss fixes κ.

    Example:
        >>> from lightning_contloss.losses import CosineLoss, VMFLoss
        >>> loss_concentration(CosineLoss(), torch.ones(1, 2)) is None
        True
        >>> loss_concentration(VMFLoss(kappa_min=1.0) + 0.1 * CosineLoss(), torch.tensor([[0.0, 2.0]]))
        tensor([[0., 3.]])
    """
    for module in loss.modules():
        concentration = getattr(module, "concentration", None)
        if callable(concentration):
            scaled = concentration(pred)
            if isinstance(scaled, Tensor):
                return scaled
    return None


class KappaEstimator:
    """Fits κ̂ of ``p(w) ∝ exp(κ·cos(ê, e_w))`` once per epoch, warm-started from the last epoch's κ̂.

    For a loss that leaves the prediction's norm free (cosine, L2, max-margin, InfoNCE), the
    likelihood metrics and the prior re-ranking rule (β = 1/κ̂) need one κ: it is the maximum
    likelihood κ̂ (:func:`~lightning_contloss.functional.fit_kappa`) on the epoch's first
    :func:`kappa_fit_tokens` tokens. Padding and special targets have no likelihood and are left
    out of the fit.

    Attributes:
        fitted: this epoch's κ̂ (``None`` until fitted or adopted).
        last: the latest κ̂ of any epoch, where the next fit starts (``None`` before the first).

    Example:
        >>> targets = TargetEmbeddings.random(50, 8, seed=0)
        >>> ids = torch.arange(40) % 50
        >>> pred = targets.weight[ids] * 3 + 0.1 * torch.randn(40, 8, generator=torch.Generator().manual_seed(0))
        >>> estimator = KappaEstimator()
        >>> kappa = estimator.epoch_kappa(pred, ids, targets, skip_id=-100)
        >>> kappa > 0, estimator.epoch_kappa(pred[:1], ids[:1], targets, skip_id=-100) == kappa  # once per epoch
        (True, True)
    """

    def __init__(self) -> None:
        self.fitted: float | None = None
        self.last: float | None = None

    def new_epoch(self) -> None:
        """Forget this epoch's κ̂; the next :meth:`epoch_kappa` fits again, starting from :attr:`last`."""
        self.fitted = None

    def adopt(self, kappa: float) -> None:
        """Take ``kappa`` as this epoch's κ̂ (under DDP: rank 0's fit, broadcast)."""
        self.fitted = self.last = float(kappa)

    def epoch_kappa(self, pred: Tensor, target: Tensor, targets: TargetEmbeddings, skip_id: int) -> float:
        """This epoch's κ̂: fitted on the first tokens of ``pred [N, D]`` / ``target [N]`` at the first call."""
        if self.fitted is None:
            # Each Newton step is a pass over the table: fit on a sample, it is one scalar.
            n = kappa_fit_tokens(len(targets))
            self.adopt(self.fit(pred[:n], target[:n], targets, skip_id))
        assert self.fitted is not None
        return self.fitted

    def fit(self, pred: Tensor, target: Tensor, targets: TargetEmbeddings, skip_id: int) -> float:
        """``fit_kappa`` on ``pred [N, D]`` / ``target [N]``, warm-started from :attr:`last`; 0 without tokens.

        Targets equal to ``skip_id`` and special targets are left out. Changes no state.
        """
        target = target.to(targets.weight.device)
        pred = pred.to(targets.weight.device)
        exclude = targets.special_mask if bool(targets.special_mask.any()) else None
        keep = target != skip_id
        if exclude is not None:
            keep &= ~exclude[torch.where(keep, target, 0)]
        start = self.last if self.last else 1.0
        if not bool(keep.any()):
            return 0.0
        return fit_kappa(pred[keep], target[keep], targets.weight, exclude_mask=exclude, kappa_init=start)

    @staticmethod
    def share(pred: Tensor, target: Tensor, vocab_size: int, world_size: int, skip_id: int) -> tuple[Tensor, Tensor]:
        """This rank's part of a fit sample gathered from ``world_size`` ranks: ``([n, D], [n])``.

        ``n = ceil(kappa_fit_tokens(V) / world_size)``: the first ``n`` rows of ``pred [N, D]`` /
        ``target [N]``, padded with ``skip_id`` targets when the rank has fewer, so every rank
        gathers the same shape.

        Example:
            >>> p, t = KappaEstimator.share(torch.ones(3, 2), torch.tensor([4, 5, 6]), 100, 128, skip_id=-100)
            >>> p.shape, t.tolist()
            (torch.Size([4, 2]), [4, 5, 6, -100])
        """
        n = -(-kappa_fit_tokens(vocab_size) // world_size)
        sample_p = pred.new_zeros(n, pred.shape[1])
        sample_t = torch.full((n,), skip_id, dtype=torch.long, device=sample_p.device)
        rows = min(n, pred.shape[0])
        sample_p[:rows], sample_t[:rows] = pred[:rows].to(sample_p.device), target[:rows].to(sample_p.device)
        return sample_p, sample_t
