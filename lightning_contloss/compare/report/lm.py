"""The language-model comparison as a report section: where each head stands, its warnings and its tables.

The rows are the workers' result rows (:func:`lightning_contloss.compare.worker.run_job`).
The deciding numbers are acc@1 at equal training time (the final validation) and at equal
training tokens (read off each run's accuracy curve at the tokens the slowest run reached),
each against the unigram baseline — always predicting the most frequent training word — on the
same validation tokens, with the binomial noise of :mod:`~lightning_contloss.compare.report.noise`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_contloss.compare.report.caveats import caveats
from lightning_contloss.compare.report.cells import count, gigabytes, num, ratio
from lightning_contloss.compare.report.details import detail_notes, detail_table
from lightning_contloss.compare.report.noise import MIN_EVALS, MIN_VALID_TOKENS, binomial_noise
from lightning_contloss.compare.report.plot import write_plot
from lightning_contloss.compare.report.section import Figure, Section, Table
from lightning_contloss.compare.report.sentences import opening
from lightning_contloss.compare.report.standing import Comparison, Entry, Score

__all__ = ["MAIN_COLUMNS", "acc_at", "equal_tokens", "lm_comparison", "lm_section"]

MAIN_COLUMNS = (
    "run",
    "acc@1, equal time",
    "acc@1, equal tokens",
    "train tokens/s",
    "peak RSS",
    "distinct predictions",
)


def acc_at(curve: Sequence[dict[str, float]], key: str, x: float) -> float | None:
    """Accuracy interpolated at ``x`` along ``key`` (seconds, tokens or epochs); ``None`` past the curve's end.

    Example:
        >>> acc_at([{"tokens": 0, "acc1": 0.0}, {"tokens": 100, "acc1": 0.2}], "tokens", 50)
        0.1
    """
    pts = sorted((p[key], p["acc1"]) for p in curve)
    if not pts or x > pts[-1][0] * 1.0001:
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[0][1]


def equal_tokens(rows: Sequence[dict[str, Any]]) -> float | None:
    """The training tokens every run reached (the slowest run's last curve point); ``None`` without curves."""
    ends = [r["curve"][-1]["tokens"] for r in rows if r.get("curve")]
    ends = [t for t in ends if t > 0]
    return min(ends) if ends else None


def _evaluations(row: dict[str, Any]) -> int:
    """Accuracy evaluations after the start of training."""
    return sum(1 for p in row.get("curve", []) if p["seconds"] > 0)


def _baseline(rows: Sequence[dict[str, Any]]) -> tuple[float | None, str, int | None]:
    """``(unigram acc@1, its word, validation tokens)`` from the first row that has them."""
    for r in rows:
        if r.get("unigram_acc1") is not None:
            return r["unigram_acc1"], str(r.get("unigram_word", "")), r.get("valid_tokens")
    return None, "", next((r["valid_tokens"] for r in rows if r.get("valid_tokens")), None)


def _score(value: float | None, floor: float | None, n: int | None) -> Score:
    noise = 0.0 if value is None or not n else binomial_noise(value, n)
    return Score(value, noise, floor)


def lm_comparison(rows: Sequence[dict[str, Any]], corpus: str, budget: str) -> Comparison:
    """The :class:`Comparison` of the LM rows: acc@1 at equal time and tokens against the unigram baseline.

    Args:
        rows: the workers' result rows.
        corpus: the corpus's name for the sentences.
        budget: the training each run got, e.g. ``"75 s of training per head"``.
    """
    unigram, word, n = _baseline(rows)
    floor = None if unigram is None or not n else unigram + binomial_noise(unigram, n)
    tokens = equal_tokens(rows)
    entries = []
    for r in rows:
        at_tokens = None if tokens is None or not r.get("curve") else acc_at(r["curve"], "tokens", tokens)
        entries.append(
            Entry(
                label=r["label"],
                reference=r["spec"]["head"] == "softmax",
                at_time=_score(r.get("acc1"), floor, n),
                at_tokens=_score(at_tokens, floor, n),
                tokens_per_s=r.get("tokens_per_s"),
                peak_mb=r.get("peak_rss_mb"),
                distinct=r.get("distinct_pred"),
                train_seconds=r.get("train_seconds"),
                budget_s=r.get("budget_s"),
            )
        )
    fewest = min((_evaluations(r) for r in rows), default=0)
    detail = ""
    if unigram is not None and n:
        detail = f"always “{word}”: {unigram:.3f} ± {binomial_noise(unigram, n):.3f} on {n:,} validation tokens"
    return Comparison(
        entries,
        corpus,
        budget,
        "acc@1",
        "the unigram baseline",
        baseline_detail=detail,
        tokens_at=tokens,
        tokens_caveat=f"only {fewest} evaluation(s) per run" if rows and fewest < MIN_EVALS else None,
    )


def _lm_caveats(rows: Sequence[dict[str, Any]], c: Comparison) -> list[str]:
    lines = caveats(c)
    fewest = min((_evaluations(r) for r in rows), default=MIN_EVALS)
    if fewest < MIN_EVALS:
        lines.append(
            f"Only {fewest} accuracy evaluation(s) in some run (fewer than {MIN_EVALS}): its curve and its acc@1 at "
            "equal tokens say little; raise --evals or --budget."
        )
    tokens = next((r.get("valid_tokens") for r in rows if r.get("valid_tokens")), None)
    if tokens is not None and tokens < MIN_VALID_TOKENS:
        lines.append(
            f"Only {tokens:,} validation tokens (fewer than {MIN_VALID_TOKENS:,}): acc@1 differences of a few "
            "points are noise; raise --max-valid-tokens."
        )
    return lines


def _distinct(r: dict[str, Any]) -> str:
    d = r.get("distinct_pred")
    return "—" if d is None else f"{d:.0f} ({100 * d / r['vocab_size']:.1f}% of V)"


def _tables(rows: Sequence[dict[str, Any]], c: Comparison) -> list[Table]:
    main = Table(
        MAIN_COLUMNS,
        [
            [e.label, num(e.at_time.value), num(None if e.at_tokens is None else e.at_tokens.value),
             count(e.tokens_per_s), gigabytes(e.peak_mb), _distinct(r)]
            for r, e in zip(rows, c.entries)
        ],
    )
    tables = [main]
    ref = c.reference
    if ref is not None and len(c.entries) > 1:
        others = [e for e in c.entries if e is not ref]
        tables.append(
            Table(
                MAIN_COLUMNS,
                [
                    [e.label, c.score_ratio(e, "time"), c.score_ratio(e, "tokens"),
                     ratio(e.tokens_per_s, ref.tokens_per_s) or "—", ratio(e.peak_mb, ref.peak_mb) or "—",
                     ratio(e.distinct, ref.distinct) or "—"]
                    for e in others
                ],
                caption="Against softmax (each run's number over softmax's):",
            )
        )
    tables.append(detail_table(rows))
    return tables


def lm_section(
    rows: Sequence[dict[str, Any]],
    *,
    title: str,
    corpus: str,
    budget: str,
    plot_name: str = "report.png",
    plot_title: str = "",
) -> Section:
    """The section of an LM comparison: sentences, warnings, main / against-softmax / detail tables, the plot.

    Args:
        rows: the workers' result rows (finished runs only).
        title: the section's heading.
        corpus: the corpus's name for the sentences.
        budget: the training each run got, e.g. ``"75 s of training per head"``.
        plot_name: the PNG's file name in the report folder.
        plot_title: the plot's title.

    Example:
        >>> lm_section([], title="PTB", corpus="PTB", budget="1 s per head").sentences[0]
        'No run finished, so this comparison cannot say which head to use.'
    """
    c = lm_comparison(rows, corpus, budget)
    if not rows:
        return Section(title, opening(c))
    unigram = _baseline(rows)[0]
    figure = Figure(
        plot_name, "val acc@1 against wall-clock", lambda path: write_plot(rows, Path(path), plot_title, unigram)
    )
    tokens = "—" if c.tokens_at is None else f"{c.tokens_at:,.0f}"
    notes = [
        "acc@1 at equal time is the final validation after every run's training budget; at equal tokens it is read "
        f"off each run's accuracy curve (exact decoding) at the {tokens} training tokens the slowest run reached.",
        "Noise: two binomial standard errors of acc@1 on the validation tokens; a ratio marked “within noise” "
        "separates runs whose difference is smaller.",
        *detail_notes(rows),
    ]
    return Section(title, opening(c), _lm_caveats(rows, c), _tables(rows, c), [figure], notes=notes)
