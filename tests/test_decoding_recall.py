"""One definition of recall: knn_recall (tune_ef) and DecodingRecall (val/decode_recall) agree."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_contloss.decoding import ExactDecoder, HNSWDecoder, knn_recall
from lightning_contloss.metrics import DecodingRecall, decoding_recall


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_duplicate_rows_count_as_found_in_both() -> None:
    base = randn(50, 8, seed=1)
    table = torch.cat([base, base])  # id i and id 50 + i are the same row
    queries = randn(40, 8, seed=2)
    exact_ids, exact_scores = ExactDecoder(table).query(queries, 1)
    # An approximate search that returns the other copy of every row: a correct answer.
    approx_ids = (exact_ids + 50) % 100
    metric = DecodingRecall(k=1)
    metric.update(approx_ids, exact_ids, approx_scores=exact_scores, exact_scores=exact_scores)
    assert metric.compute().item() == knn_recall(exact_scores, exact_scores) == 1.0
    # Ids alone cannot see the tie; that is why the scores are passed.
    assert decoding_recall(approx_ids, exact_ids).item() == 0.0


def test_agree_on_a_real_hnsw_search_with_duplicates() -> None:
    base = randn(1500, 16, seed=3)
    table = torch.cat([base, base[:500]])
    queries = randn(300, 16, seed=4)
    # A poor graph, so that recall is well below 1 and the comparison means something.
    dec = HNSWDecoder(table, M=4, ef_construction=16, ef=8, num_threads=1, reach_check=False)
    for k in (1, 4):
        ids, scores = dec.query(queries, k)
        e_ids, e_scores = ExactDecoder(table).query(queries, k)
        functional = knn_recall(scores, e_scores)
        metric = DecodingRecall(k=k)
        metric.update(ids[:100], e_ids[:100], approx_scores=scores[:100], exact_scores=e_scores[:100])
        metric.update(ids[100:], e_ids[100:], approx_scores=scores[100:], exact_scores=e_scores[100:])
        assert 0.3 < functional < 0.99
        assert metric.compute().item() == pytest.approx(functional, abs=1e-6)
        # Brute force: an approximate result is found when it is at least as similar as the exact k-th.
        sims = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(table, dim=-1).T
        kth = sims.topk(k, dim=-1).values[:, -1:]
        expected = float((sims.gather(1, ids) >= kth - 1e-5).float().mean())
        assert functional == pytest.approx(expected, abs=1e-6)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(0, 10_000))
def test_ids_and_scores_and_scores_alone_agree_with_brute_force(n: int, k: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    # Scores per id on a coarse grid, so ties (as from duplicate rows) are common.
    sims = torch.randint(0, 6, (n, 12), generator=g).float() / 5
    exact_scores, exact_ids = sims.topk(k, dim=-1)
    picks = torch.stack([torch.randperm(12, generator=g)[:k] for _ in range(n)])
    approx_scores, order = sims.gather(1, picks).sort(dim=-1, descending=True)
    approx_ids = picks.gather(1, order)
    expected = sum(sum(float(s) >= float(exact_scores[i, -1]) for s in approx_scores[i]) / k for i in range(n)) / n
    both = decoding_recall(approx_ids, exact_ids, k=k, approx_scores=approx_scores, exact_scores=exact_scores)
    assert knn_recall(approx_scores, exact_scores) == pytest.approx(expected, abs=1e-6)
    assert both.item() == pytest.approx(expected, abs=1e-6)
    assert decoding_recall(approx_ids, exact_ids, k=k).item() <= both.item() + 1e-6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"approx_scores": torch.zeros(2, 1)}, "together with exact_scores"),
        ({"approx_scores": torch.zeros(2, 1), "exact_scores": torch.zeros(2, 1, dtype=torch.long)}, "floating"),
        ({"approx_scores": torch.zeros(3, 1), "exact_scores": torch.zeros(3, 1)}, "same queries"),
        ({"rtol": float("nan")}, "rtol must be"),
    ],
)
def test_bad_scores(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decoding_recall(torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 1, dtype=torch.long), **kwargs)  # type: ignore[arg-type]
