"""WarmStartLoss: first loss for exactly N training batches, then the second; its counter survives a reload."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lightning_contloss.functional as CF
from lightning_contloss.compare.spec import parse_run
from lightning_contloss.examples import ContinuousLM
from lightning_contloss.examples.continuous_lm import build_loss
from lightning_contloss.losses import CosineLoss, L2Loss, VMFLoss, decode_space_of
from lightning_contloss.warm_start import WarmStartLoss

TABLE = torch.randn(12, 6, generator=torch.Generator().manual_seed(0))
VMF_DEFAULTS = {"regularizer": "kumar", "kappa_min": 1.0}  # VMFLoss()'s, as vmf_nll arguments


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 6, generator=g), torch.randint(12, (4,), generator=g)


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(steps=st.integers(1, 6), extra=st.integers(1, 4))
def test_switches_at_exactly_step_n(steps: int, extra: int) -> None:
    loss = WarmStartLoss(CosineLoss(), VMFLoss(), steps, targets=TABLE)
    for i in range(steps + extra):
        pred, ids = _batch(i)
        expected = CF.cosine_loss(pred, ids, TABLE) if i < steps else CF.vmf_nll(pred, ids, TABLE, **VMF_DEFAULTS)
        torch.testing.assert_close(loss(pred, ids), expected)
    assert loss.steps_done == steps + extra


def test_eval_mode_update_and_refused_batches_do_not_advance() -> None:
    loss = WarmStartLoss(CosineLoss(), VMFLoss(), 2, targets=TABLE)
    pred, ids = _batch(0)
    loss.eval()
    loss(pred, ids)
    loss.train()
    loss.update(pred, ids)
    with pytest.raises(ValueError):
        loss(pred, torch.tensor([0, 1, 2, 99]))  # an id outside the table
    assert loss.steps_done == 0 and isinstance(loss.active, CosineLoss)


def test_counter_survives_a_state_dict_round_trip() -> None:
    loss = WarmStartLoss(CosineLoss(), VMFLoss(), 3, targets=TABLE)
    for i in range(2):
        loss(*_batch(i))
    state = loss.state_dict()
    fresh = WarmStartLoss(CosineLoss(), VMFLoss(), 3, targets=TABLE)
    fresh.load_state_dict(state)
    assert fresh.steps_done == 2
    pred, ids = _batch(5)
    torch.testing.assert_close(fresh(pred, ids), CF.cosine_loss(pred, ids, TABLE))  # batch 2: still cosine
    torch.testing.assert_close(fresh(pred, ids), CF.vmf_nll(pred, ids, TABLE, **VMF_DEFAULTS))  # batch 3: vMF
    with pytest.raises(ValueError, match="warm-start counter"):
        fresh.set_extra_state({"steps_done": -1})
    assert fresh.steps_done == 4


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((CosineLoss(), L2Loss(), 5), "decode space"),
        ((CosineLoss(), CosineLoss() + VMFLoss(), 5), "ContinuousLoss"),
        ((CosineLoss(ignore_index=-100), VMFLoss(), 5), "ignore_index"),
        ((CosineLoss(), VMFLoss(), 0), "steps"),
        ((CosineLoss(), VMFLoss(), True), "steps"),
    ],
)
def test_bad_pairs_and_steps_are_refused(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WarmStartLoss(*args)


def test_build_loss_and_specs_wire_the_options() -> None:
    loss = build_loss("vmf", ignore_index=0, warmstart_steps=7, vmf_regularizer="kumar", vmf_kappa_min=1.0)
    assert isinstance(loss, WarmStartLoss) and loss.steps == 7 and decode_space_of(loss) == "cosine"
    assert isinstance(loss.then, VMFLoss) and loss.then.regularizer == "kumar" and loss.then.ignore_index == 0
    with pytest.raises(ValueError, match="warmstart_steps"):
        build_loss("cosine", warmstart_steps=3)
    with pytest.raises(ValueError, match="warmstart_steps"):
        build_loss("vmf", warmstart_steps=-1)
    run = parse_run("linear:vmf:random:warmstart_steps=1000,vmf_regularizer=kumar,vmf_lambda=0.2,vmf_kappa_min=1")
    assert run.model_kwargs == {
        "warmstart_steps": 1000,
        "vmf_regularizer": "kumar",
        "vmf_lambda": 0.2,
        "vmf_kappa_min": 1,
    }
    assert (
        parse_run("linear:synmargin:random:margin=0.5,synthetic=difference").model_kwargs["synthetic"] == "difference"
    )


SPECS = (
    "linear:vmf:random:warmstart_steps=2",
    "linear:vmf:random:vmf_regularizer=kumar,vmf_lambda=0.2",
    "linear:vmf:random:vmf_kappa_min=1.0",
    "linear:synmargin:random:margin=0.5",
)


class _Data(L.LightningDataModule):
    def __init__(self, vocab: int = 30) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        x = torch.randint(1, vocab, (24, 8), generator=g)
        self.ds = torch.utils.data.TensorDataset(x, (x * 7 + 3) % vocab)
        self.unigram_counts = torch.ones(vocab)

    def train_dataloader(self) -> Any:
        return torch.utils.data.DataLoader(self.ds, batch_size=6)

    def val_dataloader(self) -> Any:
        return torch.utils.data.DataLoader(self.ds, batch_size=12)


@pytest.fixture
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("text", SPECS)
def test_a_short_fit_runs_with_each_spec(text: str, one_thread: None) -> None:
    run = parse_run(text)
    lm = ContinuousLM(
        30,
        d_model=16,
        n_layers=1,
        n_heads=2,
        dim_feedforward=32,
        target_dim=8,
        pad_id=0,
        warmup_steps=1,
        loss=run.loss,
        targets=run.targets,
        **run.model_kwargs,  # type: ignore[arg-type]
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
    )
    trainer.fit(lm, datamodule=_Data())
    assert torch.isfinite(trainer.callback_metrics["train/loss_step"])
    fn = lm.continuous_loss_fn
    if isinstance(fn, WarmStartLoss):
        assert fn.steps_done == 4 and isinstance(fn.active, VMFLoss)
        assert lm.state_dict()["continuous_loss_fn._extra_state"]["steps_done"] == 4
