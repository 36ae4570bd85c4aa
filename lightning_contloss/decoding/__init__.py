"""Decoding: turn predicted embeddings back into token ids (exact or HNSW k-NN, greedy and beam search)."""

from lightning_contloss.decoding.base import Decoder
from lightning_contloss.decoding.cache import CACHE_ENV_VAR, IndexCache, default_cache_dir
from lightning_contloss.decoding.exact import ExactDecoder
from lightning_contloss.decoding.factory import DecoderFactory, check_decoder, make_decoder
from lightning_contloss.decoding.hnsw import DEFAULT_EF_CANDIDATES, HNSWDecoder, auto_ef_construction, tune_ef
from lightning_contloss.decoding.recall import knn_recall
from lightning_contloss.decoding.rerank import RerankedDecoder
from lightning_contloss.decoding.rerankers import CSLSReranking, EpochStatistics, PriorReranking, Reranking
from lightning_contloss.decoding.search import SearchResult, beam_search, greedy_decode

__all__ = [
    "CACHE_ENV_VAR",
    "DEFAULT_EF_CANDIDATES",
    "CSLSReranking",
    "Decoder",
    "DecoderFactory",
    "EpochStatistics",
    "ExactDecoder",
    "HNSWDecoder",
    "IndexCache",
    "PriorReranking",
    "RerankedDecoder",
    "Reranking",
    "SearchResult",
    "auto_ef_construction",
    "beam_search",
    "check_decoder",
    "default_cache_dir",
    "greedy_decode",
    "knn_recall",
    "make_decoder",
    "tune_ef",
]
