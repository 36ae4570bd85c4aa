"""Hugging Face families that change the head's output after ``lm_head`` (or its input just before it).

After ``replace_softmax_head`` the head predicts embeddings, so ``model(...).logits`` must be the
head's own output: a soft-cap (tanh) squashes its norm, a logit scale rescales it. Each family
the package handles is built from a tiny config with its transform switched on, converted, and
checked through forward hooks on the head. Families missing from the installed transformers
are skipped. docs/models.md lists the same families.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn

pytest.importorskip("transformers", reason="the 'hf' extra installs transformers")
import transformers

from lightning_contloss import ContinuousOutputMixin, TargetEmbeddings
from lightning_contloss.losses import CosineLoss

V, DIM = 128, 48
ATTN = {
    "vocab_size": V, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
    "num_key_value_heads": 1, "max_position_embeddings": 32, "head_dim": 16, "pad_token_id": 0, "bos_token_id": 1,
    "eos_token_id": 2,
}
MOE = {"num_local_experts": 2, "num_experts_per_tok": 1}
T5 = {
    "vocab_size": V, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1, "num_heads": 2, "pad_token_id": 0,
    "eos_token_id": 2, "decoder_start_token_id": 0, "tie_word_embeddings": True, "dropout_rate": 0.0,
}

# name -> (config class, model class, config arguments, head path inside the model, sequence length)
CAUSAL: dict[str, tuple[str, str, dict[str, Any], str, int]] = {
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {**ATTN, "final_logit_softcapping": 1.0}, "lm_head", 5),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {**ATTN, "final_logit_softcapping": 1.0}, "lm_head", 5),
    "gemma3n": (
        "Gemma3nTextConfig", "Gemma3nForCausalLM",
        {
            **ATTN, "final_logit_softcapping": 1.0, "vocab_size_per_layer_input": V, "hidden_size_per_layer_input": 8,
            "laurel_rank": 4, "altup_num_inputs": 2, "num_kv_shared_layers": 0, "layer_types": ["full_attention"],
            "activation_sparsity_pattern": [0.0],
        },
        "lm_head", 5,
    ),
    "vaultgemma": ("VaultGemmaConfig", "VaultGemmaForCausalLM", {**ATTN, "final_logit_softcapping": 1.0}, "lm_head", 5),
    "nanochat": ("NanoChatConfig", "NanoChatForCausalLM", {**ATTN, "final_logit_softcapping": 1.0}, "lm_head", 5),
    "xlstm": (
        "xLSTMConfig", "xLSTMForCausalLM",
        {
            "vocab_size": V, "hidden_size": 64, "embedding_dim": 64, "num_hidden_layers": 1, "num_blocks": 1,
            "num_heads": 2, "qk_dim_factor": 1.0, "output_logit_soft_cap": 1.0, "chunk_size": 4,
        },
        "lm_head", 4,
    ),
    "cohere": ("CohereConfig", "CohereForCausalLM", {**ATTN, "logit_scale": 0.125}, "lm_head", 5),
    "cohere2": ("Cohere2Config", "Cohere2ForCausalLM", {**ATTN, "logit_scale": 0.125}, "lm_head", 5),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {**ATTN, "logits_scaling": 8.0}, "lm_head", 5),
    "granitemoe": ("GraniteMoeConfig", "GraniteMoeForCausalLM", {**ATTN, **MOE, "logits_scaling": 8.0}, "lm_head", 5),
    "granitemoeshared": (
        "GraniteMoeSharedConfig", "GraniteMoeSharedForCausalLM",
        {**ATTN, **MOE, "shared_intermediate_size": 32, "logits_scaling": 8.0}, "lm_head", 5,
    ),
    "granitemoehybrid": (
        "GraniteMoeHybridConfig", "GraniteMoeHybridForCausalLM",
        {
            **ATTN, **MOE, "shared_intermediate_size": 32, "logits_scaling": 8.0, "layer_types": ["attention"],
            "mamba_n_heads": 4, "mamba_d_state": 8, "mamba_chunk_size": 4,
        },
        "lm_head", 5,
    ),
    "falcon_h1": (
        "FalconH1Config", "FalconH1ForCausalLM",
        {
            **ATTN, "lm_head_multiplier": 0.25, "mamba_d_ssm": 32, "mamba_n_heads": 4, "mamba_d_head": 8,
            "mamba_n_groups": 1, "mamba_d_state": 8, "mamba_chunk_size": 4,
        },
        "lm_head", 5,
    ),
}
SEQ2SEQ: dict[str, tuple[str, str, dict[str, Any], str, int]] = {
    "t5gemma": (
        "T5GemmaConfig", "T5GemmaForConditionalGeneration",
        {
            "encoder": {**ATTN, "final_logit_softcapping": 1.0}, "decoder": {**ATTN, "final_logit_softcapping": 1.0},
            "vocab_size": V,
        },
        "lm_head.out_proj", 5,
    ),
    "t5gemma2": (
        "T5Gemma2Config", "T5Gemma2ForConditionalGeneration",
        {
            "encoder": {
                "text_config": {**ATTN, "final_logit_softcapping": 1.0},
                "vision_config": {
                    "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "image_size": 16, "patch_size": 8,
                },
            },
            "decoder": {**ATTN, "final_logit_softcapping": 1.0},
            "vocab_size": V,
        },
        "lm_head.out_proj", 5,
    ),
}
# T5 relatives that scale the decoder output by d_model**-0.5 before the head when the softmax is tied.
RESCALED: dict[str, tuple[str, str, dict[str, Any], str, int]] = {
    "longt5": ("LongT5Config", "LongT5ForConditionalGeneration", T5, "lm_head", 5),
    "umt5": ("UMT5Config", "UMT5ForConditionalGeneration", T5, "lm_head", 5),
    "switch_transformers": (
        "SwitchTransformersConfig", "SwitchTransformersForConditionalGeneration",
        {**T5, "num_experts": 2, "num_sparse_encoder_layers": 1, "num_sparse_decoder_layers": 1}, "lm_head", 5,
    ),
    "pop2piano": ("Pop2PianoConfig", "Pop2PianoForConditionalGeneration", T5, "lm_head", 5),
}

# Families whose forward reads lm_head.weight.dtype to cast the hidden states (no transform).
READS_HEAD_WEIGHT: dict[str, tuple[str, str, dict[str, Any], str, int]] = {
    "mamba": (
        "MambaConfig", "MambaForCausalLM",
        {"vocab_size": V, "hidden_size": 32, "state_size": 8, "num_hidden_layers": 1, "conv_kernel": 2}, "lm_head", 4,
    ),
    "mamba2": (
        "Mamba2Config", "Mamba2ForCausalLM",
        {
            "vocab_size": V, "hidden_size": 32, "state_size": 8, "num_hidden_layers": 1, "num_heads": 4,
            "head_dim": 16, "n_groups": 1, "chunk_size": 4,
        },
        "lm_head", 4,
    ),
    "falcon_mamba": (
        "FalconMambaConfig", "FalconMambaForCausalLM",
        {"vocab_size": V, "hidden_size": 32, "state_size": 8, "num_hidden_layers": 1, "conv_kernel": 2}, "lm_head", 4,
    ),
}


class Converted(ContinuousOutputMixin, L.LightningModule):
    def __init__(self, model: nn.Module, head_path: str) -> None:
        super().__init__()
        self.model = model
        self.replace_softmax_head(f"model.{head_path}", TargetEmbeddings.random(V, DIM), CosineLoss())


def hf_model(spec: tuple[str, str, dict[str, Any], str, int]) -> nn.Module:
    config_name, model_name, kwargs, _, _ = spec
    config_cls, model_cls = getattr(transformers, config_name, None), getattr(transformers, model_name, None)
    if config_cls is None or model_cls is None:
        pytest.skip(f"transformers {transformers.__version__} has no {model_name}")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model: nn.Module = model_cls(config_cls(**kwargs))
    return model.eval()


def convert(spec: tuple[str, str, dict[str, Any], str, int]) -> Converted:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'model.lm_head' shares its weight")
        return Converted(hf_model(spec), spec[3])


def hooked(module: nn.Module, pre: bool = False) -> Callable[[], Any]:
    seen: list[Any] = []
    if pre:
        module.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    else:
        module.register_forward_hook(lambda m, args, out: seen.append(out))
    return lambda: seen[-1]


def run(model: nn.Module, length: int, seq2seq: bool) -> Any:
    x = torch.randint(3, V, (2, length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(input_ids=x, decoder_input_ids=x[:, :3]) if seq2seq else model(input_ids=x)


@pytest.mark.parametrize("name", sorted(CAUSAL) + sorted(SEQ2SEQ))
def test_logits_after_the_swap_are_the_heads_output(name: str) -> None:
    spec = CAUSAL.get(name) or SEQ2SEQ[name]
    lm = convert(spec)
    head_out = hooked(lm.model.get_submodule(spec[3]))
    out = run(lm.model, spec[4], name in SEQ2SEQ)
    pred = head_out()
    assert pred.shape[-1] == DIM and float(pred.abs().max()) > 1.0  # the cap/scale would show
    # Before the fix the soft-cap squashed it into (-1, 1) / the logit scale rescaled it.
    torch.testing.assert_close(out.logits, pred, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(RESCALED))
def test_the_head_sees_the_decoder_output_unscaled(name: str) -> None:
    spec = RESCALED[name]
    lm = convert(spec)
    hidden = hooked(lm.model.get_decoder())
    head_in = hooked(lm.model.get_submodule(spec[3]), pre=True)
    out = run(lm.model, spec[4], seq2seq=True)
    # Before the fix the head saw hidden * d_model**-0.5 (the rescale exists for the tied softmax only).
    torch.testing.assert_close(head_in(), hidden()[0], rtol=0, atol=0)
    assert out.logits.shape[-1] == DIM


@pytest.mark.parametrize("name", sorted(READS_HEAD_WEIGHT))
def test_families_that_read_the_heads_weight_dtype_convert(name: str) -> None:
    spec = READS_HEAD_WEIGHT[name]
    lm = convert(spec)
    head_out = hooked(lm.model.get_submodule(spec[3]))
    # Before the fix: AttributeError: 'EmbeddingRegressionHead' object has no attribute 'weight'.
    out = run(lm.model, spec[4], seq2seq=False)
    torch.testing.assert_close(out.logits, head_out(), rtol=0, atol=0)


def test_a_family_with_an_unremovable_soft_cap_is_refused_before_anything_changes() -> None:
    spec = (
        "RecurrentGemmaConfig", "RecurrentGemmaForCausalLM",
        {
            "vocab_size": V, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "lru_width": 32, "attention_window_size": 8,
            "block_types": ["recurrent"], "logits_soft_cap": 1.0,
        },
        "lm_head", 5,
    )
    model = hf_model(spec)
    with pytest.raises(ValueError, match=r"RecurrentGemmaForCausalLM soft-caps .* logits_soft_cap.*cannot"):
        Converted(model, "lm_head")
    assert isinstance(model.lm_head, nn.Linear) and type(model).__name__ == "RecurrentGemmaForCausalLM"
    assert "_contloss_state" not in model.__dict__


def test_udop_is_refused_its_rescale_goes_only_with_the_tying() -> None:
    kwargs = {
        **T5, "num_decoder_layers": 1, "image_size": 16, "patch_size": 8, "num_channels": 3,
        "max_2d_position_embeddings": 32, "relative_bias_args": [{"type": "1d"}],
    }
    model = hf_model(("UdopConfig", "UdopForConditionalGeneration", kwargs, "lm_head", 5))
    with pytest.raises(ValueError, match=r"UdopForConditionalGeneration scales .* d_model.*cannot convert"):
        Converted(model, "lm_head")
    assert isinstance(model.lm_head, nn.Linear)


def test_an_unknown_post_head_transform_is_caught_on_the_first_forward() -> None:
    class DoublingGPT2(transformers.GPT2LMHeadModel):
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2  # a transform the package has no rule for
            return out

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=V, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = Converted(DoublingGPT2(config), "lm_head")
    with pytest.raises(ValueError, match=r"DoublingGPT2 changes the head's output after 'lm_head'.*report"):
        run(lm.model, 5, seq2seq=False)
    plain = convert(("GPT2Config", "GPT2LMHeadModel", config.to_dict(), "lm_head", 5))
    head_out = hooked(plain.model.lm_head)
    for _ in range(2):  # checked once, then the probe is gone
        torch.testing.assert_close(run(plain.model, 5, seq2seq=False).logits, head_out())
    assert len(plain.model.lm_head._forward_hooks) == 1  # only this test's own hook
