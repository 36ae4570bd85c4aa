"""Screening a table for HNSW before indexing it: how much of a sample graph its own rows cannot reach."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from lightning_contloss._arguments import int_arg
from lightning_contloss.decoding.base import TableLike
from lightning_contloss.decoding.hnsw import build_graph, resolve_build

__all__ = ["SCREEN_ROWS", "hnsw_unreachable_share"]

# Rows of the sample graph. Measured with one thread (docs/decoding.md, "Screening"): random
# unit rows of dim 256 leave 0.5% of 16k, 3.8% of 32k and 13.2% of 64k rows unreachable (15-21%
# at 100k, where HNSW answers slower than exact search); dim 50 leaves none at 64k. 32k rows
# separate the two in about 30 s at dim 256 (3 s at dim 50), against ten minutes for a full
# 400k-row build.
SCREEN_ROWS = 32_768


def hnsw_unreachable_share(
    table: TableLike,
    space: str = "cosine",
    *,
    rows: int = SCREEN_ROWS,
    M: int = 16,
    ef_construction: int | None = None,
    seed: int = 0,
    num_threads: int = 1,
    exclude: Iterable[int] | Tensor | None = None,
) -> float:
    """Share of a sample of ``table``'s rows that an HNSW graph over the sample does not return for their own vector.

    HNSW degrades with the intrinsic dimension of the rows: on random high-dimensional
    vectors (random targets of dim 256, say) the graph leaves a growing share of its rows
    unreachable, each query must then score those rows exactly, and the index answers no
    faster than exact search. A graph over a few tens of thousands of sampled rows already
    shows it, for a small part of a full build's time. ``ef_construction`` defaults to what a
    build of the whole table would use (:func:`~lightning_contloss.decoding.auto_ef_construction`),
    so the sample graph is built as the full one would be.

    Args:
        table: a ``TargetEmbeddings`` or a ``[V, D]`` tensor (special ids, and all-zero rows in
            cosine space, are left out, as an index leaves them out).
        space: the decode space, ``"cosine"``, ``"ip"`` or ``"l2"``.
        rows: rows in the sample (all of them when the table has fewer).
        M: graph degree, as the full index would use.
        ef_construction: build breadth; ``None`` uses the full table's default.
        seed: seed of the sample and of hnswlib's level generator.
        num_threads: threads of the sample build and its check.
        exclude: further ids the index would leave out (as ``HNSWDecoder(exclude=)``).

    Returns:
        the unreachable share of the sampled rows, in [0, 1].

    Example:
        >>> from lightning_contloss import TargetEmbeddings
        >>> hnsw_unreachable_share(TargetEmbeddings.random(2000, 16, seed=0), rows=1000)
        0.0
    """
    rows = int_arg(rows, "rows", 2)
    num_threads = int_arg(num_threads, "num_threads", 1)
    # The full index's checks and build parameters (ef_construction from the whole table's size).
    resolved, params = resolve_build(table, space, M, ef_construction, seed, False, exclude, True)
    ids = resolved.returnable.cpu().nonzero().flatten()
    if len(ids) > rows:
        g = torch.Generator().manual_seed(params.seed)
        ids = ids[torch.randperm(len(ids), generator=g)[:rows]].sort().values
    graph = build_graph(resolved.weight, ids, params, num_threads)
    return len(graph.unreachable) / max(len(graph), 1)
