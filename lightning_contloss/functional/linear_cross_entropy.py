"""Exact linear + cross-entropy computed chunk by chunk over the vocabulary, never holding ``[N, V]`` logits.

The softmax rival that Liger Kernel's fused linear-cross-entropy and Cut Cross-Entropy (Wijmans
et al., 2024) build with GPU kernels, written here in plain PyTorch as their reference: the
forward pass keeps a running log-sum-exp over vocabulary chunks of ``chunk_size`` rows, and the
backward pass recomputes each chunk's logits to form its share of the gradient. Peak extra memory
is one ``[N, chunk_size]`` block instead of the ``[N, V]`` logits and their gradient; the price is
computing the logits twice (once forward, once backward).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lightning_contloss._arguments import int_arg
from lightning_contloss.functional._checks import Reduction, check_reduction

__all__ = ["linear_cross_entropy"]

DEFAULT_CHUNK_SIZE = 8192


def _check_inputs(hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, chunk_size: int) -> int:
    if hidden.dim() != 2 or weight.dim() != 2:
        raise ValueError(
            f"hidden must be [N, H] and weight [V, H], got shapes {tuple(hidden.shape)} and {tuple(weight.shape)}; "
            "flatten the batch dimensions of hidden first"
        )
    if hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden has {hidden.shape[1]} features but weight has {weight.shape[1]}; "
            "weight must be the output layer's [V, H] matrix"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be [V] = [{weight.shape[0]}], got shape {tuple(bias.shape)}")
    if target.shape != (hidden.shape[0],):
        raise ValueError(f"target must be [N] = [{hidden.shape[0]}] ids, got shape {tuple(target.shape)}")
    if target.dtype != torch.int64:
        raise ValueError(f"target must hold int64 ids, got {target.dtype}")
    return int_arg(chunk_size, "chunk_size", 1, rule="a positive integer")


def _logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, start: int, stop: int) -> Tensor:
    block = hidden @ weight[start:stop].to(hidden.dtype).T
    return block if bias is None else block + bias[start:stop].to(hidden.dtype)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Per-token ``logsumexp(h W^T + b) - (h W^T + b)[target]``; gradients recomputed chunk by chunk."""

    @staticmethod
    def forward(
        ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, chunk_size: int
    ) -> Tensor:
        compute = torch.promote_types(hidden.dtype, torch.float32)
        h = hidden.to(compute)
        n, vocab = h.shape[0], weight.shape[0]
        lse = torch.full((n,), float("-inf"), dtype=compute, device=h.device)
        picked = torch.zeros(n, dtype=compute, device=h.device)
        for start in range(0, vocab, chunk_size):
            stop = min(start + chunk_size, vocab)
            block = _logits(h, weight, bias, start, stop)
            lse = torch.logaddexp(lse, torch.logsumexp(block, dim=1))
            inside = (target >= start) & (target < stop)
            rows = inside.nonzero().squeeze(1)
            picked[rows] = block[rows, target[rows] - start]
        ctx.save_for_backward(hidden, weight, bias, target, lse)
        ctx.chunk_size = chunk_size
        return lse - picked

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        hidden, weight, bias, target, lse = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        compute = lse.dtype
        h = hidden.to(compute)
        g = grad_out.to(compute)
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.zeros_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=compute, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=compute, device=weight.device) if need_b else None
        for start in range(0, weight.shape[0], chunk_size):
            stop = min(start + chunk_size, weight.shape[0])
            # d loss_i / d logit_ij = softmax_ij - [j == target_i], scaled by the token's upstream grad.
            block = (_logits(h, weight, bias, start, stop) - lse[:, None]).exp_()
            rows = ((target >= start) & (target < stop)).nonzero().squeeze(1)
            block[rows, target[rows] - start] -= 1.0
            block.mul_(g[:, None])
            if grad_h is not None:
                grad_h.addmm_(block, weight[start:stop].to(compute))
            if grad_w is not None:
                grad_w[start:stop] = block.T @ h
            if grad_b is not None:
                grad_b[start:stop] = block.sum(dim=0)
        return (
            None if grad_h is None else grad_h.to(hidden.dtype),
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None or bias is None else grad_b.to(bias.dtype),
            None,
            None,
        )


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    *,
    ignore_index: int | None = -100,
    reduction: Reduction = "mean",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """``F.cross_entropy(hidden @ weight.T + bias, target)``, exact, without ever holding the ``[N, V]`` logits.

    The log-sum-exp runs over vocabulary chunks of ``chunk_size`` rows; the backward pass
    recomputes each chunk's logits. Extra memory is ``O(N · chunk_size)``; the logits are computed
    twice. Computes in at least float32.

    Args:
        hidden: ``[N, H]`` hidden states (flatten ``[B, T, H]`` first).
        weight: ``[V, H]`` output-layer weight (``nn.Linear(H, V).weight``).
        bias: ``[V]`` output-layer bias, or ``None``.
        target: ``[N]`` int64 target ids.
        ignore_index: target id that contributes neither loss nor gradient (``None``: every id counts).
        reduction: ``"mean"`` over the counted tokens (NaN when none counts, as ``F.cross_entropy``),
            ``"sum"``, or ``"none"`` (``[N]``, 0 at ignored tokens).
        chunk_size: vocabulary rows per chunk; any positive size, it need not divide V.

    Example:
        >>> import torch.nn.functional as F
        >>> h, w, b = torch.randn(6, 4), torch.randn(10, 4), torch.randn(10)
        >>> y = torch.tensor([0, 3, 9, 9, -100, 2])
        >>> loss = linear_cross_entropy(h, w, b, y, chunk_size=3)
        >>> torch.allclose(loss, F.cross_entropy(h @ w.T + b, y))
        True
    """
    check_reduction(reduction)
    chunk_size = _check_inputs(hidden, weight, bias, target, chunk_size)
    counted = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    if bool(((target < 0) | (target >= weight.shape[0]))[counted].any()):
        raise ValueError(
            f"target holds ids outside 0..{weight.shape[0] - 1}; pass ids of the output vocabulary "
            "(padding as ignore_index)"
        )
    rows = counted.nonzero().squeeze(1)
    per_token = _ChunkedLinearCrossEntropy.apply(hidden[rows], weight, bias, target[rows], chunk_size)
    if reduction == "sum":
        return per_token.sum()
    if reduction == "mean":
        return per_token.sum() / rows.numel() if rows.numel() else per_token.sum() * float("nan")
    return per_token.new_zeros(target.shape).index_put((rows,), per_token)
