"""Syn-margin: a hinge loss whose one negative is synthesised from the prediction and the target (Bhat et al., 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_contloss.functional._checks import (
    Batch,
    check_choice,
    check_ignore_index,
    check_number,
    check_reduction,
    full_precision,
    prepare,
    reduce,
)
from lightning_contloss.functional.cosine import row_cosine, unit

__all__ = ["syn_margin_loss", "synthetic_negative"]

SYNTHETIC = ("projection", "difference")
DEFAULT_SYN_MARGIN = 0.5


def _check_syn_margin_loss_args(margin: float, synthetic: str) -> None:
    check_number(margin, "margin", low=0.0, why="it is the hinge margin (0.5 as for max-margin)")
    check_choice(synthetic, "synthetic", SYNTHETIC)


def synthetic_negative(pred: Tensor, target: Tensor, synthetic: str = "projection") -> Tensor:
    """The synthetic negative of each prediction: a unit vector built from ``pred`` and its ``target`` row.

    * ``"projection"`` (syn-margin proper): ``u_orth``, the component of ``pred`` orthogonal to the
      target direction ``u = target/‖target‖``, normalised: ``unit(ê − (ê·u)·u)``. It is the
      direction in which the prediction strays from the target, so ``cos(ê, u_orth) = sin θ``
      for θ the angle between ê and u.
    * ``"difference"``: ``u_diff = unit(ê/‖ê‖ − u)``, so ``cos(ê, u_diff) = sin(θ/2)``.

    Where the construction is undefined (ê parallel to u; for ``"projection"`` also ê = 0) the row
    is zero; ``"difference"`` gives ``−u`` for ê = 0.

    Args:
        pred: ``[..., D]`` predicted embeddings.
        target: ``[..., D]`` their target embeddings (any norm).
        synthetic: ``"projection"`` or ``"difference"``.

    Example:
        >>> synthetic_negative(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 0.0]]))
        tensor([[0., 1.]])
    """
    check_choice(synthetic, "synthetic", SYNTHETIC)
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {tuple(pred.shape)} but target has {tuple(target.shape)}; pass matching rows")
    return _synthetic_negative(pred, target, synthetic)


def _synthetic_negative(pred: Tensor, target: Tensor, synthetic: str) -> Tensor:
    """:func:`synthetic_negative` on checked inputs (the loss's per-batch path)."""
    u = unit(target)
    if synthetic == "projection":
        rest = pred - (pred * u).sum(dim=-1, keepdim=True) * u
        scale = torch.linalg.vector_norm(pred, dim=-1, keepdim=True)
    else:
        rest = unit(pred) - u
        scale = torch.ones_like(rest[..., :1])
    # Below this the residual is rounding noise of a parallel pair, not a direction.
    tiny = torch.finfo(rest.dtype).eps * 8 * scale
    rest = torch.where(torch.linalg.vector_norm(rest, dim=-1, keepdim=True) > tiny, rest, 0.0)
    return unit(rest)


def _syn_margin_loss_tokens(
    pred: Tensor,
    ids: Tensor,
    table: Tensor,
    *,
    margin: float,
    synthetic: str,
    ignore_index: int | None,
) -> tuple[Tensor, Batch]:
    """Per-token syn-margin hinge (``[N]``) and the checked, flattened batch it was computed on."""
    batch = prepare(pred, ids, table, ignore_index)
    with full_precision(batch.pred.device):
        target = batch.rows(table)
        with torch.no_grad():
            # A negative sample, held fixed like a table row; for "projection" the gradient is the
            # same either way, since u_orth only turns when ê leaves the plane of ê and u.
            negative = _synthetic_negative(batch.pred, target, synthetic)
        per_token = F.relu(margin + row_cosine(batch.pred, negative) - row_cosine(batch.pred, target))
    return per_token, batch


def syn_margin_loss(
    pred: Tensor,
    ids: Tensor,
    table: Tensor,
    margin: float = DEFAULT_SYN_MARGIN,
    synthetic: str = "projection",
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Syn-margin loss ``max(0, margin + cos(ê, u_syn) − cos(ê, e_w))`` with one synthetic negative per token.

    Bhat, Kumar & Tsvetkov (WNGT 2019): instead of searching the vocabulary for a negative (as
    :func:`~lightning_contloss.functional.max_margin_loss` does, ``O(V·D)`` a token), the negative
    is built from the prediction and its target alone (:func:`synthetic_negative`), ``O(D)`` a
    token whatever V is. With the default ``"projection"`` negative the loss is
    ``max(0, margin + sin θ − cos θ)``, θ the angle between ê and e_w: zero once θ is small
    enough (about 24° at margin 0.5), and its gradient always turns ê towards e_w in their plane.
    The negative is held fixed (no gradient through it). Invariant to the scale of ``pred``,
    in ``[0, margin + 2]``. Decode with cosine similarity.

    Args:
        pred: ``[..., D]`` predicted embeddings.
        ids: ``[...]`` target ids into ``table``.
        table: ``[V, D]`` target embeddings.
        margin: the hinge margin, >= 0.
        synthetic: ``"projection"`` (``u_orth``) or ``"difference"`` (``u_diff``).
        ignore_index: id of tokens to skip (padding).
        reduction: ``"mean"`` over counted tokens, ``"sum"`` or ``"none"``.

    Example:
        >>> table = torch.eye(2)
        >>> pred = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> syn_margin_loss(pred, torch.tensor([0, 0]), table, reduction="none")
        tensor([0.0000, 0.5000])
    """
    check_reduction(reduction)
    check_ignore_index(ignore_index)
    _check_syn_margin_loss_args(margin, synthetic)
    per_token, batch = _syn_margin_loss_tokens(
        pred, ids, table, margin=margin, synthetic=synthetic, ignore_index=ignore_index
    )
    return reduce(per_token, batch, reduction)
