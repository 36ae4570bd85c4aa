"""Sampled softmax: cross-entropy over the true class and K shared negatives, with the logQ correction."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_contloss.functional._checks import Reduction, check_reduction

__all__ = ["sampled_softmax_loss"]


def _check_inputs(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, negatives: Tensor, log_q: Tensor
) -> None:
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden must be [N, H] and weight [V, H], got shapes {tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be [V] = [{weight.shape[0]}], got shape {tuple(bias.shape)}")
    if target.shape != (hidden.shape[0],) or target.dtype != torch.int64:
        raise ValueError(
            f"target must be [N] = [{hidden.shape[0]}] int64 ids, got {target.dtype} {tuple(target.shape)}"
        )
    if negatives.dim() != 1 or negatives.dtype != torch.int64:
        raise ValueError(f"negatives must be [K] int64 ids, got {negatives.dtype} {tuple(negatives.shape)}")
    if log_q.shape != (weight.shape[0],):
        raise ValueError(
            f"log_q must hold one log expected count per vocabulary id, [V] = [{weight.shape[0]}], "
            f"got shape {tuple(log_q.shape)}"
        )
    if negatives.numel() and bool(((negatives < 0) | (negatives >= weight.shape[0])).any()):
        raise ValueError(f"negatives holds ids outside 0..{weight.shape[0] - 1}")


def sampled_softmax_loss(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    negatives: Tensor,
    log_q: Tensor,
    *,
    ignore_index: int | None = -100,
    reduction: Reduction = "mean",
) -> Tensor:
    """Cross-entropy of each token's true class against ``K`` negatives shared by the batch.

    Each candidate's logit ``h·w_c + b_c`` is corrected by ``-log_q[c]``, the log of the
    number of times the sampler is expected to draw ``c`` (``log(K · q(c))`` for ``K`` draws
    with replacement from ``q``), so the loss estimates the full softmax's (Jean et al., 2015;
    Bengio & Senécal, 2008). The true class always takes part; a negative that equals a token's
    true class (an accidental hit) is left out of that token's row. Passing every id once as
    ``negatives`` with ``log_q = 0`` gives the exact cross-entropy.

    Args:
        hidden: ``[N, H]`` hidden states.
        weight: ``[V, H]`` output-layer weight.
        bias: ``[V]`` output-layer bias, or ``None``.
        target: ``[N]`` int64 true ids.
        negatives: ``[K]`` int64 sampled ids (duplicates allowed).
        log_q: ``[V]`` log expected count of each id under the sampler.
        ignore_index: target id that contributes nothing (``None``: every id counts).
        reduction: ``"mean"`` over the counted tokens, ``"sum"``, or ``"none"`` (``[N]``, 0 at ignored).

    Example:
        >>> import torch.nn.functional as F
        >>> h, w, y = torch.randn(5, 3), torch.randn(7, 3), torch.tensor([0, 6, 2, 2, 1])
        >>> exact = sampled_softmax_loss(h, w, None, y, torch.arange(7), torch.zeros(7))
        >>> torch.allclose(exact, F.cross_entropy(h @ w.T, y))
        True
    """
    check_reduction(reduction)
    _check_inputs(hidden, weight, bias, target, negatives, log_q)
    counted = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    ids = target.where(counted, 0)
    if bool(((ids < 0) | (ids >= weight.shape[0])).any()):
        raise ValueError(f"target holds ids outside 0..{weight.shape[0] - 1}; pass padding as ignore_index")
    compute = torch.promote_types(hidden.dtype, torch.float32)
    h = hidden.to(compute)
    w_true, w_neg = weight[ids].to(compute), weight[negatives].to(compute)
    true = (h * w_true).sum(dim=1) - log_q[ids].to(compute)
    neg = h @ w_neg.T - log_q[negatives].to(compute)[None, :]
    if bias is not None:
        true = true + bias[ids].to(compute)
        neg = neg + bias[negatives].to(compute)[None, :]
    # In place: the product's backward needs its inputs, not its output.
    neg.masked_fill_(negatives[None, :] == ids[:, None], float("-inf"))
    per_token = torch.logsumexp(torch.cat([true[:, None], neg], dim=1), dim=1) - true
    per_token = per_token.where(counted, per_token.new_zeros(()))
    if reduction == "none":
        return per_token
    total = per_token.sum()
    return total if reduction == "sum" else total / counted.sum()
