"""benchmarks/gpu.py on a machine without CUDA: a clear message, exit 0, no results file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_gpu_benchmark_without_cuda_says_so_and_writes_nothing() -> None:
    results = ROOT / "benchmarks" / "results" / "gpu.md"
    before = results.stat().st_mtime_ns if results.exists() else None
    # No visible device, so the check holds on a GPU machine too.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(
        [sys.executable, "benchmarks/gpu.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "no CUDA device" in out.stdout and "no results were written" in out.stdout
    assert (results.stat().st_mtime_ns if results.exists() else None) == before
