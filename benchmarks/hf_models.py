"""Continuous vs softmax twins of the Hugging Face and litgpt conversions, on Penn Treebank.

For each model of tests/test_integrations_hf.py and tests/test_integrations_litgpt.py (GPT-2,
Llama, T5, Marian, BART, litgpt GPT; tiny configs, random init) this trains the softmax class
and its continuous twin for the same number of steps on the same batches, then reports
validation acc@1: next-token accuracy on PTB windows for the causal LMs, teacher-forced token
accuracy on the PTB reversal task for the seq2seq models. The continuous model decodes with
its exact decoder (the one ``generate()`` and the callback use). It also reports how many
lines the conversion changed. The classes are imported from the tests, so what is measured is
what is tested and documented (docs/models.md).

    python benchmarks/hf_models.py                 # writes benchmarks/results/hf_models.md
    python benchmarks/hf_models.py --steps 40 --models gpt2 t5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout, and the tests that hold the models

import test_integrations_hf as hf  # noqa: E402
import test_integrations_litgpt as lit  # noqa: E402

from lightning_contloss.examples.data import PTBDataModule  # noqa: E402

PAIRS: dict[str, tuple[type, type]] = {**hf.PAIRS, **lit.PAIRS}
CAUSAL = {*hf.CAUSAL, *lit.PAIRS}
VALID_BATCHES = 16  # 16 x 16 x 32 = 8192 validation tokens for the causal LMs


def fit(module: L.LightningModule, train: DataLoader[Any], steps: int) -> float:
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train)
    return time.perf_counter() - start


@torch.no_grad()
def accuracy(module: Any, batches: DataLoader[Any], causal: bool, continuous: bool) -> float:
    module.eval()
    hits = total = 0
    for i, (first, second) in enumerate(batches):
        if causal and i == VALID_BATCHES:
            break
        if causal:
            out, target = module.model(first), second
        else:
            out, target = module.model(input_ids=first, attention_mask=first != hf.PAD, labels=second), second
        logits = out if isinstance(out, Tensor) else out.logits
        pred = module.continuous_decode(logits, k=1)[..., 0] if continuous else logits.argmax(-1)
        keep = target != -100
        hits += int((pred == target)[keep].sum())
        total += int(keep.sum())
    return hits / max(total, 1)


def data(name: str, ptb: PTBDataModule, steps: int) -> tuple[DataLoader[Any], DataLoader[Any], int]:
    """(train, valid, vocab size) for a model: PTB windows, or the reversal task for seq2seq models."""
    if name in CAUSAL:
        return ptb.train_dataloader(), ptb.val_dataloader(), ptb.vocab_size
    train = hf.reversal_data(ptb.train_ids, 16 * steps)
    return train, hf.reversal_data(ptb.valid_ids, 512, shuffle=False), hf.S2S_VOCAB


def run(name: str, ptb: PTBDataModule, steps: int) -> dict[str, Any]:
    softmax_cls, continuous_cls = PAIRS[name]
    row: dict[str, Any] = {"model": name, "lines": hf.changed_lines(softmax_cls, continuous_cls), "steps": steps}
    train, valid, vocab = data(name, ptb, steps)
    for kind, cls in (("softmax", softmax_cls), ("continuous", continuous_cls)):
        L.seed_everything(0, verbose=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = cls(vocab)
        row[f"{kind}_s"] = fit(module, train, steps)
        row[kind] = accuracy(module, valid, name in CAUSAL, kind == "continuous")
        print(f"[{name}] {kind}: acc@1={row[kind]:.4f} in {row[f'{kind}_s']:.0f}s", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per model and head")
    parser.add_argument("--models", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hf_models.md")
    args = parser.parse_args()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    ptb = PTBDataModule(batch_size=16, seq_len=32)
    rows: list[dict[str, Any]] = []
    for name in args.models:
        rows.append(run(name, ptb, args.steps))
        write(args, rows, load)  # after every model, so an interrupted run keeps what it measured
    print(f"wrote {args.out}")


def write(args: argparse.Namespace, rows: list[dict[str, Any]], load: str) -> None:
    end_load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Hugging Face and litgpt conversions: continuous vs softmax twin",
        "",
        f"`python benchmarks/hf_models.py --steps {args.steps}`: tiny configs (2 layers, width 64, random init),",
        f"{args.steps} Adam steps (lr 3e-3) per head on the same batches, CPU. Causal LMs: PTB windows",
        "(16 × 32 tokens, V = 10,001; litgpt pads it to 10,240), acc@1 = next-token accuracy on the first",
        "8k validation tokens. Seq2seq: reversing PTB chunks of the 300 most frequent ids (batch 16),",
        "acc@1 = teacher-forced token accuracy on 512 validation chunks. Continuous heads: D = 64",
        "random targets, cosine loss, exact nearest-neighbour decoding. Lines = changed lines of the",
        "LightningModule (comments included), as counted by the tests.",
        "",
        f"Load: `{load}` at the start, `{end_load}` after the last model (2 cores shared with other jobs,",
        "so the seconds are noisy; both heads of a model ran back to back).",
        "",
        "| model | lines changed | softmax acc@1 | continuous acc@1 | softmax s | continuous s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['lines']} | {r['softmax']:.4f} | {r['continuous']:.4f} | "
            f"{r['softmax_s']:.0f} | {r['continuous_s']:.0f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
