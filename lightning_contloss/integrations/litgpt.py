"""litgpt's ``GPT`` after ``replace_softmax_head``: its padded vocabulary and unshifted targets.

litgpt rounds the output layer up to ``config.padded_vocab_size`` (a multiple of
``config.padding_multiple``, 512 by default): build the targets for ``config.vocab_size``
rows, the real vocabulary, and the padding ids can never be decoded; a table of any other size
(``padded_vocab_size`` rows included) is refused. ``GPT.forward(idx)``
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

__all__ = ["adapt_litgpt_model", "litgpt_vocab", "litgpt_vocab_fits"]


def litgpt_vocab(model: nn.Module) -> tuple[int, int] | None:
    """``(config.vocab_size, config.padded_vocab_size)`` of a litgpt ``GPT``, or ``None`` when its config lacks them.

    Example:
        >>> from types import SimpleNamespace
        >>> litgpt_vocab(SimpleNamespace(config=SimpleNamespace(vocab_size=10000, padded_vocab_size=10240)))
        (10000, 10240)
    """
    config = getattr(model, "config", None)
    real, padded = getattr(config, "vocab_size", None), getattr(config, "padded_vocab_size", None)
    if not isinstance(real, int) or not isinstance(padded, int):
        return None
    return real, padded


def litgpt_vocab_fits(model: nn.Module, path: str, out_features: int, vocab_size: int) -> bool | None:
    """Whether ``vocab_size`` target rows fit the litgpt layer at ``path``; ``None`` when the config cannot tell.

    The vocabulary projection (``out_features`` is ``config.padded_vocab_size`` or
    ``config.vocab_size``) takes exactly ``config.vocab_size`` rows: with more, the rows past
    it would be padding ids, which the decoder could then return.

    Raises:
        ValueError: the layer is the vocabulary projection and ``vocab_size`` is not ``config.vocab_size``.

    Example:
        >>> from types import SimpleNamespace
        >>> gpt = SimpleNamespace(config=SimpleNamespace(vocab_size=10000, padded_vocab_size=10240))
        >>> litgpt_vocab_fits(gpt, "lm_head", 10240, 10000)
        True
    """
    sizes = litgpt_vocab(model)
    if sizes is None or out_features not in sizes:
        return None
    real, padded = sizes
    if vocab_size != real:
        raise ValueError(
            f"the targets have V={vocab_size} rows but {path!r} has out_features={out_features}: the litgpt model's "
            f"config.vocab_size={real} (padded to {padded}) real tokens. Build one target row per real token, e.g. "
            "TargetEmbeddings.random(config.vocab_size, D) or TargetEmbeddings.from_tensor("
            "model.transformer.wte.weight[:config.vocab_size]); the ids from config.vocab_size on are litgpt's "
            "padding and must never be decoded"
        )
    return True


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
