"""DecodingCallback's configuration: argument checks, the decoder factory, re-ranking rules, state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import VOCAB, TinyContinuousLM, loader, mapping_data, quiet_trainer

from lightning_contloss import DecoderFactory, DecodingCallback, ExactDecoder
from lightning_contloss.decoding import CSLSReranking, PriorReranking


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be >= 1"),
        ({"k": 2.5}, "k must be"),
        ({"k": "5"}, "k must be"),
        ({"k": True}, "k must be"),
        ({"recall_sample": -1}, "recall_sample"),
        ({"metric_tokens": 1.5}, "metric_tokens"),
        ({"buffer_tokens": 0}, "buffer_tokens"),
        ({"brier_lm": "yes"}, "brier_lm"),
        ({"seed": None}, "seed"),
        ({"hubness": "mnn"}, "hubness"),
        ({"hubness": CSLSReranking(candidates=3), "k": 5}, "candidates"),
    ],
)
def test_bad_arguments_are_rejected_before_training(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DecodingCallback(**kwargs)  # type: ignore[arg-type]


def test_integer_arguments_take_numpy_and_torch_integers() -> None:
    # issue 25 item 14: "seed must be an int, got 2" for a numpy integer
    cb = DecodingCallback(k=np.int64(2), recall_sample=np.int32(0), buffer_tokens=torch.tensor(64), seed=np.int64(2))
    assert (cb.k, cb.epoch.recall_sample, cb.buffer_tokens) == (2, 0, 64)
    seeds = (cb.likelihood.seed, cb.factory.seed)
    assert seeds == (2, 2) and all(type(s) is int for s in seeds)


def test_unknown_argument_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        DecodingCallback(buffer=3)  # type: ignore[call-arg]
    # HNSW settings belong to the DecoderFactory, not to the callback.
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        DecodingCallback(decoder="hnsw", ef=24)  # type: ignore[call-arg]


def test_decoder_can_be_a_callable_or_a_ready_decoder() -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM()
    val = loader(mapping_data(64, seed=1))
    built: list[str] = []

    def build(targets: object, space: str) -> ExactDecoder:
        built.append(space)
        return ExactDecoder(lm.continuous_targets, space, chunk_size=64)

    trainer = quiet_trainer(callbacks=[DecodingCallback(decoder=build)])
    trainer.validate(lm, val, verbose=False)
    assert built == ["cosine"] and "val/acc@1" in trainer.callback_metrics
    ready = ExactDecoder(lm.continuous_targets)
    cb = DecodingCallback(decoder=ready)
    quiet_trainer(callbacks=[cb]).validate(lm, val, verbose=False)
    assert cb.decoder is ready and lm.continuous_decoder is ready
    # A ready decoder over another table is refused, not used.
    wrong = ExactDecoder(torch.randn(VOCAB - 1, lm.continuous_targets.dim))
    with pytest.raises(ValueError, match="covers 199 ids"):
        quiet_trainer(callbacks=[DecodingCallback(decoder=wrong)]).validate(lm, val, verbose=False)


def test_metrics_are_one_collection_and_match_a_recomputation() -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM()
    x, y = mapping_data(128, seed=1)[:]
    cb = DecodingCallback(k=3, decoder="exact")
    trainer = quiet_trainer(callbacks=[cb])
    trainer.validate(lm, loader(mapping_data(128, seed=1)), verbose=False)
    assert set(cb.metrics.keys()) >= {"acc@1", "acc@3", "mean_cos", "decode_recall", "spread", "vmf_ppl"}
    with torch.no_grad():
        pred = lm.model(x).reshape(-1, lm.continuous_targets.dim)
    y = y.reshape(-1)
    table = lm.continuous_targets.weight
    cos = torch.nn.functional.normalize(pred, dim=-1) @ torch.nn.functional.normalize(table, dim=-1).T
    top = cos.topk(3, dim=-1).indices
    got = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert got["val/acc@1"] == pytest.approx(float((top[:, 0] == y).float().mean()), abs=1e-6)
    assert got["val/acc@3"] == pytest.approx(float((top == y[:, None]).any(-1).float().mean()), abs=1e-6)
    assert got["val/mean_cos"] == pytest.approx(float(cos.gather(1, y[:, None]).mean()), abs=1e-5)
    assert got["val/distinct_pred"] == float(top[:, 0].unique().numel())
    assert got["val/decode_recall"] == 1.0


def test_state_dict_round_trip_and_state_key() -> None:
    cb = DecodingCallback(decoder="hnsw")
    cb.tuned_ef = 48
    state = cb.state_dict()
    fresh = DecodingCallback(decoder="hnsw")
    fresh.load_state_dict(state)
    assert fresh.tuned_ef == 48 and fresh.state_dict() == state
    assert DecodingCallback(k=5).state_key != DecodingCallback(k=3).state_key
    assert "DecodingCallback" in DecodingCallback().state_key


def test_tuned_ef_of_another_table_is_dropped() -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM()
    cb = DecodingCallback(decoder=DecoderFactory("hnsw", num_threads=1, cache_dir=False))
    quiet_trainer(callbacks=[cb]).validate(lm, loader(mapping_data(64, seed=1)), verbose=False)
    assert cb.tuned_ef is not None and cb.state_dict()["tuned_for"] == lm.continuous_targets.content_hash()
    state = cb.state_dict()
    other = TinyContinuousLM(targets=None)
    with torch.no_grad():
        other.continuous_targets.weight.mul_(-1.0)
    fresh = DecodingCallback(decoder=DecoderFactory("hnsw", num_threads=1, cache_dir=False))
    fresh.load_state_dict(state)
    fresh._ensure_decoder(quiet_trainer(), other)
    assert fresh.tuned_ef is None  # retuned on the next validation instead of reused


def test_prior_rule_object_reads_counts_and_fits_each_epoch() -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM()
    counts = torch.arange(VOCAB, dtype=torch.float64)
    cb = DecodingCallback(decoder="exact", hubness=PriorReranking(counts=counts, weight=0.05))
    quiet_trainer(callbacks=[cb]).validate(lm, loader(mapping_data(64, seed=1)), verbose=False)
    assert cb.session.reranked is not None and lm.continuous_decoder is cb.session.reranked
    with pytest.raises(ValueError, match="counts"):
        PriorReranking(counts=torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="weight"):
        PriorReranking(weight=float("inf"))


def test_fit_without_validation_builds_no_decoder() -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM()
    cb = DecodingCallback(decoder=DecoderFactory("hnsw", num_threads=1, cache_dir=False))
    quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[cb]).fit(lm, loader(mapping_data(64)))
    assert cb.decoder is None and cb.build_count == 0
    quiet_trainer(callbacks=[cb]).validate(lm, loader(mapping_data(64, seed=1)), verbose=False)
    assert cb.decoder is not None and cb.build_count == 1


def test_kappa_fit_is_warm_started_from_the_last_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_contloss.callbacks.kappa as callbacks

    starts: list[float] = []
    real = callbacks.fit_kappa

    def recording(*args: object, **kwargs: object) -> float:
        starts.append(float(kwargs["kappa_init"]))  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(callbacks, "fit_kappa", recording)
    torch.manual_seed(0)
    lm = TinyContinuousLM()  # a cosine loss: κ̂ is fitted, not read from the norms
    quiet_trainer(max_steps=30, limit_val_batches=0).fit(lm, loader(mapping_data(256)))
    cb = DecodingCallback(decoder="exact")
    trainer = quiet_trainer(callbacks=[cb])
    val = loader(mapping_data(64, seed=1))
    first = trainer.validate(lm, val, verbose=False)[0]["val/vmf_ppl"]
    fitted = cb.kappa.fitted
    second = trainer.validate(lm, val, verbose=False)[0]["val/vmf_ppl"]
    assert fitted is not None and fitted > 0 and starts == [1.0, fitted]
    assert second == pytest.approx(first, rel=1e-5)  # the same κ̂ up to the fit's tolerance
