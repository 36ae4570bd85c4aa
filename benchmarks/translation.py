"""Spanish→English translation: softmax against continuous heads (random and GloVe targets) on the Bible verses.

Data: the package's committed Bible corpus (Reina-Valera 1909 → King James, public domain) with its
stored split (``lightning_contloss/examples/bible/split.json``): 29,084 training verses (those of at
most ``--max-train-len`` tokens a side are trained on), 1,000 validation, 1,000 test. Model: the
example :class:`~lightning_contloss.examples.Seq2SeqTransformer` at this script's size (the options
below), with :class:`~lightning_contloss.examples.SoftmaxTranslator` or
:class:`~lightning_contloss.examples.ContinuousTranslator` (cosine loss) on it.

Runs (``--runs``; default all five, in this order):

* ``softmax@time``, ``cosine-random@time``, ``cosine-glove@time``: each trained for ``--budget``
  seconds of training wall-clock (evaluation excluded);
* ``cosine-random@tokens``, ``cosine-glove@tokens``: each trained on as many target tokens as
  ``softmax@time`` saw (so the softmax run must come first);
* on request, ``infonce-random@time`` and ``infonce-random@tokens``: the same with the InfoNCE loss
  (the package defaults: 1,024 uniform negatives, τ = 0.1).

During training each run decodes a fixed subset of the validation split greedily every
``--eval-every`` training seconds and records its BLEU (the curve in the PNG). After training, on
the test split (the first ``--test-sentences``): BLEU and chrF of greedy and beam-4 search
(sacrebleu's 13a tokenisation of the detokenised output against the original references,
case-insensitive, so word-level and BPE runs compare), translation sentences/s of each, the share of
outputs that emitted ``<eos>`` before the length limit (``2 × source + 10``), distinct output words;
and training tokens/s and the run's peak RSS. Nothing is tuned on test; the validation split is for
choosing anything.

Each run trains in its own subprocess (so peak RSS is the run's own), checkpointing to
``--out/<run>/last.pt`` (git-ignored ``runs/``) at every curve point; rows go to ``--jsonl`` as they
come. Rerunning the same command resumes each run from its last checkpoint and skips finished ones.
The report (``translation.md`` and ``translation.png`` under ``--results``) is rewritten after every
run; ``--report-only`` rewrites it from the JSONL alone.

Runs ending in ``@converge`` (``softmax``, ``infonce-random``, ``cosine-random``) train until their
validation BLEU has not improved for ``--patience`` curve points (at most ``--max-budget`` seconds),
keep the best validation checkpoint (``best.pt``) and evaluate that one on test; the report opens
with their table, including the wall-clock and tokens each continuous run needed to reach
softmax's best validation BLEU. The converged comparison (hours; rerun the same command to resume)::

    nohup bash benchmarks/translation_converged.sh > ~/contloss-runs/converged.log 2>&1 &

(word-level, BPE 8k and BPE 32k in turn, softmax then InfoNCE; that script holds the options).

Run (one core, one thread)::

    nohup taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/translation.py > runs/translation.log 2>&1 &

``--smoke`` is a tiny run (small model, 2,000 training pairs, seconds of training) to check the
script end to end; it writes under ``runs/translation-smoke/`` and not into ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import datetime
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
RUNS = ROOT / "runs" / "translation"
ALL_RUNS = ("softmax@time", "cosine-random@time", "cosine-glove@time", "cosine-random@tokens", "cosine-glove@tokens")
# Not in the default set; ask for them with --runs. The report lists every known run it finds.
EXTRA_RUNS = (
    "infonce-random@time", "infonce-random@tokens",
    # Early stopping on validation BLEU (--patience curve points, --max-budget seconds at most).
    "softmax@converge", "infonce-random@converge", "cosine-random@converge",
)
CONVERGE_RUNS = tuple(r for r in EXTRA_RUNS if r.endswith("@converge"))
KNOWN_RUNS = ALL_RUNS + EXTRA_RUNS
LABELS = {
    "softmax": "softmax",
    "cosine-random": "cosine, random targets",
    "cosine-glove": "cosine, GloVe targets",
    "infonce-random": "InfoNCE, random targets",
}


# ---------------------------------------------------------------------------------------------- one run
def _parse(run: str) -> tuple[str, str]:
    head, _, budget = run.partition("@")
    if head not in LABELS or budget not in ("time", "tokens", "converge"):
        raise SystemExit(f"translation: unknown run {run!r}; runs are {', '.join(KNOWN_RUNS)}")
    return head, budget


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "d_model": args.d_model,
        "n_heads": args.n_heads,
        "n_encoder_layers": args.layers,
        "n_decoder_layers": args.layers,
        "dim_feedforward": args.ff,
        "dropout": args.dropout,
        "lr": args.lr,
        "warmup_steps": args.warmup,
    }


def _config(run: str, args: argparse.Namespace) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed."""
    return {
        "run": run,
        "model": _model_options(args),
        "seed": args.seed,
        "batch_size": args.batch_size,
        "max_train_len": args.max_train_len,
        "max_train_pairs": args.max_train_pairs,
        "budget": args.budget,
        "curve_sentences": args.curve_sentences,
        "vocab": args.vocab,
        "patience": args.patience,
        "max_budget": args.max_budget,
        "eval_every": args.eval_every,
    }


def _git_commit() -> str:
    try:
        cmd = ["git", "log", "-1", "--format=%h", "--", "lightning_contloss", "benchmarks/translation.py"]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _append(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSONL's rows; a (run, kind, point) logged twice (a resumed run) keeps its last line."""
    if not path.exists():
        return []
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows[(row["run"], row["kind"], row.get("point"))] = row
    return list(rows.values())


def _token_target(args: argparse.Namespace) -> int:
    finals = [r for r in read_rows(Path(args.jsonl)) if r["run"] == "softmax@time" and r["kind"] == "final"]
    if not finals:
        raise SystemExit("translation: the @tokens runs train on softmax@time's token count; run softmax@time first")
    return int(finals[-1]["tokens"])


def _build(head: str, dm: Any, args: argparse.Namespace) -> Any:
    from lightning_contloss.decoding import make_decoder
    from lightning_contloss.examples.translation import ContinuousTranslator, SoftmaxTranslator

    sizes = (dm.src_vocab_size, dm.tgt_vocab_size)
    options = _model_options(args)
    if head == "softmax":
        module: Any = SoftmaxTranslator(*sizes, **options)
    else:
        loss, targets = head.split("-")
        module = ContinuousTranslator(*sizes, **options, loss=loss, targets=targets)
        if module.hparams["targets"] == "glove":
            module.use_glove_targets(dm.tgt_vocab.words)
        # Exact search: the figures measure the model, not an approximate index.
        module.continuous_decoder = make_decoder(module.continuous_targets, module.continuous_decode_space, "exact")
    module.attach_vocabularies(dm.src_vocab, dm.tgt_vocab)
    return module


def _translate(
    module: Any, pairs: Any, n: int, method: str, batch_size: int, rules: Any = None, stateful: bool = True
) -> dict[str, Any]:
    import torch

    from lightning_contloss.examples.translation_metrics import corpus_scores, distinct_words

    src = [pairs.sources[i] for i in range(min(n, len(pairs)))]
    refs = [pairs.references[i] for i in range(len(src))]
    ids = module.encode_sources(src)
    t0 = time.perf_counter()
    ended, hyps = 0, [""] * len(src)
    lengths = (ids != module.hparams["src_pad_id"]).sum(dim=1)
    order = torch.argsort(lengths, stable=True).tolist()
    for b in range(0, len(order), batch_size):
        rows = order[b : b + batch_size]
        width = int(lengths[rows].max())
        out = module.generate(ids[rows, :width], method, beam_size=4, rules=rules, stateful=stateful)
        last = out.ids.gather(1, (out.lengths - 1).clamp(min=0)[:, None])[:, 0]
        ended += int((last == module.hparams["eos_id"]).sum())
        for r, text in zip(rows, module.ids_to_text(out.ids)):
            hyps[r] = text
    seconds = time.perf_counter() - t0
    scores = corpus_scores(hyps, refs)
    return {
        "bleu": scores["bleu"],
        "chrf": scores["chrf"],
        "sentences_per_s": len(src) / seconds,
        "eos_rate": ended / len(src),
        "distinct_words": distinct_words(hyps),
        "sentences": len(src),
        "examples": hyps[:3],
        "hypotheses": hyps,
    }


def train_run(run: str, args: argparse.Namespace) -> None:
    """Train (or resume) one run to its budget, then evaluate it on the test split."""
    import lightning as L
    import torch

    from lightning_contloss.examples.optim import warmup_adamw
    from lightning_contloss.examples.translation_data import BibleDataModule

    torch.set_num_threads(args.threads)
    head, budget_kind = _parse(run)
    jsonl = Path(args.jsonl)
    if any(r["run"] == run and r["kind"] == "final" for r in read_rows(jsonl)):
        print(f"[{run}] finished; skipping", flush=True)
        return
    token_target = _token_target(args) if budget_kind == "tokens" else None
    config = _config(run, args)
    folder = Path(args.out) / run.replace("@", "-at-")
    ckpt_path = folder / "last.pt"

    L.seed_everything(args.seed, verbose=False)
    dm = BibleDataModule(
        batch_size=args.batch_size, max_train_len=args.max_train_len, max_train_pairs=args.max_train_pairs,
        seed=args.seed, vocab=args.vocab, tokenizer_dir=str(Path(args.out) / "tokenizers"),
    )
    if head == "cosine-glove" and args.vocab != "word":
        raise SystemExit(f"translation: GloVe targets need word-level vocabularies, not --vocab {args.vocab}")
    module = _build(head, dm, args)
    # What configure_optimizers returns for the constant schedule, without a Trainer.
    optim = warmup_adamw(module.model, lr=args.lr, weight_decay=0.01, warmup_steps=args.warmup)
    optimizer, scheduler = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    sampler = dm.train_sampler
    common = {
        "run": run,
        "label": LABELS[head],
        "budget_kind": budget_kind,
        "vocab": args.vocab,
        "src_vocab": dm.src_vocab_size,
        "tgt_vocab": dm.tgt_vocab_size,
        "train_pairs": len(dm.train_pairs),
        "parameters": sum(p.numel() for p in module.parameters() if p.requires_grad),
        "threads": torch.get_num_threads(),
        "cpus": sorted(os.sched_getaffinity(0)),
        "commit": _git_commit(),
        "command": args.command_line,
        "curve_sentences": args.curve_sentences,
        "test_sentences": args.test_sentences,
    }
    state: dict[str, Any] = {
        "epoch": 0, "batch": 0, "train_seconds": 0.0, "point": 0, "loss_sum": 0.0, "steps": 0,
        # @converge: the best validation BLEU so far, where it was, and curve points since it.
        "best_bleu": -1.0, "best_point": -1, "best_seconds": 0.0, "best_tokens": 0, "since_best": 0,
    }
    best_path = folder / "best.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["config"] != config:
            raise SystemExit(
                f"translation: {ckpt_path} was written with {ckpt['config']}, not {config}; rerun with the same "
                "options, or pass a different --out to start afresh"
            )
        module.load_state_dict(ckpt["model"])
        module.tokens_seen = int(ckpt["tokens_seen"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])
        state = dict(ckpt["state"])
        print(f"[{run}] resuming at {state['train_seconds']:.0f}s, {module.tokens_seen:,} tokens", flush=True)

    def done() -> bool:
        if token_target is not None:
            return module.tokens_seen >= token_target
        if budget_kind == "converge":
            return state["since_best"] >= args.patience or state["train_seconds"] >= args.max_budget
        return state["train_seconds"] >= args.budget

    def curve_point() -> None:
        t0 = time.perf_counter()
        res = _translate(module, dm.valid_pairs, args.curve_sentences, "greedy", args.eval_batch)
        row = {
            **common,
            "kind": "curve",
            "point": state["point"],
            "tokens": module.tokens_seen,
            "train_seconds": state["train_seconds"],
            "valid_bleu_greedy": res["bleu"],
            "valid_eos_rate": res["eos_rate"],
            "train_loss": state["loss_sum"] / state["steps"] if state["steps"] else None,
            "eval_seconds": time.perf_counter() - t0,
            "load1": os.getloadavg()[0],
        }
        module.train()
        folder.mkdir(parents=True, exist_ok=True)
        if res["bleu"] > state["best_bleu"]:
            # Early stopping keeps the weights of the best validation point; test uses those.
            state.update(best_bleu=res["bleu"], best_point=state["point"], best_seconds=state["train_seconds"],
                         best_tokens=module.tokens_seen, since_best=0)
            tmp_best = best_path.with_suffix(".tmp")
            torch.save({"model": module.state_dict(), "point": state["point"]}, tmp_best)
            os.replace(tmp_best, best_path)
        else:
            state["since_best"] += 1
        tmp = ckpt_path.with_suffix(".tmp")
        # The checkpoint holds the state after this point, so a resume neither repeats the point
        # nor counts it twice against --patience.
        torch.save(
            {
                "config": config,
                "state": {**state, "point": state["point"] + 1, "loss_sum": 0.0, "steps": 0},
                "tokens_seen": module.tokens_seen,
                "model": module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
            },
            tmp,
        )
        os.replace(tmp, ckpt_path)  # a kill mid-write leaves the previous checkpoint whole
        _append(jsonl, row)
        print(
            f"[{run}] {state['train_seconds']:.0f}s {module.tokens_seen:,} tok: valid BLEU {res['bleu']:.2f} "
            f"eos {res['eos_rate']:.2f} loss {row['train_loss']} load {row['load1']:.2f}",
            flush=True,
        )
        state["point"] += 1
        state["loss_sum"], state["steps"] = 0.0, 0

    if state["point"] == 0:
        curve_point()
    next_eval = (state["point"]) * args.eval_every
    module.train()
    while not done():
        batches = sampler.batches(state["epoch"])
        if state["batch"] >= len(batches):
            state["epoch"], state["batch"] = state["epoch"] + 1, 0
            continue
        batch = dm.collate([dm.train_pairs[i] for i in batches[state["batch"]]])
        t0 = time.perf_counter()
        loss = module.training_step(batch, state["batch"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        state["train_seconds"] += time.perf_counter() - t0
        state["batch"] += 1
        state["loss_sum"] += float(loss.detach())
        state["steps"] += 1
        if state["train_seconds"] >= next_eval and not done():
            curve_point()
            next_eval += args.eval_every
    if state["steps"] or state["point"] == 0:
        curve_point()  # not again after a resume that found the run already done
    stopped = "budget"
    if budget_kind == "converge":
        stopped = "patience" if state["since_best"] >= args.patience else "max-budget"
        module.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=False)["model"])
        module.eval()

    assert dm.test_pairs is not None
    final = {
        **common,
        "kind": "final",
        "point": None,
        "tokens": module.tokens_seen,
        "train_seconds": state["train_seconds"],
        "epochs": module.tokens_seen / max(1, int(sum(len(t) for t in dm.train_pairs.tgt))),
        "train_tokens_per_s": module.tokens_seen / max(state["train_seconds"], 1e-9),
        "load1_before_test": os.getloadavg()[0],
        "stopped": stopped,
        "best_valid_bleu": state["best_bleu"],
        "best_point": state["best_point"],
        "best_train_seconds": state["best_seconds"],
        "best_tokens": state["best_tokens"],
    }
    from lightning_contloss import SearchRules

    variants: list[tuple[str, str, Any]] = [("greedy", "greedy", None), ("beam", "beam", None)]
    if head != "softmax":
        # The EOS bias is fitted on the validation split (teacher forcing), never on test.
        fit = module.fit_eos_bias(dm.val_dataloader())
        final.update(
            {
                "eos_bias": fit.bias,
                "eos_recall_valid_before": fit.eos_recall_before,
                "eos_recall_valid_after": fit.eos_recall_after,
            }
        )
        eos = SearchRules(eos_bias=fit.bias)
        block = SearchRules(eos_bias=fit.bias, no_repeat_ngram_size=3)
        variants += [("greedy_eos", "greedy", eos), ("beam_eos", "beam", eos), ("beam_eos_ngram3", "beam", block)]
    for name, method, rules in variants:
        res = _translate(module, dm.test_pairs, args.test_sentences, method, args.eval_batch, rules)
        res.pop("hypotheses")
        final.update({f"{name}_{k}": v for k, v in res.items()})
        print(f"[{run}] test {name}: BLEU {res['bleu']:.2f} chrF {res['chrf']:.2f} eos {res['eos_rate']:.3f} "
              f"{res['sentences_per_s']:.1f} sent/s", flush=True)
    # The key/value cache against the prefix-recompute path: same outputs, sentences/s side by side.
    n_speed = min(100, args.test_sentences)
    timing: dict[bool, list[float]] = {True: [], False: []}
    outputs: dict[bool, list[str]] = {}
    for _ in range(2):
        for stateful in (False, True):
            res = _translate(module, dm.test_pairs, n_speed, "greedy", args.eval_batch, None, stateful)
            timing[stateful].append(res["sentences_per_s"])
            outputs[stateful] = res["hypotheses"]
    final["speed_sentences"] = n_speed
    final["greedy_prefix_sentences_per_s"] = max(timing[False])
    final["greedy_cached_sentences_per_s"] = max(timing[True])
    final["cached_same_outputs"] = outputs[True] == outputs[False]
    final["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    final["load1"] = os.getloadavg()[0]
    final["time"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    _append(jsonl, final)


# ---------------------------------------------------------------------------------------------- report
def _f(value: Any, spec: str = ".2f") -> str:
    return "—" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def write_plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Greedy validation BLEU against training wall-clock (left) and training tokens (right), a line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_tok) = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for run in KNOWN_RUNS:
        pts = sorted((r for r in rows if r["run"] == run and r["kind"] == "curve"), key=lambda r: r["point"])
        if pts:
            style = "--" if run.endswith("@tokens") else "-"
            label = f"{pts[0]['label']} ({run.split('@')[1]} budget)"
            bleu = [r["valid_bleu_greedy"] for r in pts]
            ax.plot([r["train_seconds"] / 60 for r in pts], bleu, style, marker="o", ms=3, label=label)
            ax_tok.plot([r["tokens"] / 1e6 for r in pts], bleu, style, marker="o", ms=3, label=label)
    ax.set_xlabel("training wall-clock (min, evaluation excluded)")
    ax_tok.set_xlabel("training target tokens (millions)")
    ax.set_ylabel("greedy BLEU, fixed validation subset")
    for a in (ax, ax_tok):
        a.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("es→en Bible verses: softmax vs continuous heads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _first_reaching(curve: Sequence[dict[str, Any]], bleu: float) -> dict[str, Any] | None:
    return next((r for r in curve if r["valid_bleu_greedy"] >= bleu), None)


def converged_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The early-stopped runs: test scores of each run's best validation checkpoint, and the cost of
    reaching softmax's best validation BLEU (markdown lines; empty when there is no such run)."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for r in sorted((r for r in rows if r["kind"] == "curve"), key=lambda r: r["point"]):
        curves.setdefault(r["run"], []).append(r)
    live = [run for run in CONVERGE_RUNS if run in curves]
    if not live:
        return []
    finals = {r["run"]: r for r in rows if r["kind"] == "final"}
    soft_curve = curves.get("softmax@converge", [])
    soft_best = max(soft_curve, key=lambda r: r["valid_bleu_greedy"]) if soft_curve else None
    first = curves[live[0]][0]
    lines = [
        f"## Trained to convergence (early stopping on validation BLEU), {first.get('vocab', 'word')} vocabularies",
        "",
        f"Vocabularies {first['src_vocab']:,} (es) / {first['tgt_vocab']:,} (en) entries; {first['train_pairs']:,} "
        f"training pairs; validation: the first {first.get('curve_sentences', '?')} validation verses; test: the "
        f"first {first.get('test_sentences', '?')} test verses; {first['threads']} thread(s) on CPUs {first['cpus']}.",
        "",
        "Each run trains until its greedy BLEU on the fixed validation subset has not improved for `--patience` "
        "curve points (or `--max-budget` seconds); the test columns score the checkpoint of its best validation "
        "point. *to softmax's best*: training wall-clock and tokens at the first curve point whose validation BLEU "
        "reaches softmax's best (share of softmax's own time to its best in brackets), or the share of it reached.",
        "",
        "| run | status | points | best valid BLEU | at min | at tokens | test BLEU greedy | test BLEU beam 4 "
        "| chrF greedy | chrF beam 4 | EOS greedy | distinct greedy | train tok/s | to softmax's best |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for run in live:
        curve, fin = curves[run], finals.get(run)
        best = max(curve, key=lambda r: r["valid_bleu_greedy"])
        status = f"stopped ({fin['stopped']})" if fin else f"training ({curve[-1]['train_seconds'] / 60:.0f} min)"
        reach = "—"
        if soft_best is not None and run != "softmax@converge" and soft_best["valid_bleu_greedy"] > 0:
            hit = _first_reaching(curve, soft_best["valid_bleu_greedy"])
            if hit is not None:
                share = hit["train_seconds"] / max(soft_best["train_seconds"], 1e-9)
                reach = f"{hit['train_seconds'] / 60:.0f} min ({share:.2f}×), {hit['tokens']:,} tok"
            else:
                reach = f"not yet: {best['valid_bleu_greedy'] / soft_best['valid_bleu_greedy']:.2f} of it"
        test = "| — | — | — | — | — | — | —"
        if fin is not None:
            test = (
                f"| {_f(fin['greedy_bleu'])} | {_f(fin['beam_bleu'])} | {_f(fin['greedy_chrf'])} | "
                f"{_f(fin['beam_chrf'])} | {_f(fin['greedy_eos_rate'], '.3f')} | {fin['greedy_distinct_words']} | "
                f"{fin['train_tokens_per_s']:,.0f}"
            )
        lines.append(
            f"| {curve[0]['label']} | {status} | {len(curve)} | {best['valid_bleu_greedy']:.2f} | "
            f"{best['train_seconds'] / 60:.0f} | {best['tokens']:,} {test} | {reach} |"
        )
    soft = finals.get("softmax@converge")
    if soft is not None and soft["greedy_bleu"] > 0:
        lines += ["", "Test BLEU as a share of softmax's (target ≥ 0.95):", ""]
        for run in live[1:]:
            fin = finals.get(run)
            if fin is not None:
                lines.append(
                    f"- {fin['label']}: greedy {fin['greedy_bleu'] / soft['greedy_bleu']:.2f}, "
                    f"beam 4 {fin['beam_bleu'] / max(soft['beam_bleu'], 1e-9):.2f}"
                )
    done = [finals[run] for run in live if run in finals]
    if done:
        lines += ["", "Sample test outputs of the converged runs (greedy, first three verses):", ""]
        lines += [f"- {r['label']}: " + " / ".join(f"`{h}`" for h in r["greedy_examples"]) for r in done]
    loads = [r["load1"] for run in live for r in curves[run]]
    lines += ["", f"1-minute load average at the curve points: {min(loads):.2f}–{max(loads):.2f}.", ""]
    return lines


def write_report(jsonl: Path, results: Path, name: str = "translation") -> str:
    """Write ``<name>.md`` and ``<name>.png`` under ``results`` from the JSONL; returns the markdown."""
    rows = read_rows(jsonl)
    finals = {r["run"]: r for r in rows if r["kind"] == "final" and r["run"] not in CONVERGE_RUNS}
    results.mkdir(parents=True, exist_ok=True)
    converged = converged_section(rows)
    parts = ["# Translation: softmax vs continuous heads, es→en Bible verses", "", *converged]
    if not finals and not converged:
        parts += ["No finished run yet.", ""]
    elif finals:
        any_row = next(iter(finals.values()))
        parts += [
            f"Test split: first {any_row['greedy_sentences']} of the 1,000 stored test verses; "
            f"{any_row['train_pairs']:,} training pairs, vocabularies {any_row['src_vocab']:,} (es) / "
            f"{any_row['tgt_vocab']:,} (en); {any_row['threads']} thread(s) on CPUs {any_row['cpus']}.",
            "",
            "| run | budget | train s | tokens | epochs | train tok/s | BLEU greedy | BLEU beam 4 | chrF greedy "
            "| chrF beam 4 | sent/s greedy | sent/s beam 4 | EOS greedy | EOS beam 4 | distinct greedy "
            "| distinct beam 4 | peak RSS MB | load |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for run in KNOWN_RUNS:
            r = finals.get(run)
            if r is None:
                continue
            parts.append(
                f"| {r['label']} | {r['budget_kind']} | {r['train_seconds']:.0f} | {r['tokens']:,} | "
                f"{r['epochs']:.2f} | {r['train_tokens_per_s']:,.0f} | {_f(r['greedy_bleu'])} | {_f(r['beam_bleu'])} | "
                f"{_f(r['greedy_chrf'])} | {_f(r['beam_chrf'])} | {_f(r['greedy_sentences_per_s'], '.1f')} | "
                f"{_f(r['beam_sentences_per_s'], '.1f')} | {_f(r['greedy_eos_rate'], '.3f')} | "
                f"{_f(r['beam_eos_rate'], '.3f')} | {r['greedy_distinct_words']} | {r['beam_distinct_words']} | "
                f"{r['peak_rss_mb']:.0f} | {r['load1']:.2f} |"
            )
        parts += [
            "",
            "Search variants of the continuous runs (test BLEU / EOS rate). *+EOS*: `SearchRules(eos_bias=b)` with b "
            "fitted on the validation split by `ContinuousTranslator.fit_eos_bias` (EOS recall on validation "
            "positions before → after); *+3-gram*: also `no_repeat_ngram_size=3`.",
            "",
            "| run | budget | b | valid EOS recall | greedy | greedy +EOS | beam 4 | beam 4 +EOS "
            "| beam 4 +EOS +3-gram |",
            "|---|---|--:|---|---|---|---|---|---|",
        ]
        for run in KNOWN_RUNS[1:]:
            r = finals.get(run)
            if r is None or "eos_bias" not in r:
                continue
            cells = " | ".join(
                f"{_f(r[f'{v}_bleu'])} / {_f(r[f'{v}_eos_rate'], '.2f')}"
                for v in ("greedy", "greedy_eos", "beam", "beam_eos", "beam_eos_ngram3")
            )
            recall = f"{r['eos_recall_valid_before']:.2f} → {r['eos_recall_valid_after']:.2f}"
            parts.append(f"| {r['label']} | {r['budget_kind']} | {r['eos_bias']:.3f} | {recall} | {cells} |")
        parts += [
            "",
            "Greedy search with the decoder's key/value cache against the prefix-recompute path, same model, first "
            "test verses, best of two alternating passes:",
            "",
            "| run | budget | verses | recompute sent/s | cached sent/s | speed-up | same outputs |",
            "|---|---|--:|--:|--:|--:|---|",
        ]
        for run in KNOWN_RUNS:
            r = finals.get(run)
            if r is None or "greedy_cached_sentences_per_s" not in r:
                continue
            slow, fast = r["greedy_prefix_sentences_per_s"], r["greedy_cached_sentences_per_s"]
            parts.append(
                f"| {r['label']} | {r['budget_kind']} | {r['speed_sentences']} | {slow:.1f} | {fast:.1f} | "
                f"{fast / slow:.2f}× | {'yes' if r['cached_same_outputs'] else 'NO'} |"
            )
        soft = finals.get("softmax@time")
        if soft is not None and soft["greedy_bleu"] > 0:
            parts += ["", "Continuous BLEU as a share of softmax's (targets: ≥ 0.95 at equal time, ≥ 0.9 at equal "
                      "tokens):", ""]
            for run in KNOWN_RUNS[1:]:
                r = finals.get(run)
                if r is not None:
                    greedy = r["greedy_bleu"] / soft["greedy_bleu"]
                    beam = r["beam_bleu"] / max(soft["beam_bleu"], 1e-9)
                    parts.append(f"- {r['label']}, {r['budget_kind']} budget: greedy {greedy:.2f}, beam 4 {beam:.2f}")
        parts += ["", "Sample test outputs (greedy, first three sentences):", ""]
        for r in finals.values():
            parts.append(f"- {r['label']} ({r['budget_kind']}): " + " / ".join(f"`{h}`" for h in r["greedy_examples"]))
    parts += [
        "",
        f"![greedy validation BLEU against training wall-clock]({name}.png)",
        "",
        "BLEU and chrF: sacrebleu corpus scores (13a tokenisation, case-insensitive) of the detokenised output "
        "against the original reference verses, so word-level and BPE rows compare with each other. "
        "Search: the key/value-cached decoder step (`TransformerDecoderStep`; the encoder runs once per batch), "
        "length limit 2 × source + 10, beam length normalisation `sum / len`; the main table's continuous columns "
        "are plain k-NN search (no rules). Continuous heads are "
        "decoded by exact nearest-neighbour search. *train s* counts training steps only; *load* is the 1-minute load "
        "average when the test evaluation ended. *EOS* is the share of outputs that emitted `<eos>` before the limit.",
        "",
        "Produced by: " + "; ".join(sorted({f"`{r['command']}` at {r['commit']}" for r in rows if "command" in r})),
        "",
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}.",
        "",
    ]
    md = "\n".join(parts)
    (results / f"{name}.md").write_text(md, encoding="utf-8")
    if rows:
        write_plot(rows, results / f"{name}.png")
    return md


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", nargs="+", default=list(ALL_RUNS), help=f"runs in order (default: {' '.join(ALL_RUNS)})")
    p.add_argument("--budget", type=float, default=300.0, help="training seconds of each @time run")
    p.add_argument("--eval-every", type=float, default=100.0, help="training seconds between validation BLEU points")
    p.add_argument("--curve-sentences", type=int, default=200, help="validation verses decoded for the curve")
    p.add_argument("--test-sentences", type=int, default=500, help="test verses evaluated at the end (of 1,000)")
    p.add_argument("--eval-batch", type=int, default=100, help="sentences per search batch")
    p.add_argument("--batch-size", type=int, default=64, help="training sentence pairs per batch")
    p.add_argument("--max-train-len", type=int, default=50, help="longest training sentence (tokens, either side)")
    p.add_argument("--max-train-pairs", type=int, default=None, help="keep only the first N training pairs")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2, help="encoder and decoder blocks (each)")
    p.add_argument("--ff", type=int, default=512, help="MLP width")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab", default="word",
                   help="vocabularies: word, or BPE trained on the training split (bpe-8k, bpe-32k, any bpe-N)")
    p.add_argument("--patience", type=int, default=4,
                   help="@converge: stop after this many curve points without a better validation BLEU")
    p.add_argument("--max-budget", type=float, default=4 * 3600.0, help="@converge: training seconds at most")
    p.add_argument("--name", default="translation", help="report name: <results>/<name>.md, .png, .jsonl")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the run is meant for one core)")
    p.add_argument("--out", default=str(RUNS), help="checkpoint folder (git-ignored)")
    p.add_argument("--jsonl", default=None, help="rows file (default: <results>/translation.jsonl)")
    p.add_argument("--results", default=str(RESULTS), help="where translation.md and translation.png go")
    p.add_argument("--smoke", action="store_true", help="a tiny end-to-end run under runs/translation-smoke/")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the JSONL and exit")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.smoke:
        smoke = ROOT / "runs" / "translation-smoke"
        args.budget, args.eval_every, args.curve_sentences, args.test_sentences = 12.0, 6.0, 30, 40
        args.max_train_pairs, args.d_model, args.layers, args.ff, args.warmup = 2000, 64, 1, 128, 20
        args.out, args.results = str(smoke / "ckpt"), str(smoke)
        args.max_budget = 30.0
    args.jsonl = args.jsonl or str(Path(args.results) / f"{args.name}.jsonl")
    shown = argv[: argv.index("--worker")] if "--worker" in argv else argv
    args.command_line = " ".join(["python benchmarks/translation.py", *shown])
    if args.report_only:
        print(write_report(Path(args.jsonl), Path(args.results), args.name))
        return 0
    warnings.filterwarnings("ignore", ".*self.log.*")
    if args.worker is not None:
        train_run(args.worker, args)
        return 0
    for run in args.runs:
        _parse(run)
    t0 = time.perf_counter()
    for run in args.runs:
        started = time.perf_counter()
        # One process per run: its peak RSS is its own, and a crash costs one run.
        child = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", run]
        code = subprocess.run(child, check=False).returncode
        print(f"[{run}] {'done' if code == 0 else f'failed ({code})'} in {time.perf_counter() - started:.0f}s "
              f"(total {time.perf_counter() - t0:.0f}s)", flush=True)
        write_report(Path(args.jsonl), Path(args.results), args.name)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
