"""How the report writes a number: one formatter per kind, so a table and a sentence quoting it agree."""

from __future__ import annotations

__all__ = ["count", "gigabytes", "num", "ratio"]


def num(value: float | None, fmt: str = "{:.3f}") -> str:
    """``value`` in ``fmt``, or an em dash for a missing value.

    Example:
        >>> num(0.14251), num(None)
        ('0.143', '—')
    """
    return "—" if value is None else fmt.format(value)


def count(value: float | None) -> str:
    """A count with a k/M/G suffix, e.g. tokens per second or parameters.

    Example:
        >>> count(3612.0), count(2_600_000), count(12)
        ('3.6k', '2.6M', '12')
    """
    if value is None:
        return "—"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def gigabytes(megabytes: float | None) -> str:
    """A peak memory given in MiB, written in GiB.

    Example:
        >>> gigabytes(2048.0)
        '2.00 GB'
    """
    return "—" if megabytes is None else f"{megabytes / 1024:.2f} GB"


def ratio(value: float | None, reference: float | None) -> str | None:
    """``value / reference`` as ``"1.05×"``; ``None`` when either is missing or the reference is 0.

    Example:
        >>> ratio(0.21, 0.20), ratio(1.0, 0.0)
        ('1.05×', None)
    """
    if value is None or not reference:
        return None
    return f"{value / reference:.2f}×"
