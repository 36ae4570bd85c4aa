"""The base of the continuous losses: a torchmetrics Metric bound to a target table it reads but never owns.

``forward`` returns the batch loss with gradients (use it as the training loss);
``update``/``compute`` accumulate the token-weighted mean over an epoch (sum and count states,
``dist_reduce_fx="sum"``). Each subclass declares ``decode_space``, the similarity a decoder must
rank by for that loss, and :class:`ContinuousLoss` subclasses implement ``_tokens``, calling the
per-token maths of :mod:`lightning_contloss.functional` with their hyper-parameters.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_contloss.functional._checks import Batch, check_ignore_index, check_table, sum_count
from lightning_contloss.functional.scoring import Space
from lightning_contloss.targets import TargetEmbeddings

__all__ = ["ContinuousLoss"]

Targets = TargetEmbeddings | Tensor

# Attributes torchmetrics' forward changes while it runs and restores only on success.
_FORWARD_FLAGS = (
    "_update_count",
    "_to_sync",
    "_should_unsync",
    "compute_on_cpu",
    "_enable_grad",
    "_is_synced",
    "_computed",
)


class _TableBoundLoss(Metric):
    """Sum/count states, the epoch mean, and a target table that is read but never owned."""

    is_differentiable = True
    higher_is_better = False
    full_state_update = False
    decode_space: ClassVar[Space] = "cosine"

    loss_sum: Tensor
    count: Tensor

    def __init__(self, targets: Targets | None = None, *, ignore_index: int | None = None, **kwargs: Any) -> None:
        check_ignore_index(ignore_index)
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.add_state("loss_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")
        # Stored in __dict__ so nn.Module does not register it: the LightningModule owns the
        # table (one copy in state_dict, moved with the model); the loss only reads it.
        self.__dict__["_targets"] = None
        if targets is not None:
            self.bind(targets)

    def bind(self, targets: Targets) -> _TableBoundLoss:
        """Use ``targets`` (a TargetEmbeddings or a ``[V, D]`` tensor) as the target table; returns self.

        Example:
            >>> loss = ContinuousLoss().bind(TargetEmbeddings.random(10, 4))
            >>> loss.targets.dim
            4
        """
        if isinstance(targets, TargetEmbeddings):
            self.__dict__["_targets"] = targets
        elif isinstance(targets, Tensor):
            check_table(targets, "targets")
            self.__dict__["_targets"] = targets.detach()
        else:
            raise ValueError(f"targets must be a TargetEmbeddings or a [V, D] tensor, got {type(targets).__name__}")
        return self

    @property
    def targets(self) -> Targets | None:
        """The bound target table, or ``None`` before :meth:`bind`."""
        targets: Targets | None = self.__dict__["_targets"]
        return targets

    def concentration(self, pred: Tensor) -> Tensor | None:
        """``κ·ê/‖ê‖`` of ``pred [..., D]`` for the κ this loss trains; ``None`` when the loss leaves the norm free.

        A likelihood metric (``vmf_ppl``, BrierLM) reads κ from the norm of what this returns, and
        fits one κ̂ itself on ``None``. Only the vMF loss fixes κ (:meth:`VMFLoss.concentration`).

        Example:
            >>> from lightning_contloss.losses import CosineLoss
            >>> CosineLoss().concentration(torch.ones(1, 4)) is None
            True
        """
        return None

    def _table(self, like: Tensor) -> Tensor:
        targets = self.targets
        if targets is None:
            raise RuntimeError(
                f"{type(self).__name__} has no target table; pass targets=... when building it or call "
                ".bind(targets) first"
            )
        if isinstance(targets, TargetEmbeddings):
            # Read on every call: the module may have moved since it was bound.
            return targets.weight
        if targets.device != like.device:
            # A bare tensor does not move with any module; follow the predictions once.
            targets = targets.to(like.device)
            self.__dict__["_targets"] = targets
        return targets

    def _exclude(self) -> Tensor | None:
        targets = self.targets
        if isinstance(targets, TargetEmbeddings) and bool(targets.special_mask.any()):
            return targets.special_mask
        return None

    def _batch(self, *args: Any) -> tuple[Tensor, Tensor]:
        """Loss sum and token count of one batch, differentiable; subclasses define the inputs."""
        raise TypeError(f"{type(self).__name__} must implement _batch; subclass CosineLoss & co. instead")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The loss of this batch, with gradients; the batch is also added to the epoch state."""
        if self.dist_sync_on_step:
            return self._synced_forward(*args, **kwargs)
        # Not torchmetrics' own forward, on purpose. Its reduce-state path (copy the states, reset,
        # update, compute, merge under no_grad) gives the same value and keeps no graph in the
        # states, but it resets before update, so bad input would lose the epoch's state unless
        # wrapped as in _synced_forward, and it costs about ten more small tensor ops a step:
        # measured +0.2-0.4 ms CPU per call (1.03-1.28x the loss's forward + backward) for cosine
        # and vMF at N = 64..2048, D = 300, one thread. So the batch is computed once and added
        # to the states here, setting the three fields torchmetrics' forward sets.
        total, count = self._batch(*args, **kwargs)
        self._accumulate(total.detach(), count)
        self._update_count += 1
        self._computed = None
        value = total / count.clamp_min(1).to(total.dtype)
        # Detached: the cache is for logging, and a graph in it would stop copy.deepcopy of the module.
        self._forward_cache = value.detach()  # type: ignore[assignment]
        return value

    def _synced_forward(self, *args: Any, **kwargs: Any) -> Any:
        # torchmetrics' forward resets the state before calling update; if update raises on
        # bad input, the epoch's accumulated state and the grad/sync flags would be lost.
        # States are only ever replaced, never mutated, so keeping references is enough.
        saved = {name: getattr(self, name) for name in (*self._defaults, *_FORWARD_FLAGS)}
        try:
            value = super().forward(*args, **kwargs)
        except BaseException:
            for name, old in saved.items():
                setattr(self, name, old)
            raise
        if isinstance(self._forward_cache, Tensor):  # as in forward: no graph kept in the module
            self._forward_cache = self._forward_cache.detach()
        return value

    def _accumulate(self, total: Tensor, count: Tensor) -> None:
        # Out of place, so the batch value computed in forward keeps its graph.
        self.loss_sum = self.loss_sum + total
        self.count = self.count + count

    def compute(self) -> Tensor:
        """Token-weighted mean of the loss over everything accumulated; 0 when nothing counted."""
        return self.loss_sum / self.count.clamp_min(1).to(self.loss_sum.dtype)

    def extra_repr(self) -> str:
        targets = self.targets
        if targets is None:
            table = "unbound"
        else:
            weight = targets.weight if isinstance(targets, TargetEmbeddings) else targets
            table = f"table={tuple(weight.shape)}"
        return f"{table}, ignore_index={self.ignore_index}, decode_space={self.decode_space!r}"


class ContinuousLoss(_TableBoundLoss):
    """Base of the losses called as ``loss(pred [..., D], ids [...])``."""

    def update(self, pred: Tensor, ids: Tensor) -> None:
        """Add the loss of a batch to the running sum and count."""
        self._accumulate(*self._batch(pred, ids))

    def _batch(self, pred: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        return sum_count(*self._tokens(pred, ids, self._table(pred)))

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        """Per-token losses and their batch: the functional maths, with this loss's hyper-parameters."""
        raise TypeError(f"{type(self).__name__} must implement _tokens; subclass CosineLoss & co. instead")
