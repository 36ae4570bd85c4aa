"""A tiny continuous-output LM and data shared by the mixin, callback and lifecycle tests."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import Metric

from lightning_contloss import ContinuousOutputMixin, DecoderFactory, ExactDecoder, HNSWDecoder, TargetEmbeddings
from lightning_contloss.decoding import Decoder
from lightning_contloss.losses import CosineLoss

VOCAB = 200
HIDDEN = 32
DIM = 16


class TinyBody(nn.Module):
    """Embedding -> MLP -> lm_head, so a position's output depends on its own token only."""

    def __init__(self, vocab: int = VOCAB, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
        self.lm_head = nn.Linear(hidden, vocab)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.lm_head(self.mlp(self.embed(x)))
        return out


class TinyContinuousLM(ContinuousOutputMixin, L.LightningModule):
    def __init__(
        self,
        lr: float = 1e-2,
        targets: TargetEmbeddings | None = None,
        loss: Metric | None = None,
        keep_softmax: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = TinyBody()
        self.replace_softmax_head(
            "model.lm_head",
            targets if targets is not None else TargetEmbeddings.random(VOCAB, DIM, seed=0),
            loss if loss is not None else CosineLoss(),
            keep_softmax=keep_softmax,
        )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return self.continuous_loss(self.model(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        return self.continuous_validation_step(self.model(x), y)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        return self.continuous_test_step(self.model(x), y)

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self.continuous_predict_step(self.model(batch[0]), k=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


def mapping_data(n: int = 512, length: int = 8, seed: int = 0) -> TensorDataset:
    """Token i maps to (7·i + 3) mod V: learnable by a per-position model."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (n, length), generator=g)
    return TensorDataset(x, (x * 7 + 3) % VOCAB)


def loader(ds: TensorDataset, batch_size: int = 64, shuffle: bool = False) -> DataLoader[Any]:
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle)


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    defaults: dict[str, Any] = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "accelerator": "cpu",
        "devices": 1,
    }
    defaults.update(kwargs)
    return L.Trainer(**defaults)


class RankDecidingFactory(DecoderFactory):
    """An ``ef=None`` HNSW factory whose first adapt decides by the rank, as the timing of real tuning can.

    ``decisions[rank]`` is the ``ef`` that rank would tune, or ``"exact"`` to fall back to exact
    search. ``rank`` is fixed, or read from ``torch.distributed`` (0 without a process group) when
    ``None``. ``decided`` counts the decisions this rank made itself.
    """

    def __init__(self, decisions: dict[int, int | str], rank: int | None = None, cache_dir: Any = False) -> None:
        super().__init__("hnsw", M=8, num_threads=1, cache_dir=cache_dir)
        self.decisions = decisions
        self.rank = rank
        self.decided = 0

    def adapt(self, decoder: Decoder, queries: Tensor, targets: TargetEmbeddings | None = None) -> bool:
        if self.tuned_ef is None and not self.exact_fallback and isinstance(decoder, HNSWDecoder):
            self.decided += 1
            rank = self.rank if self.rank is not None else (
                torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            )
            decision = self.decisions[rank]
            if decision == "exact":
                return self._fall_back(f"rank {rank} says so")
            assert isinstance(decision, int)
            self.tuned_ef = decision
        return super().adapt(decoder, queries, targets)

    def __call__(self, targets: TargetEmbeddings, space: str) -> Decoder:
        # Like "auto" after a fall-back (an "auto" table this small would never pick HNSW).
        return ExactDecoder(targets, space) if self.exact_fallback else super().__call__(targets, space)


def compare_row(run: str, acc: float | None, tps: float, rss: float, distinct: float, **extra: Any) -> dict[str, Any]:
    """A result row of ``compare`` as a worker writes it, for report tests.

    The accuracy curve rises linearly from 0 to ``acc`` over three evaluations in 10 s of
    training; the unigram baseline is 0.05 on 8192 validation tokens. ``extra`` overrides any key.
    """
    from lightning_contloss.compare.spec import parse_run

    spec = parse_run(run)
    final = acc or 0.0
    curve = [
        {"seconds": 10 * i / 3, "tokens": int(tps * 10 * i / 3), "epochs": tps * 10 * i / 3e5, "acc1": final * i / 3}
        for i in range(4)
    ]
    row: dict[str, Any] = {
        "spec": spec.to_dict(),
        "label": spec.label,
        "vocab_size": 1000,
        "output_params": 1234,
        "budget_s": 10.0,
        "train_seconds": 10.0,
        "tokens": int(tps * 10),
        "tokens_per_s": tps,
        "peak_rss_mb": rss,
        "acc1": acc,
        "acc5": None if acc is None else acc + 0.1,
        "ppl": 300.0,
        "ppl_kind": "vMF" if spec.continuous else "softmax",
        "brier_lm": 1.5,
        "brier_orders": [0.2, 0.05, 0.01, 0.002],
        "decode_recall": 0.99 if spec.continuous else None,
        "decode_qps": 5e4,
        "distinct_pred": distinct,
        "unigram_acc1": 0.05,
        "unigram_word": "the",
        "valid_tokens": 8192,
        "curve": curve,
    }
    if spec.continuous:
        row.update(acc1_csls=final - 0.01, distinct_pred_csls=2 * distinct, acc1_prior=final, distinct_pred_prior=1)
    row.update(extra)
    return row
