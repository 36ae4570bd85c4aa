"""The loss registry: the names a command line can give a loss, each bound to its class.

A loss class joins it with :func:`register_loss` written above it; :func:`loss_names` lists the
names, :func:`loss_options` says which options a name takes, and :func:`make_loss` builds one.
``ContinuousLM(loss=...)``, its LightningCLI choices and ``compare --runs HEAD:LOSS:TARGETS`` all
read the registry, so a new loss reaches them without any other file changing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from lightning_contloss.losses.base import ContinuousLoss

__all__ = ["loss_names", "loss_options", "make_loss", "register_loss"]

_Loss = TypeVar("_Loss", bound=type[ContinuousLoss])
# name -> (class, the constructor arguments the name fixes); filled by @register_loss.
_REGISTRY: dict[str, tuple[type[ContinuousLoss], dict[str, Any]]] = {}
# Constructor parameters that are not options of the loss: make_loss sets or never passes them.
_NOT_OPTIONS = ("self", "targets", "ignore_index")


def register_loss(name: str, **fixed: Any) -> Callable[[_Loss], _Loss]:
    """Class decorator: make a :class:`~lightning_contloss.losses.ContinuousLoss` buildable by ``name``.

    Args:
        name: the name on the command line (lower case, no spaces), unique.
        fixed: constructor arguments the name stands for, e.g. ``negatives="in_batch"``.

    Written above the class, as ``@register_loss("cosine")`` is above
    :class:`~lightning_contloss.losses.CosineLoss`. Registering a class again under its own name
    changes nothing.

    Example:
        >>> from lightning_contloss.losses import CosineLoss
        >>> register_loss("cosine")(CosineLoss) is CosineLoss
        True
    """
    if not isinstance(name, str) or not name or name != name.strip().lower() or ":" in name or " " in name:
        raise ValueError(f"a loss name must be a non-empty lower-case word without ':' or spaces, got {name!r}")

    def register(cls: _Loss) -> _Loss:
        if not (isinstance(cls, type) and issubclass(cls, ContinuousLoss)):
            raise TypeError(f"register_loss takes a ContinuousLoss subclass, got {cls!r}")
        taken = _REGISTRY.get(name)
        if taken is not None and taken[0] is not cls:
            raise ValueError(f"the loss name {name!r} is taken by {taken[0].__name__}; choose another")
        unknown = sorted(set(fixed) - set(_constructor_options(cls)))
        if unknown:
            raise ValueError(f"register_loss({name!r}) fixes {unknown}, which {cls.__name__} does not take")
        _REGISTRY[name] = (cls, dict(fixed))
        return cls

    return register


def loss_names() -> tuple[str, ...]:
    """The registered loss names, in registration order.

    Example:
        >>> loss_names()
        ('cosine', 'l2', 'maxmargin', 'vmf', 'infonce', 'synmargin', 'energy')
    """
    return tuple(_REGISTRY)


def loss_options(name: str) -> tuple[str, ...]:
    """The options :func:`make_loss` takes for ``name``: its class's keyword parameters, less those the name fixes.

    Args:
        name: one of :func:`loss_names`.

    Example:
        >>> loss_options("maxmargin")
        ('margin', 'negatives', 'num_negatives', 'chunk_size', 'generator')
        >>> loss_options("cosine")
        ()
    """
    cls, fixed = _entry(name)
    return tuple(option for option in _constructor_options(cls) if option not in fixed)


def make_loss(name: str, *, ignore_index: int | None = None, **options: Any) -> ContinuousLoss:
    """The registered loss ``name``, unbound, built from ``options``.

    An option the loss does not take (see :func:`loss_options`) is an error, not dropped: a
    ``temperature`` given to a loss without one would otherwise change nothing, silently.

    Args:
        name: one of :func:`loss_names`.
        ignore_index: target id to skip (padding).
        options: constructor arguments, by name.

    Example:
        >>> make_loss("infonce", temperature=0.05).temperature
        0.05
        >>> make_loss("maxmargin", temperature=0.05)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: the loss 'maxmargin' (MaxMarginLoss) takes no option 'temperature'; it takes margin, ...
    """
    cls, fixed = _entry(name)
    clash = sorted(set(options) & set(fixed))
    if clash:
        settings = ", ".join(f"{key}={fixed[key]!r}" for key in clash)
        raise ValueError(f"the loss name {name!r} fixes {settings}; build {cls.__name__}(...) itself to change it")
    accepted = loss_options(name)
    unknown = [key for key in options if key not in accepted]
    if unknown:
        which = "option " + repr(unknown[0]) if len(unknown) == 1 else "options " + ", ".join(map(repr, unknown))
        takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"
        raise ValueError(f"the loss {name!r} ({cls.__name__}) takes no {which}; {takes}")
    return cls(ignore_index=ignore_index, **options, **fixed)


def _entry(name: str) -> tuple[type[ContinuousLoss], dict[str, Any]]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def _constructor_options(cls: type[ContinuousLoss]) -> tuple[str, ...]:
    # Named keyword parameters only: **kwargs of a loss are torchmetrics' Metric options.
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(cls.__init__).parameters.values()
    return tuple(p.name for p in params if p.kind in kinds and p.name not in _NOT_OPTIONS)
