"""HNSWDecodingCallback: builds the decoder and logs decoding metrics during validation and test."""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lightning_contloss.decoding import Decoder, HNSWDecoder, RerankedDecoder, make_decoder, tune_ef
from lightning_contloss.decoding.cache import default_cache_dir
from lightning_contloss.functional.vmf_distribution import fit_kappa, vmf_sample
from lightning_contloss.losses import VMFLoss
from lightning_contloss.metrics import BrierLM, DecodingRecall, NeighborAccuracy, PredictionSpread, VMFPerplexity
from lightning_contloss.mixin import ContinuousOutputMixin

__all__ = ["HNSWDecodingCallback"]

log = logging.getLogger(__name__)

KAPPA_FIT_TOKENS = 2048
# Predictions CSLS's hubness term is estimated on, per epoch (cost: this many × V similarities).
CSLS_SAMPLE_TOKENS = 4096


class HNSWDecodingCallback(Callback):
    """Decodes a continuous model's predictions by k-NN and logs what they are worth.

    At the start of fit, validate, test and predict it builds the decoder from the module's
    ``continuous_targets`` in the loss's ``decode_space`` (or loads the index from the on-disk
    cache), and rebuilds it whenever the targets' content changes. Under DDP global rank 0
    builds and writes the cache; the other ranks load it after a barrier, so the index is
    built once. Predictions returned by ``continuous_validation_step`` are buffered and
    decoded in large batches (hnswlib runs small batches on one thread). On the first buffer
    it sees, an HNSW decoder's ``ef`` is tuned to ``target_recall`` against exact search,
    unless ``ef`` was given.

    With ``hubness="csls"`` the tokens are chosen by CSLS instead of plain similarity
    (:class:`~lightning_contloss.decoding.RerankedDecoder`): each epoch the hubness ``r_w`` of
    every target is estimated on the first buffer's predictions, and the decoder's
    ``rerank_candidates`` nearest ids are re-ranked by ``sim − r_w / 2``. It counters collapse
    onto frequent words (more distinct predictions) at some cost in acc@1; ``predict`` then
    uses the last estimate. With ``hubness="prior"`` the candidates are re-ranked by
    ``sim + β·log p(w)`` instead, ``p`` the add-one unigram of ``prior_counts`` (default:
    ``trainer.datamodule.unigram_counts``) and ``β = prior_weight`` or, when that is ``None``,
    ``1/κ̂`` with κ̂ fitted each epoch on the first buffer: the Bayes rule under a vMF likelihood
    ``p(ê | w) ∝ exp(κ·cos(ê, e_w))``. It helps where rare words crowd the space near the
    predictions (GloVe's 400k words), not on a 10k vocabulary with random targets.

    Logged at the end of each validation (prefix ``test/`` under ``trainer.test``):

    - ``val/acc@1``, ``val/acc@k``: the target is the nearest / among the k nearest targets
      (in ReWE mode, among the top-k logits of the kept softmax);
    - ``val/mean_cos``: mean cosine between prediction and target embedding;
    - ``val/decode_recall``: recall@1 of the decoder against exact search, on up to
      ``recall_sample`` tokens per epoch and process;
    - ``val/decode_qps``: decoded tokens per second (mean over processes);
    - ``val/distinct_pred``, ``val/top_pred_share``: how many distinct tokens were predicted,
      and the share of the most predicted one, which expose collapse onto frequent words;
    - ``val/vmf_ppl``: perplexity under ``p(w) ∝ exp(κ·cos(ê, e_w))`` normalised over all V
      rows, on up to ``metric_tokens`` tokens per epoch and process; κ is ``‖ê‖`` for vMF
      losses and, for losses that leave the norm arbitrary, one κ fitted by ``fit_kappa`` on
      2048 of those tokens each epoch;
    - ``val/brier_lm`` (when ``brier_lm=True``): BrierLM from two samples of the same
      distribution per position, on the same tokens.

    Means are synced across processes (torchmetrics states are summed).

    Args:
        k: the k of ``acc@k``.
        decoder: ``"auto"``, ``"exact"`` or ``"hnsw"`` (see ``make_decoder``).
        ef: HNSW search breadth; ``None`` tunes it on the first validation buffer.
        M: HNSW graph degree.
        ef_construction: HNSW build breadth; ``None`` sizes it to the table
            (``decoding.auto_ef_construction``: 200 up to 160k rows, less above).
        num_threads: HNSW threads (``None``: all available CPUs).
        target_recall: recall@1 that ``ef`` tuning aims for.
        recall_sample: tokens per epoch checked against exact search.
        metric_tokens: tokens per epoch used for ``vmf_ppl`` and ``brier_lm`` (each costs
            ``O(V·D)`` per token); 0 turns both off.
        brier_lm: also log BrierLM.
        buffer_tokens: predictions buffered before a decode.
        cache_dir: index cache folder; ``None`` uses the default user cache dir, ``False``
            disables the cache (then every DDP rank builds its own index).
        seed: seed of sampling for BrierLM.
        hubness: ``"none"`` (rank by similarity), ``"csls"`` or ``"prior"``.
        csls_k: CSLS neighbourhood size.
        rerank_candidates: neighbours re-ranked per token with ``hubness`` ``"csls"`` or ``"prior"``.
        prior_weight: β of ``hubness="prior"``; ``None`` uses ``1/κ̂``.
        prior_counts: ``[V]`` word counts of ``hubness="prior"``; ``None`` reads the datamodule's.

    Example:
        >>> trainer = L.Trainer(callbacks=[HNSWDecodingCallback(k=5)], logger=False, enable_checkpointing=False)
    """

    def __init__(
        self,
        k: int = 5,
        decoder: Literal["auto", "exact", "hnsw"] = "auto",
        ef: int | None = None,
        M: int = 16,
        ef_construction: int | None = None,
        num_threads: int | None = None,
        target_recall: float = 0.99,
        recall_sample: int = 1024,
        metric_tokens: int = 8192,
        brier_lm: bool = False,
        buffer_tokens: int = 16384,
        cache_dir: str | os.PathLike[str] | Literal[False] | None = None,
        seed: int = 0,
        hubness: Literal["none", "csls", "prior"] = "none",
        csls_k: int = 10,
        rerank_candidates: int = 32,
        prior_weight: float | None = None,
        prior_counts: Tensor | None = None,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if decoder not in ("auto", "exact", "hnsw"):
            raise ValueError(f"decoder must be 'auto', 'exact' or 'hnsw', got {decoder!r}")
        if hubness not in ("none", "csls", "prior"):
            raise ValueError(f"hubness must be 'none', 'csls' or 'prior', got {hubness!r}")
        if prior_weight is not None and not (math.isfinite(prior_weight) and prior_weight >= 0):
            raise ValueError(f"prior_weight must be a finite number >= 0 or None, got {prior_weight}")
        if prior_counts is not None and (prior_counts.dim() != 1 or bool((prior_counts < 0).any())):
            raise ValueError("prior_counts must be a [V] tensor of non-negative counts")
        if csls_k < 1 or rerank_candidates < k:
            raise ValueError(
                f"csls_k must be >= 1 and rerank_candidates >= k={k}, got {csls_k} and {rerank_candidates}"
            )
        if buffer_tokens < 1 or recall_sample < 0 or metric_tokens < 0:
            raise ValueError("buffer_tokens must be >= 1, recall_sample and metric_tokens >= 0")
        self.k = k
        self.decoder_kind = decoder
        self.ef = ef
        self.M = M
        self.ef_construction = ef_construction
        self.num_threads = num_threads
        self.target_recall = target_recall
        self.recall_sample = recall_sample
        self.metric_tokens = metric_tokens
        self.brier_lm = brier_lm
        self.buffer_tokens = buffer_tokens
        self.cache_dir = cache_dir
        self.seed = seed
        self.hubness = hubness
        self.csls_k = csls_k
        self.rerank_candidates = rerank_candidates
        self.prior_weight = prior_weight
        self.prior_counts = prior_counts
        self._log_prior: Tensor | None = None
        self._reranked: RerankedDecoder | None = None
        self.tuned_ef: int | None = None
        self.decoder: Decoder | None = None
        self.build_count = 0
        self._targets_hash: str | None = None
        self._buffer: list[tuple[Tensor, Tensor]] = []
        self._logit_ids: list[Tensor] = []
        self._buffered = 0
        self._metrics: dict[str, Any] = {}
        self._kappa: float | None = None
        self._fitted_kappa: float | None = None
        self._skip_id = -100
        self._exact: Decoder | None = None
        self._decode_tokens = 0
        self._decode_seconds = 0.0
        self._recall_seen = 0
        self._metric_seen = 0

    # ------------------------------------------------------------------ decoder life cycle
    @staticmethod
    def _module(pl_module: L.LightningModule) -> ContinuousOutputMixin:
        if not isinstance(pl_module, ContinuousOutputMixin):
            raise ValueError(
                f"HNSWDecodingCallback needs a LightningModule with ContinuousOutputMixin, got "
                f"{type(pl_module).__name__}; declare it as class {type(pl_module).__name__}"
                "(ContinuousOutputMixin, L.LightningModule)"
            )
        if getattr(pl_module, "_continuous_path", None) is None:
            raise ValueError(
                f"{type(pl_module).__name__} has no continuous head; call self.replace_softmax_head(...) in __init__"
            )
        return pl_module

    def _cache_dir(self) -> str | os.PathLike[str] | None:
        if self.cache_dir is False:
            return None
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    def _build(self, module: ContinuousOutputMixin) -> Decoder:
        kwargs: dict[str, Any] = {
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef": self.ef or self.tuned_ef or 64,
            "num_threads": self.num_threads,
            "cache_dir": self._cache_dir(),
        }
        if self.decoder_kind == "exact":
            kwargs = {}
        return make_decoder(module.continuous_targets, module.decode_space, self.decoder_kind, **kwargs)

    def _ensure_decoder(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = self._module(pl_module)
        digest = module.continuous_targets.content_hash()
        if self.decoder is not None and digest == self._targets_hash:
            module.decoder = self.decoder
            return
        shared_cache = self._cache_dir() is not None and trainer.world_size > 1
        decoder: Decoder | None = None
        if trainer.is_global_zero or not shared_cache:
            decoder = self._build(module)
        # Every rank reaches this barrier; the others then load what rank 0 wrote to the cache.
        trainer.strategy.barrier("lightning_contloss_decoder_built")
        if decoder is None:
            decoder = self._build(module)
        if isinstance(decoder, HNSWDecoder) and not decoder.from_cache:
            self.build_count += 1
            log.info("built %r in %.2f s", decoder, decoder.build_seconds)
        self.decoder = decoder
        self._exact = None
        self._targets_hash = digest
        module.decoder = decoder

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._module(pl_module)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ensure_decoder(trainer, pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ensure_decoder(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ensure_decoder(trainer, pl_module)
        self._reset(pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ensure_decoder(trainer, pl_module)
        self._reset(pl_module)

    # ------------------------------------------------------------------ metrics
    def _reset(self, pl_module: L.LightningModule) -> None:
        module = self._module(pl_module)
        ignore = module.continuous_ignore_index
        self._skip_id = ignore if ignore is not None else -100
        device = module.continuous_targets.weight.device
        self._metrics = {
            "acc@1": NeighborAccuracy(1, ignore_index=ignore),
            f"acc@{self.k}": NeighborAccuracy(self.k, ignore_index=ignore),
            "decode_recall": DecodingRecall(1),
            "spread": PredictionSpread(len(module.continuous_targets), ignore_index=ignore),
            "vmf_ppl": VMFPerplexity(ignore_index=self._skip_id),
            "cos_sum": torch.zeros((), dtype=torch.float64, device=device),
            "cos_count": torch.zeros((), dtype=torch.float64, device=device),
        }
        if self.brier_lm:
            self._metrics["brier_lm"] = BrierLM(ignore_index=self._skip_id)
        for m in self._metrics.values():
            if isinstance(m, torch.nn.Module):
                m.to(device)
        self._buffer, self._buffered, self._logit_ids = [], 0, []
        self._decode_tokens, self._decode_seconds = 0, 0.0
        self._recall_seen = self._metric_seen = 0
        self._kappa = None
        self._fitted_kappa = None
        self._reranked = None
        if self.hubness == "prior":
            self._log_prior = self._read_log_prior(pl_module, len(module.continuous_targets))

    def _read_log_prior(self, pl_module: L.LightningModule, vocab: int) -> Tensor:
        counts = self.prior_counts
        if counts is None:
            trainer = pl_module._trainer
            counts = getattr(getattr(trainer, "datamodule", None), "unigram_counts", None)
        if counts is None:
            raise ValueError(
                "hubness='prior' needs word counts: pass HNSWDecodingCallback(prior_counts=...) or use a "
                "datamodule with a unigram_counts property (as the example datamodules have)"
            )
        if counts.shape != (vocab,):
            raise ValueError(f"prior_counts has shape {tuple(counts.shape)} but the vocabulary has {vocab} ids")
        smoothed = counts.detach().double().cpu() + 1.0
        return (smoothed / smoothed.sum()).log().float()

    def _collect(self, outputs: Any, batch_idx: int) -> None:
        if not isinstance(outputs, dict) or "pred" not in outputs or "target" not in outputs:
            raise ValueError(
                f"validation/test step {batch_idx} returned {type(outputs).__name__}; return "
                "self.continuous_validation_step(pred, ids) so the callback can decode the predictions"
            )
        pred, target = outputs["pred"], outputs["target"]
        self._buffer.append((pred, target))
        logits = outputs.get("logits")
        if logits is not None:
            # ReWE mode: tokens come from the kept softmax; k-NN metrics still judge the regression head.
            self._logit_ids.append(logits.topk(self.k, dim=-1).indices.reshape(-1, self.k))
        self._buffered += target.numel()

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect(outputs, batch_idx)
        if self._buffered >= self.buffer_tokens:
            self._flush(pl_module)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    @torch.no_grad()
    def _flush(self, pl_module: L.LightningModule) -> None:
        if not self._buffer:
            return
        module = self._module(pl_module)
        assert self.decoder is not None
        table = module.continuous_targets.weight
        flat_pred = torch.cat([p.reshape(-1, p.shape[-1]) for p, _ in self._buffer]).float()
        flat_target = torch.cat([t.reshape(-1) for _, t in self._buffer]).to(table.device)
        if isinstance(self.decoder, HNSWDecoder) and self.ef is None and self.tuned_ef is None:
            self.tuned_ef = tune_ef(self.decoder, flat_pred, target_recall=self.target_recall, seed=self.seed)
            log.info("tuned HNSW ef=%d for recall@1 >= %.3f", self.tuned_ef, self.target_recall)
        elif isinstance(self.decoder, HNSWDecoder) and self.tuned_ef is not None and self.ef is None:
            self.decoder.ef = self.tuned_ef
        decoder: Decoder = self.decoder
        if self.hubness != "none":
            if self._reranked is None or self._reranked.base is not self.decoder:
                # Re-estimated each epoch: r_w and κ̂ depend on where the predictions are now.
                self._reranked = self._rerank(module, flat_pred, flat_target)
                module.decoder = self._reranked
            decoder = self._reranked
        start = time.perf_counter()
        ids, _ = decoder.query(flat_pred, self.k)
        self._decode_seconds += time.perf_counter() - start
        self._decode_tokens += flat_pred.shape[0]
        ids = ids.to(table.device)
        knn_ids = ids
        if self._logit_ids:
            ids = torch.cat(self._logit_ids).to(table.device)
        m = self._metrics
        m["acc@1"].update(ids, flat_target)
        m[f"acc@{self.k}"].update(ids, flat_target)
        m["spread"].update(ids[:, 0], flat_target)
        ignore = module.continuous_ignore_index
        keep = flat_target != ignore if ignore is not None else torch.ones_like(flat_target, dtype=torch.bool)
        kept_target = flat_target[keep]
        cos = torch.nn.functional.cosine_similarity(flat_pred.to(table.device)[keep], table[kept_target], dim=-1)
        m["cos_sum"] += cos.double().sum()
        m["cos_count"] += cos.numel()
        self._recall(module, flat_pred, knn_ids)
        self._likelihood_metrics(module)
        self._buffer, self._buffered, self._logit_ids = [], 0, []

    def _rerank(self, module: ContinuousOutputMixin, flat_pred: Tensor, flat_target: Tensor) -> RerankedDecoder:
        assert self.decoder is not None
        if self.hubness == "csls":
            return RerankedDecoder.csls(
                self.decoder, flat_pred[:CSLS_SAMPLE_TOKENS], k=self.csls_k, candidates=self.rerank_candidates
            )
        assert self._log_prior is not None
        weight = self.prior_weight
        if weight is None:
            kappa = self._epoch_kappa(module, flat_pred, flat_target)
            # κ̂ = 0 means the predictions say nothing about the word: the prior alone decides.
            weight = 1.0 / kappa if kappa > 0 else 1e3
        return RerankedDecoder(self.decoder, weight * self._log_prior, self.rerank_candidates)

    def _epoch_kappa(self, module: ContinuousOutputMixin, flat_pred: Tensor, flat_target: Tensor) -> float:
        """κ̂ of ``fit_kappa`` on the epoch's first tokens, fitted once and shared by ``vmf_ppl`` and the prior."""
        if self._fitted_kappa is None:
            targets = module.continuous_targets
            # Each Newton step is a pass over the table: fit on a sample, it is one scalar.
            sample_t = flat_target[:KAPPA_FIT_TOKENS].to(targets.weight.device)
            sample_p = flat_pred[:KAPPA_FIT_TOKENS].to(targets.weight.device)
            exclude = targets.special_mask if bool(targets.special_mask.any()) else None
            # Padding and special targets have no likelihood: leave them out of the fit.
            keep = sample_t != self._skip_id
            if exclude is not None:
                keep &= ~exclude[torch.where(keep, sample_t, 0)]
            self._fitted_kappa = (
                fit_kappa(sample_p[keep], sample_t[keep], targets.weight, exclude_mask=exclude)
                if bool(keep.any())
                else 0.0
            )
        return self._fitted_kappa

    def _recall(self, module: ContinuousOutputMixin, flat_pred: Tensor, ids: Tensor) -> None:
        take = min(self.recall_sample - self._recall_seen, flat_pred.shape[0])
        if take <= 0 or self.decoder is None:
            return
        if self._exact is None:
            self._exact = make_decoder(module.continuous_targets, self.decoder.space, "exact")
        exact: Decoder = self._exact
        if self._reranked is not None:
            # The same re-ranking over exact candidates: recall measures the index, not the rule.
            exact = RerankedDecoder(exact, self._reranked.bias, self._reranked.candidates)
        exact_ids, _ = exact.query(flat_pred[:take], 1)
        self._metrics["decode_recall"].update(ids[:take, :1], exact_ids.to(ids.device))
        self._recall_seen += take

    def _likelihood_metrics(self, module: ContinuousOutputMixin) -> None:
        budget = self.metric_tokens - self._metric_seen
        if budget <= 0:
            return
        targets = module.continuous_targets
        device = targets.weight.device
        # Whole sequences, so BrierLM sees n-grams; as many as fit in the token budget.
        preds: list[Tensor] = []
        tgts: list[Tensor] = []
        used = 0
        for pred, target in self._buffer:
            length = pred.shape[-2] if pred.dim() > 2 else 1
            p = pred.reshape(-1, length, pred.shape[-1])
            t = target.reshape(-1, length)
            rows = min(p.shape[0], -(-(budget - used) // length))
            preds.append(p[:rows])
            tgts.append(t[:rows])
            used += rows * length
            if used >= budget:
                break
        pred_seq = torch.cat(preds).float().to(device)
        target_seq = torch.cat(tgts).to(device)
        exclude = targets.special_mask if bool(targets.special_mask.any()) else None
        if exclude is not None:
            # A special target has probability 0 once its row is excluded: skip it like padding.
            valid = target_seq != self._skip_id
            special = valid & exclude[torch.where(valid, target_seq, 0)]
            target_seq = torch.where(special, self._skip_id, target_seq)
        if self._kappa is None and not any(isinstance(x, VMFLoss) for x in module.continuous_loss_fn.modules()):
            self._kappa = self._epoch_kappa(module, pred_seq.reshape(-1, pred_seq.shape[-1]), target_seq.reshape(-1))
            self._metrics["vmf_ppl"].kappa = self._kappa
        self._metrics["vmf_ppl"].update(pred_seq, target_seq, targets.weight, exclude_mask=exclude)
        if self.brier_lm:
            g = torch.Generator(device=device).manual_seed(self.seed + self._metric_seen)
            samples = vmf_sample(pred_seq, targets.weight, 2, kappa=self._kappa, exclude_mask=exclude, generator=g)
            self._metrics["brier_lm"].update(samples[0], samples[1], target_seq)
        self._metric_seen += used

    def _log_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str) -> None:
        self._flush(pl_module)
        m = self._metrics
        if not m:
            return
        values: dict[str, Tensor | float] = {}
        for name in ("acc@1", f"acc@{self.k}", "decode_recall"):
            if m[name].update_count:
                values[name] = m[name].compute()
        if m["spread"].update_count:
            spread = m["spread"].compute()
            values["distinct_pred"] = spread["distinct_pred"].float()
            values["top_pred_share"] = spread["top_pred_share"]
        if m["vmf_ppl"].update_count:
            values["vmf_ppl"] = m["vmf_ppl"].compute()
        if "brier_lm" in m and m["brier_lm"].update_count:
            values["brier_lm"] = m["brier_lm"].compute()
        cos = trainer.strategy.reduce(torch.stack([m["cos_sum"], m["cos_count"]]), reduce_op="sum")
        if float(cos[1]) > 0:
            values["mean_cos"] = cos[0] / cos[1]
        for name, value in values.items():
            # Already synced by torchmetrics; sync_dist averages equal values and keeps Lightning quiet.
            pl_module.log(f"{prefix}/{name}", torch.as_tensor(value, dtype=torch.float32), sync_dist=True)
        if self._decode_seconds > 0:
            qps = torch.tensor(self._decode_tokens / self._decode_seconds, dtype=torch.float32)
            pl_module.log(f"{prefix}/decode_qps", qps, sync_dist=True)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_epoch(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_epoch(trainer, pl_module, "test")

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {"tuned_ef": self.tuned_ef, "targets_hash": self._targets_hash}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tuned_ef = state_dict.get("tuned_ef")
