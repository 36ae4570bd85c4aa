"""Cost of the vMF-induced distribution: chunked perplexity and sampling vs the full [N, V] matrix.

Setup (issue 5, section 3): N predictions of dim D against a V-row table, CPU, float32.

* ``VMFPerplexity.update`` with several ``chunk_size`` values, against the brute force that
  builds the whole ``[N, V]`` logit matrix and takes ``log_softmax`` (what the chunked
  logsumexp avoids). Both give the same NLL; the script checks it.
* Drawing two samples per prediction: ``vmf_sample`` (two-level Gumbel-max, chunked) against
  full-matrix Gumbel-max (``[2, N, V]`` noise) and full softmax + ``torch.multinomial``.
* ``fit_kappa`` on the same N predictions.

Time: the median of ``--runs`` runs after one warm-up, variants interleaved run by run so a
change of machine load hits all of them alike. "Score block" is the largest ``[N, chunk]``
float32 block alive at once (the full matrix for the brute force).

Run: ``python benchmarks/metrics_cost.py`` (about a minute on 2 cores) or ``--quick``.
Writes ``benchmarks/results/metrics_cost.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_contloss.functional.vmf_distribution import fit_kappa, sample_from_logits, vmf_sample
from lightning_contloss.metrics import VMFPerplexity


def brute_nll(pred: Tensor, target: Tensor, table: Tensor) -> Tensor:
    logits = pred @ F.normalize(table, dim=-1).T
    return -torch.log_softmax(logits, dim=-1).gather(1, target[:, None]).sum()


def brute_gumbel(pred: Tensor, table: Tensor, g: torch.Generator) -> Tensor:
    logits = pred @ F.normalize(table, dim=-1).T
    noise = -torch.empty((2, *logits.shape)).exponential_(generator=g).log()
    return (logits + noise).argmax(-1)


def brute_multinomial(pred: Tensor, table: Tensor, g: torch.Generator) -> Tensor:
    logits = pred @ F.normalize(table, dim=-1).T
    return sample_from_logits(logits, 2, generator=g)


def timed(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    for f in fns.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for name, f in fns.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def mib(n: int, cols: int) -> str:
    return f"{n * cols * 4 / 2**20:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--v", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="N=1024, 3 runs")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "metrics_cost.md")
    args = parser.parse_args()
    if args.quick:
        args.n, args.runs = 1024, 3
    n, v, d = args.n, args.v, args.d
    load_before = os.getloadavg()[0]
    g = torch.Generator().manual_seed(0)
    table = torch.randn(v, d, generator=g)
    target = torch.randint(0, v, (n,), generator=g)
    pred = (F.normalize(table[target], dim=-1) + 0.3 * torch.randn(n, d, generator=g)) * 8.0

    chunks = [1024, 2048, 4096]
    metrics = {c: VMFPerplexity(chunk_size=c) for c in chunks}
    ref = float(brute_nll(pred, target, table))
    for c, m in metrics.items():
        m.update(pred, target, table)
        got = float(m.nll_sum)
        assert abs(got - ref) <= 1e-4 * abs(ref), f"chunk {c}: NLL {got} differs from brute force {ref}"
        m.reset()

    ppl_fns: dict[str, Callable[[], object]] = {
        f"VMFPerplexity.update, chunk_size={c}": (lambda m=m: m.update(pred, target, table)) for c, m in metrics.items()
    }
    ppl_fns["brute force: full [N, V] log_softmax"] = lambda: brute_nll(pred, target, table)
    ppl = timed(ppl_fns, args.runs)
    base = ppl["brute force: full [N, V] log_softmax"]
    blocks = [*[mib(n, c) for c in chunks], mib(n, v)]

    sample_fns: dict[str, Callable[[], object]] = {
        "vmf_sample (two-level Gumbel-max, chunk 4096)": lambda: vmf_sample(pred, table, 2, generator=g),
        "full [N, V] Gumbel-max": lambda: brute_gumbel(pred, table, g),
        "full [N, V] softmax + multinomial": lambda: brute_multinomial(pred, table, g),
    }
    samp = timed(sample_fns, args.runs)
    sbase = samp["full [N, V] Gumbel-max"]
    fit = timed({"fit_kappa": lambda: fit_kappa(pred, target, table)}, max(1, args.runs // 2))["fit_kappa"]

    lines = [
        f"## vMF-induced distribution: N={n}, V={v}, D={d}, float32, CPU",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
        f"median of {args.runs} interleaved runs; 1-min load average {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after (on {os.cpu_count()} CPUs: above that count, other work shared the cores).",
        "",
        "| perplexity (one batch) | time (s) | vs brute force | score block |",
        "|---|---:|---:|---:|",
    ]
    for (name, t), block in zip(ppl.items(), blocks):
        lines.append(f"| {name} | {t:.3f} | {t / base:.2f}x | {block} |")
    lines += ["", "| two samples per prediction | time (s) | vs full Gumbel-max |", "|---|---:|---:|"]
    for name, t in samp.items():
        lines.append(f"| {name} | {t:.3f} | {t / sbase:.2f}x |")
    lines += ["", f"fit_kappa on the same {n} predictions: {fit:.3f} s.", ""]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
