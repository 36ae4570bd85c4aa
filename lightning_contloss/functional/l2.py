"""Squared Euclidean loss: ‖ê − e_w‖², summed over the embedding dimension."""

from __future__ import annotations

from torch import Tensor

from lightning_contloss.functional._checks import (
    Batch,
    check_ignore_index,
    check_reduction,
    full_precision,
    prepare,
    reduce,
)

__all__ = ["l2_loss"]


def _l2_loss_tokens(pred: Tensor, ids: Tensor, table: Tensor, *, ignore_index: int | None) -> tuple[Tensor, Batch]:
    """Per-token ``‖ê − e_w‖²`` (``[N]``) and the checked, flattened batch it was computed on."""
    batch = prepare(pred, ids, table, ignore_index)
    with full_precision(batch.pred.device):
        per_token = (batch.pred - batch.rows(table)).square().sum(dim=-1)
    return per_token, batch


def l2_loss(
    pred: Tensor, ids: Tensor, table: Tensor, ignore_index: int | None = None, reduction: str = "mean"
) -> Tensor:
    """Squared Euclidean loss ``‖ê − e_w‖²`` against the raw (not re-normalised) target rows.

    The square is **summed** over the D coordinates, not averaged, so the value grows with D
    (``F.mse_loss`` would divide by D). Unlike the cosine loss it also trains the norm of
    ``pred``. Decode with L2 distance.

    Args:
        pred: ``[..., D]`` predicted embeddings.
        ids: ``[...]`` target ids into ``table``.
        table: ``[V, D]`` target embeddings.
        ignore_index: id of tokens to skip (padding).
        reduction: ``"mean"`` over counted tokens, ``"sum"`` or ``"none"``.

    Example:
        >>> table = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> l2_loss(torch.tensor([[1.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 1]), table)
        tensor(2.5000)
    """
    check_reduction(reduction)
    check_ignore_index(ignore_index)
    return reduce(*_l2_loss_tokens(pred, ids, table, ignore_index=ignore_index), reduction)
