"""The chunked exact softmax: a full ``Linear(H, V)`` whose cross-entropy never materialises the ``[N, V]`` logits."""

from __future__ import annotations

from torch import Tensor

from lightning_contloss._arguments import int_arg
from lightning_contloss.examples.output_layer import FullSoftmax
from lightning_contloss.functional.linear_cross_entropy import DEFAULT_CHUNK_SIZE, linear_cross_entropy

__all__ = ["ChunkedSoftmax"]


class ChunkedSoftmax(FullSoftmax):
    """:class:`FullSoftmax` trained through :func:`~lightning_contloss.functional.linear_cross_entropy`.

    The same model and the same loss as the full softmax, to float32 rounding; the training step
    holds one ``[N, chunk_size]`` block of logits instead of ``[N, V]`` logits and their gradient,
    and computes the logits twice (Liger Kernel's and Cut Cross-Entropy's idea, in plain PyTorch).

    Args:
        in_features: H.
        vocab_size: V.
        chunk_size: vocabulary rows per chunk.
        bias: whether the layer has a bias.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> head = ChunkedSoftmax(8, 20, chunk_size=6)
        >>> h, y = torch.randn(5, 8), torch.randint(0, 20, (5,))
        >>> torch.allclose(head.loss(h, y, -100), F.cross_entropy(head(h), y))
        True
    """

    def __init__(self, in_features: int, vocab_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE, bias: bool = True):
        chunk_size = int_arg(chunk_size, "chunk_size", 1, rule="a positive integer")
        super().__init__(in_features, vocab_size, bias=bias)
        self.chunk_size = chunk_size

    def loss(self, hidden: Tensor, target: Tensor, ignore_index: int) -> Tensor:
        """Exact token-mean cross-entropy, chunk by chunk over the vocabulary."""
        return linear_cross_entropy(
            hidden, self.weight, self.bias, target, ignore_index=ignore_index, chunk_size=self.chunk_size
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chunk_size={self.chunk_size}"
