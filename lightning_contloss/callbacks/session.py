"""DecodingSession: one decoder over its life, built once per table, adapted, re-ranked and checkpointed."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lightning_contloss.decoding.base import Decoder, LogPartitionDecoder, is_exhaustive, log_partition_decoder
from lightning_contloss.decoding.factory import DecoderFactory, make_decoder
from lightning_contloss.decoding.rerank import RerankedDecoder
from lightning_contloss.decoding.rerankers import EpochStatistics, Reranking
from lightning_contloss.decoding.table_watch import TableWatch
from lightning_contloss.targets import TargetEmbeddings

if TYPE_CHECKING:
    import lightning as L

__all__ = ["DecodingSession"]

log = logging.getLogger(__name__)


class DecodingSession:
    """The decoder a :class:`~lightning_contloss.DecodingCallback` decodes with, and everything decided about it.

    * :meth:`ensure` builds the decoder of a table through the factory, again only when the
      table's content changed (:class:`~lightning_contloss.decoding.table_watch.TableWatch`:
      hashed only when its tensors moved); under DDP or FSDP once per cache folder
      (:meth:`build_once`).
    * :meth:`adapt` lets the factory tune HNSW's ``ef`` on real predictions, or switch to
      exact search and rebuild. An ``ef`` tuned, or a screen decided, on one table is dropped
      for another.
    * :meth:`rerank` fits the re-ranking rule on an epoch's statistics; :meth:`new_epoch`
      drops it.
    * :meth:`state_dict` keeps the factory's decisions and the table they were made for.

    ``ranks`` arguments are the ``Trainer`` (``world_size``, ``is_global_zero``, ``local_rank``
    and ``strategy.broadcast`` / ``strategy.barrier``), or any object with those.

    Args:
        factory: what builds the decoder.
        reranking: the re-ranking rule, or ``None`` to rank by similarity.

    Example:
        >>> from types import SimpleNamespace
        >>> session = DecodingSession(DecoderFactory("exact"))
        >>> targets = TargetEmbeddings.random(20, 4, seed=0)
        >>> one_process = SimpleNamespace(world_size=1)
        >>> decoder = session.ensure(one_process, targets, "cosine")
        >>> session.ensure(one_process, targets, "cosine") is decoder  # the same table: kept
        True
        >>> with torch.no_grad():
        ...     _ = targets.weight.mul_(-1.0)
        >>> session.ensure(one_process, targets, "cosine") is decoder  # another table: built again
        False
        >>> session.reference(targets) is None  # exact search is its own reference
        True
    """

    def __init__(self, factory: DecoderFactory, reranking: Reranking | None = None) -> None:
        self.factory = factory
        self.reranking = reranking
        self.decoder: Decoder | None = None
        self.reranked: RerankedDecoder | None = None
        self.build_count = 0
        # The content hash of the table the decoder was built from.
        self.table: str | None = None
        self._watch = TableWatch()
        self._exact: Decoder | None = None
        self._tuned_for: str | None = None
        # The table "auto"'s HNSW screen decided for (see DecoderFactory.screen).
        self._screened_for: str | None = None
        # Under DDP/FSDP: the table whose decoder decision rank 0 has shared.
        self._shared_for: str | None = None

    @property
    def active(self) -> Decoder:
        """What decodes this epoch: the fitted re-ranking rule, else the base decoder."""
        if self.reranked is not None:
            return self.reranked
        if self.decoder is None:
            raise RuntimeError("no decoder yet: call ensure(ranks, targets, space) first")
        return self.decoder

    @property
    def tuned_ef(self) -> int | None:
        """The HNSW ``ef`` tuned on the first validation buffer (``None`` before, or when not tuned)."""
        return self.factory.tuned_ef

    # ------------------------------------------------------------------ building
    def ensure(self, ranks: L.Trainer, targets: TargetEmbeddings, space: str) -> Decoder:
        """The decoder of ``targets`` in ``space``: the current one if the content is the same, else a new build."""
        digest = self._watch.digest(targets)
        if self.decoder is not None and digest == self.table:
            return self.active
        if {self._tuned_for, self._screened_for} - {None, digest}:
            # An ef tuned, or a screen decided, on another table says nothing about this one.
            self.factory.load_state_dict({"tuned_ef": None})
            self._screened_for = None
        undecided = self.factory.may_screen
        decoder = self.build_once(ranks, targets, space)
        if undecided and not self.factory.may_screen:
            self._screened_for = digest
        if not getattr(decoder, "from_cache", True):
            self.build_count += 1
            log.info("built %r in %.2f s", decoder, getattr(decoder, "build_seconds", 0.0))
        self.decoder, self._exact, self.reranked, self.table = decoder, None, None, digest
        return decoder

    def build_once(self, ranks: L.Trainer, targets: TargetEmbeddings, space: str) -> Decoder:
        """The decoder, built once per cache folder: by global rank 0, then by each other node's local rank 0.

        When ``"auto"`` may screen the table, global rank 0 screens it and broadcasts the outcome
        first. Global rank 0 builds first and writes the cache; after a barrier, the local rank 0 of
        every other node loads it (a cache on a shared filesystem) or builds its own (a cache on
        node-local disk); after a second barrier every other rank loads from its node's cache.
        The cache publishes an entry by an atomic rename, so nobody reads a half-written one.
        Every rank reaches both barriers: no collective runs inside a rank-dependent branch.
        """
        if ranks.world_size > 1 and self.factory.may_screen:
            # Rank 0's screen holds for every rank, before anyone builds: a rank screening on its
            # own could decide otherwise (a threaded build is not reproducible, a node-local
            # cache may hold the index on one node only).
            if ranks.is_global_zero:
                self.factory.screen(targets, space)
            self.factory.load_state_dict(ranks.strategy.broadcast(self.factory.state_dict(), src=0))
        if not (self.factory.shares_cache and ranks.world_size > 1):
            return self.factory(targets, space)
        decoder: Decoder | None = None
        if ranks.is_global_zero:
            decoder = self.factory(targets, space)
        ranks.strategy.barrier("lightning_contloss_decoder_built")
        if decoder is None and ranks.local_rank == 0:
            decoder = self.factory(targets, space)
        ranks.strategy.barrier("lightning_contloss_decoder_built_per_node")
        return decoder if decoder is not None else self.factory(targets, space)

    # ------------------------------------------------------------------ adapting
    def adapt(self, queries: Tensor, targets: TargetEmbeddings, space: str) -> bool:
        """Let the factory adapt the decoder to ``queries [N, D]``; True when it switched to exact search (rebuilt)."""
        assert self.decoder is not None
        rebuilt = self.factory.adapt(self.decoder, queries, targets)
        if rebuilt:
            # This epoch already decodes with exact search.
            self.decoder, self._exact, self.reranked = self.factory(targets, space), None, None
        if self.factory.tuned_ef is not None or self.factory.exact_fallback:
            self._tuned_for = self.table
        return rebuilt

    @property
    def decision_pending(self) -> bool:
        """Under DDP: whether rank 0 must still decide for this table (``ef`` neither given, tuned nor shared)."""
        return self.factory.ef is None and self.table not in (self._tuned_for, self._shared_for)

    def take_decision(
        self, state: dict[str, Any], queries: Tensor, targets: TargetEmbeddings, space: str, own: bool
    ) -> bool:
        """Apply rank 0's broadcast factory ``state`` (``own``: this is rank 0); True when the decoder was rebuilt."""
        self._shared_for = self.table
        if own:
            return False
        self.factory.load_state_dict(state)
        if self.factory.exact_fallback:
            self.decoder, self._exact, self.reranked = self.factory(targets, space), None, None
            self._tuned_for = self.table
            return True
        if self.factory.tuned_ef is not None:
            self.adapt(queries, targets, space)  # with a tuned ef, adapt only sets it on the decoder
        return False

    @torch.no_grad()
    def query(
        self, pred: Tensor, k: int, device: torch.device, shared: tuple[int, float | Tensor] | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(ids [N, k], scores [N, k], log_z)`` of ``pred [N, D]`` by the active decoder, on ``device``.

        With ``shared = (rows, kappa)`` the first ``rows`` queries also get their vMF log-partition
        ``log_z [rows]`` from the same scores (the active decoder must offer it, see
        :meth:`log_partition`); otherwise ``log_z`` is ``None``.
        """
        scorer = log_partition_decoder(self.active) if shared is not None else None
        if scorer is None or shared is None:
            ids, scores = self.active.query(pred, k)
            return ids.to(device), scores.to(device), None
        rows, kappa = shared
        head_ids, head_scores, log_z = scorer.query_with_log_partition(pred[:rows], k, kappa)
        tail_ids, tail_scores = scorer.query(pred[rows:], k)
        ids = torch.cat([head_ids, tail_ids.to(head_ids.device)]).to(device)
        return ids, torch.cat([head_scores, tail_scores.to(head_scores.device)]).to(device), log_z

    # ------------------------------------------------------------------ re-ranking and recall
    def rerank(self, stats: EpochStatistics) -> Decoder:
        """Fit the re-ranking rule on this epoch's ``stats`` (once per epoch); return :attr:`active`."""
        if self.reranking is not None and self.reranked is None:
            assert self.decoder is not None
            self.reranked = self.reranking.fit(self.decoder, stats)
        return self.active

    def new_epoch(self) -> bool:
        """Drop last epoch's re-ranking rule (re-fitted on this epoch's predictions); True when one was dropped."""
        dropped = self.reranked is not None
        self.reranked = None
        return dropped

    def reference(self, targets: TargetEmbeddings) -> Decoder | None:
        """What recall is measured against: exact search over the ids the decoder may return, re-ranked alike.

        ``None`` when the active decoder is exact search itself (recall is 1 by construction).
        """
        assert self.decoder is not None
        if self.reranked is None and is_exhaustive(self.decoder):
            return None
        if self._exact is None:
            # Over the ids the decoder may return (its exclude too), so recall compares like with like.
            excluded = (~self.decoder.returnable.cpu()).nonzero().flatten()
            self._exact = make_decoder(targets, self.decoder.space, "exact", exclude=excluded)
        if self.reranked is not None:
            # The same re-ranking over exact candidates: recall measures the index, not the rule.
            return RerankedDecoder(self._exact, self.reranked.bias, self.reranked.candidates)
        return self._exact

    def log_partition(self, special_mask: Tensor) -> LogPartitionDecoder | None:
        """The active decoder when it can give ``vmf_ppl`` its normaliser, else ``None``.

        It must offer ``query_with_log_partition`` (exact search in cosine space, without a
        re-ranking rule) and score exactly the rows the vMF distribution keeps: the table's
        non-special rows (``special_mask [V]``).
        """
        decoder = log_partition_decoder(self.active)
        if decoder is None:
            return None
        covered = torch.equal(~decoder.returnable, special_mask.to(decoder.returnable.device))
        return decoder if covered else None

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """The factory's decisions and the table they were made for (``tuned_for``, ``screened_for``)."""
        return {**self.factory.state_dict(), "tuned_for": self._tuned_for, "screened_for": self._screened_for}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        self.factory.load_state_dict(state_dict)
        self._tuned_for = state_dict.get("tuned_for")
        self._screened_for = state_dict.get("screened_for")
