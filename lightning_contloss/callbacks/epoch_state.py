"""share_epoch_state: under DDP/FSDP, give every rank rank 0's decoder decision and one κ̂."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lightning_contloss.callbacks.kappa import KappaEstimator
from lightning_contloss.callbacks.session import DecodingSession
from lightning_contloss.targets import TargetEmbeddings

if TYPE_CHECKING:
    import lightning as L

__all__ = ["share_epoch_state"]


@torch.no_grad()
def share_epoch_state(
    ranks: L.Trainer,
    session: DecodingSession,
    kappa: KappaEstimator | None,
    pred: Tensor,
    target: Tensor,
    targets: TargetEmbeddings,
    space: str,
    skip_id: int,
) -> bool:
    """Exchange this epoch's shared state, from a rank's first batch ``pred [N, D]`` / ``target [N]``.

    Called once per validation/test epoch on every rank, at its first batch's end (or, on a rank
    without batches, at the epoch's end, with ``N = 0``): the collectives below run on every rank
    in the same order, and whether each runs depends only on state that every rank shares (the
    configuration, the table, a restored or previously shared decision), never on a rank's data.

    - The decision: while the session's decision is pending (``ef`` neither given nor tuned for
      this table), rank 0 adapts its decoder on its first batch and broadcasts the factory's
      state (tuned ``ef``, exact fallback); the others load it and, after a fall-back, rebuild
      as exact search.
    - κ̂, when ``kappa`` is given (``vmf_ppl`` of a loss without κ, or a re-ranking rule): each
      rank's first ``ceil(kappa_fit_tokens(V) / world_size)`` tokens are gathered and rank 0
      fits κ̂ on them all, then broadcasts it.

    Args:
        ranks: the ``Trainer`` (``world_size``, ``is_global_zero`` and ``strategy.all_gather`` /
            ``strategy.broadcast``).
        session: this rank's decoding session.
        kappa: the estimator to share κ̂ through, or ``None`` when no κ̂ is needed.
        pred: ``[N, D]`` this rank's first batch of predictions.
        target: ``[N]`` their targets.
        targets: the target table.
        space: the loss's decode space.
        skip_id: the target id the fit skips (padding).

    Returns:
        whether this rank's decoder was rebuilt (as exact search), so the module's must be reset.
    """
    if ranks.world_size <= 1:
        return False
    decide = session.decision_pending
    if not decide and kappa is None:
        return False
    sample: tuple[Tensor, Tensor] | None = None
    if kappa is not None:
        part_p, part_t = kappa.share(pred, target, len(targets), ranks.world_size, skip_id)
        gathered_p, gathered_t = ranks.strategy.all_gather(part_p), ranks.strategy.all_gather(part_t)
        sample = gathered_p.reshape(-1, part_p.shape[1]), gathered_t.reshape(-1)
    shared: dict[str, Any] = {}
    rebuilt = False
    if ranks.is_global_zero:
        if decide and pred.shape[0]:
            rebuilt = session.adapt(pred, targets, space)
            shared["factory"] = session.factory.state_dict()
        if kappa is not None and sample is not None:
            shared["kappa"] = kappa.fit(*sample, targets, skip_id)
    shared = ranks.strategy.broadcast(shared, src=0)
    if "factory" in shared:
        rebuilt = session.take_decision(shared["factory"], pred, targets, space, ranks.is_global_zero) or rebuilt
    if kappa is not None and "kappa" in shared:
        kappa.adopt(shared["kappa"])
    return rebuilt
