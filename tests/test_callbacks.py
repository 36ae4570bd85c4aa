"""DecodingCallback end to end: metrics, cache, rebuilds, test/predict, resume, bf16, compile, DDP."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import DIM, VOCAB, TinyContinuousLM, loader, mapping_data, quiet_trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_contloss import DecoderFactory, DecodingCallback, ExactDecoder, HNSWDecoder, TargetEmbeddings
from lightning_contloss.decoding import CSLSReranking, PriorReranking
from lightning_contloss.losses import CosineLoss, VMFLoss

HERE = Path(__file__).parent


def metrics(trainer: L.Trainer, prefix: str = "val") -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix + "/")}


@pytest.mark.slow
def test_fit_validate_test_predict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM()
    cb = DecodingCallback(k=5, decoder=DecoderFactory("hnsw", num_threads=1, cache_dir=tmp_path), brier_lm=True)
    train, val = loader(mapping_data(512), shuffle=True), loader(mapping_data(128, seed=1))
    trainer = quiet_trainer(max_epochs=3, callbacks=[cb])
    trainer.fit(lm, train, val)
    m = metrics(trainer)
    expected = {
        "loss",
        "acc@1",
        "acc@5",
        "mean_cos",
        "decode_recall",
        "decode_qps",
        "distinct_pred",
        "top_pred_share",
        "vmf_ppl",
        "brier_lm",
    }
    assert {k.split("/")[1] for k in m} == expected
    assert m["val/acc@1"] > 0.2 and m["val/acc@5"] >= m["val/acc@1"]
    assert m["val/decode_recall"] >= 0.95
    assert 1 <= m["val/distinct_pred"] <= VOCAB and 0 < m["val/top_pred_share"] <= 1
    assert math.isfinite(m["val/vmf_ppl"]) and 1 <= m["val/vmf_ppl"] < VOCAB
    assert isinstance(cb.decoder, HNSWDecoder) and cb.tuned_ef is not None and cb.build_count == 1

    # acc@1 agrees with a brute-force decode of the same predictions.
    x, y = mapping_data(128, seed=1)[:]
    with torch.no_grad():
        pred = lm.model(x)
    exact = (torch.nn.functional.normalize(pred, dim=-1) @ lm.continuous_targets.weight.T).argmax(-1)
    assert abs(float((exact == y).float().mean()) - m["val/acc@1"]) < 0.02

    (result,) = trainer.test(lm, val, verbose=False)
    assert set(result) == {"test/" + k for k in expected}
    assert abs(result["test/acc@1"] - m["val/acc@1"]) < 1e-6

    out = trainer.predict(lm, loader(torch.utils.data.TensorDataset(x[:16])))
    assert out is not None and out[0].shape == (16, 8, 1)
    assert torch.equal(out[0][..., 0], exact[:16])


def test_second_fit_loads_index_from_cache(tmp_path: Path) -> None:
    data = loader(mapping_data(64))
    first = DecodingCallback(decoder=DecoderFactory("hnsw", ef=32, num_threads=1, cache_dir=tmp_path))
    quiet_trainer(max_epochs=1, callbacks=[first]).validate(TinyContinuousLM(), data, verbose=False)
    second = DecodingCallback(decoder=DecoderFactory("hnsw", ef=32, num_threads=1, cache_dir=tmp_path))
    quiet_trainer(max_epochs=1, callbacks=[second]).validate(TinyContinuousLM(), data, verbose=False)
    assert first.build_count == 1 and second.build_count == 0
    assert isinstance(second.decoder, HNSWDecoder) and second.decoder.from_cache


def test_rebuilds_when_targets_change(tmp_path: Path) -> None:
    lm = TinyContinuousLM()
    cb = DecodingCallback(decoder=DecoderFactory("hnsw", ef=32, num_threads=1, cache_dir=False))
    trainer = quiet_trainer(callbacks=[cb])
    data = loader(mapping_data(64))
    trainer.validate(lm, data, verbose=False)
    trainer.validate(lm, data, verbose=False)
    assert cb.build_count == 1  # same table: reused
    with torch.no_grad():
        lm.continuous_targets.weight.copy_(TargetEmbeddings.random(VOCAB, DIM, seed=5).weight)
    trainer.validate(lm, data, verbose=False)
    assert cb.build_count == 2


def test_unchanged_targets_are_not_hashed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 400k-row table takes ~0.4 s to hash: a validation whose table did not move skips it.
    lm = TinyContinuousLM()
    cb = DecodingCallback(decoder="exact")
    trainer = quiet_trainer(callbacks=[cb])
    data = loader(mapping_data(64))
    calls: list[int] = []
    real = TargetEmbeddings.content_hash
    monkeypatch.setattr(TargetEmbeddings, "content_hash", lambda self: calls.append(1) or real(self))
    trainer.validate(lm, data, verbose=False)
    first = len(calls)
    trainer.validate(lm, data, verbose=False)
    assert len(calls) == first  # neither the callback nor the mixin hashed the same tensors again
    # Moving the special mask (a new tensor) is hashed, and the same content keeps the decoder.
    lm.continuous_targets.special_mask = lm.continuous_targets.special_mask.clone()
    decoder = cb.decoder
    trainer.validate(lm, data, verbose=False)
    assert len(calls) > first and cb.decoder is decoder


def test_special_ids_are_never_predicted() -> None:
    targets = TargetEmbeddings.random(VOCAB, DIM, seed=0)
    targets.mark_special(*range(0, VOCAB, 2))  # every even id
    lm = TinyContinuousLM(targets=targets)
    trainer = quiet_trainer(callbacks=[DecodingCallback(decoder="exact")])
    trainer.validate(lm, loader(mapping_data(64)), verbose=False)
    x, _ = mapping_data(64)[:]
    with torch.no_grad():
        ids = lm.continuous_decode(lm.model(x), k=3)
    assert bool((ids % 2 == 1).all())
    assert math.isfinite(float(trainer.callback_metrics["val/vmf_ppl"]))


def test_rewe_mode_acc_comes_from_softmax() -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM(keep_softmax=True)
    trainer = quiet_trainer(max_epochs=3, callbacks=[DecodingCallback(decoder="exact")])
    trainer.fit(lm, loader(mapping_data(256), shuffle=True), loader(mapping_data(64, seed=1)))
    x, y = mapping_data(64, seed=1)[:]
    with torch.no_grad():
        logits, _ = lm.continuous_split_output(lm.model(x))
    softmax_acc = float((logits.argmax(-1) == y).float().mean())
    assert abs(float(trainer.callback_metrics["val/acc@1"]) - softmax_acc) < 1e-6


def test_state_dict_round_trip() -> None:
    cb = DecodingCallback()
    cb.tuned_ef = 48
    fresh = DecodingCallback()
    fresh.load_state_dict(cb.state_dict())
    assert fresh.tuned_ef == 48


# ---------------------------------------------------------------------- bad input
class Plain(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        return None


def test_callback_on_module_without_mixin() -> None:
    trainer = quiet_trainer(callbacks=[DecodingCallback()])
    expected = r"needs a LightningModule with ContinuousOutputMixin.*class Plain\(ContinuousOutputMixin"
    with pytest.raises(ValueError, match=expected):
        trainer.validate(Plain(), loader(mapping_data(8)), verbose=False)


class ReturnsLoss(TinyContinuousLM):
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return {"loss": self.continuous_validation_step(self.model(batch[0]), batch[1])["loss"]}


def test_validation_step_must_return_predictions() -> None:
    trainer = quiet_trainer(callbacks=[DecodingCallback(decoder="exact")])
    with pytest.raises(ValueError, match=r"return self.continuous_validation_step\(pred, ids\)"):
        trainer.validate(ReturnsLoss(), loader(mapping_data(8)), verbose=False)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        DecodingCallback(k=0)
    with pytest.raises(ValueError, match="decoder must be"):
        DecodingCallback(decoder="faiss")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- lifecycle
@pytest.mark.slow
def test_resume_gives_same_next_step_loss(tmp_path: Path) -> None:
    """A run resumed from a mid-training checkpoint continues exactly like an uninterrupted one."""

    class Recorder(L.Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_train_batch_end(
            self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int
        ) -> None:
            assert isinstance(outputs, dict)
            self.losses.append(float(outputs["loss"]))

    def run(max_steps: int, ckpt: str | None = None, save: bool = False) -> Recorder:
        L.seed_everything(0, verbose=False)
        rec = Recorder()
        callbacks: list[L.Callback] = [rec, DecodingCallback(decoder="exact")]
        if save:
            callbacks.append(ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=16, save_top_k=-1))
        trainer = quiet_trainer(max_steps=max_steps, callbacks=callbacks, enable_checkpointing=save)
        # 16 steps per epoch; the checkpoint at step 16 is an epoch boundary. No shuffling, so
        # the batch order after the resume does not depend on the global RNG's state.
        data = loader(mapping_data(512), batch_size=32)
        trainer.fit(TinyContinuousLM(loss=VMFLoss()), data, ckpt_path=ckpt)
        return rec

    full = run(20, save=True)
    ckpt = next(tmp_path.glob("*step=16.ckpt"))
    resumed = run(20, ckpt=str(ckpt))
    assert len(resumed.losses) == 4
    torch.testing.assert_close(torch.tensor(resumed.losses), torch.tensor(full.losses[16:]), rtol=1e-5, atol=1e-6)


def test_bf16_mixed_vmf_fit_stays_finite() -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM(loss=VMFLoss())
    trainer = quiet_trainer(max_epochs=2, precision="bf16-mixed", callbacks=[DecodingCallback(decoder="exact")])
    trainer.fit(lm, loader(mapping_data(256), shuffle=True), loader(mapping_data(64, seed=1)))
    m = metrics(trainer)
    assert all(math.isfinite(v) for v in m.values()), m
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert all(torch.isfinite(p).all() for p in lm.parameters())


@pytest.mark.slow
def test_torch_compile_body_with_head_and_loss() -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM()
    lm.model = torch.compile(lm.model)  # type: ignore[assignment]
    trainer = quiet_trainer(max_steps=6, callbacks=[DecodingCallback(decoder="exact")], limit_val_batches=1)
    trainer.fit(lm, loader(mapping_data(256), shuffle=True), loader(mapping_data(64, seed=1)))
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert "val/acc@1" in trainer.callback_metrics


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path: Path) -> None:
    """gloo DDP on 2 CPU processes: index built once, val metrics equal a 1-process run."""
    script = HERE / "ddp_script.py"
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"metrics{devices}.json"
        subprocess.run(
            [sys.executable, str(script), str(devices), str(out), str(tmp_path / f"cache{devices}")],
            check=True,
            cwd=HERE,
            timeout=600,
        )
        results[devices] = json.loads(out.read_text())
    one, two = results[1], results[2]
    assert two["build_count"] == 1 and two["cache_loads"] == 1  # rank 0 built, rank 1 loaded
    for key in ("val/acc@1", "val/acc@5", "val/mean_cos", "val/distinct_pred", "val/top_pred_share", "val/loss"):
        assert abs(one[key] - two[key]) < 1e-4, (key, one[key], two[key])


def test_special_ids_with_padding_and_small_vocab() -> None:
    """Padding (-100) next to marked special ids must not index the table (V < 100 here)."""
    from torch import nn

    vocab = 30

    class Small(TinyContinuousLM):
        def __init__(self) -> None:
            super(TinyContinuousLM, self).__init__()
            self.model = nn.Sequential(nn.Embedding(vocab, 8), nn.Linear(8, vocab))
            targets = TargetEmbeddings.random(vocab, 4, special_ids=[0])
            self.replace_softmax_head("model.1", targets, CosineLoss(ignore_index=-100))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    x = torch.randint(1, vocab, (32, 6))
    y = x.clone()
    y[:, -2:] = -100
    y[:, 0] = 0  # a special target
    data = loader(torch.utils.data.TensorDataset(x, y))
    trainer = quiet_trainer(callbacks=[DecodingCallback(decoder="exact", brier_lm=True)])
    trainer.validate(Small(), data, verbose=False)
    assert math.isfinite(float(trainer.callback_metrics["val/vmf_ppl"]))


@pytest.mark.slow
def test_csls_hubness_spreads_predictions_and_keeps_recall(tmp_path: Path) -> None:
    torch.manual_seed(0)
    train, val = loader(mapping_data(512), shuffle=True), loader(mapping_data(256, seed=1))
    results = {}
    for hubness in ("none", "csls"):
        torch.manual_seed(0)
        lm = TinyContinuousLM()
        factory = DecoderFactory("hnsw", num_threads=1, cache_dir=tmp_path)
        cb = DecodingCallback(k=5, decoder=factory, hubness=hubness)
        trainer = quiet_trainer(max_epochs=1, callbacks=[cb])
        trainer.fit(lm, train, val)
        results[hubness] = (metrics(trainer), cb)
    plain, csls = results["none"][0], results["csls"][0]
    cb = results["csls"][1]
    assert cb.session.reranked is not None and lm.continuous_decoder is cb.session.reranked
    # The re-ranked HNSW agrees with re-ranked exact search, as the plain one does with exact search.
    assert csls["val/decode_recall"] >= 0.95
    assert csls["val/distinct_pred"] >= plain["val/distinct_pred"]
    with pytest.raises(ValueError, match="hubness"):
        DecodingCallback(hubness="mnn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="candidates"):
        DecodingCallback(k=5, hubness=CSLSReranking(candidates=4))


@pytest.mark.slow
def test_prior_reranking_matches_brute_force_biased_decoding(tmp_path: Path) -> None:
    torch.manual_seed(0)
    lm = TinyContinuousLM()
    train, val = loader(mapping_data(512), shuffle=True), loader(mapping_data(256, seed=1))
    quiet_trainer(max_epochs=1).fit(lm, train)
    counts = torch.arange(VOCAB, dtype=torch.float64) ** 2  # a skewed prior: high ids are frequent
    log_prior = ((counts + 1) / (counts + 1).sum()).log()
    x, y = mapping_data(256, seed=1)[:]
    with torch.no_grad():
        pred = lm.model(x)
    cos = torch.nn.functional.normalize(pred, dim=-1) @ lm.continuous_targets.weight.T
    for weight in (0.0, 0.02):
        cb = DecodingCallback(decoder="exact", hubness=PriorReranking(counts=counts, weight=weight))
        trainer = quiet_trainer(callbacks=[cb])
        trainer.validate(lm, val, verbose=False)
        brute = (cos + weight * log_prior).argmax(-1)
        assert metrics(trainer)["val/acc@1"] == pytest.approx(float((brute == y).float().mean()), abs=1e-6)
    # Without counts or a datamodule that has them, it says what to pass.
    with pytest.raises(ValueError, match=r"PriorReranking\(counts="):
        quiet_trainer(callbacks=[DecodingCallback(hubness="prior")]).validate(lm, val, verbose=False)
    # weight=None fits κ̂ and uses 1/κ̂.
    cb = DecodingCallback(decoder="exact", hubness=PriorReranking(counts=counts))
    quiet_trainer(callbacks=[cb]).validate(lm, val, verbose=False)
    assert cb.session.reranked is not None and float(cb.session.reranked.bias.abs().max()) > 0


def test_auto_decoder_falls_back_to_exact_within_the_epoch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import lightning_contloss.decoding.factory as factory_module
    from lightning_contloss.decoding import AutoPolicy, DecoderFactory

    def failing_tune(decoder: HNSWDecoder, queries: torch.Tensor, target_recall: float, seed: int) -> int:
        decoder.tuning = {512: 0.9}
        decoder.ef = 512
        return 512

    monkeypatch.setattr(factory_module, "tune_ef", failing_tune)
    lm = TinyContinuousLM()
    hnsw_first = AutoPolicy(exact_max_elements=0)  # "auto" builds HNSW for the tiny table
    cb = DecodingCallback(k=5, decoder=DecoderFactory("auto", num_threads=1, cache_dir=tmp_path, policy=hnsw_first))
    trainer = quiet_trainer(max_epochs=2, callbacks=[cb])
    trainer.fit(lm, loader(mapping_data(256), shuffle=True), loader(mapping_data(128, seed=1)))
    m = metrics(trainer)
    assert isinstance(cb.decoder, ExactDecoder) and isinstance(lm.continuous_decoder, ExactDecoder)
    assert cb.factory.exact_fallback and cb.state_dict()["exact_fallback"] is True
    assert m["val/decode_recall"] == 1.0
    # acc@1 is the brute-force exact decode's
    x, y = mapping_data(128, seed=1)[:]
    with torch.no_grad():
        pred = lm.model(x)
    exact = (torch.nn.functional.normalize(pred, dim=-1) @ lm.continuous_targets.weight.T).argmax(-1)
    assert abs(float((exact == y).float().mean()) - m["val/acc@1"]) < 1e-6


def test_recall_is_measured_over_the_ids_the_decoder_may_return(tmp_path: Path) -> None:
    """An HNSW decoder built with exclude: the exact reference leaves the same ids out, so recall is 1 at full ef."""
    from lightning_contloss import DecoderFactory

    excluded = sorted({(7 * i + 3) % VOCAB for i in range(0, VOCAB, 3)})  # a third of the targets
    lm = TinyContinuousLM()
    quiet_trainer(max_epochs=3).fit(lm, loader(mapping_data(512), shuffle=True))
    factory = DecoderFactory("hnsw", ef=VOCAB, M=16, num_threads=1, cache_dir=tmp_path, exclude=excluded)
    cb = DecodingCallback(k=5, decoder=factory)
    trainer = quiet_trainer(callbacks=[cb])
    m = {k: float(v) for k, v in trainer.validate(lm, loader(mapping_data(128, seed=1)), verbose=False)[0].items()}
    ids, _ = cb.decoder.query(lm.continuous_targets.weight[excluded], 1)  # type: ignore[union-attr]
    assert not set(ids.flatten().tolist()) & set(excluded)
    assert m["val/decode_recall"] == 1.0
