"""Hubness of target rows among predictions: the penalty term of CSLS (cross-domain similarity local scaling)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_contloss.functional.scoring import Space, pairwise_similarity

__all__ = ["csls_penalty"]


def csls_penalty(
    table: Tensor, queries: Tensor, k: int = 10, space: Space = "cosine", chunk_size: int = 4096
) -> Tensor:
    """``r_w``: the mean similarity of each table row to its ``k`` most similar queries.

    Nearest-neighbour search in high dimensions has *hubs*: a few rows that are the nearest
    neighbour of a large share of the queries (for a continuous LM, the targets of frequent
    words), so decoding collapses onto them. CSLS (Conneau et al., 2018, "Word translation
    without parallel data") ranks by ``2·sim(x, w) − r_x − r_w`` instead of ``sim(x, w)``;
    ``r_x`` is constant per query, so the ranking is that of ``sim(x, w) − r_w / 2``. A hub has
    a high ``r_w`` and is pushed down. Estimate ``r_w`` on a sample of real predictions
    (a few thousand) and reuse it: see :class:`~lightning_contloss.decoding.RerankedDecoder`.

    Args:
        table: ``[V, D]`` target rows.
        queries: ``[N, D]`` predictions, ``N >= k``.
        k: neighbourhood size (10 in the paper).
        space: the similarity, ``"cosine"``, ``"ip"`` or ``"l2"`` (negative squared distance).
        chunk_size: table rows scored at once (memory ``N × chunk_size``).

    Returns:
        ``[V]`` float32 on ``table``'s device.

    Example:
        >>> table = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> queries = torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.2, 1.0]])
        >>> csls_penalty(table, queries, k=2).round(decimals=3)  # row 0 is close to two queries, a hub
        tensor([0.9950, 0.5400])
    """
    if table.dim() != 2 or queries.dim() != 2 or table.shape[1] != queries.shape[1]:
        raise ValueError(
            f"table must be [V, D] and queries [N, D] with the same D, got {tuple(table.shape)} and "
            f"{tuple(queries.shape)}"
        )
    if not 1 <= k <= queries.shape[0]:
        raise ValueError(f"k must be in 1..{queries.shape[0]} (the number of queries), got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    q = queries.to(table.device, torch.float32)
    out = torch.empty(table.shape[0], dtype=torch.float32, device=table.device)
    for start in range(0, table.shape[0], chunk_size):
        rows = table[start : start + chunk_size].float()
        sims = pairwise_similarity(q, rows, space)  # [N, C]
        out[start : start + rows.shape[0]] = sims.topk(k, dim=0).values.mean(0)
    return out
