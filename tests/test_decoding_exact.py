"""ExactDecoder, the shared input checks, and the scoring maths (functional/scoring.py)."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist
from scipy.stats import vonmises_fisher

from lightning_contloss import TargetEmbeddings
from lightning_contloss.decoding import Decoder, ExactDecoder
from lightning_contloss.functional.scoring import pairwise_similarity, similarity, token_log_scores

SPACES = ("cosine", "ip", "l2")


def brute_scores(x: np.ndarray, table: np.ndarray, space: str) -> np.ndarray:
    """Independent reference: scipy distances turned into "higher is better" similarities."""
    if space == "cosine":
        return 1.0 - cdist(x, table, "cosine")
    if space == "ip":
        return x @ table.T
    return -cdist(x, table, "sqeuclidean")


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------- scoring maths
@pytest.mark.parametrize("space", SPACES)
def test_pairwise_similarity_matches_scipy(space: str) -> None:
    x, w = randn(7, 5, seed=1), randn(11, 5, seed=2)
    got = pairwise_similarity(x, w, space).numpy()
    np.testing.assert_allclose(got, brute_scores(x.numpy(), w.numpy(), space), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("space", SPACES)
def test_similarity_matches_pairwise(space: str) -> None:
    x, w = randn(4, 6, seed=3), randn(9, 6, seed=4)
    ids = torch.tensor([[0, 3, 8], [1, 1, 2], [5, 4, 3], [7, 6, 0]])
    got = similarity(x, w[ids], space)
    ref = pairwise_similarity(x, w, space).gather(1, ids)
    torch.testing.assert_close(got, ref)


def test_similarity_rejects_unknown_space() -> None:
    with pytest.raises(ValueError, match="space must be one of"):
        pairwise_similarity(torch.zeros(1, 2), torch.zeros(1, 2), "dot")  # type: ignore[arg-type]


def test_cosine_token_score_is_negative_cosine_loss() -> None:
    pred, cands = randn(3, 8, seed=5), randn(3, 4, 8, seed=6)
    got = token_log_scores(pred, cands, "cosine")
    ref = torch.nn.functional.cosine_similarity(pred[:, None], cands, dim=-1) - 1
    torch.testing.assert_close(got, ref)
    assert bool((got <= 0).all())


@pytest.mark.parametrize("dim", [3, 50])
def test_vmf_token_score_matches_scipy_logpdf(dim: int) -> None:
    pred = randn(4, dim, seed=7) * torch.tensor([0.5, 2.0, 10.0, 40.0], dtype=torch.float64)[:, None]
    cands = torch.nn.functional.normalize(randn(4, 3, dim, seed=8), dim=-1)
    got = token_log_scores(pred, cands, "vmf")
    for i in range(4):
        kappa = float(pred[i].norm())
        ref = vonmises_fisher((pred[i] / kappa).numpy(), kappa).logpdf(cands[i].numpy())
        np.testing.assert_allclose(got[i].numpy(), ref, rtol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm", [1e10, 1e20, 1e30, 1e37])
def test_vmf_token_score_of_huge_predictions_matches_mpmath(norm: float, dtype: torch.dtype) -> None:
    # Issue 25 item 14: κ = ‖pred‖ overflowed float32 and log C_m(κ) + κ·cos cancelled, so
    # the scores were -inf (or lost every digit that tells candidates apart).
    dim = 5
    pred = torch.zeros(1, dim, dtype=dtype)
    pred[0, 0] = norm
    cands = torch.nn.functional.normalize(randn(1, 3, dim, seed=12), dim=-1).to(dtype)
    cands[0, 0] = torch.eye(dim, dtype=dtype)[0]  # the mode itself: log C_m(κ) + κ, a number of size log κ
    got = token_log_scores(pred, cands, "vmf")[0].double()
    with mpmath.workdps(80):
        kappa = mpmath.mpf(float(pred[0, 0]))
        v = mpmath.mpf(dim) / 2 - 1
        log_2pi = mpmath.log(2 * mpmath.pi)
        log_c = v * mpmath.log(kappa) - mpmath.log(mpmath.besseli(v, kappa)) - (mpmath.mpf(dim) / 2) * log_2pi
        for j in range(3):
            row = [mpmath.mpf(float(x)) for x in cands[0, j].double()]
            cos = row[0] / mpmath.sqrt(sum(x * x for x in row))
            ref = float(log_c + kappa * cos)
            assert math.isfinite(got[j].item())
            # relative to the score's size; the mode's score (about 2 log κ) is exact to rounding
            tol = (1e-6 if dtype == torch.float32 else 1e-12) * max(abs(ref), 1.0)
            assert abs(got[j].item() - ref) <= tol, (j, got[j].item(), ref)


def test_vmf_token_score_normalises_candidates() -> None:
    pred, cands = randn(2, 6, seed=9), torch.nn.functional.normalize(randn(2, 3, 6, seed=10), dim=-1)
    torch.testing.assert_close(token_log_scores(pred, 5 * cands, "vmf"), token_log_scores(pred, cands, "vmf"))


def test_token_scores_bad_input() -> None:
    with pytest.raises(ValueError, match="score must be one of"):
        token_log_scores(torch.zeros(1, 2), torch.zeros(1, 1, 2), "l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="candidates must be"):
        token_log_scores(torch.zeros(2, 3), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="dim >= 2"):
        token_log_scores(torch.ones(2, 1), torch.ones(2, 3, 1), "vmf")


# ---------------------------------------------------------------------- ExactDecoder
@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("k", [1, 4])
def test_exact_matches_brute_force(space: str, k: int) -> None:
    table, x = randn(53, 6, seed=11).float(), randn(9, 6, seed=12).float()
    # Tiny chunks and blocks exercise the running top-k merge across many chunks.
    dec = ExactDecoder(table, space, chunk_size=7, query_block=4)
    ids, scores = dec.query(x, k)
    ref = brute_scores(x.double().numpy(), table.double().numpy(), space)
    ref_ids = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(ids.numpy(), ref_ids)
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(ref, ref_ids, 1), rtol=1e-5, atol=1e-5)
    assert ids.dtype == torch.int64 and scores.shape == (9, k)


@settings(max_examples=25, deadline=None)
@given(
    v=st.integers(1, 40),
    n=st.integers(0, 6),
    k=st.integers(1, 5),
    chunk=st.integers(1, 17),
    block=st.sampled_from([1, 2, 2048]),  # small blocks keep the chunk merge; 2048 scans all rows at once
    space=st.sampled_from(SPACES),
    seed=st.integers(0, 2**16),
)
def test_exact_scores_property(v: int, n: int, k: int, chunk: int, block: int, space: str, seed: int) -> None:
    k = min(k, v)
    table, x = randn(v, 4, seed=seed).float(), randn(n, 4, seed=seed + 1).float()
    ids, scores = ExactDecoder(table, space, chunk_size=chunk, query_block=block).query(x, k)
    assert ids.shape == scores.shape == (n, k)
    if n:
        ref = np.sort(brute_scores(x.double().numpy(), table.double().numpy(), space), axis=1)[:, ::-1][:, :k]
        np.testing.assert_allclose(scores.numpy(), ref, rtol=1e-4, atol=1e-4)
        # Each id's own score is what the decoder says, and ids within a row are distinct.
        again = similarity(x, table[ids], space)  # type: ignore[arg-type]
        np.testing.assert_allclose(again.numpy(), scores.numpy(), rtol=1e-4, atol=1e-4)
        assert all(len(set(row)) == k for row in ids.tolist())


def test_exact_is_a_decoder_with_attributes() -> None:
    t = TargetEmbeddings.random(20, 8)
    dec = ExactDecoder(t, "ip")
    assert isinstance(dec, Decoder)
    assert (len(dec), dec.dim, dec.space, dec.device.type) == (20, 8, "ip", "cpu")
    assert dec.table is t.weight or torch.equal(dec.table, t.weight)
    assert "ExactDecoder(V=20" in repr(dec)


def test_specials_and_excluded_ids_are_never_returned() -> None:
    t = TargetEmbeddings.random(10, 4, seed=3)
    t.mark_special(0, 5)
    dec = ExactDecoder(t, "cosine", exclude=[7])
    ids, _ = dec.query(t.weight, k=7)  # every returnable id
    for row in ids.tolist():
        assert sorted(row) == [1, 2, 3, 4, 6, 8, 9]
    assert dec.returnable.tolist() == [i not in (0, 5, 7) for i in range(10)]


def test_zero_rows_cosine_excluded_l2_kept() -> None:
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    q = torch.tensor([[0.01, 0.0]])
    assert ExactDecoder(table, "cosine").returnable.tolist() == [False, True, True]
    assert ExactDecoder(table, "cosine").query(q, 2)[0].tolist() == [[1, 2]]
    assert ExactDecoder(table, "l2").query(q, 1)[0].tolist() == [[0]]
    with pytest.raises(ValueError, match="only 2 ids"):
        ExactDecoder(table, "cosine").query(q, 3)


def test_l2_scores_are_exact_for_near_matches() -> None:
    table = torch.tensor([[1000.0, 1000.0], [0.0, 0.0]])
    _, scores = ExactDecoder(table, "l2").query(torch.tensor([[1000.0, 1000.001]]), 1)
    # The expansion ‖x‖² - 2x·w + ‖w‖² would round this to 0 (or worse) in float32.
    assert scores.item() == pytest.approx(-(0.001**2), rel=0.2)


def test_query_shapes_and_empty() -> None:
    dec = ExactDecoder(randn(30, 5).float())
    ids, scores = dec.query(randn(2, 3, 5).float(), 4)
    assert ids.shape == scores.shape == (2, 3, 4)
    flat_ids, _ = dec.query(randn(2, 3, 5).float().reshape(6, 5), 4)
    assert torch.equal(ids.reshape(6, 4), flat_ids)
    e_ids, e_scores = dec.query(torch.zeros(0, 5), 3)
    assert e_ids.shape == e_scores.shape == (0, 3) and e_ids.dtype == torch.int64
    assert dec.query(np.ones((1, 5), dtype=np.float32), 1)[0].shape == (1, 1)


def test_half_precision_table_and_queries() -> None:
    table = randn(40, 8).float()
    ref = ExactDecoder(table).query(table[:5], 1)[0]
    got, scores = ExactDecoder(table.half()).query(table[:5].half(), 1)
    assert torch.equal(got, ref) and scores.dtype == torch.float32


@pytest.mark.parametrize(
    ("x", "k", "match"),
    [
        (torch.zeros(2, 4), 1, "dim 4 but the decoder's table has dim 6"),
        (torch.full((2, 6), float("nan")), 1, "NaN or inf in rows \\[0, 1\\]"),
        (torch.tensor([[0.0] * 5 + [float("inf")]]), 1, "NaN or inf"),
        (torch.zeros(2, 6, dtype=torch.int64), 1, "floating point"),
        (torch.tensor(1.0), 1, "scalar"),
        (torch.zeros(2, 6), 0, "k must be >= 1"),
        (torch.zeros(2, 6), 11, "k=11 but the decoder can return only 10"),
        (torch.zeros(2, 6), 2.0, "k must be an int"),
        ([[0.0] * 6], 1, "must be a \\[N, D\\] tensor"),
    ],
)
def test_bad_queries(x: object, k: object, match: str) -> None:
    dec = ExactDecoder(randn(10, 6).float())
    with pytest.raises(ValueError, match=match):
        dec.query(x, k)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("table", "kwargs", "match"),
    [
        (torch.zeros(3), {}, "non-empty \\[V, D\\]"),
        (torch.zeros(0, 3), {}, "non-empty"),
        (torch.zeros(3, 2, dtype=torch.int64), {}, "floating point"),
        (torch.tensor([[1.0, float("nan")], [1.0, 0.0]]), {}, "NaN or inf in rows \\[0\\]"),
        (torch.eye(3), {"space": "dot"}, "space must be one of"),
        (torch.eye(3), {"exclude": [0, 1, 2]}, "no id is left"),
        (torch.zeros(3, 2), {}, "no id is left"),
        (torch.eye(3), {"exclude": [3]}, "valid ids are 0..2"),
        (torch.eye(3), {"exclude": [0.5]}, "integer ids"),
        (torch.eye(3), {"chunk_size": 0}, "chunk_size must be"),
        (torch.eye(3), {"query_block": -1}, "query_block must be"),
        ("table", {}, "TargetEmbeddings or a \\[V, D\\] tensor"),
    ],
)
def test_bad_tables(table: object, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ExactDecoder(table, **kwargs)  # type: ignore[arg-type]


def test_exclude_accepts_a_tensor_and_does_not_touch_targets() -> None:
    t = TargetEmbeddings.random(6, 3)
    dec = ExactDecoder(t, exclude=torch.tensor([1, 2]))
    assert dec.returnable.tolist() == [True, False, False, True, True, True]
    assert t.special_ids.tolist() == []


def test_exact_cosine_decoder_shares_a_unit_table_and_copies_any_other() -> None:
    # A normalised table is used in place (no second 400 MB copy at 400k × 256); any other is
    # normalised into a copy, and both give the brute-force answer.
    unit = TargetEmbeddings.random(300, 16, seed=3)
    shared = ExactDecoder(unit, "cosine")
    assert shared._rows.data_ptr() == unit.weight.data_ptr()
    raw = randn(300, 16, seed=4).float() * 3
    copied = ExactDecoder(raw, "cosine")
    assert copied._rows.data_ptr() != raw.data_ptr()
    x = randn(7, 16, seed=5).float()
    for table, dec in ((unit.weight.detach(), shared), (raw, copied)):
        ids, _ = dec.query(x, 3)
        ref = brute_scores(x.double().numpy(), table.double().numpy(), "cosine")
        np.testing.assert_array_equal(ids.numpy(), np.argsort(-ref, axis=1, kind="stable")[:, :3])
    # Rows a little off unit norm are not taken for unit rows.
    off = unit.weight.detach() * (1 + 1e-4)
    assert ExactDecoder(off, "cosine")._rows.data_ptr() != off.data_ptr()
