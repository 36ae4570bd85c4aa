"""Tests of compare's report: opening sentences against the tables, noise, warnings, marked ratios, Brier columns."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import compare_row

from lightning_contloss.compare.report import MAIN_COLUMNS, acc_at, lm_section, translation_section, write_report
from lightning_contloss.compare.report.lm import equal_tokens
from lightning_contloss.compare.report.noise import binomial_noise, bleu_noise, differ
from lightning_contloss.compare.report.section import Section

RATIO = re.compile(r"\d+\.\d\d×")


def table(markdown: str, caption: str | None = None, columns: tuple[str, ...] = MAIN_COLUMNS) -> list[dict[str, str]]:
    """The rows of the table with header ``columns`` (after ``caption``, when given) as column -> cell."""
    lines = markdown.splitlines()
    start = lines.index(caption) if caption else 0
    header = "| " + " | ".join(columns) + " |"
    i = lines.index(header, start)
    rows = []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows.append(dict(zip(columns, cells, strict=True)))
    return rows


def section(rows: list[dict[str, Any]]) -> tuple[Section, str]:
    s = lm_section(rows, title="PTB", corpus="Penn Treebank", budget="10 s of training per head")
    return s, s.markdown()


SCENARIOS = {
    "a continuous head leads": [
        compare_row("softmax", 0.143, 1800, 2048, 24),
        compare_row("linear:cosine:random", 0.147, 3600, 1024, 17),
        compare_row("linear:infonce:random", 0.172, 3500, 1100, 19),
    ],
    "softmax leads": [
        compare_row("softmax", 0.200, 1800, 2048, 40),
        compare_row("linear:cosine:random", 0.150, 3600, 1024, 17),
        compare_row("linear:infonce:random", 0.120, 3500, 1100, 19),
    ],
    "level": [
        compare_row("softmax", 0.143, 1800, 2048, 24),
        compare_row("linear:infonce:random", 0.146, 3600, 1024, 19),
    ],
    "a later softmax row leads": [
        compare_row("linear:vmf:random", 0.090, 3700, 1000, 43),
        compare_row("softmax", 0.180, 1800, 2048, 24),
        compare_row("linear:cosine:random", 0.120, 3600, 1024, 17),
    ],
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_opening_sentences_agree_with_the_tables(name: str) -> None:
    rows = SCENARIOS[name]
    s, text = section(rows)
    main = table(text)
    best = max(main, key=lambda r: float(r["acc@1, equal time"]))
    opening = " ".join(s.sentences)
    assert f"**{best['run']}**" in s.sentences[0], "the head named first is the best at equal time"
    against = {r["run"]: r for r in table(text, "Against softmax (each run's number over softmax's):")}
    contender = best["run"] if best["run"] != "softmax · CE" else max(
        against, key=lambda run: float(next(r for r in main if r["run"] == run)["acc@1, equal time"])
    )
    quoted = RATIO.findall(opening)
    cells = {c.split(" ")[0] for c in against[contender].values()}
    assert quoted and set(quoted) <= cells, f"every ratio quoted ({quoted}) is a cell of {contender}'s row"
    assert against[contender]["acc@1, equal time"].split(" ")[0] in quoted, "the accuracy ratio is quoted"
    assert against[contender]["train tokens/s"] in quoted, "the speed ratio is quoted"
    # every accuracy quoted is the main table's
    values = {c for r in main for c in (r["acc@1, equal time"], r["acc@1, equal tokens"])}
    assert set(re.findall(r"(?<!±)\b0\.\d{3}\b", opening)) <= values
    if name == "level":
        assert "are level" in s.sentences[0] and "within noise" in s.sentences[0]
        assert against[contender]["acc@1, equal time"].endswith("(within noise)")
    else:
        assert "use **" in s.sentences[0] and "level on" not in opening


def test_every_head_at_the_unigram_baseline_is_too_short_to_tell() -> None:
    # unigram 0.05 on 8192 tokens: its noise is 0.0048, so 0.051 and 0.053 are at the baseline.
    rows = [compare_row("softmax", 0.053, 1800, 2048, 3), compare_row("linear:cosine:random", 0.051, 3700, 1024, 2)]
    s, text = section(rows)
    assert s.sentences[0].startswith("**Too short to tell.**") and "use **" not in text
    assert s.caveats[0].startswith("Too short to tell: every head is within noise of the unigram baseline")
    assert "always “the”: 0.050 ± 0.005 on 8,192 validation tokens" in s.caveats[0]
    (cosine,) = table(text, "Against softmax (each run's number over softmax's):")
    assert cosine["acc@1, equal time"] == "0.96× (not meaningful: every head is at the unigram baseline)"
    assert cosine["acc@1, equal tokens"].endswith("(not meaningful: every head is at the unigram baseline)")
    assert cosine["train tokens/s"] == "2.06×", "speed is measured whatever the accuracy"
    assert sum(line.startswith("warning: Too short to tell") for line in s.console().splitlines()) == 1


def test_one_head_at_the_baseline_is_warned_and_its_ratios_marked() -> None:
    rows = [
        compare_row("softmax", 0.143, 1800, 2048, 24),
        compare_row("linear:vmf:random", 0.052, 3700, 1024, 4),
        compare_row("linear:cosine:random", 0.160, 3600, 1024, 17),
    ]
    s, text = section(rows)
    assert s.caveats == [
        "linear · vmf · random did not get past the unigram baseline (acc@1 0.052; always “the”: 0.050 ± 0.005 on "
        "8,192 validation tokens); its ratios against softmax are not meaningful."
    ]
    against = {r["run"]: r for r in table(text, "Against softmax (each run's number over softmax's):")}
    assert against["linear · vmf · random"]["acc@1, equal time"] == (
        "0.36× (not meaningful: this head is at the unigram baseline)"
    )
    assert against["linear · cosine · random"]["acc@1, equal time"] == "1.12×", "0.017 apart: more than the noise"


def test_softmax_at_the_baseline_marks_every_ratio() -> None:
    rows = [compare_row("softmax", 0.051, 1800, 2048, 3), compare_row("linear:cosine:random", 0.150, 3600, 1024, 17)]
    s, text = section(rows)
    (cosine,) = table(text, "Against softmax (each run's number over softmax's):")
    assert cosine["acc@1, equal time"].endswith("(not meaningful: softmax is at the unigram baseline)")
    assert "**linear · cosine · random**" in s.sentences[0]


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(14.0, "trained 14.0 s on a 10.0 s budget"), (5.0, "trained only 5.0 s of its 10.0 s budget"), (11.0, None)],
)
def test_a_run_off_its_budget_is_warned(seconds: float, expected: str | None) -> None:
    rows = [compare_row("softmax", 0.143, 1800, 2048, 24, train_seconds=seconds)]
    s, _ = section(rows)
    if expected is None:
        assert s.caveats == []
    else:
        assert len(s.caveats) == 1 and s.caveats[0].startswith(f"softmax · CE {expected}")
        assert f"warning: softmax · CE {expected}" in s.console()


def test_few_evaluations_and_few_validation_tokens_are_warned() -> None:
    short = [{"seconds": 0.0, "tokens": 0, "epochs": 0.0, "acc1": 0.0}, {"seconds": 10.0, "tokens": 1, "epochs": 0.0,
                                                                          "acc1": 0.3}]
    rows = [
        compare_row("softmax", 0.30, 1800, 2048, 24, valid_tokens=600, curve=short),
        compare_row("linear:cosine:random", 0.40, 3600, 1024, 17, valid_tokens=600),
    ]
    s, text = section(rows)
    assert any(c.startswith("Only 1 accuracy evaluation(s) in some run (fewer than 3)") for c in s.caveats)
    assert any(c.startswith("Only 600 validation tokens (fewer than 2,000)") for c in s.caveats)
    (cosine,) = table(text, "Against softmax (each run's number over softmax's):")
    assert cosine["acc@1, equal tokens"].endswith("(not meaningful: only 1 evaluation(s) per run)")
    assert not cosine["acc@1, equal time"].endswith(")"), "equal time does not depend on the curve"


def test_equal_tokens_reads_every_curve_at_the_slowest_runs_tokens() -> None:
    soft = compare_row("softmax", 0.2, 1000, 1, 10)
    cont = compare_row("linear:cosine:random", 0.3, 3000, 1, 10)
    assert equal_tokens([soft, cont]) == 10_000
    # the continuous curve is linear from 0, so at a third of its tokens it has a third of its accuracy
    assert acc_at(cont["curve"], "tokens", 10_000) == pytest.approx(0.1)
    assert acc_at(soft["curve"], "tokens", 20_000) is None
    (cosine,) = table(section([soft, cont])[1], "Against softmax (each run's number over softmax's):")
    assert cosine["acc@1, equal time"] == "1.50×" and cosine["acc@1, equal tokens"] == "0.50×"


def test_brier_columns_follow_what_they_say() -> None:
    def detail_header(rows: list[dict[str, Any]]) -> str:
        text = section(rows)[1]
        return next(line for line in text.splitlines() if line.startswith("| run | head |"))

    informative = [compare_row("softmax", 0.2, 1000, 1, 10), compare_row("linear:cosine:random", 0.2, 1000, 1, 10)]
    assert "Brier-1 / 2 / 3 / 4" in detail_header(informative) and "BrierLM" in detail_header(informative)
    geo_zero = [compare_row("softmax", 0.2, 1000, 1, 10, brier_lm=0.0, brier_orders=[0.05, 0.001, 0.0, -0.0002])]
    assert "Brier-1 / 2 / 3 / 4" in detail_header(geo_zero) and "| BrierLM |" not in detail_header(geo_zero)
    assert "0.050 / 0.001 / 0.000 / -0.000" in section(geo_zero)[1]
    assert "is 0 for every run (some order is ≤ 0 at this budget), so it is left out" in section(geo_zero)[1]
    all_zero = [compare_row("softmax", 0.2, 1000, 1, 10, brier_lm=0.0, brier_orders=[0.0, 0.0, 0.0, 0.0])]
    assert "Brier" not in detail_header(all_zero)
    assert "BrierLM is left out: it, and every per-order Brier score, is 0" in section(all_zero)[1]


def test_report_is_made_of_sections_with_their_figures(tmp_path: Path) -> None:
    rows = SCENARIOS["a continuous head leads"]
    first = lm_section(rows, title="PTB, its own vocabulary", corpus="PTB", budget="10 s")
    second = lm_section(rows[:2], title="PTB in GloVe's vocabulary", corpus="PTB", budget="10 s", plot_name="b.png")
    text = write_report([first, second], tmp_path, "header line", ["a note"], failures=[("x", "why")], finished=3)
    assert text.index("## PTB, its own vocabulary") < text.index("## PTB in GloVe's vocabulary")
    assert (tmp_path / "report.png").stat().st_size > 10_000 and (tmp_path / "b.png").stat().st_size > 10_000
    assert "**1 of 4 runs failed**" in text and "- a note" in (tmp_path / "report.md").read_text()
    assert "| linear · cosine · random | linear | cosine | random |" in text, "the detail table has every run"
    console = first.console()
    assert "More measurements" not in console and "| run | acc@1, equal time |" in console


def test_noise_definitions() -> None:
    assert binomial_noise(0.1, 10_000) == pytest.approx(2 * math.sqrt(0.1 * 0.9 / 10_000))
    assert binomial_noise(0.5, 0) == math.inf
    assert differ(0.2, 0.1, 0.01, 0.01) and not differ(0.105, 0.1, 0.01, 0.01)
    refs = [f"the cat number {i} sat on the mat ." for i in range(40)]
    hyps = [r if i % 2 else "a dog ran away ." for i, r in enumerate(refs)]
    assert bleu_noise(refs, refs) == pytest.approx(0.0, abs=1e-9)
    assert bleu_noise(hyps, refs, seed=1) == bleu_noise(hyps, refs, seed=1) > 1.0


def test_bleu_noise_matches_a_bootstrap_of_sacrebleus_corpus_bleu() -> None:
    """Reference: the same resamples scored one by one with sacrebleu.corpus_bleu (what summed statistics replace)."""
    import numpy as np
    import sacrebleu

    refs = [f"the cat number {i} sat on the mat ." for i in range(40)]
    hyps = [r if i % 3 else f"a dog {i} ran away from the mat ." for i, r in enumerate(refs)]
    picks = np.random.default_rng(5).integers(0, 40, (20, 40))
    scores = [sacrebleu.corpus_bleu([hyps[i] for i in p], [[refs[i] for i in p]], tokenize="none").score for p in picks]
    assert bleu_noise(hyps, refs, resamples=20, seed=5) == pytest.approx(2 * float(np.std(scores)), rel=1e-9)
    with pytest.raises(ValueError, match="one reference per hypothesis"):
        bleu_noise(hyps, refs[:3])


def _translation_row(run: str, bleu: float, tps: float, hyps: list[str]) -> dict[str, Any]:
    return {
        "run": run, "budget_s": 10.0, "train_seconds": 10.0, "tokens": int(tps * 10), "train_tokens_per_s": tps,
        "beam_bleu": bleu, "beam_chrf": 2 * bleu, "greedy_bleu": bleu, "greedy_chrf": 2 * bleu,
        "greedy_sentences_per_s": 5.0, "beam_sentences_per_s": 2.0, "beam_hyps": hyps,
    }


def test_translation_section_has_the_same_shape_and_samples() -> None:
    refs = [f"in the beginning god created {i} things ." for i in range(30)]
    sources = [f"en el principio dios creó {i} cosas ." for i in range(30)]
    good = [r if i % 3 else "in the beginning ." for i, r in enumerate(refs)]
    rows = [_translation_row("softmax", 8.0, 1000, ["the the the ."] * 30), _translation_row("cosine-random", 60.0,
                                                                                              2500, good)]
    s = translation_section(rows, title="Bible", corpus="the Bible", budget="10 s of training per run",
                            sources=sources, references=refs)
    text = s.markdown()
    assert "use **cosine-random**" in s.sentences[0] and "(7.50×)" in s.sentences[0]
    assert "Why: it trains 2.50× softmax's tokens per second" in " ".join(s.sentences)
    (cosine,) = table(text, columns=("run", "BLEU, beam", "chrF, beam", "train tokens/s", "distinct output words"))
    assert cosine["BLEU, beam"] == "7.50×" and cosine["train tokens/s"] == "2.50×"
    assert "1. source: en el principio dios creó 0 cosas ." in text
    assert "    - cosine-random: in the beginning ." in text
    assert "    - reference: in the beginning god created 0 things ." in text
    low = [_translation_row("softmax", 0.4, 1000, ["the ."] * 30), _translation_row("cosine-random", 0.6, 2500, good)]
    s = translation_section(low, title="Bible", corpus="the Bible", budget="1 s of training per run",
                            sources=sources, references=refs)
    assert s.sentences[0].startswith("**Too short to tell.**")
    assert "(not meaningful: every head is at the floor of 1 BLEU)" in s.markdown()
