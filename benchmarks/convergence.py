"""Quality at convergence: softmax and continuous heads trained for several PTB epochs, measured every quarter epoch.

Each run is ``compare``'s setting (the example ``CausalTransformerLM`` body at compare's size, PTB in
its own 10k vocabulary, batches of 32 windows of 64 tokens, AdamW with warm-up then a constant
rate), trained for ``--epochs`` epochs, one run after the other in this process. Every quarter
epoch (and once before training) it validates on a fixed subset of the validation split (never
the test split) and records: acc@1, acc@5, perplexity (exp CE for softmax; for continuous heads
the vMF-induced perplexity of ``DecodingCallback``, κ = ‖ê‖ for vMF and κ̂ fitted for the
others), BrierLM, distinct predictions and the top prediction's share, training tokens/s,
training wall-clock (evaluation excluded), wall-clock and process CPU seconds (evaluation
included), and the 1-minute load average.

Resumable: at every quarter epoch the model, optimiser, scheduler, position and RNG states go to
``--out/<run>/last.pt`` (git-ignored ``runs/``), then the checkpoint's metrics are appended to
``--jsonl``. Rerunning the same command resumes each run from its last checkpoint and skips
finished runs; a larger ``--epochs`` extends finished runs. Continuous heads are decoded by exact
search, so the numbers measure the model, not the index.

Run (one core, one thread, in the background)::

    nohup taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/convergence.py --threads 1 --epochs 4 \\
        --runs softmax linear:cosine:random > runs/convergence.log 2>&1 &

``--report-only`` rewrites ``convergence.md`` and ``convergence.png`` from the JSONL alone.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The package of this checkout, not whichever one the environment has installed.
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "runs" / "convergence"
QUARTERS = 4
DEFAULT_RUNS = ("softmax", "linear:cosine:random", "linear:infonce:random", "linear:vmf:random")
DEFAULT_VALID_TOKENS = 16384


# ---------------------------------------------------------------------------------------------- training
def _slug(spec: str) -> str:
    return spec.replace(":", "-")


def _config(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed (``epochs`` may grow, so it is not in here)."""
    from lightning_contloss.compare.worker import MODEL_DEFAULTS

    return {
        "spec": spec,
        "seed": args.seed,
        "valid_tokens": args.valid_tokens,
        "max_train_tokens": args.max_train_tokens,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "model": MODEL_DEFAULTS,
    }


def _git_commit() -> str:
    try:
        # The last commit that changed the code measured, not the results commits made while it runs.
        cmd = ["git", "log", "-1", "--format=%h", "--", "lightning_contloss", "benchmarks/convergence.py"]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _boundaries(batches_per_epoch: int) -> list[int]:
    """Batch index where each quarter of an epoch starts; the last entry is the epoch's end."""
    return [round(batches_per_epoch * q / QUARTERS) for q in range(QUARTERS + 1)]


def _epoch_order(n_windows: int, seed: int, epoch: int) -> Any:
    import torch

    # A fixed permutation per (seed, epoch): the position within training is then just the quarter.
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n_windows, generator=g)


def _rng_state() -> dict[str, Any]:
    import torch

    # Dropout and sampled negatives draw from torch's global generator; nothing here uses numpy's.
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])


class Evaluator:
    """Validation metrics of one run on the fixed validation subset, with the package's own metrics."""

    def __init__(self, spec: Any, dm: Any, seed: int) -> None:
        from lightning_contloss.callbacks import DecodingCallback
        from lightning_contloss.decoding import DecoderFactory

        self.spec = spec
        self.dm = dm
        self.seed = seed
        valid = dm.valid_ids.numel()
        # Exact decoding (the curve shows the model, not HNSW); perplexity and BrierLM on every token.
        self.callback = (
            DecodingCallback(
                k=5,
                decoder=DecoderFactory("exact", cache_dir=False),
                brier_lm=True,
                metric_tokens=valid,
                recall_sample=0,
                seed=seed,
            )
            if spec.continuous
            else None
        )

    def _validate(self, module: Any) -> dict[str, float]:
        import lightning as L

        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            callbacks=[self.callback] if self.callback is not None else [],
        )
        metrics = trainer.validate(module, dataloaders=self.dm.val_dataloader(), verbose=False)[0]
        # Detach: the training loop below runs the module outside any Trainer.
        module.trainer = None
        return {k: float(v) for k, v in metrics.items()}

    def _softmax_brier(self, module: Any) -> float:
        import torch

        from lightning_contloss.functional.vmf_distribution import sample_from_logits
        from lightning_contloss.metrics import BrierLM

        brier = BrierLM()
        g = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            for x, y in self.dm.val_dataloader():
                s1, s2 = sample_from_logits(module(x), 2, generator=g)
                brier.update(s1, s2, y)
        return float(brier.compute())

    def __call__(self, module: Any) -> dict[str, Any]:
        module.eval()
        m = self._validate(module)
        out: dict[str, Any] = {
            "acc1": m.get("val/acc@1"),
            "acc5": m.get("val/acc@5"),
            "distinct_pred": m.get("val/distinct_pred"),
            "top_pred_share": m.get("val/top_pred_share"),
            "val_loss": m.get("val/loss"),
        }
        if self.spec.continuous:
            kappa = getattr(self.callback, "_fitted_kappa", None)
            out.update(
                ppl=m.get("val/vmf_ppl"),
                ppl_kind="vMF",
                brier_lm=m.get("val/brier_lm"),
                mean_cos=m.get("val/mean_cos"),
                kappa_fitted=None if kappa is None else float(kappa),
            )
        else:
            out.update(ppl=m.get("val/ppl"), ppl_kind="exp CE", brier_lm=self._softmax_brier(module))
        module.train()
        for key, value in list(out.items()):
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out


def _append(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _logged_quarters(path: Path, run: str) -> set[int]:
    return {r["quarter"] for r in read_rows(path) if r.get("run") == run}


def train_run(spec_text: str, args: argparse.Namespace) -> None:
    """Train (or resume) one run to ``args.epochs`` epochs, checkpointing every quarter epoch."""
    import lightning as L
    import torch

    from lightning_contloss.compare.data import build_datamodule
    from lightning_contloss.compare.spec import DataOptions, parse_run
    from lightning_contloss.compare.worker import build_model
    from lightning_contloss.examples.data import LMWindows

    spec = parse_run(spec_text)
    config = _config(spec_text, args)
    folder = Path(args.out) / _slug(spec_text)
    ckpt_path = folder / "last.pt"
    jsonl = Path(args.jsonl)
    total_quarters = args.epochs * QUARTERS

    ckpt: dict[str, Any] | None = None
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        assert ckpt is not None
        if ckpt["config"] != config:
            raise SystemExit(
                f"convergence: {ckpt_path} was written with {ckpt['config']}, not {config}; "
                "rerun with the same options, or pass a different --out to start afresh"
            )
        if ckpt["state"]["quarter"] >= total_quarters:
            print(f"[{spec_text}] finished ({ckpt['state']['quarter'] / QUARTERS:g} epochs); skipping", flush=True)
            return

    L.seed_everything(args.seed, verbose=False)
    dm = build_datamodule(
        DataOptions(
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            max_train_tokens=args.max_train_tokens,
            max_valid_tokens=args.valid_tokens,
        )
    )
    module: Any = build_model(spec, dm.vocab_size, None, dm.input_vocab_size)
    if spec.continuous:
        # No Trainer runs the training loop, so setup() never sees the datamodule: PPMI/GloVe
        # targets and the unigram sampler's counts are taken from it here.
        module.use_datamodule(dm)
    module.init_output_bias(dm.unigram_counts)
    optim: Any = module.configure_optimizers()
    optimizer = optim["optimizer"]
    scheduler = optim["lr_scheduler"]["scheduler"]
    evaluate = Evaluator(spec, dm, args.seed)
    windows = LMWindows(dm.train_ids, dm.seq_len)
    n_windows = len(windows)
    bs = args.batch_size
    bounds = _boundaries(math.ceil(n_windows / bs))
    tokens_per_epoch = n_windows * dm.seq_len
    common = {
        "run": spec_text,
        "label": spec.label,
        "vocab_size": dm.vocab_size,
        "valid_tokens": dm.valid_ids.numel() - 1,
        "train_tokens_per_epoch": tokens_per_epoch,
        "threads": torch.get_num_threads(),
        "cpus": sorted(os.sched_getaffinity(0)),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "command": args.command_line,
        "commit": _git_commit(),
    }

    state: dict[str, Any] = {"quarter": 0, "train_seconds": 0.0, "wall_seconds": 0.0, "cpu_seconds": 0.0}
    wall0, cpu0 = time.perf_counter(), time.process_time()
    base_wall = base_cpu = 0.0
    if ckpt is not None:
        module.load_state_dict(ckpt["model"])
        module.tokens_seen = int(ckpt["tokens_seen"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        state = dict(ckpt["state"])
        base_wall, base_cpu = state["wall_seconds"], state["cpu_seconds"]
        if state["quarter"] not in _logged_quarters(jsonl, spec_text):
            _append(jsonl, ckpt["row"])  # killed between the checkpoint and its JSONL line
        print(
            f"[{spec_text}] resuming at {state['quarter'] / QUARTERS:g} epochs, {module.tokens_seen:,} tokens",
            flush=True,
        )

    def checkpoint(row_extra: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        metrics = evaluate(module)
        eval_s = time.perf_counter() - t0
        state["wall_seconds"] = base_wall + time.perf_counter() - wall0
        state["cpu_seconds"] = base_cpu + time.process_time() - cpu0
        row = {
            **common,
            "quarter": state["quarter"],
            "epochs": state["quarter"] / QUARTERS,
            "tokens": module.tokens_seen,
            "train_seconds": state["train_seconds"],
            "wall_seconds": state["wall_seconds"],
            "cpu_seconds": state["cpu_seconds"],
            "eval_seconds": eval_s,
            "load1": os.getloadavg()[0],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **row_extra,
            **metrics,
        }
        folder.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(
            {
                "config": config,
                "state": dict(state),
                "tokens_seen": module.tokens_seen,
                "model": module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "row": row,
            },
            tmp,
        )
        os.replace(tmp, ckpt_path)  # a kill mid-write leaves the previous checkpoint whole
        _append(jsonl, row)
        ppl = "—" if row.get("ppl") is None else f"{row['ppl']:.1f}"
        print(
            f"[{spec_text}] epoch {row['epochs']:.2f}: acc@1 {row['acc1']:.4f} acc@5 {row['acc5']:.4f} ppl {ppl} "
            f"brier {row.get('brier_lm')} distinct {row.get('distinct_pred')} | train {state['train_seconds']:.0f}s "
            f"eval {eval_s:.0f}s load {row['load1']:.2f}",
            flush=True,
        )

    if ckpt is None:
        checkpoint({"tokens_per_s": None, "train_loss": None, "load1_mean": os.getloadavg()[0]})

    module.train()
    while state["quarter"] < total_quarters:
        epoch, q = divmod(state["quarter"], QUARTERS)
        order = _epoch_order(n_windows, args.seed, epoch)
        tokens_before, seconds = module.tokens_seen, 0.0
        loss_sum, loss_n, bad, loads = 0.0, 0, 0, []
        for b in range(bounds[q], bounds[q + 1]):
            items = [windows[int(i)] for i in order[b * bs : (b + 1) * bs]]
            x = torch.stack([it[0] for it in items])
            y = torch.stack([it[1] for it in items])
            t0 = time.perf_counter()
            loss = module.training_step((x, y), b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seconds += time.perf_counter() - t0
            value = float(loss.detach())
            if math.isfinite(value):
                loss_sum, loss_n = loss_sum + value, loss_n + 1
            else:
                bad += 1
            if (b - bounds[q]) % args.log_every == 0:
                loads.append(os.getloadavg()[0])
                done = module.tokens_seen - tokens_before
                print(
                    f"[{spec_text}] epoch {epoch} batch {b}/{bounds[-1]} loss {value:.4f} "
                    f"{done / max(seconds, 1e-9):,.0f} tok/s load {loads[-1]:.2f}",
                    flush=True,
                )
        state["train_seconds"] += seconds
        state["quarter"] += 1
        quarter_tokens = module.tokens_seen - tokens_before
        checkpoint(
            {
                "tokens_per_s": quarter_tokens / max(seconds, 1e-9),
                "train_loss": loss_sum / loss_n if loss_n else None,
                "nonfinite_losses": bad,
                "load1_mean": sum(loads) / len(loads) if loads else os.getloadavg()[0],
            }
        )
    print(f"[{spec_text}] done: {args.epochs} epochs", flush=True)


# ---------------------------------------------------------------------------------------------- report
def read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSONL's rows, one per (run, quarter): a quarter logged twice (a resumed run) keeps its last line."""
    if not path.exists():
        return []
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            rows[(r["run"], r["quarter"])] = r
    return sorted(rows.values(), key=lambda r: r["quarter"])


def _by_run(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        runs.setdefault(r["run"], []).append(r)
    return runs


def _f(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _interp(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """``y`` at ``x`` along a polyline; ``None`` outside its range."""
    pts = sorted(points)
    if not pts or x < pts[0][0] or x > pts[-1][0] * 1.0001:
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[-1][1]


def _run_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| epochs | tokens | train s | wall s | CPU s | acc@1 | acc@5 | perplexity | BrierLM | distinct | top share "
        "| train tok/s | train loss | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ppl = _f(r.get("ppl"), ".1f")
        if r.get("ppl") is not None and r.get("kappa_fitted") is not None:
            ppl += f" (κ̂ {r['kappa_fitted']:.1f})"
        lines.append(
            f"| {r['epochs']:.2f} | {r['tokens']:,} | {r['train_seconds']:.0f} | {r['wall_seconds']:.0f} "
            f"| {r['cpu_seconds']:.0f} | {_f(r.get('acc1'), '.4f')} | {_f(r.get('acc5'), '.4f')} | {ppl} "
            f"| {_f(r.get('brier_lm'), '.2f')} | {_f(r.get('distinct_pred'), '.0f')} "
            f"| {_f(r.get('top_pred_share'), '.3f')} | {_f(r.get('tokens_per_s'), ',.0f')} "
            f"| {_f(r.get('train_loss'), '.3f')} | {r['load1']:.2f} |"
        )
    return lines


def _against_softmax(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    ref = runs.get("softmax")
    if not ref:
        return []
    by_tokens = [(float(r["tokens"]), r["acc1"]) for r in ref if r.get("acc1") is not None]
    by_seconds = [(float(r["train_seconds"]), r["acc1"]) for r in ref if r.get("acc1") is not None]
    by_ppl = [(float(r["tokens"]), r["ppl"]) for r in ref if r.get("ppl") is not None]
    ref_distinct = [(float(r["tokens"]), r["distinct_pred"]) for r in ref if r.get("distinct_pred") is not None]
    by_cpu = [(float(r["cpu_seconds"]), r["acc1"]) for r in ref if r.get("acc1") is not None]
    lines = [
        "| run | epochs | acc@1 | / softmax at equal tokens | / softmax at equal training wall-clock "
        "| / softmax at equal process CPU s | perplexity / softmax's at equal tokens | distinct / softmax's |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in runs.items():
        if name == "softmax":
            continue
        for r in rows:
            if r["quarter"] == 0 or r.get("acc1") is None:
                continue
            at_tokens = _interp(by_tokens, float(r["tokens"]))
            at_seconds = _interp(by_seconds, float(r["train_seconds"]))
            at_cpu = _interp(by_cpu, float(r["cpu_seconds"]))
            ppl_ref = _interp(by_ppl, float(r["tokens"]))
            d_ref = _interp(ref_distinct, float(r["tokens"]))
            lines.append(
                f"| {r['label']} | {r['epochs']:.2f} | {r['acc1']:.4f} "
                f"| {_f(None if not at_tokens else r['acc1'] / at_tokens, '.3f')} "
                f"| {_f(None if not at_seconds else r['acc1'] / at_seconds, '.3f')} "
                f"| {_f(None if not at_cpu else r['acc1'] / at_cpu, '.3f')} "
                f"| {_f(None if not ppl_ref or r.get('ppl') is None else r['ppl'] / ppl_ref, '.2f')} "
                f"| {_f(None if not d_ref or r.get('distinct_pred') is None else r['distinct_pred'] / d_ref, '.2f')} |"
            )
    return lines if len(lines) > 2 else []


def write_plot(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Three panels: acc@1 against tokens, acc@1 against training wall-clock, perplexity against tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for name, rows in runs.items():
        style = "--" if name == "softmax" else "-"
        label = rows[0]["label"]
        pts = [r for r in rows if r.get("acc1") is not None]
        axes[0].plot([r["tokens"] / 1e6 for r in pts], [r["acc1"] for r in pts], style, marker="o", ms=3, label=label)
        axes[1].plot(
            [r["train_seconds"] / 60 for r in pts], [r["acc1"] for r in pts], style, marker="o", ms=3, label=label
        )
        ppl = [r for r in rows if r.get("ppl") is not None and r["quarter"] > 0]
        kind = "exp CE" if name == "softmax" else "vMF"
        axes[2].plot(
            [r["tokens"] / 1e6 for r in ppl],
            [r["ppl"] for r in ppl],
            style,
            marker="o",
            ms=3,
            label=f"{label} ({kind})",
        )
    axes[0].set_xlabel("training tokens (M)")
    axes[1].set_xlabel("training wall-clock (min, evaluation excluded)")
    axes[2].set_xlabel("training tokens (M)")
    axes[0].set_ylabel("val acc@1")
    axes[1].set_ylabel("val acc@1")
    axes[2].set_ylabel("val perplexity")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        "PTB, CausalTransformerLM (compare size): softmax vs continuous heads, every quarter epoch", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(jsonl: Path, results: Path) -> str:
    """Write ``convergence.md`` and ``convergence.png`` under ``results`` from the JSONL; returns the markdown."""
    rows = read_rows(jsonl)
    runs = _by_run(rows)
    results.mkdir(parents=True, exist_ok=True)
    parts = ["# Quality at convergence: softmax vs continuous heads on PTB", ""]
    if not rows:
        parts += ["No checkpoint recorded yet.", ""]
        text = "\n".join(parts)
        (results / "convergence.md").write_text(text, encoding="utf-8")
        return text
    loads = [r["load1"] for r in rows]
    load_means = [r["load1_mean"] for r in rows if r.get("load1_mean") is not None]
    commands = list(dict.fromkeys(r["command"] for r in rows))
    threads = sorted({r["threads"] for r in rows})
    cpus = sorted({",".join(map(str, r.get("cpus", []))) for r in rows})
    commits = list(dict.fromkeys(r["commit"] for r in rows))
    first = rows[0]
    parts += [
        "Produced by (each invocation that added checkpoints, in order):",
        "",
        *[f"    {c}" for c in commands],
        "",
        f"Setting: the example `CausalTransformerLM` at `compare`'s size (d_model 256, 2 layers, 4 heads, "
        f"FF 1024, AdamW lr 1e-3, 100 warm-up steps then constant), PTB train "
        f"({first['train_tokens_per_epoch']:,} target tokens per epoch, batches of 32 × 64), V = "
        f"{first['vocab_size']:,}. Validation on a **fixed subset: the first {first['valid_tokens']:,} tokens of "
        "the validation split** (a full pass at every quarter epoch is too slow on one thread); never the test "
        "split. Continuous heads decode by exact search.",
        "",
        f"Machine: {platform.machine()}, torch threads {', '.join(map(str, threads))}, process pinned to CPU(s) "
        f"{' / '.join(cpus)}; "
        f"the machine (2 cores) was shared with other work: 1-minute load average at the checkpoints "
        f"{min(loads):.2f}–{max(loads):.2f} (mean {sum(loads) / len(loads):.2f})"
        + (f", mean over the training quarters {sum(load_means) / len(load_means):.2f}" if load_means else "")
        + f". Package commit(s): {', '.join(commits)}.",
        "",
        "Columns: *train s* is training wall-clock with evaluation excluded (the x-axis of the middle panel); "
        "*wall s* and *CPU s* (process CPU time) include evaluation and checkpointing; *train tok/s* is over the "
        "quarter before the checkpoint. Perplexity is exp(cross-entropy) for softmax and, for continuous heads, "
        "the perplexity of the vMF-induced distribution over the V target rows (κ = ‖ê‖ for the vMF loss; κ̂ "
        "fitted on the first 2,048 validation tokens for the others, shown in brackets). BrierLM is the "
        "teacher-forced two-sample estimate (Shao et al. 2025) on the same tokens. *distinct* counts the distinct "
        "top-1 predictions over the subset, *top share* is the most predicted token's share.",
        "",
        "A run stopped and rerun resumes from its last quarter-epoch checkpoint (model, optimiser, scheduler, "
        "position, RNG) and continues exactly as if uninterrupted; several invocations above with a growing "
        "`--epochs` advanced the runs one epoch at a time in turn, so that softmax and the continuous runs saw "
        "similar machine load. Ratios against softmax interpolate softmax's curve at the other run's tokens, "
        "training seconds or CPU seconds; — where softmax's curve does not reach that far yet.",
        "",
    ]
    compare = _against_softmax(runs)
    if compare:
        parts += ["## Against softmax", "", *compare, ""]
    for name, run_rows in runs.items():
        last = run_rows[-1]
        parts += [f"## {last['label']} (`{name}`), {last['epochs']:.2f} epochs so far", "", *_run_table(run_rows), ""]
    write_plot(runs, results / "convergence.png")
    parts += ["![acc@1 and perplexity against tokens and wall-clock](convergence.png)", ""]
    text = "\n".join(parts)
    (results / "convergence.md").write_text(text, encoding="utf-8")
    return text


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--runs", nargs="+", default=list(DEFAULT_RUNS), help="runs as in compare: softmax, HEAD:LOSS:TARGETS"
    )
    p.add_argument("--epochs", type=int, default=4, help="epochs per run")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--valid-tokens", type=int, default=DEFAULT_VALID_TOKENS, help="fixed validation subset size")
    p.add_argument("--max-train-tokens", type=int, default=None, help="truncate the training split (smoke tests)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50, help="batches between progress lines")
    p.add_argument("--out", default=str(RUNS), help="checkpoint folder (git-ignored)")
    p.add_argument("--jsonl", default=None, help="metrics file (default: RESULTS/convergence.jsonl)")
    p.add_argument("--results", default=str(RESULTS), help="where convergence.md and convergence.png go")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from the JSONL")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command_line = "python benchmarks/convergence.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.jsonl = args.jsonl or str(Path(args.results) / "convergence.jsonl")
    if args.epochs < 1:
        raise SystemExit("convergence: --epochs must be at least 1")
    if not args.report_only:
        import torch

        from lightning_contloss.compare.spec import parse_run

        for run in args.runs:
            parse_run(run)  # fail on a typo before hours of training
        if args.threads is not None:
            torch.set_num_threads(args.threads)
            torch.set_num_interop_threads(args.threads)
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*self.trainer.*reference is not registered.*")
        warnings.filterwarnings("ignore", message=".*self.log.*")
        for run in args.runs:
            train_run(run, args)
            write_report(Path(args.jsonl), Path(args.results))
    text = write_report(Path(args.jsonl), Path(args.results))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
