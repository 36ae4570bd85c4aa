"""Stop training on a non-finite loss, with an error that names the step and says what to try.

A NaN or inf prediction makes every continuous loss NaN or inf; its gradient then turns the
weights NaN at the next optimizer step and training runs to the end on a dead model. Lightning
removed its ``terminate_on_nan`` flag, and ``Trainer(detect_anomaly=True)`` (autograd's anomaly
mode) is too slow to leave on, so :class:`~lightning_contloss.ContinuousOutputMixin` checks the
loss itself, before it is returned to the optimizer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["check_finite_loss"]


def _where(module: Any) -> str:
    trainer = getattr(module, "_trainer", None)
    if trainer is None:
        return "(outside a Trainer)"
    step = getattr(trainer, "global_step", "?")
    epoch = getattr(trainer, "current_epoch", "?")
    batch = getattr(getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None), "batch_idx", "?")
    return f"at global step {step} (epoch {epoch}, batch {batch})"


def check_finite_loss(module: Any, value: Tensor) -> None:
    """Raise ``FloatingPointError`` if the training loss ``value`` is NaN or infinite.

    One device-to-host read of the scalar per step (the progress bar reads the logged loss
    anyway). A module with ``continuous_check_finite = False`` skips the check.

    Args:
        module: the module that computed the loss (its trainer, if any, gives the step).
        value: the loss, a scalar tensor.

    Example:
        >>> check_finite_loss(None, torch.tensor(0.5))
        >>> check_finite_loss(None, torch.tensor(float("nan")))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FloatingPointError: the training loss is nan (outside a Trainer): ...
    """
    if not getattr(module, "continuous_check_finite", True):
        return
    finite = torch.isfinite(value.detach())
    if bool(finite.all()):
        return
    bad = value.detach()[~finite].flatten()[0].item()
    raise FloatingPointError(
        f"the training loss is {bad} {_where(module)}: the predictions, or the weights behind them, are no longer "
        "finite, so training stops before the optimizer applies a non-finite gradient. Lower the learning rate, clip "
        "gradients (Trainer(gradient_clip_val=1.0)), train in bf16 or fp32 rather than fp16, and check this batch's "
        "inputs; Trainer(detect_anomaly=True) names the operation that made the first NaN. To train on regardless, "
        "set continuous_check_finite = False on the module"
    )
