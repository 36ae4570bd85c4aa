"""Adapters for model libraries (Hugging Face ``transformers``, litgpt) whose softmax layer is swapped.

:func:`~lightning_contloss.heads.swap_softmax_head` calls :func:`adapt_model` after a swap;
when the layer belongs to a library model, its adapter makes that model's own paths
(``labels=``, ``generate()``, weight tying, padded vocabularies) work with the continuous head
or refuse clearly. A library is looked for only if it is already imported, so this package
never imports ``transformers`` or ``litgpt`` itself; install them with the ``hf`` and
``litgpt`` extras.
"""

from __future__ import annotations

import sys

from torch import Tensor, nn

from lightning_contloss.integrations.outputs import prediction_tensor
from lightning_contloss.integrations.padding import PAD_MULTIPLES, padding_multiple, vocab_fits, vocab_hint
from lightning_contloss.integrations.state import STATE_ATTR, ContinuousOwner, IntegrationState
from lightning_contloss.integrations.torch_transformer import TransformerDecoderStep

__all__ = [
    "PAD_MULTIPLES",
    "ContinuousOwner",
    "IntegrationState",
    "TransformerDecoderStep",
    "adapt_model",
    "check_convertible",
    "check_targets",
    "head_vocab_fits",
    "integration_state",
    "library_model",
    "padding_multiple",
    "prediction_tensor",
    "vocab_hint",
]


def _library_of(module: nn.Module) -> str | None:
    hf = sys.modules.get("transformers.modeling_utils")
    if hf is not None and isinstance(module, hf.PreTrainedModel):
        return "transformers"
    lit = sys.modules.get("litgpt.model")
    if lit is not None and isinstance(module, lit.GPT):
        return "litgpt"
    return None


def library_model(root: nn.Module, path: str) -> tuple[str, nn.Module, str] | None:
    """``(library, model, head path inside it)`` for the nearest library model above ``path``, or ``None``.

    Example:
        >>> library_model(torch.nn.Sequential(torch.nn.Linear(2, 3)), "0") is None
        True
    """
    parts = path.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:cut])
        try:
            module = root.get_submodule(prefix) if prefix else root
        except AttributeError:
            continue
        library = _library_of(module)
        if library is not None:
            return library, module, ".".join(parts[cut:])
    return None


def integration_state(root: nn.Module, path: str) -> IntegrationState | None:
    """The :class:`IntegrationState` of the library model holding the head at ``path``, if any."""
    found = library_model(root, path)
    if found is None:
        return None
    state = found[1].__dict__.get(STATE_ATTR)
    return state if isinstance(state, IntegrationState) else None


def head_vocab_fits(root: nn.Module, path: str, out_features: int, vocab_size: int) -> bool:
    """Whether ``vocab_size`` target rows fit the softmax layer at ``path`` (padded vocabularies allowed).

    :func:`~lightning_contloss.integrations.padding.vocab_fits`'s rule, except for a litgpt
    ``GPT``'s vocabulary projection, which takes exactly ``config.vocab_size`` rows (see
    :func:`~lightning_contloss.integrations.litgpt.litgpt_vocab_fits`, which raises otherwise).

    Example:
        >>> head_vocab_fits(torch.nn.Linear(4, 1024), "", 1024, 1000)  # padded to a multiple of 64
        True
    """
    found = library_model(root, path)
    if found is not None and found[0] == "litgpt":
        from lightning_contloss.integrations.litgpt import litgpt_vocab_fits

        fits = litgpt_vocab_fits(found[1], path, out_features, vocab_size)
        if fits is not None:
            return fits
    return vocab_fits(out_features, vocab_size)


def check_convertible(root: nn.Module, path: str) -> None:
    """Raise ``ValueError``, before any swap, if the library model holding ``path`` cannot take a continuous head.

    Example:
        >>> check_convertible(torch.nn.Sequential(torch.nn.Linear(2, 3)), "0")  # not a library model: fine
    """
    found = library_model(root, path)
    if found is not None and found[0] == "transformers":
        from lightning_contloss.integrations.hf_post_head import refuse_post_head

        refuse_post_head(found[1])


def adapt_model(root: nn.Module, path: str, old: nn.Linear, owner: ContinuousOwner | None = None) -> None:
    """Adapt the library model (if any) whose softmax layer at ``path`` inside ``root`` was just replaced.

    Args:
        root: the module ``path`` starts from.
        path: the replaced layer's dotted path.
        old: the replaced ``nn.Linear``.
        owner: the module with targets and loss (the ``ContinuousOutputMixin``), or ``None``.
    """
    found = library_model(root, path)
    if found is None:
        return
    library, model, head_path = found
    if library == "transformers":
        from lightning_contloss.integrations.hf import adapt_hf_model

        adapt_hf_model(model, head_path, old, owner)
    else:
        from lightning_contloss.integrations.litgpt import adapt_litgpt_model

        adapt_litgpt_model(model, head_path, old, owner)


def check_targets(root: nn.Module, path: str, ids: Tensor) -> None:
    """Warn once if ``ids`` equal the library model's last inputs position by position (a missing shift)."""
    state = integration_state(root, path)
    if state is not None:
        state.shift.check(ids)
