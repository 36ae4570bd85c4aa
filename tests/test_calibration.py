"""Calibration: one κ for perplexity, BrierLM and sampling; where it comes from, and that sampling uses it."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import VOCAB, TinyContinuousLM, loader, mapping_data, quiet_trainer
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_contloss import DecodingCallback, TargetEmbeddings
from lightning_contloss.calibration import Calibration
from lightning_contloss.losses import CosineLoss, InfoNCELoss, VMFLoss


def _table(v: int = 12, d: int = 6, special: list[int] | None = None) -> TargetEmbeddings:
    return TargetEmbeddings.random(v, d, seed=3, special_ids=special or [])


def _np_logits(pred: np.ndarray, table: np.ndarray, kappa: float) -> np.ndarray:
    p = pred / np.linalg.norm(pred, axis=-1, keepdims=True)
    t = table / np.linalg.norm(table, axis=-1, keepdims=True)
    return kappa * p @ t.T


# ---------------------------------------------------------------- where κ comes from
def test_kappa_sources_in_order() -> None:
    table = _table()
    assert Calibration(VMFLoss(table)).source == "loss"
    info_nce = Calibration(InfoNCELoss(table, temperature=0.25))
    assert info_nce.source == "temperature" and info_nce.current_kappa() == pytest.approx(4.0)
    info_nce.kappa = 7.5
    assert info_nce.source == "fitted" and info_nce.current_kappa() == 7.5
    info_nce.kappa = None
    assert info_nce.source == "temperature"
    composed = Calibration(VMFLoss(table) + 0.1 * CosineLoss(table))
    assert composed.source == "loss" and composed.current_kappa() is None


def test_learned_temperature_gives_its_current_value() -> None:
    loss = InfoNCELoss(_table(), temperature=0.2, learn_temperature=True)
    cal = Calibration(loss)
    with torch.no_grad():
        loss.log_temperature.fill_(math.log(0.05))
    assert cal.current_kappa() == pytest.approx(20.0)


def test_uncalibrated_cosine_warns_once_and_uses_kappa_one() -> None:
    cal = Calibration(CosineLoss(_table()))
    with pytest.warns(UserWarning, match=r"no calibrated κ.*continuous_calibrate"):
        assert cal.current_kappa() == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cal.current_kappa() == 1.0  # once
    cal.kappa = 3.0
    assert cal.current_kappa() == 3.0


@given(bad=st.one_of(st.sampled_from([-1.0, math.nan, math.inf, -math.inf, True]), st.text(max_size=3)))
@settings(max_examples=20, deadline=None)
def test_bad_kappa_is_refused_and_changes_nothing(bad: Any) -> None:
    cal = Calibration(CosineLoss(_table()))
    cal.kappa = 2.0
    with pytest.raises(ValueError, match="kappa must be >= 0"):
        cal.kappa = bad
    assert cal.kappa == 2.0


@given(bad=st.sampled_from([0.0, -1.0, math.nan, math.inf]))
@settings(max_examples=10, deadline=None)
def test_bad_temperature_is_refused(bad: float) -> None:
    cal = Calibration(InfoNCELoss(_table()))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        cal.sample(torch.randn(2, 6), temperature=bad)


# ---------------------------------------------------------------- the distribution, against numpy
def test_logits_and_log_prob_match_a_numpy_reference() -> None:
    table = _table(special=[0, 5])
    cal = Calibration(InfoNCELoss(table))
    cal.kappa = 6.0
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(4, 6, generator=g) * 3
    want = _np_logits(pred.numpy(), table.weight.numpy(), 6.0)
    rows = table.weight.expand(4, 12, 6)
    np.testing.assert_allclose(cal.logits(pred, rows).numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cal.logits(pred, rows, temperature=2.0).numpy(), want / 2, rtol=1e-5, atol=1e-5)
    kept = want.copy()
    kept[:, [0, 5]] = -np.inf
    log_z = np.log(np.exp(kept).sum(-1))
    target = torch.tensor([1, 2, 3, 0])
    got = cal.log_prob(pred, target).numpy()
    np.testing.assert_allclose(got[:3], want[np.arange(3), [1, 2, 3]] - log_z[:3], rtol=1e-5, atol=1e-5)
    assert got[3] == -np.inf  # a special id has probability 0


def test_vmf_logits_use_the_losss_concentration() -> None:
    table = _table()
    cal = Calibration(VMFLoss(table, kappa_min=2.0))
    pred = torch.tensor([[3.0, 4.0, 0.0, 0.0, 0.0, 0.0]])
    want = _np_logits(pred.numpy(), table.weight.numpy(), 2.0 + 5.0)
    np.testing.assert_allclose(cal.logits(pred, table.weight[None]).numpy(), want, rtol=1e-5)


def test_samples_follow_softmax_of_kappa_cos_over_temperature() -> None:
    table = _table(v=5, special=[4])
    cal = Calibration(InfoNCELoss(table))
    cal.kappa = 4.0
    pred = torch.randn(1, 6, generator=torch.Generator().manual_seed(1))
    n = 20000
    draws = cal.sample(pred.expand(n, 6), temperature=2.0, generator=torch.Generator().manual_seed(2))
    freq = np.bincount(draws.flatten().numpy(), minlength=5) / n
    logits = _np_logits(pred.numpy(), table.weight.numpy(), 4.0 / 2.0)[0]
    logits[4] = -np.inf
    want = np.exp(logits - logits.max())
    want /= want.sum()
    assert freq[4] == 0
    np.testing.assert_allclose(freq, want, atol=4 * math.sqrt(0.25 / n))


# ---------------------------------------------------------------- fitting
def test_fit_recovers_the_kappa_targets_were_drawn_with() -> None:
    table = TargetEmbeddings.random(40, 8, seed=0, special_ids=[0])
    cal = Calibration(CosineLoss(table, ignore_index=-1))
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(4000, 8, generator=g)
    truth = Calibration(InfoNCELoss(table))
    truth.kappa = 5.0
    target = truth.sample(pred, generator=g)[0]
    target[:50] = -1  # padding, left out
    kappa = cal.fit(pred, target, ignore_index=-1)
    assert kappa == pytest.approx(5.0, rel=0.1)
    assert cal.kappa == kappa and cal.source == "fitted"


def test_fit_refuses_what_it_cannot_use() -> None:
    table = _table(special=[0])
    cal = Calibration(CosineLoss(table))
    with pytest.raises(ValueError, match="no token to fit"):
        cal.fit(torch.randn(3, 6), torch.tensor([0, 0, 0]))
    with pytest.raises(ValueError, match="one target id per prediction"):
        cal.fit(torch.randn(3, 6), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="learns κ itself"):
        Calibration(VMFLoss(table)).fit(torch.randn(3, 6), torch.tensor([1, 2, 3]))
    assert cal.kappa is None


# ---------------------------------------------------------------- on a module, with the callback
def test_module_calibrates_and_keeps_kappa_in_its_state_dict() -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM(loss=CosineLoss())
    x, y = mapping_data(64)[:]
    with torch.no_grad():
        kappa = lm.continuous_calibrate(lm.model(x), y)
    assert kappa > 0 and lm.continuous_calibration.kappa == kappa
    assert float(lm.state_dict()["continuous_calibration.fitted"]) == pytest.approx(kappa)
    clone = TinyContinuousLM(loss=CosineLoss())
    assert clone.continuous_calibration.kappa is None
    clone.load_state_dict(lm.state_dict())
    assert clone.continuous_calibration.kappa == pytest.approx(kappa)


def test_rewe_mode_has_nothing_to_calibrate() -> None:
    lm = TinyContinuousLM(keep_softmax=True)
    x, y = mapping_data(8)[:]
    with pytest.raises(ValueError, match="ReWE"), torch.no_grad():
        lm.continuous_calibrate(lm.model(x), y)


def test_validation_stores_its_kappa_on_the_module_and_test_does_not(tmp_path: Path) -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM(loss=InfoNCELoss(num_negatives=64))
    callback = DecodingCallback(decoder="exact")
    trainer = quiet_trainer(max_epochs=2, callbacks=[callback], enable_checkpointing=True, default_root_dir=tmp_path)
    trainer.fit(lm, loader(mapping_data(256), shuffle=True), loader(mapping_data(64, seed=1)))
    fitted = callback.metrics["vmf_ppl"].kappa
    assert fitted is not None and fitted > 0
    assert lm.continuous_calibration.kappa == pytest.approx(fitted)
    assert lm.continuous_calibration.source == "fitted"
    # A test run fits its own κ̂ for test/vmf_ppl, but test data never calibrates the model.
    trainer.test(lm, loader(mapping_data(64, seed=5)), verbose=False)
    assert lm.continuous_calibration.kappa == pytest.approx(fitted)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    restored = TinyContinuousLM.load_from_checkpoint(path, loss=InfoNCELoss(num_negatives=64))
    assert restored.continuous_calibration.kappa == pytest.approx(fitted)


def test_vmf_perplexity_of_the_callback_is_that_of_the_calibration() -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM(loss=InfoNCELoss(num_negatives=64))
    callback = DecodingCallback(decoder="exact", metric_tokens=512)
    trainer = quiet_trainer(max_epochs=1, callbacks=[callback], limit_train_batches=4)
    val = mapping_data(64, seed=1)
    trainer.fit(lm, loader(mapping_data(256), shuffle=True), loader(val))
    logged = float(trainer.callback_metrics["val/vmf_ppl"])
    x, y = val[:]
    with torch.no_grad():
        ours = math.exp(-float(lm.continuous_calibration.log_prob(lm.model(x), y).mean()))
    assert ours == pytest.approx(logged, rel=1e-4)


def test_uncalibrated_and_calibrated_sampling_on_a_learned_mapping() -> None:
    """Sampling uses κ: at κ = 1 draws are near uniform, at the fitted κ̂ nearly always right."""
    torch.manual_seed(0)
    lm = TinyContinuousLM(loss=CosineLoss())
    quiet_trainer(max_epochs=15).fit(lm, loader(mapping_data(512), shuffle=True))
    x, y = mapping_data(256, seed=1)[:]
    with torch.no_grad():
        pred = lm.model(x)
    assert float((lm.continuous_decode(pred)[..., 0] == y).float().mean()) > 0.95  # learned
    g = torch.Generator().manual_seed(0)
    lm.continuous_calibration.kappa = 1.0
    uniform = float((lm.continuous_calibration.sample(pred, generator=g)[0] == y).float().mean())
    lm.continuous_calibrate(pred, y)
    calibrated = float((lm.continuous_calibration.sample(pred, generator=g)[0] == y).float().mean())
    assert uniform < 0.1 < 0.9 < calibrated, (uniform, calibrated)
    assert VOCAB == 200
