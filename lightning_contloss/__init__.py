"""lightning-contloss: continuous-output heads for PyTorch Lightning."""

from lightning_contloss.heads import EmbeddingRegressionHead, replace_softmax_head
from lightning_contloss.targets import Coverage, TargetEmbeddings

__version__ = "0.1.0"

__all__ = [
    "Coverage",
    "EmbeddingRegressionHead",
    "TargetEmbeddings",
    "__version__",
    "replace_softmax_head",
]
