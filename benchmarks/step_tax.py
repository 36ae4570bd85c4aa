"""The framework tax of a training step: a bare PyTorch loop against ``ContinuousLM`` under ``L.Trainer``.

Same body (:class:`~lightning_contloss.examples.CausalTransformerLM` at ``compare``'s size: 256 wide,
2 layers, 4 heads, MLP 1024; V = 10,000; batch 32 × 64), same batches, same optimiser (the
examples' AdamW with its warm-up schedule), one process, one thread. For each loss three ways
of taking a step are timed:

- ``bare``: ``model(x)``, the functional loss (``CF.cosine_loss`` & co. on the same table),
  ``backward``, ``optimizer.step``, ``scheduler.step``, ``zero_grad``: a hand-written loop;
- ``mixin``: ``ContinuousLM.training_step`` called by the same hand-written loop, outside any
  Trainer (``self.log`` is then a no-op), which separates the package's step from Lightning's;
- ``trainer``: ``L.Trainer(max_steps=...).fit(ContinuousLM, dataloader)``.

All three read batches from the same ``DataLoader``. A step's time is the interval between
consecutive batch starts (for the Trainer, ``on_train_batch_start``), so set-up is left out; the
first ``--warmup`` steps of each repetition are dropped. The ways are interleaved (A B C A B C …)
for ``--reps`` repetitions; reported are the median step time per way and the ratios to
``bare``, with the 1-minute load average before and after.

``--profile LOSS`` instead runs cProfile over a Trainer fit and prints the functions with the
most cumulative time outside the model's own forward/backward.

Run (CPU 1 is for other work here): ``taskset -c 0 python benchmarks/step_tax.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one

from lightning_contloss import functional as CF
from lightning_contloss.examples import ContinuousLM

LOSSES = ("cosine", "vmf", "infonce")
# Process CPU time by default: on a shared core it counts this process's work only, while wall
# time also counts the other processes' slices. One torch thread, no loader workers, so the
# process's CPU time is the step's.
_clock: Callable[[], float] = time.process_time
WAYS = ("bare", "mixin", "trainer")


def make_data(vocab: int, steps: int, batch: int, seq: int, seed: int = 0) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (steps * batch, seq), generator=g)
    y = torch.randint(0, vocab, (steps * batch, seq), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def build(loss: str, args: argparse.Namespace) -> ContinuousLM:
    torch.manual_seed(0)
    return ContinuousLM(
        vocab_size=args.vocab,
        d_model=args.d_model,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        dim_feedforward=args.dim_feedforward,
        loss=loss,
        num_negatives=1024,
        prior_bias=False,
    )


def functional_loss(lm: ContinuousLM, loss: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss a hand-written loop would call: the functional form with the module's hyper-parameters."""
    table = lm.continuous_targets.weight
    hp = lm.hparams
    if loss == "cosine":
        return lambda pred, y: CF.cosine_loss(pred, y, table)
    if loss == "vmf":
        return lambda pred, y: CF.vmf_nll(pred, y, table, lambda1=hp["vmf_lambda1"], lambda2=hp["vmf_lambda2"])
    if loss == "infonce":
        return lambda pred, y: CF.info_nce_loss(
            pred, y, table, temperature=hp["temperature"], num_negatives=min(hp["num_negatives"], hp["vocab_size"])
        )
    raise ValueError(f"unknown loss {loss!r}")


def _optimizer(lm: ContinuousLM) -> tuple[torch.optim.Optimizer, Any]:
    config = lm.configure_optimizers()
    return config["optimizer"], config["lr_scheduler"]["scheduler"]


def _loop(lm: ContinuousLM, data: DataLoader[Any], step: Callable[[Tensor, Tensor, int], Tensor]) -> list[float]:
    opt, sched = _optimizer(lm)
    lm.train()
    stamps: list[float] = []
    for i, (x, y) in enumerate(data):
        stamps.append(_clock())
        value = step(x, y, i)
        value.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    stamps.append(_clock())
    return [b - a for a, b in itertools.pairwise(stamps)]


def run_bare(loss: str, data: DataLoader[Any], args: argparse.Namespace) -> list[float]:
    lm = build(loss, args)
    fn = functional_loss(lm, loss)
    return _loop(lm, data, lambda x, y, i: fn(lm.model(x), y))


def run_mixin(loss: str, data: DataLoader[Any], args: argparse.Namespace) -> list[float]:
    lm = build(loss, args)
    return _loop(lm, data, lambda x, y, i: lm.training_step((x, y), i))


class _Stamps(L.Callback):
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.stamps.append(_clock())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stamps.append(_clock())


def run_trainer(loss: str, data: DataLoader[Any], args: argparse.Namespace) -> list[float]:
    lm = build(loss, args)
    stamps = _Stamps()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=len(data),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[stamps],
    )
    trainer.fit(lm, data)
    s = stamps.stamps
    return [b - a for a, b in itertools.pairwise(s)]


RUNNERS = {"bare": run_bare, "mixin": run_mixin, "trainer": run_trainer}


def measure(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    data = make_data(args.vocab, args.steps, args.batch, args.seq)
    per: dict[str, dict[str, list[float]]] = {loss: {way: [] for way in WAYS} for loss in args.losses}
    for rep in range(args.reps):
        for loss in args.losses:
            for way in WAYS:
                times = RUNNERS[way](loss, data, args)[args.warmup :]
                per[loss][way].append(statistics.median(times))
                print(f"rep {rep} {loss:8s} {way:8s} {1e3 * per[loss][way][-1]:7.1f} ms/step", file=sys.stderr)
    medians = {loss: {way: statistics.median(v) for way, v in ways.items()} for loss, ways in per.items()}
    # Noise on a shared core only ever adds time: the fastest repetition of each way is the
    # other estimate of its cost, less sensitive to a neighbour's bursts than the median.
    fastest = {loss: {way: min(v) for way, v in ways.items()} for loss, ways in per.items()}
    return {"median": medians, "fastest": fastest}


def profile(loss: str, args: argparse.Namespace) -> None:
    data = make_data(args.vocab, args.steps, args.batch, args.seq)
    run_trainer(loss, data, args)  # warm caches
    prof = cProfile.Profile()
    prof.enable()
    run_trainer(loss, data, args)
    prof.disable()
    stats = pstats.Stats(prof)
    stats.sort_stats("cumtime").print_stats(r"lightning|contloss|torchmetrics", 60)


def report(results: dict[str, dict[str, dict[str, float]]], args: argparse.Namespace, load: tuple[float, float]) -> str:
    lines = [
        f"## Training-step tax: V={args.vocab}, {args.d_model}-wide {args.n_layers}-layer body, "
        f"batch {args.batch}×{args.seq}, {args.threads} thread(s), {args.clock} time",
        "",
        f"torch {torch.__version__}, lightning {L.__version__}; {args.reps} interleaved repetitions of "
        f"{args.steps} steps (first {args.warmup} dropped), median and fastest of the per-repetition medians; "
        f"1-min load average {load[0]:.2f} before, {load[1]:.2f} after.",
        "",
        f"Command: `{' '.join(['python', 'benchmarks/step_tax.py', *sys.argv[1:]])}`",
        "",
        "| loss | statistic | bare (ms/step) | mixin, no Trainer | L.Trainer | mixin / bare | Trainer / bare |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for statistic, result in results.items():
        for loss, ways in result.items():
            bare = ways["bare"]
            lines.append(
                f"| {loss} | {statistic} repetition | {1e3 * bare:.1f} | {1e3 * ways['mixin']:.1f} | "
                f"{1e3 * ways['trainer']:.1f} | {ways['mixin'] / bare:.3f}x | {ways['trainer'] / bare:.3f}x |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    p.add_argument("--vocab", type=int, default=10_000)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--dim-feedforward", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time or wall time")
    p.add_argument("--profile", choices=LOSSES, default=None)
    p.add_argument("--out", default=None, help="append the table to this markdown file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    global _clock
    _clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.profile:
        profile(args.profile, args)
        return
    before = os.getloadavg()[0]
    result = measure(args)
    text = report(result, args, (before, os.getloadavg()[0]))
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
