"""LikelihoodScorer: the sampled tokens of each buffer, scored for ``vmf_ppl`` and BrierLM."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from lightning_contloss.callbacks.kappa import loss_concentration
from lightning_contloss.callbacks.sampling import Pick, likelihood_budget, pick_likelihood_rows
from lightning_contloss.functional.vmf_distribution import vmf_sample
from lightning_contloss.targets import TargetEmbeddings

__all__ = ["SKIP_ID", "LikelihoodScorer", "Picked", "skip_id"]

# What the likelihood metrics skip when the loss has no padding id of its own.
SKIP_ID = -100


def skip_id(ignore_index: int | None) -> int:
    """The target id the likelihood metrics skip: the loss's ``ignore_index``, else -100.

    Example:
        >>> skip_id(None), skip_id(0)
        (-100, 0)
    """
    return ignore_index if ignore_index is not None else SKIP_ID


@dataclass
class Picked:
    """The tokens of one buffer picked for the likelihood metrics, ready to score."""

    pred: Tensor  # [rows, D] (for a loss that fixes κ, scaled to it)
    target: Tensor  # [rows]; special targets replaced by the skip id
    sizes: list[int]  # tokens per picked run of whole sequences
    lengths: list[int]  # sequence length of each run
    rows: int
    kappa: float | Tensor | None  # κ for the decoder's shared normaliser; None: vmf_ppl scans the table itself
    exclude: Tensor | None


class LikelihoodScorer:
    """Picks each buffer's tokens for ``vmf_ppl`` and BrierLM within the epoch's budget, and scores them.

    κ is the loss's own when it fixes one (:func:`~lightning_contloss.callbacks.loss_concentration`:
    the vMF loss reads it from the norm), else one κ̂ fitted on the epoch's first buffer and set
    on the ``vmf_ppl`` metric. BrierLM draws two samples per position from the same distribution,
    seeded by ``seed`` and the tokens scored so far.

    Args:
        metric_tokens: tokens per epoch and process; ``"auto"``: see
            :func:`~lightning_contloss.callbacks.sampling.likelihood_budget`; 0 turns both off.
        brier_lm: also score BrierLM (the collection must hold ``"brier_lm"``).
        seed: seed of BrierLM's samples.

    Attributes:
        scored: tokens scored this epoch.
        sequences: sequences buffered this epoch (the sampling's global index).
        kappa: the κ̂ set on ``vmf_ppl`` this epoch (``None`` for a loss that fixes κ, or before).

    Example:
        >>> from lightning_contloss.metrics import VMFPerplexity
        >>> from lightning_contloss.losses import VMFLoss
        >>> targets = TargetEmbeddings.random(20, 4, seed=0)
        >>> metrics = MetricCollection({"vmf_ppl": VMFPerplexity(ignore_index=-100)})
        >>> scorer = LikelihoodScorer(metric_tokens=16, brier_lm=False, seed=0)
        >>> picks = scorer.pick([(3, 8)], shared=False)  # 3 sequences of 8: the first 2 fill 16 tokens
        >>> pred, target = torch.randn(24, 4), torch.randint(0, 20, (24,))
        >>> picked = scorer.prepare(metrics, pred, target, picks, targets, VMFLoss(), fit_kappa=lambda: 1.0, skip=-100)
        >>> scorer.update(metrics, picked, None, targets)
        >>> picks, scorer.scored, bool(metrics["vmf_ppl"].compute() > 0)
        ([(0, 2, 8)], 16, True)
    """

    def __init__(self, metric_tokens: int | Literal["auto"], brier_lm: bool, seed: int) -> None:
        self.metric_tokens = metric_tokens
        self.brier_lm = brier_lm
        self.seed = seed
        self.scored = 0
        self.sequences = 0
        self.kappa: float | None = None

    def new_epoch(self) -> None:
        """Start an epoch: nothing scored, no κ̂ yet."""
        self.scored = self.sequences = 0
        self.kappa = None

    def pick(self, shapes: Sequence[tuple[int, int]], shared: bool, world_size: int = 1, rank: int = 0) -> list[Pick]:
        """This buffer's picks (see :func:`~lightning_contloss.callbacks.sampling.pick_likelihood_rows`).

        ``shapes``: ``(sequences, length)`` per buffered batch; ``shared``: the decoder shares its scores.
        """
        budget, stride = likelihood_budget(self.metric_tokens, shared, self.scored)
        picks = pick_likelihood_rows(shapes, budget, stride, self.sequences, world_size, rank)
        self.sequences += sum(sequences for sequences, _ in shapes)
        return picks

    def prepare(
        self,
        metrics: MetricCollection,
        pred: Tensor,
        target: Tensor,
        picks: list[Pick],
        targets: TargetEmbeddings,
        loss: nn.Module,
        fit_kappa: Callable[[], float],
        skip: int,
        shared: bool = False,
    ) -> Picked | None:
        """The picked rows of ``pred [N, D]`` / ``target [N]`` made ready to score; ``None`` when nothing was picked.

        For a ``loss`` that leaves κ free, ``fit_kappa()`` gives the epoch's κ̂ at the first
        buffer with tokens (before the picks: a DDP rank whose shard the sample skips still holds
        the shared κ̂ in its metric). With ``shared`` the picks are a prefix of the buffer and
        the result carries the κ the decoder's normaliser needs.
        """
        fixed = loss_concentration(loss, pred[:0]) is not None
        if not fixed and self.kappa is None and self.metric_tokens != 0 and pred.shape[0]:
            self.kappa = fit_kappa()
            metrics["vmf_ppl"].kappa = self.kappa
        if not picks:
            return None
        device = targets.weight.device
        index = torch.cat([torch.arange(start, start + n * length) for start, n, length in picks]).to(device)
        rows, picked_target = pred.to(device)[index], target[index]
        exclude = targets.special_mask if bool(targets.special_mask.any()) else None
        if exclude is not None:
            # A special target has probability 0 once its row is excluded: skip it like padding.
            valid = picked_target != skip
            special = valid & exclude[torch.where(valid, picked_target, 0)]
            picked_target = torch.where(special, skip, picked_target)
        kappa: float | Tensor
        scaled = loss_concentration(loss, rows)
        if scaled is not None:
            # The loss's own κ (a floor moves it off ‖ê‖), which both metrics read from the norm.
            rows, kappa = scaled, scaled.norm(dim=-1)
        else:
            assert self.kappa is not None
            kappa = self.kappa
        return Picked(
            pred=rows,
            target=picked_target,
            sizes=[n * length for _, n, length in picks],
            lengths=[length for *_, length in picks],
            rows=int(index.numel()),
            kappa=kappa if shared else None,
            exclude=exclude,
        )

    def update(
        self, metrics: MetricCollection, picked: Picked, log_z: Tensor | None, targets: TargetEmbeddings
    ) -> None:
        """Update ``vmf_ppl`` (and ``brier_lm``) on the picked tokens; ``log_z [rows]`` from the decoder when shared."""
        metrics["vmf_ppl"].update(
            picked.pred, picked.target, targets.weight, exclude_mask=picked.exclude, log_partition=log_z
        )
        if not self.brier_lm:
            self.scored += picked.rows
            return
        device = targets.weight.device
        # Sequences of one length are sampled together (one pass over the table per length).
        by_length: dict[int, list[tuple[Tensor, Tensor]]] = {}
        for pred, target, length in zip(
            picked.pred.split(picked.sizes), picked.target.split(picked.sizes), picked.lengths, strict=True
        ):
            by_length.setdefault(length, []).append((pred, target))
        for length, runs in by_length.items():
            pred_seq = torch.cat([p for p, _ in runs]).reshape(-1, length, picked.pred.shape[-1])
            target_seq = torch.cat([t for _, t in runs]).reshape(-1, length)
            g = torch.Generator(device=device).manual_seed(self.seed + self.scored)
            # κ None for a loss that fixes κ: picked.pred already carries it as its norm.
            samples = vmf_sample(
                pred_seq, targets.weight, 2, kappa=self.kappa, exclude_mask=picked.exclude, generator=g
            )
            metrics["brier_lm"].update(samples[0], samples[1], target_seq)
            self.scored += target_seq.numel()
