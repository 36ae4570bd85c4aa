"""csls_penalty and RerankedDecoder against brute force, and their bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_contloss import TargetEmbeddings
from lightning_contloss.decoding import ExactDecoder, HNSWDecoder, RerankedDecoder
from lightning_contloss.functional import csls_penalty


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def brute_similarity(queries: torch.Tensor, table: torch.Tensor, space: str) -> torch.Tensor:
    """[N, V] similarities, computed independently of the package."""
    if space == "cosine":
        return F.normalize(queries, dim=-1) @ F.normalize(table, dim=-1).T
    if space == "ip":
        return queries @ table.T
    return -torch.cdist(queries, table).pow(2)


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_csls_penalty_matches_brute_force(space: str) -> None:
    table, queries = randn(70, 6, seed=1), randn(40, 6, seed=2)
    sims = brute_similarity(queries, table, space)
    expected = torch.stack([sims[:, w].sort(descending=True).values[:7].mean() for w in range(70)])
    got = csls_penalty(table, queries, k=7, space=space, chunk_size=16)  # type: ignore[arg-type]
    assert torch.allclose(got, expected, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 50), st.integers(2, 30), st.integers(0, 10_000))
def test_reranked_exact_equals_brute_force_biased_argmax(n: int, v: int, seed: int) -> None:
    table, queries = randn(v, 5, seed=seed), randn(n, 5, seed=seed + 1)
    bias = randn(v, seed=seed + 2)
    dec = RerankedDecoder(ExactDecoder(table), bias, candidates=v)
    ids, scores = dec.query(queries, k=1)
    brute = F.normalize(queries, dim=-1) @ F.normalize(table, dim=-1).T + bias
    assert torch.allclose(scores[:, 0], brute.max(-1).values, atol=1e-5)
    assert torch.allclose(brute.gather(1, ids), scores, atol=1e-5)


def test_csls_spreads_predictions_that_crowd_a_hub() -> None:
    # Queries scattered around a hub row plus rows of their own: plain cosine picks the hub far more often.
    table = F.normalize(randn(100, 8, seed=3), dim=-1)
    hub = table[0]
    own = torch.randint(1, 100, (2000,), generator=torch.Generator().manual_seed(4))
    queries = 0.8 * hub + 0.6 * table[own] + 0.05 * randn(2000, 8, seed=5)
    base = ExactDecoder(table)
    plain = base.query(queries, 1)[0][:, 0]
    csls = RerankedDecoder.csls(base, queries, k=10).query(queries, 1)[0][:, 0]
    assert csls.unique().numel() > plain.unique().numel()
    assert float((csls == own).float().mean()) > float((plain == own).float().mean())


def test_reranked_decoder_keeps_the_protocol_and_specials() -> None:
    targets = TargetEmbeddings.random(50, 8, seed=0, special_ids=[0, 1])
    base = HNSWDecoder(targets, num_threads=1, ef=40)
    bias = torch.zeros(50)
    bias[0] = 100.0  # a special id is never returned, however large its bias
    dec = RerankedDecoder(base, bias, candidates=8)
    ids, scores = dec.query(randn(3, 4, 8, seed=6), k=5)
    assert ids.shape == scores.shape == (3, 4, 5)
    assert not bool(((ids == 0) | (ids == 1)).any())
    assert bool((scores[..., :-1] >= scores[..., 1:]).all())
    assert dec.space == "cosine" and dec.dim == 8 and len(dec) == 50 and dec.ef == 40
    assert torch.equal(dec.returnable, base.returnable)
    assert dec.query(randn(2, 8), k=48)[0].shape == (2, 48)  # k above candidates fetches k


def test_bad_input() -> None:
    base = ExactDecoder(randn(10, 4))
    with pytest.raises(ValueError, match="one value per id"):
        RerankedDecoder(base, torch.zeros(9))
    with pytest.raises(ValueError, match="finite"):
        RerankedDecoder(base, torch.full((10,), float("nan")))
    with pytest.raises(ValueError, match="candidates"):
        RerankedDecoder(base, torch.zeros(10), candidates=0)
    with pytest.raises(ValueError, match="k=11"):
        RerankedDecoder(base, torch.zeros(10)).query(randn(1, 4), k=11)
    with pytest.raises(ValueError, match="same D"):
        csls_penalty(randn(10, 4), randn(5, 3))
    with pytest.raises(ValueError, match="number of queries"):
        csls_penalty(randn(10, 4), randn(5, 4), k=6)


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_prior_is_weighted_log_add_one_unigram(space: str) -> None:
    table, queries = randn(30, 6, seed=7), randn(25, 6, seed=8)
    counts = torch.randint(0, 50, (30,), generator=torch.Generator().manual_seed(9))
    base = ExactDecoder(table, space)  # type: ignore[arg-type]
    dec = RerankedDecoder.prior(base, counts, weight=0.3, candidates=30)
    # Independent reference: p(w) = (c_w + 1) / (sum c + V), in float64.
    p = (counts.double() + 1) / (counts.double().sum() + 30)
    torch.testing.assert_close(dec.bias, (0.3 * p.log()).float())
    sims = brute_similarity(queries, table, space)
    ids, scores = dec.query(queries, k=1)
    brute = sims + 0.3 * p.log().float()
    assert torch.allclose(scores[:, 0], brute.max(-1).values, atol=1e-4)
    assert torch.allclose(brute.gather(1, ids), scores, atol=1e-4)
    # A list of counts works too, and weight 0 is plain decoding.
    plain = RerankedDecoder.prior(base, counts.tolist(), weight=0, candidates=30)
    assert torch.equal(plain.query(queries, 1)[0], base.query(queries, 1)[0])


@pytest.mark.parametrize(
    ("counts", "weight", "match"),
    [
        (torch.ones(9), 1.0, "one count per id"),
        (torch.ones(10, 1), 1.0, "one count per id"),
        (torch.tensor([1.0] * 9 + [-1.0]), 1.0, r"finite and >= 0, but ids \[9\]"),
        (torch.tensor([1.0] * 9 + [float("nan")]), 1.0, "finite and >= 0"),
        (torch.ones(10, dtype=torch.bool), 1.0, "real numbers"),
        ("ten", 1.0, "counts must be"),
        (torch.ones(10), float("inf"), "weight must be a finite number"),
        (torch.ones(10), float("nan"), "weight must be a finite number"),
        (torch.ones(10), True, "weight must be a finite number"),
        (torch.ones(10), "1", "weight must be a finite number"),
    ],
)
def test_prior_bad_input(counts: object, weight: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RerankedDecoder.prior(ExactDecoder(randn(10, 4)), counts, weight)  # type: ignore[arg-type]


def test_wrong_dim_queries_are_rejected_not_reshaped() -> None:
    # Issue 11 row 11: [40, 7] queries on a D=8 table used to become [35, 8].
    base = ExactDecoder(randn(50, 8))
    with pytest.raises(ValueError, match="dim 7 but the decoder's table has dim 8"):
        RerankedDecoder.csls(base, randn(40, 7))
    dec = RerankedDecoder(base, torch.zeros(50))
    with pytest.raises(ValueError, match="dim 7 but the decoder's table has dim 8"):
        dec.query(randn(40, 7), k=1)
    with pytest.raises(ValueError, match="NaN or inf"):
        RerankedDecoder.csls(base, torch.full((40, 8), float("nan")))
    with pytest.raises(ValueError, match="base must be a Decoder"):
        RerankedDecoder(randn(50, 8), torch.zeros(50))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bias must be a"):
        RerankedDecoder(base, [0.0] * 50)  # type: ignore[arg-type]
