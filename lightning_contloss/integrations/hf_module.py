"""ContinuousHFModule: the LightningModule that holds a reloaded continuous Hugging Face model."""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import nn

from lightning_contloss.mixin import ContinuousOutputMixin

__all__ = ["ContinuousHFModule"]


class ContinuousHFModule(ContinuousOutputMixin, L.LightningModule):
    """A ``LightningModule`` around a converted Hugging Face model; :func:`load_continuous` returns one.

    It owns the target table and the loss, as the module that converted the model did, so
    ``module.model.generate(...)``, ``module.model(..., labels=...)`` and ``module.continuous_decode(...)``
    work as before the save. Calling the module calls the model. To train it further, subclass
    it with a ``training_step`` and ``configure_optimizers`` (or load the weights into your own
    module).

    Args:
        model: the Hugging Face model, not yet converted; :func:`load_continuous` then calls
            :meth:`replace_softmax_head` on it.

    Example:
        >>> ContinuousHFModule(torch.nn.Linear(2, 3)).model
        Linear(in_features=2, out_features=3, bias=True)
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)
