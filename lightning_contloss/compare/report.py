"""The comparison's report: a markdown table, a summary against softmax, and the accuracy plot."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_contloss.compare.spec import CONTINUOUS_HEADS

__all__ = ["COLUMNS", "format_failures", "format_table", "summary", "write_plot", "write_report"]

COLUMNS = (
    "run",
    "head",
    "loss",
    "targets",
    "output-layer params",
    "train tokens/s",
    "peak RSS",
    "val acc@1",
    "acc@5",
    "perplexity",
    "BrierLM",
    "HNSW recall",
    "decode queries/s",
    "distinct predictions",
    "acc@1, distinct (CSLS decoding)",
    "acc@1, distinct (prior decoding)",
)


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "—" if value is None else fmt.format(value)


def _count(value: float | None) -> str:
    if value is None:
        return "—"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def _reranked(r: dict[str, Any], rule: str) -> str:
    acc = r.get(f"acc1_{rule}")
    return "—" if acc is None else f"{acc:.3f}, {r.get(f'distinct_pred_{rule}') or 0:.0f}"


def _row(r: dict[str, Any]) -> list[str]:
    spec = r["spec"]
    ppl = _num(r.get("ppl"), "{:.1f}")
    if r.get("ppl") is not None:
        ppl += " (vMF)" if r.get("ppl_kind") == "vMF" else " (exp CE)"
    distinct = r.get("distinct_pred")
    share = "—" if distinct is None else f"{distinct:.0f} ({100 * distinct / r['vocab_size']:.1f}% of V)"
    return [
        r["label"],
        spec["head"],
        spec["loss"],
        spec["targets"],
        _count(r["output_params"]),
        _count(r["tokens_per_s"]),
        f"{r['peak_rss_mb'] / 1024:.2f} GB",
        _num(r.get("acc1")),
        _num(r.get("acc5")),
        ppl,
        _num(r.get("brier_lm"), "{:.2f}"),
        _num(r.get("decode_recall")),
        _count(r.get("decode_qps")),
        share,
        *(
            "—"
            if r.get(f"acc1_{rule}") is None
            else f"{r[f'acc1_{rule}']:.3f}, {r.get(f'distinct_pred_{rule}') or 0:.0f}"
            for rule in ("csls", "prior")
        ),
    ]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a markdown table, one line per run.

    Args:
        rows: the workers' result rows.

    Example:
        >>> format_table([]).splitlines()[1].count("---")
        16
    """
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in rows]
    return "\n".join(lines)


def format_failures(failures: Sequence[tuple[str, str]]) -> str:
    """The runs that failed, one table line each with the reason; ``""`` when none did.

    Args:
        failures: ``(label, reason)`` of each failed run.

    Example:
        >>> print(format_failures([("mlp · vmf · ppmi", "ValueError: dim must be in 1..vocab_size-1")]))
        | failed run | why |
        |---|---|
        | mlp · vmf · ppmi | ValueError: dim must be in 1..vocab_size-1 |
    """
    if not failures:
        return ""
    lines = ["| failed run | why |", "|---|---|"]
    # A reason is one table cell: no line breaks, and its pipes escaped.
    for label, reason in failures:
        cell = " ".join(reason.split()).replace("|", "\\|")
        lines.append(f"| {label} | {cell} |")
    return "\n".join(lines)


def _acc_at(curve: list[dict[str, float]], key: str, x: float) -> float | None:
    """Accuracy interpolated at ``x`` along ``key`` (seconds or epochs); ``None`` past the curve's end."""
    pts = sorted((p[key], p["acc1"]) for p in curve)
    if not pts or x > pts[-1][0] * 1.0001:
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[0][1]


def summary(rows: Sequence[dict[str, Any]]) -> str:
    """How each continuous run stands against softmax: at equal wall-clock, at equal epochs, in cost.

    Args:
        rows: the workers' result rows; the first softmax row is the reference.
    """
    ref = next((r for r in rows if r["spec"]["head"] == "softmax"), None)
    if ref is None or ref.get("acc1") is None:
        return ""
    lines = [
        "| run | acc@1 / softmax (equal wall-clock) | acc@1 / softmax (equal epochs) | tokens/s × softmax "
        "| peak RSS / softmax | distinct predictions / softmax | with CSLS: acc@1, distinct / softmax "
        "| with the prior: acc@1, distinct / softmax |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ref_epochs = ref["curve"][-1]["epochs"] if ref["curve"] else 0.0
    ref_at_epochs = _acc_at(ref["curve"], "epochs", ref_epochs)
    for r in rows:
        if r is ref:
            continue
        wall = None if r.get("acc1") is None else r["acc1"] / max(ref["acc1"], 1e-9)
        at_epochs = _acc_at(r["curve"], "epochs", ref_epochs)
        epochs = None if at_epochs is None or not ref_at_epochs else at_epochs / ref_at_epochs
        distinct = None
        if r.get("distinct_pred") is not None and ref.get("distinct_pred"):
            distinct = r["distinct_pred"] / ref["distinct_pred"]
        reranked = []
        for rule in ("csls", "prior"):
            acc, spread = r.get(f"acc1_{rule}"), r.get(f"distinct_pred_{rule}")
            if acc is None or spread is None or not ref.get("distinct_pred"):
                reranked.append("—")
            else:
                reranked.append(f"{acc / max(ref['acc1'], 1e-9):.2f}, {spread / ref['distinct_pred']:.2f}")
        lines.append(
            f"| {r['label']} | {_num(wall, '{:.2f}')} | {_num(epochs, '{:.2f}')} | "
            f"{r['tokens_per_s'] / max(ref['tokens_per_s'], 1e-9):.1f}× | "
            f"{r['peak_rss_mb'] / max(ref['peak_rss_mb'], 1e-9):.2f} | {_num(distinct, '{:.2f}')} | "
            f"{reranked[0]} | {reranked[1]} |"
        )
    return "\n".join(lines)


def write_plot(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """``path``: val acc@1 against training seconds (left) and epochs (right), one line per run.

    Args:
        rows: the workers' result rows.
        path: the PNG to write.
        title: the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for r in rows:
        curve = r["curve"]
        style = "-" if r["spec"]["head"] in CONTINUOUS_HEADS else "--"
        for ax, key in zip(axes, ("seconds", "epochs")):
            ax.plot([p[key] for p in curve], [p["acc1"] for p in curve], style, marker="o", ms=3, label=r["label"])
    axes[0].set_xlabel("training wall-clock (s)")
    axes[1].set_xlabel("epochs (training tokens / corpus size)")
    axes[0].set_ylabel("val acc@1 (fixed validation subset)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    header: str,
    notes: Sequence[str] = (),
    title: str = "",
    *,
    failures: Sequence[tuple[str, str]] = (),
) -> str:
    """Write ``report.md`` and ``report.png`` under ``out_dir``; returns the markdown.

    Args:
        rows: the finished runs' result rows.
        out_dir: the run folder.
        header: a line saying what was compared (corpus, budget, command).
        notes: extra lines (e.g. runs that did not finish).
        title: the plot's title.
        failures: ``(label, reason)`` of each run that failed, listed under the table.

    Example:
        >>> import tempfile
        >>> "No run finished" in write_report([], tempfile.mkdtemp(), "test")
        True
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = ["# lightning-contloss compare", "", header, ""]
    if rows:
        parts += [format_table(rows), ""]
        s = summary(rows)
        if s:
            parts += ["Against softmax:", "", s, ""]
        write_plot(rows, out / "report.png", title)
        parts += ["![val acc@1 against wall-clock](report.png)", ""]
    else:
        parts += ["No run finished.", ""]
    if failures:
        parts += [f"**{len(failures)} of {len(rows) + len(failures)} runs failed** and are missing above:", ""]
        parts += [format_failures(failures), ""]
    parts += [f"- {n}" for n in notes]
    parts += [
        "",
        "Columns: throughput counts training only (evaluation paused out); peak RSS is the run's own process "
        "(data, model, optimiser, evaluation); perplexity is exp(cross-entropy) for softmax and the perplexity "
        "of the vMF distribution induced over the vocabulary (κ fitted on validation) for continuous heads; "
        "BrierLM is computed from two samples per position on the first 8192 validation tokens; decode "
        "queries/s is the HNSW query rate for continuous heads and the output layer + argmax rate for softmax.",
        "",
    ]
    text = "\n".join(parts)
    (out / "report.md").write_text(text, encoding="utf-8")
    return text
