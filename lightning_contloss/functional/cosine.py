"""Cosine loss: 1 − cos(ê, e_w), the direction-only regression loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from lightning_contloss.functional._checks import (
    Batch,
    check_ignore_index,
    check_reduction,
    full_precision,
    prepare,
    reduce,
)

__all__ = ["cosine_loss"]


def safe_norm(x: Tensor) -> Tensor:
    """Euclidean norms of the rows of ``x [..., D]`` (``[...]``), with 1 in place of 0.

    Dividing by it leaves a zero row at zero with a bounded gradient (the one it would have at
    unit norm) instead of the huge ``1/eps`` of ``F.normalize``.

    Example:
        >>> safe_norm(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
        tensor([5., 1.])
    """
    norm = torch.linalg.vector_norm(x, dim=-1)
    return torch.where(norm > 0, norm, 1.0)


def unit(x: Tensor) -> Tensor:
    """Rows of ``x [..., D]`` scaled to unit norm; an all-zero row stays zero.

    Example:
        >>> unit(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
        tensor([[0.6000, 0.8000],
                [0.0000, 0.0000]])
    """
    return x / safe_norm(x).unsqueeze(-1)


class _RowDotNorm(torch.autograd.Function):
    """``(a·b, ‖a‖)`` per row, with a backward of two passes over ``[N, D]``.

    Autograd's own backward of ``(a * b).sum(-1)`` and ``vector_norm(a)`` takes about six passes
    (expand, multiply, divide, mask, multiply, add); every loss here needs exactly these two
    quantities, and on a busy CPU each parallel pass costs a thread synchronisation.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        dot = (a * b).sum(dim=-1)
        norm = torch.linalg.vector_norm(a, dim=-1)
        ctx.save_for_backward(a, b, norm)
        return dot, norm

    @staticmethod
    def backward(ctx: Any, grad_dot: Tensor, grad_norm: Tensor) -> tuple[Tensor | None, Tensor | None]:
        a, b, norm = ctx.saved_tensors
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            # d‖a‖/da = a/‖a‖, taken as 0 at a = 0 (as torch.linalg.vector_norm does).
            scale = torch.where(norm > 0, grad_norm / torch.where(norm > 0, norm, 1.0), 0.0)
            grad_a = (b * grad_dot.unsqueeze(-1)).addcmul_(a, scale.unsqueeze(-1))
        if ctx.needs_input_grad[1]:
            grad_b = a * grad_dot.unsqueeze(-1)
        return grad_a, grad_b


def row_dot_norm(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Row-wise dot products ``a·b`` and norms ``‖a‖`` of ``a, b [..., D]``, each ``[...]``.

    Example:
        >>> row_dot_norm(torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]]))
        (tensor([3.]), tensor([5.]))
    """
    dot, norm = _RowDotNorm.apply(a, b)
    return dot, norm


def row_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine between matching rows of ``a [..., D]`` and ``b [..., D]``: ``[...]``, 0 for a zero row.

    Works from dot products and norms, so it allocates no normalised ``[..., D]`` copies.

    Example:
        >>> row_cosine(torch.tensor([[2.0, 0.0], [0.0, 0.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
        tensor([0.7071, 0.0000])
    """
    dot, norm = row_dot_norm(a, b)
    return dot / (torch.where(norm > 0, norm, 1.0) * safe_norm(b))


def _cosine_loss_tokens(pred: Tensor, ids: Tensor, table: Tensor, *, ignore_index: int | None) -> tuple[Tensor, Batch]:
    """Per-token ``1 − cos`` (``[N]``) and the checked, flattened batch it was computed on."""
    batch = prepare(pred, ids, table, ignore_index)
    with full_precision(batch.pred.device):
        per_token = 1.0 - row_cosine(batch.pred, batch.rows(table))
    return per_token, batch


def cosine_loss(
    pred: Tensor, ids: Tensor, table: Tensor, ignore_index: int | None = None, reduction: str = "mean"
) -> Tensor:
    """Cosine loss ``1 − cos(ê, e_w)`` between predictions and their target rows.

    Invariant to the scale of ``pred`` (only its direction is trained), in ``[0, 2]``. A zero
    prediction has cosine 0, so loss 1 and a finite gradient. Decode with cosine similarity.

    Args:
        pred: ``[..., D]`` predicted embeddings (any float dtype; bf16 is computed in float32).
        ids: ``[...]`` target ids into ``table``.
        table: ``[V, D]`` target embeddings (``targets.weight``).
        ignore_index: id of tokens to skip (padding); they add neither loss nor gradient.
        reduction: ``"mean"`` over counted tokens, ``"sum"``, or ``"none"`` (``[...]``, 0 at
            ignored tokens).

    Example:
        >>> table = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> cosine_loss(torch.tensor([[2.0, 0.0], [1.0, 1.0]]), torch.tensor([0, 0]), table, reduction="none")
        tensor([0.0000, 0.2929])
    """
    check_reduction(reduction)
    check_ignore_index(ignore_index)
    return reduce(*_cosine_loss_tokens(pred, ids, table, ignore_index=ignore_index), reduction)
