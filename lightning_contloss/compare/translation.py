"""``lightning-contloss compare --task translation``: softmax vs continuous translators on your parallel text.

Each run trains the example encoder-decoder (:mod:`lightning_contloss.examples.translation`) for
the same wall-clock budget on the training part of the corpus, then translates the test part
with greedy and beam search and scores BLEU and chrF (sacrebleu, the ``mt`` extra). Continuous
runs also search with an EOS bias fitted on the validation part. Without ``--data-src`` /
``--data-tgt`` it uses the Spanish–English Bible verses that ship with the package.

The split is a seeded permutation of the aligned lines: ``--valid`` lines for validation,
``--test`` for test, the rest for training. ``--vocab`` picks word-level vocabularies (the
default) or BPE ones (``bpe-8k``, ``bpe-32k``, any ``bpe-N``) trained on the training part and
cached under ``--tokenizer-dir``. Scores are detokenised, case-insensitive sacrebleu (``13a``)
against the original references, so word-level and BPE runs compare. Writes ``report.md`` (the
LM report's shape: which run to use and why, warnings, the tables, sample translations) and
``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from lightning_contloss.compare.report import translation_section, write_report

__all__ = ["TRANSLATION_RUNS", "build_translation_parser", "split_parallel", "translation_main"]

TRANSLATION_RUNS = ("softmax", "infonce-random", "cosine-random", "cosine-glove")


def build_translation_parser() -> argparse.ArgumentParser:
    """The argument parser of ``compare --task translation``."""
    p = argparse.ArgumentParser(
        prog="lightning-contloss compare --task translation",
        description="Train softmax and continuous translators for the same wall-clock budget and compare BLEU.",
    )
    p.add_argument("--data-src", default=None, help="source sentences, one a line (.gz read too)")
    p.add_argument("--data-tgt", default=None, help="target sentences, aligned with --data-src")
    p.add_argument("--encoding", default="utf-8", help="text encoding of the data files")
    p.add_argument("--runs", nargs="+", default=["softmax", "infonce-random"], choices=TRANSLATION_RUNS)
    p.add_argument("--budget", type=float, default=120.0, help="training seconds per run (default 120)")
    p.add_argument("--valid", type=int, default=500, help="lines held out for validation (EOS bias, curve)")
    p.add_argument("--test", type=int, default=500, help="lines held out for the final scores")
    p.add_argument("--test-sentences", type=int, default=200, help="test lines translated for the scores")
    p.add_argument("--beam", type=int, default=4, help="beam size")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2, help="encoder and decoder blocks (each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab", default="word",
                   help="word (default) or bpe-<size>, e.g. bpe-8k or bpe-32k: a BPE per side, trained on the "
                        "training part")
    p.add_argument("--tokenizer-dir", default="runs/tokenizers",
                   help="where trained BPE tokenizers are cached and reused (default runs/tokenizers)")
    p.add_argument("--out", default=None, help="output folder (default runs/compare-translation-<timestamp>)")
    return p


def split_parallel(src: list[str], tgt: list[str], valid: int, test: int, seed: int) -> dict[str, Any]:
    """A seeded train/valid/test split of aligned lines into ``ParallelText`` parts.

    Example:
        >>> parts = split_parallel([str(i) for i in range(10)], [str(i) for i in range(10)], 2, 3, seed=0)
        >>> [len(parts[k].src) for k in ("train", "valid", "test")]
        [5, 2, 3]
    """
    import torch

    from lightning_contloss.examples.translation_data import ParallelText

    if len(src) != len(tgt):
        raise ValueError(f"--data-src has {len(src)} lines but --data-tgt has {len(tgt)}; pass aligned files")
    if valid < 1 or test < 1 or valid + test >= len(src):
        raise ValueError(
            f"{len(src)} lines cannot give {valid} validation and {test} test lines and leave some to train on; "
            "lower --valid / --test"
        )
    order = torch.randperm(len(src), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = {"valid": order[:valid], "test": order[valid : valid + test], "train": order[valid + test :]}
    return {k: ParallelText([src[i] for i in idx], [tgt[i] for i in idx]) for k, idx in cut.items()}


def _corpus(args: argparse.Namespace) -> Any:
    from lightning_contloss.examples.translation_data import bible_corpus, read_lines

    if (args.data_src is None) != (args.data_tgt is None):
        raise ValueError("pass both --data-src and --data-tgt (aligned files), or neither for the Bible verses")
    if args.data_src is None:
        return bible_corpus("es-en")
    for path in (args.data_src, args.data_tgt):
        if not Path(path).is_file():
            raise ValueError(f"no such file: {path}")
    src = read_lines(args.data_src, encoding=args.encoding)
    tgt = read_lines(args.data_tgt, encoding=args.encoding)
    return split_parallel(src, tgt, args.valid, args.test, args.seed)


def _build(run: str, dm: Any, args: argparse.Namespace) -> Any:
    from lightning_contloss.examples.translation import ContinuousTranslator, SoftmaxTranslator

    options = {
        "d_model": args.d_model,
        "n_heads": 4,
        "n_encoder_layers": args.layers,
        "n_decoder_layers": args.layers,
        "dim_feedforward": 4 * args.d_model,
        "warmup_steps": 200,
    }
    sizes = (dm.src_vocab_size, dm.tgt_vocab_size)
    if run == "softmax":
        module: Any = SoftmaxTranslator(*sizes, **options)
    else:
        loss, targets = run.split("-", 1)  # LOSS-TARGETS, checked by the parser's choices
        module = ContinuousTranslator(*sizes, **options, loss=loss, targets=cast(Any, targets))
    module.attach_vocabularies(dm.src_vocab, dm.tgt_vocab)
    return module


def _score(module: Any, pairs: Any, n: int, method: str, beam: int, rules: Any = None) -> dict[str, Any]:
    from lightning_contloss.examples.translation_metrics import corpus_scores

    src = list(pairs.sources[:n])
    refs = list(pairs.references[: len(src)])
    start = time.perf_counter()
    hyps = module.translate(src, method=method, beam_size=beam, rules=rules)
    seconds = time.perf_counter() - start
    scores = corpus_scores(hyps, refs)
    return {
        "bleu": scores["bleu"],
        "chrf": scores["chrf"],
        "sentences_per_s": len(src) / max(seconds, 1e-9),
        "hyps": list(hyps),
    }


def _one_run(run: str, dm: Any, args: argparse.Namespace) -> dict[str, Any]:
    import lightning as L

    from lightning_contloss import SearchRules
    from lightning_contloss.compare.budget import WallClockBudget

    L.seed_everything(args.seed, verbose=False)
    module = _build(run, dm, args)
    budget = WallClockBudget(args.budget, args.budget, lambda m: 0.0)
    trainer = L.Trainer(
        max_epochs=-1,
        callbacks=[budget],
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(module, datamodule=dm)
    row: dict[str, Any] = {
        "run": run,
        "budget_s": args.budget,
        "vocab": args.vocab,
        "src_vocab": dm.src_vocab_size,
        "tgt_vocab": dm.tgt_vocab_size,
        "train_seconds": budget.train_seconds,
        "tokens": int(module.tokens_seen),
        "train_tokens_per_s": module.tokens_seen / max(budget.train_seconds, 1e-9),
    }
    test = dm.test_pairs
    for method in ("greedy", "beam"):
        # Only the beam translations are kept: the report's noise and samples are of beam search.
        scores = _score(module, test, args.test_sentences, method, args.beam)
        row.update({f"{method}_{k}": v for k, v in scores.items() if k != "hyps" or method == "beam"})
    if run != "softmax":
        fit = module.fit_eos_bias(dm.val_dataloader())
        rules = SearchRules(eos_bias=fit.bias)
        row["eos_bias"] = fit.bias
        for method in ("greedy", "beam"):
            res = _score(module, test, args.test_sentences, method, args.beam, rules)
            row.update({f"{method}_eos_{k}": v for k, v in res.items() if k != "hyps"})
    return row


def translation_main(argv: Sequence[str]) -> int:
    """``lightning-contloss compare --task translation ...``: returns the exit code (2 for bad input)."""
    try:
        args = build_translation_parser().parse_args(list(argv))
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else 2
    if args.budget <= 0 or args.test_sentences < 1 or args.beam < 1:
        print(
            "lightning-contloss compare: error: --budget, --test-sentences and --beam must be > 0", file=sys.stderr
        )
        return 2
    try:
        import sacrebleu  # noqa: F401
    except ImportError:
        print(
            "lightning-contloss compare: error: --task translation needs sacrebleu: pip install "
            "'lightning-contloss[mt]'",
            file=sys.stderr,
        )
        return 2
    from lightning_contloss.examples.subword import parse_vocab
    from lightning_contloss.examples.translation_data import TranslationDataModule

    try:
        corpus = _corpus(args)
        if parse_vocab(args.vocab) is not None and "cosine-glove" in args.runs:
            raise ValueError("cosine-glove needs word targets; with --vocab bpe-* run infonce-random or cosine-random")
        dm = TranslationDataModule(
            corpus, batch_size=args.batch_size, seed=args.seed, vocab=args.vocab, tokenizer_dir=args.tokenizer_dir
        )
    except (ValueError, OSError, UnicodeDecodeError, ImportError) as err:
        print(f"lightning-contloss compare: error: {err}", file=sys.stderr)
        return 2
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("runs") / f"compare-translation-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in args.runs:
        print(f"[{run}] training {args.budget:.0f} s", flush=True)
        rows.append(_one_run(run, dm, args))
        (out / "results.json").write_text(json.dumps(rows, indent=1))
    data = f"{args.data_src} → {args.data_tgt}" if args.data_src else "the packaged Bible verses, es → en"
    test = dm.test_pairs  # compare's corpora always have a test split; the None is the datamodule's general case
    sources = [] if test is None else list(test.sources[: args.test_sentences])
    references = [] if test is None else list(test.references[: len(sources)])
    n = len(sources)
    section = translation_section(
        rows,
        title=f"Translation, {data}",
        corpus=data,
        budget=f"{args.budget:.0f} s of training per run",
        sources=sources,
        references=references,
    )
    header = (
        f"Data: {data}; {len(dm.train_pairs):,} training pairs; vocabulary {args.vocab} "
        f"({dm.src_vocab_size:,} source / {dm.tgt_vocab_size:,} target entries); test BLEU/chrF on {n} held-out "
        "lines (sacrebleu 13a on the detokenised output against the original references, case-insensitive).\n\n"
        f"Command: `lightning-contloss compare --task translation {' '.join(argv)}` — "
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPU cores."
    )
    write_report([section], out, header, title="lightning-contloss compare --task translation")
    print("\n" + section.console() + f"\n\nreport: {out / 'report.md'}")
    return 0
