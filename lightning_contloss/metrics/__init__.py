"""Evaluation metrics for continuous-output models, as DDP-synced torchmetrics Metrics.

Each metric keeps sum/count states (``dist_reduce_fx="sum"``), so torchmetrics adds them across
processes; each has a functional twin for one-off use (``neighbor_accuracy``, ``decoding_recall``,
``vmf_perplexity``, ``brier_lm``, ``prediction_spread``) in the same file, where the two share one
private update function.
"""

from lightning_contloss.metrics.brier_lm import BrierLM, brier_lm
from lightning_contloss.metrics.decoding_recall import DecodingRecall, decoding_recall
from lightning_contloss.metrics.neighbor_accuracy import NeighborAccuracy, neighbor_accuracy
from lightning_contloss.metrics.prediction_spread import PredictionSpread, prediction_spread
from lightning_contloss.metrics.vmf_perplexity import VMFPerplexity, vmf_perplexity

__all__ = [
    "BrierLM",
    "DecodingRecall",
    "NeighborAccuracy",
    "PredictionSpread",
    "VMFPerplexity",
    "brier_lm",
    "decoding_recall",
    "neighbor_accuracy",
    "prediction_spread",
    "vmf_perplexity",
]
