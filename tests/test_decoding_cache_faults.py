"""The cache and save/load fault test (issue 11 rows 2-4): damaged, swapped and foreign files, in a subprocess.

Every file an index cache entry or a saved decoder holds is damaged in a few ways: truncated,
bytes flipped (among them the header bytes that made hnswlib SIGSEGV), swapped with another
entry's file, or the whole entry replaced by another table's. The construction that meets the
damage runs in a subprocess, so a crash fails the test instead of killing pytest. A damaged
cache entry must be rebuilt with a warning and give the ids of exact search; a damaged saved
folder must raise ``ValueError`` naming the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from lightning_contloss.decoding import ExactDecoder, HNSWDecoder

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "cache_fault_worker.py"
TABLE_SEED, OTHER_SEED, QUERY_SEED = 1, 2, 3


def table(seed: int) -> torch.Tensor:
    # The worker builds the same table from the same seed.
    return torch.randn(300, 8, generator=torch.Generator().manual_seed(seed))


def other_table() -> torch.Tensor:
    # Ten duplicate rows give it another id map (meta.pt), so every one of its files differs.
    t = table(OTHER_SEED)
    t[290:] = t[:10]
    return t


def truncate(path: Path, other: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_at(offset: int) -> Callable[[Path, Path], None]:
    def flip(path: Path, other: Path) -> None:
        data = bytearray(path.read_bytes())
        at = offset if offset >= 0 else len(data) // 2
        for i in range(at, min(at + 8, len(data))):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))

    return flip


def swap(path: Path, other: Path) -> None:
    shutil.copyfile(other, path)


def delete(path: Path, other: Path) -> None:
    path.unlink()


DAMAGES: dict[str, Callable[[Path, Path], None]] = {
    "truncate": truncate,
    "flip-header": flip_at(0),
    "flip-count": flip_at(16),  # hnswlib's element count: silently wrong ids before the manifest
    "flip-middle": flip_at(-1),
    "swap": swap,
}


def only_entry(root: Path) -> Path:
    (entry,) = [p for p in root.iterdir() if p.is_dir()]
    return entry


def test_damaged_cache_entries_and_saved_folders_never_reach_hnswlib(tmp_path: Path) -> None:
    own, other = table(TABLE_SEED), other_table()
    pristine, foreign = tmp_path / "pristine", tmp_path / "foreign"
    HNSWDecoder(own, cache_dir=pristine, num_threads=1)
    HNSWDecoder(other, cache_dir=foreign, num_threads=1)  # same parameters, another table
    entry, foreign_entry = only_entry(pristine), only_entry(foreign)
    names = sorted(p.name for p in entry.iterdir())
    assert names == ["index.bin", "manifest.json", "meta.pt"]
    for name in names:  # a swap really changes the file
        assert (entry / name).read_bytes() != (foreign_entry / name).read_bytes()

    cache_cases = []
    for name in names:
        for how, damage in DAMAGES.items():
            root = tmp_path / "cases" / f"{name}-{how}"
            shutil.copytree(pristine, root)
            damage(root / entry.name / name, foreign_entry / name)
            cache_cases.append({"name": f"cache {name} {how}", "cache_dir": str(root)})
        root = tmp_path / "cases" / f"{name}-deleted"
        shutil.copytree(pristine, root)
        delete(root / entry.name / name, foreign_entry / name)
        cache_cases.append({"name": f"cache {name} deleted", "cache_dir": str(root)})
    # Another table's entry under this table's key (a copied or synced cache folder).
    root = tmp_path / "cases" / "foreign"
    shutil.copytree(foreign, root)
    (root / foreign_entry.name).rename(root / entry.name)
    cache_cases.append({"name": "cache foreign entry", "cache_dir": str(root)})

    saved = HNSWDecoder(own, num_threads=1).save(tmp_path / "saved")
    other_saved = HNSWDecoder(other[:10], num_threads=1).save(tmp_path / "other-saved")  # a 10-row table
    for name in [*names, "table.pt"]:
        assert (saved / name).read_bytes() != (other_saved / name).read_bytes()
    load_cases = []
    for name in sorted(p.name for p in saved.iterdir()):
        for how, damage in DAMAGES.items():
            folder = tmp_path / "load" / f"{name}-{how}"
            shutil.copytree(saved, folder)
            damage(folder / name, other_saved / name)
            load_cases.append({"name": f"load {name} {how}", "folder": str(folder)})

    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "table_seed": TABLE_SEED,
                "query_seed": QUERY_SEED,
                "cache_cases": cache_cases,
                "load_cases": load_cases,
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(spec)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    done = [line for line in lines if "started" not in line]
    last = lines[-1]["case"] if lines else "(none)"
    assert proc.returncode == 0, f"the worker died (rc {proc.returncode}) during {last!r}:\n{proc.stderr[-3000:]}"
    assert len(done) == len(cache_cases) + len(load_cases)

    exact = ExactDecoder(own).query(table(QUERY_SEED)[:40], 3)[0].tolist()
    for result in done[: len(cache_cases)]:
        case = result["case"]
        assert not result["from_cache"], case
        assert result["warnings"] and "broken index cache entry" in result["warnings"][0], case
        assert result["ids"] == exact and result["again_ids"] == exact, case
        assert result["repaired"], case  # the rebuilt entry is intact: the next construction loads it
    for result, case in zip(done[len(cache_cases) :], load_cases, strict=True):
        assert result["error"] is not None and result["value_error"], result
        assert case["folder"] in result["message"], result
