"""The softmax baseline: the example Transformer LM trained with full-vocabulary cross-entropy."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightning_contloss.examples.data import unigram_counts_of
from lightning_contloss.examples.optim import Schedule, configure_warmup_adamw
from lightning_contloss.examples.output_layer import FullSoftmax, OutputLayer, score_chunks
from lightning_contloss.examples.transformer_lm import CausalTransformerLM
from lightning_contloss.metrics.prediction_spread import PredictionSpread

__all__ = ["SoftmaxLM"]


class _EvalMetrics(nn.Module):
    """Token-level loss, top-k accuracy and prediction spread, accumulated over an epoch."""

    def __init__(self, vocab_size: int, pad_id: int | None) -> None:
        super().__init__()
        self.k = min(5, vocab_size)
        # MeanMetric over per-token values keeps a running sum and count, so the epoch
        # figure is the exact token mean even when batches differ in size or run on many GPUs.
        self.nll = MeanMetric()
        self.acc1 = MeanMetric()
        self.acck = MeanMetric()
        self.spread = PredictionSpread(vocab_size, ignore_index=pad_id)
        self.pad_id = pad_id

    def update(self, logits: Tensor, target: Tensor) -> None:
        logits, target = logits.flatten(0, -2), target.flatten()
        if self.pad_id is not None:
            keep = target != self.pad_id
            logits, target = logits[keep], target[keep]
        if target.numel() == 0:
            return
        topk = logits.topk(self.k, dim=-1).indices
        self.nll.update(F.cross_entropy(logits.float(), target, reduction="none"))
        self.acc1.update((topk[:, 0] == target).float())
        self.acck.update((topk == target[:, None]).any(dim=-1).float())
        self.spread.update(topk[:, 0])

    def compute(self, prefix: str) -> dict[str, Tensor]:
        loss = self.nll.compute()
        spread = self.spread.compute()
        return {
            f"{prefix}/loss": loss,
            f"{prefix}/ppl": loss.exp(),
            f"{prefix}/acc@1": self.acc1.compute(),
            f"{prefix}/acc@5": self.acck.compute(),
            f"{prefix}/distinct_pred": spread["distinct_pred"].float(),
            f"{prefix}/top_pred_share": spread["top_pred_share"],
        }

    def reset(self) -> None:
        for metric in (self.nll, self.acc1, self.acck, self.spread):
            metric.reset()


class SoftmaxLM(L.LightningModule):
    """A :class:`CausalTransformerLM` with a ``Linear(d_model, V)`` head and cross-entropy, or another output layer.

    Batches are ``(x, y)`` pairs of ``[B, T]`` ids with ``y`` the next tokens. Training logs
    ``train/loss`` and ``train/tokens`` (target tokens seen so far, all processes). Validation
    and test log, per epoch: ``loss`` (token-mean cross-entropy), ``ppl`` (its exp),
    ``acc@1``, ``acc@5``, ``distinct_pred`` (distinct argmax ids) and ``top_pred_share`` (share
    of the most predicted id), under ``val/`` and ``test/``; the continuous-output example
    logs the same names. ``predict_step`` returns argmax ids.

    With ``prior_bias`` (the default) the output bias starts at the log unigram distribution
    of the training data, read from ``trainer.datamodule.unigram_counts`` when fitting
    starts (or set it yourself with :meth:`init_output_bias`). Otherwise the first hundred
    or so steps are spent pushing word frequencies through the residual stream, which
    drowns the token identity and holds accuracy at the always-"the" level; with the prior
    the model beats that baseline within tens of steps. It happens once per model: the
    ``output_bias_initialized`` buffer travels in checkpoints, so resuming never resets it.

    The optimiser is AdamW (no decay on biases and norms) with ``warmup_steps`` of linear
    warm-up, then a constant learning rate by default: runs bounded by wall-clock time have
    no known length to decay over. ``schedule="cosine"`` decays to 0.1·lr over the
    trainer's ``estimated_stepping_batches`` instead.

    ``output_layer`` swaps the softmax for a rival that a large vocabulary calls for (an
    :class:`~lightning_contloss.examples.output_layer.OutputLayer`: adaptive, sampled or chunked
    softmax); it computes the training loss, and validation scores its full ``[.., V]`` output in
    row blocks of at most 2^24 scores, so no ``[B·T, V]`` block is held at once. It is not saved as
    a hyper-parameter: pass it again when loading a checkpoint.

    Args:
        vocab_size: V.
        d_model: hidden size.
        n_layers: Transformer blocks.
        n_heads: attention heads per block.
        dim_feedforward: MLP width per block.
        dropout: dropout rate.
        lr: peak learning rate.
        weight_decay: AdamW weight decay on matrices.
        warmup_steps: linear warm-up steps.
        tie_weights: tie the output layer to the input embedding.
        pad_id: target id ignored by the loss and metrics (and the embedding's padding row).
        input_vocab_size: input-embedding rows when only the first ids occur as input (see
            :class:`CausalTransformerLM`); ``None`` gives every id a row.
        max_len: longest sequence the model accepts.
        schedule: ``"constant"`` or ``"cosine"`` after warm-up.
        prior_bias: start the output bias at the training data's log unigram distribution.
        output_layer: the output layer (``model.lm_head``); ``None`` for a
            :class:`~lightning_contloss.examples.output_layer.FullSoftmax` ``(d_model, vocab_size)``.

    Example:
        >>> lm = SoftmaxLM(vocab_size=50, d_model=16, n_layers=1, n_heads=2, dim_feedforward=32)
        >>> x = torch.randint(0, 50, (2, 6))
        >>> lm(x).shape, lm.predict_step((x, x), 0).shape
        (torch.Size([2, 6, 50]), torch.Size([2, 6]))
    """

    output_bias_initialized: Tensor

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        n_layers: int = 2,
        n_heads: int = 4,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        tie_weights: bool = False,
        pad_id: int | None = None,
        input_vocab_size: int | None = None,
        max_len: int = 512,
        schedule: Schedule = "constant",
        prior_bias: bool = True,
        output_layer: OutputLayer | None = None,
    ) -> None:
        super().__init__()
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown schedule {schedule!r}; choose 'constant' or 'cosine'")
        is_layer = isinstance(output_layer, nn.Module) and isinstance(output_layer, OutputLayer)
        if output_layer is not None and not is_layer:
            raise ValueError(
                f"output_layer must be an nn.Module with loss() and init_prior() (an OutputLayer), "
                f"got {type(output_layer).__name__}"
            )
        self.save_hyperparameters(ignore=["output_layer"])
        self.model = CausalTransformerLM(
            vocab_size,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            max_len=max_len,
            tie_weights=tie_weights,
            pad_id=pad_id,
            input_vocab_size=input_vocab_size,
            lm_head=FullSoftmax(d_model, vocab_size) if output_layer is None else output_layer,  # type: ignore[arg-type]
        )
        self.val_metrics = _EvalMetrics(vocab_size, pad_id)
        self.test_metrics = _EvalMetrics(vocab_size, pad_id)
        self.tokens_seen = 0
        self.register_buffer("output_bias_initialized", torch.tensor(False))

    def init_output_bias(self, counts: Tensor) -> None:
        """Set the output bias to the log of the add-one-smoothed unigram distribution.

        Args:
            counts: ``[V]`` training counts of each id, e.g. ``datamodule.unigram_counts``.
        """
        head = self.model.lm_head
        has_bias = isinstance(head, nn.Linear) and head.bias is not None
        if not isinstance(head, OutputLayer) and not has_bias:
            raise ValueError(f"the output layer is {type(head).__name__}, not a Linear with a bias; nothing to set")
        vocab_size = self.hparams["vocab_size"]
        if counts.shape != (vocab_size,):
            raise ValueError(
                f"counts has shape {tuple(counts.shape)} but the output layer has {vocab_size} ids; "
                f"pass one count per vocabulary id"
            )
        if bool((counts < 0).any()):
            raise ValueError("counts must be non-negative")
        smoothed = counts.to(self.output_bias_initialized.device, torch.float64) + 1.0
        log_prior = (smoothed / smoothed.sum()).log()
        if isinstance(head, OutputLayer):
            head.init_prior(log_prior)
        else:  # a plain nn.Linear assigned to model.lm_head
            assert isinstance(head, nn.Linear) and head.bias is not None
            with torch.no_grad():
                head.bias.copy_(log_prior.to(head.bias))
        self.output_bias_initialized.fill_(True)

    def on_fit_start(self) -> None:
        # Runs after a checkpoint is restored, so a resumed model keeps its trained bias.
        if not self.hparams["prior_bias"] or bool(self.output_bias_initialized):
            return
        counts = unigram_counts_of(self.trainer, "SoftmaxLM")
        if counts is not None:
            self.init_output_bias(counts)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, T, V]`` for ids ``x [B, T]``."""
        return self.model(x)

    def _count_targets(self, y: Tensor) -> int:
        pad_id = self.hparams["pad_id"]
        return int(y.numel() if pad_id is None else (y != pad_id).sum())

    def _scored_blocks(self, x: Tensor, y: Tensor) -> list[tuple[Tensor, Tensor]]:
        """``(scores [rows, V], targets [rows])`` in row blocks of at most 2^24 scores."""
        hidden = self.model.hidden_states(x).flatten(0, 1)
        blocks = score_chunks(hidden, self.hparams["vocab_size"])
        return [(self.model.lm_head(h), t) for h, t in zip(blocks, y.flatten().split([len(b) for b in blocks]))]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        pad_id = self.hparams["pad_id"]
        head = self.model.lm_head
        hidden = self.model.hidden_states(x).flatten(0, 1)
        ignore_index = -100 if pad_id is None else pad_id
        if isinstance(head, OutputLayer):
            loss = head.loss(hidden, y.flatten(), ignore_index)
        else:  # a plain nn.Linear assigned to model.lm_head
            loss = F.cross_entropy(head(hidden).float(), y.flatten(), ignore_index=ignore_index)
        # Every process sees equally sized batches, so local tokens × world size is the total.
        world_size = self.trainer.world_size if self._trainer is not None else 1
        self.tokens_seen += self._count_targets(y) * world_size
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/tokens", float(self.tokens_seen), on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        for scores, target in self._scored_blocks(*batch):
            self.val_metrics.update(scores, target)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        for scores, target in self._scored_blocks(*batch):
            self.test_metrics.update(scores, target)

    def predict_step(self, batch: Tensor | tuple[Tensor, ...] | list[Tensor], batch_idx: int) -> Tensor:
        x = batch if isinstance(batch, Tensor) else batch[0]
        return self.predict_ids(x)

    @torch.no_grad()
    def predict_ids(self, x: Tensor) -> Tensor:
        """Argmax ids ``[B, T]`` for ids ``x [B, T]``, scored in row blocks of at most 2^24 scores."""
        hidden = self.model.hidden_states(x).flatten(0, 1)
        blocks = score_chunks(hidden, self.hparams["vocab_size"])
        return torch.cat([self.model.lm_head(h).argmax(dim=-1) for h in blocks]).reshape(x.shape)

    def _log_epoch(self, metrics: _EvalMetrics, prefix: str) -> None:
        if metrics.nll.update_count == 0:
            return
        values = metrics.compute(prefix)
        for name, value in values.items():
            self.log(name, value, prog_bar=name in (f"{prefix}/loss", f"{prefix}/acc@1"))
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch(self.test_metrics, "test")

    def configure_optimizers(self) -> Any:
        return configure_warmup_adamw(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokens_seen"] = self.tokens_seen

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = int(checkpoint.get("tokens_seen", 0))
