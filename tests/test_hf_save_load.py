"""Saving and reloading a converted Hugging Face model, and the generation config it carries.

Models are built from tiny configs with random weights; nothing is downloaded.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers", reason="the 'hf' extra installs transformers")

from test_integrations_hf import (
    DIM,
    PAD,
    BartContinuous,
    GPT2Continuous,
    T5Continuous,
    build,
    gpt2_config,
    ids,
    marian_config,
)

from lightning_contloss import load_continuous, save_continuous


@pytest.fixture
def hf_log() -> Iterator[list[str]]:
    """Messages transformers logs at WARNING or above (its logger does not propagate to pytest's caplog)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


# --------------------------------------------------------------------------- item 1: the generation config


@pytest.mark.parametrize("cls", [GPT2Continuous, T5Continuous], ids=["gpt2", "t5"])
def test_generation_config_of_a_converted_model_saves(cls: type, tmp_path: Path) -> None:
    lm = build(cls)
    # Before the fix: "GenerationConfig is invalid: `early_stopping` ... `num_beams` is set to None".
    lm.model.generation_config.save_pretrained(tmp_path)
    assert lm.model.generation_config.early_stopping is None  # the model's own config is left as it was


def test_greedy_generate_after_the_swap_warns_about_nothing(hf_log: list[str]) -> None:
    lm = build(GPT2Continuous).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            lm.model.generate(ids(2, 3), max_new_tokens=3, do_sample=False)
    # Before the fix: "The following generation flags are not valid and may be ignored: ['early_stopping']".
    assert not [m for m in hf_log if "early_stopping" in m], hf_log


# --------------------------------------------------------------------------- item 2: the round trip


def perturb(module: torch.nn.Module, seed: int = 7) -> None:
    """Move every weight, as training would, so a reload from a fresh random model cannot pass by chance."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:  # not Marian's fixed sinusoidal positions, which HF never saves
                p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_docs_recipe_save_and_reload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lm = build(GPT2Continuous)
    perturb(lm)
    prompt = ids(2, 4)
    monkeypatch.chdir(tmp_path)
    # --8<-- [start:save-load]
    from lightning_contloss import load_continuous, save_continuous

    lm.eval()
    save_continuous(lm, "gpt2-continuous")  # or lm.model.save_pretrained("gpt2-continuous"): the same files
    loaded = load_continuous("gpt2-continuous")  # a LightningModule; loaded.model is the GPT-2

    with torch.no_grad():
        before = lm.model.generate(prompt, max_new_tokens=8, do_sample=False)
        after = loaded.model.generate(prompt, max_new_tokens=8, do_sample=False)
    assert torch.equal(before, after)
    # --8<-- [end:save-load]
    assert type(loaded.model).__name__ == "GPT2LMHeadModel" and not loaded.training


def hf_files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


@pytest.mark.parametrize(
    ("cls", "hf_class"),
    [(GPT2Continuous, "GPT2LMHeadModel"), (T5Continuous, "T5ForConditionalGeneration"),
     (BartContinuous, "AutoModelForSeq2SeqLM")],  # an Auto class works too
    ids=["gpt2", "t5", "bart"],
)
def test_round_trip_restores_head_targets_and_predictions(cls: type, hf_class: str, tmp_path: Path) -> None:
    import transformers

    lm = build(cls)
    perturb(lm)
    with torch.no_grad():
        lm.continuous_targets.weight.mul_(-1)  # a table a fresh model cannot rebuild
    lm.eval()
    lm.model.save_pretrained(tmp_path)  # the HF habit writes the continuous save
    assert {"config.json", "generation_config.json", "model.continuous.safetensors"} <= hf_files(tmp_path)
    loaded = load_continuous(tmp_path, getattr(transformers, hf_class))
    torch.testing.assert_close(loaded.continuous_targets.weight, lm.continuous_targets.weight, rtol=0, atol=0)
    assert torch.equal(loaded.continuous_targets.special_mask, lm.continuous_targets.special_mask)
    src, tgt = ids(3, 6), ids(3, 5, seed=2)
    with torch.no_grad():
        if cls is GPT2Continuous:
            out, again = lm.model(src, labels=src), loaded.model(src, labels=src)
            gen = {"max_new_tokens": 6, "num_beams": 3}
            before, after = lm.model.generate(src, **gen), loaded.model.generate(src, **gen)
        else:
            out = lm.model(input_ids=src, labels=tgt)
            again = loaded.model(input_ids=src, labels=tgt)
            before = lm.model.generate(input_ids=src, max_new_tokens=6, num_beams=3)
            after = loaded.model.generate(input_ids=src, max_new_tokens=6, num_beams=3)
    torch.testing.assert_close(again.logits, out.logits, rtol=0, atol=0)  # identical predictions
    torch.testing.assert_close(again.loss, out.loss, rtol=0, atol=0)  # the same loss
    assert torch.equal(before, after)  # identical generate()


def test_plain_from_pretrained_of_a_continuous_save_refuses(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    lm = build(GPT2Continuous).eval()
    lm.model.save_pretrained(tmp_path)
    # Before the fix both returned a GPT-2 with a random softmax lm_head, silently.
    for loader in (GPT2LMHeadModel, AutoModelForCausalLM):
        with pytest.raises((ValueError, OSError), match=r"lightning-contloss.*load_continuous"):
            loader.from_pretrained(tmp_path)


def test_learned_loss_state_and_loss_arguments_are_restored(tmp_path: Path) -> None:
    from lightning_contloss.losses import InfoNCELoss

    lm = build(GPT2Continuous)
    lm.continuous_loss_fn = InfoNCELoss(lm.continuous_targets, temperature=0.2, learn_temperature=True,
                                        num_negatives=16)
    with torch.no_grad():
        lm.continuous_loss_fn.log_temperature.fill_(-1.5)  # a learned temperature
    save_continuous(lm, tmp_path)
    loaded = load_continuous(tmp_path)
    loss = loaded.continuous_loss_fn
    assert isinstance(loss, InfoNCELoss) and loss.num_negatives == 16 and loss.temperature == 0.2
    assert float(loss.log_temperature.detach()) == -1.5


def test_a_composed_loss_needs_loss_on_load_and_the_decode_space_must_match(tmp_path: Path) -> None:
    from lightning_contloss.losses import CosineLoss, L2Loss, VMFLoss

    lm = build(GPT2Continuous)
    lm.continuous_loss_fn = VMFLoss(lm.continuous_targets) + 0.1 * CosineLoss(lm.continuous_targets)
    save_continuous(lm, tmp_path)
    with pytest.raises(ValueError, match=r"cannot be rebuilt.*load_continuous\(directory, loss=.*'cosine'"):
        load_continuous(tmp_path)
    with pytest.raises(ValueError, match=r"decode space 'l2'.*'cosine'"):
        load_continuous(tmp_path, loss=L2Loss())
    assert load_continuous(tmp_path, loss=VMFLoss() + 0.1 * CosineLoss()).continuous_targets is not None


def test_saving_refuses_what_it_cannot_reload_and_loading_a_plain_save_explains(tmp_path: Path) -> None:
    from transformers import GPT2LMHeadModel

    from lightning_contloss import EmbeddingRegressionHead, swap_softmax_head

    torch.manual_seed(0)
    plain = GPT2LMHeadModel(gpt2_config(1000))
    with pytest.warns(UserWarning, match="unties them on purpose"):
        swap_softmax_head(plain, "lm_head", EmbeddingRegressionHead(64, 64), vocab_size=1000)
    with pytest.raises(ValueError, match=r"save_pretrained\(\) needs the target table"):
        plain.save_pretrained(tmp_path / "a")
    assert not (tmp_path / "a").exists()
    softmax = GPT2LMHeadModel(gpt2_config(1000))
    softmax.save_pretrained(tmp_path / "b")
    with pytest.raises(ValueError, match=r"not a lightning-contloss save.*from_pretrained"):
        load_continuous(tmp_path / "b")


def test_mlp_head_vocabulary_rewe_and_sharded_weights_round_trip(tmp_path: Path) -> None:
    import lightning as L
    from transformers import GPT2LMHeadModel, MarianMTModel

    from lightning_contloss import ContinuousOutputMixin, TargetEmbeddings
    from lightning_contloss.losses import CosineLoss

    words = [f"w{i}" for i in range(1000)]

    class MLPHead(ContinuousOutputMixin, L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = GPT2LMHeadModel(gpt2_config(1000))
            targets = TargetEmbeddings.random(1000, DIM, vocab=words, special_ids=["w0"])
            self.replace_softmax_head("model.lm_head", targets, CosineLoss(), head_hidden=32, activation="gelu")

    class MarianReWE(ContinuousOutputMixin, L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = MarianMTModel(marian_config(1000))
            self.model.final_logits_bias[0, 7] = 1.5
            targets = TargetEmbeddings.random(1000, DIM, special_ids=[PAD])
            self.replace_softmax_head("model.lm_head", targets, CosineLoss(ignore_index=-100), keep_softmax=True)

    for cls in (MLPHead, MarianReWE):
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "'model.lm_head' shares its weight")
            lm = cls()
        perturb(lm)
        lm.eval()
        where = tmp_path / cls.__name__
        save_continuous(lm, where, max_shard_size="100KB")  # several shards and an index
        assert len([p for p in where.iterdir() if p.name.endswith(".safetensors")]) > 2
        loaded = load_continuous(where)
        assert loaded.continuous_targets.vocab == lm.continuous_targets.vocab
        assert type(loaded.model.lm_head) is type(lm.model.lm_head)
        src = ids(2, 5)
        with torch.no_grad():
            if cls is MLPHead:
                before, after = lm.model(src).logits, loaded.model(src).logits
            else:
                before = lm.model(input_ids=src, decoder_input_ids=src[:, :3]).logits
                after = loaded.model(input_ids=src, decoder_input_ids=src[:, :3]).logits
                assert float(loaded.model.final_logits_bias[0, 7]) == 1.5  # ReWE keeps the softmax bias
        torch.testing.assert_close(after, before, rtol=0, atol=0)
