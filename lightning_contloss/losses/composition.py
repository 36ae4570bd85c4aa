"""What a decoder needs from a loss or a composition of losses: its decode space and its target table."""

from __future__ import annotations

from torchmetrics import Metric
from torchmetrics.metric import CompositionalMetric

from lightning_contloss.functional.scoring import Space
from lightning_contloss.losses.base import Targets, _TableBoundLoss

__all__ = ["bind_targets", "decode_space_of", "ignore_index_of"]


def _operands(metric: Metric) -> list[Metric]:
    if isinstance(metric, CompositionalMetric):
        return [m for m in (metric.metric_a, metric.metric_b) if isinstance(m, Metric)]
    return []


def decode_space_of(metric: Metric) -> Space:
    """The similarity a decoder must rank by for ``metric``, a loss or a composition of losses.

    A composition takes the space of its first loss operand (its main term, by convention:
    write ``VMFLoss() + 0.1 * CosineLoss()``, not the reverse).

    Example:
        >>> from lightning_contloss.losses import CosineLoss, L2Loss
        >>> decode_space_of(L2Loss() + 0.1 * CosineLoss()), decode_space_of(0.5 * CosineLoss())
        ('l2', 'cosine')
    """
    if isinstance(metric, _TableBoundLoss):
        return metric.decode_space
    for operand in _operands(metric):
        try:
            return decode_space_of(operand)
        except ValueError:
            continue
    raise ValueError(
        f"{type(metric).__name__} is not a continuous loss and contains none; use a loss of "
        "lightning_contloss.losses (a ContinuousLoss or ReWELoss), or a composition of them"
    )


def bind_targets(metric: Metric, targets: Targets) -> Metric:
    """Bind ``targets`` to every continuous loss inside ``metric`` (a loss or a composition); returns it.

    Example:
        >>> import torch
        >>> from lightning_contloss.losses import CosineLoss, VMFLoss
        >>> from lightning_contloss.targets import TargetEmbeddings
        >>> loss = bind_targets(VMFLoss() + 0.1 * CosineLoss(), TargetEmbeddings.random(10, 8))
        >>> loss(torch.randn(3, 8), torch.tensor([1, 2, 3])).shape
        torch.Size([])
    """
    bound = 0
    for module in metric.modules():
        if isinstance(module, _TableBoundLoss):
            module.bind(targets)
            bound += 1
    if bound == 0:
        raise ValueError(f"{type(metric).__name__} contains no continuous loss to bind targets to")
    return metric


def ignore_index_of(metric: Metric) -> int | None:
    """The padding id of the first loss inside ``metric`` that has one, or ``None``.

    Example:
        >>> from lightning_contloss.losses import CosineLoss, VMFLoss
        >>> ignore_index_of(VMFLoss() + 0.1 * CosineLoss(ignore_index=-100))
        -100
    """
    for module in metric.modules():
        ignore = getattr(module, "ignore_index", None)
        if ignore is not None:
            return int(ignore)
    return None
