"""DecodingCallback: builds the decoder, decodes buffered predictions and logs what they are worth."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torchmetrics import MeanMetric, Metric, MetricCollection

from lightning_contloss._arguments import int_arg
from lightning_contloss.decoding import Decoder, ExactDecoder, RerankedDecoder, make_decoder
from lightning_contloss.decoding.factory import DecoderFactory
from lightning_contloss.decoding.rerankers import CSLSReranking, EpochStatistics, PriorReranking, Reranking
from lightning_contloss.functional.vmf_distribution import _FIT_CACHE_BUDGET, fit_kappa, vmf_sample
from lightning_contloss.losses import VMFLoss
from lightning_contloss.metrics import BrierLM, DecodingRecall, NeighborAccuracy, PredictionSpread, VMFPerplexity
from lightning_contloss.mixin import ContinuousOutputMixin, _tensor_key

__all__ = ["DecodingCallback", "HNSWDecodingCallback"]

log = logging.getLogger(__name__)

# κ̂ is one scalar at the minimum of a convex NLL, where an error ε moves the NLL (and so vmf_ppl)
# only by O(ε²): a few hundred tokens pin it well, and each Newton step is an exp pass over
# tokens × V scores.
KAPPA_FIT_TOKENS = 512
# ...fewer for a large V, so that their [N, V] scores stay in fit_kappa's cache and each Newton
# step is an exp pass, not another product over the table (83 tokens at V = 400k).
_KAPPA_FIT_MIN_TOKENS = 64
# metric_tokens="auto": at most this many tokens per epoch and process for vmf_ppl and brier_lm...
AUTO_METRIC_TOKENS = 8192
# ...taken from one sequence in this many when the decoder does not score every row (HNSW): each
# such token costs a pass over the whole table, what a softmax twin's logits cost, so the
# likelihood metrics cost about 1/16 of a softmax validation's output layer. Exact search scores
# every row anyway and shares that pass (ExactDecoder.query_with_log_partition): every sequence.
AUTO_METRIC_STRIDE = 16
# Arguments that moved to DecoderFactory / the re-ranking rules; still accepted, with a warning.
_FACTORY_ARGS = ("ef", "M", "ef_construction", "num_threads", "cache_dir", "target_recall")
_RERANK_ARGS = ("csls_k", "rerank_candidates", "prior_weight", "prior_counts")
_SKIP_ID = -100


@dataclass
class _Picked:
    """The tokens of one buffer picked for the likelihood metrics, ready to score."""

    pred: Tensor  # [rows, D] (for vMF losses, scaled to the loss's κ)
    target: Tensor  # [rows]; special targets replaced by the skip id
    sizes: list[int]  # tokens per picked run of whole sequences
    lengths: list[int]  # sequence length of each run
    rows: int
    kappa: float | Tensor | None  # κ for the decoder's shared normaliser; None: vmf_ppl scans the table itself
    exclude: Tensor | None


def kappa_fit_tokens(vocab_size: int) -> int:
    """Tokens per epoch that κ̂ is fitted on: 512, or fewer for a large table (at least 64).

    Example:
        >>> kappa_fit_tokens(10_000), kappa_fit_tokens(400_000), kappa_fit_tokens(10_000_000)
        (512, 83, 64)
    """
    return max(_KAPPA_FIT_MIN_TOKENS, min(KAPPA_FIT_TOKENS, _FIT_CACHE_BUDGET // max(vocab_size, 1)))


def _vmf_loss(module: ContinuousOutputMixin) -> VMFLoss | None:
    """The module's vMF loss, whose κ comes from the prediction's norm; ``None`` when it has none."""
    return next((x for x in module.continuous_loss_fn.modules() if isinstance(x, VMFLoss)), None)


class DecodingCallback(Callback):
    """Decodes a continuous model's predictions by k-NN and logs what they are worth.

    At the start of each validation, test and predict loop (not before: a fit without validation
    builds nothing) it asks its :class:`~lightning_contloss.decoding.DecoderFactory` for the
    decoder of the module's ``continuous_targets`` in the loss's ``decode_space`` (an HNSW index
    comes from the on-disk cache when it can), and asks again whenever the targets' content
    changes. Under DDP or FSDP with a cache folder, global rank 0 builds and writes the index,
    then each other node's local rank 0 loads it (shared folder) or builds it (node-local
    folder), then the remaining ranks load it: built once per cache folder. Predictions returned by
    ``continuous_validation_step`` are buffered and decoded in large batches (hnswlib runs small
    batches on one thread); the first buffer also adapts the decoder (an HNSW ``ef`` is tuned to
    a target recall unless it was given). Under DDP or FSDP rank 0 alone adapts, on its first
    validation batch, and every rank takes its decision (tuned ``ef`` or exact search), and the κ̂
    below is fitted once, on 512 tokens gathered from all ranks.

    With ``hubness`` the tokens are chosen by a re-ranking rule fitted to each epoch's first
    buffer: ``"csls"`` (:class:`~lightning_contloss.decoding.CSLSReranking`, counters collapse
    onto frequent words) or ``"prior"`` (:class:`~lightning_contloss.decoding.PriorReranking`,
    ``sim + β·log p(w)`` with the datamodule's ``unigram_counts`` and β = 1/κ̂), or a rule object
    of your own. ``predict`` then uses the last fitted rule.

    Logged at the end of each validation (prefix ``test/`` under ``trainer.test``), one ``log_dict``:

    - ``val/acc@1``, ``val/acc@k``: the target is the nearest / among the k nearest targets
      (in ReWE mode, among the top-k logits of the kept softmax);
    - ``val/mean_cos``: mean cosine between prediction and target embedding;
    - ``val/decode_recall``: recall@1 of the decoder against exact search, on up to
      ``recall_sample`` tokens per epoch and process;
    - ``val/decode_qps``: decoded tokens per second (mean over processes);
    - ``val/distinct_pred``, ``val/top_pred_share``: how many distinct tokens were predicted,
      and the share of the most predicted one, which expose collapse onto frequent words;
    - ``val/vmf_ppl``: perplexity under ``p(w) ∝ exp(κ·cos(ê, e_w))`` normalised over all V
      rows, on a sample of the epoch's tokens (``metric_tokens``); κ is ``‖ê‖`` for vMF
      losses and, for losses that leave the norm arbitrary, one κ fitted by ``fit_kappa`` on
      the first 512 of those tokens each epoch (fewer for V > 65,536, at least 64, see
      :func:`kappa_fit_tokens`; warm-started from the previous epoch's κ̂; under DDP the first
      ``ceil(n / world_size)`` tokens of each rank's first batch). With exact search in cosine
      space the normaliser comes from the decoder's own scores
      (:meth:`~lightning_contloss.decoding.ExactDecoder.query_with_log_partition`), not from a
      second pass over the table;
    - ``val/brier_lm`` (when ``brier_lm=True``): BrierLM from two samples of the same
      distribution per position, on the same tokens.

    The κ̂ fitted at validation (not at test) is stored on the module
    (``module.continuous_calibration.kappa``, saved in checkpoints), so that
    ``generate(do_sample=True)`` samples from the distribution ``vmf_ppl`` measures.

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
            sequences' tokens, every sequence when the decoder is exact search in cosine space
            (it shares its scores), else one sequence in 16 (HNSW: the metrics then cost about
            1/16 of a softmax validation's output layer). An int: the epoch's first that many
            tokens (whole sequences). 0 turns both off.
        brier_lm: also log BrierLM.
        buffer_tokens: predictions buffered before a decode.
        seed: seed of sampling for BrierLM and of the ``ef`` tuning sample.
        **deprecated: ``ef``, ``M``, ``ef_construction``, ``num_threads``, ``cache_dir``,
            ``target_recall`` (now :class:`DecoderFactory` arguments) and ``csls_k``,
            ``rerank_candidates``, ``prior_weight``, ``prior_counts`` (now re-ranking rule
            arguments) still work, with a ``FutureWarning``.

    Example:
        >>> trainer = L.Trainer(callbacks=[DecodingCallback(k=5)], logger=False, enable_checkpointing=False)
        >>> DecodingCallback(decoder=DecoderFactory("hnsw", ef=64, num_threads=2)).factory
        DecoderFactory('hnsw', ef=64, tuned_ef=None)
    """

    def __init__(
        self,
        k: int = 5,
        decoder: Literal["auto", "exact", "hnsw"] | DecoderFactory | Decoder | Any = "auto",
        hubness: Literal["none", "csls", "prior"] | Reranking = "none",
        *,
        recall_sample: int = 1024,
        metric_tokens: int | Literal["auto"] = "auto",
        brier_lm: bool = False,
        buffer_tokens: int = 16384,
        seed: int = 0,
        **deprecated: Any,
    ) -> None:
        self.k = int_arg(k, "k", 1, rule=">= 1")
        self.recall_sample = int_arg(recall_sample, "recall_sample", 0)
        if isinstance(metric_tokens, str) and metric_tokens != "auto":
            raise ValueError(f'metric_tokens must be "auto" or an int >= 0, got {metric_tokens!r}')
        self.metric_tokens: int | Literal["auto"] = (
            "auto" if metric_tokens == "auto" else int_arg(metric_tokens, "metric_tokens", 0, rule='>= 0 or "auto"')
        )
        self.buffer_tokens = int_arg(buffer_tokens, "buffer_tokens", 1)
        if not isinstance(brier_lm, bool):
            raise ValueError(f"brier_lm must be True or False, got {brier_lm!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.brier_lm = brier_lm
        self.seed = seed
        unknown = sorted(set(deprecated) - set(_FACTORY_ARGS) - set(_RERANK_ARGS))
        if unknown:
            raise TypeError(f"DecodingCallback got unexpected arguments {unknown}")
        self.factory = self._factory(decoder, {n: v for n, v in deprecated.items() if n in _FACTORY_ARGS})
        self.reranking = self._reranking(hubness, {n: v for n, v in deprecated.items() if n in _RERANK_ARGS})
        if self.reranking is not None and self.reranking.candidates < self.k:
            raise ValueError(
                f"the re-ranking's candidates (rerank_candidates) must be >= k={self.k}, got "
                f"{self.reranking.candidates}"
            )
        self.decoder: Decoder | None = None
        self.build_count = 0
        self.metrics = MetricCollection({}, compute_groups=False)
        self._targets_hash: str | None = None
        self._targets_key: tuple[int, ...] | None = None
        self._tuned_for: str | None = None
        # The table "auto"'s HNSW screen decided for (see DecoderFactory.screen).
        self._screened_for: str | None = None
        # Under DDP/FSDP: the table whose decoder decision rank 0 has shared, and whether this
        # epoch's shared state (decision, κ̂) is still to be exchanged.
        self._shared_for: str | None = None
        self._share_pending = False
        self._reranked: RerankedDecoder | None = None
        self._exact: Decoder | None = None
        self._buffer: list[tuple[Tensor, Tensor]] = []
        self._logit_ids: list[Tensor] = []
        self._buffered = 0
        self._kappa: float | None = None
        self._fitted_kappa: float | None = None
        self._last_kappa: float | None = None
        self._decode_tokens = 0
        self._decode_seconds = 0.0
        self._recall_seen = 0
        self._metric_seen = 0
        self._sequences_seen = 0
        self._world_size = 1

    # ------------------------------------------------------------------ configuration
    def _factory(self, decoder: Any, moved: dict[str, Any]) -> DecoderFactory:
        if moved:
            warnings.warn(
                f"DecodingCallback({', '.join(f'{n}=' for n in moved)}...) is deprecated: pass "
                f"decoder=DecoderFactory({decoder!r}, {', '.join(f'{n}=...' for n in moved)}) instead",
                FutureWarning,
                stacklevel=3,
            )
        if isinstance(decoder, DecoderFactory):
            if moved:
                raise ValueError(f"pass {sorted(moved)} to the DecoderFactory, not to the callback")
            return decoder
        factory_args = {n: moved.pop(n) for n in ("ef", "target_recall", "cache_dir") if n in moved}
        if not isinstance(decoder, str) and moved:
            raise ValueError(f"{sorted(moved)} only apply to decoder='auto', 'exact' or 'hnsw'")
        if decoder == "exact":
            moved = {}  # HNSW settings did not apply to exact search and were ignored; keep that.
            factory_args.pop("ef", None)
        return DecoderFactory(decoder, seed=self.seed, **factory_args, **moved)

    def _reranking(self, hubness: Any, moved: dict[str, Any]) -> Reranking | None:
        if moved:
            warnings.warn(
                f"DecodingCallback({', '.join(f'{n}=' for n in moved)}...) is deprecated: pass "
                "hubness=CSLSReranking(k=..., candidates=...) or PriorReranking(counts=..., weight=..., "
                "candidates=...) instead",
                FutureWarning,
                stacklevel=3,
            )
        candidates = moved.get("rerank_candidates", 32)
        if isinstance(hubness, Reranking):
            if moved:
                raise ValueError(f"pass {sorted(moved)} to the re-ranking rule, not to the callback")
            return hubness
        if hubness == "none":
            return None
        if hubness == "csls":
            return CSLSReranking(k=moved.get("csls_k", 10), candidates=candidates)
        if hubness == "prior":
            return PriorReranking(moved.get("prior_counts"), moved.get("prior_weight"), candidates=candidates)
        raise ValueError(
            f"hubness must be 'none', 'csls', 'prior' or a re-ranking rule (CSLSReranking, PriorReranking), "
            f"got {hubness!r}"
        )

    @property
    def tuned_ef(self) -> int | None:
        """The HNSW ``ef`` tuned on the first validation buffer (``None`` before, or when not tuned)."""
        return self.factory.tuned_ef

    @tuned_ef.setter
    def tuned_ef(self, value: int | None) -> None:
        self.factory.load_state_dict({"tuned_ef": value})

    @property
    def state_key(self) -> str:
        kind = self.factory.kind if isinstance(self.factory.kind, str) else type(self.factory.kind).__name__
        return self._generate_state_key(k=self.k, decoder=kind)

    # ------------------------------------------------------------------ decoder life cycle
    @staticmethod
    def _module(pl_module: L.LightningModule) -> ContinuousOutputMixin:
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

    def _ensure_decoder(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        module = self._module(pl_module)
        targets = module.continuous_targets
        key = _tensor_key(targets.weight, targets.special_mask)
        # Hashing a 400k × 256 table takes about 0.4 s: only when its storage or version moved
        # (a load, a move, a write), as the mixin's own decoder does.
        trusted = self.decoder is not None and key == self._targets_key
        digest = self._targets_hash if trusted else targets.content_hash()
        if self.decoder is not None and digest == self._targets_hash:
            self._targets_key = key
            module.decoder = self._reranked if self._reranked is not None else self.decoder
            return
        if {self._tuned_for, self._screened_for} - {None, digest}:
            # An ef tuned, or a screen decided, on another table says nothing about this one.
            self.factory.load_state_dict({"tuned_ef": None})
            self._screened_for = None
        undecided = self.factory.may_screen
        decoder = self._build_once(trainer, module)
        if undecided and not self.factory.may_screen:
            self._screened_for = digest
        if not getattr(decoder, "from_cache", True):
            self.build_count += 1
            log.info("built %r in %.2f s", decoder, getattr(decoder, "build_seconds", 0.0))
        self.decoder = decoder
        self._exact = None
        self._reranked = None
        self._targets_hash = digest
        self._targets_key = key
        module.decoder = decoder

    def _build_once(self, trainer: L.Trainer, module: ContinuousOutputMixin) -> Decoder:
        """The decoder, built once per cache folder: by global rank 0, then by each other node's local rank 0.

        When ``"auto"`` may screen the table, global rank 0 screens it and broadcasts the outcome
        first. Global rank 0 builds first and writes the cache; after a barrier, the local rank 0 of
        every other node loads it (a cache on a shared filesystem) or builds its own (a cache on
        node-local disk); after a second barrier every other rank loads from its node's cache.
        The cache publishes an entry by an atomic rename, so nobody reads a half-written one.
        Every rank reaches both barriers: no collective runs inside a rank-dependent branch.
        """
        targets, space = module.continuous_targets, module.decode_space
        if trainer.world_size > 1 and self.factory.may_screen:
            # Rank 0's screen holds for every rank, before anyone builds: a rank screening on its
            # own could decide otherwise (a threaded build is not reproducible, a node-local
            # cache may hold the index on one node only).
            if trainer.is_global_zero:
                self.factory.screen(targets, space)
            self.factory.load_state_dict(trainer.strategy.broadcast(self.factory.state_dict(), src=0))
        if not (self.factory.shares_cache and trainer.world_size > 1):
            return self.factory(targets, space)
        decoder: Decoder | None = None
        if trainer.is_global_zero:
            decoder = self.factory(targets, space)
        trainer.strategy.barrier("lightning_contloss_decoder_built")
        if decoder is None and trainer.local_rank == 0:
            decoder = self.factory(targets, space)
        trainer.strategy.barrier("lightning_contloss_decoder_built_per_node")
        return decoder if decoder is not None else self.factory(targets, space)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._module(pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._ensure_decoder(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._world_size = trainer.world_size
        self._ensure_decoder(trainer, pl_module)
        self._reset(pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_validation_start(trainer, pl_module)

    # ------------------------------------------------------------------ buffering
    def _reset(self, pl_module: L.LightningModule) -> None:
        module = self._module(pl_module)
        self.metrics = self._metric_collection(module).to(module.continuous_targets.weight.device)
        self._buffer, self._buffered, self._logit_ids = [], 0, []
        self._decode_tokens, self._decode_seconds = 0, 0.0
        self._recall_seen = self._metric_seen = self._sequences_seen = 0
        self._kappa = self._fitted_kappa = None
        self._share_pending = True
        if self._reranked is not None:
            # Re-fitted on this epoch's predictions; until then decode by plain similarity.
            self._reranked = None
            module.decoder = self.decoder  # type: ignore[assignment]

    def _metric_collection(self, module: ContinuousOutputMixin) -> MetricCollection:
        ignore = module.continuous_ignore_index
        metrics: dict[str, Metric | MetricCollection] = {
            "acc@1": NeighborAccuracy(1, ignore_index=ignore),
            f"acc@{self.k}": NeighborAccuracy(self.k, ignore_index=ignore),
            "mean_cos": MeanMetric(),
            "decode_recall": DecodingRecall(1),
            "spread": PredictionSpread(len(module.continuous_targets), ignore_index=ignore),
            "vmf_ppl": VMFPerplexity(ignore_index=_SKIP_ID if ignore is None else ignore),
        }
        if self.brier_lm:
            metrics["brier_lm"] = BrierLM(ignore_index=_SKIP_ID if ignore is None else ignore)
        return MetricCollection(metrics, compute_groups=False)

    def _collect(self, outputs: Any, batch_idx: int) -> None:
        if not isinstance(outputs, dict) or "pred" not in outputs or "target" not in outputs:
            raise ValueError(
                f"validation/test step {batch_idx} returned {type(outputs).__name__}; return "
                "self.continuous_validation_step(pred, ids) so the callback can decode the predictions"
            )
        self._buffer.append((outputs["pred"], outputs["target"]))
        logits = outputs.get("logits")
        if logits is not None:
            # ReWE mode: tokens come from the kept softmax; k-NN metrics still judge the regression head.
            self._logit_ids.append(logits.topk(self.k, dim=-1).indices.reshape(-1, self.k))
        self._buffered += outputs["target"].numel()

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
        if self._share_pending:
            # The epoch's first batch: a point every rank passes once, in the same order.
            self._share_epoch_state(trainer, pl_module)
        if self._buffered >= self.buffer_tokens:
            self._flush(trainer, pl_module)

    on_test_batch_end = on_validation_batch_end

    # ------------------------------------------------------------------ decoding and metrics
    @torch.no_grad()
    def _flush(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._buffer:
            return
        module = self._module(pl_module)
        assert self.decoder is not None
        table = module.continuous_targets.weight
        flat_pred, flat_target = self._flat_buffer(module)
        if trainer.world_size == 1 or self.factory.tuned_ef is not None:
            # Under DDP only rank 0 decides (in _share_epoch_state); the others only apply a tuned ef.
            self._adapt(module, flat_pred)
        decoder = self._epoch_decoder(trainer, module, flat_pred, flat_target)
        shared = self._shares_scores(module, decoder)
        picks = self._pick_likelihood_rows(shared, trainer.world_size, trainer.global_rank)
        picked = self._likelihood_inputs(module, flat_pred, flat_target, picks, shared)
        start = time.perf_counter()
        log_z = None
        if picked is not None and picked.kappa is not None:
            # Exact search in cosine space: the picked rows are a prefix of the buffer; their
            # normaliser comes out of the same scores as their neighbours.
            assert isinstance(decoder, ExactDecoder)
            n = picked.rows
            head_ids, head_scores, log_z = decoder.query_with_log_partition(flat_pred[:n], self.k, picked.kappa)
            tail_ids, tail_scores = decoder.query(flat_pred[n:], self.k)
            knn_ids = torch.cat([head_ids, tail_ids.to(head_ids.device)]).to(table.device)
            knn_scores = torch.cat([head_scores, tail_scores.to(head_scores.device)]).to(table.device)
        else:
            knn_ids, knn_scores = (t.to(table.device) for t in decoder.query(flat_pred, self.k))
        self._decode_seconds += time.perf_counter() - start
        self._decode_tokens += flat_pred.shape[0]
        ids = torch.cat(self._logit_ids).to(table.device) if self._logit_ids else knn_ids
        m = self.metrics
        m["acc@1"].update(ids, flat_target)
        m[f"acc@{self.k}"].update(ids, flat_target)
        m["spread"].update(ids[:, 0], flat_target)
        ignore = module.continuous_ignore_index
        kept_pred, kept = flat_pred.to(table.device), flat_target
        if ignore is not None:
            keep = flat_target != ignore
            kept_pred, kept = kept_pred[keep], kept[keep]
        if kept.numel():
            m["mean_cos"].update(torch.nn.functional.cosine_similarity(kept_pred, table[kept], dim=-1))
        self._recall(module, flat_pred, knn_ids, knn_scores)
        if picked is not None:
            self._likelihood_metrics(module, picked, log_z)
        self._buffer, self._buffered, self._logit_ids = [], 0, []

    def _flat_buffer(self, module: ContinuousOutputMixin) -> tuple[Tensor, Tensor]:
        """The buffered predictions ``[N, D]`` (float) and targets ``[N]``, on the table's device."""
        table = module.continuous_targets.weight
        if not self._buffer:
            empty = torch.zeros(0, dtype=torch.long, device=table.device)
            return table.new_zeros(0, table.shape[1], dtype=torch.float32), empty
        flat_pred = torch.cat([p.reshape(-1, p.shape[-1]) for p, _ in self._buffer]).float()
        flat_target = torch.cat([t.reshape(-1) for _, t in self._buffer]).to(table.device)
        return flat_pred, flat_target

    def _adapt(self, module: ContinuousOutputMixin, flat_pred: Tensor) -> None:
        """Let the factory adapt the decoder to these predictions; rebuild it if the factory switched to exact."""
        assert self.decoder is not None
        if self.factory.adapt(self.decoder, flat_pred, module.continuous_targets):
            self._rebuild_exact(module)
        if self.factory.tuned_ef is not None or self.factory.exact_fallback:
            self._tuned_for = self._targets_hash

    def _rebuild_exact(self, module: ContinuousOutputMixin) -> None:
        # The factory switched to exact search: this epoch already decodes with it.
        self.decoder = self.factory(module.continuous_targets, module.decode_space)
        self._exact, self._reranked = None, None
        module.decoder = self.decoder

    @torch.no_grad()
    def _share_epoch_state(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Under DDP/FSDP, give every rank rank 0's decoder decision and one κ̂, from this epoch's first batch.

        Called once per validation/test epoch on every rank, at its first batch's end (or, on a rank
        without batches, at the epoch's end): the collectives below run on every rank in the same
        order, and whether each runs depends only on state that every rank shares (the
        configuration, the table, a restored or previously shared decision), never on a rank's data.

        - The decision: while ``ef`` is neither given nor tuned for this table, rank 0 adapts
          its decoder on its first batch and broadcasts the factory's state (tuned ``ef``, exact
          fallback); the others load it and, after a fall-back, rebuild as exact search.
        - κ̂, when ``vmf_ppl`` or a re-ranking rule may need it: each rank's first
          ``ceil(512 / world_size)`` tokens are gathered and rank 0 fits κ̂ on the 512, then
          broadcasts it.
        """
        self._share_pending = False
        if trainer.world_size <= 1:
            return
        module = self._module(pl_module)
        decide = self.factory.ef is None and self._targets_hash not in (self._tuned_for, self._shared_for)
        want_kappa = self._wants_kappa(module)
        if not (decide or want_kappa):
            return
        flat_pred, flat_target = self._flat_buffer(module)
        sample: tuple[Tensor, Tensor] | None = None
        if want_kappa:
            share = -(-kappa_fit_tokens(len(module.continuous_targets)) // trainer.world_size)
            pred = flat_pred.new_zeros(share, flat_pred.shape[1])
            target = torch.full((share,), self._skip_id(module), dtype=torch.long, device=pred.device)
            n = min(share, flat_pred.shape[0])
            pred[:n], target[:n] = flat_pred[:n].to(pred.device), flat_target[:n].to(pred.device)
            gathered_p, gathered_t = trainer.strategy.all_gather(pred), trainer.strategy.all_gather(target)
            sample = gathered_p.reshape(-1, pred.shape[1]), gathered_t.reshape(-1)
        shared: dict[str, Any] = {}
        if trainer.is_global_zero:
            if decide and flat_pred.shape[0]:
                self._adapt(module, flat_pred)
                shared["factory"] = self.factory.state_dict()
            if sample is not None:
                shared["kappa"] = self._fit_kappa(module, *sample)
        shared = trainer.strategy.broadcast(shared, src=0)
        if "factory" in shared:
            self._shared_for = self._targets_hash
            if not trainer.is_global_zero:
                self.factory.load_state_dict(shared["factory"])
                if self.factory.exact_fallback:
                    self._rebuild_exact(module)
                    self._tuned_for = self._targets_hash
                elif self.factory.tuned_ef is not None:
                    self._adapt(module, flat_pred)  # with a tuned ef, adapt only sets it on the decoder
        if "kappa" in shared:
            self._fitted_kappa = self._last_kappa = float(shared["kappa"])

    def _wants_kappa(self, module: ContinuousOutputMixin) -> bool:
        """Whether this epoch may fit κ̂: ``vmf_ppl`` of a loss without κ, or a re-ranking rule (the prior's β)."""
        return (self.metric_tokens != 0 and _vmf_loss(module) is None) or self.reranking is not None

    def _epoch_decoder(
        self, trainer: L.Trainer, module: ContinuousOutputMixin, flat_pred: Tensor, flat_target: Tensor
    ) -> Decoder:
        """The decoder of this epoch: the base one, or the re-ranking rule fitted on its first buffer."""
        assert self.decoder is not None
        if self.reranking is None:
            return self.decoder
        if self._reranked is None:
            counts = getattr(getattr(trainer, "datamodule", None), "unigram_counts", None)
            stats = EpochStatistics(
                flat_pred, kappa=lambda: self._epoch_kappa(module, flat_pred, flat_target), unigram_counts=counts
            )
            self._reranked = self.reranking.fit(self.decoder, stats)
            module.decoder = self._reranked
        return self._reranked

    def _epoch_kappa(self, module: ContinuousOutputMixin, flat_pred: Tensor, flat_target: Tensor) -> float:
        """κ̂ of ``fit_kappa`` on the epoch's first tokens, fitted once and shared by ``vmf_ppl`` and the prior."""
        if self._fitted_kappa is None:
            # Each Newton step is a pass over the table: fit on a sample, it is one scalar.
            n = kappa_fit_tokens(len(module.continuous_targets))
            self._fitted_kappa = self._fit_kappa(module, flat_pred[:n], flat_target[:n])
            self._last_kappa = self._fitted_kappa
        trainer = module._trainer
        # The module keeps validation's κ̂ for sampling (Calibration); test data never calibrates it,
        # and 0 (no token to fit on) would make sampling uniform.
        if self._fitted_kappa > 0 and not (trainer is not None and (trainer.testing or trainer.predicting)):
            module.continuous_calibration.kappa = self._fitted_kappa
        return self._fitted_kappa

    def _fit_kappa(self, module: ContinuousOutputMixin, sample_p: Tensor, sample_t: Tensor) -> float:
        """``fit_kappa`` on ``sample_p [N, D]`` / ``sample_t [N]``, warm-started from the last κ̂; 0 without tokens."""
        targets = module.continuous_targets
        sample_t = sample_t.to(targets.weight.device)
        sample_p = sample_p.to(targets.weight.device)
        exclude = targets.special_mask if bool(targets.special_mask.any()) else None
        # Padding and special targets have no likelihood: leave them out of the fit.
        keep = sample_t != self._skip_id(module)
        if exclude is not None:
            keep &= ~exclude[torch.where(keep, sample_t, 0)]
        start = self._last_kappa if self._last_kappa else 1.0
        if not bool(keep.any()):
            return 0.0
        return fit_kappa(sample_p[keep], sample_t[keep], targets.weight, exclude_mask=exclude, kappa_init=start)

    @staticmethod
    def _skip_id(module: ContinuousOutputMixin) -> int:
        ignore = module.continuous_ignore_index
        return ignore if ignore is not None else _SKIP_ID

    def _recall(self, module: ContinuousOutputMixin, flat_pred: Tensor, ids: Tensor, scores: Tensor) -> None:
        take = min(self.recall_sample - self._recall_seen, flat_pred.shape[0])
        if take <= 0 or self.decoder is None:
            return
        if self._reranked is None and isinstance(self.decoder, ExactDecoder):
            # Exact search against itself: recall is 1 by construction, no second search needed.
            self.metrics["decode_recall"].update(ids[:take, :1], ids[:take, :1])
            self._recall_seen += take
            return
        if self._exact is None:
            # Over the ids the decoder may return (its exclude too), so recall compares like with like.
            excluded = (~self.decoder.returnable.cpu()).nonzero().flatten()
            self._exact = make_decoder(module.continuous_targets, self.decoder.space, "exact", exclude=excluded)
        exact: Decoder = self._exact
        if self._reranked is not None:
            # The same re-ranking over exact candidates: recall measures the index, not the rule.
            exact = RerankedDecoder(exact, self._reranked.bias, self._reranked.candidates)
        exact_ids, exact_scores = exact.query(flat_pred[:take], 1)
        # With scores, a tie (e.g. a duplicate row) counts as found, as in tune_ef's knn_recall.
        self.metrics["decode_recall"].update(
            ids[:take, :1],
            exact_ids.to(ids.device),
            approx_scores=scores[:take, :1],
            exact_scores=exact_scores.to(scores.device, scores.dtype),
        )
        self._recall_seen += take

    def _shares_scores(self, module: ContinuousOutputMixin, decoder: Decoder) -> bool:
        """Whether ``decoder`` scores every row of the vMF distribution, so ``vmf_ppl`` can take its normaliser.

        True for exact search in cosine space over the rows the distribution keeps (the table's
        non-special rows), without a re-ranking rule and outside ReWE mode.
        """
        if not isinstance(decoder, ExactDecoder) or decoder.space != "cosine" or self._logit_ids:
            return False
        special = module.continuous_targets.special_mask
        return bool(torch.equal(~decoder.returnable, special.to(decoder.returnable.device)))

    def _pick_likelihood_rows(self, shared: bool, world_size: int = 1, rank: int = 0) -> list[tuple[int, int, int]]:
        """This buffer's sequences for ``vmf_ppl``/``brier_lm``: ``(first flat row, sequences, length)`` per item.

        Whole sequences (BrierLM scores n-grams), within the epoch's budget; with ``"auto"``
        and a decoder that does not share its scores, one sequence in ``AUTO_METRIC_STRIDE``,
        counted over the epoch and, under DDP, over the global sample order of an unshuffled
        ``DistributedSampler`` (this rank's i-th sequence is sample ``i·world_size + rank``), so
        that the ranks together pick the one-process run's sequences. With ``shared`` (or an int
        budget) the picks are a prefix of the buffer.
        """
        auto = self.metric_tokens == "auto"
        budget = (AUTO_METRIC_TOKENS if auto else int(self.metric_tokens)) - self._metric_seen
        stride = AUTO_METRIC_STRIDE if auto and not shared else 1
        picks: list[tuple[int, int, int]] = []
        offset = 0
        for pred, _ in self._buffer:
            length = pred.shape[-2] if pred.dim() > 2 else 1
            sequences = pred.numel() // max(length * pred.shape[-1], 1)
            seen = self._sequences_seen
            self._sequences_seen += sequences
            if budget > 0:
                wanted = -(-budget // length)
                if stride == 1:
                    count = min(sequences, wanted)
                    picks.append((offset, count, length))
                else:
                    global_index = (torch.arange(seen, seen + sequences) * world_size + rank) % stride
                    on_stride = (global_index == 0).nonzero().flatten()[:wanted].tolist()
                    picks.extend((offset + seq * length, 1, length) for seq in on_stride)
                    count = len(on_stride)
                budget -= count * length
            offset += sequences * length
        return picks

    def _likelihood_inputs(
        self,
        module: ContinuousOutputMixin,
        flat_pred: Tensor,
        flat_target: Tensor,
        picks: list[tuple[int, int, int]],
        shared: bool,
    ) -> _Picked | None:
        """The picked tokens of ``flat_pred [N, D]`` made ready for the likelihood metrics (κ̂ fitted, specials skipped).

        ``None`` when nothing was picked. With ``shared`` the picks are a prefix of the buffer and
        the result carries the κ the decoder's normaliser needs.
        """
        vmf_loss = _vmf_loss(module)
        if vmf_loss is None and self._kappa is None and self.metric_tokens != 0 and flat_pred.shape[0]:
            # On the buffer's first tokens, not the sample: the tokens a DDP run gathers too (and
            # a rank whose shard the sample skips still holds the shared κ̂ in its metric).
            self._kappa = self._epoch_kappa(module, flat_pred, flat_target)
            self.metrics["vmf_ppl"].kappa = self._kappa
        if not picks:
            return None
        targets = module.continuous_targets
        device = targets.weight.device
        index = torch.cat([torch.arange(start, start + n * length) for start, n, length in picks]).to(device)
        pred = flat_pred.to(device)[index]
        target = flat_target[index]
        skip = self._skip_id(module)
        exclude = targets.special_mask if bool(targets.special_mask.any()) else None
        if exclude is not None:
            # A special target has probability 0 once its row is excluded: skip it like padding.
            valid = target != skip
            special = valid & exclude[torch.where(valid, target, 0)]
            target = torch.where(special, skip, target)
        kappa: float | Tensor
        if vmf_loss is not None:
            # The loss's own κ (a floor moves it off ‖ê‖), which both metrics read from the norm.
            pred = vmf_loss.concentration(pred)
            kappa = pred.norm(dim=-1)
        else:
            assert self._kappa is not None
            kappa = self._kappa
        return _Picked(
            pred=pred,
            target=target,
            sizes=[n * length for _, n, length in picks],
            lengths=[length for *_, length in picks],
            rows=int(index.numel()),
            kappa=kappa if shared else None,
            exclude=exclude,
        )

    def _likelihood_metrics(self, module: ContinuousOutputMixin, picked: _Picked, log_z: Tensor | None) -> None:
        """Update ``vmf_ppl`` (and ``brier_lm``) on the picked tokens; ``log_z [rows]`` from the decoder when shared."""
        targets = module.continuous_targets
        self.metrics["vmf_ppl"].update(
            picked.pred, picked.target, targets.weight, exclude_mask=picked.exclude, log_partition=log_z
        )
        if self.brier_lm:
            # None for vMF losses: picked.pred already carries the loss's κ as its norm.
            kappa = self._kappa
            device = targets.weight.device
            # Sequences of one length are sampled together (one pass over the table per length).
            by_length: dict[int, list[tuple[Tensor, Tensor]]] = {}
            for pred, target, length in zip(
                picked.pred.split(picked.sizes), picked.target.split(picked.sizes), picked.lengths, strict=True
            ):
                by_length.setdefault(length, []).append((pred, target))
            for length, runs in by_length.items():
                pred_seq = torch.cat([p for p, _ in runs]).reshape(-1, length, picked.pred.shape[-1])
                target_seq = torch.cat([t for _, t in runs]).reshape(-1, length)
                g = torch.Generator(device=device).manual_seed(self.seed + self._metric_seen)
                samples = vmf_sample(
                    pred_seq, targets.weight, 2, kappa=kappa, exclude_mask=picked.exclude, generator=g
                )
                self.metrics["brier_lm"].update(samples[0], samples[1], target_seq)
                self._metric_seen += target_seq.numel()
        else:
            self._metric_seen += picked.rows

    def _epoch_values(self) -> dict[str, Tensor]:
        """Every metric that saw data this epoch, computed (synced across processes) and flattened.

        Under DDP a metric is computed on every rank unless the configuration turns it off, even
        where this rank saw none of its tokens (a sampled ``vmf_ppl`` may pick none of a rank's
        sequences): ``compute`` syncs, and a rank that skipped it would leave the others waiting.
        """
        values: dict[str, Tensor] = {}
        off = {"decode_recall": self.recall_sample == 0, "vmf_ppl": self.metric_tokens == 0}
        for name, metric in self.metrics.items(keep_base=True):
            if not metric.update_count and (self._world_size <= 1 or off.get(name, False)):
                continue
            with warnings.catch_warnings():
                # The rank-without-tokens case above: its zero states join the sum.
                warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
                value = metric.compute()
            values.update(value if isinstance(value, dict) else {name: value})
        if self._decode_seconds > 0:
            values["decode_qps"] = torch.tensor(self._decode_tokens / self._decode_seconds)
        return values

    def _log_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str) -> None:
        if self._share_pending:
            # This rank saw no batch: it still joins the exchange the others made at their first batch.
            self._share_epoch_state(trainer, pl_module)
        self._flush(trainer, pl_module)
        values = {f"{prefix}/{n}": torch.as_tensor(v, dtype=torch.float32) for n, v in self._epoch_values().items()}
        if values:
            # Already synced by torchmetrics; sync_dist averages equal values (and the per-process qps).
            pl_module.log_dict(values, sync_dist=True)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_epoch(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_epoch(trainer, pl_module, "test")

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {**self.factory.state_dict(), "tuned_for": self._tuned_for, "screened_for": self._screened_for}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.factory.load_state_dict(state_dict)
        self._tuned_for = state_dict.get("tuned_for")
        self._screened_for = state_dict.get("screened_for")


class HNSWDecodingCallback(DecodingCallback):
    """:class:`DecodingCallback` under its historical name, from when HNSW was the only decoder.

    Both names stay; they behave the same (the default decoder is ``"auto"``: exact search for
    small tables, HNSW for large ones).

    Example:
        >>> isinstance(HNSWDecodingCallback(k=5), DecodingCallback)
        True
    """
