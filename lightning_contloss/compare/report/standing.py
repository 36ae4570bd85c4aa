"""Where each run of a comparison stands: its scores with their noise and baseline, and its ratios to softmax.

The opening sentences, the warnings and the tables of a report section all read one
:class:`Comparison`, so a ratio quoted in a sentence is the ratio in the table, and a ratio
the warnings call meaningless is marked so in the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lightning_contloss.compare.report.cells import ratio
from lightning_contloss.compare.report.noise import differ

__all__ = ["Comparison", "Entry", "Score"]


@dataclass(frozen=True)
class Score:
    """One measured score of a run, with its noise and the baseline it must beat.

    Args:
        value: the score, or ``None`` when the run has none.
        noise: differences below this are noise (two standard errors).
        floor: the baseline's score plus its noise; a score at or below it shows nothing learned.
            ``None`` when the baseline is unknown.

    Example:
        >>> Score(0.056, 0.005, floor=0.060).at_baseline
        True
    """

    value: float | None
    noise: float = 0.0
    floor: float | None = None

    @property
    def at_baseline(self) -> bool:
        """Whether the score is no better than the baseline, within noise."""
        return self.value is not None and self.floor is not None and self.value <= self.floor


@dataclass(frozen=True)
class Entry:
    """One run as the report's sentences and warnings see it.

    Args:
        label: the run's name in the tables.
        reference: whether this is the softmax run the others are compared with.
        at_time: the deciding score at the end of the (shared) training budget.
        at_tokens: the same score after the number of training tokens every run reached, or ``None``.
        tokens_per_s: training throughput.
        peak_mb: the run's peak memory in MiB, or ``None`` when not measured per run.
        distinct: distinct predicted words, or ``None``.
        train_seconds: the training seconds the run actually took.
        budget_s: the training seconds it was given.
    """

    label: str
    reference: bool
    at_time: Score
    at_tokens: Score | None = None
    tokens_per_s: float | None = None
    peak_mb: float | None = None
    distinct: float | None = None
    train_seconds: float | None = None
    budget_s: float | None = None


@dataclass(frozen=True)
class Comparison:
    """The runs of one comparison, and the words its sentences and warnings use.

    Args:
        entries: the finished runs, in table order.
        corpus: what they were trained on, e.g. ``"Penn Treebank"``.
        budget: the training each got, e.g. ``"75 s of training per head"``.
        metric: the deciding score's name, e.g. ``"acc@1"``.
        baseline: what a run must beat, e.g. ``"the unigram baseline"``.
        baseline_detail: the baseline's own number, e.g. ``"always “the”: 0.055 ± 0.005"``.
        fmt: how the score is written.
        tokens_at: the training tokens at which ``at_tokens`` is read, or ``None``.
        tokens_caveat: why scores at equal tokens are not meaningful at all (e.g. too few
            evaluations), or ``None``.
        what: what a run is called in sentences (``"head"``).
        advice: how to get a run long enough to tell, e.g. ``"a larger --budget"``.

    Example:
        >>> runs = [Entry("softmax", True, Score(0.20, 0.01)), Entry("cosine", False, Score(0.25, 0.01))]
        >>> c = Comparison(runs, "PTB", "60 s per head", "acc@1", "the unigram baseline")
        >>> c.best().label, c.score_ratio(runs[1])
        ('cosine', '1.25×')
    """

    entries: list[Entry]
    corpus: str
    budget: str
    metric: str
    baseline: str
    baseline_detail: str = ""
    fmt: str = "{:.3f}"
    tokens_at: float | None = None
    tokens_caveat: str | None = None
    what: str = "head"
    advice: str = "a larger --budget"

    @property
    def reference(self) -> Entry | None:
        """The softmax run, or ``None``."""
        return next((e for e in self.entries if e.reference and e.at_time.value is not None), None)

    @property
    def scored(self) -> list[Entry]:
        """The runs that have a score at equal time."""
        return [e for e in self.entries if e.at_time.value is not None]

    @property
    def all_at_baseline(self) -> bool:
        """Whether no run got past the baseline (so no comparison between them means anything)."""
        scored = self.scored
        return bool(scored) and all(e.at_time.at_baseline for e in scored)

    def best(self) -> Entry | None:
        """The run with the best score at equal time (the first of equals), or ``None``."""
        scored = self.scored
        return max(scored, key=lambda e: e.at_time.value or 0.0) if scored else None

    def score(self, entry: Entry, when: Literal["time", "tokens"] = "time") -> Score | None:
        """``entry``'s score at equal time or at equal tokens."""
        return entry.at_time if when == "time" else entry.at_tokens

    def level(self, a: Entry, b: Entry, when: Literal["time", "tokens"] = "time") -> bool:
        """Whether ``a`` and ``b`` score the same within noise (``False`` when either has no score)."""
        sa, sb = self.score(a, when), self.score(b, when)
        if sa is None or sb is None or sa.value is None or sb.value is None:
            return False
        return not differ(sa.value, sb.value, sa.noise, sb.noise)

    def not_meaningful(self, entry: Entry, when: Literal["time", "tokens"] = "time") -> str | None:
        """Why ``entry``'s score ratio to softmax means nothing, or ``None`` when it does."""
        if when == "tokens" and self.tokens_caveat:
            return self.tokens_caveat
        ref = self.reference
        scores = [self.score(e, when) for e in self.scored]
        if scores and all(s is not None and s.at_baseline for s in scores):
            return f"every {self.what} is at {self.baseline}"
        ref_score, own = (None if ref is None else self.score(ref, when)), self.score(entry, when)
        if ref_score is not None and ref_score.at_baseline:
            return f"softmax is at {self.baseline}"
        if own is not None and own.at_baseline:
            return f"this {self.what} is at {self.baseline}"
        return None

    def score_ratio(self, entry: Entry, when: Literal["time", "tokens"] = "time") -> str:
        """``entry``'s score over softmax's as ``"1.05×"``, marked when not meaningful or within noise.

        The bare ratio (what a sentence quotes) is the text before the first space.
        """
        ref = self.reference
        own, ref_score = self.score(entry, when), None if ref is None else self.score(ref, when)
        text = ratio(None if own is None else own.value, None if ref_score is None else ref_score.value)
        if text is None or ref is None:
            return "—"
        reason = self.not_meaningful(entry, when)
        if reason:
            return f"{text} (not meaningful: {reason})"
        if self.level(entry, ref, when):
            return f"{text} (within noise)"
        return text
