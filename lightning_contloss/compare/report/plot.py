"""The comparison's plot: validation acc@1 against training seconds and against epochs, one line per run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_contloss.compare.spec import CONTINUOUS_HEADS

__all__ = ["write_plot"]


def write_plot(
    rows: Sequence[dict[str, Any]], path: str | Path, title: str = "", baseline: float | None = None
) -> None:
    """``path``: val acc@1 against training seconds (left) and epochs (right), one line per run.

    Args:
        rows: the workers' result rows.
        path: the PNG to write.
        title: the figure's title.
        baseline: acc@1 of the unigram baseline, drawn as a dotted line; ``None``: not drawn.
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
    if baseline is not None:
        for ax in axes:
            ax.axhline(baseline, color="grey", linestyle=":", linewidth=1, label="unigram baseline")
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
