"""WallClockBudget: stop training after a budget of training seconds and sample accuracy on the way."""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L
from lightning.pytorch.callbacks import Callback

__all__ = ["WallClockBudget"]


class WallClockBudget(Callback):
    """Stops ``fit`` after ``budget_s`` seconds of training and evaluates every ``eval_every_s`` seconds.

    The clock counts training only: time spent in ``evaluate`` is paused out, so every run
    of a comparison gets the same training time whatever its evaluation costs. Each point is
    ``(train_seconds, tokens_seen, value)``; ``tokens_seen`` is read from the module.

    Args:
        budget_s: training seconds before ``trainer.should_stop`` is set.
        eval_every_s: training seconds between evaluations.
        evaluate: ``module -> float``, e.g. accuracy on a fixed validation subset.

    Example:
        >>> cb = WallClockBudget(10.0, 2.0, lambda module: 0.0)
        >>> cb.points
        []
    """

    def __init__(self, budget_s: float, eval_every_s: float, evaluate: Callable[[L.LightningModule], float]) -> None:
        if budget_s <= 0 or eval_every_s <= 0:
            raise ValueError(f"budget_s and eval_every_s must be positive, got {budget_s} and {eval_every_s}")
        self.budget_s = budget_s
        self.eval_every_s = eval_every_s
        self.evaluate = evaluate
        self.points: list[tuple[float, int, float]] = []
        self.train_seconds = 0.0
        self._start = 0.0
        self._paused = 0.0
        self._next = eval_every_s

    def _elapsed(self) -> float:
        return time.perf_counter() - self._start - self._paused

    def _record(self, pl_module: L.LightningModule, elapsed: float) -> None:
        start = time.perf_counter()
        value = self.evaluate(pl_module)
        self._paused += time.perf_counter() - start
        self.points.append((elapsed, int(getattr(pl_module, "tokens_seen", 0)), value))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._paused = 0.0
        self._record(pl_module, 0.0)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int
    ) -> None:
        elapsed = self._elapsed()
        self.train_seconds = elapsed
        if elapsed >= self.budget_s:
            self._record(pl_module, elapsed)
            trainer.should_stop = True
        elif elapsed >= self._next:
            self._record(pl_module, elapsed)
            self._next = elapsed + self.eval_every_s
