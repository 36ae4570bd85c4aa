"""``HNSWGraph``: an hnswlib index over the distinct rows of a table, with the map back to table ids."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import hnswlib
import numpy as np
import torch

__all__ = ["INDEX_FILE", "META_FILE", "HNSWGraph", "IncompleteSearch"]

log = logging.getLogger(__name__)

INDEX_FILE, META_FILE = "index.bin", "meta.pt"
# Search breadth of the reachability check: each indexed row is looked up with its own vector.
_REACH_EF = 32
# Query rows per block when scoring the unreachable rows exactly (bounds a [block, U] matrix).
_REACH_BLOCK = 1024
_ARRAYS = ("rep_ids", "group_offsets", "group_members", "unreachable", "unreachable_rows")


class IncompleteSearch(Exception):
    """The graph could not return ``k`` entries for some query, even searching with ``ef`` = its size."""


def _unique_rows(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, inverse)``: index of each distinct row's first occurrence, and each row's group."""
    # +0.0 turns -0.0 into 0.0, so rows that compare equal also have equal bytes.
    flat = np.ascontiguousarray(data + np.float32(0.0))
    keys = flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.ravel()


@dataclass
class HNSWGraph:
    """An hnswlib index over distinct rows (label ``j`` = the ``j``-th distinct row) and its id map.

    Attributes:
        index: the hnswlib index; labels ``0..L-1``.
        rep_ids: ``[L]`` int64, the lowest table id of each label's row.
        group_offsets: ``[L + 1]`` int64 offsets into ``group_members`` (``None`` without duplicates).
        group_members: ``[n]`` int64 ids of every indexed row, grouped by label (``None`` without duplicates).
        unreachable: ``[U]`` int64 labels a search for their own row does not return.
        unreachable_rows: ``[U, D]`` float32 rows of those labels (unit rows in cosine space).
        reach_check_seconds: time the reachability check took (0 when loaded or switched off).

    Example:
        >>> rows = np.eye(4, dtype=np.float32)
        >>> g = HNSWGraph.build(rows, np.arange(4), space="ip", M=4, ef_construction=10, seed=0, threads=1)
        >>> ids, scores = g.search(rows[:2], k=1, ef=10, threads=1)
        >>> ids.tolist(), scores.tolist()
        ([[0], [1]], [[1.0], [1.0]])
    """

    index: hnswlib.Index
    rep_ids: np.ndarray
    group_offsets: np.ndarray | None
    group_members: np.ndarray | None
    unreachable: np.ndarray
    unreachable_rows: np.ndarray
    reach_check_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.rep_ids)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        rows: np.ndarray,
        ids: np.ndarray,
        *,
        space: str,
        M: int,
        ef_construction: int,
        seed: int,
        threads: int,
        reach_check: bool = False,
    ) -> HNSWGraph:
        """Index ``rows [n, D]`` float32 (unit rows in cosine space) whose table ids are ``ids [n]``.

        Duplicate rows go in once (hnswlib can hang in a multithreaded build that meets many
        duplicates). With ``reach_check`` each distinct row is then looked up with its own
        vector, and those the graph does not return are kept for exact scoring.
        """
        first, inverse = _unique_rows(rows)
        # Labels follow id order: label j is the j-th distinct row, represented by its lowest id.
        order = np.argsort(first, kind="stable")
        label_of_group = np.empty_like(order)
        label_of_group[order] = np.arange(len(order))
        rep_ids = ids[first[order]].astype(np.int64)
        offsets = members = None
        if len(first) < len(ids):
            labels = label_of_group[inverse]
            members = ids[np.argsort(labels, kind="stable")].astype(np.int64)
            offsets = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=len(first)))]).astype(np.int64)
            log.info("%d duplicate rows share an index entry with an identical row", len(ids) - len(first))
        data = np.ascontiguousarray(rows[first[order]])
        index = hnswlib.Index(space=space, dim=rows.shape[1])
        index.init_index(max_elements=len(first), M=M, ef_construction=ef_construction, random_seed=seed)
        index.add_items(data, np.arange(len(first)), num_threads=threads)
        graph = cls(index, rep_ids, offsets, members, np.zeros(0, np.int64), np.zeros((0, rows.shape[1]), np.float32))
        if reach_check:
            graph._find_unreachable(data, threads)
        return graph

    def _find_unreachable(self, data: np.ndarray, threads: int) -> None:
        """Record the indexed rows a search for their own vector does not return."""
        start = time.perf_counter()
        self.index.set_ef(_REACH_EF)
        labels, _ = self.index.knn_query(data, k=1, num_threads=threads)
        missed = np.nonzero(labels[:, 0].astype(np.int64) != np.arange(len(data)))[0]
        self.unreachable = missed.astype(np.int64)
        # The rows are already unit rows in cosine space, so 1 - row·query is hnswlib's distance.
        self.unreachable_rows = np.ascontiguousarray(data[missed], dtype=np.float32)
        self.reach_check_seconds = time.perf_counter() - start
        if len(missed):
            log.info("%d of %d indexed rows are unreachable in the graph; searched exactly", len(missed), len(data))

    # ------------------------------------------------------------------ searching
    def search(self, q: np.ndarray, k: int, ef: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [n, k] int64, scores [n, k] float32)`` of queries ``q [n, D]`` float32, best first.

        ``q`` must already be valid for the index (C-contiguous float32 of its dim; unit rows in
        cosine space). Scores are similarities: ``1 - distance``, or ``-distance`` for l2.

        Raises:
            IncompleteSearch: the graph cannot return ``k`` entries for some query.
        """
        kk = min(k, len(self.rep_ids))
        try:
            labels, dist = self._knn(q, kk, max(ef, kk), threads)
        except RuntimeError:
            # With valid input (checked by the caller: a 2-D float32 array of the index's dim,
            # kk <= the element count), hnswlib's knn_query raises RuntimeError for one reason:
            # the graph yielded fewer than kk entries for a query. Its message is not an API, so
            # any RuntimeError counts as that; mistaking another one for it costs only time, as
            # the last resort is exact search. ef = the index size reaches every connected entry.
            try:
                labels, dist = self._knn(q, kk, max(len(self.rep_ids), kk), threads)
            except RuntimeError as err:
                raise IncompleteSearch(f"HNSW could not return {kk} neighbours for every query") from err
        labels = labels.astype(np.int64)
        if len(self.unreachable):
            labels, dist = self._merge_unreachable(q, labels, dist)
        scores = (-dist if self.index.space == "l2" else 1.0 - dist).astype(np.float32)
        return self._expand(labels, scores, k)

    def _knn(self, q: np.ndarray, k: int, ef: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        self.index.set_ef(ef)
        labels, dist = self.index.knn_query(q, k=k, num_threads=threads)
        return labels, dist

    def _merge_unreachable(self, q: np.ndarray, labels: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add the exactly scored unreachable rows to HNSW's candidates; keep the best ``kk``."""
        kk, rows = labels.shape[1], self.unreachable_rows
        take = min(kk, len(rows))
        out_labels, out_dist = np.empty_like(labels), np.empty_like(dist)
        for start in range(0, len(q), _REACH_BLOCK):
            block = q[start : start + _REACH_BLOCK]
            # hnswlib's distances: squared distance for l2, else 1 - similarity (queries and rows
            # are unit rows in cosine space, so the inner product is the cosine).
            if self.index.space == "l2":
                d = np.maximum((block**2).sum(1, keepdims=True) - 2 * block @ rows.T + (rows**2).sum(1)[None], 0.0)
            else:
                d = 1.0 - block @ rows.T
            part = np.argpartition(d, take - 1, axis=1)[:, :take]
            cand_labels = self.unreachable[part]
            cand_dist = np.take_along_axis(d, part, axis=1).astype(dist.dtype)
            hnsw_labels = labels[start : start + _REACH_BLOCK]
            # A row HNSW did return is not counted twice.
            dup = (cand_labels[:, :, None] == hnsw_labels[:, None, :]).any(-1)
            all_labels = np.concatenate([hnsw_labels, cand_labels], axis=1)
            all_dist = np.concatenate([dist[start : start + _REACH_BLOCK], np.where(dup, np.inf, cand_dist)], axis=1)
            best = np.argsort(all_dist, axis=1, kind="stable")[:, :kk]
            out_labels[start : start + _REACH_BLOCK] = np.take_along_axis(all_labels, best, axis=1)
            out_dist[start : start + _REACH_BLOCK] = np.take_along_axis(all_dist, best, axis=1)
        return out_labels, out_dist

    def _expand(self, labels: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Map labels to ids, listing every copy of a duplicated row, and keep ``k``."""
        if self.group_offsets is None or self.group_members is None:
            return self.rep_ids[labels], scores
        start = self.group_offsets[labels]
        size = np.minimum(self.group_offsets[labels + 1] - start, k)
        slot = np.arange(k)
        valid = slot < size[..., None]  # [n, kk, k]
        pos = np.where(valid, start[..., None] + slot, 0)
        ids = self.group_members[pos].reshape(len(labels), -1)
        rep_scores = np.broadcast_to(scores[..., None], valid.shape).reshape(len(labels), -1)
        # Stable sort of "invalid" flags keeps valid entries in rank order, copies after their first.
        keep = np.argsort(~valid.reshape(len(labels), -1), axis=1, kind="stable")[:, :k]
        return np.take_along_axis(ids, keep, 1), np.take_along_axis(rep_scores, keep, 1)

    # ------------------------------------------------------------------ persistence
    def write(self, folder: Path) -> None:
        """Write ``index.bin`` (hnswlib's format) and ``meta.pt`` (the id map) into ``folder``."""
        self.index.save_index(str(folder / INDEX_FILE))
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        torch.save(
            {n: None if a is None else torch.from_numpy(np.ascontiguousarray(a)) for n, a in arrays.items()},
            folder / META_FILE,
        )

    @classmethod
    def read(cls, folder: Path, *, space: str, dim: int, rows: int) -> HNSWGraph:
        """Read a graph written by :meth:`write` for a table of ``rows`` ids of dim ``dim``.

        The id map is checked against ``rows`` and ``dim`` before hnswlib reads ``index.bin``,
        and hnswlib's element count against the id map after.

        Raises:
            ValueError: the files disagree with each other or with the table.
        """
        meta = torch.load(folder / META_FILE, weights_only=True, map_location="cpu")
        arrays = {n: None if meta.get(n) is None else meta[n].numpy() for n in _ARRAYS}
        rep_ids, offsets, members = arrays["rep_ids"], arrays["group_offsets"], arrays["group_members"]
        unreachable, unreachable_rows = arrays["unreachable"], arrays["unreachable_rows"]

        def fail(problem: str) -> ValueError:
            return ValueError(f"{str(folder)!r} is inconsistent: {problem}; delete it and rebuild")

        if rep_ids is None or unreachable is None or unreachable_rows is None:
            raise fail(f"{META_FILE} lacks the id map")
        for name, ids, bound in (("ids", rep_ids, rows), ("ids", members, rows), ("labels", unreachable, len(rep_ids))):
            if ids is not None and len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= bound):
                raise fail(f"{META_FILE} holds {name} {int(ids.min())}..{int(ids.max())} but there are {bound}")
        if (offsets is None) != (members is None) or (offsets is not None and len(offsets) != len(rep_ids) + 1):
            raise fail(f"{META_FILE} has an inconsistent duplicate map")
        if unreachable_rows.shape != (len(unreachable), dim):
            raise fail(f"{META_FILE} holds unreachable rows of shape {unreachable_rows.shape}, not dim {dim}")
        # Only now, with the id map known to fit the table, does hnswlib read the index.
        index = hnswlib.Index(space=space, dim=dim)
        index.load_index(str(folder / INDEX_FILE), max_elements=0)
        if index.element_count != len(rep_ids):
            raise fail(f"{INDEX_FILE} holds {index.element_count} rows but the id map has {len(rep_ids)}")
        return cls(index, rep_ids, offsets, members, unreachable, unreachable_rows)
