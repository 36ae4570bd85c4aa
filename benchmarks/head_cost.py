"""Cost of an output head plus its loss, forward + backward: continuous losses vs softmax.

Setup (issue 3, section 6): N tokens of hidden size H, embedding dim D, vocabulary V, CPU.
Every variant starts from the same hidden states ``h [N, H]`` (requires grad, as if they came
from a model body) and ends with ``.backward()``:

* ``floor``: the bare projection ``h @ P.T`` (``Linear(H, D)``), backward with a fixed
  upstream gradient: the least any continuous-output head can cost;
* each continuous loss, as the torchmetrics object a training step calls (``Linear(H, D)`` +
  ``loss(pred, ids)``);
* ``softmax CE``: ``Linear(H, V)`` + ``F.cross_entropy``;
* ``adaptive softmax``: ``nn.AdaptiveLogSoftmaxWithLoss(H, V, cutoffs=[V/16, V/4])``.

Target ids are Zipf-distributed (rank = id, exponent 1), as in text, which is the case adaptive
softmax is designed for.

Time: the median of ``--runs`` runs after one warm-up, variants interleaved run by run so a
change of machine load hits all of them alike; process CPU time is recorded next to wall time,
as it is less inflated when other jobs share the CPU. Memory: each (variant, V) runs once more in a
fresh subprocess started with ``MALLOC_MMAP_THRESHOLD_=65536`` (so freed tensors go back to
the OS and RSS follows live memory); after building the inputs and a small warm-up, the peak
RSS is reset (``/proc/self/clear_refs``) and the peak reached during one forward+backward,
minus the RSS just before it, is reported as "peak extra". It includes the gradient buffers
of the head's weights. Linux only.

Run: ``python benchmarks/head_cost.py`` (full, several minutes) or ``--quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_contloss.losses import CosineLoss, InfoNCELoss, L2Loss, MaxMarginLoss, VMFLoss
from lightning_contloss.targets import TargetEmbeddings

CONTINUOUS = {
    "cosine": lambda t: CosineLoss(t),
    "L2": lambda t: L2Loss(t),
    "vMF": lambda t: VMFLoss(t),
    "vMF (approx)": lambda t: VMFLoss(t, approx=True),
    "max-margin, 1024 sampled": lambda t: MaxMarginLoss(t, negatives="sampled", num_negatives=1024),
    "max-margin, in-batch": lambda t: MaxMarginLoss(t, negatives="in_batch"),
    "max-margin, informative (all V)": lambda t: MaxMarginLoss(t, negatives="informative"),
    "InfoNCE, 1024 sampled": lambda t: InfoNCELoss(t, num_negatives=1024),
}
VARIANTS = ["floor", *CONTINUOUS, "softmax CE", "adaptive softmax"]


@dataclass
class Row:
    vocab: int
    variant: str
    ms: float
    cpu_ms: float
    x_floor: float
    x_floor_cpu: float
    ce_speedup: float
    adaptive_speedup: float
    mib: float
    pct_ce: float


def zipf_ids(num: int, vocab: int, generator: torch.Generator) -> Tensor:
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    return torch.multinomial(weights, num, replacement=True, generator=generator)


def build(
    variant: str, n: int, hidden: int, dim: int, vocab: int, device: str | torch.device = "cpu"
) -> Callable[[], None]:
    """Inputs and head for one variant on ``device``; returns a closure running one forward + backward."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, hidden, generator=g).to(device).requires_grad_()
    ids = zipf_ids(n, vocab, g).to(device)
    head: nn.Module
    if variant == "softmax CE":
        head = nn.Linear(hidden, vocab).to(device)

        def step() -> None:
            F.cross_entropy(head(h), ids).backward()

    elif variant == "adaptive softmax":
        head = nn.AdaptiveLogSoftmaxWithLoss(hidden, vocab, cutoffs=[vocab // 16, vocab // 4]).to(device)

        def step() -> None:
            head(h, ids).loss.backward()

    else:
        head = nn.Linear(hidden, dim, bias=False).to(device)
        if variant == "floor":
            upstream = torch.randn(n, dim, generator=g).to(device)

            def step() -> None:
                head(h).backward(upstream)

        else:
            targets = TargetEmbeddings.random(vocab, dim, seed=1).to(device)
            loss = CONTINUOUS[variant](targets).to(device)

            def step() -> None:
                loss(head(h), ids).backward()

    def run() -> None:
        # Gradients are freed before each run so every run allocates (and times) them afresh.
        h.grad = None
        head.zero_grad(set_to_none=True)
        step()

    return run


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"{field}:\s+(\d+)", text)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}; the memory measurement needs Linux")
    return int(match.group(1))


def measure_memory(variant: str, n: int, hidden: int, dim: int, vocab: int) -> float:
    """Child process body: peak extra RSS (MiB) of one forward + backward."""
    build(variant, 64, hidden, dim, 1024)()  # thread pools and lazy init, not counted
    run = build(variant, n, hidden, dim, vocab)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS high-water mark
    before = _status_kib("VmRSS")
    run()
    return (_status_kib("VmHWM") - before) / 1024


def memory_in_subprocess(variant: str, n: int, hidden: int, dim: int, vocab: int, threads: int) -> float:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(threads))
    args = json.dumps([variant, n, hidden, dim, vocab, threads])
    out = subprocess.run(
        [sys.executable, __file__, "--child-memory", args], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=512, V in {8k, 32k}, 3 runs: a smoke run")
    parser.add_argument("--vocab", type=int, nargs="+", help="vocabulary sizes (default 32k 128k 256k)")
    parser.add_argument("--runs", type=int, help="timed runs per variant (default 5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant memory subprocesses")
    parser.add_argument("--out", type=Path, help="markdown output (default benchmarks/results/head_cost[_quick].md)")
    parser.add_argument("--child-memory", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_memory:
        variant, n, hidden, dim, vocab, threads = json.loads(args.child_memory)
        torch.set_num_threads(threads)
        print(measure_memory(variant, n, hidden, dim, vocab))
        return

    torch.set_num_threads(args.threads)
    n, hidden, dim = (512, 512, 300) if args.quick else (2048, 512, 300)
    vocabs = args.vocab or ([8192, 32768] if args.quick else [32768, 131072, 262144])
    runs = args.runs or (3 if args.quick else 5)
    if runs < 1:
        parser.error("--runs must be >= 1")
    out = args.out or Path(__file__).parent / "results" / ("head_cost_quick.md" if args.quick else "head_cost.md")
    load_start = load()

    rows: list[Row] = []
    for vocab in vocabs:
        closures = {v: build(v, n, hidden, dim, vocab) for v in VARIANTS}
        wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
        cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for fn in closures.values():
            fn()  # warm-up
        for _ in range(runs):
            for v, fn in closures.items():
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                fn()
                wall[v].append(time.perf_counter() - start_wall)
                cpu[v].append(time.process_time() - start_cpu)
        del closures
        ms = {v: statistics.median(t) * 1e3 for v, t in wall.items()}
        cpu_ms = {v: statistics.median(t) * 1e3 for v, t in cpu.items()}
        memory = {
            v: (float("nan") if args.no_memory else memory_in_subprocess(v, n, hidden, dim, vocab, args.threads))
            for v in VARIANTS
        }
        for v in VARIANTS:
            rows.append(
                Row(
                    vocab=vocab,
                    variant=v,
                    ms=ms[v],
                    cpu_ms=cpu_ms[v],
                    x_floor=ms[v] / ms["floor"],
                    x_floor_cpu=cpu_ms[v] / cpu_ms["floor"],
                    ce_speedup=ms["softmax CE"] / ms[v],
                    adaptive_speedup=ms["adaptive softmax"] / ms[v],
                    mib=memory[v],
                    pct_ce=100 * memory[v] / memory["softmax CE"],
                )
            )
            print(
                f"V={vocab:>7} {v:<34} {ms[v]:10.2f} ms {cpu_ms[v]:10.2f} CPU ms {memory[v]:9.1f} MiB", file=sys.stderr
            )

        write_report(rows, args, n, hidden, dim, runs, load_start, out, final=vocab == vocabs[-1])


def write_report(
    rows: list[Row],
    args: argparse.Namespace,
    n: int,
    hidden: int,
    dim: int,
    runs: int,
    load_start: str,
    out: Path,
    final: bool,
) -> None:
    """Write the markdown table of the rows so far (so a long run keeps its finished vocabularies)."""
    command = "python benchmarks/head_cost.py" + (" --quick" if args.quick else "")
    if args.vocab:
        command += " --vocab " + " ".join(map(str, args.vocab))
    if args.runs:
        command += f" --runs {args.runs}"
    lines = [
        f"# Head cost: forward + backward, N={n}, H={hidden}, D={dim}",
        "",
        f"`{command}` on {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, median of {runs} runs. Load average at start {load_start}, at end {load()}: "
        f"above {args.threads}, other jobs shared the CPU and wall times are inflated; the CPU-time "
        "columns (process CPU seconds, all threads) are less affected.",
        "",
        "| V | variant | median ms | CPU ms | × floor | × floor (CPU) | × faster than CE "
        "| × faster than adaptive | peak extra MiB | % of CE's |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.vocab} | {r.variant} | {r.ms:.1f} | {r.cpu_ms:.1f} | {r.x_floor:.2f} | {r.x_floor_cpu:.2f} | "
            f"{r.ce_speedup:.1f} | {r.adaptive_speedup:.1f} | {r.mib:.1f} | {r.pct_ce:.2f} |"
        )
    done = sorted({r.vocab for r in rows})
    lines += ["", *targets_report(rows, 131072 if 131072 in done else done[-1])]
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if final:
        print(text)


def targets_report(rows: list[Row], vocab: int) -> list[str]:
    """The issue's targets, each marked met or not (on wall time), at vocabulary ``vocab``."""
    at = {r.variant: r for r in rows if r.vocab == vocab}
    lines = [f"Targets at V={vocab} (wall time; CPU-time ratio in brackets):", ""]

    def check(name: str, ok: bool, detail: str) -> None:
        lines.append(f"- {'met' if ok else '**not met**'}: {name} ({detail})")

    for v in ("cosine", "L2", "vMF"):
        check(f"{v} ≤ 1.3× floor", at[v].x_floor <= 1.3, f"{at[v].x_floor:.2f}× [{at[v].x_floor_cpu:.2f}×]")
    for v in ("max-margin, 1024 sampled", "InfoNCE, 1024 sampled"):
        check(f"{v} ≤ 2× floor", at[v].x_floor <= 2.0, f"{at[v].x_floor:.2f}× [{at[v].x_floor_cpu:.2f}×]")
    for v in CONTINUOUS:
        r = at[v]
        ok = r.ce_speedup >= 100 and r.adaptive_speedup >= 20
        check(
            f"{v} ≥ 100× faster than CE and ≥ 20× than adaptive", ok, f"{r.ce_speedup:.0f}×, {r.adaptive_speedup:.0f}×"
        )
        check(f"{v} peak extra memory ≤ 2% of CE's", r.pct_ce <= 2.0, f"{r.pct_ce:.2f}%")
    return lines


if __name__ == "__main__":
    main()
