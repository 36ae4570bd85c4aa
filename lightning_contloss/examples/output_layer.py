"""The output layer of a softmax-family LM, as :class:`~lightning_contloss.examples.SoftmaxLM` drives it.

An output layer maps hidden states to scores over the whole vocabulary (what validation,
prediction and generation rank) and computes its own training loss (where the rivals differ:
a full softmax, a chunked one, a sampled one, an adaptive one). :class:`FullSoftmax` is the
default: ``nn.Linear(H, V)`` and ``F.cross_entropy``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FullSoftmax", "OutputLayer", "score_chunks"]

# Validation and prediction score at most this many (token, id) pairs at once (64 MB in fp32).
SCORE_ELEMENTS = 1 << 24


@runtime_checkable
class OutputLayer(Protocol):
    """What :class:`~lightning_contloss.examples.SoftmaxLM` needs of its ``model.lm_head``.

    ``forward(hidden [..., H])`` returns ``[..., V]`` scores whose ``log_softmax`` is the model's
    next-token distribution (logits, or log-probabilities); ``loss`` is the training loss;
    ``init_prior`` starts the scores at a log unigram distribution.
    """

    def __call__(self, hidden: Tensor) -> Tensor: ...

    def loss(self, hidden: Tensor, target: Tensor, ignore_index: int) -> Tensor:
        """Token-mean training loss of ``hidden [N, H]`` against ``target [N]``, skipping ``ignore_index``."""
        ...

    def init_prior(self, log_prior: Tensor) -> None:
        """Start the scores at ``log_prior [V]`` (a normalised log unigram distribution)."""
        ...


class FullSoftmax(nn.Linear):
    """``nn.Linear(in_features, vocab_size)`` trained with full cross-entropy: the plain softmax.

    Args:
        in_features: H.
        vocab_size: V.
        bias: whether the layer has a bias (needed for ``init_prior``).

    Example:
        >>> head = FullSoftmax(8, 20)
        >>> h, y = torch.randn(5, 8), torch.randint(0, 20, (5,))
        >>> torch.allclose(head.loss(h, y, -100), F.cross_entropy(head(h), y))
        True
    """

    def __init__(self, in_features: int, vocab_size: int, bias: bool = True) -> None:
        super().__init__(in_features, vocab_size, bias=bias)

    def loss(self, hidden: Tensor, target: Tensor, ignore_index: int) -> Tensor:
        """Cross-entropy over the full ``[N, V]`` logits."""
        return F.cross_entropy(self(hidden).float(), target, ignore_index=ignore_index)

    def init_prior(self, log_prior: Tensor) -> None:
        """Copy ``log_prior [V]`` into the bias."""
        if self.bias is None:
            raise ValueError(f"{type(self).__name__} was built with bias=False; there is no bias to set the prior in")
        if log_prior.shape != self.bias.shape:
            raise ValueError(f"log_prior has shape {tuple(log_prior.shape)}, the bias {tuple(self.bias.shape)}")
        with torch.no_grad():
            self.bias.copy_(log_prior.to(self.bias))


def score_chunks(hidden: Tensor, vocab_size: int) -> list[Tensor]:
    """``hidden [N, H]`` split into row blocks whose ``[rows, V]`` scores stay under 2^24 elements.

    Args:
        hidden: ``[N, H]`` hidden states.
        vocab_size: V.

    Example:
        >>> [c.shape[0] for c in score_chunks(torch.zeros(10, 4), 1 << 22)]
        [4, 4, 2]
    """
    rows = max(1, SCORE_ELEMENTS // max(vocab_size, 1))
    return list(hidden.split(rows))
