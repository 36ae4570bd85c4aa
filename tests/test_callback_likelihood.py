"""The callback's likelihood metrics: exact search shares its scores with vmf_ppl; HNSW samples one sequence in 16."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import VOCAB, TinyContinuousLM, loader, mapping_data, quiet_trainer
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_contloss import DecoderFactory, DecodingCallback, ExactDecoder, TargetEmbeddings
from lightning_contloss.callbacks import AUTO_METRIC_STRIDE, kappa_fit_tokens
from lightning_contloss.functional import merge_log_partition, vmf_distribution, vmf_log_partition, vmf_log_prob
from lightning_contloss.losses import VMFLoss
from lightning_contloss.metrics import VMFPerplexity


def _trained(loss: Any = None, special: list[int] | None = None) -> TinyContinuousLM:
    torch.manual_seed(0)
    targets = TargetEmbeddings.random(VOCAB, 16, seed=0, special_ids=special or [])
    lm = TinyContinuousLM(targets=targets, loss=loss)
    quiet_trainer(max_epochs=2).fit(lm, loader(mapping_data(256), shuffle=True))
    return lm


def _predictions(lm: TinyContinuousLM, seed: int = 1, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = mapping_data(n, seed=seed)[:]
    with torch.no_grad():
        return lm.model(x), y


class _CountPasses:
    """Counts the table passes vmf_ppl makes itself (the shared normaliser makes none)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = vmf_distribution._log_partition_flat

        def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(vmf_distribution, "_log_partition_flat", counted)


# ---------------------------------------------------------------- the fused pass itself
@pytest.mark.parametrize("chunk_size, query_block", [(8192, 2048), (7, 5)])
def test_query_with_log_partition_matches_query_and_vmf_log_partition(chunk_size: int, query_block: int) -> None:
    g = torch.Generator().manual_seed(0)
    targets = TargetEmbeddings.random(50, 8, seed=1, special_ids=[0, 13])
    dec = ExactDecoder(targets, chunk_size=chunk_size, query_block=query_block)
    x = torch.randn(3, 11, 8, generator=g) * 4
    kappa = torch.rand(3, 11, generator=g) * 20
    ids, scores, log_z = dec.query_with_log_partition(x, 4, kappa)
    want_ids, want_scores = dec.query(x, 4)
    assert torch.equal(ids, want_ids)
    torch.testing.assert_close(scores, want_scores)
    # The reference: κ_i · unit(x_i) as the prediction (κ read from the norm), specials excluded.
    pred = torch.nn.functional.normalize(x, dim=-1) * kappa[..., None]
    want = vmf_log_partition(pred, targets.weight, exclude_mask=targets.special_mask)
    torch.testing.assert_close(log_z, want, rtol=1e-5, atol=1e-5)
    # One κ for all queries, κ = 0 included: log of the 48 returnable rows.
    _, _, flat = dec.query_with_log_partition(x, 1, 0.0)
    torch.testing.assert_close(flat, torch.full((3, 11), math.log(48.0)))


def test_query_with_log_partition_rejects_bad_input() -> None:
    dec = ExactDecoder(torch.eye(4))
    with pytest.raises(ValueError, match="cosine-space"):
        ExactDecoder(torch.eye(4), space="l2").query_with_log_partition(torch.ones(1, 4), 1, 1.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        dec.query_with_log_partition(torch.ones(2, 4), 1, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="finite and >= 0"):
        dec.query_with_log_partition(torch.ones(2, 4), 1, float("nan"))
    with pytest.raises(ValueError, match="shape"):
        dec.query_with_log_partition(torch.ones(2, 4), 1, torch.ones(3))
    with pytest.raises(ValueError, match="NaN or inf"):
        dec.query_with_log_partition(torch.full((1, 4), float("nan")), 1, 1.0)


@settings(max_examples=25, deadline=None)
@given(
    scores=st.lists(
        st.floats(min_value=-1e4, max_value=1e4, allow_nan=False) | st.just(float("-inf")), min_size=1, max_size=40
    ),
    split=st.integers(1, 40),
)
def test_merge_log_partition_equals_one_logsumexp(scores: list[float], split: int) -> None:
    s = torch.tensor([scores], dtype=torch.float64)
    total = torch.full((1,), float("-inf"), dtype=torch.float64)
    shifted = total.clone()
    for chunk in s.split(split, dim=1):
        total = merge_log_partition(total, chunk)
        # With each chunk's max given, the in-place shifted sum (on a copy: it overwrites).
        shifted = merge_log_partition(shifted, chunk.clone(), row_max=chunk.amax(dim=-1))
    torch.testing.assert_close(total, torch.logsumexp(s, dim=-1))
    torch.testing.assert_close(shifted, torch.logsumexp(s, dim=-1))


def test_vmf_log_prob_with_a_given_log_partition() -> None:
    g = torch.Generator().manual_seed(2)
    table, pred, target = torch.randn(30, 6, generator=g), torch.randn(9, 6, generator=g), torch.randint(0, 30, (9,))
    log_z = vmf_log_partition(pred, table, kappa=3.0)
    torch.testing.assert_close(
        vmf_log_prob(pred, target, table, kappa=3.0, log_partition=log_z), vmf_log_prob(pred, target, table, kappa=3.0)
    )
    with pytest.raises(ValueError, match="log_partition has shape"):
        vmf_log_prob(pred, target, table, kappa=3.0, log_partition=log_z[:4])
    with pytest.raises(ValueError, match="log_partition must be finite"):
        vmf_log_prob(pred, target, table, kappa=3.0, log_partition=torch.full((9,), float("nan")))
    # The metric drops ignored positions from the given log-partition too.
    m, ref = VMFPerplexity(ignore_index=-1, kappa=3.0), VMFPerplexity(ignore_index=-1, kappa=3.0)
    padded = torch.where(torch.arange(9) % 3 == 0, -1, target)
    m.update(pred, padded, table, log_partition=log_z)
    ref.update(pred, padded, table)
    torch.testing.assert_close(m.compute(), ref.compute())


# ---------------------------------------------------------------- through the callback
@pytest.mark.parametrize("loss", ["cosine", "vmf"])
def test_exact_search_shares_its_scores_with_vmf_ppl(monkeypatch: pytest.MonkeyPatch, loss: str) -> None:
    lm = _trained(VMFLoss() if loss == "vmf" else None, special=[5])
    cb = DecodingCallback(decoder="exact")
    passes = _CountPasses(monkeypatch)
    quiet_trainer(callbacks=[cb]).validate(lm, loader(mapping_data(64, seed=1), batch_size=16), verbose=False)
    got = float(cb.metrics["vmf_ppl"].compute())
    assert passes.calls == 0, "vmf_ppl scanned the table itself instead of taking exact search's normaliser"
    pred, y = _predictions(lm)
    targets = lm.continuous_targets
    y = torch.where(y == 5, -100, y)  # a special target has no likelihood: skipped, as the callback does
    if loss == "vmf":
        ref = VMFPerplexity(ignore_index=-100)
        ref.update(VMFLoss().concentration(pred), y, targets.weight, exclude_mask=targets.special_mask)
    else:
        assert cb.likelihood.kappa is not None and cb.likelihood.kappa > 0
        ref = VMFPerplexity(ignore_index=-100, kappa=cb.likelihood.kappa)
        ref.update(pred, y, targets.weight, exclude_mask=targets.special_mask)
    assert got == pytest.approx(float(ref.compute()), rel=1e-4)
    assert cb.likelihood.scored == 64 * 8


def test_auto_with_hnsw_takes_one_sequence_in_16(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    lm = _trained()
    cb = DecodingCallback(decoder=DecoderFactory("hnsw", M=8, num_threads=1, cache_dir=tmp_path))
    passes = _CountPasses(monkeypatch)
    # 96 sequences of 8 in batches of 20 (the last one short), decoded in buffers of 40 sequences.
    cb.buffer_tokens = 40 * 8
    quiet_trainer(callbacks=[cb]).validate(lm, loader(mapping_data(96, seed=1), batch_size=20), verbose=False)
    assert passes.calls >= 1
    picked = list(range(0, 96, AUTO_METRIC_STRIDE))
    assert cb.likelihood.scored == len(picked) * 8
    pred, y = _predictions(lm, n=96)
    ref = VMFPerplexity(kappa=cb.likelihood.kappa)
    ref.update(pred[picked], y[picked], lm.continuous_targets.weight)
    assert float(cb.metrics["vmf_ppl"].compute()) == pytest.approx(float(ref.compute()), rel=1e-4)


def test_an_int_metric_tokens_takes_the_first_whole_sequences(tmp_path: Path) -> None:
    lm = _trained()
    cb = DecodingCallback(decoder=DecoderFactory("hnsw", M=8, num_threads=1, cache_dir=tmp_path), metric_tokens=20)
    quiet_trainer(callbacks=[cb]).validate(lm, loader(mapping_data(64, seed=1), batch_size=16), verbose=False)
    assert cb.likelihood.scored == 24  # 20 tokens, rounded up to 3 whole sequences of 8
    pred, y = _predictions(lm)
    ref = VMFPerplexity(kappa=cb.likelihood.kappa)
    ref.update(pred[:3], y[:3], lm.continuous_targets.weight)
    assert float(cb.metrics["vmf_ppl"].compute()) == pytest.approx(float(ref.compute()), rel=1e-4)


class _Batches:
    """A loader of ready batches (here of different sequence lengths)."""

    def __init__(self, batches: list[tuple[torch.Tensor, ...]]) -> None:
        self.batches = batches

    def __iter__(self) -> Any:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def test_brier_lm_on_sequences_of_different_lengths() -> None:
    # Batches of different lengths in one buffer used to fail to concatenate.
    lm = _trained()
    cb = DecodingCallback(decoder="exact", brier_lm=True)
    trainer = quiet_trainer(callbacks=[cb])
    batches = [mapping_data(16, length=8, seed=1)[:], mapping_data(16, length=5, seed=2)[:]]
    cb.buffer_tokens = 10_000  # both batches in one buffer
    trainer.validate(lm, _Batches(batches), verbose=False)
    assert cb.likelihood.scored == 16 * 8 + 16 * 5
    assert math.isfinite(float(cb.metrics["brier_lm"].compute()))


def test_kappa_fit_tokens_keeps_the_scores_cached() -> None:
    assert kappa_fit_tokens(10_000) == 512
    assert kappa_fit_tokens(400_000) * 400_000 <= 1 << 25
    assert kappa_fit_tokens(10**9) == 64


def test_metric_tokens_must_be_auto_or_an_int() -> None:
    with pytest.raises(ValueError, match='"auto" or an int'):
        DecodingCallback(metric_tokens="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metric_tokens"):
        DecodingCallback(metric_tokens=-1)
    assert DecodingCallback().metric_tokens == "auto"
