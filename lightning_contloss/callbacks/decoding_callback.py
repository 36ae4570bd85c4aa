"""DecodingCallback: Lightning's hooks around a decoding session; buffers predictions, decodes them, logs metrics."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torchmetrics import MetricCollection

from lightning_contloss._arguments import int_arg
from lightning_contloss.callbacks.buffer import PredictionBuffer
from lightning_contloss.callbacks.epoch_metrics import EpochMetrics
from lightning_contloss.callbacks.epoch_state import share_epoch_state
from lightning_contloss.callbacks.kappa import KappaEstimator, loss_concentration
from lightning_contloss.callbacks.likelihood import LikelihoodScorer, skip_id
from lightning_contloss.callbacks.session import DecodingSession
from lightning_contloss.decoding.base import Decoder
from lightning_contloss.decoding.factory import DecoderFactory
from lightning_contloss.decoding.rerankers import CSLSReranking, EpochStatistics, PriorReranking, Reranking
from lightning_contloss.mixin import ContinuousOutputMixin

__all__ = ["DecodingCallback"]


def _part(part: str, name: str, doc: str, settable: bool = False) -> Any:
    """A property of the callback that reads (and, when ``settable``, writes) attribute ``name`` of one of its parts."""

    def setter(self: Any, value: Any) -> None:
        setattr(getattr(self, part), name, value)

    return property(lambda self: getattr(getattr(self, part), name), setter if settable else None, doc=doc)


class DecodingCallback(Callback):
    """Decodes a continuous model's predictions by k-NN and logs what they are worth.

    At the start of each validation, test and predict loop (not before: a fit without validation
    builds nothing) its :class:`~lightning_contloss.callbacks.DecodingSession` gets the decoder of
    the module's ``continuous_targets`` in the loss's decode space from the
    :class:`~lightning_contloss.decoding.DecoderFactory` (an HNSW index comes from the on-disk
    cache when it can; under DDP or FSDP it is built once per cache folder), and again whenever
    the targets' content changes. Predictions returned by ``continuous_validation_step`` are
    buffered and decoded in large batches (hnswlib runs small batches on one thread); the first
    buffer also adapts the decoder (an HNSW ``ef`` is tuned to a target recall unless it was
    given). Under DDP or FSDP rank 0 alone adapts, on its first validation batch, and every rank
    takes its decision (:func:`~lightning_contloss.callbacks.share_epoch_state`), with one κ̂.

    With ``hubness`` the tokens are chosen by a re-ranking rule fitted to each epoch's first
    buffer: ``"csls"`` (:class:`~lightning_contloss.decoding.CSLSReranking`, counters collapse
    onto frequent words) or ``"prior"`` (:class:`~lightning_contloss.decoding.PriorReranking`,
    ``sim + β·log p(w)`` with the datamodule's ``unigram_counts`` and β = 1/κ̂), or a rule object
    of your own. ``predict`` then uses the last fitted rule.

    Logged at the end of each validation (prefix ``test/`` under ``trainer.test``), one ``log_dict``:
    ``val/acc@1`` and ``val/acc@k`` (the target is the nearest / among the k nearest; in ReWE
    mode, among the kept softmax's top-k logits), ``val/mean_cos``, ``val/decode_recall``
    (recall@1 against exact search on up to ``recall_sample`` tokens), ``val/decode_qps``,
    ``val/distinct_pred`` and ``val/top_pred_share`` (collapse onto frequent words),
    ``val/vmf_ppl`` (perplexity under ``p(w) ∝ exp(κ·cos(ê, e_w))`` over all V rows, on the
    ``metric_tokens`` sample; κ is the loss's own when it fixes one, e.g. the vMF loss's ``‖ê‖``,
    else one κ̂ a :class:`~lightning_contloss.callbacks.KappaEstimator` fits per epoch; exact
    search in cosine space gives the normaliser from its own scores) and, with ``brier_lm``,
    ``val/brier_lm`` (from two samples per position, on the same tokens).

    The metrics are one ``torchmetrics.MetricCollection`` (:attr:`metrics`), synced across processes.

    Args:
        k: the k of ``acc@k``.
        decoder: ``"auto"``, ``"exact"``, ``"hnsw"``, a ``DecoderFactory`` (for HNSW settings:
            ``DecoderFactory("hnsw", ef=64, M=32, num_threads=4, cache_dir=...)``), a ready
            ``Decoder``, or a callable ``(targets, space) -> Decoder``.
        hubness: ``"none"`` (rank by similarity), ``"csls"``, ``"prior"``, or a re-ranking rule
            (``CSLSReranking(k=10, candidates=32)``, ``PriorReranking(counts=..., weight=...)``).
        recall_sample: tokens per epoch checked against exact search.
        metric_tokens: tokens per epoch and process used for ``vmf_ppl`` and ``brier_lm`` (each
            token costs ``O(V·D)``, what a softmax's logits cost). ``"auto"``: up to 8,192 whole
            sequences' tokens, every sequence when the decoder shares its scores (exact search
            in cosine space), else one sequence in 16 (HNSW: the metrics then cost about 1/16
            of a softmax validation's output layer). An int: the epoch's first that many
            tokens (whole sequences). 0 turns both off.
        brier_lm: also log BrierLM.
        buffer_tokens: predictions buffered before a decode.
        seed: seed of sampling for BrierLM and of the ``ef`` tuning sample.

    Example:
        >>> trainer = L.Trainer(callbacks=[DecodingCallback(k=5)], logger=False, enable_checkpointing=False)
        >>> DecodingCallback(decoder=DecoderFactory("hnsw", ef=64, num_threads=2)).factory
        DecoderFactory('hnsw', ef=64, tuned_ef=None)
    """

    def __init__(
        self,
        k: int = 5,
        decoder: str | DecoderFactory | Decoder | Any = "auto",
        hubness: Literal["none", "csls", "prior"] | Reranking = "none",
        *,
        recall_sample: int = 1024,
        metric_tokens: int | Literal["auto"] = "auto",
        brier_lm: bool = False,
        buffer_tokens: int = 16384,
        seed: int = 0,
    ) -> None:
        self.k = int_arg(k, "k", 1, rule=">= 1")
        recall_sample = int_arg(recall_sample, "recall_sample", 0)
        if isinstance(metric_tokens, str) and metric_tokens != "auto":
            raise ValueError(f'metric_tokens must be "auto" or an int >= 0, got {metric_tokens!r}')
        if metric_tokens != "auto":
            metric_tokens = int_arg(metric_tokens, "metric_tokens", 0, rule='>= 0 or "auto"')
        self.buffer_tokens = int_arg(buffer_tokens, "buffer_tokens", 1)
        if not isinstance(brier_lm, bool):
            raise ValueError(f"brier_lm must be True or False, got {brier_lm!r}")
        seed = int_arg(seed, "seed")
        factory = decoder if isinstance(decoder, DecoderFactory) else DecoderFactory(decoder, seed=seed)
        self.session = DecodingSession(factory, _reranking(hubness, self.k))
        self.kappa = KappaEstimator()
        self.likelihood = LikelihoodScorer(metric_tokens, brier_lm, seed)
        self.epoch = EpochMetrics(self.k, recall_sample)
        self.buffer = PredictionBuffer(self.k)
        self._world_size = 1
        # Whether this epoch's shared state (decoder decision, κ̂) is still to be exchanged under DDP.
        self._share_pending = False

    # ------------------------------------------------------------------ configuration and parts' state
    factory = _part("session", "factory", "The DecoderFactory that builds the decoder.")
    decoder = _part("session", "decoder", "The base decoder (``None`` before the first loop).")
    build_count = _part("session", "build_count", "How many indexes were built (not loaded from the cache).")
    reranking = _part("session", "reranking", "The re-ranking rule, or ``None``; settable.", settable=True)
    metric_tokens = _part("likelihood", "metric_tokens", "Likelihood tokens per epoch; settable.", settable=True)
    brier_lm = _part("likelihood", "brier_lm", "Whether BrierLM is logged; settable.", settable=True)
    recall_sample = _part("epoch", "recall_sample", "Tokens per epoch checked against exact search.")

    @property
    def metrics(self) -> MetricCollection:
        """This epoch's metrics, one ``MetricCollection``."""
        return self.epoch.collection

    @property
    def tuned_ef(self) -> int | None:
        """The HNSW ``ef`` tuned on the first validation buffer (``None`` before, or when not tuned)."""
        return self.session.tuned_ef

    @tuned_ef.setter
    def tuned_ef(self, value: int | None) -> None:
        self.factory.load_state_dict({"tuned_ef": value})

    @property
    def state_key(self) -> str:
        kind = self.factory.kind if isinstance(self.factory.kind, str) else type(self.factory.kind).__name__
        return self._generate_state_key(k=self.k, decoder=kind)

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        _mixin(pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ensure_decoder(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._world_size = trainer.world_size
        self._ensure_decoder(trainer, pl_module)
        module = _mixin(pl_module)
        targets = module.continuous_targets
        self.epoch.new_epoch(len(targets), module.continuous_ignore_index, targets.weight.device, self.brier_lm)
        self.buffer.clear()
        self.likelihood.new_epoch()
        self.kappa.new_epoch()
        self._share_pending = True
        if self.session.new_epoch():
            # Re-fitted on this epoch's predictions; until then decode by plain similarity.
            module.continuous_decoder = self.session.active

    on_test_start = on_validation_start

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.buffer.add(outputs, batch_idx)
        if self._share_pending:
            # The epoch's first batch: a point every rank passes once, in the same order.
            self._share_epoch_state(trainer, pl_module)
        if self.buffer.tokens >= self.buffer_tokens:
            self._flush(trainer, pl_module)

    on_test_batch_end = on_validation_batch_end

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_epoch(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_epoch(trainer, pl_module, "test")

    def state_dict(self) -> dict[str, Any]:
        return self.session.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.session.load_state_dict(state_dict)

    # ------------------------------------------------------------------ steps
    def _ensure_decoder(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = _mixin(pl_module)
        decoder = self.session.ensure(trainer, module.continuous_targets, module.continuous_decode_space)
        module.continuous_decoder = decoder

    def _share_epoch_state(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Under DDP/FSDP, this epoch's decoder decision and κ̂ from rank 0 (see :func:`share_epoch_state`)."""
        self._share_pending = False
        if trainer.world_size <= 1:
            return
        module = _mixin(pl_module)
        targets = module.continuous_targets
        pred, target = self.buffer.flat(targets.weight)
        # κ̂ for vmf_ppl of a loss that leaves κ free, or for a re-ranking rule (the prior's β).
        fixed = loss_concentration(module.continuous_loss_fn, pred[:0]) is not None
        wants_kappa = (self.metric_tokens != 0 and not fixed) or self.reranking is not None
        skip = skip_id(module.continuous_ignore_index)
        space = module.continuous_decode_space
        kappa = self.kappa if wants_kappa else None
        if share_epoch_state(trainer, self.session, kappa, pred, target, targets, space, skip):
            module.continuous_decoder = self.session.active

    @torch.no_grad()
    def _flush(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Decode the buffer and update every metric."""
        if not self.buffer:
            return
        module = _mixin(pl_module)
        targets, space = module.continuous_targets, module.continuous_decode_space
        pred, target = self.buffer.flat(targets.weight)
        skip = skip_id(module.continuous_ignore_index)
        # Under DDP only rank 0 decides (in share_epoch_state); the others only apply a tuned ef.
        if (trainer.world_size == 1 or self.tuned_ef is not None) and self.session.adapt(pred, targets, space):
            module.continuous_decoder = self.session.active
        fit_kappa = partial(self.kappa.epoch_kappa, pred, target, targets, skip)  # once per epoch, if asked
        if self.reranking is not None and self.session.reranked is None:
            counts = getattr(getattr(trainer, "datamodule", None), "unigram_counts", None)
            module.continuous_decoder = self.session.rerank(EpochStatistics(pred, fit_kappa, counts))
        # ReWE mode takes its tokens from the softmax: the decoder's scores are not the distribution's.
        scorer = None if self.buffer.logit_ids else self.session.log_partition(targets.special_mask)
        picks = self.likelihood.pick(self.buffer.shapes(), scorer is not None, trainer.world_size, trainer.global_rank)
        loss = module.continuous_loss_fn
        picked = self.likelihood.prepare(
            self.metrics, pred, target, picks, targets, loss, fit_kappa, skip, shared=scorer is not None
        )
        shared = (picked.rows, picked.kappa) if picked is not None and picked.kappa is not None else None
        with self.epoch.timed(pred.shape[0]):
            knn_ids, knn_scores, log_z = self.session.query(pred, self.k, targets.weight.device, shared)
        logit_ids = self.buffer.logit_topk(targets.weight.device)
        ids = logit_ids if logit_ids is not None else knn_ids
        self.epoch.update(ids, target, pred, targets.weight, module.continuous_ignore_index)
        self.epoch.update_recall(pred, knn_ids, knn_scores, lambda: self.session.reference(targets))
        if picked is not None:
            self.likelihood.update(self.metrics, picked, log_z, targets)
        # The module keeps validation's κ̂ for sampling (its Calibration); test data never calibrates
        # it, and 0 (no token to fit on) would make sampling uniform.
        if self.kappa.fitted and not (getattr(trainer, "testing", False) or getattr(trainer, "predicting", False)):
            module.continuous_calibration.kappa = self.kappa.fitted
        self.buffer.clear()

    def epoch_values(self) -> dict[str, Tensor]:
        """Every metric that saw data this epoch, computed (synced across processes) and flattened."""
        return self.epoch.values(self._world_size, likelihood=self.metric_tokens != 0)

    def _log_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str) -> None:
        if self._share_pending:
            # This rank saw no batch: it still joins the exchange the others made at their first batch.
            self._share_epoch_state(trainer, pl_module)
        self._flush(trainer, pl_module)
        values = {f"{prefix}/{n}": torch.as_tensor(v, dtype=torch.float32) for n, v in self.epoch_values().items()}
        if values:
            # Already synced by torchmetrics; sync_dist averages equal values (and the per-process qps).
            pl_module.log_dict(values, sync_dist=True)


def _mixin(pl_module: L.LightningModule) -> ContinuousOutputMixin:
    """``pl_module`` as a converted module; raise, naming the fix, when it is not one."""
    if not isinstance(pl_module, ContinuousOutputMixin):
        raise ValueError(
            f"DecodingCallback needs a LightningModule with ContinuousOutputMixin, got "
            f"{type(pl_module).__name__}; declare it as class {type(pl_module).__name__}"
            "(ContinuousOutputMixin, L.LightningModule)"
        )
    if getattr(pl_module, "_continuous_path", None) is None:
        raise ValueError(
            f"{type(pl_module).__name__} has no continuous head; call self.replace_softmax_head(...) in __init__"
        )
    return pl_module


def _reranking(hubness: Any, k: int) -> Reranking | None:
    """The re-ranking rule ``hubness`` names (``None`` for ``"none"``); its candidates must cover ``k``."""
    if isinstance(hubness, Reranking):
        rule: Reranking | None = hubness
    elif hubness == "none":
        rule = None
    elif hubness == "csls":
        rule = CSLSReranking()
    elif hubness == "prior":
        rule = PriorReranking()
    else:
        raise ValueError(
            f"hubness must be 'none', 'csls', 'prior' or a re-ranking rule (CSLSReranking, PriorReranking), "
            f"got {hubness!r}"
        )
    if rule is not None and rule.candidates < k:
        raise ValueError(f"the re-ranking's candidates must be >= k={k}, got {rule.candidates}")
    return rule
