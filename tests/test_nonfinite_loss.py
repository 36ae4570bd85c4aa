"""A loss that stops being finite during ``fit`` stops training with an error that names the step.

Each model's head output turns NaN (or inf) at global step 3 through a forward hook; training
must stop there, before the optimizer applies the non-finite gradient, whatever the loss.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import pytest
import torch
from helpers import TinyContinuousLM, loader, mapping_data, quiet_trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_contloss.losses import CosineLoss, InfoNCELoss, L2Loss, MaxMarginLoss, VMFLoss

BAD_STEP = 3


class PoisonHead(L.Callback):
    """Makes the continuous head's output ``value`` from global step ``BAD_STEP`` on."""

    def __init__(self, value: float) -> None:
        self.value = value

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        def hook(head: nn.Module, args: Any, out: Tensor) -> Tensor:
            return out * self.value if trainer.global_step >= BAD_STEP else out

        module.get_submodule(module._continuous_path).register_forward_hook(hook)


def fit_until_error(module: L.LightningModule, value: float) -> FloatingPointError:
    trainer = quiet_trainer(max_steps=8, callbacks=[PoisonHead(value)])
    with pytest.raises(FloatingPointError) as info:
        trainer.fit(module, loader(mapping_data(n=256), batch_size=16))
    assert trainer.global_step == BAD_STEP  # no optimizer step was taken on the bad batch
    return info.value


LOSSES: dict[str, Any] = {
    "cosine": CosineLoss,
    "infonce": lambda: InfoNCELoss(num_negatives=8),
    "vmf": VMFLoss,
    "l2": L2Loss,
    "maxmargin": lambda: MaxMarginLoss(negatives="in_batch"),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_nan_predictions_stop_fit_at_the_step_with_a_clear_error(name: str) -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM(loss=LOSSES[name]())
    err = fit_until_error(lm, math.nan)
    message = str(err)
    assert f"global step {BAD_STEP}" in message and "nan" in message
    assert "learning rate" in message and "detect_anomaly=True" in message  # what to do
    # Stopped before the optimizer step: the weights are still finite.
    assert all(bool(torch.isfinite(p).all()) for p in lm.parameters())


@pytest.mark.parametrize("name", ["cosine", "l2"])
def test_inf_predictions_stop_fit_too(name: str) -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM(loss=LOSSES[name]())
    err = fit_until_error(lm, math.inf)
    assert f"global step {BAD_STEP}" in str(err)


def test_a_finite_loss_outside_a_trainer_is_returned_and_a_nan_one_raises() -> None:
    lm = TinyContinuousLM()
    x = torch.randint(0, 200, (2, 5))
    pred = lm.model(x)
    assert torch.isfinite(lm._continuous_loss_value(pred, x)[0])
    with pytest.raises(FloatingPointError, match=r"the training loss is nan \(outside a Trainer\)"):
        lm.continuous_loss(pred * math.nan, x)


def test_the_check_can_be_turned_off() -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM()
    lm.continuous_check_finite = False
    trainer = quiet_trainer(max_steps=5, callbacks=[PoisonHead(math.nan)])
    trainer.fit(lm, loader(mapping_data(n=256), batch_size=16))
    assert trainer.global_step == 5


def test_nan_through_hugging_face_labels_stops_fit_too() -> None:
    pytest.importorskip("transformers", reason="the 'hf' extra installs transformers")
    from test_integrations_hf import T5Continuous, build, ids

    lm = build(T5Continuous, vocab_size=100)  # its training_step returns model(..., labels=labels).loss
    data = DataLoader(TensorDataset(ids(32, 5, vocab=100), ids(32, 4, seed=2, vocab=100)), batch_size=4)
    trainer = quiet_trainer(max_steps=8, callbacks=[PoisonHead(math.nan)])
    with pytest.raises(FloatingPointError, match=f"global step {BAD_STEP}"):
        trainer.fit(lm, data)
    assert all(bool(torch.isfinite(p).all()) for p in lm.parameters())
