"""greedy_decode and beam_search: toy optimum, brute-force equivalence, batching, bad input."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import vonmises_fisher

from lightning_contloss import TargetEmbeddings
from lightning_contloss.decoding import ExactDecoder, HNSWDecoder, beam_search, greedy_decode
from lightning_contloss.decoding.search import length_penalty_factor
from lightning_contloss.decoding.search_rules import SearchRules

EOS, BOS = 3, 4


def toy() -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Tokens A=0, B=1, C=2, EOS=3, BOS=4 as orthonormal vectors.

    After BOS the model prefers A (cos 0.8) to B (cos 0.6); after A it is unsure (C 0.75,
    EOS 0.66); after B and C it is sure of EOS. Greedy: A C EOS, sum of (cos - 1) = -0.45.
    The optimum: B EOS, -0.40.
    """
    table = torch.eye(5, dtype=torch.float64)
    after = {
        BOS: 0.8 * table[0] + 0.6 * table[1],
        0: torch.nn.functional.normalize(0.75 * table[2] + 0.66 * table[3], dim=0),
        1: table[3],
        2: table[3],
    }

    def step(prefix: torch.Tensor) -> torch.Tensor:
        return torch.stack([after[int(last)] for last in prefix[:, -1]])

    return table, step


def test_beam_finds_the_optimum_greedy_misses() -> None:
    table, step = toy()
    dec = ExactDecoder(table, exclude=[BOS])
    start = torch.tensor([[BOS]])
    greedy = greedy_decode(step, start, max_len=5, eos_id=EOS, decoder=dec)
    c = 0.75 / (0.75**2 + 0.66**2) ** 0.5
    assert greedy.ids.tolist() == [[0, 2, 3]]
    assert greedy.scores.item() == pytest.approx((0.8 - 1) + (c - 1) + 0.0)
    beam = beam_search(step, start, beam_size=2, max_len=5, eos_id=EOS, decoder=dec, length_penalty=0.0)
    assert beam.ids.tolist() == [[1, 3]] and beam.lengths.tolist() == [2]
    assert beam.scores.item() == pytest.approx(-0.4)
    assert beam.scores.item() > greedy.scores.item()
    # beam_size=1 is greedy search.
    narrow = beam_search(step, start, beam_size=1, max_len=5, eos_id=EOS, decoder=dec, length_penalty=0.0)
    assert narrow.ids.tolist() == greedy.ids.tolist()
    assert narrow.scores.item() == pytest.approx(greedy.scores.item())


def test_greedy_scores_and_lengths() -> None:
    table, step = toy()
    out = greedy_decode(step, torch.tensor([BOS, 1, 0]), max_len=5, eos_id=EOS, decoder=ExactDecoder(table))
    c = 0.75 / (0.75**2 + 0.66**2) ** 0.5
    assert out.ids.tolist() == [[0, 2, 3], [3, 3, 3], [2, 3, 3]]
    assert out.lengths.tolist() == [3, 1, 2]
    np.testing.assert_allclose(out.scores.numpy(), [-0.2 + c - 1, 0.0, c - 1])


def test_greedy_passes_only_unfinished_rows_and_stops_at_max_len() -> None:
    table, step = toy()
    shapes: list[tuple[int, int]] = []

    def recording(prefix: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(prefix.shape))
        return step(prefix)

    out = greedy_decode(recording, torch.tensor([[BOS], [1]]), max_len=2, eos_id=EOS, decoder=ExactDecoder(table))
    assert shapes == [(2, 1), (1, 2)]  # row 1 ended at once; row 0 was cut at max_len
    assert out.ids.tolist() == [[0, 2], [3, 3]] and out.lengths.tolist() == [2, 1]
    cycle = ExactDecoder(table[:3, :3])
    no_eos = greedy_decode(lambda p: table[(p[:, -1] + 1) % 3, :3], torch.tensor([[2]]), 4, None, cycle)
    assert no_eos.ids.tolist() == [[0, 1, 2, 0]] and no_eos.lengths.tolist() == [4]


def _seeded_pred(prefix: tuple[int, ...], dim: int, salt: int) -> np.ndarray:
    """A deterministic 'model': a random vector (random norm too) per prefix."""
    digest = hashlib.blake2b(repr((salt, prefix)).encode(), digest_size=8).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "little"))
    return rng.normal(size=dim) * rng.uniform(0.5, 8.0)


def _brute_force(
    table: np.ndarray, start: int, max_len: int, score: str, alpha: float, norm: str, salt: int
) -> tuple[float, list[int]]:
    """Enumerate every sequence; scores from numpy / scipy, independent of the package's maths."""
    vocab, dim = table.shape
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    best: tuple[float, list[int]] = (float("-inf"), [])
    for length in range(1, max_len + 1):
        for body in itertools.product(range(vocab), repeat=length):
            if any(t == EOS for t in body[:-1]) or (length < max_len and body[-1] != EOS):
                continue
            total = 0.0
            for i, tok in enumerate(body):
                pred = _seeded_pred((start, *body[:i]), dim, salt)
                kappa = float(np.linalg.norm(pred))
                if score == "cosine":
                    total += float(unit[tok] @ pred / kappa) - 1.0
                else:
                    total += float(vonmises_fisher(pred / kappa, kappa).logpdf(unit[tok]))
            lp = length**alpha if norm == "plain" else ((5 + length) / 6) ** alpha
            if total / lp > best[0]:
                best = (total / lp, list(body))
    return best


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    score=st.sampled_from(["cosine", "vmf"]),
    alpha=st.sampled_from([0.0, 0.6, 1.0, 2.0]),
    norm=st.sampled_from(["plain", "gnmt"]),
)
def test_wide_beam_equals_brute_force(seed: int, score: str, alpha: float, norm: str) -> None:
    vocab, dim, max_len = 4, 5, 3
    table = np.random.default_rng(seed).normal(size=(vocab, dim))

    def step(prefix: torch.Tensor) -> torch.Tensor:
        rows = [_seeded_pred(tuple(p), dim, seed) for p in prefix.tolist()]
        return torch.from_numpy(np.stack(rows))

    starts = [0, 2]
    # 27 live hypotheses at most, 4 candidates each: a beam of 64 keeps everything.
    out = beam_search(
        step,
        torch.tensor(starts),
        beam_size=64,
        max_len=max_len,
        eos_id=EOS,
        decoder=ExactDecoder(torch.from_numpy(table)),
        length_penalty=alpha,
        length_norm=norm,  # type: ignore[arg-type]
        score=score,  # type: ignore[arg-type]
        num_candidates=vocab,
    )
    for b, s in enumerate(starts):
        ref_score, ref_ids = _brute_force(table, s, max_len, score, alpha, norm, seed)
        assert out.scores[b].item() == pytest.approx(ref_score, rel=1e-7, abs=1e-9)
        got = out.ids[b, : int(out.lengths[b])].tolist()
        assert got == ref_ids


def test_batched_beam_equals_one_at_a_time() -> None:
    t = TargetEmbeddings.random(40, 8, seed=1).mark_special(0)
    g = torch.Generator().manual_seed(2)
    proj = torch.randn(8, 8, generator=g)

    def step(prefix: torch.Tensor) -> torch.Tensor:
        # A fixed "model": embed the prefix (position-weighted) and project it.
        w = torch.arange(1, prefix.shape[1] + 1, dtype=torch.float32)
        return (t.weight[prefix] * w[None, :, None]).sum(1) @ proj

    dec = ExactDecoder(t)
    starts = torch.tensor([[5, 6], [7, 8], [9, 10]])
    kwargs = {"beam_size": 3, "max_len": 6, "eos_id": 1, "decoder": dec}
    batched = beam_search(step, starts, **kwargs)  # type: ignore[arg-type]
    for b in range(3):
        single = beam_search(step, starts[b : b + 1], **kwargs)  # type: ignore[arg-type]
        n = int(single.lengths[0])
        assert batched.lengths[b].item() == n
        assert batched.ids[b, :n].tolist() == single.ids[0, :n].tolist()
        assert batched.scores[b].item() == pytest.approx(single.scores[0].item())
        assert 0 not in batched.ids[b, :n].tolist()  # special ids are never produced


def test_beam_with_hnsw_decoder_matches_exact() -> None:
    table = torch.nn.functional.normalize(torch.randn(300, 16, generator=torch.Generator().manual_seed(3)), dim=-1)

    def step(prefix: torch.Tensor) -> torch.Tensor:
        return table[(prefix[:, -1] * 7 + prefix.shape[1]) % 300] + 0.1 * table[prefix[:, 0]]

    start = torch.tensor([[1], [2]])
    a = beam_search(step, start, 4, 5, 299, ExactDecoder(table))
    b = beam_search(step, start, 4, 5, 299, HNSWDecoder(table, ef=300, num_threads=1))
    assert torch.equal(a.ids, b.ids) and torch.equal(a.lengths, b.lengths)
    torch.testing.assert_close(a.scores, b.scores)


def test_gnmt_and_plain_length_penalties() -> None:
    assert length_penalty_factor(3, 0.0).item() == 1.0
    assert length_penalty_factor(3, 2.0).item() == 9.0
    assert length_penalty_factor(1, 0.7, "gnmt").item() == 1.0
    with pytest.raises(ValueError, match="length_norm"):
        length_penalty_factor(3, 1.0, "wu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a finite number, got nan"):
        length_penalty_factor(3, float("nan"))
    with pytest.raises(ValueError, match="length must be >= 1"):
        length_penalty_factor(0, 1.0)


def test_empty_batch() -> None:
    table, step = toy()
    out = beam_search(step, torch.zeros(0, 1, dtype=torch.int64), 2, 4, EOS, ExactDecoder(table))
    assert out.ids.shape == (0, 0) and out.scores.shape == (0,)
    assert greedy_decode(step, torch.zeros(0, 1, dtype=torch.int64), 4, EOS, ExactDecoder(table)).ids.shape == (0, 0)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"start": torch.zeros(2, 1)}, "start must be"),
        ({"start": torch.zeros(1, 1, 1, dtype=torch.int64)}, "start must be"),
        ({"max_len": 0}, "max_len must be"),
        ({"eos_id": 5}, "eos_id must be an id in 0..4"),
        ({"eos_id": BOS}, "never returned by the decoder"),
        ({"score": "l2"}, "score must be one of"),
        ({"beam_size": 0}, "beam_size must be"),
        ({"num_candidates": 0}, "num_candidates must be"),
        ({"length_norm": "wu"}, "length_norm"),
        ({"step_fn": lambda p: torch.zeros(p.shape[0], 3)}, "must return the next-token predictions"),
        ({"step_fn": lambda p: torch.zeros(p.shape[0] + 1, 5)}, "must return the next-token predictions"),
        ({"step_fn": lambda p: torch.zeros(p.shape[0], 5, dtype=torch.int64)}, "floating-point"),
        ({"step_fn": lambda p: torch.full((p.shape[0], 5), float("nan"))}, "NaN or inf"),
        ({"step_fn": lambda p: torch.full((p.shape[0], 5), float("inf"))}, "step_fn returned NaN or inf"),
        ({"step_fn": "model"}, "step_fn must be a callable"),
        ({"decoder": torch.eye(5)}, "decoder must be a Decoder"),
        ({"pad_id": 1.5}, "pad_id must be an int or None"),
        ({"pad_id": True}, "pad_id must be an int or None"),
        ({"eos_id": 2.0}, "eos_id must be an id"),
        ({"max_len": 2.5}, "max_len must be"),
        # Issue 11 row 16: a NaN length penalty gave arbitrary output.
        ({"length_penalty": float("nan")}, "length_penalty must be a finite number, got nan"),
        ({"length_penalty": float("inf")}, "length_penalty must be a finite number"),
        ({"length_penalty": "1"}, "length_penalty must be a finite number"),
        ({"length_penalty": True}, "length_penalty must be a finite number"),
        ({"beam_size": 2.0}, "beam_size must be"),
        ({"num_candidates": float("nan")}, "num_candidates must be"),
        ({"length_penalty": -1e6}, "length_penalty=-1000000.0 makes the length penalty 0.0"),
        ({"length_penalty": 1e3}, "makes the length penalty inf"),
    ],
)
def test_bad_input(change: dict[str, object], match: str) -> None:
    table, step = toy()
    args: dict[str, object] = {
        "step_fn": step,
        "start": torch.tensor([[BOS]]),
        "beam_size": 2,
        "max_len": 3,
        "eos_id": EOS,
        "decoder": ExactDecoder(table, exclude=[BOS]),
        **change,
    }
    with pytest.raises(ValueError, match=match):
        beam_search(**args)  # type: ignore[arg-type]
    beam_only = ("beam_size", "num_candidates", "length_norm", "length_penalty")
    greedy_args = {k: v for k, v in args.items() if k not in beam_only}
    if not any(k in change for k in beam_only):
        with pytest.raises(ValueError, match=match):
            greedy_decode(**greedy_args)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(10**6), 10**6),
        st.booleans(),
        st.none(),
        st.text(max_size=3),
    )
)
def test_any_length_penalty_gives_a_finite_result_or_names_the_argument(alpha: object) -> None:
    table, step = toy()
    dec = ExactDecoder(table, exclude=[BOS])
    try:
        out = beam_search(step, torch.tensor([[BOS]]), 2, 3, EOS, dec, length_penalty=alpha)  # type: ignore[arg-type]
    except ValueError as err:
        assert "length_penalty" in str(err)
    else:
        assert bool(torch.isfinite(out.scores).all()) and out.ids.shape[0] == 1 and int(out.lengths[0]) >= 1


# --------------------------------------------------------------------------- issue 25 item 14
def test_a_huge_max_len_allocates_only_what_the_search_uses() -> None:
    # Buffers of [B, max_len] (beam: [B, beam, max_len]) were allocated up front: max_len=10**12
    # asked for terabytes for a search that ends at its first step. They now grow with the output.
    table, step = toy()
    dec = ExactDecoder(table, exclude=[BOS])
    start = torch.tensor([[BOS], [1]])
    greedy = greedy_decode(step, start, 10**12, EOS, dec)
    assert greedy.ids.tolist() == [[0, 2, 3], [3, 3, 3]] and greedy.lengths.tolist() == [3, 1]
    beam = beam_search(step, start, 2, 10**12, EOS, dec, length_penalty=0.0)
    assert beam.ids.tolist() == [[1, 3], [3, 3]] and beam.lengths.tolist() == [2, 1]


def test_growing_buffers_give_the_tokens_of_a_long_search() -> None:
    # A search longer than the first buffer keeps every token when the buffers grow.
    table = torch.eye(6)
    cycle = lambda prefix: table[(prefix[:, -1] + 1) % 5]  # noqa: E731  0 1 2 3 4 0 1 ... never EOS=5
    out = greedy_decode(cycle, torch.tensor([[0]]), 200, 5, ExactDecoder(table))
    assert out.ids[0].tolist() == [(t + 1) % 5 for t in range(200)]
    out = beam_search(cycle, torch.tensor([[0], [2]]), 2, 150, 5, ExactDecoder(table))
    assert out.ids[:, -3:].tolist() == [[3, 4, 0], [0, 1, 2]] and out.lengths.tolist() == [150, 150]


@pytest.mark.parametrize("norm", [1e10, 1e20, 1e30, 1e38, 3.3e38])
def test_vmf_search_with_huge_prediction_norms_still_ranks_tokens(norm: float) -> None:
    # κ = ‖pred‖ overflowed float32 (‖pred‖² ≥ 3.4e38) and log C_m(κ) + κ·cos cancelled: every
    # score came out -inf (or 0 for the wrong token), and the search returned empty sequences.
    table, _ = toy()
    after = {BOS: 0.8 * table[0] + 0.6 * table[1], 0: table[2], 1: table[3], 2: table[3]}

    def step(prefix: torch.Tensor) -> torch.Tensor:
        return norm * torch.stack([after[int(last)] for last in prefix[:, -1]]).float()

    dec = ExactDecoder(table.float(), exclude=[BOS])
    greedy = greedy_decode(step, torch.tensor([[BOS]]), 5, EOS, dec, score="vmf")
    assert greedy.ids.tolist() == [[0, 2, 3]] and bool(torch.isfinite(greedy.scores).all())
    beam = beam_search(step, torch.tensor([[BOS]]), 2, 5, EOS, dec, score="vmf")
    assert beam.ids.tolist() == [[0, 2, 3]] and bool(torch.isfinite(beam.scores).all())


@pytest.mark.parametrize(
    "kind", [np.int64, np.int32, np.uint8, lambda v: torch.tensor(v)], ids=["int64", "int32", "uint8", "tensor"]
)
def test_numpy_and_torch_integers_are_ints(kind: Callable[[int], object]) -> None:
    table, step = toy()
    dec = ExactDecoder(table, exclude=[BOS])
    start = torch.tensor([[BOS]])
    ref = beam_search(step, start, 2, 5, EOS, dec, num_candidates=3, pad_id=0)
    out = beam_search(
        step, start, kind(2), kind(5), kind(EOS), dec, num_candidates=kind(3), pad_id=kind(0),
        length_penalty=np.float32(1),
    )
    assert out.ids.tolist() == ref.ids.tolist()
    greedy = greedy_decode(step, start, kind(5), kind(EOS), dec, pad_id=kind(0), num_candidates=kind(2))
    assert greedy.ids.tolist() == [[0, 2, 3]]
    rules = SearchRules(min_length=kind(2), no_repeat_ngram_size=kind(2), eos_bias=np.float32(0.0))
    assert greedy_decode(step, start, kind(5), kind(EOS), dec, rules=rules).ids.tolist() == [[0, 2, 3]]
    assert length_penalty_factor(kind(4), np.float32(1.0)).item() == 4.0
