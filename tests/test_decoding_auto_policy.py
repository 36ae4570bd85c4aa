"""AutoPolicy: each rule of decoder="auto" from the numbers it is given, without building an index."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import lightning_contloss.decoding.auto_policy as policy_module
from lightning_contloss import TargetEmbeddings
from lightning_contloss.decoding import AutoPolicy, DecoderFactory, ExactDecoder, HNSWDecoder
from lightning_contloss.decoding.auto_policy import (
    EXACT_MAX_ELEMENTS,
    SCREEN_MAX_UNREACHABLE,
    SCREEN_MIN_ROWS,
    SCREEN_ROWS,
)


def test_defaults_are_the_measured_constants() -> None:
    policy = AutoPolicy()
    assert (policy.exact_max_elements, policy.screen_min_rows) == (EXACT_MAX_ELEMENTS, SCREEN_MIN_ROWS)
    assert (policy.screen_rows, policy.max_unreachable) == (SCREEN_ROWS, SCREEN_MAX_UNREACHABLE)
    assert SCREEN_MIN_ROWS == 4 * SCREEN_ROWS


def test_the_vd_rule_counts_elements_and_sends_accelerator_tables_to_exact_search() -> None:
    policy = AutoPolicy(exact_max_elements=100)
    assert policy.kind(torch.empty(10, 10)) == "exact"  # V·D = 100: on the threshold
    assert policy.kind(torch.empty(10, 11)) == "hnsw"
    assert policy.kind(torch.empty(1000, 64, device="meta")) == "exact"  # not a CPU table
    assert AutoPolicy(exact_max_elements=0).kind(torch.empty(1, 1)) == "hnsw"


def test_only_a_large_table_bound_for_hnsw_is_screened() -> None:
    policy = AutoPolicy(exact_max_elements=100, screen_min_rows=50)
    assert policy.screens(torch.empty(60, 4), returnable=50)
    assert not policy.screens(torch.empty(60, 4), returnable=49)  # too few rows an index would hold
    assert not policy.screens(torch.empty(20, 4), returnable=20)  # the V·D rule already picks exact search
    assert not policy.screens(torch.empty(60, 4, device="meta"), returnable=60)


def test_verdicts_name_the_measurements() -> None:
    policy = AutoPolicy(max_unreachable=0.005)
    assert policy.screen_verdict(0.005, sampled=1000, returnable=9000) is None  # at the threshold: kept
    refused = policy.screen_verdict(0.0081, sampled=32_768, returnable=400_000)
    assert refused is not None and "32,768 sampled rows of the 400,000-row table cannot reach 0.81%" in refused
    assert policy.speed_verdict(hnsw_qps=500.0, exact_qps=500.0, ef=16, tuned=False) is None  # a tie keeps HNSW
    slow = policy.speed_verdict(hnsw_qps=100.0, exact_qps=5000.0, ef=16, tuned=False)
    assert slow == "exact search answers 5,000 queries/s, HNSW 100 even at ef=16"
    tuned = policy.speed_verdict(hnsw_qps=100.0, exact_qps=5000.0, ef=128, tuned=True)
    assert tuned == "exact search answers 5,000 queries/s against HNSW's 100 at the tuned ef=128"
    assert policy.recall_verdict(0.99, 0.99, ef=64) is None
    assert policy.recall_verdict(0.97, 0.99, ef=512) == "HNSW reached recall@1 0.9700 < 0.990 at its best ef=512"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"exact_max_elements": -1}, "exact_max_elements"),
        ({"exact_max_elements": 1.5}, "exact_max_elements"),
        ({"screen_min_rows": True}, "screen_min_rows"),
        ({"screen_rows": 1}, "screen_rows"),
        ({"max_unreachable": float("nan")}, "max_unreachable"),
        ({"max_unreachable": "0.5%"}, "max_unreachable"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AutoPolicy(**kwargs)


def test_a_factory_asks_its_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    screened: list[dict[str, Any]] = []

    def fake_share(*args: Any, **kwargs: Any) -> float:
        screened.append(kwargs)
        return 0.5  # the screen runs on the policy's numbers, not on a built graph

    monkeypatch.setattr(policy_module, "hnsw_unreachable_share", fake_share)
    table = TargetEmbeddings.random(300, 8, seed=0)  # V·D = 2,400
    assert isinstance(DecoderFactory("auto")(table, "cosine"), ExactDecoder)  # the default V·D rule
    strict_policy = AutoPolicy(exact_max_elements=0, screen_min_rows=200, screen_rows=64)
    strict = DecoderFactory("auto", policy=strict_policy, cache_dir=False)
    assert isinstance(strict(table, "cosine"), ExactDecoder) and strict.exact_fallback
    assert len(screened) == 1 and screened[0]["rows"] == 64
    lenient = AutoPolicy(exact_max_elements=0, screen_min_rows=200, max_unreachable=1.0)
    factory = DecoderFactory("auto", policy=lenient, num_threads=1, cache_dir=False)
    assert isinstance(factory(table, "cosine"), HNSWDecoder) and factory.screened
    with pytest.raises(ValueError, match="only decoder='auto' takes one"):
        DecoderFactory("hnsw", policy=AutoPolicy())
    with pytest.raises(ValueError, match="policy must be an AutoPolicy"):
        DecoderFactory("auto", policy={"exact_max_elements": 0})  # type: ignore[arg-type]
