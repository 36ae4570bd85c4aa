"""Maximum-likelihood fit of a von Mises-Fisher distribution to weighted points on the sphere."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_contloss.functional._checks import ROW_BLOCK, all_finite
from lightning_contloss.functional.vmf_normalizer import bessel_ratio

__all__ = ["fit_vmf"]


def fit_vmf(
    points: Tensor, weights: Tensor | None = None, *, tol: float = 1e-10, max_iter: int = 100
) -> tuple[Tensor, float]:
    """Maximum-likelihood vMF ``(mean direction μ, concentration κ)`` of weighted points.

    Each row is normalised to the unit sphere first. With ``R̄ = ‖Σ wᵢ xᵢ‖ / Σ wᵢ`` (the mean
    resultant length), ``μ = Σ wᵢ xᵢ / ‖Σ wᵢ xᵢ‖`` and κ solves ``A_D(κ) = R̄`` where
    ``A_D(κ) = I_{D/2}(κ) / I_{D/2-1}(κ)``. The solve starts from Banerjee et al.'s (2005)
    approximation ``R̄(D - R̄²)/(1 - R̄²)`` and takes Newton steps (``A' = 1 - A² - (D-1)A/κ``),
    kept inside a shrinking bracket, to relative precision ``tol``.

    A use: the context-free vMF fit of a target table under the unigram distribution
    (``points`` = the targets, ``weights`` = word counts) is the continuous analogue of a
    softmax's log-unigram bias, and the natural starting bias of a regression head.

    Args:
        points: ``[N, D]`` points (any norms; all-zero rows count as nothing), ``D >= 2``.
        weights: ``[N]`` non-negative weights (e.g. counts), or ``None`` for equal weights.
        tol: relative precision of κ.
        max_iter: cap on Newton/bisection steps.

    Returns:
        ``(μ [D] in points' dtype, κ >= 0)``; ``κ = 0`` and an arbitrary unit ``μ`` when the
        points cancel out exactly.

    Example:
        >>> mu, kappa = fit_vmf(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([1.0, 1.0, 0.0]))
        >>> mu.tolist(), kappa > 1e6  # all the weight on one direction: a point mass
        ([1.0, 0.0], True)
    """
    if points.dim() != 2 or points.shape[1] < 2 or points.shape[0] == 0:
        raise ValueError(f"points must be [N, D] with N >= 1 and D >= 2, got shape {tuple(points.shape)}")
    if not points.is_floating_point():
        raise ValueError("points must be finite floating-point numbers")
    if weights is None:
        w = torch.ones(points.shape[0], dtype=torch.float64, device=points.device)
    else:
        if weights.shape != points.shape[:1]:
            raise ValueError(
                f"weights has shape {tuple(weights.shape)} but points has {points.shape[0]} rows; "
                "pass one weight per row"
            )
        w = weights.to(points.device, torch.float64)
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError("weights must be finite and non-negative (e.g. token counts)")
    total = float(w.sum())
    if total <= 0:
        raise ValueError("weights sum to zero; give at least one row a positive weight")
    if not all_finite(points):
        raise ValueError("points must be finite floating-point numbers")
    # In float64, a block of rows at a time: a float64 copy of a 400k × 256 table would be 800 MB.
    resultant = torch.zeros(points.shape[1], dtype=torch.float64, device=points.device)
    for start in range(0, points.shape[0], ROW_BLOCK):
        block = points[start : start + ROW_BLOCK]
        resultant += w[start : start + ROW_BLOCK] @ F.normalize(block.double(), dim=-1)
    length = float(resultant.norm())
    dim = points.shape[1]
    if length == 0.0:
        mu = torch.zeros(dim, dtype=points.dtype, device=points.device)
        mu[0] = 1.0
        return mu, 0.0
    mu = (resultant / length).to(points.dtype)
    r_bar = min(length / total, 1.0)
    if r_bar >= 1.0 - 1e-12:
        return mu, math.inf
    return mu, _solve_kappa(r_bar, dim, tol, max_iter)


def _solve_kappa(r_bar: float, dim: int, tol: float, max_iter: int) -> float:
    """κ with ``A_dim(κ) = r_bar``; A is increasing from 0 to 1, so the root is unique."""
    order = dim / 2.0 - 1.0

    def a(kappa: float) -> float:
        return float(bessel_ratio(order, torch.tensor(kappa, dtype=torch.float64)))

    lo, hi = 0.0, math.inf
    kappa = r_bar * (dim - r_bar**2) / (1.0 - r_bar**2)
    for _ in range(max_iter):
        value = a(kappa)
        if value < r_bar:
            lo = kappa
        else:
            hi = kappa
        slope = 1.0 - value**2 - (dim - 1) * value / kappa
        step = kappa - (value - r_bar) / slope if slope > 0 else math.nan
        if not lo < step < hi:  # Newton left the bracket: bisect (or grow it when open above)
            step = 2.0 * kappa if math.isinf(hi) else 0.5 * (lo + hi)
        if abs(step - kappa) <= tol * max(kappa, 1e-12):
            return step
        kappa = step
    return kappa
