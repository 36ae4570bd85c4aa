"""Cut Cross-Entropy (the ``cut-cross-entropy`` package) as a softmax output layer, where it runs."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_contloss.examples.output_layer import FullSoftmax

__all__ = ["CutCrossEntropySoftmax", "import_cut_cross_entropy"]

INSTALL = "pip install cut-cross-entropy (it imports triton on Linux, even for impl='torch_compile')"


def import_cut_cross_entropy() -> Any:
    """The ``cut_cross_entropy`` module, or an ``ImportError`` that says why it will not import and what to install."""
    try:
        import cut_cross_entropy
    except Exception as err:  # a broken optional dependency fails in many ways (ImportError, AttributeError, ...)
        raise ImportError(f"cut-cross-entropy does not import here ({type(err).__name__}: {err}); {INSTALL}") from err
    return cut_cross_entropy


class CutCrossEntropySoftmax(FullSoftmax):
    """:class:`FullSoftmax` trained with ``cut_cross_entropy.linear_cross_entropy`` (Wijmans et al., 2024).

    ``impl="cce"`` is the package's Triton kernel (GPU only); ``"torch_compile"`` its
    ``torch.compile``'d reference, which materialises the logits like the plain softmax. The
    default picks ``"cce"`` when CUDA is available. The package's API takes no bias, so the bias is
    folded in as an extra classifier column against a constant-1 hidden feature (one ``[V, H+1]``
    copy per step), which keeps the log-unigram prior of the other rivals.

    Args:
        in_features: H.
        vocab_size: V.
        impl: ``"cce"``, ``"torch_compile"`` or ``None`` (by device).
        bias: whether the layer has a bias.

    Raises:
        ImportError: when ``cut_cross_entropy`` does not import (see :func:`import_cut_cross_entropy`).
    """

    def __init__(self, in_features: int, vocab_size: int, impl: str | None = None, bias: bool = True) -> None:
        cce = import_cut_cross_entropy()
        if impl not in (None, "cce", "torch_compile"):
            raise ValueError(f"impl must be 'cce', 'torch_compile' or None, got {impl!r}")
        super().__init__(in_features, vocab_size, bias=bias)
        self._cce = cce
        self.impl = impl or ("cce" if torch.cuda.is_available() else "torch_compile")

    def loss(self, hidden: Tensor, target: Tensor, ignore_index: int) -> Tensor:
        """Token-mean cross-entropy through the package."""
        e, c = hidden, self.weight
        if self.bias is not None:
            e = torch.cat([hidden, hidden.new_ones(hidden.shape[0], 1)], dim=1)
            c = torch.cat([self.weight, self.bias[:, None]], dim=1)
        loss: Tensor = self._cce.linear_cross_entropy(
            e, c.to(e.dtype), target, ignore_index=ignore_index, impl=self.impl
        )
        return loss

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, impl={self.impl!r}"
