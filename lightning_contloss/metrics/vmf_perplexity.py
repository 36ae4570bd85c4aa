"""Perplexity of a continuous-output model under its vMF-induced distribution over the vocabulary."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_contloss.functional._checks import (
    check_ignore_index,
    check_log_partition,
    check_number,
    check_positive_int,
)
from lightning_contloss.functional.vmf_distribution import DEFAULT_CHUNK_SIZE, vmf_log_prob
from lightning_contloss.metrics.neighbor_accuracy import _check_ids
from lightning_contloss.targets import TargetEmbeddings

__all__ = ["VMFPerplexity", "vmf_perplexity"]


def _vmf_perplexity_update(
    pred: Tensor,
    target: Tensor,
    table: Tensor | TargetEmbeddings,
    *,
    kappa: float | None,
    exclude_mask: Tensor | None,
    ignore_index: int | None,
    chunk_size: int,
    log_partition: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Summed NLL of the counted targets and their number, without touching any state."""
    weight = table.weight if isinstance(table, TargetEmbeddings) else table
    _check_ids(target, "target")
    if not isinstance(pred, Tensor) or pred.dim() == 0 or target.shape != pred.shape[:-1]:
        shape = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
        raise ValueError(
            f"pred has shape {shape} and target {tuple(target.shape)}; pass pred [..., D] "
            "with target [...] (one token id per prediction)"
        )
    flat_pred = pred.detach().reshape(-1, pred.shape[-1])
    flat_target = target.reshape(-1).to(flat_pred.device)
    flat_log_z = None
    if log_partition is not None:
        flat_log_z = check_log_partition(log_partition, target.shape).detach().reshape(-1).to(flat_pred.device)
    if ignore_index is not None:
        keep = flat_target != ignore_index
        flat_pred, flat_target = flat_pred[keep], flat_target[keep]
        flat_log_z = None if flat_log_z is None else flat_log_z[keep]
    if (
        isinstance(exclude_mask, Tensor)
        and isinstance(weight, Tensor)
        and exclude_mask.shape == (weight.shape[0],)
        and exclude_mask.dtype == torch.bool
    ):
        in_range = (flat_target >= 0) & (flat_target < weight.shape[0])
        hit = exclude_mask.to(flat_target.device)[flat_target[in_range]]
        if bool(hit.any()):
            bad = flat_target[in_range][hit].unique()[:5].tolist()
            raise ValueError(
                f"targets {bad} are rows that exclude_mask removes, so their probability is 0 and the "
                "perplexity infinite; skip them with ignore_index or do not exclude them"
            )
    logp = vmf_log_prob(
        flat_pred,
        flat_target,
        weight,
        kappa=kappa,
        exclude_mask=exclude_mask,
        chunk_size=chunk_size,
        log_partition=flat_log_z,
    )
    return -logp.sum(), torch.tensor(flat_target.numel(), device=logp.device)


def vmf_perplexity(
    pred: Tensor,
    target: Tensor,
    table: Tensor | TargetEmbeddings,
    *,
    kappa: float | None = None,
    exclude_mask: Tensor | None = None,
    ignore_index: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """``exp(mean NLL)`` of the targets under ``p(w) ∝ exp(κ·cos(ê, e_w))``, normalised over all V rows.

    Args:
        pred: ``[..., D]`` predictions ``ê``.
        target: ``[...]`` true ids.
        table: ``[V, D]`` target table, or the ``TargetEmbeddings`` holding it.
        kappa: fixed concentration; ``None`` uses ``κ = ‖ê‖`` (see :class:`VMFPerplexity`).
        exclude_mask: optional ``[V]`` bool, rows left out of the distribution.
        ignore_index: target id to skip (padding).
        chunk_size: table rows scored at once; memory is ``O(N · chunk_size)``.

    Returns:
        Scalar float perplexity; NaN when no token counts (none given, or all ignored), or
        when a counted prediction is NaN.

    Example:
        >>> vmf_perplexity(torch.zeros(5, 8), torch.arange(5), torch.randn(100, 8))  # κ=0: uniform
        tensor(100.0000)
    """
    check_ignore_index(ignore_index)
    nll, count = _vmf_perplexity_update(
        pred,
        target,
        table,
        kappa=kappa,
        exclude_mask=exclude_mask,
        ignore_index=ignore_index,
        chunk_size=chunk_size,
    )
    return torch.exp(nll / count)


class VMFPerplexity(Metric):
    """Perplexity of a continuous-output model, comparable with a softmax model's.

    The prediction ``ê`` is read as a von Mises-Fisher distribution with mean direction
    ``ê/‖ê‖`` and concentration ``κ = ‖ê‖``; restricted to the V rows of the target table it
    gives ``p(w) ∝ exp(κ·cos(ê, e_w))``. That is normalised exactly over all V rows with a
    chunked logsumexp (memory ``O(N · chunk_size)``), and perplexity is ``exp`` of the mean
    NLL of the targets, the same quantity a softmax model reports.

    ``κ = ‖ê‖`` is meaningful for models trained with the vMF loss, whose norm learns the
    concentration. For cosine-, L2- or max-margin-trained models the norm is arbitrary: pass a
    fixed ``kappa``, ideally the one :func:`lightning_contloss.functional.fit_kappa` finds on
    validation data. Such a κ is a temperature choice; report it next to the perplexity.

    Args:
        ignore_index: target id to skip (padding).
        kappa: fixed concentration for every prediction, or ``None`` for ``κ = ‖ê‖``.
        chunk_size: table rows scored at once.
        kwargs: passed to ``torchmetrics.Metric``.

    Example:
        >>> table = torch.eye(4)
        >>> m = VMFPerplexity(ignore_index=-1)
        >>> m.update(torch.zeros(3, 4), torch.tensor([0, 2, -1]), table)  # κ = 0: uniform over 4
        >>> m.compute()
        tensor(4.)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    nll_sum: Tensor
    total: Tensor

    def __init__(
        self,
        ignore_index: int | None = None,
        kappa: float | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        **kwargs: Any,
    ) -> None:
        check_ignore_index(ignore_index)
        if kappa is not None:
            check_number(kappa, "kappa", low=0.0, why="or None for κ = ‖ê‖")
        check_positive_int(chunk_size, "chunk_size")
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.kappa = kappa
        self.chunk_size = chunk_size
        self.add_state("nll_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(
        self,
        pred: Tensor,
        target: Tensor,
        table: Tensor | TargetEmbeddings,
        exclude_mask: Tensor | None = None,
        log_partition: Tensor | None = None,
    ) -> None:
        """Add a batch: ``pred [..., D]``, ``target [...]``, the ``[V, D]`` table, optional ``[V]`` mask.

        ``log_partition [...]`` (``target``'s shape), when given, is each prediction's
        ``log Σ_w exp(κ·cos(ê, e_w))`` over the kept rows with this metric's κ, already computed
        by a pass over the table (exact k-NN search makes one:
        :meth:`~lightning_contloss.decoding.ExactDecoder.query_with_log_partition`); the update
        then scores only the targets.
        """
        nll, count = _vmf_perplexity_update(
            pred,
            target,
            table,
            kappa=self.kappa,
            exclude_mask=exclude_mask,
            ignore_index=self.ignore_index,
            chunk_size=self.chunk_size,
            log_partition=log_partition,
        )
        self.nll_sum += nll.to(self.nll_sum)
        self.total += count.to(self.total.device)

    def compute(self) -> Tensor:
        """Perplexity over every counted token so far (NaN when none was counted)."""
        return torch.exp(self.nll_sum / self.total)
