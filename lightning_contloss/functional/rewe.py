"""ReWE (Jauregi Unanue et al., 2019): softmax cross-entropy plus a cosine regression term."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lightning_contloss.functional._checks import (
    Batch,
    check_ignore_index,
    check_number,
    check_reduction,
    full_precision,
    prepare,
    reduce,
)
from lightning_contloss.functional.cosine import row_cosine

__all__ = ["rewe_loss"]

DEFAULT_LAM = 20.0


def _check_rewe_loss_args(lam: float) -> None:
    check_number(lam, "lam", low=0.0, why="the weight of the cosine term")


def _rewe_loss_tokens(
    logits: Tensor,
    pred: Tensor,
    ids: Tensor,
    table: Tensor,
    *,
    lam: float,
    ignore_index: int | None,
) -> tuple[Tensor, Batch]:
    """Per-token ReWE loss (``[N]``) and the checked, flattened batch it was computed on."""
    batch = prepare(pred, ids, table, ignore_index)
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise ValueError("logits must be a floating-point [..., V] tensor")
    if logits.shape[:-1] != ids.shape or logits.shape[-1] != table.shape[0]:
        raise ValueError(
            f"logits has shape {tuple(logits.shape)} but ids has shape {tuple(ids.shape)} and the target "
            f"table has {table.shape[0]} rows; logits must be [..., V] with V={table.shape[0]}"
        )
    if logits.device != batch.pred.device:
        raise ValueError(f"logits are on {logits.device} but pred is on {batch.pred.device}; move them to one device")
    with full_precision(batch.pred.device):
        flat_logits = logits.reshape(-1, logits.shape[-1]).to(batch.dtype)
        nll = F.cross_entropy(flat_logits, batch.ids, reduction="none")
        per_token = nll + lam * (1.0 - row_cosine(batch.pred, batch.rows(table)))
    return per_token, batch


def rewe_loss(
    logits: Tensor,
    pred: Tensor,
    ids: Tensor,
    table: Tensor,
    lam: float = DEFAULT_LAM,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """ReWE loss ``CE(logits, w) + λ·(1 − cos(ê, e_w))`` for a model with both heads.

    For models that keep their softmax head and add a regression head: the cosine term acts as
    a regulariser of the shared decoder state. Decode with the softmax (or, for the regression
    head, with cosine similarity). The default ``lam=20`` puts the cosine term (about 1 at
    initialisation) on the scale of the cross-entropy (about log V); tune it on validation data,
    as the ReWE paper did per dataset.

    Args:
        logits: ``[..., V]`` softmax-head scores over the same vocabulary as ``table``.
        pred: ``[..., D]`` regression-head predictions.
        ids: ``[...]`` target ids.
        table: ``[V, D]`` target embeddings.
        lam: λ, the weight of the cosine term.
        ignore_index: id of tokens to skip (padding).
        reduction: ``"mean"`` over counted tokens, ``"sum"`` or ``"none"``.

    Example:
        >>> table = torch.eye(2)
        >>> logits = torch.tensor([[0.0, 0.0]])
        >>> rewe_loss(logits, torch.tensor([[1.0, 1.0]]), torch.tensor([0]), table, lam=1.0)
        tensor(0.9860)
    """
    check_reduction(reduction)
    check_ignore_index(ignore_index)
    _check_rewe_loss_args(lam)
    return reduce(*_rewe_loss_tokens(logits, pred, ids, table, lam=lam, ignore_index=ignore_index), reduction)
