"""Validation cost of the decoding callback: two checkouts of the package side by side.

Times ``trainer.validate`` of one small continuous model (an embedding, a ReLU layer and the
regression head: V=10,000 targets of D=256, so decoding and the metrics dominate) with
``DecodingCallback(decoder=...)`` and its default metrics, in fresh processes, one per
run, alternating between the checkouts so load changes hit both alike. Reported: the median
of ``--runs`` runs per checkout, and the ratio.

Run: ``python benchmarks/callback_cost.py --old /path/to/old/checkout`` (the new one is this
checkout). Make the old checkout with ``git worktree add /tmp/old <commit>``. Writes
``benchmarks/results/callback_cost.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Runs inside each checkout (its package first on sys.path), prints the validate seconds.
PAYLOAD = r"""
import json, sys, time
import lightning as L
import torch
from torch import nn
from lightning_contloss import ContinuousOutputMixin, DecodingCallback, TargetEmbeddings
from lightning_contloss.losses import CosineLoss

V, D, H, decoder, batches, batch, seq = json.loads(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(int(sys.argv[2]))


class LM(ContinuousOutputMixin, L.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Embedding(V, H), nn.Linear(H, H), nn.ReLU(), nn.Linear(H, V))
        self.replace_softmax_head("model.3", TargetEmbeddings.random(V, D, seed=0), CosineLoss())

    def validation_step(self, b, i):
        x, y = b
        return self.continuous_validation_step(self.model(x), y)


g = torch.Generator().manual_seed(1)
x, y = (torch.randint(0, V, (batches * batch, seq), generator=g) for _ in range(2))
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
lm = LM()
trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, callbacks=[DecodingCallback(decoder=decoder)])
trainer.validate(lm, data, verbose=False)  # warm-up: builds the decoder, fills caches
start = time.perf_counter()
metrics = trainer.validate(lm, data, verbose=False)[0]
print(json.dumps({"seconds": time.perf_counter() - start, "acc1": float(metrics["val/acc@1"])}))
"""


def run(checkout: Path, config: list[object], threads: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run(
        [sys.executable, "-c", PAYLOAD, json.dumps(config), str(threads)],
        cwd=checkout, env=env, capture_output=True, text=True,
    )
    if out.returncode:
        raise RuntimeError(f"the run in {checkout} failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout of the version to compare against")
    parser.add_argument("--new", type=Path, default=HERE.parent)
    parser.add_argument("--decoder", default="exact", choices=["exact", "hnsw"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=16384, help="validation tokens (batches of 16 x 64)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "callback_cost.md")
    args = parser.parse_args()
    config: list[object] = [10_000, 256, 256, args.decoder, max(1, args.tokens // 1024), 16, 64]
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {"old": [], "new": []}
    acc: dict[str, float] = {}
    for _ in range(args.runs):
        for name, checkout in (("old", args.old), ("new", args.new)):
            r = run(checkout.resolve(), config, args.threads)
            times[name].append(r["seconds"])
            acc[name] = r["acc1"]
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [
        f"## Callback validation cost: V=10,000, D=256, {config[4] * 1024} tokens, decoder={args.decoder!r}",
        "",
        f"Command: `python benchmarks/callback_cost.py --old {args.old} --decoder {args.decoder} --runs {args.runs} "
        f"--threads {args.threads}`; torch threads per process {args.threads}; median of {args.runs} alternating "
        f"runs, each in a fresh process after one warm-up validate. 1-min load average {load_before:.1f} before "
        f"and {os.getloadavg()[0]:.1f} after (on {os.cpu_count()} CPUs).",
        "",
        "| checkout | validate (s), median | runs (s) | val/acc@1 |",
        "|---|---:|---|---:|",
    ]
    for name in ("old", "new"):
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        lines.append(f"| {name} (`{getattr(args, name)}`) | {med[name]:.2f} | {runs} | {acc[name]:.4f} |")
    lines += ["", f"new / old: {med['new'] / med['old']:.3f}", ""]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
