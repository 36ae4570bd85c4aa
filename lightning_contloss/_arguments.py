"""Checks of scalar constructor arguments (ints, seeds, flags, fractions) with errors that name the argument.

A wrong Python type raises ``TypeError`` (a float where an int belongs, a string for a flag);
a value out of range raises ``ValueError``. ``bool`` is never accepted as an int, and floats
are never truncated: ``1.7`` is an error, not id 1. :func:`int_arg` is the package's one int
check (constructors, the functional losses' ``check_positive_int``, the decoders, the callback);
its wrong-type error is an :class:`ArgumentTypeError`, a ``TypeError`` that is also a
``ValueError``, because the losses and decoders have always promised ``ValueError`` for any bad
argument.
"""

from __future__ import annotations

import math
import operator
import os
from numbers import Real
from typing import TypeGuard

__all__ = ["ArgumentTypeError", "bool_arg", "check_allocation", "int_arg", "is_real", "real_arg", "seed_arg"]

_SEED_RANGE = (-(2**63), 2**64 - 1)


class ArgumentTypeError(TypeError, ValueError):
    """A wrong argument type: a ``TypeError``, and a ``ValueError`` for callers that catch bad arguments as one."""


def int_arg(value: object, name: str, minimum: int | None = None, *, rule: str | None = None) -> int:
    """``value`` as an int (Python, numpy or 0-d torch integers), at least ``minimum`` when given.

    Args:
        value: the argument as passed.
        name: its name, as the error message calls it.
        minimum: the smallest value allowed, or ``None`` for any int.
        rule: how the message words the bound (default ``"an int >= {minimum}"``), for checks whose
            wording users and tests already know, e.g. ``"a positive int"``.

    Raises:
        ArgumentTypeError: ``value`` is not an integer (a bool, a float, a string, a float tensor).
        ValueError: ``value`` is below ``minimum``.

    Example:
        >>> int_arg(3, "dim", minimum=1)
        3
        >>> int_arg(4.5, "in_features")
        Traceback (most recent call last):
        ...
        lightning_contloss._arguments.ArgumentTypeError: in_features must be an int, got float 4.5; pass a whole number
        >>> int_arg(0, "k", minimum=1, rule=">= 1")
        Traceback (most recent call last):
        ...
        ValueError: k must be >= 1, got 0; use 1 or more
    """
    at_least = "" if minimum is None else f" >= {minimum}"
    if isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be an int, got bool {value!r}; pass a whole number{at_least}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ArgumentTypeError(
            f"{name} must be an int, got {type(value).__name__} {value!r}; pass a whole number{at_least}"
        ) from None
    if minimum is not None and number < minimum:
        what = rule if rule is not None else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {number}; use {minimum} or more")
    return number


def is_real(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a real number: Python or numpy, int or float, never a bool.

    Example:
        >>> import numpy as np
        >>> is_real(0.5), is_real(np.float32(0.5)), is_real(True), is_real("0.5")
        (True, True, False, False)
    """
    return isinstance(value, Real) and not isinstance(value, bool)


def seed_arg(value: object, name: str = "seed") -> int:
    """``value`` as a seed torch accepts: an int that fits in 64 bits.

    Example:
        >>> seed_arg(0)
        0
    """
    seed = int_arg(value, name)
    if not _SEED_RANGE[0] <= seed <= _SEED_RANGE[1]:
        raise ValueError(f"{name} must fit in 64 bits ({_SEED_RANGE[0]}..{_SEED_RANGE[1]}), got {seed}")
    return seed


def bool_arg(value: object, name: str) -> bool:
    """``value`` when it is ``True`` or ``False``; a ``TypeError`` naming ``name`` otherwise.

    Example:
        >>> bool_arg(False, "normalize")
        False
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def real_arg(value: object, name: str, low: float, high: float) -> float:
    """``value`` as a finite float in ``[low, high]``.

    Example:
        >>> real_arg(0.25, "dropout", 0.0, 1.0)
        0.25
    """
    if not is_real(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got {value!r}")
    return number


def check_allocation(nbytes: int, what: str, fix: str) -> None:
    """Refuse, with a ``ValueError``, an allocation larger than this machine's physical memory.

    Better than the allocator's own failure, and than an allocation that succeeds lazily and
    gets the process killed when it is filled.

    Example:
        >>> check_allocation(1024, "a tiny table", "fewer rows")
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): let the allocator decide
        return
    if nbytes > total:
        raise ValueError(
            f"{what} needs {nbytes / 2**30:.1f} GiB, more than this machine's {total / 2**30:.1f} GiB of memory; "
            f"use {fix}"
        )
