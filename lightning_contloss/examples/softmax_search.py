"""Greedy and beam search over a softmax model's log-probabilities: the baseline of the continuous searches.

The model is ``step_fn(prefix_ids [B', t]) -> log_probs [B', V]``, the same prefix
contract as :func:`~lightning_contloss.decoding.greedy_decode` (finished rows are left out,
so ``B'`` shrinks), or a :class:`~lightning_contloss.decoding.StatefulStep` returning
log-probabilities (e.g. :class:`~lightning_contloss.integrations.TransformerDecoderStep`
with a log-softmax head); the results are the same :class:`~lightning_contloss.decoding.SearchResult`.
Beam search ranks finished hypotheses by ``sum log p / lp(len)`` with the package's
:func:`~lightning_contloss.decoding.length_penalty_factor`, so softmax and continuous
beams normalise length the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_contloss._arguments import int_arg
from lightning_contloss.decoding.search import LengthNorm, SearchResult, StepFn, length_penalty_factor
from lightning_contloss.decoding.search_state import StepRunner

__all__ = ["softmax_beam_search", "softmax_greedy_decode"]


def _log_probs(runner: StepRunner, prefix: Tensor, t: int) -> Tensor:
    out = runner(prefix, t)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != prefix.shape[0]:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"step_fn must return log-probabilities [B, V] for a prefix {tuple(prefix.shape)}, got {got}")
    if bool(torch.isnan(out).any()):
        raise ValueError("step_fn returned NaN log-probabilities; the model diverged")
    return out.detach().to(torch.float64)


def _start(start: Tensor, max_len: int) -> Tensor:
    if not isinstance(start, Tensor) or start.dim() not in (1, 2) or start.is_floating_point():
        raise ValueError("start must be a [B] or [B, t] tensor of token ids")
    int_arg(max_len, "max_len", 1, rule="an int >= 1 (tokens to generate)")
    return (start if start.dim() == 2 else start[:, None]).long()


@torch.no_grad()
def softmax_greedy_decode(
    step_fn: StepFn, start: Tensor, max_len: int, eos_id: int | None, pad_id: int = 0
) -> SearchResult:
    """Take the most probable token at each step until ``eos_id`` (kept) or ``max_len`` tokens.

    Args:
        step_fn: ``prefix_ids [B', t] -> log_probs [B', V]``, or a ``StatefulStep``.
        start: ``[B, t0]`` (or ``[B]``) start tokens.
        max_len: most tokens to generate.
        eos_id: the id that ends a sequence, or ``None``.
        pad_id: filler after a sequence's end.

    Example:
        >>> logp = torch.log_softmax(torch.eye(4) * 5, dim=-1)  # token i is followed by i
        >>> step = lambda prefix: logp[(prefix[:, -1] + 1).clamp(max=3)]
        >>> softmax_greedy_decode(step, torch.tensor([[0], [2]]), max_len=5, eos_id=3).ids.tolist()
        [[1, 2, 3], [3, 0, 0]]
    """
    start = _start(start, max_len)
    batch = start.shape[0]
    out = torch.full((batch, max_len), pad_id, dtype=torch.int64, device=start.device)
    scores = torch.zeros(batch, dtype=torch.float64, device=start.device)
    lengths = torch.zeros(batch, dtype=torch.int64, device=start.device)
    runner = StepRunner(step_fn)
    rows = torch.arange(batch, device=start.device)
    for t in range(max_len):
        if rows.numel() == 0:
            break
        best, tok = _log_probs(runner, torch.cat([start[rows], out[rows, :t]], dim=1), t).max(dim=-1)
        out[rows, t] = tok
        scores[rows] += best
        lengths[rows] += 1
        if eos_id is not None and bool((tok == eos_id).any()):
            go_on = tok != eos_id
            runner.keep(go_on.nonzero().flatten(), rows.numel())
            rows = rows[go_on]
    return SearchResult(out[:, : int(lengths.max()) if batch else 0], scores, lengths)


@torch.no_grad()
def softmax_beam_search(
    step_fn: StepFn,
    start: Tensor,
    beam_size: int,
    max_len: int,
    eos_id: int | None,
    *,
    length_penalty: float = 1.0,
    length_norm: LengthNorm = "plain",
    pad_id: int = 0,
) -> SearchResult:
    """Beam search over log-probabilities, ``beam_size`` hypotheses per sequence.

    At each step every live hypothesis is extended by every token; per sequence the best
    ``2 × beam_size`` extensions by summed log-probability are taken in order: one ending in
    ``eos_id`` finishes if it ranks among the first ``beam_size``, and the best ``beam_size``
    others continue. Finished hypotheses (and the live ones at ``max_len``) compete by
    ``sum / lp(len)``, len counting EOS. Log-probabilities are ``<= 0``, so a sequence stops
    once no live hypothesis can beat its best finished one.

    Args:
        step_fn: ``prefix_ids [B', t] -> log_probs [B', V]``, or a ``StatefulStep``.
        start: ``[B, t0]`` (or ``[B]``) start tokens.
        beam_size: hypotheses kept per sequence.
        max_len: most tokens to generate.
        eos_id: the id that ends a hypothesis, or ``None``.
        length_penalty: α of the length penalty.
        length_norm: ``"plain"`` (``len^α``) or ``"gnmt"`` (``((5 + len) / 6)^α``).
        pad_id: filler after a sequence's end.

    Example:
        >>> logp = torch.log_softmax(torch.eye(4) * 5, dim=-1)
        >>> step = lambda prefix: logp[(prefix[:, -1] + 1).clamp(max=3)]
        >>> softmax_beam_search(step, torch.tensor([[0]]), beam_size=2, max_len=5, eos_id=3).ids.tolist()
        [[1, 2, 3]]
    """
    start = _start(start, max_len)
    beam_size = int_arg(beam_size, "beam_size", 1)
    lp_final = float(length_penalty_factor(max_len, length_penalty, length_norm))
    batch, k, dev = start.shape[0], beam_size, start.device
    neg = float("-inf")
    hyp = torch.full((batch, k, max_len), pad_id, dtype=torch.int64, device=dev)
    hyp_score = torch.full((batch, k), neg, dtype=torch.float64, device=dev)
    hyp_score[:, 0] = 0.0
    won = torch.full((batch,), neg, dtype=torch.float64, device=dev)
    won_ids = torch.full((batch, max_len), pad_id, dtype=torch.int64, device=dev)
    won_len = torch.zeros(batch, dtype=torch.int64, device=dev)
    settled = torch.zeros(batch, dtype=torch.bool, device=dev)
    runner = StepRunner(step_fn)
    live = torch.isfinite(hyp_score)
    for t in range(max_len):
        # Rows of the model's state follow live.nonzero(): sequence-major, then beam slot.
        b, w = live.nonzero(as_tuple=True)
        if b.numel() == 0:
            break
        logp = _log_probs(runner, torch.cat([start[b], hyp[b, w, :t]], dim=1), t)
        vocab = logp.shape[1]
        total = torch.full((batch, k, vocab), neg, dtype=torch.float64, device=dev)
        total[b, w] = hyp_score[b, w, None] + logp
        n_top = min(2 * k, k * vocab)
        top, flat = total.view(batch, -1).topk(n_top, dim=1)
        tok, parent = flat % vocab, flat // vocab
        grown = hyp.gather(1, parent[..., None].expand(-1, -1, max_len)).clone()
        grown[:, :, t] = tok
        ok = torch.isfinite(top)
        ends = ok & (tok == eos_id) if eos_id is not None else torch.zeros_like(ok)
        goes_on = ok & ~ends
        keep = torch.argsort((~goes_on).to(torch.int8), dim=1, stable=True)[:, :k]
        kept = goes_on.gather(1, keep)
        finishing = ends & (torch.arange(n_top, device=dev) < k)
        if t == max_len - 1:
            finishing = finishing | torch.zeros_like(ok).scatter_(1, keep, kept)
        lp = float(length_penalty_factor(t + 1, length_penalty, length_norm))
        ranked = torch.where(finishing & ~settled[:, None], top / lp, torch.full_like(top, neg))
        cand, arg = ranked.max(dim=1)
        better = cand > won
        won = torch.where(better, cand, won)
        won_ids[better] = grown[better, arg[better]]
        won_len[better] = t + 1
        hyp_score = top.gather(1, keep).masked_fill(~kept, neg)
        hyp = grown.gather(1, keep[..., None].expand(-1, -1, max_len))
        settled |= ~torch.isfinite(hyp_score).any(dim=1)
        # A live sum only falls; its best reachable ranking is sum / the largest lp still ahead.
        settled |= hyp_score.max(dim=1).values / max(lp, lp_final) <= won
        live = torch.isfinite(hyp_score) & ~settled[:, None]
        if runner.stateful and t + 1 < max_len and bool(live.any()):
            # Each new slot extends hypothesis parent[keep] of its sequence: its row in the state.
            row_of = torch.full((batch, k), -1, dtype=torch.int64, device=dev)
            row_of[b, w] = torch.arange(b.numel(), device=dev)
            source = parent.gather(1, keep)
            nb, nw = live.nonzero(as_tuple=True)
            runner.keep(row_of[nb, source[nb, nw]], b.numel())
    length = int(won_len.max()) if batch else 0
    return SearchResult(won_ids[:, :length], won, won_len)
