"""Save a converted Hugging Face model and load it back with its continuous head, targets and loss.

``save_pretrained`` alone would write the body and the head's weights, but nothing about the
target table, the loss or the head's shape, and HF's ``from_pretrained`` would then return a
softmax model with a random ``lm_head`` (listing the head's weights as unexpected in its load
report, and nothing else). :func:`save_continuous` (which a converted model's own
``save_pretrained`` calls) writes a directory that only :func:`load_continuous` reads:

=================================  ===========================================================
``config.json``                    the model's config, plus a ``"contloss"`` entry (the head, the
                                   table's shape, the loss) and a ``"transformers_weights"``
                                   entry that makes ``from_pretrained`` refuse, naming
                                   ``load_continuous``
``generation_config.json``         as HF writes it
``model.continuous.safetensors``   the weights, head included (HF's ``variant="continuous"``,
                                   so ``from_pretrained`` finds no ``model.safetensors`` either;
                                   sharded as HF shards)
``continuous_head.safetensors``    the target table, its special-id mask, the loss's tensors
``continuous_vocab.json``          the table's vocabulary, when it has one
=================================  ===========================================================

No pickle: a shared directory cannot run code. ``transformers`` and ``safetensors`` are
imported only when a function is called.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_contloss.heads import _ACTIVATIONS, EmbeddingRegressionHead, JointHead
from lightning_contloss.integrations import library_model
from lightning_contloss.integrations.hf_module import ContinuousHFModule
from lightning_contloss.integrations.state import STATE_ATTR, IntegrationState
from lightning_contloss.loss_spec import describe_loss, rebuild_loss
from lightning_contloss.losses import bind_targets, decode_space_of
from lightning_contloss.mixin import ContinuousOutputMixin
from lightning_contloss.targets import TargetEmbeddings

__all__ = ["CONFIG_KEY", "FORMAT", "load_continuous", "save_continuous"]

CONFIG_KEY = "contloss"  # the config.json entry that marks a continuous save
FORMAT = 1  # bumped when a save's layout changes
VARIANT = "continuous"
HEAD_FILE = "continuous_head.safetensors"
VOCAB_FILE = "continuous_vocab.json"
# Written as config.json's "transformers_weights": HF's from_pretrained then refuses with this text.
REFUSAL = (
    "this is a lightning-contloss continuous-output model; from_pretrained would give it a random softmax "
    "lm_head. Load it with lightning_contloss.load_continuous(directory)"
)


# --------------------------------------------------------------------------- finding the parts
def _parts(model: nn.Module) -> tuple[nn.Module, Any, IntegrationState]:
    """``(hf model, owner, state)`` from a converted HF model or the module that converted it."""
    state = model.__dict__.get(STATE_ATTR)
    if isinstance(state, IntegrationState):
        hf = model
    else:
        path = getattr(model, "_continuous_path", None)
        found = library_model(model, path) if isinstance(path, str) else None
        if found is None or found[0] != "transformers":
            raise ValueError(
                f"save_continuous takes a converted Hugging Face model or the ContinuousOutputMixin module that "
                f"converted one, got a {type(model).__name__} without a converted transformers model"
            )
        hf = found[1]
        state = hf.__dict__[STATE_ATTR]
    owner = state.require_owner("save_pretrained()")
    if not isinstance(owner, ContinuousOutputMixin):
        raise ValueError(f"the model's head belongs to a {type(owner).__name__}, not a ContinuousOutputMixin module")
    return hf, owner, state


def _describe_head(head: nn.Module) -> dict[str, Any]:
    joint = isinstance(head, JointHead)
    regression = head.regression if joint else head
    if type(regression) is not EmbeddingRegressionHead:
        raise ValueError(
            f"save_continuous can rebuild an EmbeddingRegressionHead (alone or in ReWE's JointHead), not a "
            f"{type(regression).__name__}; save the LightningModule's checkpoint instead (trainer.save_checkpoint)"
        )
    net = regression.net
    activation = None
    if isinstance(net, nn.Sequential):
        kind = type(net[1])
        activation = next((name for name, factory in _ACTIVATIONS.items() if factory is kind), None)
        if activation is None:
            raise ValueError(
                f"the head's activation {kind.__name__} is not one of {sorted(_ACTIVATIONS)}, so a reload could not "
                "rebuild it; save the LightningModule's checkpoint instead (trainer.save_checkpoint)"
            )
    return {
        "joint": joint,
        "hidden": regression.hidden,
        "activation": activation or "relu",
        "dropout": float(getattr(net[2], "p", 0.0)) if isinstance(net, nn.Sequential) else 0.0,
        "bias": regression.output_layer.bias is not None,
    }


# --------------------------------------------------------------------------- saving
def _untied_state(model: nn.Module, head_path: str) -> dict[str, Tensor]:
    """The state dict without the head's copies of other weights (ReWE's kept softmax, tied to the embedding).

    HF drops the tied copies it knows of, but not one inside the new head, and safetensors cannot
    store a tensor twice; the reload ties it again, as the fresh model does.
    """
    head = head_path + "."
    state = model.state_dict()
    kept = {(t.data_ptr(), tuple(t.shape)) for k, t in state.items() if not k.startswith(head)}
    for key in [k for k in state if k.startswith(head)]:
        ident = (state[key].data_ptr(), tuple(state[key].shape))
        if ident in kept:
            del state[key]
        kept.add(ident)
    return state


def save_continuous(model: nn.Module, directory: str | os.PathLike[str], **save_pretrained_kwargs: Any) -> None:
    """Save a converted Hugging Face model so that :func:`load_continuous` restores it exactly.

    Writes the files listed in the module docs. A converted model's own ``save_pretrained``
    calls this, so ``model.save_pretrained(directory)`` writes the same. HF's
    ``from_pretrained`` refuses the directory and names :func:`load_continuous`.

    Args:
        model: the converted ``PreTrainedModel`` (``lm.model``) or the ``ContinuousOutputMixin``
            module that converted it (``lm``).
        directory: where to write (created if missing).
        save_pretrained_kwargs: passed on to HF's ``save_pretrained`` (``max_shard_size``,
            ``is_main_process``, ``state_dict``, …); not ``variant`` or ``push_to_hub``.
    """
    for name in ("variant", "push_to_hub"):
        if save_pretrained_kwargs.get(name):
            raise ValueError(
                f"save_continuous does not take {name}=: it names the weights itself; save, then upload the "
                "directory (huggingface_hub.upload_folder)"
            )
        save_pretrained_kwargs.pop(name, None)
    hf, owner, state = _parts(model)
    head = hf.get_submodule(state.head_path)
    loss_spec, loss_tensors = describe_loss(owner.continuous_loss_fn)
    targets: TargetEmbeddings = owner.continuous_targets
    spec = {
        "format": FORMAT,
        "head_path": state.head_path,
        "head": _describe_head(head),
        "targets": {"rows": len(targets), "dim": targets.dim, "normalized": targets.normalized,
                    "vocab": targets.vocab is not None},
        "loss": loss_spec,
    }
    if save_pretrained_kwargs.get("state_dict") is None:
        save_pretrained_kwargs["state_dict"] = _untied_state(hf, state.head_path)
    from lightning_contloss.integrations.hf import ContinuousHFModel

    super(ContinuousHFModel, hf).save_pretrained(  # type: ignore[misc]
        directory, variant=VARIANT, save_original_format=False, **save_pretrained_kwargs
    )
    if not save_pretrained_kwargs.get("is_main_process", True):
        return
    from safetensors.torch import save_file

    root = Path(directory)
    tensors = {
        "targets.weight": targets.weight.detach().cpu().contiguous(),
        "targets.special_mask": targets.special_mask.detach().cpu().contiguous(),
        **{f"loss.{k}": v for k, v in loss_tensors.items()},
    }
    save_file(tensors, str(root / HEAD_FILE))
    if targets.vocab is not None:
        (root / VOCAB_FILE).write_text(json.dumps(targets.vocab, ensure_ascii=False), encoding="utf-8")
    config_file = root / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config[CONFIG_KEY] = spec
    config["transformers_weights"] = REFUSAL
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- loading
def _read_spec(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    config_file = root / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{root} has no config.json; save the model with save_continuous(model, directory) first")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    spec = config.pop(CONFIG_KEY, None)
    if not isinstance(spec, dict):
        raise ValueError(
            f"{root} is not a lightning-contloss save (its config.json has no {CONFIG_KEY!r} entry); a plain "
            "Hugging Face model loads with from_pretrained"
        )
    if int(spec.get("format", 0)) > FORMAT:
        raise ValueError(f"{root} was saved by a newer lightning-contloss (format {spec['format']}); upgrade it")
    config.pop("transformers_weights", None)
    return config, spec


def _build(config_dict: dict[str, Any], model_class: Any) -> nn.Module:
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_class is None:
        names = config_dict.get("architectures") or []
        model_class = getattr(transformers, names[0], None) if names else None
        if model_class is None:
            raise ValueError(
                f"config.json names the architecture {names[:1] or 'none'}, which this transformers does not have; "
                "pass the model class: load_continuous(directory, model_class)"
            )
    config_class = getattr(model_class, "config_class", None) or CONFIG_MAPPING[config_dict["model_type"]]
    config = config_class.from_dict(config_dict)
    if hasattr(model_class, "from_config"):  # an Auto class
        model: nn.Module = model_class.from_config(config)
    else:
        model = model_class(config)
    dtype = getattr(torch, str(config_dict.get("dtype") or "float32"), None)
    return model.to(dtype) if isinstance(dtype, torch.dtype) and dtype.is_floating_point else model


def _weights(root: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    single = root / f"model.{VARIANT}.safetensors"
    if single.is_file():
        return load_file(str(single))
    index = root / f"model.safetensors.index.{VARIANT}.json"
    if not index.is_file():
        raise ValueError(f"{root} has neither {single.name} nor {index.name}; save it again with save_continuous")
    files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    return {k: v for name in files for k, v in load_file(str(root / name)).items()}


def _load_weights(model: nn.Module, weights: dict[str, Tensor], root: Path) -> None:
    result = model.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{root}'s weights have keys this model lacks: {result.unexpected_keys[:5]}")
    # HF leaves out tied copies (T5's encoder/decoder embeddings); they share storage with a loaded key.
    tensors: dict[str, Tensor] = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    loaded = {tensors[k].data_ptr() for k in weights if k in tensors}
    # And the weights HF never saves because the model rebuilds them (Marian's sinusoidal positions).
    rebuilt = [*(getattr(model, "_keys_to_ignore_on_save", None) or []),
               *(getattr(model, "_keys_to_ignore_on_load_missing", None) or [])]
    missing = [
        k for k in result.missing_keys
        if (k not in tensors or tensors[k].data_ptr() not in loaded) and not any(re.search(p, k) for p in rebuilt)
    ]
    if missing:
        raise ValueError(f"{root}'s weights lack {missing[:5]}; the save is incomplete, save it again")


def _targets(root: Path, spec: dict[str, Any], tensors: dict[str, Tensor]) -> TargetEmbeddings:
    vocab = json.loads((root / VOCAB_FILE).read_text(encoding="utf-8")) if spec["targets"].get("vocab") else None
    mask = tensors["targets.special_mask"]
    targets = TargetEmbeddings(
        tensors["targets.weight"], vocab, normalize=False, special_ids=mask.nonzero().flatten().tolist()
    )
    targets.normalized = bool(spec["targets"]["normalized"])
    return targets


def _loss(spec: dict[str, Any], tensors: dict[str, Tensor], loss: Metric | None) -> Metric:
    saved = {k.removeprefix("loss."): v for k, v in tensors.items() if k.startswith("loss.")}
    space = spec["loss"]["decode_space"]
    if loss is None:
        try:
            return rebuild_loss(spec["loss"], saved)
        except ValueError as err:
            raise ValueError(
                f"the model was saved with a loss that cannot be rebuilt ({spec['loss'].get('reason') or err}); "
                f"pass the loss you trained with: load_continuous(directory, loss=...), whose decode space must be "
                f"{space!r}"
            ) from None
    if decode_space_of(loss) != space:
        raise ValueError(
            f"the loss passed has decode space {decode_space_of(loss)!r} but the model was trained for {space!r}; "
            "pass the loss it was trained with"
        )
    state = {k.removeprefix("state."): v for k, v in saved.items() if k.startswith("state.")}
    if state and set(state) == set(loss.state_dict()):
        loss.load_state_dict(state)
    return loss


def load_continuous(
    directory: str | os.PathLike[str], model_class: Any = None, *, loss: Metric | None = None
) -> ContinuousHFModule:
    """Load what :func:`save_continuous` wrote: the model with its continuous head, targets and loss.

    Args:
        directory: the saved directory.
        model_class: the Hugging Face class to build (``GPT2LMHeadModel``, or an Auto class such
            as ``AutoModelForCausalLM``); ``None`` takes the class named in ``config.json``.
        loss: the loss, when the saved one cannot be rebuilt (a composition, a loss of your
            own); its decode space must be the saved one. Its state is loaded from the save
            when it has the same entries.

    Returns:
        A :class:`ContinuousHFModule` in eval mode on the CPU: ``.model`` is the converted
        model, whose ``logits``, ``labels=`` loss and ``generate()`` equal those of the saved one.
    """
    root = Path(directory)
    config, spec = _read_spec(root)
    from safetensors.torch import load_file

    tensors = load_file(str(root / HEAD_FILE))
    targets = _targets(root, spec, tensors)
    head_spec = spec["head"]
    model = _build(config, model_class)
    module = ContinuousHFModule(model)
    old = model.get_submodule(spec["head_path"])
    if not isinstance(old, nn.Linear):
        raise ValueError(f"{type(model).__name__} has no nn.Linear at {spec['head_path']!r} to put the head on")
    head = EmbeddingRegressionHead(
        old.in_features, targets.dim, hidden=head_spec["hidden"], activation=head_spec["activation"],
        dropout=head_spec["dropout"], bias=head_spec["bias"],
    )
    with warnings.catch_warnings():  # a fresh model's tied head: the saved one was untied the same way
        warnings.filterwarnings("ignore", message=".*shares its weight with the input embedding")
        module.replace_softmax_head(
            f"model.{spec['head_path']}", targets, _loss(spec, tensors, loss), keep_softmax=head_spec["joint"],
            head=head,
        )
    bind_targets(module.continuous_loss_fn, targets)
    _load_weights(model, _weights(root), root)
    return module.eval()
