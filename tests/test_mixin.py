"""ContinuousOutputMixin: set-up, steps, ReWE mode, decoding and bad input."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from helpers import DIM, HIDDEN, VOCAB, TinyBody, TinyContinuousLM, loader, mapping_data, quiet_trainer
from torch import nn

from lightning_contloss import ContinuousOutputMixin, EmbeddingRegressionHead, TargetEmbeddings
from lightning_contloss.decoding import ExactDecoder
from lightning_contloss.heads import JointHead
from lightning_contloss.losses import CosineLoss, ReWELoss, VMFLoss


def test_replace_registers_targets_loss_and_head() -> None:
    lm = TinyContinuousLM()
    assert isinstance(lm.model.lm_head, EmbeddingRegressionHead)
    assert lm.model.lm_head.out_features == DIM
    keys = lm.state_dict().keys()
    assert "continuous_targets.weight" in keys and "continuous_targets.special_mask" in keys
    assert "model.lm_head.net.weight" in keys
    # The loss reads the table but does not hold a second copy of it.
    assert not any(k.startswith("continuous_loss_fn") and k.endswith("weight") for k in keys)
    assert lm.continuous_loss_fn.targets is lm.continuous_targets
    assert lm.continuous_decode_space == "cosine"


def test_save_hyperparameters_drops_tables_and_modules() -> None:
    lm = TinyContinuousLM(lr=0.5, targets=TargetEmbeddings.random(VOCAB, DIM), loss=VMFLoss())
    assert dict(lm.hparams) == {"lr": 0.5, "keep_softmax": False}


def test_loss_and_gradients_reach_head_and_body() -> None:
    lm = TinyContinuousLM()
    x, y = mapping_data(8)[:]
    loss = lm.continuous_loss(lm.model(x), y)
    loss.backward()
    assert lm.model.lm_head.net.weight.grad is not None
    assert lm.model.embed.weight.grad is not None
    assert lm.continuous_targets.weight.grad is None


def test_validation_step_returns_what_the_callback_needs() -> None:
    lm = TinyContinuousLM()
    x, y = mapping_data(4)[:]
    out = lm.continuous_validation_step(lm.model(x), y)
    assert set(out) == {"loss", "pred", "target"}
    assert out["pred"].shape == (4, 8, DIM) and not out["pred"].requires_grad


def test_decode_uses_exact_search_by_default() -> None:
    lm = TinyContinuousLM()
    table = lm.continuous_targets.weight
    ids = lm.continuous_decode(table[[5, 9, 11]] * 3.0, k=2)
    assert ids.shape == (3, 2)
    assert ids[:, 0].tolist() == [5, 9, 11]
    assert isinstance(lm.continuous_decoder, ExactDecoder)


def test_rewe_mode_keeps_softmax_and_adds_regression() -> None:
    lm = TinyContinuousLM(keep_softmax=True)
    assert isinstance(lm.model.lm_head, JointHead)
    assert isinstance(lm.continuous_loss_fn, ReWELoss)
    x, y = mapping_data(4)[:]
    out = lm.model(x)
    assert out.shape == (4, 8, VOCAB + DIM)
    logits, pred = lm.continuous_split_output(out)
    assert logits is not None and logits.shape == (4, 8, VOCAB) and pred.shape == (4, 8, DIM)
    loss = lm.continuous_loss(out, y)
    loss.backward()
    assert lm.model.lm_head.softmax.weight.grad is not None
    assert lm.continuous_decode(out).shape == (4, 8, 1)


def test_rewe_mode_trains_end_to_end() -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM(keep_softmax=True, loss=ReWELoss(lam=1.0))
    data = loader(mapping_data(256), shuffle=True)
    x, y = mapping_data(64, seed=1)[:]
    pred_before = lm.continuous_split_output(lm.model(x))[1]
    cos_before = float(torch.cosine_similarity(pred_before, lm.continuous_targets(y), -1).mean())
    quiet_trainer(max_epochs=4).fit(lm, data)
    out = lm.model(x)
    assert float((lm.continuous_decode(out)[..., 0] == y).float().mean()) > 0.5  # the softmax decodes
    cos_after = float(torch.cosine_similarity(lm.continuous_split_output(out)[1], lm.continuous_targets(y), -1).mean())
    assert cos_after > cos_before + 0.2  # and the regression head learnt too


# ---------------------------------------------------------------------- bad input
class NoHead(ContinuousOutputMixin, L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = TinyBody()


def test_loss_before_replace() -> None:
    with pytest.raises(RuntimeError, match=r"call self.replace_softmax_head\('path.to.lm_head'"):
        NoHead().continuous_loss(torch.randn(2, DIM), torch.tensor([1, 2]))


def test_targets_of_wrong_size() -> None:
    with pytest.raises(ValueError, match=r"targets have V=50 rows but 'model.lm_head' has out_features=200"):
        NoHead().replace_softmax_head("model.lm_head", TargetEmbeddings.random(50, DIM), CosineLoss())


def test_wrong_path_lists_candidates_and_swaps_nothing() -> None:
    m = NoHead()
    with pytest.raises(ValueError, match=r"no submodule 'model.head'.*'model.lm_head'"):
        m.replace_softmax_head("model.head", TargetEmbeddings.random(VOCAB, DIM), CosineLoss())
    assert isinstance(m.model.lm_head, nn.Linear)
    assert getattr(m, "_continuous_path", None) is None


def test_predictions_of_wrong_dim() -> None:
    lm = TinyContinuousLM()
    with pytest.raises(ValueError, match=r"predictions have last dim 7 but the continuous head outputs dim 16"):
        lm.continuous_loss(torch.randn(3, 7), torch.tensor([1, 2, 3]))


def test_head_and_targets_dim_mismatch() -> None:
    with pytest.raises(ValueError, match=r"build the head with out_features=targets\.dim"):
        NoHead().replace_softmax_head(
            "model.lm_head", TargetEmbeddings.random(VOCAB, DIM), CosineLoss(), head=EmbeddingRegressionHead(HIDDEN, 8)
        )


def test_not_a_loss_and_called_twice() -> None:
    with pytest.raises(ValueError, match="torchmetrics Metric"):
        NoHead().replace_softmax_head("model.lm_head", TargetEmbeddings.random(VOCAB, DIM), nn.MSELoss())  # type: ignore[arg-type]
    lm = TinyContinuousLM()
    with pytest.raises(ValueError, match="already called"):
        lm.replace_softmax_head("model.lm_head", TargetEmbeddings.random(VOCAB, DIM), CosineLoss())


def test_joint_head_split() -> None:
    joint = JointHead(nn.Linear(4, 10), EmbeddingRegressionHead(4, 3))
    logits, pred = joint.split(joint(torch.randn(2, 4)))
    assert logits.shape == (2, 10) and pred.shape == (2, 3)


def test_decoder_follows_the_targets_after_load_state_dict() -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM()
    other = TinyContinuousLM(targets=TargetEmbeddings.random(VOCAB, DIM, seed=5))
    x = torch.randint(0, VOCAB, (4, 6))
    before = lm.continuous_decode(lm.model(x))
    lm.load_state_dict(other.state_dict())
    with torch.no_grad():
        after = lm.continuous_decode(lm.model(x))
        expected = other.continuous_decode(other.model(x))
    assert torch.equal(after, expected) and not torch.equal(before, after)
    # Same content again (a reload of the same weights): the decoder is kept, not rebuilt.
    decoder = lm.continuous_decoder
    lm.load_state_dict(other.state_dict())
    assert lm.continuous_decoder is decoder


def test_decoder_of_another_table_is_rejected() -> None:
    lm = TinyContinuousLM()
    with pytest.raises(ValueError, match=f"covers 170 ids of dim {DIM} but the targets have V={VOCAB}"):
        lm.continuous_decoder = ExactDecoder(torch.randn(170, DIM))
    with pytest.raises(ValueError, match="decodes by 'cosine'"):
        lm.continuous_decoder = ExactDecoder(lm.continuous_targets, "ip")
    lm.continuous_decoder = ExactDecoder(lm.continuous_targets)  # the matching one is accepted


def test_model_output_objects_are_read_through_logits() -> None:
    from dataclasses import dataclass

    @dataclass
    class Output:
        logits: torch.Tensor

    lm = TinyContinuousLM()
    x, y = torch.randint(0, VOCAB, (2, 5)), torch.randint(0, VOCAB, (2, 5))
    pred = lm.model(x)
    assert torch.equal(lm.continuous_loss(Output(pred), y), lm.continuous_loss(pred, y))
    assert lm.continuous_decode(Output(pred)).shape == (2, 5, 1)
    with pytest.raises(ValueError, match="pass the predictions tensor itself"):
        lm.continuous_loss((pred,), y)


def _recording_log(lm: L.LightningModule) -> list[str]:
    """Replace ``lm.log`` with a recorder that still logs; return the names it is called with."""
    names: list[str] = []
    real = lm.log

    def log(name: str, *args: object, **kwargs: object) -> None:
        names.append(name)
        real(name, *args, **kwargs)  # type: ignore[arg-type]

    lm.log = log  # type: ignore[method-assign]
    return names


def test_loss_is_callable_after_fit_and_logs_nothing() -> None:
    # Scoring a batch after fit (a notebook, a HF labels= call) must not hit Lightning's
    # "result collection is not registered" error.
    torch.manual_seed(0)
    lm = TinyContinuousLM()
    trainer = quiet_trainer(max_steps=3)
    logged = _recording_log(lm)
    trainer.fit(lm, loader(mapping_data(256), shuffle=True))
    assert logged.count("train/loss") == 3 and "train/loss" in trainer.callback_metrics  # inside the loop it logs
    before = {k: v.clone() for k, v in trainer.callback_metrics.items()}
    logged.clear()
    x, y = mapping_data(8, seed=3)[:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even Lightning's "not registered" warning
        loss = lm.continuous_loss(lm.model(x), y)
        out = lm.continuous_validation_step(lm.model(x), y)
    assert logged == []
    assert loss.dim() == 0 and loss.requires_grad and torch.isfinite(loss)
    loss.backward()
    assert lm.model.lm_head.net.weight.grad is not None
    torch.testing.assert_close(out["loss"], loss.detach())
    assert trainer.callback_metrics.keys() == before.keys()
    assert all(torch.equal(trainer.callback_metrics[k], v) for k, v in before.items())


def test_loss_without_a_trainer_logs_nothing() -> None:
    lm = TinyContinuousLM()
    logged = _recording_log(lm)
    x, y = mapping_data(4)[:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = lm.continuous_loss(lm.model(x), y)
        lm.continuous_validation_step(lm.model(x), y)
    assert logged == [] and loss.requires_grad
