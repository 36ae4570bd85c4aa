"""ContinuousOutputMixin never shadows a user's attributes: every member it adds is ``continuous_``-prefixed."""

from __future__ import annotations

import lightning as L
import torch
from helpers import HIDDEN, VOCAB, TinyBody, TinyContinuousLM, loader, mapping_data, quiet_trainer
from torch import Tensor, nn

from lightning_contloss import ContinuousOutputMixin, DecodingCallback, EmbeddingRegressionHead, TargetEmbeddings
from lightning_contloss.losses import CosineLoss

DIM = 16


class AutoencoderLM(ContinuousOutputMixin, L.LightningModule):
    """An encoder-decoder with its own ``decoder``, ``decode``, ``targets``, ``head`` and ``loss``."""

    def __init__(self, convert: bool = True) -> None:
        super().__init__()
        self.encoder = nn.Embedding(VOCAB, HIDDEN)
        self.head = nn.LayerNorm(HIDDEN)
        # The softmax layer is the last layer of the user's own decoder.
        self.decoder = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, VOCAB))
        self.register_buffer("targets", torch.arange(VOCAB))
        self.loss = nn.MSELoss()
        if convert:
            self.replace_softmax_head("decoder.2", TargetEmbeddings.random(VOCAB, DIM, seed=0), CosineLoss())

    def decode(self, hidden: Tensor) -> Tensor:
        out: Tensor = self.decoder(hidden)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.head(self.encoder(x)))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        # The user's own loss still works beside the continuous one (a zero-weight extra term).
        extra = self.loss(self.head.weight, self.head.weight.detach())
        return self.continuous_loss(self(x), y) + extra

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        return self.continuous_validation_step(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_own_decoder_decode_targets_head_and_loss_survive_conversion_and_training() -> None:
    torch.manual_seed(0)
    lm = AutoencoderLM()
    decoder, head, loss, targets = lm.decoder, lm.head, lm.loss, lm.targets
    assert isinstance(decoder, nn.Sequential) and isinstance(decoder[2], EmbeddingRegressionHead)
    x, _ = mapping_data(4)[:]
    assert lm(x).shape == (4, 8, DIM)
    assert torch.equal(lm.decode(lm.head(lm.encoder(x))), lm(x))  # the user's decode, not the mixin's

    callback = DecodingCallback(k=5, decoder="exact")
    trainer = quiet_trainer(max_steps=6, limit_val_batches=1, val_check_interval=3, callbacks=[callback])
    trainer.fit(lm, loader(mapping_data(256), shuffle=True), loader(mapping_data(64, seed=1)))

    assert trainer.global_step == 6
    assert {"train/loss", "val/loss", "val/acc@1", "val/acc@5"} <= set(trainer.callback_metrics)
    assert lm.decoder is decoder and lm.head is head and lm.loss is loss
    assert torch.equal(lm.targets, targets) and torch.equal(targets, torch.arange(VOCAB))
    assert lm.decode.__func__ is AutoencoderLM.decode  # type: ignore[attr-defined]
    # The mixin's own pieces sit beside them, under their own names.
    assert lm.continuous_decoder is callback.decoder
    assert lm.continuous_decode(lm(x)).shape == (4, 8, 1)
    assert "targets" in dict(lm.named_buffers()) and "continuous_targets.weight" in lm.state_dict()


def test_the_softmax_twin_is_untouched_by_the_mixin() -> None:
    # The same class without the swap behaves as a plain LightningModule: decoder, decode and loss are its own.
    plain = AutoencoderLM(convert=False)
    x, _ = mapping_data(2)[:]
    assert plain(x).shape == (2, 8, VOCAB) and isinstance(plain.decoder[2], nn.Linear)


class _PlainLM(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = TinyBody()


def _public(names: set[str]) -> set[str]:
    return {n for n in names if not n.startswith("_")}


def test_every_public_member_the_mixin_adds_is_prefixed() -> None:
    # On the class: methods, properties and class attributes.
    added = _public(set(dir(ContinuousOutputMixin))) - set(dir(L.LightningModule))
    # On a converted instance: what replace_softmax_head registers, against the same module without the mixin.
    added |= _public(set(dir(TinyContinuousLM()))) - set(dir(_PlainLM()))
    expected_core = {
        "continuous_loss",
        "continuous_validation_step",
        "continuous_test_step",
        "continuous_predict_step",
        "continuous_decode",
        "continuous_decoder",
        "continuous_decode_space",
        "continuous_split_output",
        "continuous_targets",
        "continuous_loss_fn",
        "continuous_ignore_index",
    }
    assert expected_core <= added  # the enumeration sees the mixin's members
    assert sorted(n for n in added if not n.startswith("continuous_")) == ["replace_softmax_head"]


def test_every_private_member_the_mixin_defines_is_prefixed() -> None:
    private = {n for n in vars(ContinuousOutputMixin) if n.startswith("_") and not n.startswith("__")}
    assert "_continuous_path" in private
    assert sorted(n for n in private if not n.startswith("_continuous_")) == []
