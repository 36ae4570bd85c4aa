"""Validation cost: ``ContinuousLM`` + ``DecodingCallback`` (its defaults) against the softmax twin's validation.

Same body (:class:`~lightning_contloss.examples.CausalTransformerLM`, 256 wide, 2 layers),
same validation tokens, one process, one thread. The softmax twin is
:class:`~lightning_contloss.examples.SoftmaxLM` with its own metrics (loss, ppl, acc@1, acc@5,
distinct predictions: a ``[N, V]`` logits pass and top-k); the continuous model is
:class:`~lightning_contloss.examples.ContinuousLM` (cosine loss, the loss whose κ̂ the callback
has to fit) validated under ``DecodingCallback()`` with every default: decoder ``"auto"`` (HNSW
at these sizes), ``acc@1/5``, ``mean_cos``, ``decode_recall``, spread and ``vmf_ppl``.

Each model runs ``trainer.validate`` once to warm up (the callback builds the index there and
tunes ``ef``; that one-off cost is reported separately), then ``--reps`` timed validations,
interleaved (softmax, continuous, softmax, …). Reported: median CPU seconds of the process per
validation (on a shared core this counts this process's work only), median wall seconds, and
the ratio continuous / softmax, with the 1-minute load average.

Both models first train ``--train-steps`` steps on a toy next-token map (``i -> 7i + 3`` on the
first 512 ids) and are validated on held-out sequences of the same map, so the continuous
model's predictions sit near their targets as a trained model's do: an untrained one predicts
nearly the same vector everywhere, the worst case for HNSW (``ef`` tunes to its maximum, and
``"auto"`` falls back to exact search), which is no validation anyone runs. The softmax twin's
validation cost does not depend on its weights (``--softmax-train-steps`` may skip its
training at 400k, where each of its steps is slow).

V = 400,000 uses a padded vocabulary (``input_vocab_size`` = 10,000 input rows, 400k output
rows, random targets): it is about cost, not quality. Input ids are drawn from the first 512 ids,
targets from the first 10,000.

``--profile`` runs cProfile over one continuous validation instead.

Run: ``taskset -c 0 python benchmarks/validation_cost.py --vocab 10000`` (and ``--vocab 400000``).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one

from lightning_contloss import DecodingCallback
from lightning_contloss.decoding import DecoderFactory
from lightning_contloss.examples import ContinuousLM, SoftmaxLM

INPUT_VOCAB = 10_000


def _body(args: argparse.Namespace) -> dict[str, Any]:
    padded = args.vocab > INPUT_VOCAB
    return {
        "vocab_size": args.vocab,
        "d_model": args.d_model,
        "n_layers": args.n_layers,
        "n_heads": args.n_heads,
        "dim_feedforward": args.dim_feedforward,
        "input_vocab_size": INPUT_VOCAB if padded else None,
        "prior_bias": False,
    }


def _toy_pairs(args: argparse.Namespace, rows: int, seed: int) -> TensorDataset:
    """Sequences of the toy next-token map (a fixed permutation-like map of the first 512 ids)."""
    g = torch.Generator().manual_seed(seed)
    ids = min(args.vocab, INPUT_VOCAB)
    x = torch.randint(0, min(ids, 512), (rows, args.seq), generator=g)
    return TensorDataset(x, (x * 7 + 3) % ids)


def make_data(args: argparse.Namespace) -> DataLoader[Any]:
    """Held-out sequences of the map the models trained on, so predictions are those of a trained model."""
    return DataLoader(_toy_pairs(args, args.tokens // args.seq, seed=1), batch_size=args.batch)


def _trainer(callbacks: list[L.Callback]) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


class _Way:
    """One model and its trainer, validated again and again."""

    def __init__(self, name: str, module: L.LightningModule, callbacks: list[L.Callback]) -> None:
        self.name = name
        self.module = module
        self.trainer = _trainer(callbacks)
        self.cpu: list[float] = []
        self.wall: list[float] = []
        self.metrics: dict[str, float] = {}

    def validate(self, data: DataLoader[Any]) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        out = self.trainer.validate(self.module, data, verbose=False)[0]
        self.metrics = {k: float(v) for k, v in out.items()}
        return time.process_time() - cpu, time.perf_counter() - wall


def _train(module: L.LightningModule, args: argparse.Namespace, steps: int) -> None:
    """``steps`` steps on the toy map, so predictions are spread as a trained model's are, not all alike."""
    if steps <= 0:
        return
    data = DataLoader(_toy_pairs(args, args.batch * 16, seed=2), batch_size=args.batch, shuffle=True)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, data)


def build(args: argparse.Namespace, cache_dir: str) -> tuple[_Way, _Way]:
    torch.manual_seed(0)
    soft_module = SoftmaxLM(**_body(args))
    _train(soft_module, args, args.train_steps if args.softmax_train_steps is None else args.softmax_train_steps)
    softmax = _Way("softmax", soft_module, [])
    torch.manual_seed(0)
    continuous = ContinuousLM(**_body(args), loss=args.loss, target_dim=args.target_dim)
    _train(continuous, args, args.train_steps)
    callback = DecodingCallback(decoder=DecoderFactory("auto", cache_dir=cache_dir, num_threads=args.threads))
    return softmax, _Way("continuous", continuous, [callback])


def measure(args: argparse.Namespace) -> str:
    data = make_data(args)
    with tempfile.TemporaryDirectory() as cache_dir:
        ways = build(args, cache_dir)
        warm = {way.name: way.validate(data) for way in ways}
        before = os.getloadavg()[0]
        for rep in range(args.reps):
            for way in ways:
                cpu, wall = way.validate(data)
                way.cpu.append(cpu)
                way.wall.append(wall)
                print(f"rep {rep} {way.name:10s} cpu {cpu:7.2f} s wall {wall:7.2f} s", file=sys.stderr)
        after = os.getloadavg()[0]
    soft, cont = ways
    cont_cb = cont.trainer.callbacks[0] if isinstance(cont.trainer.callbacks[0], DecodingCallback) else next(
        c for c in cont.trainer.callbacks if isinstance(c, DecodingCallback)
    )
    med = {w.name: (statistics.median(w.cpu), statistics.median(w.wall)) for w in ways}
    lines = [
        f"## Validation cost: V={args.vocab:,}, D={args.target_dim} targets, {args.tokens:,} validation tokens "
        f"(batch {args.batch}×{args.seq}), {args.d_model}-wide {args.n_layers}-layer body, {args.loss} loss",
        "",
        f"torch {torch.__version__}, lightning {L.__version__}, 1 thread; {args.reps} interleaved validations "
        f"per model after one warm-up each; medians. 1-min load average {before:.2f} before, {after:.2f} after.",
        "",
        f"Command: `{' '.join(['python', 'benchmarks/validation_cost.py', *sys.argv[1:]])}`",
        "",
        "| model | CPU s / validation | wall s / validation | warm-up (index build, ef tuning) wall s |",
        "|---|---:|---:|---:|",
    ]
    for way in ways:
        lines.append(f"| {way.name} | {med[way.name][0]:.2f} | {med[way.name][1]:.2f} | {warm[way.name][1]:.2f} |")
    lines += [
        "",
        f"Ratio continuous / softmax: **{med['continuous'][0] / med['softmax'][0]:.3f}x** CPU, "
        f"{med['continuous'][1] / med['softmax'][1]:.3f}x wall.",
        "",
        "Continuous metrics: "
        + ", ".join(f"{k}={v:.4g}" for k, v in sorted(cont.metrics.items()))
        + "; softmax: "
        + ", ".join(f"{k}={v:.4g}" for k, v in sorted(soft.metrics.items())),
        "",
        f"Decoder after the warm-up: `{cont_cb.decoder!r}` (tuned ef {cont_cb.tuned_ef}); vmf_ppl on "
        f"{cont_cb.likelihood.scored:,} tokens, κ̂ = {cont_cb.likelihood.kappa}.",
    ]
    return "\n".join(lines) + "\n"


def profile(args: argparse.Namespace) -> None:
    data = make_data(args)
    with tempfile.TemporaryDirectory() as cache_dir:
        _, cont = build(args, cache_dir)
        cont.validate(data)
        prof = cProfile.Profile()
        prof.enable()
        cont.validate(data)
        prof.disable()
    pstats.Stats(prof).sort_stats("cumtime").print_stats(r"contloss|torchmetrics|hnsw", 45)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=10_000)
    p.add_argument("--tokens", type=int, default=32_768, help="validation tokens")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--dim-feedforward", type=int, default=1024)
    p.add_argument("--loss", default="cosine")
    p.add_argument("--target-dim", type=int, default=256, help="D of the continuous model's random targets")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=40, help="training steps before validating (0: untrained)")
    p.add_argument(
        "--softmax-train-steps", type=int, default=None,
        help="the softmax twin's training steps (default: --train-steps); its validation cost does not depend on them",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--out", default=None, help="append the table to this markdown file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.profile:
        profile(args)
        return
    text = measure(args)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
