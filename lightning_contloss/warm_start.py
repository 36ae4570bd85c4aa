"""WarmStartLoss: train with one continuous loss for the first N training batches, then with another."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_contloss._arguments import int_arg
from lightning_contloss.functional._checks import Batch
from lightning_contloss.functional.scoring import Space
from lightning_contloss.losses.base import ContinuousLoss, Targets

__all__ = ["WarmStartLoss"]


class WarmStartLoss(ContinuousLoss):
    """``first`` for the first ``steps`` training batches, ``then`` from batch ``steps`` on.

    Kumar & Tsvetkov's advice for vMF: start with the cosine loss, which trains the direction
    from any start, and switch to vMF once predictions point roughly right (vMF from scratch
    can settle at κ = 0). Written ``WarmStartLoss(CosineLoss(), VMFLoss(), steps=1000)``.

    The counter is the number of batches this loss has seen in ``forward`` while in training
    mode (``loss.train()``, which Lightning sets for ``training_step``); validation, ``update``
    and eval mode never advance it. With gradient accumulation it counts batches, not optimiser
    steps. It is saved in ``state_dict`` (``_extra_state``), so a resumed run switches at the
    same batch. Both losses must decode in the same space (the decoder and index are built once)
    and skip the same ``ignore_index``.

    Args:
        first: the warm-start loss (a :class:`~lightning_contloss.losses.ContinuousLoss`).
        then: the loss used from batch ``steps`` on.
        steps: warm-start batches, >= 1.
        targets: a TargetEmbeddings or ``[V, D]`` tensor (bound to both losses); or bind later.
        kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> import torch
        >>> from lightning_contloss.losses import CosineLoss, VMFLoss
        >>> loss = WarmStartLoss(CosineLoss(), VMFLoss(), steps=2, targets=torch.eye(4))
        >>> pred, ids = torch.randn(3, 4), torch.tensor([0, 1, 2])
        >>> used = []
        >>> for _ in range(3):
        ...     used.append(type(loss.active).__name__)
        ...     _ = loss(pred, ids)
        >>> used
        ['CosineLoss', 'CosineLoss', 'VMFLoss']
        >>> loss.steps_done, loss.decode_space
        (3, 'cosine')
    """

    def __init__(
        self,
        first: ContinuousLoss,
        then: ContinuousLoss,
        steps: int,
        targets: Targets | None = None,
        **kwargs: Any,
    ) -> None:
        for name, loss in (("first", first), ("then", then)):
            if not isinstance(loss, ContinuousLoss):
                raise ValueError(
                    f"{name} must be a ContinuousLoss called as loss(pred, ids) (CosineLoss(), VMFLoss(), ...), "
                    f"got {type(loss).__name__}; warm-start a composition by wrapping its main loss"
                )
        if first.decode_space != then.decode_space:
            raise ValueError(
                f"first decodes by {first.decode_space!r} but then by {then.decode_space!r}; a warm start needs "
                "losses of one decode space (the index is built once), e.g. cosine then vmf"
            )
        if first.ignore_index != then.ignore_index:
            raise ValueError(
                f"first skips ignore_index={first.ignore_index} but then skips {then.ignore_index}; "
                "build both with the same ignore_index"
            )
        steps = int_arg(steps, "steps", 1, rule="a positive int (the warm-start batches)")
        super().__init__(None, ignore_index=first.ignore_index, **kwargs)
        self.first = first
        self.then = then
        self.steps = steps
        self.steps_done = 0
        if targets is not None:
            self.bind(targets)

    # A property, where the other losses have a class constant: it is whatever the pair shares.
    @property
    def decode_space(self) -> Space:  # type: ignore[override]
        """The decode space both losses share."""
        return self.first.decode_space

    @property
    def active(self) -> ContinuousLoss:
        """The loss the next training batch uses: ``first`` before ``steps`` batches, ``then`` after."""
        return self.first if self.steps_done < self.steps else self.then

    def bind(self, targets: Targets) -> WarmStartLoss:
        """Use ``targets`` as the table of this loss and of both wrapped losses; returns self."""
        super().bind(targets)
        self.first.bind(targets)
        self.then.bind(targets)
        return self

    def _tokens(self, pred: Tensor, ids: Tensor, table: Tensor) -> tuple[Tensor, Batch]:
        return self.active._tokens(pred, ids, table)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The batch loss of the active loss, with gradients; a training batch advances the counter."""
        value = super().forward(*args, **kwargs)
        if self.training:  # after the batch succeeded: a refused batch does not count
            self.steps_done += 1
        return value

    def get_extra_state(self) -> dict[str, int]:
        """The batch counter, saved in ``state_dict`` as ``_extra_state``."""
        return {"steps_done": self.steps_done, "steps": self.steps}

    def set_extra_state(self, state: Any) -> None:
        """Restore the batch counter of :meth:`get_extra_state` (``steps`` stays as built)."""
        done = state.get("steps_done") if isinstance(state, dict) else None
        if isinstance(done, bool) or not isinstance(done, int) or done < 0:
            raise ValueError(
                f"the state dict's warm-start counter must be {{'steps_done': int >= 0, ...}}, got {state!r}; "
                "load a state dict saved from a WarmStartLoss"
            )
        self.steps_done = done

    def extra_repr(self) -> str:
        return f"steps={self.steps}, steps_done={self.steps_done}, decode_space={self.decode_space!r}"
