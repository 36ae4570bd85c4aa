"""The shared input checks of ``functional._checks``: the whole-table finiteness tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
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


# ------------------------------------------------------- integer arguments of every kind (issue 25 item 14)
def _int_calls() -> list[tuple[str, Callable[[Callable[[int], object]], object]]]:
    from lightning_contloss import functional as CF
    from lightning_contloss.decoding import DecoderFactory, ExactDecoder, RerankedDecoder, calibrate_eos_bias
    from lightning_contloss.decoding.rerankers import CSLSReranking, PriorReranking
    from lightning_contloss.examples.chunked_softmax import ChunkedSoftmax
    from lightning_contloss.examples.sampled_softmax import SampledSoftmax
    from lightning_contloss.examples.seq2seq_transformer import Seq2SeqTransformer
    from lightning_contloss.examples.softmax_search import softmax_beam_search, softmax_greedy_decode
    from lightning_contloss.heads import JointHead
    from lightning_contloss.metrics import DecodingRecall

    table = torch.eye(6)
    dec = ExactDecoder(table)
    logp = torch.log_softmax(torch.randn(6, 6, generator=torch.Generator().manual_seed(0)), -1)
    step = lambda prefix: logp[prefix[:, -1]]  # noqa: E731
    return [
        ("ExactDecoder", lambda i: ExactDecoder(table, chunk_size=i(4), query_block=i(2))),
        ("query k", lambda i: dec.query(torch.randn(2, 6), i(3))),
        ("DecoderFactory", lambda i: DecoderFactory("hnsw", ef=i(16), seed=i(1), M=i(8))),
        ("RerankedDecoder", lambda i: RerankedDecoder(dec, torch.zeros(6), candidates=i(3))),
        ("CSLSReranking", lambda i: CSLSReranking(k=i(3), candidates=i(4))),
        ("PriorReranking", lambda i: PriorReranking(candidates=i(4))),
        ("calibrate_eos_bias", lambda i: calibrate_eos_bias(torch.randn(8, 6), torch.arange(8) % 6, i(5), dec)),
        ("cosine_loss", lambda i: CF.cosine_loss(torch.randn(3, 6), torch.tensor([0, 1, 9]), table, ignore_index=i(9))),
        (
            "linear_cross_entropy",
            lambda i: CF.linear_cross_entropy(
                torch.randn(3, 4), torch.randn(6, 4), None, torch.arange(3), chunk_size=i(2)
            ),
        ),
        ("DecodingRecall", lambda i: DecodingRecall(k=i(2))),
        ("JointHead", lambda i: JointHead(torch.nn.Linear(4, 6), torch.nn.Linear(4, 3), pred_dim=i(3))),
        ("ChunkedSoftmax", lambda i: ChunkedSoftmax(4, 6, chunk_size=i(2))),
        ("SampledSoftmax", lambda i: SampledSoftmax(4, 6, num_negatives=i(3))),
        ("Seq2SeqTransformer", lambda i: Seq2SeqTransformer(6, 6, d_model=i(8), n_heads=i(2), max_len=i(16))),
        ("softmax_greedy_decode", lambda i: softmax_greedy_decode(step, torch.tensor([[0]]), i(3), i(5))),
        ("softmax_beam_search", lambda i: softmax_beam_search(step, torch.tensor([[0]]), i(2), i(3), i(5))),
    ]


@pytest.mark.parametrize("kind", [np.int64, np.int32, np.uint16, torch.tensor], ids=["int64", "int32", "uint16", "0-d"])
@pytest.mark.parametrize("call", _int_calls(), ids=lambda c: c[0])
def test_every_int_argument_takes_numpy_and_torch_integers(
    call: tuple[str, Callable[[Callable[[int], object]], object]], kind: Callable[[int], object]
) -> None:
    call[1](kind)  # numpy integers got "must be an int, got 2" before


@pytest.mark.parametrize("call", _int_calls(), ids=lambda c: c[0])
def test_every_int_argument_still_refuses_floats_and_bools(
    call: tuple[str, Callable[[Callable[[int], object]], object]]
) -> None:
    for bad in (lambda v: v + 0.5, lambda v: True):
        with pytest.raises(ValueError):
            call[1](bad)
