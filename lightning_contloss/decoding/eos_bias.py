"""calibrate_eos_bias: the EOS score bias that makes greedy EOS decisions right most often on held-out data.

A continuous model scores EOS through one target row. Trained with a cosine loss, its
prediction at the end of a sentence points between EOS and the words that often follow, and
EOS loses to a near word more often than a softmax twin would let it: generations run to
``max_len``. The bias ``b`` added to EOS's score (``SearchRules(eos_bias=b)``) decides, at each
position, between EOS and the best other token: EOS wins iff ``s_EOS + b > s_best_other``.
With teacher-forced predictions on validation data this is a one-dimensional threshold
problem, solved exactly: ``b`` is chosen among the midpoints of the sorted margins
``s_best_other - s_EOS`` to minimise the wrong decisions (EOS where the reference goes on, or
another token where it ends), the smallest ``|b|`` on ties.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lightning_contloss._arguments import int_arg
from lightning_contloss.decoding.base import Decoder
from lightning_contloss.functional.scoring import TokenScore, token_log_scores

__all__ = ["EOSBias", "calibrate_eos_bias"]


class EOSBias(NamedTuple):
    """A calibrated EOS bias and what it does on the data it was fitted on.

    Attributes:
        bias: the bias to pass as ``SearchRules(eos_bias=bias)``.
        eos_recall_before: fraction of reference EOS positions where EOS wins, without a bias.
        eos_recall_after: the same with ``bias``.
        errors_before: wrong EOS-or-not decisions without a bias, out of ``positions``.
        errors_after: the same with ``bias``.
        positions: positions used (not ``ignore_index``).
    """

    bias: float
    eos_recall_before: float
    eos_recall_after: float
    errors_before: int
    errors_after: int
    positions: int


def _margins(pred: Tensor, eos_id: int, decoder: Decoder, score: TokenScore) -> Tensor:
    # s_best_other - s_EOS per position; the best other token is the nearest that is not EOS.
    ids, _ = decoder.query(pred, 2)
    ids = ids.to(pred.device)
    other = torch.where(ids[:, 0] == eos_id, ids[:, 1], ids[:, 0])
    table = decoder.table
    emb = table[torch.stack([other, torch.full_like(other, eos_id)], dim=1).to(table.device)].to(pred.device)
    s = token_log_scores(pred, emb, score).to(torch.float64)
    return s[:, 0] - s[:, 1]


def _decisions(margins: Tensor, positive: Tensor, bias: float) -> tuple[float, int]:
    eos_wins = bias > margins
    recall = float(eos_wins[positive].float().mean()) if bool(positive.any()) else float("nan")
    return recall, int((eos_wins != positive).sum())


@torch.no_grad()
def calibrate_eos_bias(
    pred: Tensor,
    target: Tensor,
    eos_id: int,
    decoder: Decoder,
    *,
    score: TokenScore = "cosine",
    ignore_index: int | None = None,
) -> EOSBias:
    """Fit the EOS bias of greedy/beam search on teacher-forced predictions (use validation data).

    Args:
        pred: ``[N, D]`` (or ``[..., D]``) predictions at each position.
        target: ``[N]`` (or ``[...]``) reference next tokens.
        eos_id: the EOS id.
        decoder: the decoder the search uses (its table scores the tokens).
        score: ``"cosine"`` or ``"vmf"``, as in the search.
        ignore_index: target id of positions to leave out (padding).

    Example:
        >>> from lightning_contloss.decoding import ExactDecoder
        >>> table = torch.eye(3)  # EOS = 2
        >>> pred = torch.tensor([[1.0, 0.0, 0.6], [1.0, 0.0, 0.7], [1.0, 0.0, 0.1], [0.0, 1.0, 0.2]])
        >>> fit = calibrate_eos_bias(pred, torch.tensor([2, 2, 0, 1]), 2, ExactDecoder(table))
        >>> fit.eos_recall_before, fit.eos_recall_after, fit.errors_after
        (0.0, 1.0, 0)
    """
    if not isinstance(pred, Tensor) or not pred.is_floating_point() or pred.dim() < 1:
        raise ValueError(f"pred must be a float tensor [..., D], got {type(pred).__name__}")
    if pred.shape[-1] != decoder.dim:
        raise ValueError(f"pred has dim {pred.shape[-1]} but the decoder's table has dim {decoder.dim}")
    if not isinstance(target, Tensor) or tuple(target.shape) != tuple(pred.shape[:-1]):
        got = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"target must be the reference ids of shape {tuple(pred.shape[:-1])}, got {got}")
    try:
        eos = int_arg(eos_id, "eos_id")
    except ValueError:  # int_arg's wrong-type error is a ValueError too
        eos = -1
    if not 0 <= eos < len(decoder):
        raise ValueError(f"eos_id must be an id in 0..{len(decoder) - 1}, got {eos_id!r}")
    eos_id = eos
    flat, ids = pred.reshape(-1, pred.shape[-1]), target.reshape(-1)
    if ignore_index is not None:
        keep = ids != ignore_index
        flat, ids = flat[keep], ids[keep]
    if flat.shape[0] == 0:
        raise ValueError("no positions left to calibrate on (all are ignore_index); pass validation predictions")
    if not bool(torch.isfinite(flat).all()):
        raise ValueError("pred holds NaN or inf; calibrate on the predictions of a model that has not diverged")
    positive = (ids == eos_id).to(flat.device)
    margins = _margins(flat, eos_id, decoder, score)
    # EOS wins iff bias > margin: the error count only changes at the margins, so the best bias
    # is a midpoint between two sorted margins or beyond the extremes.
    m, order = margins.sort()
    pos_sorted = positive[order].to(torch.int64)
    cum_pos = torch.cat([pos_sorted.new_zeros(1), pos_sorted.cumsum(0)])
    cum_neg = torch.arange(m.numel() + 1, device=m.device) - cum_pos
    candidates = torch.cat([m[:1] - 1.0, (m[1:] + m[:-1]) / 2, m[-1:] + 1.0, m.new_zeros(1)])
    # below = margins < c (EOS wins there): wrong for the negatives below, the positives above.
    below = torch.searchsorted(m, candidates, side="left")
    errors = (cum_pos[-1] - cum_pos[below]) + cum_neg[below]
    best = errors.min()
    tied = candidates[errors == best]
    bias = float(tied[tied.abs().argmin()])
    recall_before, errors_before = _decisions(margins, positive, 0.0)
    recall_after, errors_after = _decisions(margins, positive, bias)
    return EOSBias(bias, recall_before, recall_after, errors_before, errors_after, int(flat.shape[0]))
