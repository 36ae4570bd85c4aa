"""The warnings of a report section: one line for each reason its numbers may not mean what they seem.

The same lines open the section in ``report.md`` and are printed on the console, so a run
too short to tell anything cannot pass for a result in either place.
"""

from __future__ import annotations

from lightning_contloss.compare.report.standing import Comparison, Entry

__all__ = ["BUDGET_SLACK", "budget_caveat", "caveats"]

# A run that trained more than this share over or under its budget is not at equal time with the others.
BUDGET_SLACK = 0.2


def budget_caveat(e: Entry) -> str | None:
    """A line when ``e`` overshot its training budget or could not use it; ``None`` otherwise.

    Example:
        >>> from lightning_contloss.compare.report.standing import Score
        >>> print(budget_caveat(Entry("softmax", True, Score(0.1), train_seconds=3.1, budget_s=1.0))[:60])
        softmax trained 3.1 s on a 1.0 s budget (one training step i
    """
    t, b = e.train_seconds, e.budget_s
    if t is None or b is None or b <= 0:
        return None
    if t > b * (1 + BUDGET_SLACK):
        return (
            f"{e.label} trained {t:.1f} s on a {b:.1f} s budget (one training step is a large part of it), so it "
            "is not at equal time with the others; give it a larger budget."
        )
    if t < b * (1 - BUDGET_SLACK):
        return (
            f"{e.label} trained only {t:.1f} s of its {b:.1f} s budget (training stopped before the clock did), "
            "so it is not at equal time with the others."
        )
    return None


def caveats(c: Comparison) -> list[str]:
    """The warnings every comparison can raise: runs at the baseline, runs off their budget.

    Args:
        c: the comparison.

    Example:
        >>> from lightning_contloss.compare.report.standing import Score
        >>> runs = [Entry("softmax", True, Score(0.05, 0.01, 0.06)), Entry("cosine", False, Score(0.055, 0.01, 0.06))]
        >>> print(caveats(Comparison(runs, "PTB", "1 s per head", "acc@1", "the unigram baseline"))[0][:66])
        Too short to tell: every head is within noise of the unigram basel
    """
    lines: list[str] = []
    detail = f" ({c.baseline_detail})" if c.baseline_detail else ""
    if c.all_at_baseline:
        lines.append(
            f"Too short to tell: every {c.what} is within noise of {c.baseline}{detail}; the ratios against softmax "
            f"are not meaningful. Rerun with {c.advice}."
        )
    else:
        extra = f"; {c.baseline_detail}" if c.baseline_detail else ""
        for e in c.scored:
            if e.at_time.at_baseline:
                lines.append(
                    f"{e.label} did not get past {c.baseline} ({c.metric} {c.fmt.format(e.at_time.value)}{extra}); "
                    "its ratios against softmax are not meaningful."
                )
    lines += [line for e in c.entries if (line := budget_caveat(e))]
    return lines
