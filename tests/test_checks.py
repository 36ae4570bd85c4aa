"""The shared input checks of ``functional._checks``: the whole-table finiteness tests."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lightning_contloss.functional._checks import ROW_BLOCK, all_finite, nonfinite_per_row

VALUES = st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.sampled_from([3.0e38, -3.0e38, 1e-45, 0.0, -0.0]),  # sums that overflow, subnormals
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=VALUES))
def test_all_finite_agrees_with_isfinite(x: np.ndarray) -> None:
    t = torch.from_numpy(x)
    assert all_finite(t) is bool(torch.isfinite(t).all())
    assert all_finite(t.double()) is bool(torch.isfinite(t).all())
    if t.dim() > 1:
        assert nonfinite_per_row(t).tolist() == (~torch.isfinite(t)).reshape(-1, t.shape[-1]).sum(-1).tolist()


def test_all_finite_low_precision_and_large_tables() -> None:
    big = torch.full((ROW_BLOCK + 5, 3), 60000.0, dtype=torch.float16)  # a float16 sum would overflow
    assert all_finite(big)
    big[-1, 2] = float("nan")
    assert not all_finite(big)
    assert nonfinite_per_row(big).nonzero().flatten().tolist() == [ROW_BLOCK + 4]
    huge = torch.full((4, 2), 3.0e38)  # finite, but its float32 sum is inf: the exact count decides
    assert all_finite(huge)
    assert all_finite(torch.zeros(0, 5))
