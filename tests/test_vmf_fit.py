"""fit_vmf against scipy's vMF fit and an independent root solve, plus properties and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize, special, stats

from lightning_contloss.functional import fit_vmf


@pytest.mark.parametrize(("dim", "kappa"), [(3, 5.0), (10, 0.5), (50, 20.0)])
def test_matches_scipy_fit(dim: int, kappa: float) -> None:
    mu = np.zeros(dim)
    mu[1] = 1.0
    x = stats.vonmises_fisher(mu, kappa).rvs(3000, random_state=0)
    ref_mu, ref_kappa = stats.vonmises_fisher.fit(x)
    got_mu, got_kappa = fit_vmf(torch.from_numpy(x))
    assert got_kappa == pytest.approx(ref_kappa, rel=1e-9)
    np.testing.assert_allclose(got_mu.numpy(), ref_mu, atol=1e-12)


@pytest.mark.parametrize("r_bar", [0.02, 0.1, 0.5, 0.9, 0.999])
def test_high_dimension_matches_scaled_bessel_root(r_bar: float) -> None:
    # scipy's own fit overflows at D = 256; solve A_D(κ) = R̄ with exponentially scaled Bessels.
    dim = 256
    v = dim / 2 - 1
    # A_D(κ) < κ/D, so the root lies above R̄·D/2 (where ive is still representable).
    a = lambda k: special.ive(v + 1, k) / special.ive(v, k) - r_bar  # noqa: E731
    ref = optimize.brentq(a, r_bar * dim / 2, 1e7, xtol=1e-14, rtol=1e-14)
    # Two weighted points at an angle whose weighted resultant has length r_bar.
    points = torch.zeros(2, dim, dtype=torch.float64)
    points[0, 0] = 1.0
    points[1, 0] = -1.0
    weights = torch.tensor([(1 + r_bar) / 2, (1 - r_bar) / 2], dtype=torch.float64)
    mu, kappa = fit_vmf(points, weights)
    assert kappa == pytest.approx(ref, rel=1e-9)
    assert mu[0] == 1.0


def test_integer_weights_equal_repeated_rows() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 16, generator=g, dtype=torch.float64)
    counts = torch.randint(0, 5, (20,), generator=g)
    counts[0] = 3
    mu_w, k_w = fit_vmf(x, counts.double())
    mu_r, k_r = fit_vmf(x.repeat_interleave(counts, dim=0))
    assert k_w == pytest.approx(k_r, rel=1e-9)
    assert torch.allclose(mu_w, mu_r, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 64),
    st.floats(0.01, 2.0),
    st.floats(0.5, 100.0),
    st.integers(0, 1000),
)
def test_kappa_is_scale_free_and_grows_with_concentration(dim: int, spread: float, scale: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    base = torch.zeros(dim, dtype=torch.float64)
    base[0] = 1.0
    x = base + spread * torch.randn(64, dim, generator=g, dtype=torch.float64)
    mu, kappa = fit_vmf(x)
    # Row norms do not matter, only directions.
    mu2, kappa2 = fit_vmf(x * scale * torch.rand(64, 1, generator=g, dtype=torch.float64).add(0.1))
    assert kappa2 == pytest.approx(kappa, rel=1e-6) or abs(kappa2 - kappa) < 1e-6
    assert torch.allclose(mu, mu2, atol=1e-8)
    # Pulling every point halfway to the mean direction concentrates them: κ grows.
    tighter = torch.nn.functional.normalize(x, dim=-1) + mu
    assert fit_vmf(tighter)[1] >= kappa - 1e-9
    assert math.isfinite(kappa) and kappa >= 0


def test_degenerate_cases() -> None:
    # Opposite points cancel: uniform on the sphere, κ = 0.
    mu, kappa = fit_vmf(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    assert kappa == 0.0 and float(mu.norm()) == pytest.approx(1.0)
    # All the weight on one direction: a point mass.
    assert fit_vmf(torch.tensor([[0.0, 2.0], [0.0, 1.0]]))[1] == math.inf
    assert fit_vmf(torch.tensor([[1.0, 0.0]], dtype=torch.float32))[0].dtype == torch.float32


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        fit_vmf(torch.ones(3))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        fit_vmf(torch.ones(0, 4))
    with pytest.raises(ValueError, match="finite"):
        fit_vmf(torch.tensor([[1.0, math.nan]]))
    with pytest.raises(ValueError, match="one weight per row"):
        fit_vmf(torch.ones(3, 4), torch.ones(2))
    with pytest.raises(ValueError, match="non-negative"):
        fit_vmf(torch.ones(2, 4), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="sum to zero"):
        fit_vmf(torch.ones(2, 4), torch.zeros(2))


def test_fit_vmf_over_many_chunks_matches_one_float64_pass() -> None:
    # More rows than one accumulation chunk: the chunked float64 resultant is the direct one.
    g = torch.Generator().manual_seed(3)
    points = torch.randn(40_000, 4, generator=g) + torch.tensor([2.0, 0.0, 0.0, 0.0])
    weights = torch.rand(40_000, generator=g)
    mu, _ = fit_vmf(points, weights)
    resultant = (weights.double()[:, None] * torch.nn.functional.normalize(points.double(), dim=-1)).sum(0)
    torch.testing.assert_close(mu.double(), resultant / resultant.norm(), rtol=1e-6, atol=1e-7)
    bad = points.clone()
    bad[-1, 0] = float("nan")  # in the last chunk
    with pytest.raises(ValueError, match="finite"):
        fit_vmf(bad, weights)
