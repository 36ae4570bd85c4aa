"""The translation comparison as a report section: the LM report's shape, scored by BLEU, with sample translations.

The rows are ``compare --task translation``'s (:mod:`lightning_contloss.compare.translation`).
The deciding number is test BLEU with beam search at equal training time; its noise is the
bootstrap spread of :func:`~lightning_contloss.compare.report.noise.bleu_noise`, and a run
below :data:`BLEU_FLOOR` has not learned to translate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_contloss.compare.report.caveats import caveats
from lightning_contloss.compare.report.cells import count, num, ratio
from lightning_contloss.compare.report.noise import bleu_noise
from lightning_contloss.compare.report.section import Section, Table
from lightning_contloss.compare.report.sentences import opening
from lightning_contloss.compare.report.standing import Comparison, Entry, Score

__all__ = ["BLEU_FLOOR", "TRANSLATION_COLUMNS", "translation_comparison", "translation_section"]

# Below 1 BLEU a system's output shares almost no n-grams with the references: nothing learned yet.
BLEU_FLOOR = 1.0
TRANSLATION_COLUMNS = ("run", "BLEU, beam", "chrF, beam", "train tokens/s", "tokens trained", "distinct output words")


def _distinct(hyps: Sequence[str] | None) -> float | None:
    return None if not hyps else float(len({w for h in hyps for w in h.split()}))


def translation_comparison(
    rows: Sequence[dict[str, Any]], references: Sequence[str], corpus: str, budget: str
) -> Comparison:
    """The :class:`Comparison` of translation rows: beam BLEU at equal time, with bootstrap noise.

    Args:
        rows: the runs' result rows (each with ``beam_hyps``, the beam translations of the test lines).
        references: the references of those test lines, in order.
        corpus: the data's name for the sentences.
        budget: the training each run got, e.g. ``"120 s of training per run"``.
    """
    entries = []
    for r in rows:
        hyps = r.get("beam_hyps")
        noise = 0.0 if not hyps else bleu_noise(hyps, list(references[: len(hyps)]))
        entries.append(
            Entry(
                label=r["run"],
                reference=r["run"] == "softmax",
                at_time=Score(r.get("beam_bleu"), noise, BLEU_FLOOR),
                tokens_per_s=r.get("train_tokens_per_s"),
                distinct=_distinct(hyps),
                train_seconds=r.get("train_seconds"),
                budget_s=r.get("budget_s"),
            )
        )
    return Comparison(
        entries,
        corpus,
        budget,
        "BLEU (beam)",
        f"the floor of {BLEU_FLOOR:g} BLEU",
        baseline_detail="below it the output shares almost no n-grams with the references",
        fmt="{:.2f}",
    )


def _tables(rows: Sequence[dict[str, Any]], c: Comparison) -> list[Table]:
    tables = [
        Table(
            TRANSLATION_COLUMNS,
            [
                [e.label, num(r.get("beam_bleu"), "{:.2f}"), num(r.get("beam_chrf"), "{:.2f}"),
                 count(e.tokens_per_s), count(r.get("tokens")), num(e.distinct, "{:.0f}")]
                for r, e in zip(rows, c.entries)
            ],
        )
    ]
    ref = c.reference
    if ref is not None and len(rows) > 1:
        ref_row = rows[c.entries.index(ref)]
        tables.append(
            Table(
                ("run", "BLEU, beam", "chrF, beam", "train tokens/s", "distinct output words"),
                [
                    [e.label, c.score_ratio(e), ratio(r.get("beam_chrf"), ref_row.get("beam_chrf")) or "—",
                     ratio(e.tokens_per_s, ref.tokens_per_s) or "—", ratio(e.distinct, ref.distinct) or "—"]
                    for r, e in zip(rows, c.entries)
                    if e is not ref
                ],
                caption="Against softmax (each run's number over softmax's):",
            )
        )
    tables.append(
        Table(
            ("run", "train s", "BLEU, greedy", "chrF, greedy", "BLEU greedy +EOS", "BLEU beam +EOS", "EOS bias",
             "sentences/s, greedy", "sentences/s, beam"),
            [
                [r["run"], num(r.get("train_seconds"), "{:.1f}"), num(r.get("greedy_bleu"), "{:.2f}"),
                 num(r.get("greedy_chrf"), "{:.2f}"), num(r.get("greedy_eos_bleu"), "{:.2f}"),
                 num(r.get("beam_eos_bleu"), "{:.2f}"), num(r.get("eos_bias"), "{:+.2f}"),
                 num(r.get("greedy_sentences_per_s"), "{:.1f}"), num(r.get("beam_sentences_per_s"), "{:.1f}")]
                for r in rows
            ],
            caption="More measurements:",
            console=False,
        )
    )
    return tables


def _samples(rows: Sequence[dict[str, Any]], sources: Sequence[str], references: Sequence[str], n: int) -> str:
    """The first ``n`` test lines: source, reference and each run's beam translation."""
    lines = [f"Sample translations (beam search, the first {n} test lines):", ""]
    for i in range(min(n, len(sources))):
        lines.append(f"{i + 1}. source: {sources[i]}")
        lines.append(f"    - reference: {references[i]}")
        for r in rows:
            hyps = r.get("beam_hyps") or []
            lines.append(f"    - {r['run']}: {hyps[i] if i < len(hyps) else '—'}")
    return "\n".join(lines)


def translation_section(
    rows: Sequence[dict[str, Any]],
    *,
    title: str,
    corpus: str,
    budget: str,
    sources: Sequence[str],
    references: Sequence[str],
    samples: int = 3,
) -> Section:
    """The section of a translation comparison: sentences, warnings, the three tables, sample translations.

    Args:
        rows: the runs' result rows.
        title: the section's heading.
        corpus: the data's name for the sentences.
        budget: the training each run got.
        sources: the scored test lines' sources, in order.
        references: their references.
        samples: how many test lines to show translated.

    Example:
        >>> translation_section([], title="t", corpus="c", budget="b", sources=[], references=[]).sentences
        ['No run finished, so this comparison cannot say which head to use.']
    """
    c = translation_comparison(rows, references, corpus, budget)
    if not rows:
        return Section(title, opening(c))
    notes = [
        "BLEU and chrF: sacrebleu on tokenized, lower-cased text. Noise: two standard deviations of BLEU over 200 "
        "bootstrap resamples of the test lines; a ratio marked “within noise” separates runs whose difference is "
        "smaller. +EOS: the EOS bias fitted on the validation lines (continuous runs). BLEU at equal training "
        "tokens is not measured here; benchmarks/translation.py measures it.",
    ]
    blocks = [_samples(rows, sources, references, samples)] if samples > 0 else []
    return Section(title, opening(c), caveats(c), _tables(rows, c), blocks=blocks, notes=notes)
