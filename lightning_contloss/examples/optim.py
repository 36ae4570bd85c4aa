"""AdamW with linear warm-up, then a constant or cosine learning rate: the examples' shared optimiser."""

from __future__ import annotations

import math
from typing import Any, Literal

from torch import nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupSchedule", "configure_warmup_adamw", "warmup_adamw"]

Schedule = Literal["constant", "cosine"]


class WarmupSchedule:
    """Learning-rate factor per optimiser step: linear warm-up, then constant or cosine decay.

    During the first ``warmup_steps`` steps the factor rises linearly to 1. After that it
    stays at 1 (``"constant"``), or follows a half cosine from 1 down to ``min_ratio`` at
    ``total_steps`` and stays there (``"cosine"``).

    Args:
        warmup_steps: steps of linear warm-up (0 for none).
        schedule: ``"constant"`` or ``"cosine"``.
        total_steps: the step where the cosine reaches ``min_ratio``; required for ``"cosine"``.
        min_ratio: the cosine's final factor.

    Example:
        >>> f = WarmupSchedule(warmup_steps=4, schedule="cosine", total_steps=14, min_ratio=0.0)
        >>> [round(f(s), 2) for s in (0, 3, 4, 9, 14, 20)]
        [0.25, 1.0, 1.0, 0.5, 0.0, 0.0]
    """

    def __init__(
        self,
        warmup_steps: int,
        schedule: Schedule = "constant",
        total_steps: int | None = None,
        min_ratio: float = 0.1,
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be 0 or more, got {warmup_steps}")
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown schedule {schedule!r}; choose 'constant' or 'cosine'")
        if schedule == "cosine" and (total_steps is None or total_steps <= warmup_steps):
            raise ValueError(
                f"the cosine schedule needs total_steps > warmup_steps={warmup_steps}, got {total_steps}; "
                f"give the Trainer max_steps (or max_epochs), or use schedule='constant'"
            )
        if not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
        self.warmup_steps = warmup_steps
        self.schedule = schedule
        self.total_steps = total_steps
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant" or self.total_steps is None:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_adamw(
    module: nn.Module,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    schedule: Schedule = "constant",
    total_steps: float | None = None,
    betas: tuple[float, float] = (0.9, 0.98),
) -> dict[str, Any]:
    """AdamW plus a per-step :class:`WarmupSchedule`, in the form ``configure_optimizers`` returns.

    Weight decay applies to matrices only (linear and embedding weights); biases and
    LayerNorm parameters are not decayed, as is usual for Transformers.

    Args:
        module: the module whose trainable parameters are optimised.
        lr: peak learning rate.
        weight_decay: decoupled weight decay of the matrices.
        warmup_steps: steps of linear warm-up.
        schedule: ``"constant"`` or ``"cosine"`` after the warm-up.
        total_steps: length of the cosine, e.g. ``trainer.estimated_stepping_batches``; an
            infinite value (a run bounded only by ``max_time``) is rejected for ``"cosine"``.
        betas: AdamW's betas.

    Example:
        >>> config = warmup_adamw(torch.nn.Linear(4, 2), lr=1e-3, weight_decay=0.01, warmup_steps=10)
        >>> schedule = config["lr_scheduler"]
        >>> schedule.get("interval"), schedule.get("scheduler").get_last_lr()
        ('step', [0.0001, 0.0001])
    """
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be 0 or more, got {weight_decay}")
    total = None if total_steps is None or not math.isfinite(total_steps) else int(total_steps)
    factor = WarmupSchedule(warmup_steps, schedule, total)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the module has no trainable parameters; unfreeze some before optimising")
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = AdamW([g for g in groups if g["params"]], lr=lr, betas=betas)
    scheduler = LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def configure_warmup_adamw(module: Any) -> dict[str, Any]:
    """:func:`warmup_adamw` over the module's trainable parameters from its hyper-parameters (``lr``,
    ``weight_decay``, ``warmup_steps``, ``schedule``): the examples' ``configure_optimizers``.

    The body is ``module.model``; a loss with parameters of its own (a learned InfoNCE
    temperature) is optimised with it.

    The cosine schedule ends at the trainer's ``estimated_stepping_batches``.

    Example:
        >>> import lightning as L
        >>> class Tiny(L.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.save_hyperparameters({"lr": 1e-3, "weight_decay": 0, "warmup_steps": 2, "schedule": "cosine"})
        ...         self.model = nn.Linear(2, 2)
        >>> module = Tiny()
        >>> module.hparams.schedule = "constant"
        >>> type(configure_warmup_adamw(module)["optimizer"]).__name__
        'AdamW'
    """
    hp = module.hparams
    total = module.trainer.estimated_stepping_batches if hp["schedule"] == "cosine" else None
    return warmup_adamw(
        module,
        lr=hp["lr"],
        weight_decay=hp["weight_decay"],
        warmup_steps=hp["warmup_steps"],
        schedule=hp["schedule"],
        total_steps=total,
    )
