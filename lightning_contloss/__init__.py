"""lightning-contloss: continuous-output heads for PyTorch Lightning."""

from lightning_contloss import functional
from lightning_contloss.callbacks import HNSWDecodingCallback
from lightning_contloss.decoding import (
    ExactDecoder,
    HNSWDecoder,
    RerankedDecoder,
    beam_search,
    greedy_decode,
    make_decoder,
)
from lightning_contloss.heads import EmbeddingRegressionHead, replace_softmax_head
from lightning_contloss.mixin import ContinuousOutputMixin
from lightning_contloss.targets import Coverage, TargetEmbeddings

__version__ = "0.1.0"

__all__ = [
    "ContinuousOutputMixin",
    "Coverage",
    "EmbeddingRegressionHead",
    "ExactDecoder",
    "HNSWDecoder",
    "HNSWDecodingCallback",
    "RerankedDecoder",
    "TargetEmbeddings",
    "__version__",
    "beam_search",
    "functional",
    "greedy_decode",
    "make_decoder",
    "replace_softmax_head",
]
