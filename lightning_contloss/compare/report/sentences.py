"""The opening sentences of a report section: which head, for this corpus, and why — from the numbers.

Every number a sentence quotes is formatted by the same function as the table cell it comes
from (:mod:`~lightning_contloss.compare.report.cells`, :meth:`Comparison.score_ratio`), so the
sentences can never disagree with the tables. Nothing is claimed that the noise rules of
:mod:`~lightning_contloss.compare.report.noise` do not support: runs within noise are called
level, and runs at the baseline are not compared at all.
"""

from __future__ import annotations

import math

from lightning_contloss.compare.report.cells import count, gigabytes, ratio
from lightning_contloss.compare.report.standing import Comparison, Entry

__all__ = ["opening"]


def _value(c: Comparison, value: float | None) -> str:
    return "—" if value is None else c.fmt.format(value)


def _bare(text: str) -> str:
    """A table's ratio cell without its mark: ``"1.05× (within noise)"`` -> ``"1.05×"``."""
    return text.split(" ", 1)[0]


def _why(c: Comparison, e: Entry, ref: Entry, subject: str) -> str:
    """How ``e`` (called ``subject``) differs from softmax in speed and in what it learns per token."""
    speed = ratio(e.tokens_per_s, ref.tokens_per_s)
    text = f"Why: {subject} trains {speed} softmax's tokens per second ({count(e.tokens_per_s)} against " \
        f"{count(ref.tokens_per_s)})"
    own, theirs = e.at_tokens, ref.at_tokens
    reason = c.not_meaningful(e, "tokens")
    if own is None or theirs is None or own.value is None or theirs.value is None or c.tokens_at is None:
        return text + "."
    if reason:
        return text + f"; its {c.metric} at equal tokens is not meaningful here ({reason})."
    at = f"at {count(c.tokens_at)} training tokens ({_value(c, own.value)} against {_value(c, theirs.value)})"
    if c.level(e, ref, "tokens"):
        return text + f", and per token seen the two are level {at}."
    more = own.value > theirs.value
    text += f" and learns {'more' if more else 'less'} per token: {_bare(c.score_ratio(e, 'tokens'))} softmax's " \
        f"{c.metric} {at}"
    faster = (e.tokens_per_s or 0.0) > (ref.tokens_per_s or 0.0)
    if faster != more and not c.level(e, ref):
        # Speed and per-token learning pull apart: say which one decided at equal time.
        leads = (e.at_time.value or 0.0) > (ref.at_time.value or 0.0)
        text += f"; its {'speed' if faster else 'per-token lead'} {'outweighs' if leads else 'does not make up for'} " \
            "that"
    return text + "."


def _cost(e: Entry, ref: Entry, subject: str) -> str:
    """What ``e`` (called ``subject``) costs against softmax: peak memory and the spread of its predictions."""
    parts = []
    if e.peak_mb is not None and ref.peak_mb is not None:
        parts.append(f"peaks at {gigabytes(e.peak_mb)} ({ratio(e.peak_mb, ref.peak_mb)} softmax's)")
    if e.distinct is not None and ref.distinct is not None:
        parts.append(f"predicts {e.distinct:.0f} distinct words against softmax's {ref.distinct:.0f}")
    return f"{subject[0].upper()}{subject[1:]} {' and '.join(parts)}." if parts else ""


def _noise(c: Comparison, a: Entry, b: Entry) -> str:
    return _value(c, math.hypot(a.at_time.noise, b.at_time.noise))


def _lead(c: Comparison, lead: Entry, other: Entry, ref: Entry) -> list[str]:
    """Sentences when ``lead`` scores best; ``other`` is the run it is set against (one of the two is softmax)."""
    head = f"For {c.corpus}, with {c.budget}"
    contender = other if lead is ref else lead
    ratio_text = _bare(c.score_ratio(contender))
    if c.level(lead, other):
        first = (
            f"{head}, **{lead.label}** and **{other.label}** are level on {c.metric} at equal training time: "
            f"{_value(c, lead.at_time.value)} against {_value(c, other.at_time.value)} ({contender.label}: "
            f"{ratio_text} softmax's), a difference within noise (±{_noise(c, lead, other)}), so choose by cost."
        )
    elif lead is ref:
        reach = (
            f"no other {c.what} got past {c.baseline}"
            if other.at_time.at_baseline
            else f"the best other {c.what}, {other.label}, reaches {ratio_text} of it "
            f"({_value(c, other.at_time.value)})"
        )
        first = f"{head}, use **{lead.label}**: it has the best {c.metric} at equal training time " \
            f"({_value(c, lead.at_time.value)}); {reach}."
    else:
        first = (
            f"{head}, use **{lead.label}**: it has the best {c.metric} at equal training time, "
            f"{_value(c, lead.at_time.value)} against softmax's {_value(c, ref.at_time.value)} ({ratio_text})."
        )
    if contender.at_time.at_baseline:
        return [first]
    # The lead was just named, so "it" is unambiguous; softmax's rival is named again.
    subject = "it" if contender is lead else contender.label
    return [s for s in (first, _why(c, contender, ref, subject), _cost(contender, ref, subject)) if s]


def opening(c: Comparison) -> list[str]:
    """The sentences that open a section: the head to use for this corpus at this budget, and why.

    Args:
        c: the comparison.

    Example:
        >>> from lightning_contloss.compare.report.standing import Entry, Score
        >>> runs = [Entry("softmax · CE", True, Score(0.143, 0.008, 0.06), tokens_per_s=1800),
        ...         Entry("linear · cosine · random", False, Score(0.180, 0.008, 0.06), tokens_per_s=3600)]
        >>> first = opening(Comparison(runs, "PTB", "75 s of training per head", "acc@1", "the unigram baseline"))[0]
        >>> for part in first.split(": ", 1):
        ...     print(part)
        For PTB, with 75 s of training per head, use **linear · cosine · random**
        it has the best acc@1 at equal training time, 0.180 against softmax's 0.143 (1.26×).
    """
    best = c.best()
    if best is None:
        return [f"No run finished, so this comparison cannot say which {c.what} to use."]
    if c.all_at_baseline:
        detail = f" ({c.baseline_detail})" if c.baseline_detail else ""
        return [
            f"**Too short to tell.** With {c.budget}, no {c.what} got past {c.baseline}{detail}: the best "
            f"{c.metric} is {_value(c, best.at_time.value)} ({best.label}). Run longer ({c.advice}) to learn which "
            f"{c.what} suits {c.corpus}."
        ]
    ref = c.reference
    if ref is None:
        return [
            f"For {c.corpus}, with {c.budget}, **{best.label}** has the best {c.metric} at equal training time "
            f"({_value(c, best.at_time.value)}); there is no softmax run to compare it with."
        ]
    others = [e for e in c.scored if e is not ref]
    if best is ref:
        if not others:
            return [f"For {c.corpus}, with {c.budget}, only softmax has a score ({_value(c, ref.at_time.value)})."]
        return _lead(c, ref, max(others, key=lambda e: e.at_time.value or 0.0), ref)
    return _lead(c, best, ref, ref)
