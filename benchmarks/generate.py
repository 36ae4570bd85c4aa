"""Generation speed: continuous heads (exact and HNSW search) against a softmax head, same body.

The body is the decoder of ``benchmarks/stateful_search.py`` (an ``nn.TransformerDecoder``,
d_model 256, 3 layers, random weights: speed does not depend on training) run with the
KV-cached :class:`~lightning_contloss.integrations.TransformerDecoderStep`, over a source of 30
tokens. Heads: softmax (``Linear(256, V)``, greedy = argmax, beam = log-softmax top-k) and
continuous (``Linear(256, 50)`` decoded over the real GloVe-6B-50d rows, first V of them, by
``ExactDecoder`` or ``HNSWDecoder`` with the package's ``greedy_decode`` / ``beam_search``).
Every search generates exactly ``--tokens`` tokens (no EOS). Timed: greedy and beam 4 at batch
1 and 32, V = 10,000 and 400,000; repetitions alternate between the heads; the median is kept.
Tokens/s counts generated tokens of all sequences (beam: of the returned best hypotheses).

Run: ``taskset -c 0 python benchmarks/generate.py --threads 1`` (writes ``benchmarks/results/generate.md``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from decode import load_glove  # noqa: E402
from stateful_search import D_MODEL, SRC_LEN, Body  # noqa: E402

from lightning_contloss import beam_search, greedy_decode  # noqa: E402
from lightning_contloss.decoding import Decoder, ExactDecoder, HNSWDecoder, reorder_state  # noqa: E402
from lightning_contloss.integrations import TransformerDecoderStep  # noqa: E402

RESULTS = HERE / "results" / "generate.md"


@torch.no_grad()
def softmax_search(step: TransformerDecoderStep, bos: Tensor, tokens: int, beam: int) -> Tensor:
    """Greedy (beam 1) or beam search over full softmax logits, exactly ``tokens`` tokens."""
    logits, state = step.step(bos, None)
    batch = bos.shape[0]
    if beam == 1:
        out = []
        for t in range(tokens):
            tok = logits.argmax(dim=-1)
            out.append(tok)
            if t + 1 < tokens:
                logits, state = step.step(tok[:, None], state)
        return torch.stack(out, dim=1)
    vocab = logits.shape[-1]
    scores, tok = F.log_softmax(logits.float(), dim=-1).topk(beam, dim=-1)  # [B, W]
    seqs = tok[:, :, None]
    state = reorder_state(state, torch.arange(batch).repeat_interleave(beam))
    for _ in range(1, tokens):
        logits, state = step.step(seqs[:, :, -1].reshape(-1, 1), state)
        total = scores[:, :, None] + F.log_softmax(logits.float(), dim=-1).view(batch, beam, vocab)
        scores, idx = total.view(batch, -1).topk(beam, dim=-1)
        src, tok = idx // vocab, idx % vocab
        seqs = torch.cat([seqs.gather(1, src[:, :, None].expand(-1, -1, seqs.shape[2])), tok[:, :, None]], dim=2)
        state = reorder_state(state, (torch.arange(batch)[:, None] * beam + src).flatten())
    return seqs[:, 0]


def run_softmax(body: Body, memory: Tensor, bos: Tensor, tokens: int, width: int) -> None:
    softmax_search(TransformerDecoderStep(body.decoder, body.embed, body.head, memory), bos, tokens, width)


def run_continuous(body: Body, dec: Decoder, memory: Tensor, bos: Tensor, tokens: int, width: int) -> None:
    step = TransformerDecoderStep(body.decoder, body.embed, body.head, memory)
    if width == 1:
        greedy_decode(step, bos, tokens, None, dec)
    else:
        beam_search(step, bos, width, tokens, None, dec)


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 400_000])
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[tuple[Any, ...]] = []
    loads: list[float] = []
    builds: dict[int, float] = {}
    for vocab in args.sizes:
        table, source = load_glove(vocab)
        torch.manual_seed(0)
        soft, cont = Body(vocab, vocab).eval(), Body(vocab, table.shape[1]).eval()
        cont.load_state_dict({k: v for k, v in soft.state_dict().items() if not k.startswith("head")}, strict=False)
        t0 = time.perf_counter()
        hnsw = HNSWDecoder(table, num_threads=args.threads)
        builds[vocab] = time.perf_counter() - t0
        decoders: dict[str, Decoder] = {"exact": ExactDecoder(table), "HNSW": hnsw}
        for batch in (1, 32):
            memory = torch.randn(batch, SRC_LEN, D_MODEL, generator=torch.Generator().manual_seed(batch))
            bos = torch.ones(batch, 1, dtype=torch.long)
            for method, width in (("greedy", 1), ("beam 4", 4)):
                job = (memory, bos, args.tokens, width)
                runs = {"softmax": lambda job=job, body=soft: run_softmax(body, *job)}
                for name, dec in decoders.items():
                    runs[name] = lambda dec=dec, job=job, body=cont: run_continuous(body, dec, *job)
                for fn in runs.values():
                    fn()  # warm-up
                times: dict[str, list[float]] = {name: [] for name in runs}
                for _ in range(args.reps):
                    for name, fn in runs.items():
                        times[name].append(timed(fn))
                loads.append(os.getloadavg()[0])
                med = {name: statistics.median(ts) for name, ts in times.items()}
                tps = {name: batch * args.tokens / s for name, s in med.items()}
                rows.append((vocab, batch, method, tps["softmax"], tps["exact"], tps["HNSW"]))
                ratios = ", ".join(f"{name} {tps[name]:.0f} (×{tps[name] / tps['softmax']:.2f})" for name in decoders)
                print(f"V={vocab:,} batch {batch} {method}: softmax {tps['softmax']:.0f} tok/s, {ratios}", flush=True)
    lines = [
        "# Generation speed: continuous (exact, HNSW) vs softmax heads",
        "",
        f"Command: `taskset -c 0 python benchmarks/generate.py --threads {args.threads} --tokens {args.tokens} "
        f"--reps {args.reps}`",
        "",
        f"Body: `nn.TransformerDecoder` (d_model {D_MODEL}, 3 layers, 4 heads, FF 1024, random weights) with the "
        f"KV-cached `TransformerDecoderStep`, source {SRC_LEN} tokens. Softmax head `Linear(256, V)`; continuous "
        f"head `Linear(256, 50)` decoded over the first V rows of {source} (exact, or HNSW with the package's "
        f"defaults: build {', '.join(f'{builds[v]:.0f} s at V={v:,}' for v in builds)}). Exactly {args.tokens} "
        f"tokens per sequence, no EOS. Median of {args.reps} alternating repetitions. Machine: "
        f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); 1-minute load average "
        f"{min(loads):.2f}–{max(loads):.2f}.",
        "",
        "| V | batch | search | softmax tok/s | exact tok/s | HNSW tok/s | exact / softmax | HNSW / softmax |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for vocab, batch, method, s, e, h in rows:
        cells = f"{s:,.0f} | {e:,.0f} | {h:,.0f} | {e / s:.2f}× | {h / s:.2f}×"
        lines.append(f"| {vocab:,} | {batch} | {method} | {cells} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
