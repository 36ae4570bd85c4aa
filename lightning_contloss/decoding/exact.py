"""Exact k-nearest-neighbour decoding by chunked matrix products: the ground truth for recall."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from lightning_contloss.decoding.base import TableLike, _TableDecoder, check_space, resolve_table, unit_rows
from lightning_contloss.functional.scoring import similarity

__all__ = ["ExactDecoder"]


def _unit_norm(rows: Tensor) -> bool:
    """Whether every row of ``rows [V, D]`` has unit norm to rounding (what ``unit_rows`` would give)."""
    if rows.numel() == 0:
        return True
    # F.normalize leaves |‖x‖² − 1| at about √D·eps; a copy through unit_rows would be no closer.
    tolerance = 2 * rows.shape[-1] ** 0.5 * torch.finfo(rows.dtype).eps
    squared = torch.einsum("vd,vd->v", rows, rows)
    return bool(((squared - 1).abs() <= tolerance).all())


class ExactDecoder(_TableDecoder):
    """Exact k-NN over a target table, on the table's device (GPU when the table is there).

    The queries are taken in blocks of ``query_block`` rows and the vocabulary in chunks, keeping a
    running top-k, so memory stays at about ``query_block × chunk_size`` scores whatever V is; a
    block of fewer queries takes proportionally longer chunks (at least ``chunk_size`` rows).
    Scores are similarities in ``space``, higher is better: cosine similarity, inner product, or
    negative squared L2 distance (recomputed directly for the returned ids, so it is exact, not
    an expansion).

    Args:
        table: a ``TargetEmbeddings`` (its special ids are never returned) or a ``[V, D]`` tensor.
        space: ``"cosine"``, ``"ip"`` or ``"l2"``; use the loss's decode space.
        chunk_size: table rows per matrix product for a full query block (more for smaller ones).
        query_block: query rows per matrix product.
        exclude: further ids never to return.

    Example:
        >>> dec = ExactDecoder(torch.eye(4), space="cosine", exclude=[3])
        >>> ids, scores = dec.query(torch.tensor([[0.1, 0.0, 0.2, 1.0]]), k=2)
        >>> ids.tolist(), [round(s, 3) for s in scores[0].tolist()]
        ([[2, 0]], [0.195, 0.098])
    """

    def __init__(
        self,
        table: TableLike,
        space: str = "cosine",
        *,
        chunk_size: int = 8192,
        query_block: int = 2048,
        exclude: Iterable[int] | Tensor | None = None,
    ) -> None:
        space = check_space(space)
        for name, value in (("chunk_size", chunk_size), ("query_block", query_block)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        super().__init__(resolve_table(table, space, exclude), space)
        self.chunk_size = chunk_size
        self.query_block = query_block
        # Half precision cannot rank near-ties among 100k rows, and CPU half matmuls are slow.
        dtype = self._table.dtype if self._table.dtype in (torch.float32, torch.float64) else torch.float32
        rows = self._table.to(dtype)
        # A table of unit rows (TargetEmbeddings normalises by default) is used as it is: a
        # normalised copy would double the memory of a 400k × 256 table (400 MB) per decoder.
        self._rows = unit_rows(rows) if space == "cosine" and not _unit_norm(rows) else rows
        # Chunks are ranked by x·w + bias: bias is 0 for cosine/ip and -‖w‖²/2 for l2 (the same
        # order as -‖x - w‖², since ‖x‖² is constant per query), and -inf where an id must never
        # be returned.
        bias = -rows.pow(2).sum(-1) / 2 if space == "l2" else torch.zeros(len(rows), dtype=dtype, device=rows.device)
        self._bias = bias.masked_fill(~self._returnable, float("-inf"))

    def __repr__(self) -> str:
        return (
            f"ExactDecoder(V={len(self)}, D={self.dim}, space={self._space!r}, returnable={self._count}, "
            f"device={self.device})"
        )

    @torch.no_grad()
    def query(self, x: Tensor | np.ndarray, k: int = 1) -> tuple[Tensor, Tensor]:
        """The ``k`` most similar returnable ids of each query, best first.

        Args:
            x: ``[..., D]`` queries (any device; moved to the table's device).
            k: neighbours per query, ``1 <= k <=`` the number of returnable ids.

        Returns:
            ``(ids [..., k] int64, scores [..., k])`` on ``x``'s device.

        Example:
            >>> dec = ExactDecoder(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), space="l2")
            >>> dec.query(torch.tensor([[3.0, 3.0]]), k=2)
            (tensor([[1, 0]]), tensor([[ -1., -18.]]))
        """
        q, k = self._check(x, k)
        lead, out_device = q.shape[:-1], q.device
        q = q.reshape(-1, self.dim).to(device=self._rows.device, dtype=self._rows.dtype)
        if self._space == "cosine":
            q = unit_rows(q)
        ids = torch.empty(q.shape[0], k, dtype=torch.int64, device=q.device)
        scores = torch.empty(q.shape[0], k, dtype=q.dtype, device=q.device)
        for start in range(0, q.shape[0], self.query_block):
            block = q[start : start + self.query_block]
            ids[start : start + len(block)], scores[start : start + len(block)] = self._topk(block, k)
        if self._space == "l2":
            # The expansion ‖x‖² - 2x·w + ‖w‖² loses digits for near matches; score the winners directly.
            exact = similarity(q, self._rows[ids], "l2")
            scores, order = exact.sort(dim=-1, descending=True, stable=True)
            ids = ids.gather(-1, order)
        return ids.reshape(*lead, k).to(out_device), scores.reshape(*lead, k).to(out_device)

    def _topk(self, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Running top-k of one query block over the vocabulary chunks."""
        # The cap is on the score block (query_block × chunk_size entries), so a small batch, as in
        # generation, scans more rows per product: one product and one top-k at batch 1 and V = 10k.
        step = max(self.chunk_size, self.query_block * self.chunk_size // max(len(q), 1))
        if step >= len(self._rows):
            top_s, top_i = torch.addmm(self._bias, q, self._rows.T).topk(k, dim=-1)
            return top_i, top_s
        best_s = torch.full((q.shape[0], k), float("-inf"), dtype=q.dtype, device=q.device)
        best_i = torch.zeros((q.shape[0], k), dtype=torch.int64, device=q.device)
        for start in range(0, len(self._rows), step):
            rows = self._rows[start : start + step]
            s = torch.addmm(self._bias[start : start + len(rows)], q, rows.T)
            top_s, top_i = s.topk(min(k, len(rows)), dim=-1)
            merged_s = torch.cat([best_s, top_s], dim=-1)
            merged_i = torch.cat([best_i, top_i + start], dim=-1)
            best_s, pos = merged_s.topk(k, dim=-1)
            best_i = merged_i.gather(-1, pos)
        return best_i, best_s
