"""Exact k-nearest-neighbour decoding by chunked matrix products: the ground truth for recall."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from lightning_contloss._arguments import int_arg
from lightning_contloss.decoding.base import TableLike, _TableDecoder, check_space, resolve_table, unit_rows
from lightning_contloss.decoding.registry import register_decoder
from lightning_contloss.functional.scoring import similarity
from lightning_contloss.functional.vmf_distribution import merge_log_partition

__all__ = ["ExactDecoder"]

# κ below this is taken as this (κ = 0 included): query_with_log_partition scales queries by κ.
_KAPPA_FLOOR = 1e-20
# The fewest queries per block worth one product over the whole table (below, chunk the table).
_MIN_WHOLE_TABLE_BLOCK = 256


def _unit_norm(rows: Tensor) -> bool:
    """Whether every row of ``rows [V, D]`` has unit norm to rounding (what ``unit_rows`` would give)."""
    if rows.numel() == 0:
        return True
    # F.normalize leaves |‖x‖² − 1| at about √D·eps; a copy through unit_rows would be no closer.
    tolerance = 2 * rows.shape[-1] ** 0.5 * torch.finfo(rows.dtype).eps
    squared = torch.einsum("vd,vd->v", rows, rows)
    return bool(((squared - 1).abs() <= tolerance).all())


@register_decoder("exact")
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

    # It scores every returnable row: its top-k is exact by construction.
    exhaustive = True

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
        chunk_size, query_block = int_arg(chunk_size, "chunk_size", 1), int_arg(query_block, "query_block", 1)
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
        q = self._flat_queries(q)
        ids, scores, _ = self._search(q, k, None)
        if self._space == "l2":
            # The expansion ‖x‖² - 2x·w + ‖w‖² loses digits for near matches; score the winners directly.
            exact = similarity(q, self._rows[ids], "l2")
            scores, order = exact.sort(dim=-1, descending=True, stable=True)
            ids = ids.gather(-1, order)
        return ids.reshape(*lead, k).to(out_device), scores.reshape(*lead, k).to(out_device)

    @property
    def supports_log_partition(self) -> bool:
        """True in cosine space: :meth:`query_with_log_partition` serves the vMF distribution, over cosines."""
        return self._space == "cosine"

    @torch.no_grad()
    def query_with_log_partition(
        self, x: Tensor | np.ndarray, k: int, kappa: float | Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`query`, plus each query's vMF log-partition over the returnable rows, from the same scores.

        Exact search already scores every row, so the normaliser of ``p(w) ∝ exp(κ·cos(x, w))``
        (what ``vmf_ppl`` needs) costs one more elementwise pass over those scores rather than a
        second matrix product over the table. Cosine space only.

        Args:
            x: ``[..., D]`` queries.
            k: neighbours per query.
            kappa: concentration ``κ >= 0``: one float, or ``[...]`` (one per query).

        Returns:
            ``(ids [..., k], scores [..., k], log_partition [...] float32)`` on ``x``'s device;
            ``log_partition = log Σ_w exp(κ·cos(x, w))`` over the ids this decoder may return.

        Example:
            >>> dec = ExactDecoder(torch.eye(3))
            >>> ids, scores, log_z = dec.query_with_log_partition(torch.tensor([[2.0, 0.0, 0.0]]), 1, kappa=0.0)
            >>> ids.tolist(), round(float(log_z), 4)  # κ = 0: log of the 3 rows
            ([[0]], 1.0986)
        """
        if self._space != "cosine":
            raise ValueError(
                f"query_with_log_partition needs a cosine-space decoder (the vMF distribution is over "
                f"cosines), this one ranks by {self._space!r}; use vmf_log_partition instead"
            )
        q, k = self._check(x, k)
        lead, out_device = q.shape[:-1], q.device
        kap = torch.as_tensor(kappa.detach() if isinstance(kappa, Tensor) else kappa)
        if kap.is_complex() or kap.dtype == torch.bool or (kap.dim() and tuple(kap.shape) != tuple(lead)):
            raise ValueError(
                f"kappa must be a float or a real tensor of shape {tuple(lead)} (one per query), got "
                f"{kap.dtype} {tuple(kap.shape)}"
            )
        if kap.numel() and not bool(((kap >= 0) & torch.isfinite(kap)).all()):
            raise ValueError("kappa must be finite and >= 0 for every query; got a negative, NaN or infinite value")
        q = self._flat_queries(q)
        # The queries are scaled by κ, so the product itself gives κ·cos: no extra pass over the
        # scores, and the top-k of κ·cos ranks as cos does (κ > 0). κ = 0 is taken as 1e-20:
        # the same uniform sum to float precision, without a zero query (no ranking) or 0·-inf.
        kap = kap.to(self._rows.device, self._rows.dtype).expand(lead).reshape(-1).clamp_min(_KAPPA_FLOOR)
        ids, scores, log_z = self._search(q, k, kap)
        return (
            ids.reshape(*lead, k).to(out_device),
            scores.reshape(*lead, k).to(out_device),
            log_z.reshape(lead).to(out_device, torch.float32),
        )

    def _flat_queries(self, q: Tensor) -> Tensor:
        """Checked queries ``[..., D]`` as ``[N, D]`` rows on the table's device and dtype (unit rows for cosine)."""
        q = q.reshape(-1, self.dim).to(device=self._rows.device, dtype=self._rows.dtype)
        return unit_rows(q) if self._space == "cosine" else q

    def _search(self, q: Tensor, k: int, kappa: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Top-k ``(ids [N, k], scores [N, k], log_partition [N])`` of flat queries, a block of them at a time."""
        ids = torch.empty(q.shape[0], k, dtype=torch.int64, device=q.device)
        scores = torch.empty(q.shape[0], k, dtype=q.dtype, device=q.device)
        log_z = torch.full((q.shape[0],), float("-inf"), dtype=q.dtype, device=q.device)
        rows_per_block = self._block_rows()
        for start in range(0, q.shape[0], rows_per_block):
            block = slice(start, start + rows_per_block)
            ids[block], scores[block], log_z[block] = self._topk(q[block], k, None if kappa is None else kappa[block])
        return ids, scores, log_z

    def _block_rows(self) -> int:
        """Query rows per block: ``query_block``, or fewer so that one product covers the whole table.

        Scoring the table in one product beats chunks of it (a 10k-row table in 8,192 + 1,808 rows
        took 1.23× as long on one CPU thread), so while a block of at least 256 queries against
        every row fits the score budget (``query_block × chunk_size``), blocks shrink to fit it.
        """
        budget = self.query_block * self.chunk_size
        whole = budget // max(len(self._rows), 1)
        return min(self.query_block, whole) if whole >= _MIN_WHOLE_TABLE_BLOCK else self.query_block

    def _topk(self, q: Tensor, k: int, kappa: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Running top-k of one query block over the vocabulary chunks; with ``kappa [n]``, also its log-partition."""
        # The cap is on the score block (query_block × chunk_size entries), so a small batch, as in
        # generation, scans more rows per product: one product and one top-k at batch 1 and V = 10k.
        step = max(self.chunk_size, self.query_block * self.chunk_size // max(len(q), 1))
        if kappa is None and step >= len(self._rows):
            top_s, top_i = torch.addmm(self._bias, q, self._rows.T).topk(k, dim=-1)
            return top_i, top_s, torch.full((q.shape[0],), float("-inf"), dtype=q.dtype, device=q.device)
        if kappa is None:
            return self._scan(q, k, step, partition=False)
        ids, scaled, log_z = self._scan(q * kappa[:, None], k, step, partition=True)
        return ids, scaled / kappa[:, None], log_z

    def _scan(self, q: Tensor, k: int, step: int, *, partition: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Top-k of ``q`` over chunks of ``step`` rows, merged as it goes; with ``partition`` also the log-partition."""
        best_s = torch.full((q.shape[0], k), float("-inf"), dtype=q.dtype, device=q.device)
        best_i = torch.zeros((q.shape[0], k), dtype=torch.int64, device=q.device)
        log_z = torch.full((q.shape[0],), float("-inf"), dtype=q.dtype, device=q.device)
        for start in range(0, len(self._rows), step):
            rows = self._rows[start : start + step]
            s = torch.addmm(self._bias[start : start + len(rows)], q, rows.T)
            top_s, top_i = s.topk(min(k, len(rows)), dim=-1)
            if partition:
                # The chunk's top-1 is its max: the log-partition's shift, with no max pass of its own.
                log_z = merge_log_partition(log_z, s, row_max=top_s[:, 0])
            merged_s = torch.cat([best_s, top_s], dim=-1)
            merged_i = torch.cat([best_i, top_i + start], dim=-1)
            best_s, pos = merged_s.topk(k, dim=-1)
            best_i = merged_i.gather(-1, pos)
        return best_i, best_s, log_z
