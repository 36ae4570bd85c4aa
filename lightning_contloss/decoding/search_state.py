"""StatefulStep: a model step for greedy/beam search that keeps state (a KV cache, the encoder output).

The prefix form of a search step, ``step_fn(prefix_ids) -> pred``, recomputes the model over the
whole prefix at every step. A :class:`StatefulStep` is called once with the start tokens and no
state, then once per generated token with that token alone and the state it returned last:

* ``step(ids, None) -> (pred, state)`` on the first call: ``ids`` is ``start`` (``[B, t0]``),
  so an encoder-decoder runs its encoder here, once per source;
* ``step(ids, state) -> (pred, state)`` afterwards: ``ids`` is ``[B', 1]``, the token each live
  row generated last;
* ``reorder(state, index) -> state`` between the two, whenever rows end or beams are re-ranked:
  row ``i`` of the new state must be row ``index[i]`` of the old one. ``index`` may repeat rows
  (two beams extending one hypothesis) and leave rows out (finished sequences). It must return
  the state, also when it reorders in place: ``None`` for a state that was not ``None`` is a
  ``TypeError`` (the next step would take it for the first call and start over).

The default :func:`reorder_state` handles a state made of tensors whose first dimension is the
row (batch-first), nested in tuples, lists and dicts, with ``None`` and plain Python numbers and
strings passed through, and objects with a ``reorder_cache(index)`` method (Hugging Face's
``Cache`` classes). Pass ``reorder=`` for anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["StatefulStep", "StepRunner", "reorder_state"]

StateStepFn = Callable[[Tensor, Any], tuple[Tensor, Any]]
ReorderFn = Callable[[Any, Tensor], Any]


def reorder_state(state: Any, index: Tensor) -> Any:
    """Select rows ``index`` of every batch-first tensor in a (nested) search state.

    Args:
        state: a tensor ``[B, ...]``; a tuple, list or dict of states; ``None``, a number or a
            string (kept as is); or an object with ``reorder_cache(index)`` (reordered in place).
        index: ``[B']`` int64 row indices into the old state (repeats allowed).

    Returns:
        the state with rows ``index``, of the same structure.

    Example:
        >>> state = {"memory": torch.arange(6.0).view(3, 2), "offset": 4}
        >>> new = reorder_state(state, torch.tensor([2, 2, 0]))
        >>> new["memory"].tolist(), new["offset"]
        ([[4.0, 5.0], [4.0, 5.0], [0.0, 1.0]], 4)
    """
    if isinstance(state, Tensor):
        if state.dim() == 0:
            return state
        return state.index_select(0, index.to(state.device))
    if state is None or isinstance(state, bool | int | float | str):
        return state
    if isinstance(state, tuple):
        items = [reorder_state(s, index) for s in state]
        # NamedTuples are rebuilt from their fields, plain tuples from the list.
        return type(state)(*items) if hasattr(state, "_fields") else tuple(items)
    if isinstance(state, list):
        return [reorder_state(s, index) for s in state]
    if isinstance(state, dict):
        return {key: reorder_state(value, index) for key, value in state.items()}
    reorder_cache = getattr(state, "reorder_cache", None)
    if callable(reorder_cache):
        reorder_cache(index)
        return state
    raise TypeError(
        f"cannot reorder a search state of type {type(state).__name__}: the default reorder handles "
        "batch-first tensors in tuples, lists and dicts, and objects with reorder_cache(index); pass "
        "StatefulStep(step, reorder=fn) with fn(state, index) -> state"
    )


class StatefulStep:
    """A search step with state: ``step(ids, state) -> (pred, state)`` and ``reorder(state, index)``.

    Pass one as ``step_fn`` to :func:`~lightning_contloss.greedy_decode` or
    :func:`~lightning_contloss.beam_search`; the search then feeds it the last token only (see
    the module docs). Either wrap two functions, or subclass and override :meth:`step` (and
    :meth:`reorder` if the state is not batch-first tensors).

    Args:
        step: ``(ids [B', t], state | None) -> (pred [B', D], state)``.
        reorder: ``(state, index [B']) -> state``; default :func:`reorder_state`.

    Example:
        >>> from lightning_contloss.decoding import ExactDecoder, greedy_decode
        >>> table = torch.eye(4)  # ids 0..3; 3 is EOS
        >>> def step(ids, state):  # the state is the last id; the search feeds one token at a time
        ...     last = ids[:, -1]
        ...     return table[(last + 1).clamp(max=3)], last
        >>> out = greedy_decode(StatefulStep(step), torch.tensor([[0], [2]]), 5, 3, ExactDecoder(table))
        >>> out.ids.tolist()
        [[1, 2, 3], [3, 3, 3]]
    """

    def __init__(self, step: StateStepFn | None = None, reorder: ReorderFn | None = None) -> None:
        if step is not None and not callable(step):
            raise ValueError(f"step must be a callable (ids, state) -> (pred, state), got {type(step).__name__}")
        if step is None and type(self).step is StatefulStep.step:
            # Said when the step is made, not at the search's first call.
            raise TypeError(
                f"{type(self).__name__} has no step: pass StatefulStep(step=fn) or override step(ids, state)"
            )
        if reorder is not None and not callable(reorder):
            raise ValueError(f"reorder must be a callable (state, index) -> state, got {type(reorder).__name__}")
        self._step = step
        self._reorder = reorder

    def step(self, ids: Tensor, state: Any) -> tuple[Tensor, Any]:
        """The predictions for the next token of each row, and the state after ``ids``.

        Args:
            ids: ``[B, t0]`` start tokens (first call, ``state`` None) or ``[B', 1]`` last tokens.
            state: ``None`` on the first call, else what the previous call (then :meth:`reorder`)
                returned.
        """
        assert self._step is not None  # __init__ refuses a StatefulStep with neither
        return self._step(ids, state)

    def reorder(self, state: Any, index: Tensor) -> Any:
        """Rows ``index`` of ``state`` (see :func:`reorder_state`)."""
        return (self._reorder or reorder_state)(state, index)


class StepRunner:
    """Drives a search step in either form, for a search loop (the package's and your own).

    Call it with each step's history (start tokens and tokens so far, one row per live
    hypothesis, rows in the order the state has them); it passes the whole history to a
    prefix-form step, and the start tokens (first call) or the last token to a
    :class:`StatefulStep`. After the loop decides which rows go on, :meth:`keep` reorders the
    state (a no-op for the prefix form).

    Args:
        step_fn: ``prefix_ids -> output`` or a :class:`StatefulStep`.

    Example:
        >>> runner = StepRunner(StatefulStep(lambda ids, state: (ids[:, -1:].float(), ids)))
        >>> runner(torch.tensor([[5, 6], [7, 8]]), 0).tolist()
        [[6.0], [8.0]]
        >>> runner.keep(torch.tensor([1]), 2)
        >>> runner.state.tolist()
        [[7, 8]]
    """

    def __init__(self, step_fn: Callable[[Tensor], Any] | StatefulStep) -> None:
        self.step_fn = step_fn
        self.state: Any = None

    @property
    def stateful(self) -> bool:
        """Whether the step keeps state."""
        return isinstance(self.step_fn, StatefulStep)

    def __call__(self, history: Tensor, t: int) -> Any:
        """The step's output for each row of ``history [N, t0 + t]``."""
        fn = self.step_fn
        if not isinstance(fn, StatefulStep):
            return fn(history)
        ids = history if t == 0 else history[:, -1:]
        out = fn.step(ids, None if t == 0 else self.state)
        if not isinstance(out, tuple) or len(out) != 2:
            raise ValueError(
                f"a StatefulStep's step must return (pred, state), got {type(out).__name__}"
                + (f" of length {len(out)}" if isinstance(out, tuple) else "")
            )
        self.state = out[1]
        return out[0]

    def keep(self, index: Tensor, previous_rows: int) -> None:
        """Rows ``index`` of the ``previous_rows`` current rows go on (repeats allowed)."""
        fn = self.step_fn
        if not isinstance(fn, StatefulStep):
            return
        rows = index.numel()
        if rows == previous_rows and bool((index == torch.arange(rows, device=index.device)).all()):
            return
        state = fn.reorder(self.state, index)
        if state is None and self.state is not None:
            # The next step would see None, the first call's signal, and restart every row.
            raise TypeError(
                f"{type(fn).__name__}.reorder(state, index) returned None for a state of type "
                f"{type(self.state).__name__}; it must return the reordered state (a reorder that works "
                "in place must still end with `return state`)"
            )
        self.state = state
