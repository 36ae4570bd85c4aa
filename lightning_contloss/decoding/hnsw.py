"""Approximate k-NN decoding with an HNSW graph (hnswlib), with tuning, persistence and caching."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import numpy as np
import torch
from torch import Tensor

from lightning_contloss._arguments import int_arg
from lightning_contloss.decoding.base import (
    ResolvedTable,
    TableLike,
    _TableDecoder,
    check_k,
    check_query,
    check_space,
    resolve_table,
    unit_rows,
)
from lightning_contloss.decoding.cache import IndexCache, cache_key, default_cache_dir, table_fingerprint
from lightning_contloss.decoding.exact import ExactDecoder
from lightning_contloss.decoding.folder_swap import replace_folder
from lightning_contloss.decoding.hnsw_graph import INDEX_FILE, META_FILE, HNSWGraph, IncompleteSearch
from lightning_contloss.decoding.manifest import MANIFEST_FILE, read_manifest, write_manifest
from lightning_contloss.decoding.recall import knn_recall
from lightning_contloss.decoding.registry import register_decoder
from lightning_contloss.functional.scoring import Space

__all__ = ["DEFAULT_EF_CANDIDATES", "HNSWDecoder", "auto_ef_construction", "tune_ef"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_EF_CANDIDATES: tuple[int, ...] = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# Bumped whenever the saved layout changes, so old cache entries are never misread. 3: the
# manifest, and the build parameters moved from meta.pt into it.
_FORMAT = 3
_TABLE_FILE = "table.pt"
# The files of a saved decoder, the manifest last.
_SAVED = (INDEX_FILE, META_FILE, _TABLE_FILE, MANIFEST_FILE)


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


def resolve_build(
    table: TableLike,
    space: str,
    M: int,
    ef_construction: int | None,
    seed: int,
    deterministic: bool,
    exclude: Iterable[int] | Tensor | None,
    reach_check: bool,
) -> tuple[ResolvedTable, _BuildParams]:
    """The checked table and the build parameters (the cache key's half) of an ``HNSWDecoder``."""
    space = check_space(space)
    M = int_arg(M, "M", 2)
    if ef_construction is not None:
        ef_construction = int_arg(ef_construction, "ef_construction", 1)
    seed = int_arg(seed, "seed", 0)
    resolved = resolve_table(table, space, exclude)
    if ef_construction is None:
        ef_construction = auto_ef_construction(int(resolved.returnable.sum()))
    dim = int(resolved.weight.shape[1])
    return resolved, _BuildParams(space, dim, M, ef_construction, seed, bool(deterministic), bool(reach_check))


def build_graph(table: Tensor, ids: Tensor, params: _BuildParams, threads: int) -> HNSWGraph:
    """The graph over rows ``ids`` of ``table [V, D]`` built with ``params`` (the index's and the screen's build)."""
    data = table.detach()[ids.to(table.device)].to("cpu", torch.float32)
    if params.space == "cosine":
        # hnswlib normalises too; doing it first lets rows that differ only in norm deduplicate.
        data = unit_rows(data)
    return HNSWGraph.build(
        np.ascontiguousarray(data.numpy()),
        ids.cpu().numpy(),
        space=params.space,
        M=params.M,
        ef_construction=params.ef_construction,
        seed=params.seed,
        threads=threads,
        reach_check=params.reach_check,
    )


def _hnswlib_version() -> str:
    try:
        return importlib.metadata.version("hnswlib")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), the default thread count of builds and queries."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class _BuildParams:
    """What an index is built with: with the table's fingerprint, the key of a cached index."""

    space: Space
    dim: int
    M: int
    ef_construction: int
    seed: int
    deterministic: bool
    reach_check: bool

    def as_dict(self) -> dict[str, object]:
        return {"kind": "hnswlib", "format": _FORMAT, "hnswlib": _hnswlib_version(), **asdict(self)}

    @classmethod
    def from_dict(cls, params: dict[str, Any], folder: Path) -> _BuildParams:
        if params.get("kind") != "hnswlib" or params.get("format") != _FORMAT:
            raise ValueError(
                f"{str(folder)!r} holds format {params.get('format')!r} but this version reads format {_FORMAT}; "
                "rebuild and save the index again"
            )
        missing = [f.name for f in fields(cls) if f.name not in params]
        if missing:
            raise ValueError(f"{str(folder)!r}: the manifest lacks the build parameters {missing}; save it again")
        check_space(params["space"])
        return cls(**{f.name: params[f.name] for f in fields(cls)})


class _BuildParam(Generic[T]):
    """A read-only decoder attribute that reads the build parameter of the same name (``_params``)."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, decoder: None, owner: type) -> _BuildParam[T]: ...
    @overload
    def __get__(self, decoder: HNSWDecoder, owner: type | None = None) -> T: ...
    def __get__(self, decoder: HNSWDecoder | None, owner: type | None = None) -> T | _BuildParam[T]:
        if decoder is None:  # looked up on the class (help(), the docs)
            return self
        value: T = getattr(decoder._params, self._name)
        return value

    def __set__(self, decoder: HNSWDecoder, value: object) -> None:
        raise AttributeError(f"{self._name} is fixed when the index is built; build a new HNSWDecoder to change it")


@register_decoder("hnsw")
class HNSWDecoder(_TableDecoder):
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

    _graph: HNSWGraph

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
        ef = int_arg(ef, "ef", 1)
        num_threads = int_arg(num_threads, "num_threads", 1) if num_threads is not None else available_cpus()
        resolved, params = resolve_build(table, space, M, ef_construction, seed, deterministic, exclude, reach_check)
        start = time.perf_counter()
        self._setup(resolved, params, ef=ef, num_threads=num_threads)
        if cache_dir is None:
            self._graph = self._build()
        else:
            self._graph, self.from_cache = self._build_or_load(IndexCache(cache_dir))
        self.build_seconds = time.perf_counter() - start

    def _setup(self, resolved: ResolvedTable, params: _BuildParams, *, ef: int, num_threads: int) -> None:
        """Set every attribute but the graph: the one construction path of ``__init__`` and :meth:`load`."""
        super().__init__(ResolvedTable(resolved.weight, resolved.returnable.cpu()), params.space)
        self._params = params
        self._ef = ef
        self.num_threads = num_threads
        self.from_cache = False
        self.build_seconds = 0.0
        self.tuning: dict[int, float] = {}
        self._exact: ExactDecoder | None = None

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

    @staticmethod
    def in_cache(
        table: TableLike,
        space: str = "cosine",
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        M: int = 16,
        ef_construction: int | None = None,
        seed: int = 0,
        deterministic: bool = False,
        exclude: Iterable[int] | Tensor | None = None,
        reach_check: bool = True,
    ) -> bool:
        """Whether the cache folder holds a sound index of ``table`` with these build parameters.

        Then ``HNSWDecoder(table, ..., cache_dir=cache_dir)`` loads it instead of building. It
        costs one hash of the table (about 0.4 s at 400k × 256). Arguments as for the
        constructor; ``cache_dir=None`` is the default folder.

        Example:
            >>> import tempfile
            >>> folder = tempfile.mkdtemp()
            >>> HNSWDecoder.in_cache(torch.eye(8), cache_dir=folder)
            False
            >>> _ = HNSWDecoder(torch.eye(8), num_threads=1, cache_dir=folder)
            >>> HNSWDecoder.in_cache(torch.eye(8), cache_dir=folder)
            True
        """
        resolved, params = resolve_build(table, space, M, ef_construction, seed, deterministic, exclude, reach_check)
        fingerprint, build = table_fingerprint(resolved.weight, resolved.returnable.cpu()), params.as_dict()
        cache = IndexCache(cache_dir if cache_dir is not None else default_cache_dir())
        return cache.lookup(cache_key(fingerprint, build), table=fingerprint, params=build) is not None

    # ------------------------------------------------------------------ properties
    M = _BuildParam[int]("Graph degree of the index.")
    ef_construction = _BuildParam[int]("Search breadth used while building.")
    seed = _BuildParam[int]("Seed of hnswlib's level generator.")
    deterministic = _BuildParam[bool]("Whether the index was built on one thread (reproducible bytes).")

    @property
    def ef(self) -> int:
        """Search breadth at query time (raised to ``k`` by each query when smaller)."""
        return self._ef

    @ef.setter
    def ef(self, value: int) -> None:
        self._ef = int_arg(value, "ef", 1)

    @property
    def unreachable_count(self) -> int:
        """Indexed rows the graph does not return, searched exactly on every query instead."""
        return len(self._graph.unreachable)

    @property
    def reach_check_seconds(self) -> float:
        """Time the reachability check took (0 when loaded or switched off)."""
        return self._graph.reach_check_seconds

    def __repr__(self) -> str:
        return (
            f"HNSWDecoder(V={len(self)}, D={self.dim}, space={self._space!r}, M={self.M}, "
            f"ef_construction={self.ef_construction}, ef={self._ef}, indexed={len(self._graph)}, "
            f"from_cache={self.from_cache})"
        )

    # ------------------------------------------------------------------ building
    def _fingerprint(self) -> str:
        return table_fingerprint(self._table, self._returnable)

    def _build_or_load(self, cache: IndexCache) -> tuple[HNSWGraph, bool]:
        fingerprint, params = self._fingerprint(), self._params.as_dict()
        key = cache_key(fingerprint, params)
        graph = cache.load(key, self._read_graph, table=fingerprint, params=params)
        if graph is not None:
            return graph, True
        graph = self._build()
        try:
            cache.store(key, graph.write, table=fingerprint, params=params)
        except (ValueError, OSError) as err:
            # The decoder works without the cache; only the next construction pays for the build again.
            log.warning("could not write the index cache entry under %s: %s", cache.root, err)
        return graph, False

    def _build(self) -> HNSWGraph:
        ids = self._returnable.nonzero().flatten()
        p = self._params
        return build_graph(self._table, ids, p, threads=1 if p.deterministic else self.num_threads)

    def _read_graph(self, folder: Path) -> HNSWGraph:
        return HNSWGraph.read(folder, space=self._space, dim=self.dim, rows=len(self))

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
        q, k = self._check(x, k)
        lead, out_device = q.shape[:-1], q.device
        flat = q.reshape(-1, self.dim).to("cpu", torch.float32)
        if self._space == "cosine":
            # hnswlib normalises queries too, but its float32 squared norm overflows above ~1e19.
            flat = unit_rows(flat)
        flat_np = np.ascontiguousarray(flat.numpy())
        if flat_np.shape[0] == 0:
            ids, scores = np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        else:
            ids, scores = self._search(flat_np, k)
        return (
            torch.from_numpy(ids).reshape(*lead, k).to(out_device),
            torch.from_numpy(scores).reshape(*lead, k).to(out_device),
        )

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self._graph.search(q, k, self._ef, self.num_threads)
        except IncompleteSearch:
            log.warning("HNSW could not return %d neighbours for every query; answering exactly", k)
            ids_t, scores_t = self._exact_decoder().query(torch.from_numpy(q), k)
            return ids_t.cpu().numpy(), scores_t.cpu().float().numpy()

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
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the index, id map, table, ``ef`` and build parameters into the folder ``path``.

        The files are sealed with a manifest (sizes, blake2b hashes, the table fingerprint and
        the build parameters), so :meth:`load` refuses a folder that was damaged or changed.
        The folder is written beside ``path`` and swapped in whole, so a save interrupted
        halfway leaves an earlier save at ``path`` as it was. ``path`` must be a folder of its
        own: one that holds other files is refused.

        Example:
            >>> import tempfile
            >>> dec = HNSWDecoder(torch.eye(8), ef=48, num_threads=1)
            >>> folder = dec.save(tempfile.mkdtemp())
            >>> HNSWDecoder.load(folder).ef
            48
        """
        def write(folder: Path) -> None:
            self._graph.write(folder)
            state = {"table": self._table.detach().cpu(), "returnable": self._returnable, "ef": self._ef}
            torch.save({**state, "num_threads": self.num_threads}, folder / _TABLE_FILE)
            write_manifest(folder, _SAVED[:-1], table=self._fingerprint(), params=self._params.as_dict())

        # Written beside an earlier save and swapped in whole: an interrupted save leaves the old one.
        return replace_folder(Path(path), write, _SAVED)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, num_threads: int | None = None) -> HNSWDecoder:
        """Load a decoder written by :meth:`save`, with its ``ef`` and build parameters.

        Every file is checked against the folder's manifest before it is read, and the table
        against the index, so a damaged, changed or mismatched folder raises ``ValueError``.

        Args:
            path: the folder passed to :meth:`save`.
            num_threads: query threads; ``None`` keeps the saved value.
        """
        folder = Path(path)
        if not (folder / MANIFEST_FILE).is_file():
            old = (folder / _TABLE_FILE).is_file()
            raise ValueError(
                f"{str(folder)!r} is not a saved HNSWDecoder (no {MANIFEST_FILE}"
                + ("; it was saved by an older version or its save was interrupted: save it again" if old else "")
                + "); write one with decoder.save(path)"
            )
        start = time.perf_counter()
        manifest = read_manifest(folder)
        params = _BuildParams.from_dict(manifest.params, folder)
        state = torch.load(folder / _TABLE_FILE, weights_only=True, map_location="cpu")
        table, returnable = state.get("table"), state.get("returnable")
        if not isinstance(table, Tensor) or not isinstance(returnable, Tensor):
            raise ValueError(f"{str(folder)!r}: {_TABLE_FILE} lacks the table; save the decoder again")
        if table.dim() != 2 or table.shape[1] != params.dim or returnable.shape != (table.shape[0],):
            raise ValueError(
                f"{str(folder)!r}: {_TABLE_FILE} holds a table of shape {tuple(table.shape)} (returnable "
                f"{tuple(returnable.shape)}) but {INDEX_FILE} indexes rows of dim {params.dim}; save the decoder again"
            )
        fingerprint = table_fingerprint(table, returnable)
        if fingerprint != manifest.table:
            raise ValueError(
                f"{str(folder)!r}: {_TABLE_FILE} holds another table ({table.shape[0]} rows, fingerprint "
                f"{fingerprint[:12]}…) than the one {INDEX_FILE} was built from (fingerprint {manifest.table[:12]}…); "
                "save the decoder again"
            )
        threads = num_threads if num_threads is not None else state["num_threads"]
        self = cls.__new__(cls)
        self._setup(
            ResolvedTable(table, returnable.to(torch.bool)),
            params,
            ef=int_arg(state["ef"], "ef", 1),
            num_threads=int_arg(threads, "num_threads", 1),
        )
        self._graph = self._read_graph(folder)
        self.build_seconds = time.perf_counter() - start
        return self

    def __getstate__(self) -> dict[str, Any]:
        # hnswlib's Index pickles itself (graph and data); the exact decoder is rebuilt on demand.
        state = self.__dict__.copy()
        state["_exact"] = None
        return state


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
    efs = sorted({int_arg(c, "each ef candidate", 1) for c in candidates})
    if not efs:
        raise ValueError("candidates is empty; pass ef values to try, e.g. (16, 32, 64, 128)")
    max_queries = int_arg(max_queries, "max_queries", 1)
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
