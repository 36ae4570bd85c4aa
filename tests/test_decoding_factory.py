"""DecoderFactory: what it builds, how it adapts, what it refuses; check_decoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_contloss import TargetEmbeddings
from lightning_contloss.decoding import DecoderFactory, ExactDecoder, HNSWDecoder, check_decoder


def test_string_kinds_build_the_named_decoder(tmp_path: Path) -> None:
    targets = TargetEmbeddings.random(300, 8, seed=0)
    assert isinstance(DecoderFactory("exact")(targets, "cosine"), ExactDecoder)
    hnsw = DecoderFactory("hnsw", ef=40, num_threads=1, cache_dir=tmp_path)(targets, "ip")
    assert isinstance(hnsw, HNSWDecoder) and hnsw.ef == 40 and hnsw.space == "ip"
    again = DecoderFactory("hnsw", ef=40, num_threads=1, cache_dir=tmp_path)(targets, "ip")
    assert isinstance(again, HNSWDecoder) and again.from_cache
    uncached = DecoderFactory("hnsw", num_threads=1, cache_dir=False)(targets, "cosine")
    assert isinstance(uncached, HNSWDecoder) and not uncached.from_cache


def test_callable_and_ready_decoders_are_checked_against_the_targets() -> None:
    targets = TargetEmbeddings.random(50, 4, seed=0)
    built = DecoderFactory(lambda t, space: ExactDecoder(t, space))(targets, "l2")
    assert built.space == "l2"
    ready = ExactDecoder(targets)
    assert DecoderFactory(ready)(targets, "cosine") is ready
    with pytest.raises(ValueError, match="covers 40 ids"):
        DecoderFactory(ExactDecoder(targets.weight[:40]))(targets, "cosine")
    with pytest.raises(ValueError, match="ranks by 'cosine' but the loss decodes by 'ip'"):
        DecoderFactory(ready)(targets, "ip")
    other = TargetEmbeddings.random(50, 4, seed=1)
    with pytest.raises(ValueError, match="another table"):
        DecoderFactory(ExactDecoder(other))(targets, "cosine")
    with pytest.raises(ValueError, match="must offer query"):
        DecoderFactory(lambda t, space: "not a decoder")(targets, "cosine")  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "faiss"}, "decoder must be"),
        ({"kind": 3}, "decoder must be"),
        ({"ef": 0}, "ef must be"),
        ({"ef": 2.5}, "ef must be"),
        ({"target_recall": 2}, "target_recall"),
        ({"target_recall": float("nan")}, "target_recall"),
        ({"num_threads": 0}, "num_threads"),
        ({"M": 1}, "M must be"),
        ({"ef_construction": "100"}, "ef_construction"),
        ({"cache_dir": 3}, "cache_dir"),
        ({"seed": 1.5}, "seed"),
        ({"efs": 3}, "unknown arguments"),
        ({"kind": "exact", "M": 8}, r"ExactDecoder does not take \['M'\]; it takes \['chunk_size', 'exclude', "),
        ({"kind": "exact", "ef": 16}, "ExactDecoder has no ef"),
        ({"kind": "hnsw", "policy": "auto"}, "only decoder='auto' takes one"),
        ({"kind": lambda t, s: None, "M": 8}, "only apply to a decoder kind given by name"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DecoderFactory(**kwargs)  # type: ignore[arg-type]


def test_adapt_tunes_ef_once_and_reuses_it(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    targets = TargetEmbeddings.from_tensor(torch.randn(3000, 16, generator=g))
    queries = targets.weight[:400] + 0.3 * torch.randn(400, 16, generator=g)
    factory = DecoderFactory("hnsw", num_threads=1, cache_dir=False)
    first = factory(targets, "cosine")
    assert isinstance(first, HNSWDecoder)
    factory.adapt(first, queries)
    tuned = factory.tuned_ef
    assert tuned is not None and first.ef == tuned and first.tuning[tuned] >= 0.99
    second = factory(targets, "cosine")  # a rebuild starts from the tuned value
    assert isinstance(second, HNSWDecoder) and second.ef == tuned
    restored = DecoderFactory("hnsw", num_threads=1, cache_dir=False)
    restored.load_state_dict(factory.state_dict())
    assert restored.tuned_ef == tuned
    fixed = DecoderFactory("hnsw", ef=20, num_threads=1, cache_dir=False)
    dec = fixed(targets, "cosine")
    fixed.adapt(dec, queries)  # an explicit ef is never tuned
    assert fixed.tuned_ef is None and isinstance(dec, HNSWDecoder) and dec.ef == 20
    with pytest.raises(ValueError, match="tuned_ef"):
        restored.load_state_dict({"tuned_ef": 0})


def test_check_decoder_accepts_a_matching_decoder_on_another_dtype() -> None:
    targets = TargetEmbeddings.random(20, 4, seed=0)
    check_decoder(ExactDecoder(targets.weight.double()), targets, "cosine")


def test_auto_falls_back_to_exact_search_when_no_ef_reaches_the_recall(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_contloss.decoding.factory as factory_module

    def failing_tune(decoder: HNSWDecoder, queries: torch.Tensor, target_recall: float, seed: int) -> int:
        decoder.tuning = {64: 0.91, 512: 0.97}  # what an untrained model's look-alike predictions give
        decoder.ef = 512
        return 512

    monkeypatch.setattr(factory_module, "tune_ef", failing_tune)
    targets = TargetEmbeddings.random(4000, 128, seed=0)  # 512k elements: "auto" picks HNSW
    queries = targets.weight[:50]
    auto = DecoderFactory("auto", num_threads=1, cache_dir=False)
    first = auto(targets, "cosine")
    assert isinstance(first, HNSWDecoder)
    assert auto.adapt(first, queries) is True
    assert auto.exact_fallback and auto.tuned_ef is None and "exact_fallback=True" in repr(auto)
    assert isinstance(auto(targets, "cosine"), ExactDecoder)
    # the choice travels in checkpoints, and a new table (tuned_ef reset) starts from HNSW again
    restored = DecoderFactory("auto", num_threads=1, cache_dir=False)
    restored.load_state_dict(auto.state_dict())
    assert isinstance(restored(targets, "cosine"), ExactDecoder)
    restored.load_state_dict({"tuned_ef": None})
    assert not restored.exact_fallback
    with pytest.raises(ValueError, match="exact_fallback must be True or False"):
        restored.load_state_dict({"tuned_ef": None, "exact_fallback": "yes"})
    # an explicit "hnsw" keeps HNSW at its best ef
    hnsw = DecoderFactory("hnsw", num_threads=1, cache_dir=False)
    dec = hnsw(targets, "cosine")
    assert hnsw.adapt(dec, queries) is False and hnsw.tuned_ef == 512 and not hnsw.exact_fallback


def test_auto_falls_back_to_exact_search_when_it_is_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_contloss.decoding.factory as factory_module

    targets = TargetEmbeddings.random(4000, 128, seed=1)
    queries = targets.weight[:200] + 0.05 * torch.randn(200, 128, generator=torch.Generator().manual_seed(0))
    rates = {"slow": (100.0, 5000.0), "fast": (5000.0, 100.0)}
    for case, (hnsw_qps, exact_qps) in rates.items():
        monkeypatch.setattr(factory_module, "_query_rates", lambda h, e, q, r=(hnsw_qps, exact_qps): r)
        auto = DecoderFactory("auto", num_threads=1, cache_dir=False)
        dec = auto(targets, "cosine")
        assert isinstance(dec, HNSWDecoder)
        switched = auto.adapt(dec, queries, targets)
        assert switched is (case == "slow") and auto.exact_fallback is (case == "slow")
        # exact search beating HNSW at its smallest ef skips the tuning altogether
        assert (dec.tuning == {}) is (case == "slow")
        assert isinstance(auto(targets, "cosine"), ExactDecoder if case == "slow" else HNSWDecoder)
        # without the targets the speed check is skipped
        plain = DecoderFactory("auto", num_threads=1, cache_dir=False)
        assert plain.adapt(plain(targets, "cosine"), queries) is False


def test_query_rates_time_both_decoders_on_the_same_queries() -> None:
    from lightning_contloss.decoding.factory import _query_rates

    targets = TargetEmbeddings.random(500, 16, seed=0)
    hnsw, exact = DecoderFactory("hnsw", num_threads=1, cache_dir=False)(targets, "cosine"), ExactDecoder(targets)
    h, e = _query_rates(hnsw, exact, targets.weight[:100])
    assert h > 0 and e > 0
