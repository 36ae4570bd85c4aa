"""Approximate k-NN decoding with an HNSW graph (hnswlib), with tuning, persistence and caching."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_contloss.decoding.base import TableLike, check_k, check_query, check_space, resolve_table
from lightning_contloss.decoding.cache import IndexCache, cache_key, default_cache_dir, table_fingerprint
from lightning_contloss.decoding.exact import ExactDecoder
from lightning_contloss.decoding.recall import knn_recall
from lightning_contloss.functional.scoring import Space

__all__ = ["DEFAULT_EF_CANDIDATES", "HNSWDecoder", "auto_ef_construction", "tune_ef"]

log = logging.getLogger(__name__)

DEFAULT_EF_CANDIDATES: tuple[int, ...] = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# Bumped whenever the saved layout changes, so old cache entries are never misread.
_FORMAT = 2
# Search breadth of the reachability check: each indexed row is looked up with its own vector.
_REACH_EF = 32
# Query rows per block when scoring the unreachable rows exactly (bounds a [block, U] matrix).
_REACH_BLOCK = 1024
_INDEX_FILE, _META_FILE, _TABLE_FILE = "index.bin", "meta.pt", "table.pt"


# Build work grows about linearly in rows × ef_construction, so above _FULL_QUALITY_ROWS the
# default breadth shrinks to keep that product (and the build time) flat. Measured with
# benchmarks/decode.py on 2 idle cores, GloVe 50-d, M=16 (docs/decoding.md): 100k rows at 200
# build in ~20 s; 400k rows take 108 s at 200, 61 s at 100 and 45 s at 80 (the rule's value).
_FULL_QUALITY_EF_CONSTRUCTION = 200
_FULL_QUALITY_ROWS = 160_000
_MIN_AUTO_EF_CONSTRUCTION = 64


def auto_ef_construction(rows: int) -> int:
    """The default ``ef_construction`` for an index of ``rows`` entries.

    200 up to 160k rows; above, ``32e6 / rows`` (80 at 400k), never below 64, so the build time
    stops growing with ``rows`` (about 45 s for 400k rows of dim 50 on 2 cores) while
    :func:`tune_ef` recovers recall at query time with a larger ``ef``.

    Example:
        >>> auto_ef_construction(100_000), auto_ef_construction(400_000), auto_ef_construction(2_000_000)
        (200, 80, 64)
    """
    if rows <= _FULL_QUALITY_ROWS:
        return _FULL_QUALITY_EF_CONSTRUCTION
    budget = _FULL_QUALITY_EF_CONSTRUCTION * _FULL_QUALITY_ROWS
    return max(_MIN_AUTO_EF_CONSTRUCTION, budget // rows)


def _hnswlib_version() -> str:
    try:
        return importlib.metadata.version("hnswlib")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _unique_rows(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first, inverse)``: index of each distinct row's first occurrence, and each row's group."""
    # +0.0 turns -0.0 into 0.0, so rows that compare equal also have equal bytes.
    flat = np.ascontiguousarray(data + np.float32(0.0))
    keys = flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.ravel()


class HNSWDecoder:
    """Approximate k-NN over a target table with an HNSW graph (hnswlib).

    Scores are similarities in ``space``, higher is better: cosine similarity (``"cosine"``),
    inner product (``"ip"``) or negative squared Euclidean distance (``"l2"``), the same
    as :class:`ExactDecoder`'s. Special ids of a ``TargetEmbeddings`` and ``exclude`` ids are
    not put in the index, so they are never returned; neither are all-zero rows in cosine
    space. Duplicate rows go in once (hnswlib can hang in a multithreaded build that meets
    many duplicates); a query that finds one returns its copies too, lowest id first, with
    the same score.

    Query speed: hnswlib runs a batch of at most ``4 × num_threads`` rows on one thread, so
    pass whole batches (e.g. all ``B × T`` predictions of a validation batch at once), not
    single rows. ``ef`` (the search breadth) trades speed for recall and is raised to ``k``
    when needed; :meth:`tune_ef` picks the smallest ``ef`` that reaches a target recall on
    real queries.

    Args:
        table: a ``TargetEmbeddings`` or a ``[V, D]`` floating-point tensor.
        space: ``"cosine"``, ``"ip"`` or ``"l2"``; use the loss's decode space.
        M: graph degree (hnswlib's ``M``); higher is more accurate, bigger and slower to build.
        ef_construction: search breadth while building; ``None`` (default) picks it from the
            number of indexed rows with :func:`auto_ef_construction` (200 up to 160k rows, less
            above, so a 400k-row build stays under a minute on 2 cores).
        ef: search breadth while querying.
        num_threads: threads for building and querying; ``None`` uses every available CPU.
        seed: seed of the level generator.
        deterministic: build on one thread, so the same table and seed give a byte-identical
            index (slower to build; queries are deterministic either way).
        cache_dir: folder of the on-disk index cache: a second construction with the same table
            and build parameters loads the index instead of building it (see ``from_cache``).
            ``None`` (default) disables caching; :meth:`cached` uses the default folder.
        exclude: further ids never to return.
        reach_check: after building, look every indexed row up with its own vector (``ef`` =
            32); rows the graph does not return are searched exactly next to it on every query,
            so they can still be returned. An HNSW graph can leave rows unreachable: in
            GloVe's 400k words, 4,362-5,539 (1.1-1.4%), among them ``<unk>``'s random target. Costs
            one query per row at build time (19 s for 400k rows on 2 cores); cached with the
            index.

    Attributes:
        from_cache: True when the index was loaded from the cache instead of built.
        build_seconds: time spent building or loading the index (the reachability check included).
        unreachable_count: indexed rows the reachability check found the graph does not return.
        reach_check_seconds: time the reachability check took (0 when loaded or switched off).
        tuning: ``{ef: recall}`` measured by the last :meth:`tune_ef`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> table = torch.nn.functional.normalize(torch.randn(500, 16, generator=g), dim=-1)
        >>> dec = HNSWDecoder(table, space="cosine", ef=32, num_threads=1)
        >>> ids, scores = dec.query(table[:3], k=2)
        >>> ids[:, 0].tolist(), scores.shape
        ([0, 1, 2], torch.Size([3, 2]))
    """

    def __init__(
        self,
        table: TableLike,
        space: str = "cosine",
        *,
        M: int = 16,
        ef_construction: int | None = None,
        ef: int = 64,
        num_threads: int | None = None,
        seed: int = 0,
        deterministic: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        exclude: Iterable[int] | Tensor | None = None,
        reach_check: bool = True,
    ) -> None:
        space = check_space(space)
        self._M = _positive_int("M", M, minimum=2)
        if ef_construction is not None:
            ef_construction = _positive_int("ef_construction", ef_construction)
        self._ef = _positive_int("ef", ef)
        self.num_threads = _positive_int("num_threads", num_threads) if num_threads is not None else _available_cpus()
        self._seed = _positive_int("seed", seed, minimum=0)
        self._deterministic = bool(deterministic)
        self._reach_check = bool(reach_check)
        self._unreachable = np.zeros(0, dtype=np.int64)
        self._unreachable_rows = np.zeros((0, 1), dtype=np.float32)
        self.reach_check_seconds = 0.0
        resolved = resolve_table(table, space, exclude)
        self._space: Space = space
        self._table = resolved.weight
        self._returnable = resolved.returnable.cpu()
        self._count = int(self._returnable.sum())
        self._ef_construction = ef_construction if ef_construction is not None else auto_ef_construction(self._count)
        self.from_cache = False
        self.tuning: dict[int, float] = {}
        self._exact: ExactDecoder | None = None
        self._index: hnswlib.Index
        self._rep_ids: np.ndarray
        self._group_offsets: np.ndarray | None
        self._group_members: np.ndarray | None

        start = time.perf_counter()
        if cache_dir is None:
            self._build()
        else:
            self._build_or_load(IndexCache(cache_dir))
        self.build_seconds = time.perf_counter() - start

    @classmethod
    def cached(
        cls,
        table: TableLike,
        space: str = "cosine",
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> HNSWDecoder:
        """Like the constructor, with the on-disk cache on (default folder: :func:`default_cache_dir`).

        Example:
            >>> import tempfile
            >>> folder = tempfile.mkdtemp()
            >>> a = HNSWDecoder.cached(torch.eye(8), cache_dir=folder, num_threads=1)
            >>> b = HNSWDecoder.cached(torch.eye(8), cache_dir=folder, num_threads=1)
            >>> a.from_cache, b.from_cache
            (False, True)
        """
        return cls(table, space, cache_dir=cache_dir if cache_dir is not None else default_cache_dir(), **kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def space(self) -> Space:
        """The similarity the decoder ranks by (hnswlib's space)."""
        return self._space

    @property
    def dim(self) -> int:
        """D, the dimension queries must have."""
        return int(self._table.shape[1])

    @property
    def table(self) -> Tensor:
        """The ``[V, D]`` table as given (not normalised)."""
        return self._table

    @property
    def returnable(self) -> Tensor:
        """``[V]`` bool: True for ids this decoder may return."""
        return self._returnable

    @property
    def M(self) -> int:
        """Graph degree of the index."""
        return self._M

    @property
    def ef_construction(self) -> int:
        """Search breadth used while building."""
        return self._ef_construction

    @property
    def seed(self) -> int:
        """Seed of hnswlib's level generator."""
        return self._seed

    @property
    def deterministic(self) -> bool:
        """Whether the index was built on one thread (reproducible bytes)."""
        return self._deterministic

    @property
    def ef(self) -> int:
        """Search breadth at query time (raised to ``k`` by each query when smaller)."""
        return self._ef

    @ef.setter
    def ef(self, value: int) -> None:
        self._ef = _positive_int("ef", value)

    def __len__(self) -> int:
        return int(self._table.shape[0])

    def __repr__(self) -> str:
        return (
            f"HNSWDecoder(V={len(self)}, D={self.dim}, space={self._space!r}, M={self._M}, "
            f"ef_construction={self._ef_construction}, ef={self._ef}, indexed={len(self._rep_ids)}, "
            f"from_cache={self.from_cache})"
        )

    # ------------------------------------------------------------------ building
    def _build_params(self) -> dict[str, object]:
        return {
            "kind": "hnswlib",
            "format": _FORMAT,
            "hnswlib": _hnswlib_version(),
            "space": self._space,
            "dim": self.dim,
            "M": self._M,
            "ef_construction": self._ef_construction,
            "seed": self._seed,
            "deterministic": self._deterministic,
            "reach_check": self._reach_check,
        }

    def _build_or_load(self, cache: IndexCache) -> None:
        key = cache_key(table_fingerprint(self._table, self._returnable), self._build_params())
        entry = cache.lookup(key)
        if entry is not None:
            try:
                self._read_index(entry)
                self.from_cache = True
                return
            except (ValueError, RuntimeError, OSError, KeyError) as err:
                log.warning("ignoring the broken index cache entry %s (%s); rebuilding it", entry, err)
                cache.remove(key)
        self._build()
        try:
            cache.store(key, self._write_index)
        except (ValueError, OSError) as err:
            # The decoder works without the cache; only the next construction pays for the build again.
            log.warning("could not write the index cache entry under %s: %s", cache.root, err)

    def _build(self) -> None:
        ids = self._returnable.nonzero().flatten().numpy()
        data = self._table.detach()[torch.from_numpy(ids).to(self._table.device)].to("cpu", torch.float32)
        if self._space == "cosine":
            # hnswlib normalises too; doing it first lets rows that differ only in norm deduplicate.
            data = F.normalize(data, dim=-1)
        rows = np.ascontiguousarray(data.numpy())
        first, inverse = _unique_rows(rows)
        # Labels follow id order: label j is the j-th distinct row, represented by its lowest id.
        order = np.argsort(first, kind="stable")
        label_of_group = np.empty_like(order)
        label_of_group[order] = np.arange(len(order))
        self._rep_ids = ids[first[order]].astype(np.int64)
        if len(first) < len(ids):
            labels = label_of_group[inverse]
            by_label = np.argsort(labels, kind="stable")
            self._group_members = ids[by_label].astype(np.int64)
            self._group_offsets = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=len(first)))])
            log.info("%d duplicate rows share an index entry with an identical row", len(ids) - len(first))
        else:
            self._group_members = self._group_offsets = None
        index = hnswlib.Index(space=self._space, dim=self.dim)
        index.init_index(
            max_elements=len(first), M=self._M, ef_construction=self._ef_construction, random_seed=self._seed
        )
        threads = 1 if self._deterministic else self.num_threads
        index.add_items(rows[first[order]], np.arange(len(first)), num_threads=threads)
        index.set_ef(self._ef)
        self._index = index
        if self._reach_check:
            self._find_unreachable(rows[first[order]], threads)

    def _find_unreachable(self, data: np.ndarray, threads: int) -> None:
        """Record the indexed rows a search for their own vector does not return."""
        start = time.perf_counter()
        self._index.set_ef(_REACH_EF)
        labels, _ = self._index.knn_query(data, k=1, num_threads=threads)
        self._index.set_ef(self._ef)
        missed = np.nonzero(labels[:, 0].astype(np.int64) != np.arange(len(data)))[0]
        self._unreachable = missed.astype(np.int64)
        rows = data[missed]
        if self._space == "cosine":
            norms = np.linalg.norm(rows, axis=1, keepdims=True)
            rows = rows / np.maximum(norms, np.float32(1e-12))
        self._unreachable_rows = np.ascontiguousarray(rows, dtype=np.float32)
        self.reach_check_seconds = time.perf_counter() - start
        if len(missed):
            log.info("%d of %d indexed rows are unreachable in the graph; searched exactly", len(missed), len(data))

    @property
    def unreachable_count(self) -> int:
        """Indexed rows the graph does not return, searched exactly on every query instead."""
        return len(self._unreachable)

    def _merge_unreachable(
        self, q: np.ndarray, labels: np.ndarray, dist: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Add the exactly scored unreachable rows to HNSW's candidates; keep the best ``kk``."""
        kk, rows = labels.shape[1], self._unreachable_rows
        take = min(kk, len(rows))
        out_labels, out_dist = np.empty_like(labels), np.empty_like(dist)
        for start in range(0, len(q), _REACH_BLOCK):
            block = q[start : start + _REACH_BLOCK]
            # hnswlib's distances: 1 - similarity for cosine and ip, squared distance for l2.
            if self._space == "l2":
                d = (block**2).sum(1, keepdims=True) - 2 * block @ rows.T + (rows**2).sum(1)[None]
                d = np.maximum(d, 0.0)
            elif self._space == "cosine":
                unit = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), np.float32(1e-12))
                d = 1.0 - unit @ rows.T
            else:
                d = 1.0 - block @ rows.T
            part = np.argpartition(d, take - 1, axis=1)[:, :take]
            cand_labels = self._unreachable[part]
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

    # ------------------------------------------------------------------ querying
    def query(self, x: Tensor | np.ndarray, k: int = 1) -> tuple[Tensor, Tensor]:
        """The ``k`` most similar returnable ids of each query, best first (approximately).

        Args:
            x: ``[..., D]`` queries (any device; searched on the CPU).
            k: neighbours per query, ``1 <= k <=`` the number of returnable ids.

        Returns:
            ``(ids [..., k] int64, scores [..., k] float32)`` on ``x``'s device.

        Example:
            >>> dec = HNSWDecoder(torch.eye(4), space="ip", num_threads=1)
            >>> dec.query(torch.tensor([[0.0, 2.0, 0.0, 1.0]]), k=2)
            (tensor([[1, 3]]), tensor([[2., 1.]]))
        """
        q = check_query(x, self.dim)
        k = check_k(k, self._count)
        lead, out_device = q.shape[:-1], q.device
        flat = np.ascontiguousarray(q.reshape(-1, self.dim).to("cpu", torch.float32).numpy())
        if flat.shape[0] == 0:
            ids = np.zeros((0, k), dtype=np.int64)
            scores = np.zeros((0, k), dtype=np.float32)
        else:
            ids, scores = self._search(flat, k)
        return (
            torch.from_numpy(ids).reshape(*lead, k).to(out_device),
            torch.from_numpy(scores).reshape(*lead, k).to(out_device),
        )

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        kk = min(k, len(self._rep_ids))
        try:
            labels, dist = self._knn(q, kk, max(self._ef, kk))
        except RuntimeError as err:
            if "contiguous" not in str(err):
                raise
            # HNSW found fewer than kk entries for some query: part of the graph was not reached.
            # Searching with ef = the index size reaches every connected entry.
            try:
                labels, dist = self._knn(q, kk, max(len(self._rep_ids), kk))
            except RuntimeError as err2:
                if "contiguous" not in str(err2):
                    raise
                log.warning("HNSW could not return %d neighbours for every query; answering exactly", k)
                ids_t, scores_t = self._exact_decoder().query(torch.from_numpy(q), k)
                return ids_t.cpu().numpy(), scores_t.cpu().float().numpy()
        labels = labels.astype(np.int64)
        if len(self._unreachable):
            labels, dist = self._merge_unreachable(q, labels, dist)
        scores = (-dist if self._space == "l2" else 1.0 - dist).astype(np.float32)
        return self._expand(labels, scores, k)

    def _knn(self, q: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        self._index.set_ef(ef)
        labels, dist = self._index.knn_query(q, k=k, num_threads=self.num_threads)
        return labels, dist

    def _expand(self, labels: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Map index labels to ids, listing every copy of a duplicated row, and keep ``k``."""
        if self._group_offsets is None or self._group_members is None:
            return self._rep_ids[labels], scores
        start = self._group_offsets[labels]
        size = np.minimum(self._group_offsets[labels + 1] - start, k)
        slot = np.arange(k)
        valid = slot < size[..., None]  # [n, kk, k]
        pos = np.where(valid, start[..., None] + slot, 0)
        ids = self._group_members[pos].reshape(len(labels), -1)
        rep_scores = np.broadcast_to(scores[..., None], valid.shape).reshape(len(labels), -1)
        # Stable sort of "invalid" flags keeps valid entries in rank order, copies after their first.
        keep = np.argsort(~valid.reshape(len(labels), -1), axis=1, kind="stable")[:, :k]
        return np.take_along_axis(ids, keep, 1), np.take_along_axis(rep_scores, keep, 1)

    def _exact_decoder(self) -> ExactDecoder:
        if self._exact is None:
            excluded = (~self._returnable).nonzero().flatten()
            self._exact = ExactDecoder(self._table, self._space, exclude=excluded)
        return self._exact

    # ------------------------------------------------------------------ tuning
    def tune_ef(
        self,
        queries: Tensor | np.ndarray,
        target_recall: float = 0.99,
        candidates: Sequence[int] = DEFAULT_EF_CANDIDATES,
        k: int = 1,
        max_queries: int = 2048,
        seed: int = 0,
    ) -> int:
        """Set and return the smallest ``ef`` reaching ``target_recall``; see :func:`tune_ef`."""
        return tune_ef(self, queries, target_recall, candidates, k, max_queries, seed)

    # ------------------------------------------------------------------ persistence
    def _meta(self) -> dict[str, Any]:
        def tensor(a: np.ndarray | None) -> Tensor | None:
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

        return {
            **self._build_params(),
            "ef": self._ef,
            "num_threads": self.num_threads,
            "returnable": self._returnable,
            "rep_ids": tensor(self._rep_ids),
            "group_offsets": tensor(self._group_offsets),
            "group_members": tensor(self._group_members),
            "unreachable": tensor(self._unreachable),
            "unreachable_rows": tensor(self._unreachable_rows),
        }

    def _write_index(self, folder: Path) -> None:
        self._index.save_index(str(folder / _INDEX_FILE))
        torch.save(self._meta(), folder / _META_FILE)

    def _read_index(self, folder: Path) -> dict[str, Any]:
        """Load the index and id map saved in ``folder`` into this decoder; returns the metadata."""
        meta_path, index_path = folder / _META_FILE, folder / _INDEX_FILE
        if not meta_path.is_file() or not index_path.is_file():
            raise ValueError(
                f"{str(folder)!r} is not a saved HNSWDecoder (it needs {_META_FILE} and {_INDEX_FILE}); "
                "write one with decoder.save(path)"
            )
        meta = torch.load(meta_path, weights_only=True, map_location="cpu")
        if meta.get("kind") != "hnswlib" or meta.get("format") != _FORMAT:
            raise ValueError(
                f"{str(folder)!r} holds format {meta.get('format')!r} but this version reads format {_FORMAT}; "
                "rebuild and save the index again"
            )
        rep_ids = meta["rep_ids"].numpy()
        index = hnswlib.Index(space=meta["space"], dim=int(meta["dim"]))
        index.load_index(str(index_path), max_elements=0)
        if index.element_count != len(rep_ids) or index.dim != int(meta["dim"]):
            raise ValueError(
                f"{str(folder)!r} is inconsistent: the index holds {index.element_count} rows of dim "
                f"{index.dim} but the id map has {len(rep_ids)} rows of dim {meta['dim']}; delete it and rebuild"
            )
        index.set_ef(self._ef)
        self._index = index
        self._rep_ids = rep_ids
        offsets, members = meta["group_offsets"], meta["group_members"]
        self._group_offsets = None if offsets is None else offsets.numpy()
        self._group_members = None if members is None else members.numpy()
        self._unreachable = meta["unreachable"].numpy()
        self._unreachable_rows = meta["unreachable_rows"].numpy()
        return meta

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the index, id map, table, ``ef`` and build parameters into the folder ``path``.

        Example:
            >>> import tempfile
            >>> dec = HNSWDecoder(torch.eye(8), ef=48, num_threads=1)
            >>> folder = dec.save(tempfile.mkdtemp())
            >>> HNSWDecoder.load(folder).ef
            48
        """
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{str(folder)!r} is a file; save(path) writes a folder, pass a folder path")
        folder.mkdir(parents=True, exist_ok=True)
        self._write_index(folder)
        torch.save({"table": self._table.detach().cpu()}, folder / _TABLE_FILE)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, num_threads: int | None = None) -> HNSWDecoder:
        """Load a decoder written by :meth:`save`, with its ``ef`` and build parameters.

        Args:
            path: the folder passed to :meth:`save`.
            num_threads: query threads; ``None`` keeps the saved value.
        """
        folder = Path(path)
        table_path = folder / _TABLE_FILE
        if not table_path.is_file():
            raise ValueError(
                f"{str(folder)!r} is not a saved HNSWDecoder (no {_TABLE_FILE}); write one with decoder.save(path)"
            )
        self = cls.__new__(cls)
        start = time.perf_counter()
        self._ef = 1  # replaced below once the metadata is read
        meta = self._read_index(folder)
        self._space = check_space(meta["space"])
        self._M = int(meta["M"])
        self._ef_construction = int(meta["ef_construction"])
        self._seed = int(meta["seed"])
        self._deterministic = bool(meta["deterministic"])
        self._reach_check = bool(meta["reach_check"])
        self.ef = int(meta["ef"])
        self._index.set_ef(self._ef)
        self.num_threads = _positive_int("num_threads", num_threads if num_threads is not None else meta["num_threads"])
        self._table = torch.load(table_path, weights_only=True, map_location="cpu")["table"]
        self._returnable = meta["returnable"].to(torch.bool)
        self._count = int(self._returnable.sum())
        self.from_cache = False
        self.tuning = {}
        self.reach_check_seconds = 0.0
        self._exact = None
        self.build_seconds = time.perf_counter() - start
        return self

    def __getstate__(self) -> dict[str, Any]:
        # hnswlib's Index pickles itself (graph and data); the exact decoder is rebuilt on demand.
        state = self.__dict__.copy()
        state["_exact"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._index.set_ef(self._ef)


def tune_ef(
    decoder: HNSWDecoder,
    queries: Tensor | np.ndarray,
    target_recall: float = 0.99,
    candidates: Sequence[int] = DEFAULT_EF_CANDIDATES,
    k: int = 1,
    max_queries: int = 2048,
    seed: int = 0,
) -> int:
    """Set the decoder's ``ef`` to the smallest candidate reaching ``target_recall``; return it.

    Recall (see :func:`knn_recall`) is measured against :class:`ExactDecoder` on (a seeded
    sample of at most ``max_queries`` of) real queries, because it depends on the geometry of
    the targets and of the predictions: the same ``ef`` can give recall@1 near 1.0 on
    corpus-derived targets and well under 0.9 on random high-dimensional ones. When no
    candidate reaches the target the one with the best recall is kept and a warning logged.
    ``decoder.tuning`` holds ``{ef: recall}`` of every candidate tried.

    Args:
        decoder: the decoder to tune.
        queries: ``[..., D]`` representative queries, e.g. the model's predictions.
        target_recall: recall@k to reach, in (0, 1].
        candidates: ``ef`` values to try, smallest first.
        k: the k of recall@k.
        max_queries: sample size.
        seed: seed of the sample.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> table = torch.randn(2000, 8, generator=g)
        >>> dec = HNSWDecoder(table, num_threads=1, ef=10)
        >>> ef = tune_ef(dec, table[:200] + 0.1 * torch.randn(200, 8, generator=g))
        >>> ef == dec.ef and dec.tuning[ef] >= 0.99
        True
    """
    if not isinstance(decoder, HNSWDecoder):
        raise ValueError(f"tune_ef tunes an HNSWDecoder, got {type(decoder).__name__}")
    if not 0.0 < float(target_recall) <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    efs = sorted({_positive_int("each ef candidate", c) for c in candidates})
    if not efs:
        raise ValueError("candidates is empty; pass ef values to try, e.g. (16, 32, 64, 128)")
    max_queries = _positive_int("max_queries", max_queries)
    q = check_query(queries, decoder.dim).reshape(-1, decoder.dim)
    if q.shape[0] == 0:
        raise ValueError("tune_ef needs at least one query; pass a batch of the model's predictions")
    k = check_k(k, int(decoder.returnable.sum()))
    if q.shape[0] > max_queries:
        pick = torch.randperm(q.shape[0], generator=torch.Generator().manual_seed(seed))[:max_queries]
        q = q[pick.to(q.device)]
    exact = decoder._exact_decoder().query(q, k)[1].cpu()
    tuning: dict[int, float] = {}
    original = decoder.ef
    chosen: int | None = None
    try:
        for ef in efs:
            decoder.ef = ef
            tuning[ef] = knn_recall(decoder.query(q, k)[1].cpu(), exact)
            if tuning[ef] >= target_recall:
                chosen = ef
                break
    except BaseException:
        decoder.ef = original
        raise
    if chosen is None:
        chosen = max(efs, key=lambda e: (tuning[e], -e))
        log.warning(
            "no ef in %s reached recall@%d %.3f (best %.4f at ef=%d); pass larger candidates or rebuild with "
            "a larger M / ef_construction",
            efs,
            k,
            target_recall,
            tuning[chosen],
            chosen,
        )
    decoder.ef = chosen
    decoder.tuning = tuning
    return chosen
