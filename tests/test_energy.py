"""The energy score (functional), EnergyLoss, GenerativeHead and ContinuousLM's generative head."""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist
from torch.utils.data import DataLoader, TensorDataset

import lightning_contloss.functional as CF
from lightning_contloss.compare.spec import parse_run
from lightning_contloss.compare.worker import build_model
from lightning_contloss.examples import ContinuousLM
from lightning_contloss.functional.energy import distance_power
from lightning_contloss.generative_head import GenerativeHead
from lightning_contloss.losses import EnergyLoss, decode_space_of, make_loss
from lightning_contloss.targets import TargetEmbeddings

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None)
TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "dim_feedforward": 32}


def brute_energy_score(samples: np.ndarray, target: np.ndarray, beta: float) -> np.ndarray:
    """Energy score per position from scipy's distance matrices, pairs i != j over the full matrix."""
    out = np.empty(samples.shape[0])
    for n, (x, y) in enumerate(zip(samples, target, strict=True)):
        s = x.shape[0]
        fidelity = (cdist(x, y[None]) ** beta).mean()
        pairs = cdist(x, x) ** beta
        spread = pairs.sum() / (s * (s - 1)) if s > 1 else 0.0  # the diagonal is 0
        out[n] = fidelity - 0.5 * spread
    return out


# ---------------------------------------------------------------------------- the maths
@pytest.mark.parametrize("beta", [0.5, 1.0, 1.7])
@pytest.mark.parametrize("num", [1, 2, 5, 8])
def test_energy_score_matches_scipy(beta: float, num: int) -> None:
    g = torch.Generator().manual_seed(num)
    samples = torch.randn(6, num, 7, generator=g, dtype=torch.float64)
    target = torch.randn(6, 7, generator=g, dtype=torch.float64)
    expected = brute_energy_score(samples.numpy(), target.numpy(), beta)
    np.testing.assert_allclose(CF.energy_score(samples, target, beta).numpy(), expected, rtol=1e-12)


def test_energy_loss_reads_rows_masks_and_reduces() -> None:
    g = torch.Generator().manual_seed(0)
    table = torch.randn(10, 4, generator=g)
    samples = torch.randn(2, 3, 5, 4, generator=g, requires_grad=True)  # [B, T, S, D]
    ids = torch.tensor([[1, 2, -1], [3, -1, 9]])
    per_token = CF.energy_loss(samples, ids, table, ignore_index=-1, reduction="none")
    kept = ids != -1
    expected = CF.energy_score(samples, table[ids.clamp_min(0)]) * kept
    torch.testing.assert_close(per_token, expected)
    mean = CF.energy_loss(samples, ids, table, ignore_index=-1)
    torch.testing.assert_close(mean, expected.sum() / kept.sum())
    mean.backward()
    assert samples.grad is not None
    assert bool((samples.grad[~kept] == 0).all()) and bool((samples.grad[kept] != 0).any())


def test_a_point_prediction_is_scored_as_a_point_mass() -> None:
    table = torch.eye(3)
    pred = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    ids = torch.tensor([0, 2])
    torch.testing.assert_close(CF.energy_loss(pred, ids, table, reduction="none"), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(CF.energy_loss(pred, ids, table, beta=0.5), CF.energy_loss(pred[:, None], ids, table))


def test_zero_distances_have_zero_gradient_not_nan() -> None:
    # Every sample equal to the target and to each other: the head's first step (zero last layer).
    for beta in (0.3, 1.0, 1.9):
        samples = torch.ones(4, 6, 3, requires_grad=True)
        loss = CF.energy_loss(samples, torch.zeros(4, dtype=torch.long), torch.ones(1, 3), beta=beta)
        loss.backward()
        assert samples.grad is not None and float(loss.detach()) == 0.0
        assert bool((samples.grad == 0).all())
    d = torch.zeros(2, 5, requires_grad=True)
    distance_power(d, 1.0).sum().backward()
    assert d.grad is not None and bool((d.grad == 0).all())


@PROPERTY
@given(
    seed=st.integers(0, 2**16),
    num=st.integers(1, 6),
    beta=st.floats(0.05, 1.95),
    scale=st.sampled_from([0.0, 1e-6, 1.0, 1e3]),
    coincide=st.booleans(),
)
def test_energy_score_is_finite_with_finite_gradients(
    seed: int, num: int, beta: float, scale: float, coincide: bool
) -> None:
    g = torch.Generator().manual_seed(seed)
    samples = torch.randn(3, num, 4, generator=g) * scale
    if coincide:
        samples[:, -1] = samples[:, 0]  # a duplicated sample: one pairwise distance is exactly 0
    samples.requires_grad_(True)
    target = torch.randn(3, 4, generator=g) * scale
    score = CF.energy_score(samples, target, beta)
    score.sum().backward()
    assert bool(torch.isfinite(score).all()) and samples.grad is not None
    assert bool(torch.isfinite(samples.grad).all())
    # The spread term is never negative, so the score is at most the fidelity term; for β ≤ 1,
    # ‖·‖^β is a metric and the triangle inequality bounds the spread by twice the fidelity.
    x = samples.detach().double()
    fidelity = (torch.linalg.vector_norm(x - target.double()[:, None], dim=-1) ** beta).mean(-1)
    tol = 1e-5 * (1 + fidelity)
    assert bool((score.double() <= fidelity + tol).all())
    if beta <= 1:
        assert bool((score.double() >= -tol).all())


@pytest.mark.parametrize("bad", [0.0, -1.0, 2.0, 3.0, float("nan"), float("inf"), True, "1", None])
def test_beta_outside_zero_two_is_refused(bad: object) -> None:
    samples, target = torch.zeros(2, 3, 4), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="beta"):
        CF.energy_score(samples, target, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta"):
        EnergyLoss(beta=bad)  # type: ignore[arg-type]


def test_energy_score_shape_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"\[\.\.\., S, D\] for a \[\.\.\., D\] target"):
        CF.energy_score(torch.zeros(2, 3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="S = 0"):
        CF.energy_score(torch.zeros(2, 0, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="pred must be"):
        CF.energy_loss(torch.tensor(1.0), torch.tensor(0), torch.eye(4))
    with pytest.raises(ValueError, match="pred has dim 5"):
        CF.energy_loss(torch.zeros(3, 2, 5), torch.zeros(3, dtype=torch.long), torch.eye(4))


@pytest.mark.parametrize("dim", [1, 2])
def test_the_true_distribution_scores_lower_than_a_shifted_or_squeezed_one(dim: int) -> None:
    # Propriety, by Monte Carlo: observations y ~ N(0, I); forecasts N(0, I), N(0.5, I), N(0, 0.25 I).
    g = torch.Generator().manual_seed(dim)
    n, s = 4000, 16
    y = torch.randn(n, dim, generator=g, dtype=torch.float64)
    noise = torch.randn(n, s, dim, generator=g, dtype=torch.float64)
    true = CF.energy_score(noise, y).mean()
    shifted = CF.energy_score(noise + 0.5, y).mean()
    squeezed = CF.energy_score(0.5 * noise, y).mean()
    point = CF.energy_score(torch.zeros(n, 1, dim, dtype=torch.float64), y).mean()
    # Margins are several Monte-Carlo standard errors (about 0.01 here).
    assert float(shifted - true) > 0.05 and float(squeezed - true) > 0.03 and float(point - true) > 0.1


# ---------------------------------------------------------------------------- the loss class
def test_energy_loss_class_matches_functional_and_accumulates() -> None:
    targets = TargetEmbeddings.random(20, 6, seed=1)
    loss = make_loss("energy", beta=0.8, ignore_index=-100)
    assert isinstance(loss, EnergyLoss) and loss.beta == 0.8 and decode_space_of(loss) == "l2"
    loss.bind(targets)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(3, 4, 6, generator=g), torch.randint(20, (3,), generator=g)) for _ in range(2)]
    values = [loss(p, i) for p, i in batches]
    for (p, i), v in zip(batches, values, strict=True):
        torch.testing.assert_close(v, CF.energy_loss(p, i, targets.weight, beta=0.8))
    torch.testing.assert_close(loss.compute(), torch.stack(values).mean())


# ---------------------------------------------------------------------------- the head
def test_generative_head_shapes_modes_and_seeded_noise() -> None:
    head = GenerativeHead(12, 5, 8, noise_dim=3, num_samples=4, eval_samples=6, generator=torch.Generator())
    hidden = torch.randn(2, 3, 12)
    assert head(hidden).shape == (2, 3, 4, 5)
    assert head(hidden, 2).shape == (2, 3, 2, 5) and head(torch.randn(12), 3).shape == (3, 5)
    # The last layer starts at zero: every sample is the bias, a point mass.
    assert bool((head(hidden) == 0).all())
    torch.nn.init.normal_(head.output_layer.weight)
    samples = head(hidden)
    assert bool((samples[..., 0, :] != samples[..., 1, :]).any())  # the noise matters
    head.eval()
    assert head(hidden).shape == (2, 3, 5) == head.predict(hidden).shape
    head.generator = torch.Generator().manual_seed(3)
    first = head.predict(hidden, 50)
    head.generator = torch.Generator().manual_seed(3)
    torch.testing.assert_close(head.predict(hidden, 50), first)
    head.generator = torch.Generator().manual_seed(3)
    torch.testing.assert_close(first, head.sample(hidden, 50).mean(-2))  # the point is the samples' mean


def test_generative_head_bad_input() -> None:
    with pytest.raises(ValueError, match="hidden size 12"):
        GenerativeHead(12, 5)(torch.randn(2, 11))
    with pytest.raises(ValueError, match="num_samples"):
        GenerativeHead(12, 5, num_samples=0)
    with pytest.raises(ValueError, match="generator"):
        GenerativeHead(12, 5, generator=3)  # type: ignore[arg-type]


def test_energy_trains_a_generative_head_toward_a_two_point_target() -> None:
    # One context, two equally likely targets: the head must spread its samples over both
    # (a point head under L2 would sit at their midpoint).
    torch.manual_seed(0)
    head = GenerativeHead(4, 2, 32, noise_dim=4, num_samples=8)
    table = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    loss = EnergyLoss(table)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    hidden = torch.ones(64, 4)
    ids = torch.arange(64) % 2
    for _ in range(300):
        opt.zero_grad()
        loss(head(hidden), ids).backward()
        opt.step()
    samples = head(hidden[:1], 400)[0]
    near = torch.cdist(samples, table).argmin(-1)
    assert 0.3 < float(near.float().mean()) < 0.7
    assert float(torch.cdist(samples, table).min(-1).values.median()) < 0.3


# ---------------------------------------------------------------------------- ContinuousLM and compare
def test_spec_builds_a_generative_continuous_lm() -> None:
    spec = parse_run("generative:energy:random:num_samples=4,beta=0.5")
    assert spec.model_kwargs == {"head": "generative", "num_samples": 4, "beta": 0.5}
    assert spec.label == "generative · energy · random (num_samples=4, beta=0.5)"
    lm = build_model(spec, 40, TINY)
    assert isinstance(lm, ContinuousLM) and isinstance(lm.model.lm_head, GenerativeHead)
    assert lm.model.lm_head.num_samples == 4 and lm.continuous_loss_fn.beta == 0.5
    assert lm.continuous_decode_space == "l2"
    with pytest.raises(ValueError, match="energy loss only"):
        parse_run("generative:cosine:random")
    with pytest.raises(ValueError, match="loss='energy'"):
        ContinuousLM(40, loss="cosine", head="generative", **TINY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown head"):
        ContinuousLM(40, head="diffusion", **TINY)  # type: ignore[arg-type]


def test_init_output_bias_of_the_generative_head_is_the_unigram_mean() -> None:
    lm = ContinuousLM(30, loss="energy", head="generative", target_dim=8, **TINY)
    counts = torch.zeros(30)
    counts[4] = 1000.0
    lm.init_output_bias(counts)
    weights = counts + 1
    expected = weights @ lm.continuous_targets.weight / weights.sum()
    torch.testing.assert_close(lm.model.lm_head.output_layer.bias, expected)
    lm.eval()
    x = torch.randint(30, (1, 5))
    torch.testing.assert_close(lm(x), expected.expand(1, 5, 8))  # zero last weight: every sample is the bias


def test_a_few_lightning_steps_with_the_generative_spec() -> None:
    from lightning_contloss.callbacks import DecodingCallback

    torch.manual_seed(0)
    vocab, seq = 30, 8
    x = torch.randint(vocab, (16, seq))
    loader = DataLoader(TensorDataset(x, torch.roll(x, -1, dims=1)), batch_size=8)
    lm = build_model(parse_run("generative:energy:random:num_samples=3"), vocab, {**TINY, "warmup_steps": 1})
    head = lm.model.lm_head
    before = head.output_layer.weight.detach().clone()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[DecodingCallback(k=2, decoder="exact")],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(lm, train_dataloaders=loader, val_dataloaders=loader)
        metrics = trainer.validate(lm, dataloaders=loader, verbose=False)[0]
    assert not torch.equal(head.output_layer.weight, before)
    assert 0.0 <= metrics["val/acc@1"] <= 1.0 and np.isfinite(metrics["val/loss"])
    assert lm.tokens_seen == 4 * 8 * seq
