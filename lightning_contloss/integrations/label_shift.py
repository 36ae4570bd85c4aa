"""Warn once when a language model's targets are its inputs unshifted (the usual missing-shift bug)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

__all__ = ["ShiftCheck"]

_MESSAGE = (
    "the targets passed to continuous_loss equal the model's {what} position by position, so every position "
    "is trained to predict its own input token. Hugging Face and litgpt models do not shift targets for you "
    "(only labels= does, inside the model): pass pred[:, :-1] with ids[:, 1:], build (inputs, next tokens) "
    "batches, or for a Hugging Face model call model(input_ids, labels=input_ids) and use its .loss"
)


class ShiftCheck:
    """Remembers a model's last input ids and warns once if targets equal them.

    A library model records its inputs on each forward (:meth:`record`); the mixin calls
    :meth:`check` with the targets of ``continuous_loss``. The check runs on the first
    ``max_checks`` calls only: a missing shift is a bug in the training step, present from
    the first batch, and each comparison synchronises with the accelerator.

    Args:
        what: how the message names the inputs, e.g. ``"input_ids"``.
        max_checks: comparisons before the check switches itself off.

    Example:
        >>> check = ShiftCheck("input_ids")
        >>> ids = torch.tensor([[5, 6, 7]])
        >>> check.record(ids)
        >>> check.check(ids[:, 1:])  # shifted: fine
        >>> check.record(ids)
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     check.check(ids)
        >>> "position by position" in str(caught[0].message)
        True
    """

    def __init__(self, what: str, max_checks: int = 4) -> None:
        self.what = what
        self.checks_left = max_checks
        self._last: Tensor | None = None

    def record(self, ids: Any) -> None:
        """Remember ``ids`` if they are token ids and the check is still on."""
        if self.checks_left > 0 and isinstance(ids, Tensor) and not ids.is_floating_point():
            self._last = ids.detach()

    def check(self, targets: Tensor) -> None:
        """Warn (once) if ``targets`` equal the last recorded inputs and are not constant."""
        last, self._last = self._last, None
        if self.checks_left <= 0 or last is None or not isinstance(targets, Tensor):
            return
        if targets.shape != last.shape or targets.dim() == 0 or targets.shape[-1] < 2:
            return
        self.checks_left -= 1
        varies = bool((targets[..., 1:] != targets[..., :-1]).any())
        if varies and torch.equal(targets, last.to(targets.device)):
            self.checks_left = 0
            warnings.warn(_MESSAGE.format(what=self.what), UserWarning, stacklevel=4)

    def __getstate__(self) -> dict[str, Any]:
        # The recorded batch is transient: it is not part of a checkpoint or a pickled model.
        return {**self.__dict__, "_last": None}
