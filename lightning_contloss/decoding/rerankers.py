"""Re-ranking rules fitted once per epoch: CSLS hubness correction and a word-frequency prior."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor

from lightning_contloss._arguments import int_arg, is_real
from lightning_contloss.decoding.base import Decoder
from lightning_contloss.decoding.rerank import RerankedDecoder

__all__ = ["CSLSReranking", "EpochStatistics", "PriorReranking", "Reranking"]

# Predictions CSLS's hubness term is estimated on (cost: this many × V similarities).
CSLS_SAMPLE_TOKENS = 4096
# Prior weight when κ̂ = 0: the predictions say nothing about the word, so the prior decides.
_NO_EVIDENCE_WEIGHT = 1e3


@dataclass
class EpochStatistics:
    """What a re-ranking rule may learn from this epoch's predictions.

    Attributes:
        queries: ``[N, D]`` the epoch's first predictions.
        kappa: returns κ̂, the vMF concentration fitted to the predictions (computed on first call).
        unigram_counts: ``[V]`` word counts of the training data, when the datamodule has them.
    """

    queries: Tensor
    kappa: Callable[[], float]
    unigram_counts: Tensor | None = None


@runtime_checkable
class Reranking(Protocol):
    """A rule that turns a base decoder into a :class:`RerankedDecoder` fitted to the epoch's predictions."""

    candidates: int

    def fit(self, base: Decoder, stats: EpochStatistics) -> RerankedDecoder: ...


def _check_candidates(candidates: int) -> int:
    return int_arg(candidates, "candidates", 1)


class CSLSReranking:
    """CSLS: re-rank the ``candidates`` nearest ids by ``sim − r_w / 2`` (see :meth:`RerankedDecoder.csls`).

    ``r_w``, the mean similarity of target ``w`` to its ``k`` nearest predictions, is estimated
    on up to 4096 of the epoch's predictions. It counters collapse onto frequent words.

    Args:
        k: CSLS neighbourhood size.
        candidates: neighbours re-ranked per token.

    Example:
        >>> import torch
        >>> from lightning_contloss.decoding import ExactDecoder
        >>> stats = EpochStatistics(torch.randn(64, 4), kappa=lambda: 1.0)
        >>> CSLSReranking(k=5).fit(ExactDecoder(torch.randn(30, 4)), stats).candidates
        32
    """

    def __init__(self, k: int = 10, candidates: int = 32) -> None:
        self.k = int_arg(k, "k (the CSLS neighbourhood)", 1)
        self.candidates = _check_candidates(candidates)

    def __repr__(self) -> str:
        return f"CSLSReranking(k={self.k}, candidates={self.candidates})"

    def fit(self, base: Decoder, stats: EpochStatistics) -> RerankedDecoder:
        """The CSLS decoder for this epoch's predictions."""
        return RerankedDecoder.csls(base, stats.queries[:CSLS_SAMPLE_TOKENS], k=self.k, candidates=self.candidates)


class PriorReranking:
    """A frequency prior: re-rank the ``candidates`` nearest ids by ``sim + β·log p(w)``.

    ``p`` is the add-one unigram of ``counts`` (default: the datamodule's ``unigram_counts``),
    ``β = weight`` or, when ``weight`` is ``None``, ``1/κ̂``: the Bayes rule under a vMF
    likelihood ``p(ê | w) ∝ exp(κ·cos(ê, e_w))``. It helps where rare words crowd the space
    near the predictions (GloVe's 400k words), not on a 10k vocabulary with random targets.

    Args:
        counts: ``[V]`` non-negative word counts; ``None`` reads them from the epoch.
        weight: β >= 0; ``None`` uses ``1/κ̂``.
        candidates: neighbours re-ranked per token.

    Example:
        >>> import torch
        >>> from lightning_contloss.decoding import ExactDecoder
        >>> rule = PriorReranking(counts=torch.tensor([100.0, 1.0, 1.0]), weight=1.0, candidates=3)
        >>> dec = rule.fit(ExactDecoder(torch.eye(3)), EpochStatistics(torch.eye(3), kappa=lambda: 1.0))
        >>> dec.query(torch.tensor([[0.2, 1.0, 0.0]]), k=1)[0].tolist()  # id 1 is nearest, id 0 far more frequent
        [[0]]
    """

    def __init__(self, counts: Tensor | None = None, weight: float | None = None, candidates: int = 32) -> None:
        numeric = is_real(weight)
        if weight is not None and not (numeric and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight (β of the prior) must be a finite number >= 0 or None, got {weight!r}")
        if counts is not None and (
            not isinstance(counts, Tensor) or counts.dim() != 1 or bool((counts < 0).any())
        ):
            raise ValueError("counts must be a [V] tensor of non-negative word counts")
        self.counts = counts
        self.weight = weight
        self.candidates = _check_candidates(candidates)

    def __repr__(self) -> str:
        counts = "from the datamodule" if self.counts is None else f"[{len(self.counts)}]"
        return f"PriorReranking(counts={counts}, weight={self.weight}, candidates={self.candidates})"

    def fit(self, base: Decoder, stats: EpochStatistics) -> RerankedDecoder:
        """The prior decoder, with β from ``weight`` or this epoch's κ̂."""
        counts = self.counts if self.counts is not None else stats.unigram_counts
        if counts is None:
            raise ValueError(
                "hubness='prior' needs word counts: pass PriorReranking(counts=...) "
                "or use a datamodule with a unigram_counts property (as the example datamodules have)"
            )
        weight = self.weight
        if weight is None:
            kappa = stats.kappa()
            weight = 1.0 / kappa if kappa > 0 else _NO_EVIDENCE_WEIGHT
        return RerankedDecoder.prior(base, counts, weight, candidates=self.candidates)
