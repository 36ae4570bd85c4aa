"""Decoding: turn predicted embeddings back into token ids (exact or HNSW k-NN, greedy and beam search).

The index cache (``IndexCache``, ``default_cache_dir``, ``CACHE_ENV_VAR``) lives in
:mod:`lightning_contloss.decoding.cache`.
"""

from lightning_contloss.decoding.auto_policy import AutoPolicy
from lightning_contloss.decoding.base import Decoder, LogPartitionDecoder, is_exhaustive, log_partition_decoder
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
    "LogPartitionDecoder",
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
    "is_exhaustive",
    "knn_recall",
    "log_partition_decoder",
    "make_decoder",
    "register_decoder",
    "reorder_state",
    "tune_ef",
]
