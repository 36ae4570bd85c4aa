"""Sampling from the calibrated distribution: a continuous LM against its softmax twin on PTB, at T = 1.

Both models train the example Transformer body (``compare``'s size) on the same PTB batches for
the same number of steps: ``ContinuousLM`` with its defaults (InfoNCE onto random targets) and
``SoftmaxLM``. The fixed validation subset is split in two: the first ``--calibration-tokens``
fit κ̂ (``continuous_calibrate``, what ``DecodingCallback`` does at validation), the rest is
scored. On the scored tokens, for each model:

* ``greedy acc@1``: the most likely token is the target;
* ``E[sampled acc]``: mean ``p(target | prefix)``, the expected accuracy of one draw at T = 1;
* ``sampled acc (full)`` / ``(top-50)``: the measured accuracy of ``--draws`` teacher-forced draws
  per position from the whole distribution, and from its 50 most likely tokens (HF's default
  ``top_k``, the candidates ``generate(do_sample=True)`` scores);
* ``continuation acc``: per-token accuracy of free-running sampled continuations of
  ``--continue-tokens`` tokens after ``--prompts`` true prefixes, against the true text;
* ``perplexity``: ``exp`` of the mean NLL (the continuous model's under its calibrated
  distribution, normalised over all V rows).

The continuous model is also scored at κ = 1/τ (InfoNCE's fallback without a fit) and κ = 1 (what
``generate(do_sample=True)`` sampled from before calibration existed).

Usage (from the repository root; not a timing benchmark)::

    taskset -c 0 python benchmarks/sampling.py --steps 300
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from lightning_contloss.compare.spec import DataOptions
from lightning_contloss.compare.worker import MODEL_DEFAULTS
from lightning_contloss.examples import ContinuousLM
from lightning_contloss.functional import sample_from_logits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import emit, train_run

RESULTS = Path(__file__).resolve().parent / "results"
TOP_K = 50


class Scorer:
    """Log-probabilities, top-k and draws of one model, the same questions for both kinds."""

    def __init__(self, module: L.LightningModule, kappa: float | None = None) -> None:
        self.module = module
        self.continuous = isinstance(module, ContinuousLM)
        self.kappa = kappa  # None: the module's calibration as it stands

    def log_probs(self, x: Tensor) -> Tensor:
        """``[B, T, V]`` log p(w | x[:, :t+1]) over the whole vocabulary."""
        out = self.module(x)
        if not self.continuous:
            return torch.log_softmax(out.float(), dim=-1)
        assert isinstance(self.module, ContinuousLM)
        cal = self.module.continuous_calibration
        saved = cal.kappa
        if self.kappa is not None:
            cal.kappa = self.kappa
        try:
            unit = torch.nn.functional.normalize(self.module.continuous_targets.weight.float(), dim=-1)
            logits = cal.query(out) @ unit.T  # κ·cos over the whole table
        finally:
            cal.kappa = saved
        special = self.module.continuous_targets.special_mask
        return torch.log_softmax(logits.masked_fill(special, -math.inf), dim=-1)


def _draw(log_probs: Tensor, draws: int, top_k: int | None, g: torch.Generator) -> Tensor:
    if top_k is not None:
        kth = log_probs.topk(top_k, dim=-1).values[..., -1:]
        log_probs = log_probs.masked_fill(log_probs < kth, -math.inf)
    return sample_from_logits(log_probs, draws, generator=g)


@torch.no_grad()
def score(scorer: Scorer, batches: list[tuple[Tensor, Tensor]], draws: int, seed: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    nll = greedy = expected = full = top = 0.0
    count = 0
    for x, y in batches:
        lp = scorer.log_probs(x)
        target_lp = lp.gather(-1, y[..., None])[..., 0]
        nll -= float(target_lp.sum())
        expected += float(target_lp.exp().sum())
        greedy += float((lp.argmax(-1) == y).sum())
        full += float((_draw(lp, draws, None, g) == y).float().mean(0).sum())
        top += float((_draw(lp, draws, TOP_K, g) == y).float().mean(0).sum())
        count += y.numel()
    return {
        "greedy": greedy / count,
        "expected": expected / count,
        "full": full / count,
        "top": top / count,
        "ppl": math.exp(nll / count),
        "tokens": count,
    }


@torch.no_grad()
def continuation_accuracy(
    scorer: Scorer, stream: Tensor, prompts: int, prompt_len: int, steps: int, seed: int
) -> float:
    """Per-token accuracy of free-running draws (whole distribution, T = 1) after true prefixes."""
    g = torch.Generator().manual_seed(seed)
    span = prompt_len + steps
    starts = torch.arange(prompts) * ((stream.numel() - span) // prompts)
    windows = torch.stack([stream[s : s + span] for s in starts.tolist()])
    seq = windows[:, :prompt_len].clone()
    for _ in range(steps):
        lp = scorer.log_probs(seq)[:, -1]
        seq = torch.cat([seq, _draw(lp, 1, None, g)[0][:, None]], dim=1)
    return float((seq[:, prompt_len:] == windows[:, prompt_len:]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per model (equal tokens)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-valid-tokens", type=int, default=8192)
    parser.add_argument("--calibration-tokens", type=int, default=2048, help="validation tokens κ̂ is fitted on")
    parser.add_argument("--draws", type=int, default=4, help="teacher-forced draws per position")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--continue-tokens", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "sampling.md")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    torch.set_num_threads(args.threads)
    options = DataOptions(max_valid_tokens=args.max_valid_tokens, batch_size=32, seq_len=64)

    rows: list[tuple[str, dict[str, float], float]] = []
    notes: list[str] = []
    for text in ("softmax", "linear:infonce:random"):
        module, dm, seconds = train_run(text, args.steps, options, args.seed)
        module.eval()
        batches = list(dm.val_dataloader())
        per_batch = batches[0][1].numel()
        n_cal = -(-args.calibration_tokens // per_batch)
        calibration, scored = batches[:n_cal], batches[n_cal:]
        stream = torch.cat([y.flatten() for _, y in scored])
        if isinstance(module, ContinuousLM):
            with torch.no_grad():
                pred = torch.cat([module(x) for x, _ in calibration])
                target = torch.cat([y for _, y in calibration])
            kappa = module.continuous_calibrate(pred, target)
            tau = module.hparams["temperature"]
            notes.append(
                f"κ̂ = {kappa:.2f} fitted on {target.numel()} validation tokens; InfoNCE's τ = {tau} (1/τ = {1 / tau:g})"
            )
            variants = {
                f"continuous, κ̂ = {kappa:.2f} (calibrated)": None,
                f"continuous, κ = 1/τ = {1 / tau:g}": 1 / tau,
                "continuous, κ = 1 (sampling before calibration)": 1.0,
            }
        else:
            variants = {"softmax": None}
        for name, kappa_override in variants.items():
            scorer = Scorer(module, kappa_override)
            result = score(scorer, scored, args.draws, args.seed)
            result["continuation"] = continuation_accuracy(
                scorer, stream, args.prompts, args.prompt_len, args.continue_tokens, args.seed
            )
            rows.append((name, result, seconds))
            print(f"{name}: {result}", file=sys.stderr, flush=True)
    write(rows, notes, args)


def write(rows: list[tuple[str, dict[str, float], float]], notes: list[str], args: argparse.Namespace) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    soft = rows[0][1]
    head = (
        "| model | greedy acc@1 | E[sampled acc] | sampled acc (full) | / softmax | sampled acc (top-50) | / softmax "
        f"| continuation acc ({args.continue_tokens} tokens) | / softmax | perplexity | / softmax |"
    )
    lines = [
        "# Sampling from the calibrated distribution",
        "",
        f"Command: `taskset -c 0 python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), pinned to CPU 0; "
        f"load average (1, 5, 15 min) at the end: {load} (2 cores, shared with other work; accuracies do not "
        f"depend on it). PTB, both models trained {args.steps} steps × 32 × 64 tokens on the same batches "
        f"(seed {args.seed}), body {MODEL_DEFAULTS}. Validation: the first {args.max_valid_tokens} tokens; "
        f"κ̂ fitted on the first {args.calibration_tokens}, everything below scored on the other "
        f"{int(soft['tokens'])}. Draws at T = 1: {args.draws} teacher-forced per position; continuations: "
        f"{args.prompts} prompts of {args.prompt_len} true tokens, {args.continue_tokens} sampled tokens each.",
        "",
        *(f"- {note}" for note in notes),
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    for name, r, _ in rows:
        lines.append(
            f"| {name} | {r['greedy']:.4f} | {r['expected']:.4f} | {r['full']:.4f} | {_ratio(r, soft, 'full')} "
            f"| {r['top']:.4f} | {_ratio(r, soft, 'top')} | {r['continuation']:.4f} "
            f"| {_ratio(r, soft, 'continuation')} | {r['ppl']:.1f} | {_ratio(r, soft, 'ppl')} |"
        )
    emit(lines, args.out)


def _ratio(row: dict[str, float], reference: dict[str, float], key: str) -> str:
    return f"{row[key] / reference[key]:.2f}" if reference[key] else "—"


if __name__ == "__main__":
    main()
