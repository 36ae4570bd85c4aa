"""The HNSW screen: a sample graph's unreachable share, and "auto" deciding on it before a full build."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import lightning_contloss.decoding.auto_policy as policy_module
from lightning_contloss import DecodingCallback, TargetEmbeddings
from lightning_contloss.decoding import AutoPolicy, DecoderFactory, ExactDecoder, HNSWDecoder
from lightning_contloss.decoding.screen import hnsw_unreachable_share
from tests.helpers import TinyContinuousLM, loader, mapping_data, quiet_trainer

# Settings under which random 256-d rows leave a large share of a small graph unreachable.
WEAK = {"M": 4, "ef_construction": 8}


def test_share_is_the_reach_check_of_a_graph_over_the_whole_table() -> None:
    table = TargetEmbeddings.random(1500, 256, seed=0)
    share = hnsw_unreachable_share(table, rows=5000, seed=3, **WEAK)
    full = HNSWDecoder(table, num_threads=1, seed=3, reach_check=True, **WEAK)
    assert share == full.unreachable_count / 1500
    assert share > 0.1


def test_share_separates_high_from_low_dimensional_rows() -> None:
    high = hnsw_unreachable_share(TargetEmbeddings.random(4000, 256, seed=0), rows=2000, **WEAK)
    low = hnsw_unreachable_share(TargetEmbeddings.random(4000, 4, seed=0), rows=2000, M=8, ef_construction=16)
    assert high > 0.1 and low < 0.01
    # The sample is seeded: the same seed gives the same share.
    again = hnsw_unreachable_share(TargetEmbeddings.random(4000, 256, seed=0), rows=2000, **WEAK)
    assert again == high


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rows": 1}, "rows must be an int >= 2"),
        ({"space": "dot"}, "space"),
        ({"M": 1}, "M must be an int >= 2"),
        ({"ef_construction": 0}, "ef_construction must be an int >= 1"),
        ({"num_threads": 0}, "num_threads must be an int >= 1"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        hnsw_unreachable_share(torch.randn(50, 8), **kwargs)


# Screen tables from 2,000 rows on, with 1,000-row samples (the defaults are 131,072 and 32,768).
SMALL = AutoPolicy(screen_rows=1000, screen_min_rows=2000)
# ... and refuse HNSW whatever the sample shows.
REFUSING = AutoPolicy(screen_rows=1000, screen_min_rows=2000, max_unreachable=-1.0)
# The V·D rule sends even the tiny test LM's table to HNSW, and its 100+ rows are screened.
TINY = AutoPolicy(exact_max_elements=0, screen_rows=1000, screen_min_rows=100)


def _count_screens(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    shares: list[float] = []
    real = policy_module.hnsw_unreachable_share

    def counting(*args: Any, **kwargs: Any) -> float:
        shares.append(real(*args, **kwargs))
        return shares[-1]

    monkeypatch.setattr(policy_module, "hnsw_unreachable_share", counting)
    return shares


def test_auto_decodes_exactly_when_the_sample_graph_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shares = _count_screens(monkeypatch)
    table = TargetEmbeddings.random(4000, 256, seed=0)  # V·D = 1M: the V·D rule alone picks HNSW
    factory = DecoderFactory("auto", policy=SMALL, cache_dir=tmp_path, num_threads=1, **WEAK)
    with caplog.at_level(logging.WARNING, logger="lightning_contloss.decoding.factory"):
        decoder = factory(table, "cosine")
    assert isinstance(decoder, ExactDecoder) and len(shares) == 1 and shares[0] > 0.02
    assert "cannot reach" in caplog.text and "decoding by exact search" in caplog.text
    assert factory.state_dict() == {"tuned_ef": None, "exact_fallback": True, "screened": False}
    assert not any(tmp_path.iterdir())  # no index was built or cached
    # Later builds go straight to exact search, and a checkpointed factory keeps the decision.
    assert isinstance(factory(table, "cosine"), ExactDecoder) and len(shares) == 1
    restored = DecoderFactory("auto", policy=SMALL, cache_dir=tmp_path, num_threads=1, **WEAK)
    restored.load_state_dict(factory.state_dict())
    assert isinstance(restored(table, "cosine"), ExactDecoder) and len(shares) == 1


def test_auto_builds_hnsw_when_the_sample_graph_passes_and_screens_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shares = _count_screens(monkeypatch)
    table = TargetEmbeddings.random(40_000, 16, seed=0)  # V·D = 640k
    factory = DecoderFactory("auto", policy=SMALL, cache_dir=False, num_threads=1, M=8, ef_construction=16)
    decoder = factory(table, "cosine")
    assert isinstance(decoder, HNSWDecoder) and shares == [pytest.approx(0.0, abs=0.01)]
    assert factory.screened and factory.state_dict()["screened"] is True
    factory(table, "cosine")
    assert len(shares) == 1
    with pytest.raises(ValueError, match="screened must be True or False"):
        factory.load_state_dict({"tuned_ef": None, "exact_fallback": False, "screened": "yes"})


def test_no_screen_for_a_cached_index_a_given_ef_hnsw_or_a_small_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shares = _count_screens(monkeypatch)
    table = TargetEmbeddings.random(4000, 256, seed=0)
    # "hnsw" keeps HNSW, unscreened, and writes the cache entry ...
    first = DecoderFactory("hnsw", cache_dir=tmp_path, num_threads=1, **WEAK)(table, "cosine")
    assert isinstance(first, HNSWDecoder) and not first.from_cache
    assert HNSWDecoder.in_cache(table, cache_dir=tmp_path, **WEAK)
    assert not HNSWDecoder.in_cache(table, cache_dir=tmp_path, M=6, ef_construction=8)
    # ... which "auto" then loads without screening: a load is cheap, and a run before decided.
    loaded = DecoderFactory("auto", policy=SMALL, cache_dir=tmp_path, num_threads=1, **WEAK)(table, "cosine")
    assert isinstance(loaded, HNSWDecoder) and loaded.from_cache
    # A given ef says "I know my HNSW settings", as it does for adapt().
    given_ef = DecoderFactory("auto", policy=SMALL, ef=32, cache_dir=False, num_threads=1, **WEAK)
    assert isinstance(given_ef(table, "cosine"), HNSWDecoder)
    # Below SCREEN_MIN_ROWS the full build costs about what the screen would.
    small = TargetEmbeddings.random(1999, 256, seed=0)
    below = DecoderFactory("auto", policy=SMALL, cache_dir=False, num_threads=1, **WEAK)(small, "cosine")
    assert isinstance(below, HNSWDecoder)
    assert shares == []


def test_ddp_ranks_take_rank_zeros_screen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A non-zero rank adopts rank 0's broadcast decision and never screens (or builds an index) itself."""

    def no_screen(*args: Any, **kwargs: Any) -> float:
        raise AssertionError("only global rank 0 screens")

    monkeypatch.setattr(policy_module, "hnsw_unreachable_share", no_screen)
    lm = TinyContinuousLM()
    calls: list[str] = []

    def broadcast(obj: Any, src: int = 0) -> Any:
        calls.append("broadcast")
        return {"tuned_ef": None, "exact_fallback": True, "screened": False}  # rank 0 screened HNSW out

    strategy = SimpleNamespace(broadcast=broadcast, barrier=lambda name=None: calls.append("barrier"))
    trainer = SimpleNamespace(world_size=2, is_global_zero=False, local_rank=1, strategy=strategy)
    cb = DecodingCallback(decoder=DecoderFactory("auto", num_threads=1, cache_dir=tmp_path))
    assert cb.factory.may_screen
    decoder = cb.session.build_once(trainer, lm.continuous_targets, "cosine")  # type: ignore[arg-type]
    assert isinstance(decoder, ExactDecoder) and cb.factory.exact_fallback and not cb.factory.may_screen
    assert calls == ["broadcast", "barrier", "barrier"]
    # Once decided (or restored from a checkpoint), a build needs no broadcast.
    calls.clear()
    cb.session.build_once(trainer, lm.continuous_targets, "cosine")  # type: ignore[arg-type]
    assert calls == ["barrier", "barrier"]


def test_fit_under_a_screened_out_auto_decoder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """End to end: "auto" screens at the first validation, decodes exactly, and acc@1 is exact search's."""
    # The V·D rule sends the tiny table to HNSW, whose screen then fails on any sample.
    refusing = AutoPolicy(exact_max_elements=0, screen_min_rows=100, max_unreachable=-1.0)
    shares = _count_screens(monkeypatch)
    lm = TinyContinuousLM()
    cb = DecodingCallback(k=5, decoder=DecoderFactory("auto", policy=refusing, num_threads=1, cache_dir=tmp_path))
    trainer = quiet_trainer(max_epochs=2, callbacks=[cb], log_every_n_steps=1)
    trainer.fit(lm, loader(mapping_data(256), shuffle=True), loader(mapping_data(128, seed=1)))
    assert len(shares) == 1 and isinstance(cb.decoder, ExactDecoder) and isinstance(lm.continuous_decoder, ExactDecoder)
    assert cb.state_dict()["exact_fallback"] is True and cb.build_count == 0
    x, y = mapping_data(128, seed=1)[:]
    with torch.no_grad():
        pred = lm.model(x)
    exact = (torch.nn.functional.normalize(pred, dim=-1) @ lm.continuous_targets.weight.T).argmax(-1)
    acc = float(trainer.callback_metrics["val/acc@1"])
    assert abs(float((exact == y).float().mean()) - acc) < 1e-6


def test_the_exact_fallback_keeps_exclude_and_the_screen_skips_excluded_rows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}
    real = policy_module.hnsw_unreachable_share

    def recording(*args: Any, **kwargs: Any) -> float:
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(policy_module, "hnsw_unreachable_share", recording)
    table = TargetEmbeddings.random(4000, 256, seed=0)
    factory = DecoderFactory(
        "auto", policy=SMALL, cache_dir=tmp_path, num_threads=1, exclude=[5, 6], chunk_size=1000, **WEAK
    )
    decoder = factory(table, "cosine")
    assert isinstance(decoder, ExactDecoder) and decoder.chunk_size == 1000
    assert seen["exclude"] == [5, 6] and seen["num_threads"] == 1
    ids, _ = decoder.query(table.weight[[5, 6, 7]], 1)
    assert 5 not in ids.flatten().tolist() and 6 not in ids.flatten().tolist() and ids[2, 0] == 7
    # A deterministic build screens on one thread too, so reruns decide alike.
    DecoderFactory("auto", policy=SMALL, cache_dir=False, num_threads=2, deterministic=True, **WEAK)(table, "cosine")
    assert seen["num_threads"] == 1


def _threaded_ranks(build: Any, world: int = 4) -> dict[int, Any]:
    """Run ``build(global_rank, trainer)`` on ``world`` threads whose barrier and broadcast really meet."""
    import threading

    barrier = threading.Barrier(world, timeout=60)
    box: dict[str, Any] = {}
    out: dict[int, Any] = {}
    log_calls: dict[int, list[str]] = {r: [] for r in range(world)}

    def rank(global_rank: int) -> None:
        def broadcast(obj: Any, src: int = 0) -> Any:
            log_calls[global_rank].append("broadcast")
            if global_rank == src:
                box["value"] = obj
            barrier.wait()
            value = box["value"]
            barrier.wait()  # nobody overwrites the box before every rank has read it
            return value

        def wait(name: Any = None) -> None:
            log_calls[global_rank].append("barrier")
            barrier.wait()

        trainer = SimpleNamespace(
            world_size=world,
            is_global_zero=global_rank == 0,
            local_rank=global_rank % 2,
            strategy=SimpleNamespace(barrier=wait, broadcast=broadcast),
        )
        out[global_rank] = build(global_rank, trainer)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(out) == world, "a rank hung"
    assert len({tuple(c) for c in log_calls.values()}) == 1, log_calls  # the same collectives everywhere
    return out


@pytest.mark.parametrize("case", ["node0_cached", "screen_fails"])
def test_four_ranks_on_two_nodes_follow_rank_zeros_screen(
    case: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Node-local caches, node 0's already holding the index: every rank still decodes alike."""
    shares = _count_screens(monkeypatch)
    table = TargetEmbeddings.random(4000, 256, seed=0)
    if case == "node0_cached":
        DecoderFactory("hnsw", cache_dir=tmp_path / "node0", num_threads=1, **WEAK)(table, "cosine")
    policy = SMALL if case == "node0_cached" else REFUSING

    def build(global_rank: int, trainer: Any) -> Any:
        folder = tmp_path / f"node{global_rank // 2}"
        factory = DecoderFactory("auto", policy=policy, cache_dir=folder, num_threads=1, **WEAK)
        return DecodingCallback(decoder=factory).session.build_once(trainer, table, "cosine")  # type: ignore[arg-type]

    decoders = _threaded_ranks(build)
    kinds = {type(d).__name__ for d in decoders.values()}
    if case == "node0_cached":
        # Rank 0 found the index in its cache: a decision every rank takes, with no screen anywhere.
        assert kinds == {"HNSWDecoder"} and shares == []
        assert [d.from_cache for d in decoders.values()].count(False) == 1  # node 1 built once
    else:
        assert kinds == {"ExactDecoder"} and len(shares) == 1
        assert not any((tmp_path / f"node{n}").exists() and any((tmp_path / f"node{n}").iterdir()) for n in (0, 1))


def test_a_new_table_is_screened_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shares = _count_screens(monkeypatch)
    lm = TinyContinuousLM()
    settings = {"policy": TINY, "num_threads": 1, "cache_dir": False, "M": 8, "ef_construction": 16}
    cb = DecodingCallback(decoder=DecoderFactory("auto", **settings))
    trainer = SimpleNamespace(world_size=1)
    cb._ensure_decoder(trainer, lm)  # type: ignore[arg-type]
    assert len(shares) == 1 and cb.factory.screened
    state = cb.state_dict()
    assert state["screened"] is True and state["screened_for"] == lm.continuous_targets.content_hash()
    with torch.no_grad():
        lm.continuous_targets.weight.mul_(-1.0)  # another table (a write bumps the tensor's version)
    cb._ensure_decoder(trainer, lm)  # type: ignore[arg-type]
    assert len(shares) == 2
    # A checkpoint's decision for the current table is reused without a screen.
    fresh = DecodingCallback(decoder=DecoderFactory("auto", **settings))
    fresh.load_state_dict(cb.state_dict())
    fresh._ensure_decoder(trainer, lm)  # type: ignore[arg-type]
    assert len(shares) == 2
