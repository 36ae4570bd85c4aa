"""Building decoders: ``make_decoder`` picks exact or HNSW search, ``DecoderFactory`` builds and adapts them."""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_contloss._arguments import int_arg, is_real
from lightning_contloss.decoding.base import Decoder, TableLike, check_space, resolve_table
from lightning_contloss.decoding.cache import default_cache_dir
from lightning_contloss.decoding.exact import ExactDecoder
from lightning_contloss.decoding.hnsw import DEFAULT_EF_CANDIDATES, HNSWDecoder, available_cpus, tune_ef
from lightning_contloss.decoding.screen import SCREEN_ROWS, hnsw_unreachable_share
from lightning_contloss.targets import TargetEmbeddings

__all__ = [
    "DEFAULT_EF",
    "EXACT_MAX_ELEMENTS",
    "SCREEN_MAX_UNREACHABLE",
    "SCREEN_MIN_ROWS",
    "DecoderChoice",
    "DecoderFactory",
    "check_decoder",
    "make_decoder",
]

log = logging.getLogger(__name__)

# HNSW search breadth before (or without) tuning.
DEFAULT_EF = 64
# Integer decoder arguments and their smallest valid value (None, where allowed, means "default").
_INT_ARGS = {"M": 2, "ef_construction": 1, "num_threads": 1, "chunk_size": 1, "query_block": 1}

DecoderChoice = Literal["auto", "exact", "hnsw"]

# Largest V·D for which "auto" picks exact search on a CPU table. Measured on 2 shared CPU
# cores with `python benchmarks/decode.py --crossover` (docs/decoding.md, "make_decoder rule"):
# exact search is as fast as HNSW (ef=64) per query up to about V·D = 5e5, and HNSW also costs a
# build; beyond that HNSW wins by a factor that grows with V.
EXACT_MAX_ELEMENTS = 500_000

# "auto" screens tables with at least this many returnable rows before indexing them with HNSW
# (smaller ones build in about the screen's time), and decodes them exactly when the sample
# graph leaves more than SCREEN_MAX_UNREACHABLE of its rows unreachable. Measured on 400k-row
# tables (docs/decoding.md): GloVe 50-d leaves 0.03% of the sample (HNSW at 8x exact search's
# speed), random 50-d about as little (validation at 0.12x softmax's with HNSW); random 128-d
# leaves 0.73-0.81% and random 256-d 3.8%, and on both a full index answered no faster than exact
# search (236 against 239 queries/s at ef=16 for 128-d), after builds of 8 and 10 minutes.
SCREEN_MIN_ROWS = 4 * SCREEN_ROWS
SCREEN_MAX_UNREACHABLE = 0.005


def _accepted(cls: type) -> set[str]:
    params = inspect.signature(cls).parameters
    return {name for name in params if name not in ("table", "space")}


def make_decoder(
    table: TableLike,
    space: str = "cosine",
    decoder: DecoderChoice = "auto",
    *,
    exact_max_elements: int | None = None,
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
        exact_max_elements: the V·D threshold of the ``"auto"`` rule (default :data:`EXACT_MAX_ELEMENTS`).
        **kwargs: passed to the decoder's constructor (e.g. ``ef``, ``M``, ``cache_dir``, ``chunk_size``).

    Example:
        >>> type(make_decoder(torch.eye(16), "cosine")).__name__
        'ExactDecoder'
        >>> type(make_decoder(torch.eye(16), "cosine", exact_max_elements=10, num_threads=1)).__name__
        'HNSWDecoder'
    """
    space = check_space(space)
    _check_kwargs(decoder, kwargs)
    exact_keys, hnsw_keys = _accepted(ExactDecoder), _accepted(HNSWDecoder)
    if decoder == "auto":
        exact = _auto_picks_exact(resolve_table(table, space).weight, exact_max_elements)
        cls: type[ExactDecoder] | type[HNSWDecoder] = ExactDecoder if exact else HNSWDecoder
        keys = exact_keys if exact else hnsw_keys
        return cls(table, space, **{k: v for k, v in kwargs.items() if k in keys})
    cls = ExactDecoder if decoder == "exact" else HNSWDecoder
    return cls(table, space, **kwargs)


def _auto_picks_exact(weight: Tensor, exact_max_elements: int | None = None) -> bool:
    """The V·D rule of ``"auto"``: exact search for a table on an accelerator or a small one."""
    limit = EXACT_MAX_ELEMENTS if exact_max_elements is None else exact_max_elements
    return weight.device.type != "cpu" or weight.shape[0] * weight.shape[1] <= limit


def _check_kwargs(decoder: str, kwargs: dict[str, Any]) -> None:
    """Raise unless ``kwargs`` are arguments of the decoder class(es) that ``decoder`` may build."""
    if decoder not in ("auto", "exact", "hnsw"):
        raise ValueError(f"decoder must be 'auto', 'exact' or 'hnsw', got {decoder!r}")
    exact_keys, hnsw_keys = _accepted(ExactDecoder), _accepted(HNSWDecoder)
    if decoder == "auto":
        unknown = sorted(set(kwargs) - exact_keys - hnsw_keys)
        if unknown:
            raise ValueError(
                f"make_decoder got unknown arguments {unknown}; ExactDecoder takes {sorted(exact_keys)}, "
                f"HNSWDecoder takes {sorted(hnsw_keys)}"
            )
        return
    cls = ExactDecoder if decoder == "exact" else HNSWDecoder
    wrong = sorted(set(kwargs) - _accepted(cls))
    if wrong:
        raise ValueError(f"{cls.__name__} does not take {wrong}; it takes {sorted(_accepted(cls))}")


class DecoderFactory:
    """Builds the decoder of a target table and adapts it to the model's predictions.

    This is what :class:`~lightning_contloss.DecodingCallback` calls to get a decoder, so every
    decoder-specific setting lives here, not in the callback. ``kind`` is one of:

    * ``"auto"``, ``"exact"`` or ``"hnsw"``: :func:`make_decoder` with ``decoder_kwargs``
      (HNSW settings such as ``M``, ``ef_construction``, ``num_threads``); HNSW indexes go
      through the on-disk cache of ``cache_dir``. Before ``"auto"`` indexes a table of at least
      :data:`SCREEN_MIN_ROWS` rows that is not in the cache (and no ``ef`` is known yet), it
      builds a graph over a sample of :data:`~lightning_contloss.decoding.screen.SCREEN_ROWS`
      rows (:func:`~lightning_contloss.decoding.screen.hnsw_unreachable_share`) and decodes by
      exact search when more than :data:`SCREEN_MAX_UNREACHABLE` of them are unreachable: on
      random 128-d or 256-d targets at 400k rows that takes 18-35 s instead of an 8-10 minute
      build of an index no faster than exact search;
    * a callable ``(targets, space) -> Decoder``: your own construction;
    * a ready ``Decoder``: used as it is (it must match the targets; it is never rebuilt).

    :meth:`adapt` runs once on the first batch of real predictions: for an HNSW decoder built
    with ``ef=None`` it tunes ``ef`` to ``target_recall`` against exact search
    (:func:`~lightning_contloss.decoding.tune_ef`); the tuned value is reused for every later
    build and saved by :meth:`state_dict`.

    Args:
        kind: what to build (see above).
        ef: HNSW search breadth; ``None`` tunes it on the first predictions.
        target_recall: recall@1 the tuning aims for, in (0, 1].
        cache_dir: index cache folder; ``None`` uses :func:`~lightning_contloss.decoding.cache.default_cache_dir`,
            ``False`` disables the cache (then every DDP rank builds its own index).
        seed: seed of the tuning sample.
        **decoder_kwargs: further arguments of the decoder classes (``M``, ``ef_construction``,
            ``num_threads``, ``chunk_size``, ...); with ``"auto"`` each class gets those it takes.

    Example:
        >>> from lightning_contloss import TargetEmbeddings
        >>> factory = DecoderFactory("exact")
        >>> factory(TargetEmbeddings.random(20, 4), "cosine")
        ExactDecoder(V=20, D=4, space='cosine', returnable=20, device=cpu)
    """

    def __init__(
        self,
        kind: DecoderChoice | Callable[[TargetEmbeddings, str], Decoder] | Decoder = "auto",
        *,
        ef: int | None = None,
        target_recall: float = 0.99,
        cache_dir: str | os.PathLike[str] | Literal[False] | None = None,
        seed: int = 0,
        **decoder_kwargs: Any,
    ) -> None:
        if isinstance(kind, str):
            if kind not in ("auto", "exact", "hnsw"):
                raise ValueError(
                    f"decoder must be 'auto', 'exact', 'hnsw', a Decoder or a callable (targets, space) -> "
                    f"Decoder, got {kind!r}"
                )
        elif not (isinstance(kind, Decoder) or callable(kind)):
            raise ValueError(
                f"decoder must be 'auto', 'exact', 'hnsw', a Decoder or a callable (targets, space) -> Decoder, "
                f"got {type(kind).__name__}"
            )
        if ef is not None:
            ef = int_arg(ef, "ef", 1, rule="an int >= 1 or None (tune it)")
        if (
            not is_real(target_recall)
            or not (0.0 < float(target_recall) <= 1.0)
        ):
            raise ValueError(f"target_recall must be a number in (0, 1], got {target_recall!r}")
        if cache_dir is not False and cache_dir is not None and not isinstance(cache_dir, str | os.PathLike):
            raise ValueError(f"cache_dir must be a folder path, None (default folder) or False, got {cache_dir!r}")
        seed = int_arg(seed, "seed")
        if decoder_kwargs and not isinstance(kind, str):
            raise ValueError(
                f"decoder arguments {sorted(decoder_kwargs)} only apply to 'auto', 'exact' or 'hnsw'; "
                "pass them to your own decoder instead"
            )
        if isinstance(kind, str):
            # Fails now on a misspelt or out-of-range argument, not after a training epoch.
            _check_kwargs(kind, {"ef": 1, **decoder_kwargs} if kind != "exact" else decoder_kwargs)
            for name, minimum in _INT_ARGS.items():
                if decoder_kwargs.get(name) is not None:
                    decoder_kwargs[name] = int_arg(decoder_kwargs[name], name, minimum)
        self.kind = kind
        self.ef = ef
        self.target_recall = float(target_recall)
        self.cache_dir = cache_dir
        self.seed = seed
        self.decoder_kwargs = decoder_kwargs
        self.tuned_ef: int | None = None
        # "auto" only: tuning found no ef reaching target_recall, so exact search is used instead.
        self.exact_fallback = False
        # "auto" only: the table passed the HNSW screen, so no process screens it again.
        self.screened = False
        self._adapted: Decoder | None = None

    def __repr__(self) -> str:
        kind = self.kind if isinstance(self.kind, str) else type(self.kind).__name__
        fallback = ", exact_fallback=True" if self.exact_fallback else ""
        return f"DecoderFactory({kind!r}, ef={self.ef}, tuned_ef={self.tuned_ef}{fallback})"

    @property
    def shares_cache(self) -> bool:
        """Whether builds go through an on-disk cache that other processes can load from."""
        return isinstance(self.kind, str) and self.kind != "exact" and self.cache_dir is not False

    @property
    def may_screen(self) -> bool:
        """Whether a build may screen its table first: ``"auto"``, with no ``ef`` and nothing decided yet."""
        undecided = not (self.exact_fallback or self.screened) and self.ef is None and self.tuned_ef is None
        return isinstance(self.kind, str) and self.kind == "auto" and undecided

    def _cache_folder(self) -> str | os.PathLike[str] | None:
        if self.cache_dir is False:
            return None
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    def __call__(self, targets: TargetEmbeddings, space: str) -> Decoder:
        """Build (or load from the cache, or return the given) decoder for ``targets`` in ``space``."""
        if isinstance(self.kind, str):
            if self.kind == "auto":
                self.screen(targets, space)
                if self.exact_fallback:
                    return make_decoder(targets, space, "exact", **self._exact_kwargs())
            kwargs = dict(self.decoder_kwargs)
            if self.kind != "exact":
                kwargs.setdefault("ef", self.ef or self.tuned_ef or DEFAULT_EF)
                kwargs.setdefault("cache_dir", self._cache_folder())
            return make_decoder(targets, space, self.kind, **kwargs)
        decoder = self.kind if isinstance(self.kind, Decoder) else self.kind(targets, space)
        check_decoder(decoder, targets, space)
        return decoder

    def _exact_kwargs(self) -> dict[str, Any]:
        """The decoder arguments exact search takes (``exclude``, ``chunk_size``, ``query_block``)."""
        keys = _accepted(ExactDecoder)
        return {k: v for k, v in self.decoder_kwargs.items() if k in keys}

    def screen(self, targets: TargetEmbeddings, space: str) -> None:
        """Decide, before any index is built, whether ``"auto"`` should index ``targets`` with HNSW at all.

        Runs once (while :attr:`may_screen`). For a CPU table the V·D rule sends to HNSW, with
        at least :data:`SCREEN_MIN_ROWS` returnable rows and no index of it in the cache (a load
        is cheap, and a run before decided), it builds a graph over a sample of
        :data:`~lightning_contloss.decoding.screen.SCREEN_ROWS` rows with the full build's
        settings; when more than :data:`SCREEN_MAX_UNREACHABLE` of them are unreachable, the
        factory switches to exact search (``exact_fallback``), with a warning. Otherwise it
        marks the table ``screened``. Either way the decision is in :meth:`state_dict`, so
        :class:`~lightning_contloss.DecodingCallback` lets DDP rank 0 screen and broadcast it.

        Args:
            targets: the table about to be indexed.
            space: the loss's decode space.
        """
        if not self.may_screen:
            return
        self.screened = True  # decided from here on, whatever the outcome below
        keys = ("M", "ef_construction", "seed", "deterministic", "reach_check", "exclude")
        build = {k: self.decoder_kwargs[k] for k in keys if k in self.decoder_kwargs}
        returnable = int(resolve_table(targets, space, build.get("exclude")).returnable.sum())
        if _auto_picks_exact(targets.weight) or returnable < SCREEN_MIN_ROWS:
            return
        folder = self.decoder_kwargs.get("cache_dir", self._cache_folder())
        if folder is not None and HNSWDecoder.in_cache(targets, space, cache_dir=folder, **build):
            return
        # A deterministic build runs on one thread; so does its screen, so reruns decide alike.
        threads = 1 if build.get("deterministic") else self.decoder_kwargs.get("num_threads") or available_cpus()
        start = time.perf_counter()
        graph_args = {k: build[k] for k in ("M", "ef_construction", "exclude") if k in build}
        share = hnsw_unreachable_share(
            targets, space, rows=SCREEN_ROWS, seed=self.seed, num_threads=threads, **graph_args
        )
        log.info(
            "HNSW screen: %.2f%% of %d sampled rows unreachable (%.1f s)",
            100 * share,
            min(SCREEN_ROWS, returnable),
            time.perf_counter() - start,
        )
        if share > SCREEN_MAX_UNREACHABLE:
            self.screened = False
            self._fall_back(
                f"an HNSW graph over {min(SCREEN_ROWS, returnable):,} sampled rows of the {returnable:,}-row table "
                f"cannot reach {share:.2%} of them (> {SCREEN_MAX_UNREACHABLE:.1%}: high-dimensional rows without "
                "structure, such as random targets, are HNSW's worst case, and a full index would answer no faster "
                "than exact search)"
            )

    def adapt(self, decoder: Decoder, queries: Tensor, targets: TargetEmbeddings | None = None) -> bool:
        """Fit ``decoder`` to real predictions ``queries [N, D]``: tune HNSW's ``ef`` once.

        The first call with a tunable decoder and ``ef=None`` tunes it; later builds start from
        the tuned value, and later calls set it on rebuilt decoders. With ``"auto"`` the factory
        then switches to exact search, and returns True (build the decoder again), when HNSW
        is the wrong choice for these predictions: no ``ef`` reaches ``target_recall`` (it
        happens on an untrained model's look-alike predictions), or, given ``targets``, exact
        search answers a sample of the queries faster than HNSW at its smallest candidate ``ef``
        (then tuning is skipped) or at the tuned ``ef`` (model
        predictions sit between targets, where HNSW needs a far larger ``ef`` than on noisy
        table rows, so the V·D rule of ``make_decoder`` can pick HNSW where exact search wins).

        Args:
            decoder: the decoder built by this factory.
            queries: ``[N, D]`` predictions of the model.
            targets: the table ``decoder`` covers, to time exact search against HNSW; ``None`` skips that.

        Returns:
            whether the caller should build its decoder again (the factory switched to exact search).
        """
        if not isinstance(decoder, HNSWDecoder) or self.ef is not None or decoder is self._adapted:
            return False
        if self.tuned_ef is None:
            exact = None
            if self.kind == "auto" and targets is not None:
                exact = make_decoder(targets, decoder.space, "exact")
            if exact is not None:
                # HNSW is fastest at its smallest ef; if exact search beats even that, tuning cannot help.
                saved = decoder.ef
                decoder.ef = min(DEFAULT_EF_CANDIDATES)
                fastest, exact_qps = _query_rates(decoder, exact, queries)
                decoder.ef = saved
                if exact_qps > fastest:
                    return self._fall_back(
                        f"exact search answers {exact_qps:,.0f} queries/s, HNSW {fastest:,.0f} even at "
                        f"ef={min(DEFAULT_EF_CANDIDATES)} on these predictions"
                    )
            self.tuned_ef = tune_ef(decoder, queries, target_recall=self.target_recall, seed=self.seed)
            best = max(decoder.tuning.values(), default=1.0)
            reason = None
            if self.kind == "auto" and best < self.target_recall:
                reason = f"HNSW reached recall@1 {best:.4f} < {self.target_recall:.3f} at its best ef={self.tuned_ef}"
            elif exact is not None:
                hnsw_qps, exact_qps = _query_rates(decoder, exact, queries)
                if exact_qps > hnsw_qps:
                    reason = (
                        f"exact search answers {exact_qps:,.0f} queries/s against HNSW's {hnsw_qps:,.0f} at the tuned "
                        f"ef={self.tuned_ef}"
                    )
            if reason is not None:
                return self._fall_back(reason + " on these predictions")
            log.info("tuned HNSW ef=%d for recall@1 >= %.3f", self.tuned_ef, self.target_recall)
        else:
            decoder.ef = self.tuned_ef
        self._adapted = decoder
        return False

    def _fall_back(self, reason: str) -> bool:
        log.warning("%s; decoding by exact search (decoder='hnsw' keeps HNSW)", reason)
        self.tuned_ef = None
        self.exact_fallback = True
        self._adapted = None
        return True

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the tuned ``ef``; whether "auto" fell back to exact search, or passed the screen."""
        return {"tuned_ef": self.tuned_ef, "exact_fallback": self.exact_fallback, "screened": self.screened}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        tuned = state.get("tuned_ef")
        if tuned is not None and (isinstance(tuned, bool) or not isinstance(tuned, int) or tuned < 1):
            raise ValueError(f"the checkpoint's tuned_ef must be an int >= 1 or None, got {tuned!r}")
        fallback = state.get("exact_fallback", False)
        if not isinstance(fallback, bool):
            raise ValueError(f"the checkpoint's exact_fallback must be True or False, got {fallback!r}")
        screened = state.get("screened", False)
        if not isinstance(screened, bool):
            raise ValueError(f"the checkpoint's screened must be True or False, got {screened!r}")
        self.tuned_ef = tuned
        self.exact_fallback = fallback
        self.screened = screened
        self._adapted = None


def _query_rates(hnsw: Decoder, exact: Decoder, queries: Tensor, sample: int = 1024) -> tuple[float, float]:
    # Queries/s of both decoders on the same sample, each timed on its second pass (the first warms caches).
    q = queries[:sample]
    rates = []
    for dec in (hnsw, exact):
        dec.query(q[:64], 1)
        start = time.perf_counter()
        dec.query(q, 1)
        rates.append(q.shape[0] / max(time.perf_counter() - start, 1e-9))
    return rates[0], rates[1]


def check_decoder(decoder: object, targets: TargetEmbeddings, space: str) -> None:
    """Raise unless ``decoder`` is a Decoder over ``targets`` (same V, D and values) ranking by ``space``.

    Example:
        >>> from lightning_contloss import TargetEmbeddings
        >>> t = TargetEmbeddings.random(10, 4)
        >>> check_decoder(ExactDecoder(t.weight), t, "cosine")  # matches: returns None
        >>> check_decoder(ExactDecoder(t.weight[:8]), t, "cosine")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: the decoder covers 8 ids of dim 4 but the targets have V=10, D=4; build it from the model's ...
    """
    if not isinstance(decoder, Decoder):
        raise ValueError(
            f"a decoder must offer query(x, k), space, dim, table, returnable and len(); got {type(decoder).__name__}"
        )
    if len(decoder) != len(targets) or decoder.dim != targets.dim:
        raise ValueError(
            f"the decoder covers {len(decoder)} ids of dim {decoder.dim} but the targets have V={len(targets)}, "
            f"D={targets.dim}; build it from the model's continuous_targets"
        )
    if decoder.space != space:
        raise ValueError(
            f"the decoder ranks by {decoder.space!r} but the loss decodes by {space!r}; build it with space={space!r}"
        )
    table = decoder.table.detach()
    if not torch.equal(table.cpu(), targets.weight.detach().cpu().to(table.dtype)):
        raise ValueError(
            "the decoder was built from another table than the model's continuous_targets (same shape, other "
            "values); rebuild it from the current targets"
        )
