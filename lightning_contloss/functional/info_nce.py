"""InfoNCE: softmax cross-entropy over the target and K negatives shared by the batch."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_contloss.functional._checks import (
    Batch,
    check_exclude,
    check_generator,
    check_ignore_index,
    check_number,
    check_reduction,
    full_precision,
    prepare,
    reduce,
)
from lightning_contloss.functional._negatives import check_counts_fit, check_sampler, sample_negatives
from lightning_contloss.functional.cosine import row_cosine, safe_norm, unit

__all__ = ["info_nce_loss"]

DEFAULT_TEMPERATURE = 0.1
DEFAULT_NUM_NEGATIVES = 1024


def _check_info_nce_loss_args(
    temperature: float,
    num_negatives: int,
    sampler: str,
    counts: Tensor | None,
    power: float,
    generator: torch.Generator | None,
) -> None:
    check_number(temperature, "temperature", low=0.0, low_open=True)
    check_sampler(num_negatives, sampler, counts, power)
    check_generator(generator)


def _info_nce_loss_tokens(
    pred: Tensor,
    ids: Tensor,
    table: Tensor,
    *,
    temperature: float | Tensor,  # a 0-dim tensor when the loss learns τ
    num_negatives: int,
    sampler: str,
    counts: Tensor | None,
    power: float,
    generator: torch.Generator | None,
    exclude: Tensor | None,
    ignore_index: int | None,
) -> tuple[Tensor, Batch]:
    """Per-token InfoNCE loss (``[N]``) and the checked, flattened batch it was computed on."""
    batch = prepare(pred, ids, table, ignore_index)
    num_embeddings = table.shape[0]
    check_counts_fit(sampler, counts, num_embeddings)
    check_exclude(exclude, num_embeddings)
    with full_precision(batch.pred.device):
        positive = row_cosine(batch.pred, batch.rows(table)).unsqueeze(1) / temperature
        neg_ids = sample_negatives(num_embeddings, num_negatives, sampler, counts, power, generator, table.device)
        # 1/τ is folded into the [N, D] query so the [N, K] logits need no extra pass.
        query = batch.pred / (safe_norm(batch.pred) * temperature).unsqueeze(1)
        negative = query @ unit(table[neg_ids].to(batch.dtype)).T
        # A drawn negative that is the token's own target (an accidental hit) is no negative.
        skip = neg_ids[None, :] == batch.ids[:, None]
        if exclude is not None:
            skip |= exclude.to(table.device)[neg_ids][None, :]
        # In place: the product's backward needs its inputs, not its output.
        negative.masked_fill_(skip, float("-inf"))
        # The positive logit is always finite, so logsumexp never sees an all -inf row.
        per_token = torch.logsumexp(torch.cat([positive, negative], dim=1), dim=1) - positive.squeeze(1)
    return per_token, batch


def info_nce_loss(
    pred: Tensor,
    ids: Tensor,
    table: Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    num_negatives: int = DEFAULT_NUM_NEGATIVES,
    sampler: str = "uniform",
    counts: Tensor | None = None,
    power: float = 0.75,
    generator: torch.Generator | None = None,
    exclude: Tensor | None = None,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """InfoNCE: cross-entropy of the target against K sampled negatives, on ``cos / temperature``.

    ``loss = −log softmax([cos(ê, e_w), cos(ê, e_k1), …, cos(ê, e_kK)] / τ)[0]``. The K negatives
    are drawn once per call and shared by every token, so the cost is ``O(N · K · D)`` whatever V
    is. A negative equal to a token's own target (an accidental hit) is masked out for that
    token. ``sampler="unigram"`` draws from ``counts ** power`` (word2vec's smoothed unigram with
    ``power=0.75``). The loss is >= 0. Decode with cosine similarity.

    Args:
        pred: ``[..., D]`` predicted embeddings.
        ids: ``[...]`` target ids into ``table``.
        table: ``[V, D]`` target embeddings.
        temperature: τ > 0.
        num_negatives: K, drawn with replacement.
        sampler: ``"uniform"`` or ``"unigram"``.
        counts: ``[V]`` token counts, needed by ``sampler="unigram"``.
        power: exponent applied to ``counts``.
        generator: random generator for the draws (fix it for reproducible negatives).
        exclude: optional ``[V]`` bool mask of ids never used as negatives (special tokens).
        ignore_index: id of tokens to skip (padding).
        reduction: ``"mean"`` over counted tokens, ``"sum"`` or ``"none"``.

    Example:
        >>> table = torch.eye(3)
        >>> pred = torch.tensor([[1.0, 0.0, 0.0]])
        >>> g = torch.Generator().manual_seed(0)
        >>> info_nce_loss(pred, torch.tensor([0]), table, temperature=1.0, num_negatives=2, generator=g)
        tensor(0.3133)
    """
    check_reduction(reduction)
    check_ignore_index(ignore_index)
    _check_info_nce_loss_args(temperature, num_negatives, sampler, counts, power, generator)
    per_token, batch = _info_nce_loss_tokens(
        pred,
        ids,
        table,
        temperature=temperature,
        num_negatives=num_negatives,
        sampler=sampler,
        counts=counts,
        power=power,
        generator=generator,
        exclude=exclude,
        ignore_index=ignore_index,
    )
    return reduce(per_token, batch, reduction)
