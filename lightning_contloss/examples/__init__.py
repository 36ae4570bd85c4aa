"""Example models and data for language modelling: small, readable pieces meant to be copied.

``PTBDataModule``/``TextDataModule`` serve next-token windows, ``CausalTransformerLM`` is the
shared model body, and ``SoftmaxLM`` is the full-softmax baseline that continuous-output
models are compared against; ``ContinuousLM`` is its continuous-output twin.
"""

from lightning_contloss.examples.continuous_lm import ContinuousLM
from lightning_contloss.examples.data import (
    LMDataModule,
    LMWindows,
    PTBDataModule,
    TextDataModule,
    Vocabulary,
    lines_to_tokens,
)
from lightning_contloss.examples.optim import WarmupSchedule, warmup_adamw
from lightning_contloss.examples.softmax_lm import SoftmaxLM
from lightning_contloss.examples.transformer_lm import CausalTransformerLM

__all__ = [
    "CausalTransformerLM",
    "ContinuousLM",
    "LMDataModule",
    "LMWindows",
    "PTBDataModule",
    "SoftmaxLM",
    "TextDataModule",
    "Vocabulary",
    "WarmupSchedule",
    "lines_to_tokens",
    "warmup_adamw",
]
