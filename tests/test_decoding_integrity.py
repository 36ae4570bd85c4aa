"""The integrity layer (manifest), save/load consistency (issue 11 rows 2-4) and huge-norm cosine queries (row 7)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lightning_contloss import TargetEmbeddings
from lightning_contloss.decoding import ExactDecoder, HNSWDecoder
from lightning_contloss.decoding.cache import CacheEntryWarning, IndexCache, cache_key
from lightning_contloss.decoding.manifest import (
    MANIFEST_FILE,
    IntegrityError,
    read_manifest,
    write_manifest,
)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------- the manifest
@pytest.fixture
def sealed(tmp_path: Path) -> Path:
    (tmp_path / "a.bin").write_bytes(b"0123456789")
    (tmp_path / "b.pt").write_bytes(b"xyz")
    (tmp_path / "unrelated.txt").write_text("not recorded, may change")
    write_manifest(tmp_path, ["a.bin", "b.pt"], table="cafe", params={"M": 16, "space": "cosine"})
    return tmp_path


def test_manifest_round_trip_records_sizes_hashes_table_and_params(sealed: Path) -> None:
    m = read_manifest(sealed, table="cafe", params={"space": "cosine", "M": 16})
    assert m.table == "cafe" and m.params == {"M": 16, "space": "cosine"}
    assert sorted(m.files) == ["a.bin", "b.pt"] and m.files["a.bin"][0] == 10
    raw = json.loads((sealed / MANIFEST_FILE).read_text())
    assert raw["manifest"] == 1 and len(raw["files"]["b.pt"]["blake2b"]) == 64
    (sealed / "unrelated.txt").write_text("changed")  # files it does not list are not its business
    read_manifest(sealed)
    assert not [p for p in sealed.iterdir() if p.name.startswith(".")]  # no temporary file left behind


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: (d / "a.bin").write_bytes(b"01234"), "a.bin has 5 bytes but was written with 10"),
        (lambda d: (d / "a.bin").write_bytes(b"0123456780"), "a.bin differs from the file that was written"),
        (lambda d: (d / "b.pt").unlink(), "b.pt is missing"),
        (lambda d: (d / MANIFEST_FILE).unlink(), "no manifest.json"),
        (lambda d: (d / MANIFEST_FILE).write_text("{not json"), "manifest.json is damaged"),
        (lambda d: (d / MANIFEST_FILE).write_bytes(b"\xff\xfe"), "manifest.json is damaged"),
        (lambda d: (d / MANIFEST_FILE).write_text('{"manifest": 99}'), "version 99"),
        (lambda d: (d / MANIFEST_FILE).write_text("[]"), "manifest.json is damaged"),
    ],
)
def test_manifest_detects_damage(sealed: Path, damage, match: str) -> None:  # type: ignore[no-untyped-def]
    damage(sealed)
    with pytest.raises(IntegrityError, match=match) as info:
        read_manifest(sealed)
    assert isinstance(info.value, ValueError) and str(sealed) in str(info.value)


def test_manifest_rejects_another_table_params_and_paths_outside(sealed: Path) -> None:
    with pytest.raises(IntegrityError, match="belongs to another table"):
        read_manifest(sealed, table="beef")
    with pytest.raises(IntegrityError, match=r"other parameters: M=16 \(expected 32\)"):
        read_manifest(sealed, params={"M": 32, "space": "cosine"})
    raw = json.loads((sealed / MANIFEST_FILE).read_text())
    raw["files"]["../escape"] = {"size": 1, "blake2b": "0"}
    (sealed / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(IntegrityError, match="outside the folder"):
        read_manifest(sealed)
    with pytest.raises(ValueError, match="cannot record itself"):
        write_manifest(sealed, [MANIFEST_FILE], table="", params={})


# ---------------------------------------------------------------------- the cache uses it
def test_foreign_entry_under_the_key_is_a_miss(tmp_path: Path) -> None:
    # Issue 11 row 3: another table's entry under this key used to be served (acc@1 vs exact 0.0).
    a, b = randn(200, 8, seed=1), randn(200, 8, seed=2)
    first = HNSWDecoder(a, cache_dir=tmp_path / "a", num_threads=1)
    HNSWDecoder(b, cache_dir=tmp_path / "b", num_threads=1)
    ((entry_a,), (entry_b,)) = [[p for p in (tmp_path / n).iterdir() if p.is_dir()] for n in "ab"]
    for f in entry_a.iterdir():
        f.unlink()
    for f in entry_b.iterdir():
        (entry_a / f.name).write_bytes(f.read_bytes())
    with pytest.warns(CacheEntryWarning, match="belongs to another table"):
        dec = HNSWDecoder(a, cache_dir=tmp_path / "a", num_threads=1)
    q = randn(30, 8, seed=3)
    assert not dec.from_cache and torch.equal(dec.query(q, 2)[0], ExactDecoder(a).query(q, 2)[0])
    assert torch.equal(first.query(q, 2)[0], dec.query(q, 2)[0])


def test_index_cache_checks_table_and_params(tmp_path: Path) -> None:
    cache = IndexCache(tmp_path)
    key = cache_key("f00d", {"M": 16})
    cache.store(key, lambda d: (d / "x").write_text("1"), table="f00d", params={"M": 16})
    assert cache.load(key, lambda d: (d / "x").read_text(), table="f00d", params={"M": 16}) == "1"
    with pytest.warns(CacheEntryWarning, match="other parameters"):
        assert cache.lookup(key, table="f00d", params={"M": 8}) is None
    assert not (tmp_path / key).exists()  # removed
    cache.store(key, lambda d: (d / "x").write_text("1"), table="f00d")

    def unreadable(folder: Path) -> str:
        raise RuntimeError("an incompatible library")

    with pytest.warns(CacheEntryWarning, match="could not be read .RuntimeError: an incompatible library"):
        assert cache.load(key, unreadable) is None
    assert cache.lookup(key) is None and not any(p.name.startswith(".") for p in tmp_path.iterdir())


# ---------------------------------------------------------------------- save/load (row 4)
def test_load_rejects_a_table_that_does_not_match_the_index(tmp_path: Path) -> None:
    big = HNSWDecoder(randn(1400, 8, seed=4), num_threads=1).save(tmp_path / "big")
    small = HNSWDecoder(randn(10, 8, seed=5), num_threads=1).save(tmp_path / "small")
    # A table.pt from another save: caught by the manifest, naming the folder and the file.
    (big / "table.pt").write_bytes((small / "table.pt").read_bytes())
    with pytest.raises(ValueError, match=r"table.pt has \d+ bytes but was written with") as info:
        HNSWDecoder.load(big)
    assert str(big) in str(info.value)
    # Even with a manifest that was re-sealed over the wrong table, the table is checked against the index.
    files = ["index.bin", "meta.pt", "table.pt"]
    manifest = read_manifest(small)
    write_manifest(big, files, table=manifest.table, params=read_manifest(small).params)
    with pytest.raises(ValueError, match=r"meta.pt holds ids 0..1399 but there are 10") as info:
        HNSWDecoder.load(big)
    assert str(big) in str(info.value)
    write_manifest(big, files, table="0" * 32, params=manifest.params)
    with pytest.raises(ValueError, match=r"table.pt holds another table \(10 rows"):
        HNSWDecoder.load(big)
    # A table of another dim.
    narrow = HNSWDecoder(randn(10, 4, seed=6), num_threads=1).save(tmp_path / "narrow")
    (small / "table.pt").write_bytes((narrow / "table.pt").read_bytes())
    write_manifest(small, files, table=manifest.table, params=manifest.params)
    with pytest.raises(ValueError, match=r"shape \(10, 4\) .* indexes rows of dim 8"):
        HNSWDecoder.load(small)


def test_save_over_a_save_and_folders_from_older_versions(tmp_path: Path) -> None:
    t = TargetEmbeddings.random(60, 6, seed=7).mark_special(3)
    HNSWDecoder(randn(80, 6), num_threads=1).save(tmp_path / "s")
    dec = HNSWDecoder(t, "ip", ef=20, num_threads=1)
    loaded = HNSWDecoder.load(dec.save(tmp_path / "s"))  # overwriting a save gives the new one
    assert len(loaded) == 60 and loaded.space == "ip" and not bool(loaded.returnable[3])
    (tmp_path / "s" / MANIFEST_FILE).unlink()  # as a save by version 0.1 (format 2) looks
    with pytest.raises(ValueError, match="older version or its save was interrupted"):
        HNSWDecoder.load(tmp_path / "s")
    raw = json.loads((dec.save(tmp_path / "t") / MANIFEST_FILE).read_text())
    raw["params"]["format"] = 2
    (tmp_path / "t" / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="holds format 2 but this version reads format 3"):
        HNSWDecoder.load(tmp_path / "t")


def test_an_interrupted_save_over_a_save_keeps_the_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_contloss.decoding.hnsw as hnsw_module

    old = HNSWDecoder(randn(80, 6, seed=11), ef=33, num_threads=1)
    folder = old.save(tmp_path / "s")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C (or a full disk) halfway through the new save

    monkeypatch.setattr(hnsw_module, "write_manifest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        HNSWDecoder(randn(50, 6, seed=12), num_threads=1).save(folder)
    # Before the fix the old manifest was deleted first and index.bin overwritten: the old save was lost.
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert HNSWDecoder.load(folder).ef == 33 and len(HNSWDecoder.load(folder)) == 80
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no half-written folder left beside it
    monkeypatch.undo()
    new = HNSWDecoder(randn(50, 6, seed=12), ef=21, num_threads=1).save(folder)
    assert HNSWDecoder.load(new).ef == 21 and sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_save_over_a_save_without_an_atomic_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_contloss.decoding.folder_swap as folder_swap

    monkeypatch.setattr(folder_swap, "_exchange", lambda a, b: False)  # no renameat2 (macOS, old glibc)
    HNSWDecoder(randn(40, 4, seed=15), num_threads=1).save(tmp_path / "s")
    HNSWDecoder(randn(25, 4, seed=16), ef=19, num_threads=1).save(tmp_path / "s")
    loaded = HNSWDecoder.load(tmp_path / "s")
    assert len(loaded) == 25 and loaded.ef == 19 and sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_save_refuses_a_folder_that_holds_other_files(tmp_path: Path) -> None:
    folder = HNSWDecoder(randn(30, 4, seed=13), num_threads=1).save(tmp_path / "s")
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"also holds 'notes.txt'.*a folder of its own"):
        HNSWDecoder(randn(20, 4, seed=14), num_threads=1).save(folder)
    assert (folder / "notes.txt").read_text() == "mine" and len(HNSWDecoder.load(folder)) == 30


# ---------------------------------------------------------------------- huge norms (row 7)
@pytest.mark.parametrize("exponent", [19, 20, 25, 30, 35, 38])
def test_cosine_ranking_ignores_a_huge_query_norm(exponent: int) -> None:
    # vMF predictions carry κ in their norm; above ~1e19 the float32 squared norm overflowed and
    # every query decoded to one constant id with score 0.
    table = randn(300, 16, seed=8)
    unit = torch.nn.functional.normalize(randn(20, 16, seed=9), dim=-1)
    huge = unit * 10.0**exponent
    assert bool(torch.isfinite(huge).all())
    for dec in (ExactDecoder(table), HNSWDecoder(table, ef=300, num_threads=1)):
        ids, scores = dec.query(unit, 3)
        h_ids, h_scores = dec.query(huge, 3)
        assert torch.equal(h_ids, ids), type(dec).__name__
        torch.testing.assert_close(h_scores, scores, atol=1e-5, rtol=1e-5)
    # Huge and tiny table rows too.
    scaled = table * torch.logspace(-30, 30, 300)[:, None]
    e_ids = ExactDecoder(table).query(unit, 3)[0]
    assert torch.equal(ExactDecoder(scaled).query(unit, 3)[0], e_ids)
    assert torch.equal(HNSWDecoder(scaled, ef=300, num_threads=1).query(unit, 3)[0], e_ids)


TABLE = randn(64, 8, seed=10)
DECODERS = (ExactDecoder(TABLE), HNSWDecoder(TABLE, ef=64, num_threads=1))


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    st.lists(st.floats(-10, 10, allow_subnormal=False), min_size=8, max_size=8),
    st.floats(min_value=1e-30, max_value=1e36, allow_subnormal=False),
)
def test_scaling_a_query_by_any_positive_factor_keeps_the_cosine_ids(values: list[float], factor: float) -> None:
    q = torch.tensor([values], dtype=torch.float32)
    scaled = q * factor
    nonzero = q[q != 0].abs()
    assume(nonzero.numel() > 0)
    # The factor must keep the query finite and its entries normal floats (else it changes direction).
    assume(bool(torch.isfinite(scaled).all()) and float((nonzero * factor).min()) >= torch.finfo(torch.float32).tiny)
    cos = torch.nn.functional.normalize(q.double(), dim=-1) @ torch.nn.functional.normalize(TABLE.double(), dim=-1).T
    top2 = cos.topk(2, dim=-1).values[0]
    assume(float(top2[0] - top2[1]) > 1e-5)  # no near-tie that float32 rounding may flip
    for dec in DECODERS:
        ids, scores = dec.query(scaled, 1)
        assert int(ids[0, 0]) == int(cos.argmax()), type(dec).__name__
        assert math.isclose(float(scores[0, 0]), float(top2[0]), abs_tol=1e-5)
