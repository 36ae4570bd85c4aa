"""Decoding: turn predicted embeddings back into token ids (exact or HNSW k-NN, greedy and beam search).

The index cache (``IndexCache``, ``default_cache_dir``, ``CACHE_ENV_VAR``) lives in
:mod:`lightning_contloss.decoding.cache`; importing those names from here still works for one
release, with a ``DeprecationWarning``.
"""

import warnings
from typing import Any

from lightning_contloss.decoding import cache as _cache
from lightning_contloss.decoding.auto_policy import AutoPolicy
from lightning_contloss.decoding.base import Decoder
from lightning_contloss.decoding.eos_bias import EOSBias, calibrate_eos_bias
from lightning_contloss.decoding.exact import ExactDecoder
from lightning_contloss.decoding.factory import DecoderFactory, check_decoder, make_decoder
from lightning_contloss.decoding.hnsw import DEFAULT_EF_CANDIDATES, HNSWDecoder, auto_ef_construction, tune_ef
from lightning_contloss.decoding.recall import knn_recall
from lightning_contloss.decoding.registry import decoder_kinds, register_decoder
from lightning_contloss.decoding.rerank import RerankedDecoder
from lightning_contloss.decoding.rerankers import CSLSReranking, EpochStatistics, PriorReranking, Reranking
from lightning_contloss.decoding.screen import hnsw_unreachable_share
from lightning_contloss.decoding.search import SearchResult, beam_search, greedy_decode
from lightning_contloss.decoding.search_rules import SearchRules
from lightning_contloss.decoding.search_state import StatefulStep, StepRunner, reorder_state

__all__ = [
    "DEFAULT_EF_CANDIDATES",
    "AutoPolicy",
    "CSLSReranking",
    "Decoder",
    "DecoderFactory",
    "EOSBias",
    "EpochStatistics",
    "ExactDecoder",
    "HNSWDecoder",
    "PriorReranking",
    "RerankedDecoder",
    "Reranking",
    "SearchResult",
    "SearchRules",
    "StatefulStep",
    "StepRunner",
    "auto_ef_construction",
    "beam_search",
    "calibrate_eos_bias",
    "check_decoder",
    "decoder_kinds",
    "greedy_decode",
    "hnsw_unreachable_share",
    "knn_recall",
    "make_decoder",
    "register_decoder",
    "reorder_state",
    "tune_ef",
]

# Names this package exported before they moved to decoding.cache; removed in the next release.
_MOVED_TO_CACHE = ("CACHE_ENV_VAR", "IndexCache", "default_cache_dir")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_CACHE:
        warnings.warn(
            f"lightning_contloss.decoding.{name} is deprecated and goes in the next release; "
            f"import it from lightning_contloss.decoding.cache",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_cache, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
