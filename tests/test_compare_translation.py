"""compare --task translation: the split, an end-to-end run on a small parallel file, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_contloss.compare.runner import compare_main
from lightning_contloss.compare.translation import split_parallel


def _write(tmp_path: Path, n: int, m: int | None = None) -> tuple[Path, Path]:
    words_es = ["el", "la", "casa", "perro", "gato", "come", "ve", "grande"]
    words_en = ["the", "the", "house", "dog", "cat", "eats", "sees", "big"]
    src, tgt = [], []
    for i in range(n):
        idx = [(i * 3 + j) % len(words_es) for j in range(2 + i % 4)]
        src.append(" ".join(words_es[k] for k in idx) + " .")
        tgt.append(" ".join(words_en[k] for k in idx) + " .")
    (tmp_path / "a.es").write_text("\n".join(src) + "\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("\n".join(tgt[: m if m is not None else n]) + "\n", encoding="utf-8")
    return tmp_path / "a.es", tmp_path / "a.en"


def test_split_is_seeded_disjoint_and_complete() -> None:
    lines = [f"s{i}" for i in range(50)]
    a = split_parallel(lines, [f"t{i}" for i in range(50)], 5, 7, seed=3)
    b = split_parallel(lines, [f"t{i}" for i in range(50)], 5, 7, seed=3)
    assert a["test"].src == b["test"].src
    seen = a["train"].src + a["valid"].src + a["test"].src
    assert sorted(seen) == sorted(lines) and len(a["valid"].src) == 5 and len(a["test"].src) == 7
    assert all(s[1:] == t[1:] for part in a.values() for s, t in zip(part.src, part.tgt, strict=True))
    with pytest.raises(ValueError, match="aligned"):
        split_parallel(lines, lines[:3], 1, 1, 0)
    with pytest.raises(ValueError, match="lower --valid"):
        split_parallel(lines, lines, 30, 30, 0)


def test_compare_translation_runs_end_to_end(tmp_path: Path) -> None:
    src, tgt = _write(tmp_path, 200)
    out = tmp_path / "out"
    args = ["--task", "translation", "--data-src", str(src), "--data-tgt", str(tgt), "--budget", "2"]
    args += ["--valid", "20", "--test", "20", "--test-sentences", "6", "--d-model", "32", "--layers", "1"]
    args += ["--beam", "2", "--runs", "softmax", "cosine-random", "--out", str(out)]
    assert compare_main(args) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["run"] for r in rows] == ["softmax", "cosine-random"]
    assert all(r["tokens"] > 0 and 0 <= r["greedy_bleu"] <= 100 for r in rows)
    assert "eos_bias" in rows[1] and "greedy_eos_bleu" in rows[1]
    assert all(len(r["beam_hyps"]) == 6 and r["budget_s"] == 2 for r in rows)
    report = (out / "report.md").read_text()
    assert "| softmax |" in report and "| cosine-random |" in report
    # the LM report's shape: opening sentences, the main table, against softmax, details, samples
    section = report[report.index("## Translation") :]
    opening = section.splitlines()[2]
    assert opening.startswith(("For ", "**Too short to tell.**")), opening
    assert "| run | BLEU, beam | chrF, beam | train tokens/s | tokens trained | distinct output words |" in report
    assert "Against softmax" in report and "More measurements:" in report
    assert "Sample translations (beam search, the first 3 test lines):" in report
    assert f"    - cosine-random: {rows[1]['beam_hyps'][0]}" in report


def test_compare_translation_with_bpe_runs_end_to_end_and_caches_the_tokenizers(tmp_path: Path) -> None:
    src, tgt = _write(tmp_path, 200)
    out, tok = tmp_path / "out", tmp_path / "tok"
    args = ["--task", "translation", "--data-src", str(src), "--data-tgt", str(tgt), "--budget", "2"]
    args += ["--valid", "20", "--test", "20", "--test-sentences", "6", "--d-model", "32", "--layers", "1"]
    args += ["--beam", "2", "--runs", "softmax", "infonce-random", "--vocab", "bpe-40", "--tokenizer-dir", str(tok)]
    assert compare_main([*args, "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["run"] for r in rows] == ["softmax", "infonce-random"]
    assert all(r["vocab"] == "bpe-40" and 4 < r["tgt_vocab"] <= 40 for r in rows)
    assert all(r["tokens"] > 0 and 0 <= r["greedy_bleu"] <= 100 for r in rows)
    assert "vocabulary bpe-40" in (out / "report.md").read_text()
    files = sorted(p.name for p in tok.iterdir())
    assert len(files) == 2 and all(f.startswith("bpe-40-lower-") for f in files)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data-src", "{src}"], "pass both --data-src and --data-tgt"),
        (["--data-src", "{src}", "--data-tgt", "{short}"], "aligned files"),
        (["--data-src", "{src}", "--data-tgt", "{missing}"], "no such file"),
        (["--budget", "0"], "must be > 0"),
        (["--vocab", "bpe"], "'word' or 'bpe-<size>'"),
        (["--vocab", "bpe-50", "--runs", "softmax", "cosine-glove"], "cosine-glove needs word targets"),
        (["--vocab", "bpe-50", "--tokenizer-dir", "{src}"], "is not a folder"),
    ],
)
def test_compare_translation_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    src, _ = _write(tmp_path, 40)
    short = tmp_path / "short.en"
    short.write_text("a\nb\n", encoding="utf-8")
    paths = {"src": str(src), "short": str(short), "missing": str(tmp_path / "nope.en")}
    argv = ["--task=translation", *[e.format(**paths) for e in extra], "--out", str(tmp_path / "o")]
    assert compare_main(argv) == 2
    assert message in capsys.readouterr().err
