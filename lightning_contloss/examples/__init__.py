"""Example models and data for language modelling and translation: small, readable pieces meant to be copied.

``PTBDataModule``/``TextDataModule`` serve next-token windows, ``CausalTransformerLM`` is the
shared model body, and ``SoftmaxLM`` is the full-softmax baseline that continuous-output
models are compared against; ``ContinuousLM`` is its continuous-output twin. For translation,
``BibleDataModule``/``TranslationDataModule`` serve padded sentence pairs over word-level or BPE
vocabularies (``SubwordVocabulary``), ``Seq2SeqTransformer`` is the encoder-decoder body, and
``SoftmaxTranslator``/``ContinuousTranslator`` are the twins.
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
from lightning_contloss.examples.seq2seq_transformer import Seq2SeqTransformer
from lightning_contloss.examples.softmax_lm import SoftmaxLM
from lightning_contloss.examples.subword import SubwordVocabulary
from lightning_contloss.examples.transformer_lm import CausalTransformerLM
from lightning_contloss.examples.translation import ContinuousTranslator, SoftmaxTranslator
from lightning_contloss.examples.translation_data import BibleDataModule, TranslationDataModule

__all__ = [
    "BibleDataModule",
    "CausalTransformerLM",
    "ContinuousLM",
    "ContinuousTranslator",
    "LMDataModule",
    "LMWindows",
    "PTBDataModule",
    "Seq2SeqTransformer",
    "SoftmaxLM",
    "SoftmaxTranslator",
    "SubwordVocabulary",
    "TextDataModule",
    "TranslationDataModule",
    "Vocabulary",
    "WarmupSchedule",
    "lines_to_tokens",
    "warmup_adamw",
]
