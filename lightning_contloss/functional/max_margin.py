"""Max-margin (hinge) loss against the most informative negative (Kumar & Tsvetkov, 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_contloss.functional._checks import (
    Batch,
    check_choice,
    check_exclude,
    check_generator,
    check_ignore_index,
    check_number,
    check_positive_int,
    check_reduction,
    full_precision,
    prepare,
    reduce,
)
from lightning_contloss.functional._negatives import sample_negatives
from lightning_contloss.functional.cosine import row_cosine, unit

__all__ = ["max_margin_loss"]

NEGATIVES = ("informative", "sampled", "in_batch")


def _most_informative(
    query: Tensor,
    ids: Tensor,
    candidates: Tensor,
    candidate_ids: Tensor,
    allowed: Tensor | None,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """Per token, the candidate row maximising ``query·c``, visiting ``chunk_size`` rows at a time.

    Candidates equal to the token's own id, or not ``allowed``, are skipped. Returns the ``[N]``
    row index into ``candidates`` and an ``[N]`` bool telling whether any candidate was left.
    A NaN score wins and keeps its place, so a NaN (or infinite) prediction or table row reaches
    the hinge, which is then NaN, instead of passing for a token with no candidate. Memory is
    ``O(N · chunk_size)`` however many candidates there are.
    """
    num = query.shape[0]
    best = torch.full((num,), float("-inf"), dtype=query.dtype, device=query.device)
    arg = torch.zeros(num, dtype=torch.long, device=query.device)
    for start in range(0, candidates.shape[0], chunk_size):
        rows = unit(candidates[start : start + chunk_size].to(query.dtype))
        cids = candidate_ids[start : start + chunk_size]
        scores = query @ rows.T
        skip = cids[None, :] == ids[:, None]
        if allowed is not None:
            skip |= ~allowed[start : start + chunk_size][None, :]
        scores.masked_fill_(skip, float("-inf"))
        # max() returns a row's NaN, and where it is, when the row holds one.
        top, where = scores.max(dim=1)
        better = (top > best) | (top.isnan() & ~best.isnan())
        best = torch.where(better, top, best)
        arg = torch.where(better, where + start, arg)
    # Only a token whose every candidate was skipped is left at -inf (NaN is not).
    return arg, best != float("-inf")


def _check_max_margin_loss_args(
    margin: float, negatives: str, num_negatives: int, chunk_size: int, generator: torch.Generator | None
) -> None:
    check_number(margin, "margin", low=0.0)
    check_choice(negatives, "negatives", NEGATIVES)
    if negatives == "sampled":
        check_positive_int(num_negatives, "num_negatives")
    check_positive_int(chunk_size, "chunk_size")
    check_generator(generator)


def _max_margin_loss_tokens(
    pred: Tensor,
    ids: Tensor,
    table: Tensor,
    *,
    margin: float,
    negatives: str,
    num_negatives: int,
    chunk_size: int,
    generator: torch.Generator | None,
    exclude: Tensor | None,
    ignore_index: int | None,
) -> tuple[Tensor, Batch]:
    """Per-token hinge loss (``[N]``) and the checked, flattened batch it was computed on."""
    batch = prepare(pred, ids, table, ignore_index)
    num_embeddings = table.shape[0]
    check_exclude(exclude, num_embeddings)
    with full_precision(batch.pred.device):
        target = batch.rows(table)
        allowed = None if exclude is None else ~exclude.to(table.device)
        if negatives == "informative":
            cand, cand_ids = table, torch.arange(num_embeddings, device=table.device)
        elif negatives == "sampled":
            cand_ids = sample_negatives(num_embeddings, num_negatives, "uniform", None, 0.0, generator, table.device)
            cand = table[cand_ids]
        else:
            cand_ids, cand = batch.ids, table[batch.ids]
        if allowed is not None:
            allowed = allowed[cand_ids]
        if negatives == "in_batch" and batch.mask is not None:
            allowed = batch.mask if allowed is None else allowed & batch.mask
        with torch.no_grad():
            # cos(ê, e_j) − cos(e_w, e_j) = (û − ŵ)·ê_j: one product per chunk instead of two.
            query = unit(batch.pred) - unit(target)
            pick, found = _most_informative(query, batch.ids, cand, cand_ids, allowed, chunk_size)
        negative = cand[pick].to(batch.dtype)
        hinge = F.relu(margin + row_cosine(batch.pred, negative) - row_cosine(batch.pred, target))
        # hinge * 0, not zeros: 0 where the prediction is finite, NaN where it is not, so even a
        # token with no candidate cannot hide a NaN prediction.
        per_token = torch.where(found, hinge, hinge * 0.0)
    return per_token, batch


def max_margin_loss(
    pred: Tensor,
    ids: Tensor,
    table: Tensor,
    margin: float = 0.5,
    negatives: str = "informative",
    num_negatives: int = 1024,
    chunk_size: int = 2048,
    generator: torch.Generator | None = None,
    exclude: Tensor | None = None,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Hinge loss ``max(0, margin + cos(ê, e_j*) − cos(ê, e_w))`` with an informative negative j*.

    j* is Kumar & Tsvetkov's most informative negative, ``argmax_{j ≠ w} [cos(ê, e_j) −
    cos(e_w, e_j)]``: a word the prediction is close to but the target is not (so near-synonyms
    of the target are not pushed away). The candidates j depend on ``negatives``:

    * ``"informative"``: the whole vocabulary, visited ``chunk_size`` rows at a time so memory is
      ``O(N · chunk_size)``; time is ``O(N · V · D)`` (as expensive as a softmax forward pass);
    * ``"sampled"``: ``num_negatives`` uniform ids shared by the batch, ``O(N · K · D)``;
    * ``"in_batch"``: the other tokens' targets, ``O(N² · D)``.

    The search runs without gradient; the gradient flows through the chosen rows only. A token
    with no candidate left (e.g. every in-batch target equals its own) contributes 0. The loss
    is >= 0; a NaN or infinite prediction gives NaN for its token (and so for the mean), as in
    the other losses, even when it has no candidate. Decode with cosine similarity.

    Args:
        pred: ``[..., D]`` predicted embeddings.
        ids: ``[...]`` target ids into ``table``.
        table: ``[V, D]`` target embeddings.
        margin: the hinge margin (0.5 in the paper's code).
        negatives: ``"informative"``, ``"sampled"`` or ``"in_batch"``.
        num_negatives: K for ``negatives="sampled"``.
        chunk_size: candidate rows scored at once.
        generator: random generator for ``negatives="sampled"``.
        exclude: optional ``[V]`` bool mask of ids never used as negatives (special tokens).
        ignore_index: id of tokens to skip (padding); they are never in-batch negatives either.
        reduction: ``"mean"`` over counted tokens, ``"sum"`` or ``"none"``.

    Example:
        >>> table = torch.eye(3)
        >>> pred = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
        >>> max_margin_loss(pred, torch.tensor([0, 0]), table, reduction="none")
        tensor([0.0000, 0.5000])
    """
    check_reduction(reduction)
    check_ignore_index(ignore_index)
    _check_max_margin_loss_args(margin, negatives, num_negatives, chunk_size, generator)
    per_token, batch = _max_margin_loss_tokens(
        pred,
        ids,
        table,
        margin=margin,
        negatives=negatives,
        num_negatives=num_negatives,
        chunk_size=chunk_size,
        generator=generator,
        exclude=exclude,
        ignore_index=ignore_index,
    )
    return reduce(per_token, batch, reduction)
