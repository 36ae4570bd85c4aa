"""End to end: the same Transformer LM with the large-vocabulary softmax rivals and continuous heads, V = 128k and 400k.

One ``compare`` run per vocabulary size (every configuration in a fresh process, the same
training wall-clock per run, evaluation paused out of the clock), with the same body (the
example ``CausalTransformerLM``, compare's size) and one of these output layers:

* ``softmax``: ``Linear(256, V)`` + cross-entropy over the full ``[N, V]`` logits;
* ``adaptive``: ``nn.AdaptiveLogSoftmaxWithLoss``, ids ranked by training frequency, cutoffs
  ``[V/20, V/4]`` (20k and 100k at 400k; 6.4k and 32k at 128k), ``div_value`` 4;
* ``sampled``: sampled softmax, K = 8192 negatives per step shared by the batch, log-uniform
  (Zipf) proposal over frequency ranks, logQ correction, the true class always a candidate;
* ``chunked``: exact linear-cross-entropy computed over 8192-id vocabulary chunks, never
  holding the ``[N, V]`` logits (``lightning_contloss.functional.linear_cross_entropy``);
* ``cce``: the ``cut-cross-entropy`` package (Triton kernel on CUDA, its ``torch_compile``
  path on CPU); where it does not import, the run fails and the report says why;
* the continuous heads (``--continuous``; default cosine onto GloVe and InfoNCE onto random targets).

Every softmax-family run validates by the full argmax over V, scored in row blocks of at most
2^24 scores; continuous runs decode by exact k-NN (``--hnsw`` for the HNSW index instead, which
builds a 400k-row index on first use). The vocabularies: the PTB text mapped into GloVe 6B's
vocabulary, all 400,003 ids, or cut to 128,000 ids (the corpus's GloVe words, then GloVe's most
frequent others: a subword-sized output layer); ``--vocab 10k`` adds PTB's own 10k vocabulary.

For each vocabulary it reports train tokens/s, peak RSS, final val acc@1 and the time to reach
a common accuracy, each as a ratio to the **best rival**: the fastest softmax-family run (by
train tokens/s). Writes ``benchmarks/results/e2e.md`` and ``e2e.png``.

Run: ``python benchmarks/e2e.py`` (the estimate of its duration is printed first);
``--quick`` for a smoke test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from lightning_contloss.compare.report import format_failures, write_plot
from lightning_contloss.compare.runner import build_parser, run_compare
from lightning_contloss.compare.spec import CONTINUOUS_HEADS

RESULTS = Path(__file__).parent / "results"
RIVALS = ("softmax", "adaptive", "sampled:ce:num_negatives=8192", "chunked:ce:chunk_size=8192", "cce")
CONTINUOUS = ("linear:cosine:glove", "linear:infonce:random")
VALID_TOKENS = 2048
# (label, V, compare arguments); V only feeds the duration estimate.
VOCABS: dict[str, tuple[str, int, list[str]]] = {
    "10k": ("PTB, corpus vocabulary", 10_001, ["--evals", "4"]),
    "128k": (
        "PTB text, 128k GloVe ids",
        128_000,
        ["--output-vocab", "glove", "--output-vocab-size", "128000", "--evals", "3",
         "--max-valid-tokens", str(VALID_TOKENS)],
    ),
    "400k": (
        "PTB text, GloVe vocabulary",
        400_003,
        ["--output-vocab", "glove", "--evals", "3", "--max-valid-tokens", str(VALID_TOKENS)],
    ),
}
# Rough per-run costs outside the training clock on the 2-core machine (start-up, data, GloVe's
# word list), and the seconds per validation token per 1M output ids of one full-softmax pass.
SETUP_S = 30.0
SCORE_S_PER_TOKEN_PER_MID = 0.01
SOFTMAX_PASSES = 6  # the accuracy curve's points, the final validation, BrierLM's sampling pass
CONTINUOUS_EVAL_S = 40.0


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


def _continuous(row: dict[str, Any]) -> bool:
    return row["spec"]["head"] in CONTINUOUS_HEADS


def best_rival(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fastest softmax-family row (train tokens/s), or ``None`` when none finished."""
    rivals = [r for r in rows if not _continuous(r)]
    return max(rivals, key=lambda r: r["tokens_per_s"]) if rivals else None


def section(name: str, rows: list[dict[str, Any]], failures: list[tuple[str, str]]) -> list[str]:
    """Markdown lines for one vocabulary size: one row per run, ratios against the best rival."""
    ref = best_rival(rows)
    if ref is None:
        return [f"### {name}", "", "No softmax-family run finished.", "", format_failures(failures), ""]
    cont = [r["acc1"] for r in rows if _continuous(r) and r.get("acc1") is not None]
    level = 0.9 * min(ref.get("acc1") or 0.0, max(cont, default=ref.get("acc1") or 0.0))
    ref_time = time_to(ref["curve"], level)
    lines = [
        f"### {name} (V = {ref['vocab_size']:,})",
        "",
        f"Best rival: **{ref['label']}** (the fastest softmax-family run). Time to accuracy: training seconds "
        f"until val acc@1 first reaches {level:.3f} (0.9 × the lower of the best rival's and the best "
        "continuous run's final accuracy).",
        "",
        "| run | output-layer params | train tokens/s | × best rival | peak RSS (GB) | / best rival | val acc@1 "
        "| / best rival | time to acc (s) | best rival's time / this |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = time_to(r["curve"], level)
        # A run that starts at the level (a unigram prior can) has no meaningful ratio.
        speedup = None if not t or not ref_time else ref_time / t
        acc_ratio = None if r.get("acc1") is None or not ref.get("acc1") else r["acc1"] / ref["acc1"]
        lines.append(
            f"| {r['label']} | {r['output_params']:,} | {r['tokens_per_s']:,.0f} "
            f"| {r['tokens_per_s'] / ref['tokens_per_s']:.2f}× | {r['peak_rss_mb'] / 1024:.2f} "
            f"| {r['peak_rss_mb'] / ref['peak_rss_mb']:.2f} | {_fmt(r.get('acc1'), '.3f')} "
            f"| {_fmt(acc_ratio, '.2f')} | {_fmt(t, '.0f')} | {_fmt(speedup, '.1f')} |"
        )
    if failures:
        lines += ["", f"{len(failures)} run(s) failed and are missing above:", "", format_failures(failures)]
    return [*lines, ""]


def estimate_s(vocabs: list[str], n_rivals: int, n_continuous: int, budget: float) -> float:
    """A rough wall-clock estimate of the whole benchmark (training budgets plus set-up and evaluation)."""
    total = 0.0
    for key in vocabs:
        _, vocab_size, _ = VOCABS[key]
        valid = VALID_TOKENS if key != "10k" else 8192
        softmax_eval = SOFTMAX_PASSES * valid * SCORE_S_PER_TOKEN_PER_MID * vocab_size / 1e6
        total += n_rivals * (budget + SETUP_S + softmax_eval) + n_continuous * (budget + SETUP_S + CONTINUOUS_EVAL_S)
    return total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=60.0, help="training seconds per run (default 60)")
    p.add_argument("--vocab", nargs="+", choices=tuple(VOCABS), default=["128k", "400k"], help="vocabulary sizes")
    p.add_argument("--rivals", nargs="+", default=list(RIVALS), help="softmax-family runs, HEAD[:ce[:key=value,...]]")
    p.add_argument("--continuous", nargs="+", default=list(CONTINUOUS), help="continuous runs, HEAD:LOSS:TARGETS")
    p.add_argument("--hnsw", action="store_true", help="decode continuous runs' final validation through HNSW")
    p.add_argument("--progress", action="store_true", help="show Lightning's progress bars")
    p.add_argument("--reuse", action="store_true", help="reuse a setting's finished runs found under --out")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (results not meaningful)")
    p.add_argument("--out", default=str(RESULTS), help="where e2e.md and e2e.png go")
    args = p.parse_args()
    quick = ["--max-train-tokens", "20000", "--max-valid-tokens", "512", "--evals", "2"] if args.quick else []
    progress = [] if args.progress else ["--no-progress"]
    runs = [*args.rivals, *args.continuous]
    estimate = estimate_s(args.vocab, len(args.rivals), len(args.continuous), args.budget)
    print(
        f"e2e: {len(runs)} runs × {len(args.vocab)} vocabularies × {args.budget:.0f} s of training; "
        f"expected wall-clock ≈ {estimate / 60:.0f} min (rough; set-up and full-softmax evaluation included)",
        flush=True,
    )
    out = Path(args.out)
    started = time.perf_counter()
    sections: list[str] = []
    all_rows: list[dict[str, Any]] = []
    for key in args.vocab:
        name, _, extra = VOCABS[key]
        folder = out / f"e2e-{key}"
        cargs = build_parser().parse_args(
            [
                "--budget", str(args.budget * len(runs)),
                "--out", str(folder),
                "--decoder", "hnsw" if args.hnsw else "exact",
                "--runs", *runs,
                *extra, *quick, *progress,
            ]
        )
        cargs.command_line = "python benchmarks/e2e.py " + " ".join(sys.argv[1:])
        saved = sorted(folder.glob("run*.json"))
        failures: list[tuple[str, str]] = []
        if args.reuse and saved:
            rows = [json.loads(f.read_text(encoding="utf-8")) for f in saved]
            print(f"e2e: reusing the {len(rows)} finished runs of {name!r} in {folder}")
        else:
            for f in saved:
                f.unlink()
            rows, _ = run_compare(cargs)
            failures = list(getattr(cargs, "failures", []))
        sections += section(name, rows, failures)
        for r in rows:
            r = dict(r)
            r["label"] = f"V={r['vocab_size'] // 1000}k: {r['label']}"
            all_rows.append(r)
    elapsed = time.perf_counter() - started
    if all_rows:
        write_plot(all_rows, out / "e2e.png", "val acc@1: the softmax rivals and continuous heads")
    load = os.getloadavg()[0]
    header = [
        "## End-to-end: the large-vocabulary softmax rivals and continuous heads",
        "",
        f"Command: `python benchmarks/e2e.py {' '.join(sys.argv[1:])}` on {platform.processor() or platform.machine()}"
        f", Python {platform.python_version()}; {args.budget:.0f} s of training per run; total wall-clock "
        f"{elapsed / 60:.1f} min (estimated {estimate / 60:.0f}); 1-minute load average at the end {load:.2f}. "
        "Each run is a fresh process; throughput excludes evaluation pauses; peak RSS is the run's own.",
        "",
        "Every run shares the body (2-layer, 256-wide causal Transformer); its input embedding covers only "
        "the ids that occur as input (`input_vocab_size`), so the runs differ in the output layer only. "
        "Softmax-family runs validate by the full argmax over V; continuous runs by "
        f"{'HNSW' if args.hnsw else 'exact'} k-NN.",
        "",
    ]
    text = "\n".join([*header, *sections, "![accuracy curves](e2e.png)", ""])
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e.md").write_text(text, encoding="utf-8")
    print(text)
    return 0 if all_rows else 1


if __name__ == "__main__":
    sys.exit(main())
