"""Which rows the likelihood metrics score: pick_likelihood_rows and its helpers, as pure functions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_contloss.callbacks import AUTO_METRIC_STRIDE, AUTO_METRIC_TOKENS, pick_likelihood_rows
from lightning_contloss.callbacks.sampling import likelihood_budget, sequence_shape

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None)
shapes_strategy = st.lists(st.tuples(st.integers(0, 12), st.integers(1, 6)), min_size=0, max_size=6)


def covered_rows(picks: list[tuple[int, int, int]]) -> list[int]:
    return [row for start, n, length in picks for row in range(start, start + n * length)]


def test_sequence_shape() -> None:
    assert sequence_shape(torch.zeros(4, 8, 16)) == (4, 8)
    assert sequence_shape(torch.zeros(2, 3, 8, 16)) == (6, 8)  # leading dims are sequences
    assert sequence_shape(torch.zeros(5, 16)) == (5, 1)
    assert sequence_shape(torch.zeros(0, 8, 16)) == (0, 8)


def test_likelihood_budget() -> None:
    assert likelihood_budget("auto", shared=True, scored=0) == (AUTO_METRIC_TOKENS, 1)
    assert likelihood_budget("auto", shared=False, scored=100) == (AUTO_METRIC_TOKENS - 100, AUTO_METRIC_STRIDE)
    assert likelihood_budget(50, shared=False, scored=60) == (-10, 1)  # an int budget takes every sequence
    assert likelihood_budget(0, shared=True, scored=0) == (0, 1)


def test_an_int_budget_takes_whole_sequences_from_the_start() -> None:
    # 20 tokens: 3 sequences of 8 (the last one passes the budget), nothing from the second batch.
    assert pick_likelihood_rows([(4, 8), (4, 8)], budget=20) == [(0, 3, 8)]
    # A budget that the first batch does not fill continues in the next one, at its offset.
    assert pick_likelihood_rows([(2, 8), (4, 5)], budget=26) == [(0, 2, 8), (16, 2, 5)]
    assert pick_likelihood_rows([(4, 8)], budget=0) == []


def test_the_stride_counts_sequences_over_the_epoch() -> None:
    # 40 sequences, 16 seen earlier this epoch: global indices 16..55, so 16, 32 and 48 are picked.
    picks = pick_likelihood_rows([(40, 3)], budget=10_000, stride=16, seen=16)
    assert picks == [(0, 1, 3), (16 * 3, 1, 3), (32 * 3, 1, 3)]
    # The budget stops the picking: 2 tokens left, one sequence of 3.
    assert pick_likelihood_rows([(40, 3)], budget=2, stride=16) == [(0, 1, 3)]


@SETTINGS
@given(shapes=shapes_strategy, budget=st.integers(-5, 120), stride=st.sampled_from([1, 2, 16]), seen=st.integers(0, 40))
def test_picks_are_whole_sequences_inside_the_buffer_and_within_the_budget(
    shapes: list[tuple[int, int]], budget: int, stride: int, seen: int
) -> None:
    picks = pick_likelihood_rows(shapes, budget, stride, seen)
    total_rows = sum(n * length for n, length in shapes)
    rows = covered_rows(picks)
    assert len(rows) == len(set(rows)) and all(0 <= r < total_rows for r in rows)
    assert rows == sorted(rows)
    bounds = [(sum(n * length for n, length in shapes[:i]), n, length) for i, (n, length) in enumerate(shapes)]
    for start, count, length in picks:
        if count == 0:
            continue
        # Each pick is whole sequences of one batch, starting at one of its sequence boundaries.
        assert any(
            b <= start and start + count * length <= b + n * size and (start - b) % size == 0 and size == length
            for b, n, size in bounds
        )
    taken = len(rows)
    longest = max((length for _, length in shapes), default=1)
    assert taken <= max(budget, 0) + longest - 1 or taken == 0  # only the last sequence passes the budget


@SETTINGS
@given(sequences=st.lists(st.integers(0, 20), min_size=1, max_size=5), world=st.integers(1, 4))
def test_the_ranks_together_pick_the_one_process_runs_sequences(sequences: list[int], world: int) -> None:
    """Rank r's i-th sequence is global sample i·W + r: with an unbounded budget the ranks' picks are the one run's."""
    length = 2
    total = sum(sequences) * world
    one = covered_rows(pick_likelihood_rows([(total, length)], budget=10**9, stride=AUTO_METRIC_STRIDE))
    one_sequences = {row // length for row in one}
    ranked: set[int] = set()
    for rank in range(world):
        seen = 0
        for count in sequences:  # the rank's buffers, in order
            for start, n, _ in pick_likelihood_rows(
                [(count, length)], 10**9, AUTO_METRIC_STRIDE, seen, world_size=world, rank=rank
            ):
                assert n == 1
                ranked.add((seen + start // length) * world + rank)
            seen += count
    assert ranked == one_sequences


@pytest.mark.parametrize("stride", [1, 16])
def test_an_empty_buffer_picks_nothing(stride: int) -> None:
    assert pick_likelihood_rows([], budget=100, stride=stride) == []
