"""Building decoders: ``make_decoder`` builds a decoder kind by name, ``DecoderFactory`` builds and adapts them."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_contloss._arguments import int_arg, is_real
from lightning_contloss.decoding.auto_policy import EXACT, INDEX, AutoPolicy
from lightning_contloss.decoding.base import Decoder, TableLike, check_space, resolve_table
from lightning_contloss.decoding.cache import default_cache_dir
from lightning_contloss.decoding.hnsw import DEFAULT_EF_CANDIDATES, HNSWDecoder, available_cpus, tune_ef
from lightning_contloss.decoding.registry import AUTO, decoder_class, decoder_kinds, decoder_options
from lightning_contloss.targets import TargetEmbeddings

__all__ = ["DEFAULT_EF", "DecoderFactory", "check_decoder", "make_decoder"]

log = logging.getLogger(__name__)

# HNSW search breadth before (or without) tuning.
DEFAULT_EF = 64
# Integer decoder arguments and their smallest valid value (None, where allowed, means "default").
_INT_ARGS = {"M": 2, "ef_construction": 1, "num_threads": 1, "chunk_size": 1, "query_block": 1}
# The build arguments an HNSW screen must share with the full build, so both decide alike.
_BUILD_KEYS = ("M", "ef_construction", "seed", "deterministic", "reach_check", "exclude")


def _choices(kind: str) -> tuple[str, ...]:
    """The registered kinds ``kind`` may build: ``"auto"`` chooses between exact search and HNSW."""
    return (EXACT, INDEX) if kind == AUTO else (kind,)


def _options(kind: str) -> frozenset[str]:
    """The decoder arguments ``kind`` takes (for ``"auto"``: those of either class it may build)."""
    return frozenset().union(*(decoder_options(choice) for choice in _choices(kind)))


def make_decoder(
    table: TableLike,
    space: str = "cosine",
    decoder: str = AUTO,
    *,
    exact_max_elements: int | None = None,
    **kwargs: Any,
) -> Decoder:
    """Build the decoder kind ``decoder`` over ``table``.

    ``"auto"`` picks :class:`ExactDecoder` when the table is on an accelerator (a matrix
    product over the whole vocabulary is cheap there and needs no index) or when
    ``V · D <= exact_max_elements`` (on a CPU, exact search is then about as fast per query
    as HNSW and needs no build); otherwise :class:`HNSWDecoder` (the V·D rule of
    :class:`~lightning_contloss.decoding.auto_policy.AutoPolicy`). With ``"auto"`` each class
    gets only the keyword arguments it takes, so HNSW settings can be passed unconditionally.

    Args:
        table: a ``TargetEmbeddings`` or a ``[V, D]`` tensor.
        space: the loss's decode space, ``"cosine"``, ``"ip"`` or ``"l2"``.
        decoder: ``"auto"`` or a registered kind (:func:`~lightning_contloss.decoding.decoder_kinds`:
            ``"exact"``, ``"hnsw"``, and any added with :func:`~lightning_contloss.decoding.register_decoder`).
        exact_max_elements: the V·D threshold of the ``"auto"`` rule (default
            :data:`~lightning_contloss.decoding.auto_policy.EXACT_MAX_ELEMENTS`).
        **kwargs: passed to the decoder's constructor (e.g. ``ef``, ``M``, ``cache_dir``, ``chunk_size``).

    Example:
        >>> type(make_decoder(torch.eye(16), "cosine")).__name__
        'ExactDecoder'
        >>> type(make_decoder(torch.eye(16), "cosine", exact_max_elements=10, num_threads=1)).__name__
        'HNSWDecoder'
    """
    space = check_space(space)
    _check_kwargs(decoder, kwargs)
    if decoder == AUTO:
        policy = AutoPolicy() if exact_max_elements is None else AutoPolicy(exact_max_elements=exact_max_elements)
        decoder = policy.kind(resolve_table(table, space).weight)
        kwargs = {key: value for key, value in kwargs.items() if key in decoder_options(decoder)}
    built: Decoder = decoder_class(decoder)(table, space, **kwargs)
    return built


def _check_kwargs(kind: str, kwargs: dict[str, Any]) -> None:
    """Raise unless ``kind`` is a decoder kind and ``kwargs`` are arguments of the class(es) it may build."""
    if kind not in decoder_kinds():
        raise ValueError(f"decoder must be one of {', '.join(map(repr, decoder_kinds()))}, got {kind!r}")
    unknown = sorted(set(kwargs) - _options(kind))
    if not unknown:
        return
    if kind != AUTO:
        raise ValueError(f"{decoder_class(kind).__name__} does not take {unknown}; it takes {sorted(_options(kind))}")
    takes = "; ".join(f"{decoder_class(c).__name__} takes {sorted(decoder_options(c))}" for c in _choices(kind))
    raise ValueError(f"make_decoder got unknown arguments {unknown}; {takes}")


def _check_kind(kind: object, ef: int | None, policy: object, decoder_kwargs: dict[str, Any]) -> None:
    """Raise unless ``kind`` is a decoder kind, a Decoder or a callable, and the other arguments suit it."""
    named = isinstance(kind, str)
    if (named and kind not in decoder_kinds()) or not (named or isinstance(kind, Decoder) or callable(kind)):
        raise ValueError(
            f"decoder must be {', '.join(map(repr, decoder_kinds()))}, a Decoder or a callable (targets, space) "
            f"-> Decoder, got {kind!r}"
        )
    if policy is not None and (kind != AUTO or not isinstance(policy, AutoPolicy)):
        raise ValueError(f"policy must be an AutoPolicy, and only decoder='auto' takes one; got {policy!r}")
    if not isinstance(kind, str):
        if decoder_kwargs:
            raise ValueError(
                f"decoder arguments {sorted(decoder_kwargs)} only apply to a decoder kind given by name; "
                "pass them to your own decoder instead"
            )
        return
    # Fails now on a misspelt or out-of-range argument, not after a training epoch.
    if ef is not None and "ef" not in _options(kind):
        raise ValueError(f"{decoder_class(kind).__name__} has no ef (HNSW's search breadth); drop ef")
    _check_kwargs(kind, decoder_kwargs)


class DecoderFactory:
    """Builds the decoder of a target table and adapts it to the model's predictions.

    This is what :class:`~lightning_contloss.DecodingCallback` calls to get a decoder, so every
    decoder-specific setting lives here, not in the callback. ``kind`` is one of:

    * a registered kind (:func:`~lightning_contloss.decoding.decoder_kinds`): ``"exact"``,
      ``"hnsw"``, or one added with :func:`~lightning_contloss.decoding.register_decoder`, built by
      :func:`make_decoder` with ``decoder_kwargs`` (HNSW settings such as ``M``,
      ``ef_construction``, ``num_threads``); a kind that takes ``ef`` gets ``ef``, one that takes
      ``cache_dir`` builds through the on-disk cache of ``cache_dir``;
    * ``"auto"``: exact search or HNSW, as ``policy`` (an
      :class:`~lightning_contloss.decoding.auto_policy.AutoPolicy`) decides. Before indexing a
      large CPU table that is not in the cache (and no ``ef`` is known yet), it screens a graph
      over a sample of the rows (:meth:`screen`) and decodes by exact search when too many of
      them are unreachable: on random 128-d or 256-d targets at 400k rows that takes 18-35 s
      instead of an 8-10 minute build of an index no faster than exact search;
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
        policy: the rules of ``"auto"`` (default ``AutoPolicy()``); ``"auto"`` only.
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
        kind: str | Callable[[TargetEmbeddings, str], Decoder] | Decoder = AUTO,
        *,
        ef: int | None = None,
        target_recall: float = 0.99,
        cache_dir: str | os.PathLike[str] | Literal[False] | None = None,
        seed: int = 0,
        policy: AutoPolicy | None = None,
        **decoder_kwargs: Any,
    ) -> None:
        if ef is not None:
            ef = int_arg(ef, "ef", 1, rule="an int >= 1 or None (tune it)")
        for name, minimum in _INT_ARGS.items():
            if decoder_kwargs.get(name) is not None:
                decoder_kwargs[name] = int_arg(decoder_kwargs[name], name, minimum)
        _check_kind(kind, ef, policy, decoder_kwargs)
        if (
            not is_real(target_recall)
            or not (0.0 < float(target_recall) <= 1.0)
        ):
            raise ValueError(f"target_recall must be a number in (0, 1], got {target_recall!r}")
        if cache_dir is not False and cache_dir is not None and not isinstance(cache_dir, str | os.PathLike):
            raise ValueError(f"cache_dir must be a folder path, None (default folder) or False, got {cache_dir!r}")
        seed = int_arg(seed, "seed")
        self.kind = kind
        self.ef = ef
        self.target_recall = float(target_recall)
        self.cache_dir = cache_dir
        self.seed = seed
        self.policy = policy if policy is not None else AutoPolicy()
        self.decoder_kwargs = decoder_kwargs
        self.tuned_ef: int | None = None
        # "auto" only: exact search turned out the better choice (screen, speed or recall), so it is used.
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
        return isinstance(self.kind, str) and "cache_dir" in _options(self.kind) and self.cache_dir is not False

    @property
    def may_screen(self) -> bool:
        """Whether a build may screen its table first: ``"auto"``, with no ``ef`` and nothing decided yet."""
        undecided = not (self.exact_fallback or self.screened) and self.ef is None and self.tuned_ef is None
        return self.kind == AUTO and undecided

    def _cache_folder(self) -> str | os.PathLike[str] | None:
        if self.cache_dir is False:
            return None
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    def __call__(self, targets: TargetEmbeddings, space: str) -> Decoder:
        """Build (or load from the cache, or return the given) decoder for ``targets`` in ``space``."""
        if not isinstance(self.kind, str):
            decoder = self.kind if isinstance(self.kind, Decoder) else self.kind(targets, space)
            check_decoder(decoder, targets, space)
            return decoder
        kind = self.kind
        if kind == AUTO:
            self.screen(targets, space)
            kind = EXACT if self.exact_fallback else self.policy.kind(targets.weight)
        options = decoder_options(kind)
        kwargs = {key: value for key, value in self.decoder_kwargs.items() if key in options}
        if "ef" in options:
            kwargs.setdefault("ef", self.ef or self.tuned_ef or DEFAULT_EF)
        if "cache_dir" in options:
            kwargs.setdefault("cache_dir", self._cache_folder())
        return make_decoder(targets, space, kind, **kwargs)

    def screen(self, targets: TargetEmbeddings, space: str) -> None:
        """Decide, before any index is built, whether ``"auto"`` should index ``targets`` with HNSW at all.

        Runs once (while :attr:`may_screen`). For a table the policy screens
        (:meth:`AutoPolicy.screens <lightning_contloss.decoding.auto_policy.AutoPolicy.screens>`:
        on a CPU, sent to HNSW by the V·D rule, with many returnable rows) and no index of it in
        the cache (a load is cheap, and a run before decided), it builds a graph over a sample of
        the rows with the full build's settings; when the policy refuses HNSW on it, the factory
        switches to exact search (``exact_fallback``), with a warning. Otherwise it marks the
        table ``screened``. Either way the decision is in :meth:`state_dict`, so
        :class:`~lightning_contloss.DecodingCallback` lets DDP rank 0 screen and broadcast it.

        Args:
            targets: the table about to be indexed.
            space: the loss's decode space.
        """
        if not self.may_screen:
            return
        self.screened = True  # decided from here on, whatever the outcome below
        build = {key: self.decoder_kwargs[key] for key in _BUILD_KEYS if key in self.decoder_kwargs}
        returnable = int(resolve_table(targets, space, build.get("exclude")).returnable.sum())
        if not self.policy.screens(targets.weight, returnable):
            return
        folder = self._cache_folder()
        if folder is not None and HNSWDecoder.in_cache(targets, space, cache_dir=folder, **build):
            return
        # A deterministic build runs on one thread; so does its screen, so reruns decide alike.
        threads = 1 if build.get("deterministic") else self.decoder_kwargs.get("num_threads") or available_cpus()
        graph = {key: build[key] for key in ("M", "ef_construction", "exclude") if key in build}
        reason = self.policy.screen(
            targets, space, returnable=returnable, seed=self.seed, num_threads=threads, **graph
        )
        if reason is not None:
            self.screened = False
            self._fall_back(reason)

    def adapt(self, decoder: Decoder, queries: Tensor, targets: TargetEmbeddings | None = None) -> bool:
        """Fit ``decoder`` to real predictions ``queries [N, D]``: tune HNSW's ``ef`` once.

        The first call with a tunable decoder and ``ef=None`` tunes it; later builds start from
        the tuned value, and later calls set it on rebuilt decoders. With ``"auto"`` the factory
        then switches to exact search, and returns True (build the decoder again), when the
        policy gives HNSW up on these predictions: no ``ef`` reaches ``target_recall`` (it
        happens on an untrained model's look-alike predictions), or, given ``targets``, exact
        search answers a sample of the queries faster than HNSW at its smallest candidate ``ef``
        (then tuning is skipped) or at the tuned ``ef`` (model predictions sit between targets,
        where HNSW needs a far larger ``ef`` than on noisy table rows, so the V·D rule can pick
        HNSW where exact search wins).

        Args:
            decoder: the decoder built by this factory.
            queries: ``[N, D]`` predictions of the model.
            targets: the table ``decoder`` covers, to time exact search against HNSW; ``None`` skips that.

        Returns:
            whether the caller should build its decoder again (the factory switched to exact search).
        """
        if not isinstance(decoder, HNSWDecoder) or self.ef is not None or decoder is self._adapted:
            return False
        if self.tuned_ef is not None:
            decoder.ef = self.tuned_ef
            self._adapted = decoder
            return False
        exact = make_decoder(targets, decoder.space, EXACT) if self.kind == AUTO and targets is not None else None
        if exact is not None:
            # HNSW is fastest at its smallest ef; if exact search beats even that, tuning cannot help.
            saved, decoder.ef = decoder.ef, min(DEFAULT_EF_CANDIDATES)
            hnsw_qps, exact_qps = _query_rates(decoder, exact, queries)
            reason = self.policy.speed_verdict(hnsw_qps=hnsw_qps, exact_qps=exact_qps, ef=decoder.ef, tuned=False)
            decoder.ef = saved
            if reason is not None:
                return self._fall_back(reason + " on these predictions")
        self.tuned_ef = tune_ef(decoder, queries, target_recall=self.target_recall, seed=self.seed)
        reason = None
        if self.kind == AUTO:
            best = max(decoder.tuning.values(), default=1.0)
            reason = self.policy.recall_verdict(best, self.target_recall, self.tuned_ef)
        if reason is None and exact is not None:
            hnsw_qps, exact_qps = _query_rates(decoder, exact, queries)
            reason = self.policy.speed_verdict(hnsw_qps=hnsw_qps, exact_qps=exact_qps, ef=self.tuned_ef, tuned=True)
        if reason is not None:
            return self._fall_back(reason + " on these predictions")
        log.info("tuned HNSW ef=%d for recall@1 >= %.3f", self.tuned_ef, self.target_recall)
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
        >>> from lightning_contloss import ExactDecoder, TargetEmbeddings
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
