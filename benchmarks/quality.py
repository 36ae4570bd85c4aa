"""Quality screen at equal epochs: softmax against continuous configurations, and decode-time rules.

Every run trains the same Transformer body on Penn Treebank for the same number of optimiser
steps (so the same tokens, i.e. equal epochs, whatever each head's speed), then predicts the
fixed validation subset once. Continuous runs are then decoded several ways from the same
predictions, all exact (no HNSW), so the table isolates the model and the decoding rule:

* ``cos``: nearest target by cosine, what the callback does by default;
* ``cos+prior β``: ``cos(ê, e_w) + β·log p(w)``, a frequency prior at k-NN time (``p`` = the
  add-one unigram of the training data); ``β = 1/κ̂`` is the Bayes rule under a vMF
  likelihood with the concentration κ̂ fitted on the same predictions (``fit_kappa``);
* ``csls``: cross-domain similarity local scaling, ``2·cos(ê, e_w) − r_w`` with ``r_w`` the mean
  cosine of ``e_w`` to its 10 nearest predictions (a hubness correction).

A run is ``HEAD[:LOSS:TARGETS]`` as in ``compare``, optionally followed by ``,key=value``
``ContinuousLM``/``SoftmaxLM`` overrides, e.g. ``"linear:cosine:random,lr=0.002,prior_bias=False"``.
An override ``loss.key=value`` goes to the loss's constructor instead, also for arguments that
``ContinuousLM`` has no option for or that the loss's name fixes, e.g.
``"linear:maxmargin:random,loss.negatives=sampled"`` (the run registers a name for it, which
fixes only the arguments given: what the loss's own name fixes does not carry over).

Usage (from the repository root)::

    python benchmarks/quality.py --steps 150
    python benchmarks/quality.py --steps 400 --runs softmax linear:cosine:random

Prints a markdown table and writes it to ``benchmarks/results/quality.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_contloss.compare.data import build_datamodule
from lightning_contloss.compare.spec import DataOptions, RunSpec, parse_run
from lightning_contloss.compare.worker import MODEL_DEFAULTS, build_model
from lightning_contloss.examples import ContinuousLM
from lightning_contloss.functional.vmf_distribution import fit_kappa
from lightning_contloss.losses import make_loss, register_loss

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_RUNS = (
    "softmax",
    "linear:cosine:random",
    "linear:cosine:ppmi",
    "mlp:cosine:random",
    "linear:infonce:random",
    "linear:vmf:random",
)
BETAS = (0.01, 0.02, 0.05, 0.1)
GLOVE_NOTE = " in GloVe's 400k-word vocabulary"


def parse(text: str) -> tuple[RunSpec, dict[str, Any]]:
    """``HEAD[:LOSS:TARGETS][,key=value...]`` into a spec and model overrides."""
    head, *pairs = text.split(",")
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            overrides[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            overrides[key.strip()] = value.strip()
    return parse_run(head), overrides


def top1_stats(ids: Tensor, target: Tensor) -> tuple[float, int]:
    """(acc@1, distinct predicted ids)."""
    return float((ids == target).float().mean()), int(ids.unique().numel())


@torch.no_grad()
def evaluate(module: L.LightningModule, batches: list[tuple[Tensor, Tensor]], log_prior: Tensor) -> dict[str, Any]:
    """acc@1 and distinct predictions of every decoding rule on ``batches``."""
    module.eval()
    outs = [(module(x).flatten(0, 1), y.flatten()) for x, y in batches]
    pred, target = torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
    if not isinstance(module, ContinuousLM):
        acc, distinct = top1_stats(pred.argmax(-1), target)
        return {"cos": (acc, distinct)}
    table = module.continuous_targets
    unit = F.normalize(table.weight.float(), dim=-1)
    special = table.special_mask
    kappa = fit_kappa(pred.float(), target, table.weight.float())
    # κ̂ = 0: the predictions carry no information about the targets, and the Bayes rule is the prior alone.
    betas = {f"prior {b:g}": b for b in BETAS} | {"bayes": 1.0 / kappa if kappa > 0 else 1e6}
    query = F.normalize(pred.float(), dim=-1)
    chunks = query.split(512)

    def scores(q: Tensor) -> Tensor:  # [n, V] cosines, -inf on special ids
        return (q @ unit.T).masked_fill(special, -math.inf)

    picks: dict[str, list[Tensor]] = {name: [] for name in ("cos", *betas)}
    top_r = torch.full((10, len(table)), -1.0)  # running 10 best cosines of each target to a prediction
    for q in chunks:
        cos = scores(q)
        picks["cos"].append(cos.argmax(-1))
        for name, beta in betas.items():
            picks[name].append((cos + beta * log_prior).argmax(-1))
        top_r = torch.cat([top_r, cos.masked_fill(special, -1.0)]).topk(10, dim=0).values
    r = top_r.mean(0)
    picks["csls"] = [(2 * scores(q) - r).argmax(-1) for q in chunks]
    rules: dict[str, Any] = {name: top1_stats(torch.cat(ids), target) for name, ids in picks.items()}
    rules["kappa"] = kappa
    return rules


def save_predictions(module: L.LightningModule, batches: list[tuple[Tensor, Tensor]], folder: Path, name: str) -> None:
    """Write the validation predictions and the target table as ``.npy`` (queries for ``decode.py``)."""
    if not isinstance(module, ContinuousLM):
        return
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        pred = torch.cat([module(x).flatten(0, 1) for x, _ in batches])
    np.save(folder / f"{name}-predictions.npy", pred.float().numpy())
    np.save(folder / f"{name}-table.npy", module.continuous_targets.weight.detach().float().numpy())


def with_loss_options(spec: RunSpec, overrides: dict[str, Any]) -> RunSpec:
    """``spec`` with its ``loss.key=value`` overrides fixed by a loss name registered for this run."""
    fixed = {key[len("loss.") :]: overrides.pop(key) for key in list(overrides) if key.startswith("loss.")}
    if not fixed:
        return spec
    name = spec.loss + "/" + "/".join(f"{k}={v}" for k, v in sorted(fixed.items()))
    register_loss(name, **fixed)(type(make_loss(spec.loss)))
    return dataclasses.replace(spec, loss=name)


def train_run(text: str, steps: int, options: DataOptions, seed: int) -> tuple[L.LightningModule, Any, float]:
    """``(module, datamodule, training seconds)`` of run ``text`` after ``steps`` optimiser steps (no validation)."""
    spec, overrides = parse(text)
    spec = with_loss_options(spec, overrides)
    L.seed_everything(seed, verbose=False)
    dm = build_datamodule(options)
    module = build_model(spec, dm.vocab_size, {**MODEL_DEFAULTS, **overrides}, dm.input_vocab_size)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return module, dm, time.perf_counter() - start


def run_one(text: str, steps: int, options: DataOptions, seed: int, predictions: Path | None = None) -> dict[str, Any]:
    module, dm, seconds = train_run(text, steps, options, seed)
    counts = dm.unigram_counts.double() + 1.0
    log_prior = (counts / counts.sum()).log().float()
    batches = list(dm.val_dataloader())
    rules = evaluate(module, batches, log_prior)
    # The unigram baseline: always the most frequent training token.
    target = torch.cat([y.flatten() for _, y in batches])
    rules["unigram"] = float((target == int(dm.unigram_counts.argmax())).float().mean())
    if predictions is not None:
        save_predictions(module, batches, predictions, text.replace(":", "-").replace(",", "_"))
    tokens = steps * options.batch_size * options.seq_len
    return {"run": text, "seconds": seconds, "tokens": tokens, "epochs": tokens / dm.train_ids.numel(), **rules}


def table(rows: list[dict[str, Any]], reference: float | None = None) -> list[str]:
    ref = next((r["cos"][0] for r in rows if r["run"] == "softmax"), reference)
    rules = ["cos", *(f"prior {b:g}" for b in BETAS), "bayes", "csls"]
    head = "| run | train s | tok/s | " + " | ".join(rules) + " | best / softmax | cos / unigram | κ̂ |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = []
        for rule in rules:
            acc_distinct = r.get(rule)
            cells.append("—" if acc_distinct is None else f"{acc_distinct[0]:.4f} ({acc_distinct[1]})")
        best = max(r[rule][0] for rule in rules if rule in r)
        ratio = "—" if not ref else f"{best / ref:.2f}"
        kappa = f"{r['kappa']:.1f}" if "kappa" in r else "—"
        unigram = f"{r['cos'][0] / r['unigram']:.2f}" if r.get("unigram") else "—"
        lines.append(
            f"| {r['run']} | {r['seconds']:.0f} | {r['tokens'] / r['seconds']:,.0f} | "
            + " | ".join(cells)
            + f" | {ratio} | {unigram} | {kappa} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="optimiser steps per run (equal tokens)")
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-valid-tokens", type=int, default=8192)
    parser.add_argument(
        "--reference", type=float, help="softmax acc@1 of an earlier run with the same steps (when softmax is not run)"
    )
    parser.add_argument("--output-vocab", choices=("corpus", "glove"), default="corpus")
    parser.add_argument("--save-predictions", type=Path, help="folder for continuous runs' val predictions (.npy)")
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.md")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 under taskset -c 0)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    torch.set_num_threads(args.threads)
    glove = args.output_vocab == "glove"
    options = DataOptions(
        max_valid_tokens=args.max_valid_tokens,
        output_vocab=args.output_vocab,
        batch_size=16 if glove else 32,
        seq_len=32 if glove else 64,
    )
    rows: list[dict[str, Any]] = []
    for text in args.runs:
        rows.append(run_one(text, args.steps, options, args.seed, args.save_predictions))
        print(f"{text}: {rows[-1]}", file=sys.stderr, flush=True)
        write(rows, args, options)  # after every run, so an interrupted screen keeps what it measured


def write(rows: list[dict[str, Any]], args: argparse.Namespace, options: DataOptions) -> None:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "# Quality at equal epochs",
        "",
        f"Command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); load average at the "
        f"end {load}. "
        f"PTB{GLOVE_NOTE if options.output_vocab == 'glove' else ''}, {args.steps} steps × {options.batch_size} × "
        f"{options.seq_len} tokens ({rows[0]['epochs']:.2f} epochs) per run, body {MODEL_DEFAULTS}; validation: "
        f"the first {args.max_valid_tokens} tokens. Cells: val acc@1 (distinct predicted words), exact decoding; "
        f"the unigram baseline (always the most frequent training token) is {rows[0]['unigram']:.4f}.",
        "",
        *table(rows, args.reference),
    ]
    emit(lines, args.out)


def emit(lines: list[str], out: Path) -> None:
    """Print the markdown ``lines`` and write them to ``out``."""
    text = "\n".join(lines) + "\n"
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
