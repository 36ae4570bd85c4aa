"""``generate(do_sample=True)`` on a converted Hugging Face model draws from the calibrated distribution.

A GPT-2 and its softmax twin learn a low-entropy pattern (a Markov chain: the next token is
``(7·x + 3) mod V`` nine times in ten, else uniform). After calibration, the continuous model's
first sampled token must be right at least 0.9× as often as the softmax twin's at T = 1; with
κ = 1 (the raw cosine, what ``generate`` sampled from before calibration existed) it is not.

docs/models.md includes the marked section of this file; keep it runnable.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from helpers import quiet_trainer
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("transformers", reason="the 'hf' extra installs transformers")

import lightning as L
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from lightning_contloss import ContinuousOutputMixin, DecodingCallback, TargetEmbeddings
from lightning_contloss.losses import CosineLoss, InfoNCELoss

V, DIM, STAY, PROMPT = 100, 32, 0.9, 8


def chains(rows: int, length: int, seed: int) -> Tensor:
    """Markov chains over ``V`` tokens: ``x[t+1] = (7·x[t] + 3) mod V`` with probability 0.9, else uniform."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(rows, length, dtype=torch.long)
    x[:, 0] = torch.randint(0, V, (rows,), generator=g)
    for t in range(1, length):
        follow = torch.rand(rows, generator=g) < STAY
        x[:, t] = torch.where(follow, (7 * x[:, t - 1] + 3) % V, torch.randint(0, V, (rows,), generator=g))
    return x


def gpt2() -> GPT2LMHeadModel:
    config = GPT2Config(vocab_size=V, n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


class SoftmaxGPT(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = gpt2()

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        x = batch[0]
        return F.cross_entropy(self.model(x[:, :-1]).logits.flatten(0, 1), x[:, 1:].flatten())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


# --8<-- [start:sampling]
class ContinuousGPT(ContinuousOutputMixin, L.LightningModule):
    def __init__(self, loss: Any = None) -> None:
        super().__init__()
        self.model = gpt2()
        self.replace_softmax_head("model.lm_head", TargetEmbeddings.random(V, DIM), loss or InfoNCELoss())

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        x = batch[0]
        return self.continuous_loss(self.model(x[:, :-1]), x[:, 1:])

    def validation_step(self, batch: list[Tensor], batch_idx: int) -> dict[str, Tensor]:
        x = batch[0]
        return self.continuous_validation_step(self.model(x[:, :-1]), x[:, 1:])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def train_and_sample(lm: ContinuousGPT, train: DataLoader[Any], val: DataLoader[Any], prompt: Tensor) -> Tensor:
    # Validation with the callback fits κ̂ on validation tokens and stores it on the module
    # (lm.continuous_calibration.kappa; or call lm.continuous_calibrate(pred, ids) yourself).
    trainer = L.Trainer(max_epochs=2, callbacks=[DecodingCallback()], logger=False)
    trainer.fit(lm, train, val)
    with torch.no_grad():
        # Draws from softmax(κ̂·cos(ê, e_w) / temperature) over the 50 nearest tokens.
        return lm.model.generate(prompt, max_new_tokens=1, do_sample=True, temperature=1.0, pad_token_id=0)
# --8<-- [end:sampling]


def first_token_accuracy(model: Any, prompt: Tensor, truth: Tensor, draws: int = 8, **kwargs: Any) -> float:
    torch.manual_seed(1)
    with torch.no_grad():
        picks = [
            model.generate(prompt, max_new_tokens=1, do_sample=True, pad_token_id=0, **kwargs) for _ in range(draws)
        ]
    return float(torch.stack([p[:, prompt.shape[1]] for p in picks]).eq(truth).float().mean())


@pytest.mark.slow
def test_sampled_accuracy_is_within_0_9x_of_the_softmax_twins() -> None:
    train = DataLoader(TensorDataset(chains(4096, 16, seed=0)), batch_size=32, shuffle=True)
    val_ids = chains(256, 16, seed=1)
    val = DataLoader(TensorDataset(val_ids), batch_size=64)
    prompt, truth = val_ids[:, :PROMPT], val_ids[:, PROMPT]

    torch.manual_seed(0)
    soft = SoftmaxGPT()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        quiet_trainer(max_epochs=2).fit(soft, train)
        torch.manual_seed(0)
        lm = ContinuousGPT()
        sampled = train_and_sample(lm, train, val, prompt)
    assert sampled.shape == (prompt.shape[0], PROMPT + 1) and torch.equal(sampled[:, :PROMPT], prompt)
    soft.eval()
    lm.eval()
    softmax_acc = first_token_accuracy(soft.model, prompt, truth)
    assert softmax_acc > 0.6  # the twin learned the pattern (0.81 expected at 0.9 stay probability)

    kappa = lm.continuous_calibration.kappa
    assert kappa is not None and kappa > 1.0 and lm.continuous_calibration.source == "fitted"
    calibrated = first_token_accuracy(lm.model, prompt, truth)
    assert calibrated >= 0.9 * softmax_acc, (calibrated, softmax_acc, kappa)
    # temperature divides the calibrated logits: hotter draws are right less often.
    assert first_token_accuracy(lm.model, prompt, truth, temperature=8.0) < 0.5 * calibrated

    # κ = 1 is what generate() sampled from before calibration: it fails the bound.
    lm.continuous_calibration.kappa = 1.0
    uniform = first_token_accuracy(lm.model, prompt, truth)
    assert uniform < 0.9 * softmax_acc and uniform < 0.2, (uniform, softmax_acc)
    print(f"[sampling] softmax {softmax_acc:.3f}, calibrated {calibrated:.3f} (κ̂ {kappa:.2f}), κ = 1 {uniform:.3f}")


def test_sampling_without_a_calibrated_kappa_warns_once() -> None:
    torch.manual_seed(0)
    lm = ContinuousGPT(loss=CosineLoss()).eval()
    prompt = chains(2, 4, seed=2)
    with pytest.warns(UserWarning, match="no calibrated κ"), torch.no_grad():
        lm.model.generate(prompt, max_new_tokens=2, do_sample=True, pad_token_id=0)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("error", ".*calibrated.*")
        lm.model.generate(prompt, max_new_tokens=2, do_sample=True, pad_token_id=0)


def test_sampling_scores_are_the_calibrated_logits_and_greedy_is_unchanged() -> None:
    torch.manual_seed(0)
    lm = ContinuousGPT().eval()
    prompt = chains(3, 5, seed=3)
    with torch.no_grad():
        greedy_before = lm.model.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0)
        lm.continuous_calibration.kappa = 20.0
        assert torch.equal(lm.model.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0), greedy_before)
        out = lm.model.generate(
            prompt, max_new_tokens=1, do_sample=True, top_k=0, pad_token_id=0, output_scores=True,
            return_dict_in_generate=True, num_candidates=V,
        )
        pred = lm.model(prompt).logits[:, -1]
    want = lm.continuous_calibration.logits(pred, lm.continuous_targets.weight.expand(3, V, DIM))
    torch.testing.assert_close(out.scores[0], want, rtol=1e-4, atol=1e-4)


def test_beam_sampling_draws_from_the_calibrated_logits_too() -> None:
    torch.manual_seed(0)
    lm = ContinuousGPT().eval()
    lm.continuous_calibration.kappa = 5.0
    prompt = chains(2, 4, seed=4)
    with torch.no_grad():
        out = lm.model.generate(prompt, max_new_tokens=3, num_beams=2, do_sample=True, pad_token_id=0)
    assert out.shape == (2, 7) and bool(lm.continuous_decoder.returnable[out[:, 4:]].all())
