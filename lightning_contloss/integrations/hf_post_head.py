"""What Hugging Face models do to the head's output (or its input) on the assumption that it is vocabulary logits.

After the swap the head predicts embeddings, and ``model(...).logits`` must be exactly the head's
output: a soft-cap squashes its norm (which vMF reads as the concentration), a logit scale or a
bias moves it. Checked against every ``models/*/modeling_*.py`` of transformers 5.3 (the table
with the families is in docs/models.md):

* ``tanh(x / c) * c`` soft-caps: ``final_logit_softcapping`` (Gemma 2/3/3n, VaultGemma, NanoChat,
  T5Gemma 1 and 2) and ``output_logit_soft_cap`` (xLSTM) become ``None``;
* scales: ``logit_scale`` (Cohere 1 and 2), ``logits_scaling`` (Granite and its MoE/hybrid
  variants), ``lm_head_multiplier`` (FalconH1) become ``1.0``;
* ``final_logits_bias`` (BART, mBART, Marian, Pegasus, BlenderBot, LED, …) becomes zeros of the
  head's width;
* the ``d_model**-0.5`` rescale of the head's input that exists for a tied softmax:
  T5's ``scale_decoder_outputs`` becomes ``False``; LongT5, UMT5, SwitchTransformers and
  Pop2Piano get ``model_dim = 1``;
* refused: RecurrentGemma (its cap cannot be turned off) and UDOP (its config always ties the
  softmax, and the rescale goes only with the tying).

Settings are changed on the model's config (and the attribute a model copied it to), so a
saved converted model keeps them. Anything this table misses is caught on the first forward:
:class:`HeadOutputProbe` compares ``model(...).logits`` with the head's own output once and
raises if they differ.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["HeadOutputProbe", "neutralise_post_head", "refuse_post_head"]

# Config settings that transform the head's output, and the value that turns each off.
_OFF: dict[str, float | None] = {
    "final_logit_softcapping": None,  # Gemma 2/3/3n, VaultGemma, NanoChat, T5Gemma (1 and 2)
    "output_logit_soft_cap": None,  # xLSTM
    "logit_scale": 1.0,  # Cohere, Cohere 2 (the model keeps a copy as self.logit_scale)
    "logits_scaling": 1.0,  # Granite and its MoE / hybrid variants
    "lm_head_multiplier": 1.0,  # FalconH1 (the base model keeps a copy)
}
# T5 relatives whose forward scales the head's input by self.model_dim**-0.5 when the softmax is tied.
_MODEL_DIM_RESCALE = (
    "LongT5ForConditionalGeneration",
    "UMT5ForConditionalGeneration",
    "SwitchTransformersForConditionalGeneration",
    "Pop2PianoForConditionalGeneration",
)


def _class_names(model: nn.Module) -> set[str]:
    return {c.__name__ for c in type(model).__mro__}


def _configs(model: nn.Module) -> list[Any]:
    """The model's config, the configs nested in it, and those its submodules hold (each once)."""
    hf = sys.modules.get("transformers.configuration_utils")
    base = getattr(hf, "PreTrainedConfig", None) or getattr(hf, "PretrainedConfig", None)
    found: dict[int, Any] = {}
    todo = [getattr(m, "config", None) for m in model.modules()]
    while todo:
        config = todo.pop()
        if config is None or id(config) in found or (base is not None and not isinstance(config, base)):
            continue
        found[id(config)] = config
        todo.extend(v for v in vars(config).values() if base is not None and isinstance(v, base))
    return list(found.values())


def refuse_post_head(model: nn.Module) -> None:
    """Raise ``ValueError`` for a model whose forward transforms the head in a way that cannot be turned off.

    Called before the swap, so a refused model is left as it was.
    """
    names = _class_names(model)
    if "RecurrentGemmaForCausalLM" in names:
        raise ValueError(
            "RecurrentGemmaForCausalLM soft-caps the head's output, tanh(x / logits_soft_cap) * logits_soft_cap, "
            "with no setting to turn it off, so the predicted embeddings would be squashed into (-cap, cap); "
            "lightning-contloss cannot convert it. Put an EmbeddingRegressionHead on the hidden states of "
            "model.model yourself, or convert a family whose cap can be turned off (Gemma 2, Gemma 3)"
        )
    if "UdopForConditionalGeneration" in names:
        raise ValueError(
            "UdopForConditionalGeneration scales the decoder output by d_model**-0.5 before the head because its "
            "config always sets tie_word_embeddings, which also ties its input embeddings, so the rescale cannot be "
            "turned off alone; lightning-contloss cannot convert it. Put an EmbeddingRegressionHead on the decoder's "
            "hidden states yourself"
        )


def _head_width(head: nn.Module) -> int | None:
    regression = getattr(head, "regression", None)  # ReWE's JointHead: V logits then D predictions
    vocab = getattr(head, "vocab_size", None)
    if regression is not None and vocab is not None:
        return int(vocab) + int(regression.out_features)
    width = getattr(head, "out_features", None)
    return int(width) if width is not None else None


def _resize_final_logits_bias(model: nn.Module, head: nn.Module, vocab_width: int) -> None:
    bias = getattr(model, "final_logits_bias", None)
    if not isinstance(bias, Tensor) or bias.shape[-1] != vocab_width:
        return
    width = _head_width(head)
    if width is None:
        raise ValueError(
            f"{type(model).__name__} adds final_logits_bias [1, {vocab_width}] to the head's output, but the new "
            "head has no out_features to size it for; give the head an out_features attribute"
        )
    new = torch.zeros(1, width, dtype=bias.dtype, device=bias.device)
    if hasattr(head, "regression"):  # ReWE keeps the softmax: its bias stays on the logits part
        new[:, :vocab_width] = bias.reshape(1, -1)
    elif bool((bias != 0).any()):
        warnings.warn(
            f"{type(model).__name__}.final_logits_bias has non-zero entries (a per-token prior on the softmax "
            "logits); the continuous head has no logits, so it is dropped. Mark ids that must never be "
            "generated as special in the TargetEmbeddings instead",
            UserWarning,
            stacklevel=5,
        )
    model.final_logits_bias = new  # a registered buffer keeps its name and persistence


def neutralise_post_head(model: nn.Module, head: nn.Module, vocab_width: int) -> None:
    """Turn off what ``model``'s forward applies around the head on the assumption that it outputs logits.

    Args:
        model: the ``PreTrainedModel`` whose softmax layer was just replaced by ``head``.
        head: the new head.
        vocab_width: ``out_features`` of the replaced layer.
    """
    _resize_final_logits_bias(model, head, vocab_width)
    for config in _configs(model):
        for name, off in _OFF.items():
            if getattr(config, name, None) not in (None, off):
                setattr(config, name, off)
        if getattr(config, "scale_decoder_outputs", False):  # T5: the rescale exists for its tied softmax only
            config.scale_decoder_outputs = False
    for module in model.modules():  # the copies some models take of a setting in __init__
        for name in ("logit_scale", "logits_scaling", "lm_head_multiplier"):
            value = getattr(module, name, None)
            if isinstance(value, int | float) and not isinstance(value, bool):
                setattr(module, name, 1.0)
    if _class_names(model) & set(_MODEL_DIM_RESCALE) and getattr(model.config, "tie_word_embeddings", False):
        setattr(model, "model_dim", 1)  # noqa: B010  (read only as sequence_output * model_dim**-0.5)


class HeadOutputProbe:
    """Context manager for one forward: checks that the model returned the head's output unchanged.

    Records the head's last output through a forward hook (removed on exit); :meth:`check`
    then compares it with the model's ``logits``. A transform that :func:`neutralise_post_head`
    does not know shows up here, on the first forward, instead of as silently wrong predictions.

    Args:
        model_name: the model's class name, for the error.
        head_path: the head's path inside the model, for the error.
        head: the head module.
    """

    def __init__(self, model_name: str, head_path: str, head: nn.Module) -> None:
        self.model_name = model_name
        self.head_path = head_path
        self.head = head
        self.output: Tensor | None = None
        self._handle: RemovableHandle | None = None

    def __enter__(self) -> HeadOutputProbe:
        self._handle = self.head.register_forward_hook(self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _record(self, module: nn.Module, args: Any, out: Any) -> None:
        if isinstance(out, Tensor):
            self.output = out

    def check(self, logits: Tensor) -> bool:
        """Whether the comparison could be made (``False``: the head did not run or the shapes differ).

        Raises ``ValueError`` when ``logits`` are not the head's output (in ReWE mode: its
        prediction part; the kept softmax's logits may carry ``final_logits_bias``).
        """
        head_out = self.output
        if head_out is None or logits is head_out or head_out.shape != logits.shape:
            return head_out is not None and logits is head_out
        split = getattr(self.head, "split", None)
        ours, theirs = (split(head_out)[1], split(logits)[1]) if callable(split) else (head_out, logits)
        ours = ours.detach().to(theirs.dtype)
        if torch.equal(ours, theirs.detach()):
            return True
        change = float((ours - theirs.detach()).abs().nan_to_num(float("inf")).max())
        raise ValueError(
            f"{self.model_name} changes the head's output after {self.head_path!r} (by up to {change:.3g}), so its "
            "logits are not the predicted embeddings; lightning-contloss turns off the post-head transforms it knows "
            "(soft-caps, logit scales, final_logits_bias: see docs/models.md) but not this one. Please report the "
            "model class; until then, call the head on the model's hidden states yourself"
        )
