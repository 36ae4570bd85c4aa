"""DecodingSession and share_epoch_state without a Trainer: build once per table, adapt, re-rank, share, checkpoint."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from helpers import RankDecidingFactory

from lightning_contloss import DecoderFactory, ExactDecoder, HNSWDecoder, RerankedDecoder, TargetEmbeddings
from lightning_contloss.callbacks import DecodingSession, KappaEstimator, share_epoch_state
from lightning_contloss.decoding import CSLSReranking, EpochStatistics

ONE = SimpleNamespace(world_size=1)
SKIP = -100


def table(seed: int = 0, special: list[int] | None = None) -> TargetEmbeddings:
    return TargetEmbeddings.random(60, 8, seed=seed, special_ids=special or [])


def queries(targets: TargetEmbeddings, n: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, len(targets), (n,), generator=g)
    return targets.weight[ids] + 0.2 * torch.randn(n, targets.dim, generator=g)


class FakeRanks:
    """Rank ``rank`` of ``world``: all_gather stacks this rank's tensor ``world`` times.

    broadcast returns ``answer``, or the object it was given when ``answer`` is None.
    """

    def __init__(self, world: int = 2, rank: int = 0, answer: Any = None) -> None:
        self.world_size, self.is_global_zero, self.local_rank = world, rank == 0, rank
        self.calls: list[str] = []
        self.answer = answer
        self.strategy = SimpleNamespace(all_gather=self._gather, broadcast=self._broadcast, barrier=self._barrier)

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        self.calls.append("all_gather")
        return torch.stack([t] * self.world_size)

    def _broadcast(self, obj: Any, src: int = 0) -> Any:
        self.calls.append("broadcast")
        return obj if self.answer is None else self.answer

    def _barrier(self, name: str | None = None) -> None:
        self.calls.append("barrier")


# ---------------------------------------------------------------- building
def test_the_decoder_is_kept_for_the_same_content_and_rebuilt_for_another(tmp_path: Path) -> None:
    session = DecodingSession(DecoderFactory("hnsw", M=8, num_threads=1, cache_dir=tmp_path))
    targets = table()
    decoder = session.ensure(ONE, targets, "cosine")
    assert isinstance(decoder, HNSWDecoder) and session.build_count == 1
    assert session.ensure(ONE, targets, "cosine") is decoder
    targets.weight = targets.weight.clone()  # a new tensor (a load), the same content
    assert session.ensure(ONE, targets, "cosine") is decoder and session.build_count == 1
    with torch.no_grad():
        targets.weight.mul_(-1.0)
    assert session.ensure(ONE, targets, "cosine") is not decoder and session.build_count == 2
    # The same table again: loaded from the cache, not counted as a build.
    fresh = DecodingSession(DecoderFactory("hnsw", M=8, num_threads=1, cache_dir=tmp_path))
    fresh.ensure(ONE, targets, "cosine")
    assert fresh.build_count == 0 and fresh.decoder.from_cache  # type: ignore[union-attr]


def test_a_tuned_ef_is_dropped_for_another_table() -> None:
    session = DecodingSession(DecoderFactory("hnsw", M=8, num_threads=1, cache_dir=False))
    targets = table()
    session.ensure(ONE, targets, "cosine")
    assert not session.adapt(queries(targets), targets, "cosine")
    assert session.tuned_ef is not None and session.state_dict()["tuned_for"] == targets.content_hash()
    session.ensure(ONE, table(seed=5), "cosine")
    assert session.tuned_ef is None


def test_adapt_falls_back_to_exact_search_and_rebuilds() -> None:
    session = DecodingSession(RankDecidingFactory({0: "exact"}, rank=0))
    targets = table()
    session.ensure(ONE, targets, "cosine")
    assert isinstance(session.decoder, HNSWDecoder)
    assert session.adapt(queries(targets), targets, "cosine")
    assert isinstance(session.active, ExactDecoder) and session.factory.exact_fallback
    assert session.state_dict()["tuned_for"] == targets.content_hash()


def test_build_once_without_a_shared_cache_meets_no_barrier() -> None:
    ranks = FakeRanks(world=2, rank=1)
    session = DecodingSession(DecoderFactory("hnsw", ef=16, M=8, num_threads=1, cache_dir=False))
    assert isinstance(session.build_once(ranks, table(), "cosine"), HNSWDecoder)  # type: ignore[arg-type]
    assert ranks.calls == []


# ---------------------------------------------------------------- decisions under DDP
def test_a_non_zero_rank_takes_rank_zeros_decision() -> None:
    targets = table()
    tuned = DecodingSession(RankDecidingFactory({0: 24, 1: "exact"}, rank=1))
    tuned.ensure(ONE, targets, "cosine")
    assert tuned.decision_pending
    state = {"tuned_ef": 24, "exact_fallback": False, "screened": False}
    assert not tuned.take_decision(state, queries(targets), targets, "cosine", own=False)
    assert tuned.decoder.ef == 24 and tuned.factory.decided == 0 and not tuned.decision_pending  # type: ignore[union-attr]
    fallback = DecodingSession(RankDecidingFactory({0: "exact", 1: 24}, rank=1))
    fallback.ensure(ONE, targets, "cosine")
    state = {"tuned_ef": None, "exact_fallback": True, "screened": False}
    assert fallback.take_decision(state, queries(targets), targets, "cosine", own=False)
    assert isinstance(fallback.active, ExactDecoder) and fallback.factory.decided == 0


def test_share_epoch_state_on_one_process_or_with_nothing_to_share_makes_no_collective() -> None:
    targets = table()
    session = DecodingSession(DecoderFactory("hnsw", ef=16, M=8, num_threads=1, cache_dir=False))
    session.ensure(ONE, targets, "cosine")
    pred = queries(targets)
    target = torch.zeros(pred.shape[0], dtype=torch.long)
    assert not share_epoch_state(ONE, session, KappaEstimator(), pred, target, targets, "cosine", SKIP)  # type: ignore[arg-type]
    ranks = FakeRanks()
    assert not share_epoch_state(ranks, session, None, pred, target, targets, "cosine", SKIP)  # type: ignore[arg-type]
    assert ranks.calls == []  # ef given: no decision; no κ̂ wanted


def test_rank_zero_decides_and_fits_kappa_on_the_gathered_sample() -> None:
    targets = table()
    session = DecodingSession(RankDecidingFactory({0: 24}, rank=0))
    session.ensure(ONE, targets, "cosine")
    pred = queries(targets, n=300)
    target = torch.cdist(pred, targets.weight).argmin(-1)
    ranks, kappa = FakeRanks(world=2, rank=0), KappaEstimator()
    assert not share_epoch_state(ranks, session, kappa, pred, target, targets, "cosine", SKIP)  # type: ignore[arg-type]
    assert ranks.calls == ["all_gather", "all_gather", "broadcast"]
    assert session.decoder.ef == 24 and not session.decision_pending  # type: ignore[union-attr]
    # Each rank gives its first ceil(512 / 2) = 256 tokens; here both "ranks" are this one.
    want = KappaEstimator().fit(torch.cat([pred[:256]] * 2), torch.cat([target[:256]] * 2), targets, SKIP)
    assert kappa.fitted == pytest.approx(want) and kappa.fitted > 0


def test_another_rank_adopts_the_broadcast_decision_and_kappa() -> None:
    targets = table()
    session = DecodingSession(RankDecidingFactory({0: "exact", 1: 24}, rank=1))
    session.ensure(ONE, targets, "cosine")
    answer = {"factory": {"tuned_ef": None, "exact_fallback": True, "screened": False}, "kappa": 2.5}
    ranks, kappa = FakeRanks(world=2, rank=1, answer=answer), KappaEstimator()
    pred = queries(targets)
    target = torch.zeros(pred.shape[0], dtype=torch.long)
    assert share_epoch_state(ranks, session, kappa, pred, target, targets, "cosine", SKIP)  # type: ignore[arg-type]
    assert isinstance(session.active, ExactDecoder) and kappa.fitted == kappa.last == 2.5
    assert session.factory.decided == 0


# ---------------------------------------------------------------- re-ranking, recall, the shared normaliser
def test_rerank_once_per_epoch_and_recall_against_the_same_rule_over_exact_search(tmp_path: Path) -> None:
    targets = table()
    session = DecodingSession(DecoderFactory("hnsw", ef=60, M=8, num_threads=1, cache_dir=tmp_path), CSLSReranking())
    session.ensure(ONE, targets, "cosine")
    stats = EpochStatistics(queries(targets), kappa=lambda: 1.0)
    reranked = session.rerank(stats)
    assert isinstance(reranked, RerankedDecoder) and session.rerank(stats) is reranked
    reference = session.reference(targets)
    assert isinstance(reference, RerankedDecoder) and isinstance(reference.base, ExactDecoder)
    assert torch.equal(reference.bias, reranked.bias) and reference.candidates == reranked.candidates
    assert session.new_epoch() and session.active is session.decoder and not session.new_epoch()


def test_recall_reference_keeps_the_decoders_exclusions(tmp_path: Path) -> None:
    targets = table(special=[0])
    factory = DecoderFactory("hnsw", ef=16, M=8, num_threads=1, cache_dir=tmp_path, exclude=[3, 4])
    session = DecodingSession(factory)
    session.ensure(ONE, targets, "cosine")
    reference = session.reference(targets)
    assert isinstance(reference, ExactDecoder) and session.reference(targets) is reference  # built once
    assert torch.equal(reference.returnable, session.decoder.returnable)  # type: ignore[union-attr]
    exact = DecodingSession(DecoderFactory("exact"))
    exact.ensure(ONE, targets, "cosine")
    assert exact.reference(targets) is None  # exact search is its own reference


def test_log_partition_only_for_exact_cosine_search_over_the_non_special_rows() -> None:
    targets = table(special=[2])
    cases = {
        "exact": (DecoderFactory("exact"), "cosine", True),
        "l2": (DecoderFactory("exact"), "l2", False),
        "exclude": (DecoderFactory("exact", exclude=[5]), "cosine", False),
    }
    for name, (factory, space, shares) in cases.items():
        session = DecodingSession(factory)
        session.ensure(ONE, targets, space)
        assert (session.log_partition(targets.special_mask) is not None) == shares, name
    session = DecodingSession(DecoderFactory("exact"), CSLSReranking())
    session.ensure(ONE, targets, "cosine")
    session.rerank(EpochStatistics(queries(targets), kappa=lambda: 1.0))
    assert session.log_partition(targets.special_mask) is None


def test_query_shares_the_normaliser_of_the_first_rows() -> None:
    targets = table(special=[2])
    session = DecodingSession(DecoderFactory("exact"))
    decoder = session.ensure(ONE, targets, "cosine")
    assert isinstance(decoder, ExactDecoder)
    pred = queries(targets, n=20)
    kappa = torch.rand(7) * 10
    ids, scores, log_z = session.query(pred, 3, torch.device("cpu"), shared=(7, kappa))
    want_ids, want_scores = decoder.query(pred, 3)
    assert torch.equal(ids, want_ids) and log_z is not None and log_z.shape == (7,)
    torch.testing.assert_close(scores, want_scores)
    torch.testing.assert_close(log_z, decoder.query_with_log_partition(pred[:7], 1, kappa)[2])
    assert session.query(pred, 3, torch.device("cpu"))[2] is None


# ---------------------------------------------------------------- checkpointing
def test_state_dict_round_trip_and_bad_state() -> None:
    targets = table()
    session = DecodingSession(DecoderFactory("hnsw", M=8, num_threads=1, cache_dir=False))
    session.ensure(ONE, targets, "cosine")
    session.adapt(queries(targets), targets, "cosine")
    fresh = DecodingSession(DecoderFactory("hnsw", M=8, num_threads=1, cache_dir=False))
    fresh.load_state_dict(session.state_dict())
    assert fresh.state_dict() == session.state_dict() and fresh.tuned_ef == session.tuned_ef
    with pytest.raises(ValueError, match="tuned_ef"):
        fresh.load_state_dict({"tuned_ef": -3})
    with pytest.raises(RuntimeError, match="ensure"):
        _ = DecodingSession(DecoderFactory("exact")).active
