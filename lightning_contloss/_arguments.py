"""Checks of scalar constructor arguments (ints, seeds, flags, fractions) with errors that name the argument.

A wrong Python type raises ``TypeError`` (a float where an int belongs, a string for a flag);
a value out of range raises ``ValueError``. ``bool`` is never accepted as an int, and floats
are never truncated: ``1.7`` is an error, not id 1.
"""

from __future__ import annotations

import math
import operator
import os
from numbers import Real

__all__ = ["bool_arg", "check_allocation", "int_arg", "real_arg", "seed_arg"]

_SEED_RANGE = (-(2**63), 2**64 - 1)


def int_arg(value: object, name: str, minimum: int | None = None) -> int:
    """``value`` as an int (Python, numpy or 0-d torch integers), at least ``minimum`` when given.

    Example:
        >>> int_arg(3, "dim", minimum=1)
        3
        >>> int_arg(4.5, "in_features")
        Traceback (most recent call last):
        ...
        TypeError: in_features must be an int, got float 4.5
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {number}")
    return number


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
    if isinstance(value, bool) or not isinstance(value, Real):
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
