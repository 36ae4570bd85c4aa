"""The LM comparison's second table: every measurement that does not decide which head to use.

BrierLM is the geometric mean of the Brier-1…4 scores, so one order at or below 0 makes it 0:
early in training (4-gram matches are rare) it is 0 for every run and says nothing. The table
shows the per-order scores instead, and BrierLM itself only when some run's is above 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_contloss.compare.report.cells import count, num
from lightning_contloss.compare.report.section import Table

__all__ = ["detail_notes", "detail_table"]

_ZERO = 0.0005  # below this a Brier score prints as 0.000


def _orders(r: dict[str, Any]) -> list[float | None] | None:
    orders = r.get("brier_orders")
    return None if not orders else list(orders)


def _has_per_order(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether some run has a per-order Brier score that is not 0."""
    return any(v is not None and abs(v) >= _ZERO for r in rows for v in (_orders(r) or []))


def _has_brier_lm(rows: Sequence[dict[str, Any]]) -> bool:
    return any((r.get("brier_lm") or 0.0) >= 0.005 for r in rows)


def _perplexity(r: dict[str, Any]) -> str:
    text = num(r.get("ppl"), "{:.1f}")
    if r.get("ppl") is not None:
        text += " (vMF)" if r.get("ppl_kind") == "vMF" else " (exp CE)"
    return text


def _reranked(r: dict[str, Any], rule: str) -> str:
    acc = r.get(f"acc1_{rule}")
    return "—" if acc is None else f"{acc:.3f}, {r.get(f'distinct_pred_{rule}') or 0:.0f}"


def detail_table(rows: Sequence[dict[str, Any]]) -> Table:
    """The measurements behind the main table, one line per run (not printed on the console).

    Example:
        >>> detail_table([]).columns[:4]
        ('run', 'head', 'loss', 'targets')
    """
    per_order, brier_lm = _has_per_order(rows), _has_brier_lm(rows)
    columns = ["run", "head", "loss", "targets", "output-layer params", "train s", "tokens", "acc@5", "perplexity"]
    columns += ["Brier-1 / 2 / 3 / 4"] if per_order else []
    columns += ["BrierLM"] if brier_lm else []
    columns += ["HNSW recall", "decode queries/s"]
    columns += ["acc@1, distinct (CSLS decoding)", "acc@1, distinct (prior decoding)"]
    lines = []
    for r in rows:
        spec = r["spec"]
        line = [r["label"], spec["head"], spec["loss"], spec["targets"], count(r.get("output_params")),
                num(r.get("train_seconds"), "{:.1f}"), count(r.get("tokens")), num(r.get("acc5")), _perplexity(r)]
        if per_order:
            orders = _orders(r)
            line.append("—" if orders is None else " / ".join(num(v) for v in orders))
        if brier_lm:
            line.append(num(r.get("brier_lm"), "{:.2f}"))
        line += [num(r.get("decode_recall")), count(r.get("decode_qps")), _reranked(r, "csls"), _reranked(r, "prior")]
        lines.append(line)
    return Table(tuple(columns), lines, caption="More measurements:", console=False)


def detail_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """What the detail table's columns mean, and why a Brier column is missing when it is."""
    notes = [
        "Throughput counts training only (evaluation paused out); peak RSS is the run's own process (data, model, "
        "optimiser, evaluation); perplexity is exp(cross-entropy) for softmax and the perplexity of the vMF "
        "distribution induced over the vocabulary (κ fitted on validation) for continuous heads; decode queries/s "
        "is the HNSW query rate for continuous heads and the output layer + argmax rate for softmax.",
    ]
    if _has_per_order(rows):
        notes.append(
            "Brier-n: the two-sample Brier score of the n-gram at each position (teacher-forced samples, first 8192 "
            "validation tokens); BrierLM, their geometric mean ×100, "
            + ("is shown where some run's is above 0." if _has_brier_lm(rows) else
               "is 0 for every run (some order is ≤ 0 at this budget), so it is left out.")
        )
    elif _has_brier_lm(rows):
        notes.append("BrierLM: the geometric mean ×100 of the Brier-1…4 scores, from two samples per position.")
    elif rows:
        notes.append(
            "BrierLM is left out: it, and every per-order Brier score, is 0 for every run at this budget "
            "(the runs rarely sample the right n-gram)."
        )
    return notes
