"""End to end: the same Transformer LM trained with softmax and with a continuous head, at V=10k and V=400k.

Two comparisons, each a ``compare`` run (every configuration in a fresh process, equal training
wall-clock, evaluation paused out of the clock):

* **10k**: Penn Treebank in its own 10k-word vocabulary;
* **400k**: the same PTB text mapped into GloVe 6B's 400k-word vocabulary (``--output-vocab glove``),
  so the softmax has a 400k-way output layer while the continuous head still regresses D numbers.

For each vocabulary it reports training throughput, peak RSS, final val acc@1, and the time to
reach a common accuracy (the lower of the two runs' final accuracies, times 0.9, read off the
accuracy-vs-seconds curves), with continuous/softmax ratios measured side by side in the same
run. Writes ``benchmarks/results/e2e.md`` and ``benchmarks/results/e2e.png``.

Run: ``python benchmarks/e2e.py`` (about 2 × ``--budget`` seconds of training plus set-up,
evaluation and, at 400k, the HNSW index build); ``--quick`` for a smoke test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
from pathlib import Path
from typing import Any

from lightning_contloss.compare.report import write_plot
from lightning_contloss.compare.runner import build_parser, run_compare

RESULTS = Path(__file__).parent / "results"


def time_to(curve: list[dict[str, float]], level: float) -> float | None:
    """Training seconds at which the accuracy curve first reaches ``level`` (linear between points)."""
    pts = [(p["seconds"], p["acc1"]) for p in curve]
    for (s0, a0), (s1, a1) in itertools.pairwise(pts):
        if a1 >= level > a0:
            return s0 + (s1 - s0) * (level - a0) / (a1 - a0)
        if a0 >= level:
            return s0
    return None


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def section(name: str, rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines for one vocabulary size: one row per run, ratios against the softmax run."""
    ref = next(r for r in rows if r["spec"]["head"] == "softmax")
    finals = [r["acc1"] for r in rows if r.get("acc1") is not None]
    level = 0.9 * min(finals) if finals else 0.0
    ref_time = time_to(ref["curve"], level)
    lines = [
        f"### {name} (V = {ref['vocab_size']:,})",
        "",
        f"Time to accuracy: training seconds until val acc@1 first reaches {level:.3f} "
        "(0.9 × the lower final accuracy).",
        "",
        "| run | output-layer params | train tokens/s | × softmax | peak RSS (GB) | / softmax | val acc@1 "
        "| time to acc (s) | softmax time / this |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = time_to(r["curve"], level)
        # A run that starts at the level (softmax's unigram prior can) has no meaningful ratio.
        speedup = None if not t or not ref_time else ref_time / t
        lines.append(
            f"| {r['label']} | {r['output_params']:,} | {r['tokens_per_s']:,.0f} "
            f"| {r['tokens_per_s'] / ref['tokens_per_s']:.1f}× | {r['peak_rss_mb'] / 1024:.2f} "
            f"| {r['peak_rss_mb'] / ref['peak_rss_mb']:.2f} | {_fmt(r.get('acc1'), '.3f')} "
            f"| {_fmt(t, '.0f')} | {_fmt(speedup, '.1f')} |"
        )
    return [*lines, ""]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=240.0, help="training seconds per vocabulary size (all runs)")
    p.add_argument("--continuous", default="linear:infonce:random", help="the continuous run, HEAD:LOSS:TARGETS")
    p.add_argument("--glove-continuous", default="linear:infonce:glove", help="the continuous run at 400k")
    p.add_argument("--progress", action="store_true", help="show Lightning's progress bars")
    p.add_argument("--reuse", action="store_true", help="reuse a setting's finished runs found under --out")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (results not meaningful)")
    p.add_argument("--out", default=str(RESULTS), help="where e2e.md and e2e.png go")
    args = p.parse_args()
    quick = ["--max-train-tokens", "20000", "--max-valid-tokens", "1024", "--evals", "2"] if args.quick else []
    progress = [] if args.progress else ["--no-progress"]
    out = Path(args.out)
    sections: list[str] = []
    all_rows: list[dict[str, Any]] = []
    settings = (
        ("PTB, corpus vocabulary", ["--evals", "4"], args.continuous),
        # A 400k-way softmax costs ~0.2 GFLOP per validation token: fewer, smaller evaluations.
        (
            "PTB text, GloVe vocabulary",
            ["--output-vocab", "glove", "--evals", "3", "--max-valid-tokens", "2048"],
            args.glove_continuous,
        ),
    )
    for i, (name, extra, continuous) in enumerate(settings):
        cargs = build_parser().parse_args(
            [
                "--budget",
                str(args.budget),
                "--out",
                str(out / f"e2e-run{i + 1}"),
                "--runs",
                "softmax",
                continuous,
                *extra,
                *quick,
                *progress,
            ]
        )
        cargs.command_line = "python benchmarks/e2e.py " + " ".join(sys.argv[1:])
        folder = out / f"e2e-run{i + 1}"
        saved = sorted(folder.glob("run*.json"))
        if args.reuse and len(saved) == 2:
            rows = [json.loads(f.read_text(encoding="utf-8")) for f in saved]
            print(f"e2e: reusing the finished runs of {name!r} in {folder}")
        else:
            for f in saved:
                f.unlink()
            rows, _ = run_compare(cargs)
        if len(rows) < 2:
            print(f"e2e: a run of {name!r} failed; see above", file=sys.stderr)
            return 1
        sections += section(name, rows)
        for r in rows:
            r = dict(r)
            r["label"] = f"V={r['vocab_size'] // 1000}k: {r['label']}"
            all_rows.append(r)
    write_plot(all_rows, out / "e2e.png", "val acc@1: softmax vs continuous at V=10k and V=400k")
    header = [
        "## End-to-end: softmax vs continuous output, V = 10k and 400k",
        "",
        f"Command: `python benchmarks/e2e.py {' '.join(sys.argv[1:])}` on {platform.processor() or platform.machine()}"
        f", Python {platform.python_version()}; {args.budget:.0f} s of training per vocabulary size, split evenly "
        "between the two runs. Each run is a fresh process; throughput excludes evaluation pauses.",
        "",
        "Both runs share the body. Its input embedding covers only the ids that occur as input "
        "(`input_vocab_size`: PTB's 9.8k words at V = 400k, GloVe's other words share one row), so at 400k the "
        "runs differ in the output layer: a `Linear(256, 400k)` with cross-entropy against a `Linear(256, 50)` "
        "regressing GloVe vectors.",
        "",
    ]
    text = "\n".join([*header, *sections, "![accuracy curves](e2e.png)", ""])
    (out / "e2e.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
