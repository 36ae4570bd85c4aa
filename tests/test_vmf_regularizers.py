"""vMF's Kumar & Tsvetkov regulariser (log(1 + κ)·(λ − cos)) and its κ floor: values, gradients, arguments."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from helpers import VOCAB, TinyContinuousLM, loader, quiet_trainer
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ive
from torch import Tensor
from torch.utils.data import TensorDataset

import lightning_contloss.functional as CF
from lightning_contloss.examples import ContinuousLM
from lightning_contloss.examples.continuous_lm import build_loss
from lightning_contloss.losses import VMFLoss, make_loss

FAST = settings(max_examples=25, deadline=None, derandomize=True, database=None)
D = 6


def _log_c(kappa: Tensor, m: int) -> Tensor:
    """log C_m(κ) from scipy's scaled Bessel function, an implementation independent of the package's."""
    k = kappa.detach().numpy()
    v = m / 2 - 1
    out = v * np.log(k) - (np.log(ive(v, k)) + k) - (m / 2) * math.log(2 * math.pi)
    return torch.from_numpy(out)


def _batch(seed: int, n: int = 5) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(9, D, generator=g, dtype=torch.float64)
    pred = torch.randn(n, D, generator=g, dtype=torch.float64) * 3
    return pred, torch.randint(9, (n,), generator=g), table


def _cos(pred: Tensor, target: Tensor) -> Tensor:
    return (pred * target).sum(-1) / (pred.norm(dim=-1) * target.norm(dim=-1))


@FAST
@given(seed=st.integers(0, 10_000), lam=st.floats(0.0, 0.95), kappa_min=st.floats(0.0, 20.0))
def test_kumar_form_matches_the_reference_formula(seed: int, lam: float, kappa_min: float) -> None:
    pred, ids, table = _batch(seed)
    kappa = kappa_min + pred.norm(dim=-1)
    expected = -_log_c(kappa, D) + torch.log1p(kappa) * (lam - _cos(pred, table[ids]))
    got = CF.vmf_nll(pred, ids, table, regularizer="kumar", kumar_lambda=lam, kappa_min=kappa_min, reduction="none")
    torch.testing.assert_close(got, expected)


@FAST
@given(seed=st.integers(0, 10_000), kappa_min=st.floats(0.0, 20.0))
def test_kappa_floor_shifts_the_concentration_of_the_default_form(seed: int, kappa_min: float) -> None:
    pred, ids, table = _batch(seed)
    kappa = kappa_min + pred.norm(dim=-1)
    expected = -_log_c(kappa, D) - 0.1 * kappa * _cos(pred, table[ids]) + 0.02 * kappa
    got = CF.vmf_nll(pred, ids, table, kappa_min=kappa_min, reduction="none")
    torch.testing.assert_close(got, expected)


@settings(max_examples=6, deadline=None, derandomize=True, database=None)
@given(
    seed=st.integers(0, 10_000),
    regularizer=st.sampled_from(["default", "kumar"]),
    kappa_min=st.sampled_from([0.0, 2.5]),
)
def test_gradients_match_finite_differences(seed: int, regularizer: str, kappa_min: float) -> None:
    pred, ids, table = _batch(seed, n=3)
    pred.requires_grad_(True)

    def f(p: Tensor) -> Tensor:
        return CF.vmf_nll(p, ids, table, regularizer=regularizer, kappa_min=kappa_min)

    assert torch.autograd.gradcheck(f, (pred,))


def test_zero_prediction_is_finite_and_the_floor_keeps_kappa_off_zero() -> None:
    table, ids = torch.eye(D), torch.tensor([0, 1])
    pred = torch.zeros(2, D, requires_grad=True)
    for kwargs in ({"regularizer": "kumar"}, {"regularizer": "kumar", "kappa_min": 1.0}, {"kappa_min": 1.0}):
        loss = CF.vmf_nll(pred, ids, table, **kwargs)  # type: ignore[arg-type]
        (grad,) = torch.autograd.grad(loss, pred)
        assert bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all()), kwargs
    shifted = CF.vmf_concentration(torch.tensor([[0.0, 0.5, 0.0]]), kappa_min=2.0)
    torch.testing.assert_close(shifted, torch.tensor([[0.0, 2.5, 0.0]]))


def test_kumar_concentration_grows_only_where_cos_beats_lambda() -> None:
    # d/dκ [−log C(κ) + log(1 + κ)(λ − cos)] at κ -> 0 is λ − cos: κ grows iff cos > λ.
    table, ids = torch.eye(D), torch.tensor([0])
    for cos, grows in ((0.5, True), (0.1, False)):
        direction = torch.tensor([[cos, math.sqrt(1 - cos**2), 0, 0, 0, 0]], dtype=torch.float64)
        small, larger = (
            CF.vmf_nll(k * direction, ids, table.double(), regularizer="kumar", kumar_lambda=0.2) for k in (0.01, 0.2)
        )
        assert bool(larger < small) is grows


def test_default_path_is_unchanged_without_the_new_options() -> None:
    pred, ids, table = _batch(3)
    old = -_log_c(pred.norm(dim=-1), D) - 0.1 * (pred * table[ids]).sum(-1) / table[ids].norm(dim=-1)
    old = old + 0.02 * pred.norm(dim=-1)
    torch.testing.assert_close(CF.vmf_nll(pred, ids, table, reduction="none"), old)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"regularizer": "kumar2"}, "regularizer"),
        ({"kumar_lambda": 1.0}, "kumar_lambda"),
        ({"kumar_lambda": -0.1}, "kumar_lambda"),
        ({"kappa_min": -1.0}, "kappa_min"),
        ({"kappa_min": math.inf}, "kappa_min"),
        ({"regularizer": "kumar", "lambda1": 0.05}, "lambda1"),
        ({"regularizer": "kumar", "lambda2": 0.5}, "lambda2"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        CF.vmf_nll(torch.randn(2, 3), torch.tensor([0, 1]), torch.eye(3), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=name):
        VMFLoss(**kwargs)  # type: ignore[arg-type]


def test_class_and_registry_pass_the_options_and_concentration() -> None:
    loss = make_loss("vmf", regularizer="kumar", kumar_lambda=0.3, kappa_min=1.5)
    assert isinstance(loss, VMFLoss)
    assert (loss.regularizer, loss.kumar_lambda, loss.kappa_min) == ("kumar", 0.3, 1.5)
    pred, ids, table = _batch(5)
    value = loss.bind(table)(pred, ids)
    torch.testing.assert_close(
        value, CF.vmf_nll(pred, ids, table, regularizer="kumar", kumar_lambda=0.3, kappa_min=1.5)
    )
    torch.testing.assert_close(loss.concentration(pred).norm(dim=-1), pred.norm(dim=-1) + 1.5)


# ---------------------------------------------------------------- the defaults a user gets by name
def test_vmf_loss_defaults_are_the_setting_that_learns() -> None:
    loss = VMFLoss()
    assert (loss.regularizer, loss.kumar_lambda, loss.kappa_min) == ("kumar", 0.2, 1.0)
    registered = make_loss("vmf")
    assert (registered.regularizer, registered.kappa_min) == ("kumar", 1.0)
    (built,) = [m for m in build_loss("vmf").modules() if isinstance(m, VMFLoss)]
    assert (built.regularizer, built.kumar_lambda, built.kappa_min) == ("kumar", 0.2, 1.0)
    # ContinuousLM's loss options default to None, the loss's own default: the model gets the same VMFLoss.
    defaults = inspect.signature(ContinuousLM).parameters
    assert (defaults["vmf_regularizer"].default, defaults["vmf_kappa_min"].default) == (None, None)
    (in_model,) = [m for m in ContinuousLM(50, loss="vmf", d_model=16).modules() if isinstance(m, VMFLoss)]
    assert (in_model.regularizer, in_model.kumar_lambda, in_model.kappa_min) == ("kumar", 0.2, 1.0)


def _noisy_mapping(n: int, follow: float, seed: int) -> TensorDataset:
    """Token i maps to (7·i + 3) mod V with probability ``follow``, else to a uniform token."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (n, 8), generator=g)
    keep = torch.rand(n, 8, generator=g) < follow
    return TensorDataset(x, torch.where(keep, (7 * x + 3) % VOCAB, torch.randint(0, VOCAB, (n, 8), generator=g)))


@pytest.mark.slow
def test_vmf_loss_learns_at_its_defaults_where_the_reference_form_collapses() -> None:
    """On a noisy mapping, as on PTB, the mean target direction of a context is short (about 0.15).

    The reference form's κ then falls to 0 (the norm of pred collapses) and the directions learn
    little; the defaults keep κ >= 1 and learn the mapping.
    """
    x = torch.randint(0, VOCAB, (64, 8), generator=torch.Generator().manual_seed(5))
    accuracy = {}
    for name, loss in (("defaults", VMFLoss()), ("reference", VMFLoss(regularizer="default", kappa_min=0.0))):
        torch.manual_seed(1)
        lm = TinyContinuousLM(loss=loss)
        quiet_trainer(max_epochs=8).fit(lm, loader(_noisy_mapping(2048, 0.15, seed=0), shuffle=True))
        with torch.no_grad():
            accuracy[name] = float((lm.continuous_decode(lm.model(x))[..., 0] == (7 * x + 3) % VOCAB).float().mean())
    assert accuracy["defaults"] >= 0.18 and accuracy["reference"] < 0.15, accuracy
