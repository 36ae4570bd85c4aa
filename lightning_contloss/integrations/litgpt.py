"""litgpt's ``GPT`` after ``replace_softmax_head``: its padded vocabulary and unshifted targets.

litgpt rounds the output layer up to ``config.padded_vocab_size`` (a multiple of
``config.padding_multiple``, 512 by default): build the targets for ``config.vocab_size``
rows, the real vocabulary, and the padding ids can never be decoded. ``GPT.forward(idx)``
returns the predictions for every position of ``idx``: the targets are ``idx`` shifted by one.

litgpt's own ``generate`` functions sample from the logits and know nothing of the target
table; decode a converted ``GPT`` with :func:`~lightning_contloss.greedy_decode` or
:func:`~lightning_contloss.beam_search` and ``step_fn = lambda prefix: model(prefix)[:, -1]``.
``litgpt`` is imported lazily: this module imports without it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lightning_contloss.integrations.label_shift import ShiftCheck
from lightning_contloss.integrations.state import STATE_ATTR, ContinuousOwner, IntegrationState

__all__ = ["adapt_litgpt_model", "litgpt_padded_size"]


def litgpt_padded_size(model: nn.Module, vocab_size: int) -> int | None:
    """``config.padded_vocab_size`` when ``vocab_size`` is the model's real vocabulary, else ``None``.

    Example:
        >>> from types import SimpleNamespace
        >>> gpt = SimpleNamespace(config=SimpleNamespace(vocab_size=10000, padded_vocab_size=10240))
        >>> litgpt_padded_size(gpt, 10000), litgpt_padded_size(gpt, 9000)
        (10240, None)
    """
    config = getattr(model, "config", None)
    if getattr(config, "vocab_size", None) != vocab_size:
        return None
    padded = getattr(config, "padded_vocab_size", None)
    return int(padded) if padded is not None else None


def _record_idx(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    state = module.__dict__.get(STATE_ATTR)
    if isinstance(state, IntegrationState):
        state.shift.record(kwargs["idx"] if "idx" in kwargs else (args[0] if args else None))


def adapt_litgpt_model(model: nn.Module, head_path: str, old: nn.Linear, owner: ContinuousOwner | None) -> None:
    """Attach the continuous head's state to a litgpt ``GPT`` and record its inputs for the shift check.

    Args:
        model: the ``litgpt.GPT``.
        head_path: the head's path inside it (``"lm_head"``).
        old: the replaced softmax layer.
        owner: the module with targets and loss, or ``None``.
    """
    first = STATE_ATTR not in model.__dict__
    model.__dict__[STATE_ATTR] = IntegrationState(
        library="litgpt", head_path=head_path, vocab_width=old.out_features, owner=owner, shift=ShiftCheck("idx")
    )
    if first:
        model.register_forward_pre_hook(_record_idx, with_kwargs=True)
