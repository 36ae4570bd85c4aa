"""The adaptive softmax: ``nn.AdaptiveLogSoftmaxWithLoss`` with its clusters cut by word frequency."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

__all__ = ["AdaptiveSoftmax", "default_cutoffs"]


def default_cutoffs(vocab_size: int) -> list[int]:
    """Cluster boundaries in frequency-rank space: ``[V/20, V/4]`` (20k and 100k at V = 400k).

    Args:
        vocab_size: V.

    Example:
        >>> default_cutoffs(400_000), default_cutoffs(128_000)
        ([20000, 100000], [6400, 32000])
    """
    cutoffs = sorted({max(1, round(vocab_size * f)) for f in (1 / 20, 1 / 4)})
    return [c for c in cutoffs if c < vocab_size - 1] or [max(1, vocab_size // 2)]


class AdaptiveSoftmax(nn.Module):
    """Grave et al.'s adaptive softmax (torch's ``nn.AdaptiveLogSoftmaxWithLoss``) over ids ranked by frequency.

    The head scores the ``cutoffs[0]`` most frequent ids and one entry per tail cluster; each
    tail cluster (ranks ``cutoffs[i]..cutoffs[i+1]``) has a low-rank projection of width
    ``H / div_value^(i+1)``. torch's module needs the frequent ids first; ``counts`` supplies the
    ranking, so any vocabulary order works (``None``: the ids are already most frequent first).
    Scores are full ``[.., V]`` log-probabilities in id order.

    Args:
        in_features: H.
        vocab_size: V.
        cutoffs: increasing rank boundaries, each in ``1..V-2``; ``None`` for :func:`default_cutoffs`.
        div_value: width divisor between successive clusters.
        counts: ``[V]`` training counts of each id (ranks them).

    Example:
        >>> head = AdaptiveSoftmax(8, 50, counts=torch.arange(50.0))
        >>> head(torch.randn(3, 8)).logsumexp(dim=-1).allclose(torch.zeros(3), atol=1e-5)
        True
    """

    rank_of: Tensor
    order: Tensor

    def __init__(
        self,
        in_features: int,
        vocab_size: int,
        cutoffs: list[int] | None = None,
        div_value: float = 4.0,
        counts: Tensor | None = None,
    ) -> None:
        super().__init__()
        cutoffs = default_cutoffs(vocab_size) if cutoffs is None else list(cutoffs)
        if not cutoffs or cutoffs != sorted(set(cutoffs)) or cutoffs[0] < 1 or cutoffs[-1] > vocab_size - 2:
            raise ValueError(
                f"cutoffs must be strictly increasing ranks in 1..{vocab_size - 2} (V - 2), got {cutoffs}; "
                "e.g. [V // 20, V // 4]"
            )
        if counts is not None and counts.shape != (vocab_size,):
            raise ValueError(f"counts has shape {tuple(counts.shape)}; pass one count per id, [V] = [{vocab_size}]")
        self.vocab_size = vocab_size
        self.cutoffs = cutoffs
        self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(in_features, vocab_size, cutoffs, div_value, head_bias=True)
        order = (
            torch.arange(vocab_size)
            if counts is None
            else torch.argsort(counts.to(torch.float64), descending=True, stable=True)
        )
        self.register_buffer("order", order)  # rank -> id
        self.register_buffer("rank_of", torch.empty_like(order).index_put_((order,), torch.arange(vocab_size)))

    def forward(self, hidden: Tensor) -> Tensor:
        """Log-probabilities ``[..., V]`` (id order) for ``hidden [..., H]``."""
        by_rank = self.adaptive.log_prob(hidden.reshape(-1, hidden.shape[-1]))
        return by_rank[:, self.rank_of].reshape(*hidden.shape[:-1], self.vocab_size)

    def loss(self, hidden: Tensor, target: Tensor, ignore_index: int) -> Tensor:
        """Token-mean negative log-likelihood; only the clusters a token needs are computed."""
        keep = target != ignore_index
        return self.adaptive(hidden[keep], self.rank_of[target[keep]]).loss

    def init_prior(self, log_prior: Tensor) -> None:
        """Start the head at ``log_prior [V]``: shortlist ids at their own, each cluster at its total mass."""
        if log_prior.shape != (self.vocab_size,):
            raise ValueError(f"log_prior has shape {tuple(log_prior.shape)}; pass [V] = [{self.vocab_size}]")
        by_rank = log_prior.to(self.order.device)[self.order]
        bounds = [*self.cutoffs, self.vocab_size]
        clusters = [by_rank[a:b].logsumexp(0) for a, b in itertools.pairwise(bounds)]
        bias = self.adaptive.head.bias
        assert bias is not None  # built with head_bias=True
        with torch.no_grad():
            bias.copy_(torch.cat([by_rank[: self.cutoffs[0]], torch.stack(clusters)]).to(bias))

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, cutoffs={self.cutoffs}"
