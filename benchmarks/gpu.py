"""The CUDA paths on one GPU, exercised and timed in one run (under 5 minutes on one GPU).

1. Losses (cosine, vMF, InfoNCE with 1024 sampled negatives) forward + backward in fp32 and
   under bf16 autocast: loss and gradients finite, the bf16 loss within ``BF16_RTOL`` of fp32's.
2. ``ExactDecoder`` on the GPU against ``HNSWDecoder`` on the CPU at V=100k, D=300 (random
   unit table; queries are rows plus noise, calibrated as in ``benchmarks/decode.py``):
   queries/s and recall@1 against exact search.
3. The head cost at V=128k (``benchmarks/head_cost.py``'s variants on the GPU): ms/step and
   peak extra CUDA memory of one forward + backward, and their ratios to Linear + CE.
4. A 2-step Lightning fit + validation on CUDA with ``DecodingCallback`` (fp32, bf16-mixed) and
   the same fit under ``strategy="fsdp"`` (FSDP1, one process: it refuses a CPU, see
   docs/lightning.md), whose validation metrics must equal the plain fit's.

Writes ``benchmarks/results/gpu.md``. Without CUDA it prints why, writes nothing and exits 0.

Run: ``python benchmarks/gpu.py``.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results" / "gpu.md"
# bf16 keeps 8 bits of mantissa (relative step 2^-8 ≈ 0.4%); a mean over 8k tokens averages
# the rounding, so 1% of the fp32 loss is a loose bound that still catches a wrong reduction.
BF16_RTOL = 1e-2
LOSS_TOKENS, LOSS_HIDDEN, LOSS_DIM, LOSS_VOCAB = 8192, 1024, 256, 32768
DECODE_VOCAB, DECODE_DIM, DECODE_QUERIES = 100_000, 300, 8192
HEAD_TOKENS, HEAD_HIDDEN, HEAD_DIM, HEAD_VOCAB = 8192, 1024, 300, 131_072
HEAD_VARIANTS = ("floor", "cosine", "vMF", "InfoNCE, 1024 sampled", "softmax CE")
RUNS = 10


def timed(step: Callable[[], Any], runs: int = RUNS) -> float:
    """Median milliseconds of ``step`` after one warm-up, the GPU synchronised around each run."""
    step()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def bench_losses(lines: list[str]) -> None:
    from lightning_contloss.losses import CosineLoss, InfoNCELoss, VMFLoss
    from lightning_contloss.targets import TargetEmbeddings

    losses: dict[str, Callable[[TargetEmbeddings], Any]] = {
        "cosine": lambda t: CosineLoss(t),
        "vMF": lambda t: VMFLoss(t),
        # A fresh seeded CPU generator per loss: fp32 and bf16 see the same negatives.
        "InfoNCE, 1024 sampled": lambda t: InfoNCELoss(
            t, num_negatives=1024, generator=torch.Generator().manual_seed(0)
        ),
    }
    g = torch.Generator().manual_seed(0)
    targets = TargetEmbeddings.random(LOSS_VOCAB, LOSS_DIM, seed=1).cuda()
    h = torch.randn(LOSS_TOKENS, LOSS_HIDDEN, generator=g).cuda()
    ids = torch.randint(0, LOSS_VOCAB, (LOSS_TOKENS,), generator=g).cuda()
    head = torch.nn.Linear(LOSS_HIDDEN, LOSS_DIM).cuda()
    lines += [
        f"## Losses: N={LOSS_TOKENS}, H={LOSS_HIDDEN}, D={LOSS_DIM}, V={LOSS_VOCAB}, forward + backward",
        "",
        f"bf16 autocast vs fp32: |loss_bf16 − loss_fp32| ≤ {BF16_RTOL} · |loss_fp32| required.",
        "",
        "| loss | fp32 loss | bf16 loss | rel. diff | fp32 ms | bf16 ms | finite | within tol. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    failures = []
    for name, make in losses.items():
        values, ms, finite = {}, {}, True
        for precision in ("fp32", "bf16"):
            loss_fn = make(targets).cuda()

            def step(loss_fn: Any = loss_fn, precision: str = precision) -> torch.Tensor:
                head.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    value: torch.Tensor = loss_fn(head(h), ids)
                value.backward()
                return value

            value = step()
            grads = [p.grad for p in head.parameters()]
            finite &= bool(torch.isfinite(value)) and all(gr is not None and bool(gr.isfinite().all()) for gr in grads)
            values[precision] = float(value)
            loss_fn = make(targets).cuda()  # reseeded negatives: the timed runs redraw them each step
            ms[precision] = timed(lambda loss_fn=loss_fn, precision=precision: step(loss_fn, precision))
        rel = abs(values["bf16"] - values["fp32"]) / max(abs(values["fp32"]), 1e-12)
        ok = rel <= BF16_RTOL
        if not (ok and finite):
            failures.append(name)
        lines.append(
            f"| {name} | {values['fp32']:.5f} | {values['bf16']:.5f} | {rel:.2e} | {ms['fp32']:.2f} | "
            f"{ms['bf16']:.2f} | {finite} | {ok} |"
        )
    lines += ["", f"Losses failing a check: {', '.join(failures) or 'none'}.", ""]


class _Synced:
    """A decoder whose ``query`` waits for the GPU, so wall-clock timing sees the whole search."""

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder

    def query(self, x: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        out: tuple[torch.Tensor, torch.Tensor] = self.decoder.query(x, k)
        torch.cuda.synchronize()
        return out


def bench_decode(lines: list[str]) -> None:
    from decode import noisy_queries, throughput

    from lightning_contloss.decoding import ExactDecoder, HNSWDecoder, knn_recall
    from lightning_contloss.targets import TargetEmbeddings

    threads = os.cpu_count() or 1
    table = TargetEmbeddings.random(DECODE_VOCAB, DECODE_DIM, seed=0).weight
    gpu_exact = ExactDecoder(table.cuda(), "cosine")
    # Calibrated on the GPU's exact search: the noise at which the row's own id is top-1 half the time.
    queries, scale, own = noisy_queries(table, gpu_exact, DECODE_QUERIES, 0.5, seed=1, calib=1024)
    start = time.perf_counter()
    hnsw = HNSWDecoder(table, "cosine", M=16, ef_construction=200, ef=64, num_threads=threads)
    build_s = time.perf_counter() - start
    gpu_q = queries.cuda()
    gpu_qps, _, exact_ids, exact_scores = throughput(_Synced(gpu_exact), gpu_q, repeat=3)
    hnsw_qps, hnsw_cpu_qps, _, hnsw_scores = throughput(hnsw, queries, repeat=3)
    recall = knn_recall(hnsw_scores, exact_scores.cpu())
    lines += [
        f"## Decoding: V={DECODE_VOCAB:,}, D={DECODE_DIM} random, {DECODE_QUERIES} queries, k=1",
        "",
        f"Queries: rows + noise scale {scale:.3f} (own id top-1 for {own:.2f} of them). HNSW: M=16, "
        f"ef_construction=200, ef=64, {threads} threads, built in {build_s:.1f} s.",
        "",
        "| decoder | queries/s | recall@1 vs exact | ratio to HNSW |",
        "|---|---|---|---|",
        f"| ExactDecoder, GPU | {gpu_qps:,.0f} | 1.0000 | {gpu_qps / hnsw_qps:.2f}× |",
        f"| HNSWDecoder, CPU | {hnsw_qps:,.0f} (CPU time: {hnsw_cpu_qps:,.0f}) | {recall:.4f} | 1.00× |",
        "",
    ]
    assert exact_ids.shape == (DECODE_QUERIES, 1)


def bench_head_cost(lines: list[str]) -> None:
    from head_cost import build

    steps = {v: build(v, HEAD_TOKENS, HEAD_HIDDEN, HEAD_DIM, HEAD_VOCAB, device="cuda") for v in HEAD_VARIANTS}
    memory = {}
    for variant, step in steps.items():
        step()  # warm-up: lazy init and the gradient buffers' first allocation
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        memory[variant] = (torch.cuda.max_memory_allocated() - before) / 2**20
    # Interleaved, run by run, so a change of clock or load hits every variant alike.
    times: dict[str, list[float]] = {v: [] for v in HEAD_VARIANTS}
    for _ in range(RUNS):
        for variant, step in steps.items():
            times[variant].append(timed(step, runs=1))
    ms = {v: statistics.median(t) for v, t in times.items()}
    ce_ms, ce_mib = ms["softmax CE"], memory["softmax CE"]
    lines += [
        f"## Head cost: N={HEAD_TOKENS}, H={HEAD_HIDDEN}, D={HEAD_DIM}, V={HEAD_VOCAB:,}, forward + backward",
        "",
        "Median of 10 interleaved runs; memory is the peak CUDA allocation above what was allocated before the step.",
        "",
        "| variant | ms/step | × floor | CE time / this | peak extra MiB | % of CE's memory |",
        "|---|---|---|---|---|---|",
    ]
    for v in HEAD_VARIANTS:
        lines.append(
            f"| {v} | {ms[v]:.2f} | {ms[v] / ms['floor']:.2f} | {ce_ms / ms[v]:.2f}× | {memory[v]:.0f} | "
            f"{100 * memory[v] / ce_mib:.1f}% |"
        )
    lines.append("")


def bench_fit(lines: list[str]) -> None:
    import lightning as L
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_contloss import ContinuousOutputMixin, DecodingCallback, ExactDecoder, TargetEmbeddings
    from lightning_contloss.losses import CosineLoss

    vocab, hidden, dim = 4096, 128, 64

    class Body(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, hidden)
            self.lm_head = nn.Linear(hidden, vocab)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.lm_head(torch.relu(self.embed(x)))
            return out

    class LM(ContinuousOutputMixin, L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = Body()
            self.replace_softmax_head("model.lm_head", TargetEmbeddings.random(vocab, dim, seed=0), CosineLoss())

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.continuous_loss(self.model(batch[0]), batch[1])

        def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
            return self.continuous_validation_step(self.model(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (256, 16), generator=g)
    data = DataLoader(TensorDataset(x, (x * 7 + 3) % vocab), batch_size=64)

    def fit(**kwargs: Any) -> tuple[dict[str, float], float, str]:
        L.seed_everything(0, verbose=False)
        lm, cb = LM(), DecodingCallback(k=5)
        trainer = L.Trainer(
            accelerator="cuda",
            devices=1,
            max_steps=2,
            limit_val_batches=2,
            num_sanity_val_steps=0,
            callbacks=[cb],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            **kwargs,
        )
        start = time.perf_counter()
        trainer.fit(lm, data, data)
        seconds = time.perf_counter() - start
        assert isinstance(cb.decoder, ExactDecoder) and cb.decoder.device.type == "cuda", cb.decoder
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        return values, seconds, repr(cb.decoder)

    plain, plain_s, decoder = fit()
    bf16, bf16_s, _ = fit(precision="bf16-mixed")
    fsdp, fsdp_s, _ = fit(strategy="fsdp")
    keys = ("val/loss", "val/acc@1", "val/acc@5", "val/mean_cos", "val/vmf_ppl")
    fsdp_ok = all(abs(plain[k] - fsdp[k]) <= 1e-4 * max(1.0, abs(plain[k])) for k in keys)
    bf16_ok = all(math.isfinite(v) for v in bf16.values())
    lines += [
        f"## Lightning fit on CUDA: V={vocab}, D={dim}, 2 steps + 2 validation batches, DecodingCallback(k=5)",
        "",
        f'Decoder: `{decoder}` ("auto" picks exact search for a table on the GPU).',
        "",
        "| run | seconds | " + " | ".join(keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    runs = (("fp32", plain, plain_s), ("bf16-mixed", bf16, bf16_s), ("fsdp (1 GPU)", fsdp, fsdp_s))
    for name, values, seconds in runs:
        lines.append(f"| {name} | {seconds:.1f} | " + " | ".join(f"{values[k]:.5f}" for k in keys) + " |")
    lines += [
        "",
        f"FSDP metrics equal the plain fit's (rel. 1e-4): {fsdp_ok}. bf16-mixed metrics finite: {bf16_ok}.",
        "",
    ]


def main() -> int:
    if not torch.cuda.is_available():
        print(
            f"benchmarks/gpu.py: no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
            "nothing was run and no results were written. Run it on a machine with a GPU."
        )
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in the loss comparison
    start = time.perf_counter()
    lines = [
        "# GPU paths",
        "",
        f"Device: {torch.cuda.get_device_name()}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
        f"Python {platform.python_version()}; {os.cpu_count()} CPU cores; "
        f"load average (1 min) at start: {os.getloadavg()[0]:.2f}.",
        "",
        f"Command: `python {' '.join(['benchmarks/gpu.py', *sys.argv[1:]])}`",
        "",
    ]
    for section in (bench_losses, bench_decode, bench_head_cost, bench_fit):
        section_start = time.perf_counter()
        section(lines)
        print(f"{section.__name__}: {time.perf_counter() - section_start:.1f} s", flush=True)
    lines.append(
        f"Total {time.perf_counter() - start:.0f} s; load average (1 min) at the end: {os.getloadavg()[0]:.2f}."
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
