"""InfoNCELoss: InfoNCE with K sampled negatives, as a differentiable torchmetrics Metric."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from lightning_contloss.functional._checks import Batch
from lightning_contloss.functional.info_nce import (
    DEFAULT_NUM_NEGATIVES,
    DEFAULT_TEMPERATURE,
    _check_info_nce_loss_args,
    _info_nce_loss_tokens,
)
from lightning_contloss.functional.scoring import Space
from lightning_contloss.losses.base import ContinuousLoss, Targets
from lightning_contloss.losses.registry import register_loss

__all__ = ["InfoNCELoss"]

# The smallest τ a learned InfoNCE temperature may reach (CLIP caps 1/τ at 100 the same way).
MIN_LEARNED_TEMPERATURE = 0.01


@register_loss("infonce")
class InfoNCELoss(ContinuousLoss):
    """InfoNCE with K negatives shared by a batch (see :func:`~lightning_contloss.functional.info_nce_loss`).

    Its logits are ``cos / temperature``, so it decodes by cosine. Special ids of a bound
    TargetEmbeddings are never used as negatives.

    Args:
        targets: a TargetEmbeddings or ``[V, D]`` tensor; or bind later with :meth:`bind`.
        temperature: τ > 0; with ``learn_temperature`` its starting value.
        learn_temperature: learn τ with the model (CLIP's parametrisation: a parameter
            ``log_temperature``, τ = exp of it, clamped to at least ``MIN_LEARNED_TEMPERATURE``);
            the optimiser sees it through the model's ``parameters()``.
        num_negatives: K.
        sampler: ``"uniform"`` or ``"unigram"``.
        counts: ``[V]`` token counts for ``sampler="unigram"`` (kept as a non-persistent buffer).
        power: exponent applied to ``counts``.
        generator: random generator for the draws.
        ignore_index: target id to skip (padding).
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> from lightning_contloss.targets import TargetEmbeddings
        >>> loss = InfoNCELoss(TargetEmbeddings.random(100, 16), num_negatives=32)
        >>> bool(loss(torch.randn(8, 16), torch.arange(8)) > 0)
        True
        >>> learned = InfoNCELoss(TargetEmbeddings.random(100, 16), num_negatives=32, learn_temperature=True)
        >>> learned(torch.randn(8, 16), torch.arange(8)).backward()
        >>> round(learned.current_temperature, 3), learned.log_temperature.grad is not None
        (0.1, True)
    """

    decode_space: ClassVar[Space] = "cosine"
    counts: Tensor | None

    def __init__(
        self,
        targets: Targets | None = None,
        *,
        temperature: float = DEFAULT_TEMPERATURE,
        learn_temperature: bool = False,
        num_negatives: int = DEFAULT_NUM_NEGATIVES,
        sampler: Literal["uniform", "unigram"] = "uniform",
        counts: Tensor | None = None,
        power: float = 0.75,
        generator: torch.Generator | None = None,
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(learn_temperature, bool):
            raise ValueError(f"learn_temperature must be True or False, got {learn_temperature!r}")
        if counts is not None and not isinstance(counts, Tensor):
            try:  # a list or numpy array of counts is fine too
                counts = torch.as_tensor(counts)
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"counts must be a [V] tensor of token counts, got {type(counts).__name__}") from err
        counts = None if counts is None else counts.detach()
        _check_info_nce_loss_args(temperature, num_negatives, sampler, counts, power, generator)
        super().__init__(targets, ignore_index=ignore_index, **kwargs)
        if learn_temperature and temperature < MIN_LEARNED_TEMPERATURE:
            raise ValueError(
                f"learn_temperature starts from temperature={temperature}, below the floor "
                f"{MIN_LEARNED_TEMPERATURE}; start at or above it"
            )
        self.temperature = temperature
        self.learn_temperature = learn_temperature
        self.num_negatives = num_negatives
        self.sampler = sampler
        self.power = power
        self.generator = generator
        self.register_buffer("counts", counts, persistent=False)
        # A parameter only when learned, so a fixed-τ loss adds nothing to the optimiser or checkpoint.
        self.log_temperature = (
            torch.nn.Parameter(torch.tensor(math.log(temperature))) if learn_temperature else None
        )

    @property
    def current_temperature(self) -> float:
        """τ as the loss uses it now (the learned value when ``learn_temperature``)."""
        value = self._temperature()
        return float(value.detach()) if isinstance(value, Tensor) else value

    def _temperature(self) -> float | Tensor:
        if self.log_temperature is None:
            return self.temperature
        # The floor keeps the logits bounded (CLIP caps its logit scale the same way).
        return self.log_temperature.exp().clamp(min=MIN_LEARNED_TEMPERATURE)

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        return _info_nce_loss_tokens(
            pred,
            ids,
            table,
            temperature=self._temperature(),
            num_negatives=self.num_negatives,
            sampler=self.sampler,
            counts=self.counts,
            power=self.power,
            generator=self.generator,
            exclude=self._exclude(),
            ignore_index=self.ignore_index,
        )
