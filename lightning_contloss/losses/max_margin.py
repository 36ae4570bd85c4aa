"""MaxMarginLoss: a hinge against an informative negative, as a differentiable torchmetrics Metric."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from lightning_contloss.functional._checks import Batch
from lightning_contloss.functional.max_margin import _check_max_margin_loss_args, _max_margin_loss_tokens
from lightning_contloss.functional.scoring import Space
from lightning_contloss.losses.base import ContinuousLoss, Targets
from lightning_contloss.losses.registry import register_loss

__all__ = ["MaxMarginLoss"]


@register_loss("maxmargin")
class MaxMarginLoss(ContinuousLoss):
    """Hinge loss with an informative negative (see :func:`~lightning_contloss.functional.max_margin_loss`).

    Special ids of a bound TargetEmbeddings are never used as negatives. Decodes by cosine.
    The default, the most informative negative of the whole vocabulary, is the one that learns
    on PTB: 2.39× the unigram baseline after 150 steps, where in-batch negatives gave 1.11× and
    1,024 sampled ones collapsed onto 2 words (``benchmarks/results/quality.md``). Its search
    costs ``O(V·D)`` a token, what a softmax's logits cost.

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        margin: the hinge margin.
        negatives: ``"informative"`` (whole vocabulary, chunked), ``"sampled"`` or ``"in_batch"``.
        num_negatives: K for ``negatives="sampled"``.
        chunk_size: rows of the table scored at once in the search.
        generator: random generator for ``negatives="sampled"``.
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> from lightning_contloss.targets import TargetEmbeddings
        >>> loss = MaxMarginLoss(TargetEmbeddings.random(50, 8), negatives="in_batch")
        >>> bool(loss(torch.randn(6, 8), torch.arange(6)) >= 0)
        True
    """

    decode_space: ClassVar[Space] = "cosine"

    def __init__(
        self,
        targets: Targets | None = None,
        *,
        margin: float = 0.5,
        negatives: Literal["informative", "sampled", "in_batch"] = "informative",
        num_negatives: int = 1024,
        chunk_size: int = 2048,
        generator: torch.Generator | None = None,
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        _check_max_margin_loss_args(margin, negatives, num_negatives, chunk_size, generator)
        super().__init__(targets, ignore_index=ignore_index, **kwargs)
        self.margin = margin
        self.negatives = negatives
        self.num_negatives = num_negatives
        self.chunk_size = chunk_size
        self.generator = generator

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        return _max_margin_loss_tokens(
            pred,
            ids,
            table,
            margin=self.margin,
            negatives=self.negatives,
            num_negatives=self.num_negatives,
            chunk_size=self.chunk_size,
            generator=self.generator,
            exclude=self._exclude(),
            ignore_index=self.ignore_index,
        )
