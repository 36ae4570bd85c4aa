"""Recall@k of an approximate decoder (HNSW) against exact search."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_contloss._arguments import int_arg, is_real
from lightning_contloss.metrics.neighbor_accuracy import _check_ids

__all__ = ["DecodingRecall", "decoding_recall"]


def _check_rtol(rtol: float) -> float:
    if not is_real(rtol) or not math.isfinite(rtol) or rtol < 0:
        raise ValueError(f"rtol must be a finite number >= 0, got {rtol!r}")
    return float(rtol)


def _decoding_recall_update(
    approx_ids: Tensor | None,
    exact_ids: Tensor | None,
    k: int,
    target: Tensor | None = None,
    ignore_index: int | None = None,
    approx_scores: Tensor | None = None,
    exact_scores: Tensor | None = None,
    rtol: float = 1e-5,
) -> tuple[Tensor, Tensor]:
    """Sum of per-query recalls and the number of queries counted: the one definition of recall.

    Each of the first ``k`` approximate results is found when its id is among the exact top-k
    ids, or, with scores, when its score is at least the exact k-th best score within
    ``rtol · max(1, |score|)``: so a tie (e.g. a copy of a duplicated row) is found whatever its
    id. A query's recall is ``min(found, its exact results) / its exact results``.
    """
    if (approx_ids is None) != (exact_ids is None) or (approx_scores is None) != (exact_scores is None):
        raise ValueError("pass approx_ids together with exact_ids, and approx_scores together with exact_scores")
    given = {
        name: x
        for name, x in (
            ("approx_ids", approx_ids),
            ("exact_ids", exact_ids),
            ("approx_scores", approx_scores),
            ("exact_scores", exact_scores),
        )
        if x is not None
    }
    if not given:
        raise ValueError("pass approx_ids and exact_ids, or approx_scores and exact_scores (or all four)")
    for name, x in given.items():
        if name.endswith("_ids"):
            _check_ids(x, name)
        elif not isinstance(x, Tensor) or not x.is_floating_point():
            what = str(x.dtype) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a floating-point tensor of decoder scores, got {what}")
    lead = next(iter(given.values())).shape[:-1]
    if any(x.dim() == 0 or x.shape[:-1] != lead for x in given.values()):
        shapes = ", ".join(f"{n} {tuple(x.shape)}" for n, x in given.items())
        raise ValueError(f"got {shapes}; pass all as [..., K] results for the same queries")
    for name, x in given.items():
        if x.shape[-1] < k:
            raise ValueError(f"{name} has {x.shape[-1]} results per query but k={k}; query both decoders with k >= {k}")
    if target is not None:
        _check_ids(target, "target")
        if target.shape != lead:
            raise ValueError(
                f"target has shape {tuple(target.shape)} but the results are for queries of shape {tuple(lead)}; "
                "pass one target id per query, or no target"
            )
    rtol = _check_rtol(rtol)
    flat = {name: x.reshape(-1, x.shape[-1])[:, :k] for name, x in given.items()}
    first = next(iter(flat.values()))
    device = first.device
    # Negative exact ids are "no result" (hnswlib pads with -1 when fewer than k rows can be
    # returned): a query's recall is over the exact results it has, which come first.
    valid = flat["exact_ids"].to(device) >= 0 if exact_ids is not None else torch.ones_like(first, dtype=torch.bool)
    if target is not None and ignore_index is not None:
        valid &= (target.reshape(-1, 1) != ignore_index).to(device)
    have = valid.sum(dim=-1)
    found = torch.zeros_like(valid)
    if approx_ids is not None:
        approx, exact = flat["approx_ids"], flat["exact_ids"].to(device)
        found |= ((approx.unsqueeze(-1) == exact.unsqueeze(-2)) & valid.unsqueeze(-2)).any(dim=-1)
    if approx_scores is not None:
        kth = flat["exact_scores"].to(device).gather(1, (have - 1).clamp_min(0).unsqueeze(-1))
        ties = flat["approx_scores"].to(kth) >= kth - rtol * kth.abs().clamp_min(1.0)
        found |= ties & (flat["approx_ids"] >= 0) if approx_ids is not None else ties
    counted = have > 0
    recall = found.sum(dim=-1).minimum(have)[counted].float() / have[counted]
    return recall.sum(), counted.sum()


def decoding_recall(
    approx_ids: Tensor,
    exact_ids: Tensor,
    k: int = 1,
    target: Tensor | None = None,
    ignore_index: int | None = None,
    *,
    approx_scores: Tensor | None = None,
    exact_scores: Tensor | None = None,
    rtol: float = 1e-5,
) -> Tensor:
    """Mean ``|approx top-k ∩ exact top-k| / k`` over queries, ties counted as found when scores are given.

    With scores, an approximate result also counts as found when its score is at least the
    exact k-th best score (within ``rtol · max(1, |score|)``): a copy of a duplicated row is then
    as good as the id exact search returned. This is the recall ``tune_ef`` tunes to
    (:func:`~lightning_contloss.decoding.knn_recall`, the same rule on scores alone); without
    scores only ids are compared.

    Args:
        approx_ids: ``[..., K]`` ids from the approximate decoder, best first.
        exact_ids: ``[..., K']`` ids from exact search for the same queries; negative ids mean
            "no result" and shrink that query's denominator.
        k: how many results of each are compared.
        target: optional ``[...]`` true ids of the queries, only to skip padding.
        ignore_index: queries whose target is this id are skipped.
        approx_scores: optional ``[..., K]`` scores of ``approx_ids`` (pass with ``exact_scores``).
        exact_scores: optional ``[..., K']`` scores of ``exact_ids``, best first.
        rtol: relative tolerance for rounding differences between the two searches.

    Returns:
        Scalar float recall in ``[0, 1]``; NaN when no query has an exact result.

    Example:
        >>> decoding_recall(torch.tensor([[1, 2], [5, 6]]), torch.tensor([[2, 1], [5, 9]]), k=2)
        tensor(0.7500)
        >>> s = torch.tensor([[0.9]])  # id 7 is a copy of id 3: same row, same score
        >>> decoding_recall(torch.tensor([[7]]), torch.tensor([[3]]), approx_scores=s, exact_scores=s)
        tensor(1.)
    """
    total, count = _decoding_recall_update(
        approx_ids, exact_ids, k, target, ignore_index, approx_scores, exact_scores, rtol
    )
    return total / count


class DecodingRecall(Metric):
    """Recall@k of an approximate decoder against exact search, averaged over queries.

    A result is found when its id is among the exact top-k or, when ``update`` gets scores,
    when its score ties the exact k-th best (see :func:`decoding_recall`), so the logged recall
    is the one :func:`~lightning_contloss.decoding.tune_ef` tunes to.

    Args:
        k: how many results of each decoder are compared.
        ignore_index: queries whose target (passed to ``update``) is this id are skipped.
        rtol: relative tolerance of the score comparison.
        kwargs: passed to ``torchmetrics.Metric``.

    Example:
        >>> m = DecodingRecall(k=2)
        >>> m.update(torch.tensor([[1, 2], [5, 6]]), torch.tensor([[2, 1], [5, 9]]))
        >>> m.compute()
        tensor(0.7500)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    recall_sum: Tensor
    total: Tensor

    def __init__(self, k: int = 1, ignore_index: int | None = None, rtol: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.k = int_arg(k, "k", 1, rule="a positive int")
        self.ignore_index = ignore_index
        self.rtol = _check_rtol(rtol)
        self.add_state("recall_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(
        self,
        approx_ids: Tensor,
        exact_ids: Tensor,
        target: Tensor | None = None,
        *,
        approx_scores: Tensor | None = None,
        exact_scores: Tensor | None = None,
    ) -> None:
        """Add queries: ``approx_ids [..., K]``, ``exact_ids [..., K']`` (best first), optional ``target [...]``.

        Pass the decoders' ``approx_scores [..., K]`` and ``exact_scores [..., K']`` too, so that
        ties (duplicate rows) count as found, as in ``tune_ef``.
        """
        recall, count = _decoding_recall_update(
            approx_ids, exact_ids, self.k, target, self.ignore_index, approx_scores, exact_scores, self.rtol
        )
        self.recall_sum += recall.to(self.recall_sum.device)
        self.total += count.to(self.total.device)

    def compute(self) -> Tensor:
        """Mean recall@k over the queries so far (NaN when none was counted)."""
        return self.recall_sum / self.total
