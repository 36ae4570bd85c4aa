"""BrierLM (Shao et al. 2025, CALM): a likelihood-free language-model score from two samples.

The Brier score of a predictive distribution ``P`` at outcome ``y``, in its "higher is better"
form, is ``Brier(P, y) = 2·P(y) − Σ_x P(x)² = 1 − Σ_x (P(x) − 1[x = y])²``. It needs no
likelihood: with two independent draws ``x1, x2 ~ P``,

    E[1[x1 = y] + 1[x2 = y] − 1[x1 = x2]] = P(y) + P(y) − Σ_x P(x)²,

so the indicator sum is an unbiased estimate from samples alone. Brier-n applies it with the
n-gram starting at a position as the outcome, and
``BrierLM = 100 · (Π_{n=1..N} Brier-n)^{1/N}`` (N = 4 in CALM).

Two ways of drawing the samples are accepted:

- **Continuations** ``[B, T, m]`` with ``m >= max_n``: for each position ``t``, two
  continuations of ``m`` tokens drawn autoregressively from the model given the true prefix
  ``target[:, :t]``. The n-gram at ``t`` matches when its first ``n`` tokens equal
  ``target[:, t:t+n]``. This is CALM's estimator, unbiased for Brier-n of the model's n-gram
  distribution.
- **Teacher-forced** ``[B, T]``: one token per position, drawn from the model's next-token
  distribution given the true prefix, from one forward pass (``CF.sample_from_logits`` for
  softmax models, ``CF.vmf_sample`` for continuous ones). The n-gram at ``t`` is
  ``sample[:, t:t+n]``. Its agreement terms are still exact:
  ``P(x1[t:t+n] = y[t:t+n]) = Π_j p(y_{t+j} | y_{<t+j})`` is the model's probability of the
  true n-gram. The collision term is the approximation: it estimates
  ``Π_j Σ_w p(w | y_{<t+j})²``, the collision probability along the true path, where the
  autoregressive score uses ``Σ_g P(g)²`` over the model's own paths. They coincide for n = 1
  and when the next-token distribution does not depend on the prefix; otherwise they differ,
  so say which mode a score used, and do not compare teacher-forced scores with CALM's.

Each Brier-n is floored at 0 before the geometric mean (an expected Brier score can be
negative for a confidently wrong model, and a negative factor has no geometric mean); the raw
values are available from :meth:`BrierLM.per_order`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_contloss.functional._checks import check_ignore_index, check_positive_int
from lightning_contloss.metrics.neighbor_accuracy import _check_ids

__all__ = ["BrierLM", "brier_lm"]


def _as_batch(x: Tensor, name: str) -> Tensor:
    _check_ids(x, name)
    return x.unsqueeze(0) if x.dim() == 1 else x


def _brier_lm_update(
    sample1: Tensor, sample2: Tensor, target: Tensor, max_n: int, ignore_index: int | None
) -> tuple[Tensor, Tensor]:
    """Per-order sums of the two-sample estimator and counts of n-grams, each ``[max_n]`` int64."""
    target = _as_batch(target, "target")
    s1, s2 = _as_batch(sample1, "sample1"), _as_batch(sample2, "sample2")
    if target.dim() != 2:
        raise ValueError(f"target must be [B, T] (or [T]), got shape {tuple(target.shape)}")
    if s1.shape != s2.shape:
        raise ValueError(f"sample1 has shape {tuple(s1.shape)} but sample2 {tuple(s2.shape)}; they must match")
    continuations = s1.dim() == 3
    if s1.shape[:2] != target.shape or not (s1.dim() == 2 or (continuations and s1.shape[2] >= max_n)):
        raise ValueError(
            f"samples have shape {tuple(s1.shape)} but target is {tuple(target.shape)}; pass samples "
            f"[B, T] (one teacher-forced draw per position) or [B, T, m] with m >= max_n={max_n} "
            "(a continuation per position)"
        )
    s1, s2 = s1.to(target.device), s2.to(target.device)
    sums = torch.zeros(max_n, dtype=torch.long, device=target.device)
    counts = torch.zeros(max_n, dtype=torch.long, device=target.device)
    length = target.shape[1]
    for n in range(1, max_n + 1):
        if length < n:
            break
        ref = target.unfold(1, n, 1)  # [B, T-n+1, n]: the n-gram starting at each position
        if continuations:
            g1, g2 = s1[:, : length - n + 1, :n], s2[:, : length - n + 1, :n]
        else:
            g1, g2 = s1.unfold(1, n, 1), s2.unfold(1, n, 1)
        estimate = (g1 == ref).all(-1).long() + (g2 == ref).all(-1).long() - (g1 == g2).all(-1).long()
        if ignore_index is not None:
            valid = (ref != ignore_index).all(-1)
            estimate = estimate * valid
            counts[n - 1] = valid.sum()
        else:
            counts[n - 1] = ref.shape[0] * ref.shape[1]
        sums[n - 1] = estimate.sum()
    return sums, counts


def _brier_lm_compute(sums: Tensor, counts: Tensor) -> Tensor:
    per_order = sums.double() / counts
    return (100.0 * per_order.clamp_min(0.0).prod() ** (1.0 / sums.numel())).float()


def brier_lm(
    sample1: Tensor, sample2: Tensor, target: Tensor, max_n: int = 4, ignore_index: int | None = None
) -> Tensor:
    """BrierLM of one batch: ``100 · (Π_n max(Brier-n, 0))^{1/max_n}`` from two samples per position.

    Args:
        sample1: ``[B, T]`` teacher-forced draws, or ``[B, T, m]`` continuations (``m >= max_n``).
        sample2: an independent second draw, same shape as ``sample1``.
        target: ``[B, T]`` true ids (``[T]`` is one sequence).
        max_n: largest n-gram order (4 in CALM).
        ignore_index: target id of padding; every n-gram containing it is skipped.

    Returns:
        Scalar float in ``[0, 100]``; NaN when some order has no n-gram (sequences too short).

    Example:
        >>> y = torch.tensor([[5, 6, 7, 8, 9]])
        >>> brier_lm(y, y, y)  # a model that always samples the truth
        tensor(100.)
    """
    _check_brier_lm_args(max_n, ignore_index)
    return _brier_lm_compute(*_brier_lm_update(sample1, sample2, target, max_n, ignore_index))


def _check_brier_lm_args(max_n: int, ignore_index: int | None) -> None:
    check_positive_int(max_n, "max_n")
    check_ignore_index(ignore_index)


class BrierLM(Metric):
    """BrierLM (CALM): a likelihood-free score, so softmax and continuous models share one scale.

    Feed two independent samples per position (see the module docs for the two sampling modes
    and what each estimates). Sums of the integer estimator and n-gram counts are the states,
    so DDP sync adds them exactly.

    Args:
        max_n: largest n-gram order (4 in CALM).
        ignore_index: target id of padding; n-grams containing it are skipped.
        kwargs: passed to ``torchmetrics.Metric``.

    Example:
        >>> from lightning_contloss.functional import sample_from_logits
        >>> g = torch.Generator().manual_seed(0)
        >>> target = torch.randint(0, 50, (4, 32), generator=g)
        >>> logits = torch.nn.functional.one_hot(target, 50).float() * 30  # confident and right
        >>> s1, s2 = sample_from_logits(logits, 2, generator=g)
        >>> m = BrierLM(max_n=4)
        >>> m.update(s1, s2, target)
        >>> m.compute()
        tensor(100.)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    brier_sum: Tensor
    total: Tensor

    def __init__(self, max_n: int = 4, ignore_index: int | None = None, **kwargs: Any) -> None:
        _check_brier_lm_args(max_n, ignore_index)
        super().__init__(**kwargs)
        self.max_n = max_n
        self.ignore_index = ignore_index
        self.add_state("brier_sum", default=torch.zeros(max_n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(max_n, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sample1: Tensor, sample2: Tensor, target: Tensor) -> None:
        """Add a batch: two samples ``[B, T]`` or ``[B, T, m]`` and ``target [B, T]``."""
        sums, counts = _brier_lm_update(sample1, sample2, target, self.max_n, self.ignore_index)
        self.brier_sum += sums.to(self.brier_sum.device)
        self.total += counts.to(self.total.device)

    def per_order(self) -> Tensor:
        """Raw Brier-1 .. Brier-max_n so far, ``[max_n]`` float (not floored, not scaled)."""
        return (self.brier_sum.double() / self.total).float()

    def compute(self) -> Tensor:
        """BrierLM over everything so far, in ``[0, 100]``."""
        return _brier_lm_compute(self.brier_sum, self.total)
