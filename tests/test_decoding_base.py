"""The Decoder protocol's optional capabilities: exhaustive search and the log-partition."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from lightning_contloss import ExactDecoder, HNSWDecoder, RerankedDecoder, TargetEmbeddings
from lightning_contloss.decoding import Decoder, is_exhaustive, log_partition_decoder


class PlainDecoder:
    """A third-party decoder that implements the protocol and nothing more."""

    def __init__(self, table: Tensor) -> None:
        self._exact = ExactDecoder(table)
        self.space, self.dim, self.table, self.returnable = "cosine", table.shape[1], table, self._exact.returnable

    def __len__(self) -> int:
        return len(self._exact)

    def query(self, x: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
        return self._exact.query(x, k)


def test_exact_search_declares_both_capabilities_in_cosine_space() -> None:
    table = torch.randn(10, 4)
    cosine, l2 = ExactDecoder(table), ExactDecoder(table, space="l2")
    assert is_exhaustive(cosine) and is_exhaustive(l2)
    assert log_partition_decoder(cosine) is cosine and log_partition_decoder(l2) is None


def test_hnsw_and_a_plain_decoder_declare_neither(tmp_path: Any) -> None:
    table = TargetEmbeddings.random(50, 8, seed=0)
    hnsw = HNSWDecoder(table, M=8, num_threads=1, cache_dir=tmp_path)
    plain = PlainDecoder(torch.randn(10, 4))
    assert isinstance(plain, Decoder)
    for decoder in (hnsw, plain):
        assert not is_exhaustive(decoder) and log_partition_decoder(decoder) is None


@pytest.mark.parametrize("space", ["cosine", "ip"])
def test_a_reranked_exact_decoder_does_not_borrow_its_bases_capabilities(space: str) -> None:
    """RerankedDecoder forwards unknown attributes to its base; the capabilities must not be among them."""
    base = ExactDecoder(torch.randn(10, 4), space=space)
    reranked = RerankedDecoder(base, torch.randn(10), candidates=10)
    assert reranked.chunk_size == base.chunk_size  # other attributes are still forwarded
    assert not is_exhaustive(reranked) and log_partition_decoder(reranked) is None


def test_the_log_partition_decoder_returns_the_same_neighbours() -> None:
    decoder = log_partition_decoder(ExactDecoder(TargetEmbeddings.random(30, 6, seed=2)))
    assert decoder is not None
    x = torch.randn(5, 6)
    ids, scores, log_z = decoder.query_with_log_partition(x, 3, 2.0)
    want_ids, want_scores = decoder.query(x, 3)
    assert torch.equal(ids, want_ids) and log_z.shape == (5,)
    torch.testing.assert_close(scores, want_scores)
