"""Generated bad input to greedy_decode and beam_search (issue 25's systematic step).

Each example takes a valid search and spoils one thing, drawn by category: a wrong type, a
wrong shape, a non-finite value, an empty input, a huge value, or a vocabulary that does not
match. The search must either return a well-formed result (where the input is merely unusual,
e.g. an empty batch) or raise a ``ValueError``/``TypeError`` that names what was wrong; an
argument at fault is refused before the model runs; and nothing the search was given changes:
the same start tokens and decoder then give the reference result again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from lightning_contloss import SearchRules, StatefulStep
from lightning_contloss.decoding import ExactDecoder, SearchResult, beam_search, greedy_decode

V, D, EOS, BOS = 6, 6, 3, 5
TABLE = torch.eye(D)[:V]
# Every token has one successor, so every path reaches EOS: BOS -> 0 -> 1 -> 2 -> EOS, 4 -> EOS.
NEXT = torch.tensor([1, 2, EOS, EOS, EOS, 0])
START = torch.tensor([[BOS], [0], [4]])


class Model:
    """The toy model in prefix or stateful form, counting its calls; ``spoil(call, pred)`` may alter its output."""

    def __init__(self, stateful: bool, spoil: Callable[[int, Tensor], Any] | None = None) -> None:
        self.calls = 0
        self.spoil = spoil
        self.step_fn: Any = StatefulStep(self._stateful) if stateful else self._prefix

    def _pred(self, last: Tensor) -> Any:
        pred = TABLE[NEXT[last]]
        self.calls += 1
        return pred if self.spoil is None else self.spoil(self.calls - 1, pred)

    def _prefix(self, prefix: Tensor) -> Any:
        return self._pred(prefix[:, -1])

    def _stateful(self, ids: Tensor, state: Any) -> tuple[Any, Tensor]:
        return self._pred(ids[:, -1]), ids[:, -1:]


def search(kind: str, **args: Any) -> SearchResult:
    if kind == "greedy":
        for beam_only in ("beam_size", "length_penalty", "length_norm"):
            args.pop(beam_only, None)
        return greedy_decode(**args)
    return beam_search(**{"beam_size": 2, **args})


def decoder() -> ExactDecoder:
    return ExactDecoder(TABLE, exclude=[BOS])


def assert_well_formed(out: SearchResult, batch: int, max_len: int) -> None:
    assert out.ids.dtype == torch.int64 and out.ids.shape[0] == batch and out.ids.shape[1] <= max_len
    assert out.lengths.shape == (batch,) and bool((out.lengths <= max_len).all())
    assert bool(torch.isfinite(out.scores).all()) or batch == 0
    for row, n in zip(out.ids.tolist(), out.lengths.tolist()):
        assert all(0 <= t < V and t != BOS for t in row[:n])


@dataclass(frozen=True)
class Case:
    """One spoiled search: an argument replaced, or the model's output spoiled; what the error must name."""

    category: str
    change: dict[str, Any]
    names: str | None  # a word the error must contain; None: the search must succeed
    spoil: Callable[[int, Tensor], Any] | None = None
    beam_only: bool = False


# ------------------------------------------------------------------------- the categories
ARGUMENTS = {"max_len", "eos_id", "pad_id", "beam_size", "num_candidates", "length_penalty", "score", "length_norm",
             "rules", "decoder", "step_fn", "start"}
NOT_INT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.booleans(),
    st.lists(st.integers(0, 5), max_size=2),
    st.just(np.float32(2.0)),
    st.just(torch.tensor([2, 3])),
    st.just(torch.tensor(2.0)),
)
NOT_NUMBER = st.one_of(st.text(max_size=3), st.booleans(), st.none(), st.lists(st.floats(), max_size=2))


@st.composite
def wrong_type(draw: st.DrawFn) -> Case:
    arg = draw(st.sampled_from(sorted(ARGUMENTS)))
    value: Any
    if arg in ("max_len", "eos_id", "pad_id", "beam_size", "num_candidates"):
        value = draw(NOT_INT)
    elif arg == "length_penalty":
        value = draw(NOT_NUMBER)
    elif arg in ("score", "length_norm"):
        value = draw(st.one_of(st.text(max_size=4), st.none(), st.integers(), st.just(["vmf"])))
        if arg == "score" and value in ("cosine", "vmf"):
            value = "cos"
        if arg == "length_norm" and value in ("plain", "gnmt"):
            value = "wu"
    elif arg in ("rules", "decoder", "step_fn"):
        value = draw(st.sampled_from([{"min_length": 2}, 3, "exact", TABLE, [SearchRules()]]))
    else:
        value = draw(st.sampled_from([START.tolist(), START.numpy(), START.float(), START > 0, "BOS", 4.0]))
    beam_only = arg in ("beam_size", "length_penalty", "length_norm")
    return Case("wrong type", {arg: value}, arg, beam_only=beam_only)


@st.composite
def wrong_shape(draw: st.DrawFn) -> Case:
    which = draw(st.sampled_from(["start", "pred"]))
    if which == "start":
        shape = draw(st.sampled_from([(), (3, 1, 1), (2, 0), (1, 1, 1, 1)]))
        return Case("wrong shape", {"start": torch.full(shape, BOS, dtype=torch.int64)}, "start")
    call = draw(st.integers(0, 3))
    reshape = draw(st.sampled_from(["rows+1", "rows-1", "flat", "extra dim", "dim-1", "scalar"]))

    def spoil(i: int, pred: Tensor) -> Tensor:
        if i != call:
            return pred
        return {
            "rows+1": lambda: torch.cat([pred, pred[:1]]),
            "rows-1": lambda: pred[1:],
            "flat": lambda: pred.flatten(),
            "extra dim": lambda: pred[..., None],
            "dim-1": lambda: pred[:, :-1],
            "scalar": lambda: pred.sum(),
        }[reshape]()

    return Case("wrong shape", {}, "step_fn", spoil=spoil)


@st.composite
def non_finite(draw: st.DrawFn) -> Case:
    bad = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    where = draw(st.sampled_from(["pred", "length_penalty", "eos_bias"]))
    if where == "length_penalty":
        return Case("non-finite", {"length_penalty": bad}, "length_penalty", beam_only=True)
    if where == "eos_bias":
        return Case("non-finite", {"rules": lambda: SearchRules(eos_bias=bad)}, "eos_bias")
    call, row, col = draw(st.integers(0, 3)), draw(st.integers(0, 5)), draw(st.integers(0, D - 1))

    def spoil(i: int, pred: Tensor) -> Tensor:
        if i == call:
            pred = pred.clone()
            pred[row % pred.shape[0], col] = bad
        return pred

    return Case("non-finite", {}, "NaN or inf", spoil=spoil)


@st.composite
def empty(draw: st.DrawFn) -> Case:
    which = draw(st.sampled_from(["batch", "batch 1-D", "no start token", "empty step output"]))
    if which == "batch":
        return Case("empty", {"start": torch.zeros(0, draw(st.integers(1, 3)), dtype=torch.int64)}, None)
    if which == "batch 1-D":
        return Case("empty", {"start": torch.zeros(0, dtype=torch.int64)}, None)
    if which == "no start token":
        return Case("empty", {"start": torch.zeros(draw(st.integers(0, 3)), 0, dtype=torch.int64)}, "start")
    return Case("empty", {}, "step_fn", spoil=lambda i, pred: pred[:0])


@st.composite
def huge(draw: st.DrawFn) -> Case:
    which = draw(st.sampled_from(["max_len", "num_candidates", "beam_size", "pad_id", "eos_id", "length_penalty"]))
    if which == "max_len":  # an upper bound, not an allocation: the search ends at EOS
        return Case("huge", {"max_len": draw(st.integers(10**6, 10**30))}, None)
    if which == "num_candidates":  # capped by the returnable tokens
        return Case("huge", {"num_candidates": draw(st.integers(10**6, 10**30))}, None)
    if which == "beam_size":  # more memory than any machine has: refused, not allocated
        return Case("huge", {"beam_size": draw(st.integers(10**13, 10**30))}, "beam_size", beam_only=True)
    if which == "pad_id":
        pad = draw(st.one_of(st.integers(2**63, 2**80), st.integers(-(2**80), -(2**63) - 1)))
        return Case("huge", {"pad_id": pad}, "pad_id")
    if which == "eos_id":
        return Case("huge", {"eos_id": draw(st.integers(V, 2**80))}, "eos_id")
    return Case("huge", {"length_penalty": draw(st.floats(1e3, 1e300))}, "length_penalty", beam_only=True)


@st.composite
def mismatched_vocabulary(draw: st.DrawFn) -> Case:
    which = draw(st.sampled_from(["eos out of range", "eos excluded", "decoder dim", "pred dim"]))
    if which == "eos out of range":
        return Case("vocabulary", {"eos_id": draw(st.one_of(st.integers(V, V + 3), st.integers(-3, -1)))}, "eos_id")
    if which == "eos excluded":
        return Case("vocabulary", {"eos_id": BOS}, "eos_id")
    if which == "decoder dim":
        dim = draw(st.sampled_from([D - 2, D + 3]))
        return Case("vocabulary", {"decoder": lambda: ExactDecoder(torch.eye(V, dim))}, "step_fn")
    return Case("vocabulary", {}, "step_fn", spoil=lambda i, pred: torch.cat([pred, pred[:, :1]], dim=1))


CASES = st.one_of(wrong_type(), wrong_shape(), non_finite(), empty(), huge(), mismatched_vocabulary())


# ------------------------------------------------------------------------- the property
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    case=CASES,
    kind=st.sampled_from(["greedy", "beam"]),
    stateful=st.booleans(),
    score=st.sampled_from(["cosine", "vmf"]),
)
def test_bad_input_is_refused_clearly_and_changes_nothing(case: Case, kind: str, stateful: bool, score: str) -> None:
    if case.beam_only and kind == "greedy":
        kind = "beam"
    if "max_len" in case.change and kind == "beam":
        score = "cosine"  # vMF beams have no early stop: a huge max_len would be searched to the end
    model = Model(stateful, case.spoil)
    dec = decoder()
    start = START.clone()
    args: dict[str, Any] = {
        "step_fn": model.step_fn, "start": start, "max_len": 5, "eos_id": EOS, "decoder": dec, "score": score
    }
    try:
        args.update({k: v() if callable(v) and k in ("rules", "decoder") else v for k, v in case.change.items()})
    except (ValueError, TypeError) as err:  # the spoiled argument is refused as it is built (SearchRules)
        assert case.names is not None and case.names in str(err), (case, err)
        return
    table, returnable = dec.table.clone(), dec.returnable.clone()

    if case.names is None:
        out = search(kind, **args)
        given_start = args["start"]
        assert_well_formed(out, given_start.shape[0] if given_start.dim() else 0, int(args["max_len"]))
    else:
        with pytest.raises((ValueError, TypeError)) as info:
            search(kind, **args)
        assert case.names in str(info.value), (case, str(info.value))
        if case.spoil is None and not callable(case.change.get("decoder")):
            assert model.calls == 0, f"{case}: the model ran before the arguments were checked"

    # Nothing the search was given has changed: the same inputs give the reference result again.
    assert torch.equal(start, START) and torch.equal(dec.table, table) and torch.equal(dec.returnable, returnable)
    again = search(kind, step_fn=Model(stateful).step_fn, start=start, max_len=5, eos_id=EOS, decoder=dec, score=score)
    fresh = {"start": START, "max_len": 5, "eos_id": EOS, "decoder": decoder(), "score": score}
    ref = search(kind, step_fn=Model(stateful).step_fn, **fresh)
    assert again.ids.tolist() == ref.ids.tolist() and torch.equal(again.scores, ref.scores)


def test_every_category_is_drawn() -> None:
    # The property above is only as good as its cases: each category yields both outcomes it should.
    seen: set[tuple[str, bool]] = set()

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(CASES)
    def collect(case: Case) -> None:
        seen.add((case.category, case.names is None))

    collect()
    expected = {(c, False) for c in ("wrong type", "wrong shape", "non-finite", "empty", "huge", "vocabulary")}
    assert expected | {("empty", True), ("huge", True)} <= seen
