"""KappaEstimator and the losses' concentration protocol, without a Trainer."""

from __future__ import annotations

import pytest
import torch

from lightning_contloss import TargetEmbeddings
from lightning_contloss.callbacks import KappaEstimator, kappa_fit_tokens, loss_concentration
from lightning_contloss.functional import fit_kappa
from lightning_contloss.losses import CosineLoss, L2Loss, VMFLoss, loss_names, make_loss
from lightning_contloss.warm_start import WarmStartLoss

SKIP = -100


def near_targets(targets: TargetEmbeddings, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions near their (non-special) targets, so κ̂ > 0: ``([n, D], [n])``."""
    g = torch.Generator().manual_seed(seed)
    allowed = (~targets.special_mask).nonzero().flatten()
    ids = allowed[torch.randint(0, len(allowed), (n,), generator=g)]
    return targets.weight[ids] * 2 + 0.3 * torch.randn(n, targets.dim, generator=g), ids


# ---------------------------------------------------------------- the losses' concentration
def test_only_the_vmf_loss_fixes_kappa() -> None:
    pred = torch.randn(3, 4)
    for name in loss_names():
        scaled = make_loss(name).concentration(pred)
        assert (scaled is not None) == (name == "vmf"), name
    torch.testing.assert_close(VMFLoss(kappa_min=0.0).concentration(pred), pred)  # κ = ‖ê‖
    norm = pred.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(VMFLoss().concentration(pred), pred / norm * (1.0 + norm))  # default floor κ_min = 1


def test_loss_concentration_finds_the_vmf_term_of_a_composition_or_a_warm_start() -> None:
    pred = torch.tensor([[0.0, 2.0]])
    assert loss_concentration(CosineLoss(), pred) is None
    assert loss_concentration(L2Loss() + 0.5 * CosineLoss(), pred) is None
    torch.testing.assert_close(loss_concentration(VMFLoss(kappa_min=1.0) + 0.1 * CosineLoss(), pred), pred * 1.5)
    warm = WarmStartLoss(CosineLoss(), VMFLoss(kappa_min=2.0), steps=5, targets=torch.eye(2))
    torch.testing.assert_close(loss_concentration(warm, pred), pred * 2.0)
    # An empty prediction asks only whether the loss fixes κ.
    assert loss_concentration(VMFLoss(), pred[:0]) is not None and loss_concentration(CosineLoss(), pred[:0]) is None


# ---------------------------------------------------------------- the estimator
def test_kappa_fit_tokens_bounds() -> None:
    assert kappa_fit_tokens(1) == 512 and kappa_fit_tokens(65_536) == 512
    assert kappa_fit_tokens(400_000) == 83 and kappa_fit_tokens(10**9) == 64


def test_fit_matches_fit_kappa_without_padding_and_special_targets() -> None:
    targets = TargetEmbeddings.random(40, 8, seed=1, special_ids=[0, 1])
    pred, ids = near_targets(targets, 64)
    ids = ids.clone()
    ids[:5] = SKIP
    ids[5:9] = 1  # special: no likelihood, left out
    keep = torch.arange(64) >= 9
    want = fit_kappa(pred[keep], ids[keep], targets.weight, exclude_mask=targets.special_mask)
    assert KappaEstimator().fit(pred, ids, targets, SKIP) == pytest.approx(want, rel=1e-6)
    assert KappaEstimator().fit(pred[:9], ids[:9], targets, SKIP) == 0.0  # nothing to fit on


def test_epoch_kappa_fits_once_per_epoch_on_the_first_tokens_and_warm_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_contloss.callbacks.kappa as kappa_module

    calls: list[tuple[int, float]] = []
    real = kappa_module.fit_kappa

    def recording(pred: torch.Tensor, *args: object, **kwargs: object) -> float:
        calls.append((pred.shape[0], float(kwargs["kappa_init"])))  # type: ignore[arg-type]
        return real(pred, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(kappa_module, "fit_kappa", recording)
    targets = TargetEmbeddings.random(30, 8, seed=0)
    pred, ids = near_targets(targets, 600)
    estimator = KappaEstimator()
    first = estimator.epoch_kappa(pred, ids, targets, SKIP)
    assert estimator.epoch_kappa(pred[:10], ids[:10], targets, SKIP) == first  # fitted once this epoch
    assert calls == [(512, 1.0)] and estimator.fitted == estimator.last == first > 0
    estimator.new_epoch()
    assert estimator.fitted is None and estimator.last == first
    estimator.epoch_kappa(pred, ids, targets, SKIP)
    assert calls[1] == (512, first)  # warm-started from the last epoch's κ̂


def test_share_pads_a_short_rank_with_skipped_targets() -> None:
    pred, ids = torch.randn(3, 4), torch.tensor([7, 8, 9])
    part_p, part_t = KappaEstimator.share(pred, ids, vocab_size=100, world_size=4, skip_id=SKIP)
    assert part_p.shape == (128, 4) and part_t[:3].tolist() == [7, 8, 9] and bool((part_t[3:] == SKIP).all())
    torch.testing.assert_close(part_p[:3], pred)
    long_p, long_t = KappaEstimator.share(torch.randn(600, 4), torch.arange(600), 100, world_size=3, skip_id=SKIP)
    assert long_p.shape == (171, 4) and long_t.tolist() == list(range(171))  # ceil(512 / 3)


def test_adopt_sets_this_epochs_and_the_warm_start_kappa() -> None:
    estimator = KappaEstimator()
    estimator.adopt(3)
    assert estimator.fitted == estimator.last == 3.0 and isinstance(estimator.fitted, float)
