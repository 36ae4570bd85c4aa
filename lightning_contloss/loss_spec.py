"""A loss as JSON plus tensors, and back: what a saved model needs to restore the loss it was trained with.

:func:`describe_loss` records a package loss's class, its constructor arguments (read back from
the attributes of the same names) and its ``state_dict`` (a learned temperature, …), without
pickle. :func:`rebuild_loss` builds the loss again from that record; a loss it cannot describe
(a composition such as ``VMFLoss() + 0.1 * CosineLoss()``, a loss of your own, an argument that
is not kept) is recorded with the reason, and rebuilding it raises ``ValueError`` saying so.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_contloss.losses import decode_space_of, ignore_index_of
from lightning_contloss.losses.base import _TableBoundLoss

__all__ = ["describe_loss", "rebuild_loss"]

_PACKAGE = "lightning_contloss."
_SKIPPED = {"self", "targets"}


def _arguments(loss: _TableBoundLoss) -> tuple[dict[str, Any], dict[str, Tensor], str | None]:
    """JSON arguments, tensor arguments, and why the loss cannot be described (``None`` when it can)."""
    plain: dict[str, Any] = {}
    tensors: dict[str, Tensor] = {}
    name = type(loss).__name__
    for param in inspect.signature(type(loss).__init__).parameters.values():
        if param.name in _SKIPPED or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if not hasattr(loss, param.name):
            return {}, {}, f"{name} does not keep its argument {param.name!r}"
        value = getattr(loss, param.name)
        if value is None or isinstance(value, bool | int | float | str):
            plain[param.name] = value
        elif isinstance(value, Tensor):
            tensors[f"args.{param.name}"] = value.detach().cpu().contiguous()
        elif isinstance(value, torch.Generator):
            plain[param.name] = None  # a random stream is not part of the loss's definition
        else:
            return {}, {}, f"{name}'s argument {param.name!r} is a {type(value).__name__}"
    return plain, tensors, None


def describe_loss(loss: Metric) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(spec, tensors)``: a JSON-ready description of ``loss`` and its tensors (arguments and state).

    Args:
        loss: a continuous loss, or a composition of them.

    Example:
        >>> from lightning_contloss.losses import MaxMarginLoss
        >>> spec, tensors = describe_loss(MaxMarginLoss(margin=0.3))
        >>> spec["class"], spec["args"]["margin"], spec["decode_space"]
        ('lightning_contloss.losses.MaxMarginLoss', 0.3, 'cosine')
    """
    spec: dict[str, Any] = {
        "decode_space": decode_space_of(loss),
        "ignore_index": ignore_index_of(loss),
        "class": None,
        "args": {},
        "reason": None,
    }
    cls = type(loss)
    if not isinstance(loss, _TableBoundLoss):
        spec["reason"] = f"a {cls.__name__} (a composition of losses)"
        return spec, {}
    if not cls.__module__.startswith(_PACKAGE):
        spec["reason"] = f"{cls.__module__}.{cls.__qualname__} is not a lightning-contloss loss"
        return spec, {}
    plain, tensors, reason = _arguments(loss)
    if reason is not None:
        spec["reason"] = reason
        return spec, {}
    # The public path when the class is exported there, so a save outlives moves between files.
    public = importlib.import_module("lightning_contloss.losses")
    module_name = public.__name__ if getattr(public, cls.__qualname__, None) is cls else cls.__module__
    spec["class"] = f"{module_name}.{cls.__qualname__}"
    spec["args"] = plain
    tensors.update({f"state.{k}": v.detach().cpu().contiguous() for k, v in loss.state_dict().items()})
    return spec, tensors


def _loss_class(path: str) -> type[_TableBoundLoss]:
    module_name, _, name = path.rpartition(".")
    # Only this package's own losses: a saved file must not make us import arbitrary modules.
    if not module_name.startswith(_PACKAGE):
        raise ValueError(f"the saved loss class {path!r} is not a lightning-contloss loss")
    cls = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(cls, type) and issubclass(cls, _TableBoundLoss)):
        raise ValueError(f"the saved loss class {path!r} is not a lightning-contloss loss in this version")
    return cls


def rebuild_loss(spec: dict[str, Any], tensors: dict[str, Tensor]) -> Metric:
    """The loss :func:`describe_loss` described, unbound, with its saved state loaded.

    Raises ``ValueError`` with the recorded reason when it could not be described.

    Example:
        >>> from lightning_contloss.losses import InfoNCELoss
        >>> loss = rebuild_loss(*describe_loss(InfoNCELoss(temperature=0.2, num_negatives=8)))
        >>> type(loss).__name__, loss.temperature, loss.num_negatives
        ('InfoNCELoss', 0.2, 8)
    """
    if spec.get("class") is None:
        raise ValueError(f"the loss cannot be rebuilt: {spec.get('reason') or 'it was not described'}")
    cls = _loss_class(str(spec["class"]))
    args = dict(spec.get("args", {}))
    args.update({k.removeprefix("args."): v for k, v in tensors.items() if k.startswith("args.")})
    loss = cls(**args)
    state = {k.removeprefix("state."): v for k, v in tensors.items() if k.startswith("state.")}
    loss.load_state_dict(state)
    return loss
