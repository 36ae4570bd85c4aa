"""Greedy and beam search over a continuous-output model, with candidates from a k-NN decoder.

The model is given in one of two forms.

**Prefix form**, ``step_fn(prefix_ids) -> pred``:

* ``prefix_ids`` is a ``[B', t]`` int64 tensor on ``start``'s device: the start tokens
  followed by the tokens generated so far, one row per live sequence (greedy) or live
  hypothesis (beam). ``B'`` changes from call to call: finished rows are left out, so rows
  are not aligned with the original batch; ``t`` grows by one per call.
* it returns ``pred [B', D]``, the predicted embedding of the next token of each row
  (for vMF, unnormalised: its norm is the concentration κ).

``step_fn`` must be a pure function of the prefix (recompute from the whole prefix, or key
any cache on it), so each step costs a pass over the whole prefix.

**Stateful form**, a :class:`~lightning_contloss.decoding.search_state.StatefulStep`: called
once with the start tokens and no state (an encoder runs here, once per source), then with the
last generated token of each live row and the state it returned, which the search reorders
whenever rows end or beams are re-ranked. With a KV cache each step costs one position
(:mod:`lightning_contloss.integrations.torch_transformer` has one for ``nn.TransformerDecoder``).

Token scores come from :func:`~lightning_contloss.functional.scoring.token_log_scores`:
``"cosine"`` gives cos - 1 per token (the negative cosine loss), ``"vmf"`` the vMF
log-density log C_m(κ) + pred·ê_w. :class:`~lightning_contloss.decoding.search_rules.SearchRules`
(``rules=``) adds an EOS bias, a minimum length and repetition blocking.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from lightning_contloss._arguments import ArgumentTypeError, check_allocation, int_arg, is_real
from lightning_contloss.decoding.base import Decoder
from lightning_contloss.decoding.search_rules import SearchRules
from lightning_contloss.decoding.search_state import StatefulStep, StepRunner
from lightning_contloss.functional.scoring import TOKEN_SCORES, TokenScore, token_log_scores

__all__ = ["LengthNorm", "SearchResult", "StepFn", "beam_search", "greedy_decode", "length_penalty_factor"]

StepFn = Callable[[Tensor], Tensor] | StatefulStep
LengthNorm = Literal["plain", "gnmt"]


class SearchResult(NamedTuple):
    """The output of a search.

    Attributes:
        ids: ``[B, L]`` int64 generated tokens (the start tokens are not repeated), EOS
            included, then ``pad_id`` up to the longest sequence of the batch.
        scores: ``[B]`` float64: for greedy search the summed token scores, for beam search
            the summed token scores divided by the length penalty (the ranking score); token
            scores include what ``rules`` add (EOS bias, repetition penalty).
        lengths: ``[B]`` int64 number of generated tokens, EOS included.
    """

    ids: Tensor
    scores: Tensor
    lengths: Tensor


def _finite_number(name: str, value: object) -> float:
    # bool is an int subclass, but True as a penalty is a mistake, not 1.0.
    if not is_real(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _optional_int(value: object, name: str, what: str) -> int | None:
    """``value`` as an int (Python, numpy or 0-d torch) or ``None``; else a ``ValueError``: it must be ``what``."""
    if value is None:
        return None
    try:
        return int_arg(value, name)
    except ValueError:  # int_arg's wrong-type error is a ValueError too
        raise ArgumentTypeError(f"{name} must be {what}, got {value!r}") from None


class _Checked(NamedTuple):
    start: Tensor  # [B, t0] int64
    max_len: int
    eos_id: int | None
    pad_id: int


_INT64 = (-(2**63), 2**63 - 1)
# The first size of the output buffers; they double as the search goes on, up to max_len, so a
# huge max_len costs nothing until the tokens are there.
_FIRST_BUFFER = 64


def _room(buffer: Tensor, t: int, max_len: int, pad: int) -> Tensor:
    """``buffer [..., L]`` with room for token ``t`` (``L > t``): doubled and padded with ``pad`` when full."""
    width = buffer.shape[-1]
    if t < width:
        return buffer
    grown = buffer.new_full((*buffer.shape[:-1], min(max_len, 2 * width)), pad)
    grown[..., :width] = buffer
    return grown


def length_penalty_factor(length: int | Tensor, alpha: float, norm: LengthNorm = "plain") -> Tensor:
    """The divisor of a hypothesis' summed score: ``len^α`` or GNMT's ``((5 + len) / 6)^α``.

    Args:
        length: hypothesis length(s), ``>= 1``.
        alpha: α, a finite number.
        norm: ``"plain"`` or ``"gnmt"``.

    Example:
        >>> length_penalty_factor(4, 1.0).item(), round(length_penalty_factor(7, 1.0, "gnmt").item(), 3)
        (4.0, 2.0)
    """
    alpha = _finite_number("length_penalty (alpha)", alpha)
    n = torch.as_tensor(length, dtype=torch.float64)
    if not bool((n >= 1).all()):
        raise ValueError(f"length must be >= 1 (tokens generated, EOS included), got {length!r}")
    if norm == "plain":
        return n.pow(alpha)
    if norm == "gnmt":
        return ((5 + n) / 6).pow(alpha)
    raise ValueError(f"length_norm must be 'plain' or 'gnmt', got {norm!r}")


def _check_common(
    step_fn: StepFn,
    start: Tensor,
    max_len: int,
    eos_id: int | None,
    decoder: Decoder,
    score: str,
    pad_id: int | None,
    rules: SearchRules | None,
) -> _Checked:
    if not isinstance(step_fn, StatefulStep) and not callable(step_fn):
        raise ValueError(
            "step_fn must be a callable prefix_ids [B, t] -> pred [B, D] or a StatefulStep, "
            f"got {type(step_fn).__name__}"
        )
    if not isinstance(decoder, Decoder):
        raise ValueError(
            f"decoder must be a Decoder (ExactDecoder, HNSWDecoder, RerankedDecoder), got {type(decoder).__name__}"
        )
    if not isinstance(start, Tensor) or start.dim() not in (1, 2) or start.is_floating_point() or start.is_complex():
        shape = tuple(start.shape) if isinstance(start, Tensor) else type(start).__name__
        raise ValueError(f"start must be a [B] or [B, t] tensor of token ids, got {shape}")
    if start.dtype == torch.bool:
        raise ValueError("start must hold integer token ids, got a bool tensor")
    if start.dim() == 2 and start.shape[1] == 0:
        raise ValueError(
            f"start has shape {tuple(start.shape)}: no start token; pass at least one per row, e.g. a BOS column"
        )
    if start.is_meta:
        raise ValueError("start is on the meta device, so it has no token ids; pass real ids")
    max_len = int_arg(max_len, "max_len", 1, rule="an int >= 1 (tokens to generate)")
    if score not in TOKEN_SCORES:
        raise ValueError(f"score must be one of {TOKEN_SCORES}, got {score!r}")
    vocab = len(decoder)
    eos_what = f"an id in 0..{vocab - 1} or None"
    eos_id = _optional_int(eos_id, "eos_id", eos_what)
    if eos_id is not None:
        if not 0 <= eos_id < vocab:
            raise ValueError(f"eos_id must be {eos_what}, got {eos_id!r}")
        if not bool(decoder.returnable[eos_id]):
            raise ValueError(
                f"eos_id {eos_id} is never returned by the decoder (it is special, excluded or all-zero), so "
                "no sequence could end; unmark it as special or pass eos_id=None"
            )
    if rules is not None and not isinstance(rules, SearchRules):
        raise ValueError(f"rules must be a SearchRules or None, got {type(rules).__name__}")
    if rules is not None and eos_id is None and (rules.scores_eos or rules.min_length):
        raise ValueError("rules.eos_bias and rules.min_length act on EOS; pass eos_id, or leave them unset")
    pad_id = _optional_int(pad_id, "pad_id", "an int or None")
    if pad_id is not None and not _INT64[0] <= pad_id <= _INT64[1]:
        raise ValueError(f"pad_id must fit in int64 (the ids' dtype), got {pad_id}")
    if pad_id is None:
        pad_id = eos_id if eos_id is not None else 0
    return _Checked((start if start.dim() == 2 else start[:, None]).long(), max_len, eos_id, pad_id)


def _checked_pred(pred: Any, rows: int, dim: int, what: str) -> Tensor:
    if not isinstance(pred, Tensor) or tuple(pred.shape) != (rows, dim):
        got = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
        raise ValueError(f"step_fn must return the next-token predictions [B, D] = {[rows, dim]} for {what}, got {got}")
    if not pred.is_floating_point():
        raise ValueError(f"step_fn must return floating-point predictions, got {pred.dtype}")
    if not bool(torch.isfinite(pred).all()):
        bad = (~torch.isfinite(pred).all(dim=-1)).nonzero().flatten()[:10].tolist()
        raise ValueError(
            f"step_fn returned NaN or inf predictions for rows {bad} of {what}; "
            "the model diverged or was fed an id it cannot embed"
        )
    return pred.detach()


class _Steps(StepRunner):
    """A :class:`StepRunner` whose outputs are checked as next-token predictions ``[N, D]``."""

    def __init__(self, step_fn: StepFn, dim: int) -> None:
        super().__init__(step_fn)
        self.dim = dim

    def __call__(self, history: Tensor, t: int) -> Tensor:
        out = super().__call__(history, t)
        if not self.stateful:
            what = f"a prefix of shape {list(history.shape)}"
        else:
            what = "the start tokens" if t == 0 else f"step {t} (last tokens [{history.shape[0]}, 1])"
        return _checked_pred(out, history.shape[0], self.dim, what)


def _candidate_scores(pred: Tensor, ids: Tensor, decoder: Decoder, score: TokenScore) -> Tensor:
    table = decoder.table
    emb = table[ids.to(table.device)].to(device=pred.device)
    return token_log_scores(pred, emb, score).to(torch.float64)


def _candidates(
    pred: Tensor,
    history: Tensor,
    t: int,
    decoder: Decoder,
    score: TokenScore,
    k: int,
    rules: SearchRules | None,
    eos_id: int | None,
    need: int,
    count: int,
) -> tuple[Tensor, Tensor]:
    """The candidates ``[N, C]`` of each prediction and their scores after the rules.

    Rules only lower scores (EOS, the one token they may raise, is always a candidate then),
    and a token outside the k nearest scores at most the k-th's raw score. So while a row has
    fewer than ``need`` allowed candidates at or above that floor, a token not queried could
    still beat them: all rows are queried again with twice as many neighbours, up to ``count``
    (the decoder's returnable tokens). With an exact decoder the result is then what a search over the whole
    vocabulary would pick.
    """
    device = history.device
    k = min(k, count)
    while True:
        ids, _ = decoder.query(pred, k)
        ids = ids.to(device)
        scores = _candidate_scores(pred, ids, decoder, score).to(device)
        if rules is None:
            return ids, scores
        floor = scores.min(dim=1, keepdim=True).values
        if rules.scores_eos and eos_id is not None:
            has_eos = (ids == eos_id).any(dim=1)
            eos = torch.full((ids.shape[0], 1), eos_id, dtype=ids.dtype, device=device)
            eos_scores = _candidate_scores(pred, eos, decoder, score).to(device)
            # EOS among the neighbours already competes; a second copy would fill two beam slots.
            eos_scores = eos_scores.masked_fill(has_eos[:, None], -math.inf)
            ids, scores = torch.cat([ids, eos], dim=1), torch.cat([scores, eos_scores], dim=1)
        scores = rules.apply(scores, ids, history, t, eos_id)
        if k >= count or not rules.blocks:
            return ids, scores
        sure = ((scores >= floor) & torch.isfinite(scores)).sum(dim=1) >= min(need, count)
        if bool(sure.all()):
            return ids, scores
        k = min(2 * k, count)


@torch.no_grad()
def greedy_decode(
    step_fn: StepFn,
    start: Tensor,
    max_len: int,
    eos_id: int | None,
    decoder: Decoder,
    *,
    score: TokenScore = "cosine",
    pad_id: int | None = None,
    rules: SearchRules | None = None,
    num_candidates: int | None = None,
) -> SearchResult:
    """Generate by taking the best-scoring candidate token at each step, for a batch of sequences.

    Without ``rules`` the candidate is the decoder's nearest token. With ``rules``, each step
    scores ``num_candidates`` nearest tokens (and EOS, when ``rules.eos_bias`` is set), applies
    the rules and takes the best; where a token outside those could still win (the nearest
    were ruled out or penalised), the step queries more neighbours, so with an exact decoder
    the pick is the best allowed token of the whole vocabulary. A row with no allowed token
    stops. A sequence stops after
    it emits ``eos_id`` (kept in the output) or after ``max_len`` tokens; finished sequences
    are not passed to ``step_fn`` again.

    Args:
        step_fn: ``prefix_ids [B', t] -> pred [B', D]``, or a
            :class:`~lightning_contloss.decoding.search_state.StatefulStep` (see the module docs).
        start: ``[B, t0]`` (or ``[B]``) start tokens, e.g. BOS.
        max_len: most tokens to generate.
        eos_id: the id that ends a sequence, or ``None``.
        decoder: an ``ExactDecoder`` / ``HNSWDecoder`` over the target table.
        score: token score summed into ``SearchResult.scores``: ``"cosine"`` or ``"vmf"``.
        pad_id: filler after a sequence's end (default ``eos_id``, else 0).
        rules: a :class:`~lightning_contloss.decoding.search_rules.SearchRules`, or ``None``.
        num_candidates: nearest tokens scored per step (default 1, or 4 when ``rules`` can rule
            out a candidate).

    Example:
        >>> from lightning_contloss.decoding import ExactDecoder
        >>> table = torch.eye(4)  # ids 0..3; 3 is EOS
        >>> step = lambda prefix: table[(prefix[:, -1] + 1).clamp(max=3)]
        >>> out = greedy_decode(step, torch.tensor([[0], [2]]), max_len=5, eos_id=3, decoder=ExactDecoder(table))
        >>> out.ids.tolist(), out.lengths.tolist()
        ([[1, 2, 3], [3, 3, 3]], [3, 1])
    """
    start, max_len, eos_id, pad = _check_common(step_fn, start, max_len, eos_id, decoder, score, pad_id, rules)
    if num_candidates is None:
        cands = 4 if rules is not None and rules.blocks else 1
    else:
        cands = int_arg(num_candidates, "num_candidates", 1)
    # The returnable count bounds every re-query; it is fixed for the search, so read it once.
    count = int(decoder.returnable.sum())
    batch, device = start.shape[0], start.device
    out = torch.full((batch, min(max_len, _FIRST_BUFFER)), pad, dtype=torch.int64, device=device)
    scores = torch.zeros(batch, dtype=torch.float64, device=device)
    lengths = torch.zeros(batch, dtype=torch.int64, device=device)
    steps = _Steps(step_fn, decoder.dim)
    rows = torch.arange(batch, device=device)
    for t in range(max_len):
        if rows.numel() == 0:
            break
        out = _room(out, t, max_len, pad)
        history = torch.cat([start[rows], out[rows, :t]], dim=1)
        pred = steps(history, t)
        ids, cand_scores = _candidates(pred, history, t, decoder, score, cands, rules, eos_id, 1, count)
        best, pick = cand_scores.max(dim=1)
        tok = ids.gather(1, pick[:, None])[:, 0]
        ok = torch.isfinite(best)
        out[rows[ok], t] = tok[ok]
        scores[rows[ok]] += best[ok]
        lengths[rows[ok]] += 1
        go_on = ok & (tok != eos_id) if eos_id is not None else ok
        if not bool(go_on.all()):
            steps.keep(go_on.nonzero().flatten(), rows.numel())
            rows = rows[go_on]
    return SearchResult(out[:, : int(lengths.max()) if batch else 0], scores, lengths)


@torch.no_grad()
def beam_search(
    step_fn: StepFn,
    start: Tensor,
    beam_size: int,
    max_len: int,
    eos_id: int | None,
    decoder: Decoder,
    *,
    length_penalty: float = 1.0,
    length_norm: LengthNorm = "plain",
    score: TokenScore = "cosine",
    num_candidates: int | None = None,
    pad_id: int | None = None,
    rules: SearchRules | None = None,
) -> SearchResult:
    """Beam search for a batch of sequences, scoring tokens by the loss's log-likelihood.

    Each live hypothesis proposes the ``num_candidates`` nearest tokens of its prediction
    (from ``decoder``); each candidate adds its token score (``"cosine"``: cos - 1,
    ``"vmf"``: log C_m(κ) + pred·ê_w) to the hypothesis' sum. Per sequence, the best
    ``2 × beam_size`` extensions are ranked by summed score: an extension ending in
    ``eos_id`` among the first ``beam_size`` finishes, and the best ``beam_size`` others
    continue. Finished hypotheses, and the live ones after ``max_len`` tokens, are compared
    by ``sum / lp(len)`` with ``lp = len^α`` (``length_norm="plain"``) or GNMT's
    ``((5 + len) / 6)^α`` (``"gnmt"``), α = ``length_penalty``; len counts EOS. The default
    α = 1 with ``"plain"`` ranks by mean token score; α = 0 by the plain sum (favouring short
    outputs, as every cosine token score is <= 0). With ``score="cosine"`` a sequence stops as
    soon as no live hypothesis can still beat its best finished one (exact, because cosine
    token scores are <= 0, so a sum never rises); vMF log-densities have no such bound, so
    vMF search runs until every hypothesis has ended or ``max_len`` tokens. ``rules`` apply to
    every candidate (a positive ``eos_bias`` lifts the bound, so the search then runs on too).

    Args:
        step_fn: ``prefix_ids [B', t] -> pred [B', D]``, or a
            :class:`~lightning_contloss.decoding.search_state.StatefulStep` (see the module docs).
        start: ``[B, t0]`` (or ``[B]``) start tokens.
        beam_size: hypotheses kept per sequence.
        max_len: most tokens to generate.
        eos_id: the id that ends a hypothesis, or ``None``.
        decoder: an ``ExactDecoder`` / ``HNSWDecoder`` over the target table.
        length_penalty: α.
        length_norm: ``"plain"`` or ``"gnmt"``.
        score: ``"cosine"`` or ``"vmf"``, matching the training loss.
        num_candidates: k-NN candidates per hypothesis (default ``beam_size``).
        pad_id: filler after a sequence's end (default ``eos_id``, else 0).
        rules: a :class:`~lightning_contloss.decoding.search_rules.SearchRules`, or ``None``.

    Returns:
        the best hypothesis of each sequence; ``scores`` are its ranking scores.

    Example:
        >>> from lightning_contloss.decoding import ExactDecoder
        >>> table = torch.eye(4)  # ids 0..3; 3 is EOS
        >>> step = lambda prefix: table[(prefix[:, -1] + 1).clamp(max=3)]
        >>> out = beam_search(step, torch.tensor([[0]]), beam_size=2, max_len=5, eos_id=3, decoder=ExactDecoder(table))
        >>> out.ids.tolist(), out.scores.tolist()
        ([[1, 2, 3]], [0.0])
    """
    start, max_len, eos_id, pad = _check_common(step_fn, start, max_len, eos_id, decoder, score, pad_id, rules)
    length_penalty = _finite_number("length_penalty", length_penalty)
    beam_size = int_arg(beam_size, "beam_size", 1)
    if length_norm not in ("plain", "gnmt"):
        raise ValueError(f"length_norm must be 'plain' or 'gnmt', got {length_norm!r}")
    # lp is monotone in the length, so its extremes are at 1 and max_len; 0 or inf there would
    # turn every ranking score into 0 or -inf, an arbitrary winner.
    lp_max = float(length_penalty_factor(max_len, length_penalty, length_norm))
    if not 0.0 < lp_max < math.inf:
        raise ValueError(
            f"length_penalty={length_penalty} makes the length penalty {lp_max} at max_len={max_len} "
            "(it overflows float64); use a length_penalty of moderate size, e.g. in [0, 2]"
        )
    count = int(decoder.returnable.sum())
    cands = min(beam_size if num_candidates is None else int_arg(num_candidates, "num_candidates", 1), count)

    batch, width, device = start.shape[0], beam_size, start.device
    # Per sequence and beam slot, each step holds about three int64 or float64 copies of the token
    # buffer and of the candidates; refuse a beam that cannot fit rather than be killed filling it.
    per_slot = 3 * (min(max_len, _FIRST_BUFFER) + 2 * cands) * 8
    check_allocation(
        batch * width * per_slot,
        f"beam_search with beam_size={beam_size} for {batch} sequences",
        "a smaller beam_size (or fewer sequences per call)",
    )
    inf = float("-inf")
    tokens = torch.full((batch, width, min(max_len, _FIRST_BUFFER)), pad, dtype=torch.int64, device=device)
    beam = torch.full((batch, width), inf, dtype=torch.float64, device=device)
    beam[:, 0] = 0.0  # one live hypothesis (the start) per sequence
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    # Only cosine scores have a sign bound (<= 0) that makes early stopping exact.
    bounded = score == "cosine" and (rules is None or rules.keeps_scores_nonpositive)
    best_score = torch.full((batch,), inf, dtype=torch.float64, device=device)
    best_tokens = torch.full((batch, tokens.shape[-1]), pad, dtype=torch.int64, device=device)
    best_len = torch.zeros(batch, dtype=torch.int64, device=device)

    steps = _Steps(step_fn, decoder.dim)
    live = torch.isfinite(beam)
    for t in range(max_len):
        if not bool(live.any()):
            break
        tokens, best_tokens = _room(tokens, t, max_len, pad), _room(best_tokens, t, max_len, pad)
        # Rows of the model's state follow live.nonzero(): sequence-major, then beam slot.
        b_idx, w_idx = live.nonzero(as_tuple=True)
        history = torch.cat([start[b_idx], tokens[b_idx, w_idx, :t]], dim=1)
        pred = steps(history, t)
        ids, step_scores = _candidates(pred, history, t, decoder, score, cands, rules, eos_id, cands, count)
        n_cand = ids.shape[1]
        total = torch.full((batch, width, n_cand), inf, dtype=torch.float64, device=device)
        total[b_idx, w_idx] = beam[b_idx, w_idx, None] + step_scores
        cand_tok = torch.full((batch, width, n_cand), pad, dtype=torch.int64, device=device)
        cand_tok[b_idx, w_idx] = ids

        n_top = min(2 * width, width * n_cand)
        top_s, top_pos = total.view(batch, -1).topk(n_top, dim=1)
        top_tok = cand_tok.view(batch, -1).gather(1, top_pos)
        top_src = top_pos // n_cand
        ext = tokens.gather(1, top_src[..., None].expand(-1, -1, tokens.shape[-1])).clone()
        ext[:, :, t] = top_tok
        finite = torch.isfinite(top_s)
        is_eos = finite & (top_tok == eos_id) if eos_id is not None else torch.zeros_like(finite)
        rank = torch.arange(n_top, device=device)
        ends = is_eos & (rank < width)
        # The best `width` non-EOS extensions continue; a stable sort keeps them in rank order.
        cont = finite & ~is_eos
        order = torch.argsort((~cont).to(torch.int8), dim=1, stable=True)[:, :width]
        keep = cont.gather(1, order)
        if t == max_len - 1:
            chosen = torch.zeros_like(cont).scatter_(1, order, keep)
            ends = ends | chosen
        lp = length_penalty_factor(t + 1, length_penalty, length_norm).item()
        norm = torch.where(ends & ~done[:, None], top_s / lp, torch.full_like(top_s, inf))
        cand_best, arg = norm.max(dim=1)
        better = cand_best > best_score
        best_score = torch.where(better, cand_best, best_score)
        best_tokens[better] = ext[better, arg[better]]
        best_len[better] = t + 1

        # n_top >= width, so there are always `width` slots; those without a valid extension die.
        beam = top_s.gather(1, order).masked_fill(~keep, inf)
        tokens = ext.gather(1, order[..., None].expand(-1, -1, ext.shape[-1]))
        done |= ~torch.isfinite(beam).any(dim=1)
        if bounded and t + 1 < max_len:
            # Cosine token scores are <= 0, so a live sum only falls; its best future ranking
            # score is sum / (largest lp still reachable). Stop once no live beam can win.
            lp_max = max(lp, length_penalty_factor(max_len, length_penalty, length_norm).item())
            done |= (beam.max(dim=1).values / lp_max) <= best_score
        previous = live
        live = torch.isfinite(beam) & ~done[:, None]
        if t + 1 < max_len and bool(live.any()):
            # Each new slot extends hypothesis top_src[order] of its sequence; find that
            # hypothesis' row in the state, so the state follows the beams.
            row_of = torch.full((batch, width), -1, dtype=torch.int64, device=device)
            row_of[b_idx, w_idx] = torch.arange(b_idx.numel(), device=device)
            source = top_src.gather(1, order)
            nb, nw = live.nonzero(as_tuple=True)
            steps.keep(row_of[nb, source[nb, nw]], int(previous.sum()))

    length = int(best_len.max()) if batch else 0
    return SearchResult(best_tokens[:, :length], best_score, best_len)
