"""The decoder registry: the kind names ``make_decoder`` and ``DecoderFactory`` build, each bound to its class.

A decoder class joins it with :func:`register_decoder` written above it (as ``"exact"`` is above
:class:`~lightning_contloss.decoding.ExactDecoder`). ``make_decoder``,
:class:`~lightning_contloss.decoding.DecoderFactory` (so ``DecodingCallback(decoder=...)``) and
``compare --decoder`` read the registry, so a new kind reaches them without any other file changing.
Besides the registered kinds there is ``"auto"``: the factory's choice between ``"exact"`` and
``"hnsw"`` (:class:`~lightning_contloss.decoding.auto_policy.AutoPolicy`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

__all__ = ["AUTO", "decoder_class", "decoder_kinds", "decoder_names", "decoder_options", "register_decoder"]

# The kind that lets the factory choose; never a registered name.
AUTO = "auto"

_Class = TypeVar("_Class", bound=type)
# name -> decoder class, built as cls(table, space, **options); filled by @register_decoder.
_REGISTRY: dict[str, type] = {}


def register_decoder(name: str) -> Callable[[_Class], _Class]:
    """Class decorator: make a decoder class buildable by kind ``name``.

    The class is built as ``cls(table, space, **options)`` and must offer what the
    :class:`~lightning_contloss.decoding.Decoder` protocol asks (``query(x, k)``, ``space``, ``dim``,
    ``table``, ``returnable``, ``len()``). A class whose constructor takes ``ef`` gets the
    factory's ``ef`` (tuned when it is an :class:`~lightning_contloss.decoding.HNSWDecoder`); one
    that takes ``cache_dir`` gets the factory's cache folder.

    Args:
        name: the kind name (lower case, no spaces), unique; ``"auto"`` is taken by the factory.

    Example:
        >>> from lightning_contloss.decoding import ExactDecoder
        >>> register_decoder("exact")(ExactDecoder) is ExactDecoder  # registering again changes nothing
        True
    """
    if not isinstance(name, str) or not name or name != name.strip().lower() or " " in name or ":" in name:
        raise ValueError(f"a decoder kind must be a non-empty lower-case word without ':' or spaces, got {name!r}")
    if name == AUTO:
        raise ValueError(f"the decoder kind {AUTO!r} is the factory's own choice; choose another name")

    def register(cls: _Class) -> _Class:
        if not (isinstance(cls, type) and callable(getattr(cls, "query", None))):
            raise TypeError(f"register_decoder takes a decoder class (with a query(x, k) method), got {cls!r}")
        try:
            inspect.signature(cls).bind_partial(None, None)
        except TypeError:
            raise TypeError(
                f"{cls.__name__} must be built as {cls.__name__}(table, space, **options) to be a decoder kind"
            ) from None
        taken = _REGISTRY.get(name)
        if taken is not None and taken is not cls:
            raise ValueError(f"the decoder kind {name!r} is taken by {taken.__name__}; choose another")
        _REGISTRY[name] = cls
        return cls

    return register


def decoder_names() -> tuple[str, ...]:
    """The registered decoder kinds, in registration order.

    Example:
        >>> decoder_names()
        ('exact', 'hnsw')
    """
    return tuple(_REGISTRY)


def decoder_kinds() -> tuple[str, ...]:
    """Every kind :class:`~lightning_contloss.decoding.DecoderFactory` takes by name: ``"auto"``, then the registered.

    Example:
        >>> decoder_kinds()
        ('auto', 'exact', 'hnsw')
    """
    return (AUTO, *_REGISTRY)


def decoder_class(name: str) -> type:
    """The class registered as ``name``.

    Example:
        >>> decoder_class("exact").__name__
        'ExactDecoder'
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(map(repr, decoder_kinds()))}")
    return _REGISTRY[name]


def decoder_options(name: str) -> frozenset[str]:
    """The keyword arguments the class registered as ``name`` takes besides ``table`` and ``space``.

    Example:
        >>> sorted(decoder_options("exact"))
        ['chunk_size', 'exclude', 'query_block']
    """
    params = inspect.signature(decoder_class(name)).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in params if p.kind in kinds and p.name not in ("table", "space"))
