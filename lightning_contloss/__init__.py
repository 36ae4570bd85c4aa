"""lightning-contloss: continuous-output heads for PyTorch Lightning.

What is exported here, and where the rest lives (the one rule): the top level holds the
objects a user needs to convert a LightningModule and decode its predictions: the target
table, the head, the mixin, the callback, the decoders with their factory, the search
functions and the calibrated distribution (``Calibration``). Families with many members stay in
their own modules and are imported from there: ``lightning_contloss.losses`` (``CosineLoss``,
``VMFLoss``, ...), ``lightning_contloss.metrics`` (``NeighborAccuracy``, ``VMFPerplexity``, ...),
``lightning_contloss.functional`` (the maths, as ``CF``), ``lightning_contloss.decoding``
(re-ranking rules, recall, the cache) and ``lightning_contloss.examples``.
"""

from lightning_contloss import decoding, functional, losses, metrics
from lightning_contloss.calibration import Calibration
from lightning_contloss.callbacks import DecodingCallback
from lightning_contloss.decoding import (
    DecoderFactory,
    ExactDecoder,
    HNSWDecoder,
    RerankedDecoder,
    SearchRules,
    StatefulStep,
    beam_search,
    greedy_decode,
    make_decoder,
)
from lightning_contloss.heads import EmbeddingRegressionHead, swap_softmax_head
from lightning_contloss.integrations.hf_save import load_continuous, save_continuous
from lightning_contloss.mixin import ContinuousOutputMixin
from lightning_contloss.targets import Coverage, TargetEmbeddings

__version__ = "0.1.0"

__all__ = [
    "Calibration",
    "ContinuousOutputMixin",
    "Coverage",
    "DecoderFactory",
    "DecodingCallback",
    "EmbeddingRegressionHead",
    "ExactDecoder",
    "HNSWDecoder",
    "RerankedDecoder",
    "SearchRules",
    "StatefulStep",
    "TargetEmbeddings",
    "__version__",
    "beam_search",
    "decoding",
    "functional",
    "greedy_decode",
    "load_continuous",
    "losses",
    "make_decoder",
    "metrics",
    "save_continuous",
    "swap_softmax_head",
]
