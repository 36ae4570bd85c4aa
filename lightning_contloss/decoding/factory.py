"""``make_decoder``: pick exact or HNSW search for a table by which is cheaper."""

from __future__ import annotations

import inspect
from typing import Any, Literal

from lightning_contloss.decoding.base import TableLike, check_space, resolve_table
from lightning_contloss.decoding.exact import ExactDecoder
from lightning_contloss.decoding.hnsw import HNSWDecoder

__all__ = ["EXACT_MAX_ELEMENTS", "DecoderChoice", "make_decoder"]

DecoderChoice = Literal["auto", "exact", "hnsw"]

# Largest V·D for which "auto" picks exact search on a CPU table. Measured on 2 shared CPU
# cores with `python benchmarks/decode.py --crossover` (docs/decoding.md, "make_decoder rule"):
# exact search is as fast as HNSW (ef=64) per query up to about V·D = 5e5, and HNSW also costs a
# build; beyond that HNSW wins by a factor that grows with V.
EXACT_MAX_ELEMENTS = 500_000


def _accepted(cls: type) -> set[str]:
    params = inspect.signature(cls).parameters
    return {name for name in params if name not in ("table", "space")}


def make_decoder(
    table: TableLike,
    space: str = "cosine",
    decoder: DecoderChoice = "auto",
    *,
    exact_max_elements: int = EXACT_MAX_ELEMENTS,
    **kwargs: Any,
) -> ExactDecoder | HNSWDecoder:
    """Build the decoder that suits ``table``.

    ``"auto"`` picks :class:`ExactDecoder` when the table is on an accelerator (a matrix
    product over the whole vocabulary is cheap there and needs no index) or when
    ``V · D <= exact_max_elements`` (on a CPU, exact search is then about as fast per query
    as HNSW and needs no build); otherwise :class:`HNSWDecoder`. With ``"auto"`` each class
    gets only the keyword arguments it takes, so HNSW settings can be passed unconditionally.

    Args:
        table: a ``TargetEmbeddings`` or a ``[V, D]`` tensor.
        space: the loss's decode space, ``"cosine"``, ``"ip"`` or ``"l2"``.
        decoder: ``"auto"``, ``"exact"`` or ``"hnsw"``.
        exact_max_elements: the V·D threshold of the ``"auto"`` rule.
        **kwargs: passed to the decoder's constructor (e.g. ``ef``, ``M``, ``cache_dir``, ``chunk_size``).

    Example:
        >>> type(make_decoder(torch.eye(16), "cosine")).__name__
        'ExactDecoder'
        >>> type(make_decoder(torch.eye(16), "cosine", exact_max_elements=10, num_threads=1)).__name__
        'HNSWDecoder'
    """
    space = check_space(space)
    if decoder not in ("auto", "exact", "hnsw"):
        raise ValueError(f"decoder must be 'auto', 'exact' or 'hnsw', got {decoder!r}")
    exact_keys, hnsw_keys = _accepted(ExactDecoder), _accepted(HNSWDecoder)
    unknown = sorted(set(kwargs) - exact_keys - hnsw_keys)
    if unknown:
        raise ValueError(
            f"make_decoder got unknown arguments {unknown}; ExactDecoder takes {sorted(exact_keys)}, "
            f"HNSWDecoder takes {sorted(hnsw_keys)}"
        )
    if decoder == "auto":
        weight = resolve_table(table, space).weight
        exact = weight.device.type != "cpu" or weight.shape[0] * weight.shape[1] <= exact_max_elements
        cls: type[ExactDecoder] | type[HNSWDecoder] = ExactDecoder if exact else HNSWDecoder
        keys = exact_keys if exact else hnsw_keys
        return cls(table, space, **{k: v for k, v in kwargs.items() if k in keys})
    cls = ExactDecoder if decoder == "exact" else HNSWDecoder
    wrong = sorted(set(kwargs) - _accepted(cls))
    if wrong:
        raise ValueError(f"{cls.__name__} does not take {wrong}; it takes {sorted(_accepted(cls))}")
    return cls(table, space, **kwargs)
