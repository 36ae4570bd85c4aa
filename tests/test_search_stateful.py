"""Stateful search (StatefulStep, reorder_state) and the KV-cached nn.TransformerDecoder step.

The reference is always the prefix form: the same model written as a pure function of the
prefix must give the same tokens, for greedy and beam search, with EOS and ragged endings.
"""

from __future__ import annotations

import itertools
from collections import namedtuple
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from lightning_contloss import SearchRules, StatefulStep, beam_search, greedy_decode
from lightning_contloss.decoding import ExactDecoder, reorder_state
from lightning_contloss.integrations import TransformerDecoderStep

V, D, EOS = 12, 6, 11


class SourceModel:
    """A model whose next prediction depends on its source and on every token so far.

    pred = normalize(src_vec + 0.7 * sum of token vectors with decay), the source index riding
    as the first start token in the prefix form, and held in the state in the stateful form.
    """

    def __init__(self, seed: int, sources: int = 8) -> None:
        g = torch.Generator().manual_seed(seed)
        self.src = torch.randn(sources, D, generator=g, dtype=torch.float64)
        self.tok = torch.randn(V, D, generator=g, dtype=torch.float64)
        self.table = torch.randn(V, D, generator=g, dtype=torch.float64)
        # EOS near the sum of a few steps, so some rows end early and some run on.
        self.table[EOS] = self.src.mean(0) + 0.5 * self.tok.mean(0)

    def prefix(self, prefix: Tensor) -> Tensor:
        src = self.src[prefix[:, 0]]
        acc = torch.zeros_like(src)
        for t in range(1, prefix.shape[1]):
            acc = 0.8 * acc + self.tok[prefix[:, t]]
        return F.normalize(src + 0.7 * acc, dim=-1)

    def stateful(self, reorder: Any = None) -> StatefulStep:
        def step(ids: Tensor, state: Any) -> tuple[Tensor, Any]:
            if state is None:
                src, acc = self.src[ids[:, 0]], torch.zeros(ids.shape[0], D, dtype=torch.float64)
                for t in range(1, ids.shape[1]):
                    acc = 0.8 * acc + self.tok[ids[:, t]]
            else:
                src, acc = state
                acc = 0.8 * acc + self.tok[ids[:, -1]]
            return F.normalize(src + 0.7 * acc, dim=-1), (src, acc)

        return StatefulStep(step, reorder)


def starts(n: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, 8, (n, 1), generator=g)
    # a second start token (a BOS-like id), so the stateful first call sees [B, 2]
    return torch.cat([src, torch.full((n, 1), 10)], dim=1)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), beam=st.integers(1, 4), alpha=st.sampled_from([0.0, 1.0]))
def test_stateful_and_prefix_search_give_identical_tokens(seed: int, beam: int, alpha: float) -> None:
    model = SourceModel(seed)
    dec = ExactDecoder(model.table)
    start = starts(5, seed)
    a = greedy_decode(model.prefix, start, 9, EOS, dec)
    b = greedy_decode(model.stateful(), start, 9, EOS, dec)
    assert a.ids.tolist() == b.ids.tolist() and a.lengths.tolist() == b.lengths.tolist()
    assert torch.allclose(a.scores, b.scores)
    a = beam_search(model.prefix, start, beam, 9, EOS, dec, length_penalty=alpha, num_candidates=3)
    b = beam_search(model.stateful(), start, beam, 9, EOS, dec, length_penalty=alpha, num_candidates=3)
    assert a.ids.tolist() == b.ids.tolist() and a.lengths.tolist() == b.lengths.tolist()
    assert torch.allclose(a.scores, b.scores)


def test_a_wrong_reorder_is_caught_by_the_equivalence() -> None:
    """The equivalence above fails if the search (or a reorder) mixes rows: it can fail."""

    def reversed_rows(state: Any, index: Tensor) -> Any:
        return reorder_state(state, index.flip(0))

    differs = 0
    for seed in range(10):
        model = SourceModel(seed)
        dec = ExactDecoder(model.table)
        start = starts(5, seed)
        a = beam_search(model.prefix, start, 3, 9, EOS, dec, num_candidates=3)
        b = beam_search(model.stateful(reversed_rows), start, 3, 9, EOS, dec, num_candidates=3)
        differs += a.ids.tolist() != b.ids.tolist()
    assert differs >= 5


def test_the_stateful_step_sees_start_once_then_one_token_per_row() -> None:
    model = SourceModel(0)
    seen: list[tuple[int, ...]] = []
    inner = model.stateful()

    def spy(ids: Tensor, state: Any) -> tuple[Tensor, Any]:
        seen.append((*tuple(ids.shape), state is None))
        return inner.step(ids, state)

    start = starts(4, 0)
    greedy_decode(StatefulStep(spy), start, 6, EOS, ExactDecoder(model.table))
    assert seen[0] == (4, 2, True)
    assert all(shape[1] == 1 and not fresh for *shape, fresh in seen[1:])
    # rows only shrink (finished rows leave)
    rows = [s[0] for s in seen]
    assert rows == sorted(rows, reverse=True)


def test_reorder_state_structures() -> None:
    Pair = namedtuple("Pair", "a b")
    state = {"x": [torch.arange(3), (torch.arange(6).view(3, 2), None)], "n": 7, "p": Pair(torch.arange(3), "s")}
    out = reorder_state(state, torch.tensor([2, 0]))
    assert out["x"][0].tolist() == [2, 0]
    assert out["x"][1][0].tolist() == [[4, 5], [0, 1]] and out["x"][1][1] is None
    assert out["n"] == 7 and isinstance(out["p"], Pair) and out["p"].a.tolist() == [2, 0] and out["p"].b == "s"

    class Cache:
        def __init__(self) -> None:
            self.rows = torch.arange(3)

        def reorder_cache(self, index: Tensor) -> None:
            self.rows = self.rows[index]

    cache = Cache()
    assert reorder_state(cache, torch.tensor([1, 1])).rows.tolist() == [1, 1]
    with pytest.raises(TypeError, match="pass StatefulStep"):
        reorder_state(object(), torch.tensor([0]))


def test_stateful_step_bad_returns_are_named() -> None:
    model = SourceModel(0)
    dec = ExactDecoder(model.table)
    with pytest.raises(ValueError, match=r"must return \(pred, state\)"):
        greedy_decode(StatefulStep(lambda ids, s: model.prefix(ids)), starts(2, 0), 3, EOS, dec)
    with pytest.raises(ValueError, match=r"\[B, D\] = \[2, 6\] for the start tokens"):
        greedy_decode(StatefulStep(lambda ids, s: (torch.zeros(3, D), s)), starts(2, 0), 3, EOS, dec)
    with pytest.raises(TypeError, match="override step"):  # refused when made, before any search
        StatefulStep()
    with pytest.raises(ValueError, match="reorder must be a callable"):
        StatefulStep(lambda i, s: (i, s), reorder=3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- SearchRules


def brute_greedy(model: SourceModel, start: Tensor, max_len: int, rules: SearchRules) -> list[list[int]]:
    """Greedy search over every token with the rules written out plainly, row by row."""
    out = []
    for row in start:
        hist = row.tolist()
        gen: list[int] = []
        for t in range(max_len):
            pred = model.prefix(torch.tensor([hist]))[0]
            cos = F.cosine_similarity(pred[None], model.table, dim=-1) - 1
            best, best_id = -float("inf"), None
            for w in range(V):
                s = float(cos[w])
                if w == EOS:
                    s += rules.eos_bias or 0.0
                    if t + 1 < rules.min_length:
                        continue
                if w in hist:
                    s -= rules.repetition_penalty
                n = rules.no_repeat_ngram_size
                if n and len(hist) >= n - 1:
                    tail = hist[len(hist) - n + 1 :]
                    if any(hist[i : i + n - 1] == tail and hist[i + n - 1] == w for i in range(len(hist) - n + 1)):
                        continue
                if s > best:
                    best, best_id = s, w
            if best_id is None:
                break
            gen.append(best_id)
            hist.append(best_id)
            if best_id == EOS:
                break
        out.append(gen)
    return out


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 10_000),
    bias=st.sampled_from([0.0, 0.3, -0.2]),
    min_len=st.integers(0, 4),
    ngram=st.sampled_from([0, 2, 3]),
    penalty=st.sampled_from([0.0, 0.1]),
)
def test_greedy_rules_match_a_brute_force_search(
    seed: int, bias: float, min_len: int, ngram: int, penalty: float
) -> None:
    model = SourceModel(seed)
    rules = SearchRules(eos_bias=bias, min_length=min_len, no_repeat_ngram_size=ngram, repetition_penalty=penalty)
    start = starts(4, seed)
    got = greedy_decode(model.stateful(), start, 8, EOS, ExactDecoder(model.table), rules=rules, num_candidates=V)
    want = brute_greedy(model, start, 8, rules)
    assert [row[:n] for row, n in zip(got.ids.tolist(), got.lengths.tolist(), strict=True)] == want
    # few candidates: ruled-out neighbours are replaced by querying more, so the result is the same
    few = greedy_decode(model.prefix, start, 8, EOS, ExactDecoder(model.table), rules=rules, num_candidates=1)
    assert few.ids.tolist() == got.ids.tolist()


def test_beam_rules_hold_in_every_output() -> None:
    for seed in range(6):
        model = SourceModel(seed)
        dec = ExactDecoder(model.table)
        start = starts(6, seed)
        rules = SearchRules(min_length=3, no_repeat_ngram_size=2)
        out = beam_search(model.stateful(), start, 3, 10, EOS, dec, rules=rules)
        for src, row, n in zip(start.tolist(), out.ids.tolist(), out.lengths.tolist(), strict=True):
            gen = row[:n]
            assert EOS not in gen[:2]
            grams = list(itertools.pairwise([*src, *gen]))
            assert len(grams) == len(set(grams))


def test_a_large_eos_bias_ends_every_sequence_at_min_length() -> None:
    model = SourceModel(1)
    dec = ExactDecoder(model.table)
    for search in (
        lambda r: greedy_decode(model.stateful(), starts(5, 1), 9, EOS, dec, rules=r),
        lambda r: beam_search(model.stateful(), starts(5, 1), 3, 9, EOS, dec, rules=r),
    ):
        out = search(SearchRules(eos_bias=10.0, min_length=3))
        assert out.lengths.tolist() == [3] * 5
        assert (out.ids[:, 2] == EOS).all()
        plain = search(None)
        assert plain.lengths.float().mean() > 3


def test_eos_scored_every_step_without_bias_changes_nothing_for_exact_greedy() -> None:
    model = SourceModel(2)
    dec = ExactDecoder(model.table)
    a = greedy_decode(model.prefix, starts(6, 2), 9, EOS, dec)
    b = greedy_decode(model.prefix, starts(6, 2), 9, EOS, dec, rules=SearchRules(eos_bias=0.0))
    assert a.ids.tolist() == b.ids.tolist()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eos_bias": float("nan")}, "eos_bias must be a finite number"),
        ({"eos_bias": True}, "eos_bias must be a finite number"),
        ({"min_length": -1}, "min_length must be an int >= 0"),
        ({"min_length": 2.5}, "min_length must be an int >= 0"),
        ({"no_repeat_ngram_size": 1}, "use n >= 2"),
        ({"repetition_penalty": -0.1}, "repetition_penalty must be a finite number >= 0"),
    ],
)
def test_bad_rules_are_rejected(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SearchRules(**kwargs)


def test_rules_on_eos_need_an_eos_id() -> None:
    model = SourceModel(0)
    with pytest.raises(ValueError, match="pass eos_id"):
        greedy_decode(model.prefix, starts(2, 0), 3, None, ExactDecoder(model.table), rules=SearchRules(min_length=2))
    with pytest.raises(ValueError, match="rules must be a SearchRules"):
        greedy_decode(model.prefix, starts(2, 0), 3, EOS, ExactDecoder(model.table), rules={"min_length": 2})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- TransformerDecoderStep


class TinySeq2Seq(nn.Module):
    def __init__(self, norm_first: bool, activation: str, bias: bool = True, final_norm: bool = True) -> None:
        super().__init__()
        d = 16
        self.emb = nn.Embedding(V, d)
        self.pos = nn.Embedding(32, d)
        layer = nn.TransformerDecoderLayer(
            d, 4, 32, dropout=0.1, batch_first=True, norm_first=norm_first, activation=activation, bias=bias
        )
        self.decoder = nn.TransformerDecoder(layer, 3, norm=nn.LayerNorm(d) if final_norm else None)
        self.out = nn.Linear(d, D)

    def embed(self, ids: Tensor, offset: int = 0) -> Tensor:
        pos = torch.arange(offset, offset + ids.shape[1])
        return self.emb(ids) * 4.0 + self.pos(pos)

    def prefix_step(self, memory: Tensor, pad: Tensor | None) -> Any:
        def step(prefix: Tensor) -> Tensor:
            # prefix rows carry their source row as the first token
            rows, tgt = prefix[:, 0], prefix[:, 1:]
            t = tgt.shape[1]
            mask = nn.Transformer.generate_square_subsequent_mask(t)
            h = self.decoder(
                self.embed(tgt),
                memory[rows],
                tgt_mask=mask,
                tgt_is_causal=True,
                memory_key_padding_mask=None if pad is None else pad[rows],
            )
            return self.out(h[:, -1])

        return step


def memory_and_pad(batch: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(batch, 7, 16, generator=g)
    lengths = torch.randint(2, 8, (batch,), generator=g)
    pad = torch.arange(7)[None, :] >= lengths[:, None]
    return memory, pad


@pytest.mark.parametrize(
    ("norm_first", "activation", "bias", "final_norm"),
    [(True, "relu", True, True), (False, "gelu", True, True), (True, "gelu", False, False)],
)
def test_cached_decoder_step_matches_the_full_decoder(
    norm_first: bool, activation: str, bias: bool, final_norm: bool
) -> None:
    torch.manual_seed(0)
    model = TinySeq2Seq(norm_first, activation, bias, final_norm).eval()
    memory, pad = memory_and_pad(5, 0)
    full = model.prefix_step(memory, pad)
    step = TransformerDecoderStep(model.decoder, model.embed, model.out, memory, pad)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, V, (5, 9), generator=g)
    with torch.no_grad():
        pred, state = step.step(tokens[:, :2], None)
        rows = torch.arange(5)[:, None]
        assert torch.allclose(pred, full(torch.cat([rows, tokens[:, :2]], 1)), atol=1e-5)
        for t in range(2, 9):
            pred, state = step.step(tokens[:, t : t + 1], state)
            assert torch.allclose(pred, full(torch.cat([rows, tokens[:, : t + 1]], 1)), atol=1e-5), t


def test_cached_decoder_search_gives_the_tokens_of_the_recompute_path() -> None:
    torch.manual_seed(3)
    model = TinySeq2Seq(True, "relu").eval()
    memory, pad = memory_and_pad(6, 3)
    table = torch.randn(V, D)
    dec = ExactDecoder(table)
    bos = torch.full((6, 1), 10)
    prefix_start = torch.cat([torch.arange(6)[:, None], bos], dim=1)
    for search in ("greedy", "beam"):
        step = TransformerDecoderStep(model.decoder, model.embed, model.out, memory, pad)
        if search == "greedy":
            a = greedy_decode(model.prefix_step(memory, pad), prefix_start, 12, EOS, dec)
            b = greedy_decode(step, bos, 12, EOS, dec)
        else:
            a = beam_search(model.prefix_step(memory, pad), prefix_start, 4, 12, EOS, dec)
            b = beam_search(step, bos, 4, 12, EOS, dec)
        assert a.ids.tolist() == b.ids.tolist(), search
        assert torch.allclose(a.scores, b.scores, atol=1e-5)


def test_cached_decoder_step_refuses_what_it_cannot_run() -> None:
    model = TinySeq2Seq(True, "relu")
    memory, pad = memory_and_pad(2, 0)
    step = TransformerDecoderStep(model.decoder, model.embed, model.out, memory, pad)
    with pytest.raises(ValueError, match="training mode"):
        step.step(torch.zeros(2, 1, dtype=torch.long), None)
    model.eval()
    with pytest.raises(ValueError, match="search starts 3 sequences but memory holds 2"):
        step.step(torch.zeros(3, 1, dtype=torch.long), None)
    with pytest.raises(ValueError, match=r"memory must be the encoder output \[B, S, 16\]"):
        TransformerDecoderStep(model.decoder, model.embed, model.out, torch.zeros(2, 7, 8))
    with pytest.raises(ValueError, match="memory_key_padding_mask must be a bool"):
        TransformerDecoderStep(model.decoder, model.embed, model.out, memory, pad.float())
    seq_first = nn.TransformerDecoder(nn.TransformerDecoderLayer(16, 4, 32), 1)
    with pytest.raises(ValueError, match="batch_first=True"):
        TransformerDecoderStep(seq_first, model.embed, model.out, memory)
    with pytest.raises(ValueError, match=r"must be an nn\.TransformerDecoder"):
        TransformerDecoderStep(nn.Linear(2, 2), model.embed, model.out, memory)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- calibrate_eos_bias


def brute_bias_errors(margins: list[float], positive: list[bool], bias: float) -> int:
    return sum((bias > m) != p for m, p in zip(margins, positive, strict=True))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 60))
def test_calibrated_eos_bias_is_the_best_threshold(seed: int, n: int) -> None:
    from lightning_contloss.decoding import calibrate_eos_bias

    g = torch.Generator().manual_seed(seed)
    table = F.normalize(torch.randn(V, D, generator=g, dtype=torch.float64), dim=-1)
    pred = torch.randn(n, D, generator=g, dtype=torch.float64)
    target = torch.randint(0, V, (n,), generator=g)
    target[torch.rand(n, generator=g) < 0.3] = EOS
    dec = ExactDecoder(table)
    fit = calibrate_eos_bias(pred, target, EOS, dec)
    # the margins by brute force over every other token
    cos = F.cosine_similarity(pred[:, None], table[None], dim=-1)
    other = cos.clone()
    other[:, EOS] = -2
    margins = (other.max(1).values - cos[:, EOS]).tolist()
    positive = (target == EOS).tolist()
    best = min(brute_bias_errors(margins, positive, b) for b in [*margins, *(x + 1e-9 for x in margins), -9.0, 9.0])
    assert fit.errors_after == best == brute_bias_errors(margins, positive, fit.bias)
    assert fit.errors_before == brute_bias_errors(margins, positive, 0.0)
    assert fit.errors_after <= fit.errors_before and fit.positions == n


def test_calibrated_eos_bias_makes_greedy_end_where_the_reference_does() -> None:
    from lightning_contloss.decoding import calibrate_eos_bias

    g = torch.Generator().manual_seed(0)
    table = F.normalize(torch.randn(V, D, generator=g), dim=-1)
    # predictions at sentence ends lean toward EOS but a word is nearer: EOS never wins unbiased
    word = table[3]
    ends = F.normalize(word + 0.8 * table[EOS] + 0.05 * torch.randn(50, D, generator=g), dim=-1)
    # mid-sentence predictions sit on other words (4..9), clear of both
    mid_ids = torch.randint(4, 10, (200,), generator=g)
    mids = F.normalize(table[mid_ids] + 0.05 * torch.randn(200, D, generator=g), dim=-1)
    pred = torch.cat([ends, mids])
    target = torch.cat([torch.full((50,), EOS), mid_ids])
    fit = calibrate_eos_bias(pred, target, EOS, ExactDecoder(table), ignore_index=-100)
    assert fit.eos_recall_before < 0.1 and fit.eos_recall_after > 0.9 and fit.bias > 0
    with pytest.raises(ValueError, match="target must be the reference ids"):
        calibrate_eos_bias(pred, target[:3], EOS, ExactDecoder(table))
    with pytest.raises(ValueError, match="no positions left"):
        calibrate_eos_bias(pred, torch.full_like(target, -100), EOS, ExactDecoder(table), ignore_index=-100)
    with pytest.raises(ValueError, match="pred has dim 4"):
        calibrate_eos_bias(pred[:, :4], target, EOS, ExactDecoder(table))


def test_a_reorder_that_returns_none_is_named_not_a_restart() -> None:
    # Issue 25 item 14: reorder(state, index) -> None made the next step see state None, the
    # first call's signal, so the search silently restarted every row from its start tokens.
    model = SourceModel(0)
    dec = ExactDecoder(model.table)

    def in_place(state: Any, index: Tensor) -> None:  # reorders nothing and forgets to return
        return None

    for search in (
        lambda step: greedy_decode(step, starts(4, 1), 6, EOS, dec),
        lambda step: beam_search(step, starts(4, 1), 3, 6, EOS, dec),
    ):
        with pytest.raises(TypeError, match=r"reorder\(state, index\) returned None.*return the reordered state"):
            search(model.stateful(reorder=in_place))


def test_a_state_of_none_may_stay_none() -> None:
    # A step that keeps no state returns None itself: reordering None gives None, and that is fine.
    model = SourceModel(0)
    step = StatefulStep(lambda ids, state: (model.table[(ids[:, -1] + 1) % V], None))
    out = beam_search(step, starts(3, 2), 2, 4, EOS, ExactDecoder(model.table))
    assert out.ids.shape[0] == 3
