"""One run of a comparison, in its own process: train for the budget, evaluate, write a JSON result.

Run as ``python -m lightning_contloss.compare.worker JOB.json``; the job names the run, the
data, the budget and where the result goes. A fresh process per run keeps each run's peak
RSS its own and stops one run's memory from polluting the next. A run that raises writes
``{"error": "<type>: <message>"}`` as its result and exits with code 1.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
import traceback
import warnings
from collections.abc import Mapping
from typing import Any, cast

import lightning as L
import torch
from torch import Tensor

from lightning_contloss.callbacks import DecodingCallback
from lightning_contloss.compare.budget import WallClockBudget
from lightning_contloss.compare.data import build_datamodule
from lightning_contloss.compare.output_layers import build_output_layer, split_options
from lightning_contloss.compare.spec import DataOptions, RunSpec
from lightning_contloss.decoding import CSLSReranking, Decoder, PriorReranking, Reranking, make_decoder
from lightning_contloss.examples.continuous_lm import ContinuousLM
from lightning_contloss.examples.data import LMDataModule
from lightning_contloss.examples.output_layer import score_chunks
from lightning_contloss.examples.softmax_lm import SoftmaxLM
from lightning_contloss.functional.vmf_distribution import sample_from_logits
from lightning_contloss.metrics import BrierLM

__all__ = ["MODEL_DEFAULTS", "build_model", "run_job"]

# The shared body: SoftmaxLM's defaults, a 2-layer 256-wide Transformer.
MODEL_DEFAULTS: dict[str, Any] = {"d_model": 256, "n_layers": 2, "n_heads": 4, "dim_feedforward": 1024, "lr": 1e-3}
METRIC_TOKENS = 8192


def build_model(
    spec: RunSpec,
    vocab_size: int,
    model: dict[str, Any] | None = None,
    input_vocab_size: int | None = None,
    unigram_counts: Tensor | None = None,
) -> L.LightningModule:
    """The LightningModule of ``spec`` with the shared body.

    Args:
        spec: the run.
        vocab_size: V.
        model: overrides of :data:`MODEL_DEFAULTS`.
        input_vocab_size: input-embedding rows (the datamodule's ``input_vocab_size``); ``None`` for V.
        unigram_counts: ``[V]`` training counts, for the rivals that rank ids by frequency
            (adaptive clusters, the sampled softmax's proposal); ``None``: ids are ranked as numbered.

    Example:
        >>> from lightning_contloss.compare.spec import parse_run
        >>> type(build_model(parse_run("linear:cosine:random"), 100, {"d_model": 16, "n_heads": 2})).__name__
        'ContinuousLM'
    """
    kwargs = {**MODEL_DEFAULTS, **(model or {})}
    if input_vocab_size is not None and input_vocab_size < vocab_size:
        kwargs["input_vocab_size"] = input_vocab_size
    if not spec.continuous:
        lm_options, layer_options = split_options(spec.head, spec.model_kwargs)
        layer = build_output_layer(spec.head, kwargs["d_model"], vocab_size, unigram_counts, **layer_options)
        return SoftmaxLM(vocab_size, **{**kwargs, **lm_options}, output_layer=layer)
    return ContinuousLM(vocab_size, loss=spec.loss, targets=spec.targets, **kwargs, **spec.model_kwargs)  # type: ignore[arg-type]


def _output_params(module: L.LightningModule) -> int:
    head = module.get_submodule("model.lm_head")
    return sum(p.numel() for p in head.parameters())


def _accuracy_on(batches: list[tuple[Tensor, Tensor]]) -> Any:
    """``module -> acc@1`` on ``batches``; continuous heads decode exactly, so the curve shows the model, not HNSW."""
    exact: list[Decoder] = []

    @torch.no_grad()
    def predict(module: L.LightningModule, x: Tensor) -> Tensor:
        if isinstance(module, SoftmaxLM):
            return module.predict_ids(x)
        if not isinstance(module, ContinuousLM):
            return module(x).argmax(dim=-1)
        if not exact:
            exact.append(make_decoder(module.continuous_targets, module.continuous_decode_space, "exact"))
        pred = module(x)
        ids, _ = exact[0].query(pred.reshape(-1, pred.shape[-1]), 1)
        return ids.reshape(x.shape)

    def evaluate(module: L.LightningModule) -> float:
        was_training = module.training
        module.eval()
        hits = total = 0
        for x, y in batches:
            hits += int((predict(module, x) == y).sum())
            total += y.numel()
        module.train(was_training)
        return hits / max(total, 1)

    return evaluate


@torch.no_grad()
def _softmax_extras(module: SoftmaxLM, batches: list[tuple[Tensor, Tensor]], seed: int) -> dict[str, Any]:
    """BrierLM from softmax samples and the output layer + argmax rate, on the first METRIC_TOKENS tokens."""
    module.eval()
    brier = BrierLM()
    g = torch.Generator().manual_seed(seed)
    seen = 0
    decode_s = 0.0
    decoded = 0
    for x, y in batches:
        if seen >= METRIC_TOKENS:
            break
        hidden = module.model.hidden_states(x).flatten(0, 1)
        # Row blocks: a 400k-way output layer's [B·T, V] scores and their samples would dominate the peak.
        blocks = score_chunks(hidden, module.hparams["vocab_size"])
        for h, target in zip(blocks, y.flatten().split([len(b) for b in blocks])):
            start = time.perf_counter()
            logits = module.model.lm_head(h)
            logits.argmax(dim=-1)
            decode_s += time.perf_counter() - start
            s1, s2 = sample_from_logits(logits, 2, generator=g)
            brier.update(s1, s2, target)
        decoded += y.numel()
        seen += y.numel()
    return {
        "brier_lm": float(brier.compute()),
        "brier_orders": brier.per_order().tolist(),
        "decode_qps": decoded / max(decode_s, 1e-9),
    }


def _unigram_baseline(dm: LMDataModule, batches: list[tuple[Tensor, Tensor]]) -> dict[str, Any]:
    """acc@1 of always predicting the most frequent training word, on the validation tokens every run is scored on."""
    top = int(dm.unigram_counts.argmax())
    hits = sum(int((y == top).sum()) for _, y in batches)
    total = sum(y.numel() for _, y in batches)
    return {"unigram_acc1": hits / max(total, 1), "unigram_word": dm.vocab.words[top], "valid_tokens": total}


def _finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (at any depth of a list) replaced by ``None``, for JSON."""
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _metric(metrics: Mapping[str, float], name: str) -> float | None:
    value = metrics.get(name)
    return None if value is None else float(value)


def _trainer(callbacks: list[Any], progress: bool, **options: Any) -> L.Trainer:
    """A one-CPU trainer that writes nothing (no logger, checkpoints or model summary)."""
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        callbacks=callbacks,
        **options,
    )


def _validate(module: L.LightningModule, dm: LMDataModule, callbacks: list[Any], progress: bool) -> Mapping[str, float]:
    """One validation pass over the datamodule's validation split; its logged metrics."""
    return _trainer(callbacks, progress).validate(module, dataloaders=dm.val_dataloader(), verbose=False)[0]


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one run; returns the result row (also written to ``job["result"]``).

    Args:
        job: ``{"spec", "data", "budget_s", "evals", "model", "seed", "result", "progress"}``, and
            optionally ``"decoder"`` (a decoder kind: ``"hnsw"``, the default, ``"exact"``, …) for the final validation.
    """
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*")
    spec = RunSpec(**job["spec"])
    options = DataOptions(**job["data"])
    L.seed_everything(job.get("seed", 0), verbose=False)
    dm: LMDataModule = build_datamodule(options)
    val_batches = list(dm.val_dataloader())
    module = build_model(spec, dm.vocab_size, job.get("model"), dm.input_vocab_size, dm.unigram_counts)
    budget = WallClockBudget(job["budget_s"], job["budget_s"] / max(job.get("evals", 6), 1), _accuracy_on(val_batches))
    progress = bool(job.get("progress", True))
    callbacks: list[Any] = [budget]
    # One decoding callback for fit and every evaluation pass: they share its index (built or
    # loaded once) and its tuned ef, instead of each holding a copy of a 400k-row graph.
    evaluator = DecodingCallback(k=5, decoder=job.get("decoder", "hnsw"), brier_lm=True)
    if spec.continuous:
        callbacks.append(evaluator)
    # Evaluation is the budget callback's and _validate's job, so fit itself never validates.
    trainer = _trainer(callbacks, progress, max_epochs=10_000, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    tokens = int(getattr(module, "tokens_seen", 0))
    metrics = _validate(module, dm, [evaluator] if spec.continuous else [], progress)
    row: dict[str, Any] = {
        "spec": spec.to_dict(),
        "label": spec.label,
        "vocab_size": dm.vocab_size,
        "input_vocab_size": dm.input_vocab_size,
        "output_params": _output_params(module),
        "budget_s": job["budget_s"],
        "train_seconds": budget.train_seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / max(budget.train_seconds, 1e-9),
        "epochs": tokens / max(dm.train_ids.numel() - 1, 1),
        "acc1": _metric(metrics, "val/acc@1"),
        "acc5": _metric(metrics, "val/acc@5"),
        "distinct_pred": _metric(metrics, "val/distinct_pred"),
        "top_pred_share": _metric(metrics, "val/top_pred_share"),
        **_unigram_baseline(dm, val_batches),
        "curve": [
            {"seconds": s, "tokens": t, "epochs": t / max(dm.train_ids.numel() - 1, 1), "acc1": a}
            for s, t, a in budget.points
        ],
    }
    if spec.continuous:
        # Read before the re-ranked passes below reset the callback's metrics.
        row["brier_orders"] = cast(BrierLM, evaluator.metrics["brier_lm"]).per_order().tolist()
        # The same model decoded with hubness-aware re-ranking (CSLS, a frequency prior), same index.
        evaluator.metric_tokens, evaluator.brier_lm = 0, False
        rules: dict[str, Reranking] = {"csls": CSLSReranking(), "prior": PriorReranking(counts=dm.unigram_counts)}
        for rule, reranking in rules.items():
            evaluator.reranking = reranking
            rule_metrics = _validate(module, dm, [evaluator], progress=False)
            row[f"acc1_{rule}"] = _metric(rule_metrics, "val/acc@1")
            row[f"distinct_pred_{rule}"] = _metric(rule_metrics, "val/distinct_pred")
        row.update(
            ppl=_metric(metrics, "val/vmf_ppl"),
            ppl_kind="vMF",
            brier_lm=_metric(metrics, "val/brier_lm"),
            decode_recall=_metric(metrics, "val/decode_recall"),
            decode_qps=_metric(metrics, "val/decode_qps"),
            mean_cos=_metric(metrics, "val/mean_cos"),
        )
    else:
        assert isinstance(module, SoftmaxLM)
        row.update(ppl=_metric(metrics, "val/ppl"), ppl_kind="softmax", decode_recall=None, mean_cos=None)
        row.update(_softmax_extras(module, val_batches, job.get("seed", 0)))
    # ru_maxrss is in KiB on Linux: the whole run's peak, data and evaluation included.
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {key: _finite_or_none(value) for key, value in row.items()}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process: ``python -m lightning_contloss.compare.worker JOB.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m lightning_contloss.compare.worker JOB.json", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        job = json.load(f)
    try:
        row = run_job(job)
    except Exception as err:
        # The traceback is for whoever reads the log; the one-line reason goes into the report.
        traceback.print_exc()
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        with open(job["result"], "w", encoding="utf-8") as f:
            json.dump({"error": reason[:1000]}, f)
        return 1
    with open(job["result"], "w", encoding="utf-8") as f:
        json.dump(row, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
