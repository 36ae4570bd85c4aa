"""The callback's small parts without a Trainer: PredictionBuffer, EpochMetrics, LikelihoodScorer."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics import MetricCollection

from lightning_contloss import ExactDecoder, TargetEmbeddings
from lightning_contloss.callbacks import EpochMetrics, LikelihoodScorer, PredictionBuffer
from lightning_contloss.callbacks.likelihood import skip_id
from lightning_contloss.losses import CosineLoss, VMFLoss
from lightning_contloss.metrics import BrierLM, VMFPerplexity

CPU = torch.device("cpu")


def step(batch: int, length: int, dim: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"pred": torch.randn(batch, length, dim, generator=g), "target": torch.randint(0, 20, (batch, length))}


# ---------------------------------------------------------------- PredictionBuffer
def test_buffer_flattens_steps_of_different_lengths_in_order() -> None:
    buffer = PredictionBuffer(k=3)
    first, second = step(2, 5), step(3, 4, seed=1)
    buffer.add(first, 0)
    buffer.add(second, 1)
    assert len(buffer) == 2 and buffer.tokens == 22 and buffer.shapes() == [(2, 5), (3, 4)]
    pred, target = buffer.flat(torch.zeros(20, 4, dtype=torch.float64))
    assert pred.dtype == torch.float32 and pred.shape == (22, 4) and target.shape == (22,)
    torch.testing.assert_close(pred[10:], second["pred"].reshape(-1, 4))
    assert buffer.logit_topk(CPU) is None
    buffer.clear()
    assert len(buffer) == 0 and buffer.tokens == 0
    empty_pred, empty_target = buffer.flat(torch.zeros(20, 4))
    assert empty_pred.shape == (0, 4) and empty_target.shape == (0,)


def test_buffer_keeps_the_top_k_of_rewe_logits() -> None:
    buffer = PredictionBuffer(k=2)
    logits = torch.tensor([[[0.0, 3.0, 1.0, 2.0]]])
    buffer.add({**step(1, 1), "logits": logits}, 0)
    topk = buffer.logit_topk(CPU)
    assert topk is not None and topk.tolist() == [[1, 3]]


@pytest.mark.parametrize("outputs", [None, torch.zeros(3), {"loss": torch.tensor(1.0)}, {"pred": torch.zeros(2)}])
def test_buffer_refuses_a_step_without_predictions_and_stays_empty(outputs: object) -> None:
    buffer = PredictionBuffer(k=1)
    with pytest.raises(ValueError, match=r"step 7 returned .*continuous_validation_step"):
        buffer.add(outputs, 7)
    assert len(buffer) == 0 and buffer.tokens == 0


# ---------------------------------------------------------------- EpochMetrics
def test_epoch_metrics_match_a_recomputation_and_skip_padding() -> None:
    g = torch.Generator().manual_seed(0)
    table = torch.nn.functional.normalize(torch.randn(12, 4, generator=g), dim=-1)
    pred, target = torch.randn(30, 4, generator=g), torch.randint(0, 12, (30,), generator=g)
    target[::5] = -1  # padding
    ids, scores = ExactDecoder(table).query(pred, 3)
    metrics = EpochMetrics(k=3, recall_sample=10)
    metrics.new_epoch(12, ignore_index=-1, device=CPU, brier_lm=False)
    with metrics.timed(30):
        pass
    metrics.update(ids, target, pred, table, ignore_index=-1)
    metrics.update_recall(pred, ids, scores, reference=lambda: ExactDecoder(table))
    values = {k: float(v) for k, v in metrics.values(world_size=1, likelihood=True).items()}
    keep = target != -1
    assert values["acc@1"] == pytest.approx(float((ids[keep, 0] == target[keep]).float().mean()))
    assert values["acc@3"] == pytest.approx(float((ids[keep] == target[keep, None]).any(-1).float().mean()))
    cos = torch.nn.functional.cosine_similarity(pred[keep], table[target[keep]], dim=-1)
    assert values["mean_cos"] == pytest.approx(float(cos.mean()), rel=1e-5)
    assert values["decode_recall"] == 1.0 and metrics.recall_seen == 10
    assert "vmf_ppl" not in values and values["decode_qps"] > 0  # vmf_ppl saw nothing on one process


def test_recall_stops_at_its_sample_and_asks_for_the_reference_only_while_it_counts() -> None:
    asked: list[int] = []
    metrics = EpochMetrics(k=1, recall_sample=4)
    metrics.new_epoch(5, None, CPU, brier_lm=False)
    ids = torch.tensor([[0], [1], [2]])

    def reference() -> None:
        asked.append(1)

    metrics.update_recall(torch.zeros(3, 2), ids, ids.float(), reference)
    metrics.update_recall(torch.zeros(3, 2), ids, ids.float(), reference)
    metrics.update_recall(torch.zeros(3, 2), ids, ids.float(), reference)
    assert metrics.recall_seen == 4 and len(asked) == 2
    # Under DDP every metric that is on is computed on every rank, even without tokens (compute syncs).
    off = EpochMetrics(k=1, recall_sample=0)
    off.new_epoch(5, None, CPU, brier_lm=False)
    names = set(off.values(world_size=2, likelihood=False))
    assert {"acc@1", "mean_cos", "distinct_pred"} <= names and not names & {"decode_recall", "vmf_ppl"}


def test_brier_lm_is_in_the_collection_only_when_asked() -> None:
    metrics = EpochMetrics(k=2, recall_sample=0)
    metrics.new_epoch(5, None, CPU, brier_lm=True)
    assert isinstance(metrics.collection["brier_lm"], BrierLM)
    metrics.new_epoch(5, None, CPU, brier_lm=False)
    assert "brier_lm" not in metrics.collection.keys()


# ---------------------------------------------------------------- LikelihoodScorer
def scored_collection(ignore: int | None = None) -> MetricCollection:
    return MetricCollection(
        {"vmf_ppl": VMFPerplexity(ignore_index=skip_id(ignore)), "brier_lm": BrierLM(ignore_index=skip_id(ignore))},
        compute_groups=False,
    )


def test_a_loss_without_kappa_gets_the_fitted_kappa_even_when_nothing_is_picked() -> None:
    targets = TargetEmbeddings.random(20, 4, seed=0)
    metrics = scored_collection()
    scorer = LikelihoodScorer(metric_tokens=8, brier_lm=False, seed=0)
    pred, target = torch.randn(16, 4), torch.randint(0, 20, (16,))
    fits: list[int] = []

    def fit() -> float:
        fits.append(1)
        return 2.5

    assert scorer.prepare(metrics, pred, target, [], targets, CosineLoss(), fit, skip=-100) is None
    assert scorer.kappa == 2.5 and metrics["vmf_ppl"].kappa == 2.5
    scorer.prepare(metrics, pred, target, [], targets, CosineLoss(), fit, skip=-100)
    assert len(fits) == 1  # once per epoch
    scorer.new_epoch()
    assert scorer.kappa is None and scorer.scored == scorer.sequences == 0


def test_the_vmf_loss_scores_with_its_own_kappa_and_specials_are_skipped() -> None:
    targets = TargetEmbeddings.random(20, 4, seed=0, special_ids=[3])
    metrics = scored_collection()
    scorer = LikelihoodScorer(metric_tokens="auto", brier_lm=False, seed=0)
    pred, target = torch.randn(2, 4, 4), torch.tensor([[3, 1, 2, 3], [4, 5, 6, 7]])
    picks = scorer.pick([(2, 4)], shared=True)
    loss = VMFLoss(kappa_min=1.0)
    picked = scorer.prepare(
        metrics, pred.reshape(-1, 4), target.reshape(-1), picks, targets, loss, lambda: 0.0, -100, shared=True
    )
    assert picked is not None and scorer.kappa is None  # the loss fixes κ: nothing fitted
    torch.testing.assert_close(picked.pred, loss.concentration(pred.reshape(-1, 4)))
    assert isinstance(picked.kappa, torch.Tensor) and picked.kappa.shape == (8,)
    assert picked.target.tolist() == [-100, 1, 2, -100, 4, 5, 6, 7]
    scorer.update(metrics, picked, None, targets)
    ref = VMFPerplexity(ignore_index=-100)
    ref.update(picked.pred, picked.target, targets.weight, exclude_mask=targets.special_mask)
    assert float(metrics["vmf_ppl"].compute()) == pytest.approx(float(ref.compute()), rel=1e-5)
    assert scorer.scored == 8 and scorer.sequences == 2


def test_picks_follow_the_budget_and_brier_lm_counts_whole_sequences() -> None:
    targets = TargetEmbeddings.random(20, 4, seed=0)
    metrics = scored_collection()
    scorer = LikelihoodScorer(metric_tokens=10, brier_lm=True, seed=3)
    shapes = [(3, 4), (2, 6)]
    picks = scorer.pick(shapes, shared=False)
    assert picks == [(0, 3, 4)] and scorer.sequences == 5  # 10 tokens: 3 sequences of 4
    pred, target = torch.randn(24, 4), torch.randint(0, 20, (24,))
    picked = scorer.prepare(metrics, pred, target, picks, targets, CosineLoss(), lambda: 4.0, -100)
    assert picked is not None and picked.kappa is None and picked.rows == 12  # not shared: vmf_ppl scans itself
    scorer.update(metrics, picked, None, targets)
    assert scorer.scored == 12 and math.isfinite(float(metrics["brier_lm"].compute()))
    assert scorer.pick(shapes, shared=False) == []  # the budget is spent
