"""Stateful (KV-cached) search against the prefix-recompute path, on an encoder-decoder Transformer.

The decoder is an ``nn.TransformerDecoder`` the size of the translation example's (d_model 256,
3 layers, 4 heads, FF 1024) with random weights (speed does not depend on training), over a
source of 30 tokens; the head regresses D=256 embeddings decoded by exact search over V=10,000
target rows. Both paths generate exactly ``--tokens`` tokens (no EOS), and the script checks
they produce the same tokens before it times anything. Timed: greedy at batch 1 and 32, beam
4 at batch 1 and 8; repetitions alternate between the two paths; the median is reported.

Run: ``taskset -c 0 python benchmarks/stateful_search.py --threads 1`` (writes
``benchmarks/results/stateful_search.md``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_contloss import beam_search, greedy_decode
from lightning_contloss.decoding import ExactDecoder
from lightning_contloss.integrations import TransformerDecoderStep

RESULTS = Path(__file__).resolve().parent / "results" / "stateful_search.md"
D_MODEL, LAYERS, HEADS, FF, SRC_LEN, V, D = 256, 3, 4, 1024, 30, 10_000, 256


class Body(nn.Module):
    """The decoder of an encoder-decoder Transformer with an output head to ``out`` features."""

    def __init__(self, vocab: int = V, out: int = D) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, D_MODEL)
        self.pos = nn.Embedding(512, D_MODEL)
        layer = nn.TransformerDecoderLayer(D_MODEL, HEADS, FF, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, LAYERS, norm=nn.LayerNorm(D_MODEL))
        self.head = nn.Linear(D_MODEL, out)

    def embed(self, ids: Tensor, offset: int = 0) -> Tensor:
        return self.emb(ids) * D_MODEL**0.5 + self.pos(torch.arange(offset, offset + ids.shape[1]))

    def prefix_step(self, memory: Tensor) -> Any:
        def step(prefix: Tensor) -> Tensor:
            rows, tgt = prefix[:, 0], prefix[:, 1:]
            mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
            h = self.decoder(self.embed(tgt), memory[rows], tgt_mask=mask, tgt_is_causal=True)
            return self.head(h[:, -1])

        return step


def run(body: Body, dec: ExactDecoder, method: str, batch: int, tokens: int, stateful: bool) -> tuple[float, Tensor]:
    g = torch.Generator().manual_seed(batch)
    memory = torch.randn(batch, SRC_LEN, D_MODEL, generator=g)
    bos = torch.ones(batch, 1, dtype=torch.long)
    if stateful:
        step: Any = TransformerDecoderStep(body.decoder, body.embed, body.head, memory)
        start = bos
    else:
        # the prefix path carries the source row as its first token (as a prefix-only model must)
        step, start = body.prefix_step(memory), torch.cat([torch.arange(batch)[:, None], bos], dim=1)
    t0 = time.perf_counter()
    with torch.no_grad():
        if method == "greedy":
            out = greedy_decode(step, start, tokens, None, dec)
        else:
            out = beam_search(step, start, 4, tokens, None, dec)
    return time.perf_counter() - t0, out.ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=30)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    body = Body().eval()
    dec = ExactDecoder(torch.randn(V, D))
    cases = [("greedy", 1), ("greedy", 32), ("beam 4", 1), ("beam 4", 8)]
    rows = []
    loads = []
    for method, batch in cases:
        m = "greedy" if method == "greedy" else "beam"
        _, a = run(body, dec, m, batch, args.tokens, False)
        _, b = run(body, dec, m, batch, args.tokens, True)
        same = a.tolist() == b.tolist()
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.reps):
            for stateful in (False, True):
                times[stateful].append(run(body, dec, m, batch, args.tokens, stateful)[0])
        loads.append(os.getloadavg()[0])
        slow, fast = statistics.median(times[False]), statistics.median(times[True])
        rows.append((method, batch, slow, fast, slow / fast, same))
        print(f"{method} batch {batch}: prefix {slow:.3f} s, stateful {fast:.3f} s, ×{slow / fast:.2f}, same {same}")
    lines = [
        "# Stateful (KV-cached) search vs prefix recompute",
        "",
        f"Command: `taskset -c 0 python benchmarks/stateful_search.py --threads {args.threads} --tokens {args.tokens} "
        f"--reps {args.reps}`",
        "",
        f"Decoder: `nn.TransformerDecoder`, d_model {D_MODEL}, {LAYERS} layers, {HEADS} heads, FF {FF}, pre-norm, "
        f"random weights; source {SRC_LEN} tokens; head to D={D}, exact search over V={V:,}. Each search generates "
        f"exactly {args.tokens} tokens (no EOS). Median of {args.reps} alternating repetitions per path. "
        f"Machine: {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); 1-minute load average "
        f"during the runs {min(loads):.2f}–{max(loads):.2f}.",
        "",
        "| search | batch | prefix recompute s | stateful s | speed-up | same tokens |",
        "|---|---|---|---|---|---|",
    ]
    for method, batch, slow, fast, ratio, same in rows:
        lines.append(f"| {method} | {batch} | {slow:.3f} | {fast:.3f} | {ratio:.2f}× | {'yes' if same else 'NO'} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
