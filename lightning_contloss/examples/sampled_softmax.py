"""The sampled softmax: a full ``Linear(H, V)`` trained against K negatives shared by the batch."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_contloss._arguments import int_arg
from lightning_contloss.examples.output_layer import FullSoftmax
from lightning_contloss.functional.sampled_softmax import sampled_softmax_loss

__all__ = ["PROPOSALS", "SampledSoftmax", "proposal_log_probs"]

PROPOSALS = ("log_uniform", "uniform", "unigram")


def proposal_log_probs(kind: str, vocab_size: int, counts: Tensor | None = None) -> Tensor:
    """``[V]`` log-probabilities of the negative sampler's proposal distribution.

    ``"uniform"``: ``1/V``. ``"log_uniform"``: Zipf's law over frequency ranks,
    ``q(r) = log((r + 2) / (r + 1)) / log(V + 1)`` (TensorFlow's log-uniform candidate sampler), with
    ranks from ``counts`` (most frequent first), or the ids themselves when ``counts`` is ``None``.
    ``"unigram"``: the add-one-smoothed ``counts``.

    Args:
        kind: one of :data:`PROPOSALS`.
        vocab_size: V.
        counts: ``[V]`` training counts of each id.

    Example:
        >>> round(proposal_log_probs("log_uniform", 4).exp().sum().item(), 12)
        1.0
        >>> proposal_log_probs("log_uniform", 3, counts=torch.tensor([0, 5, 9])).argmax().item()
        2
    """
    if kind not in PROPOSALS:
        raise ValueError(f"unknown sampler {kind!r}; choose one of {', '.join(PROPOSALS)}")
    if counts is not None and counts.shape != (vocab_size,):
        raise ValueError(f"counts has shape {tuple(counts.shape)}; pass one count per id, [V] = [{vocab_size}]")
    if kind == "uniform":
        return torch.full((vocab_size,), -math.log(vocab_size), dtype=torch.float64)
    if kind == "unigram":
        if counts is None:
            raise ValueError("sampler='unigram' needs counts=[V] training counts (e.g. datamodule.unigram_counts)")
        smoothed = counts.to(torch.float64) + 1.0
        return (smoothed / smoothed.sum()).log()
    ranks = torch.arange(vocab_size, dtype=torch.float64)
    log_q = torch.log1p(1.0 / (ranks + 1.0)).log() - math.log(math.log(vocab_size + 1))
    if counts is None:
        return log_q
    order = torch.argsort(counts.to(torch.float64), descending=True, stable=True)
    return torch.empty_like(log_q).index_put_((order,), log_q)


class SampledSoftmax(FullSoftmax):
    """:class:`FullSoftmax` trained with a sampled softmax over ``num_negatives`` shared negatives.

    Each training step draws ``num_negatives`` ids with replacement from the proposal ``q``
    (:func:`proposal_log_probs`) and computes
    :func:`~lightning_contloss.functional.sampled_softmax_loss` with the logQ correction
    ``log(K · q(c))``, the true class always included. When ``num_negatives >= V`` every id is
    a candidate and the loss is the exact cross-entropy. Scores (validation, prediction) are the
    full ``[.., V]`` logits: the correction makes them estimate the full softmax's.

    Args:
        in_features: H.
        vocab_size: V.
        num_negatives: K, negatives per step shared by every token of the batch.
        sampler: the proposal, one of :data:`PROPOSALS`.
        counts: ``[V]`` training counts (for ``"log_uniform"`` ranks and ``"unigram"``).
        bias: whether the layer has a bias.

    Example:
        >>> head = SampledSoftmax(8, 50, num_negatives=16)
        >>> head.loss(torch.randn(4, 8), torch.tensor([1, 2, 3, 49]), -100).shape
        torch.Size([])
    """

    log_q: Tensor

    def __init__(
        self,
        in_features: int,
        vocab_size: int,
        num_negatives: int = 8192,
        sampler: str = "log_uniform",
        counts: Tensor | None = None,
        bias: bool = True,
    ) -> None:
        num_negatives = int_arg(num_negatives, "num_negatives", 1, rule="a positive integer")
        log_q = proposal_log_probs(sampler, vocab_size, counts)
        super().__init__(in_features, vocab_size, bias=bias)
        self.num_negatives = num_negatives
        self.sampler = sampler
        self.register_buffer("log_q", log_q.float(), persistent=False)

    def negatives(self) -> tuple[Tensor, Tensor]:
        """``(ids [K], log expected counts [V])`` for one step; every id once (and zeros) when ``K >= V``."""
        vocab_size = self.out_features
        if self.num_negatives >= vocab_size:
            return torch.arange(vocab_size, device=self.weight.device), torch.zeros_like(self.log_q)
        ids = torch.multinomial(self.log_q.exp(), self.num_negatives, replacement=True)
        return ids, self.log_q + math.log(self.num_negatives)

    def loss(self, hidden: Tensor, target: Tensor, ignore_index: int) -> Tensor:
        """Token-mean sampled-softmax loss against this step's negatives."""
        ids, log_counts = self.negatives()
        return sampled_softmax_loss(hidden, self.weight, self.bias, target, ids, log_counts, ignore_index=ignore_index)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_negatives={self.num_negatives}, sampler={self.sampler!r}"
