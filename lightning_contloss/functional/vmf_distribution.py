"""The distribution over the vocabulary induced by a vMF prediction: p(w) ∝ exp(κ·cos(ê, e_w)).

A continuous-output model predicts a vector ``ê``. Read as a von Mises-Fisher density with
mean direction ``ê/‖ê‖`` and concentration ``κ = ‖ê‖`` and restricted to the V rows of the
target table, it gives a proper categorical distribution over the vocabulary. Normalising it
exactly needs all V scores; here they are visited in chunks of rows, so memory stays
``O(N · chunk_size)`` however large V is. The same chunked pass gives the log-partition, the
log-probability of a target, the moments used to fit κ, and Gumbel-max samples.

For models trained with a cosine or L2 loss the norm of ``ê`` carries no meaning, so a fixed
``kappa`` must be given; :func:`fit_kappa` picks the κ that minimises held-out NLL, which makes
such a model's perplexity comparable with a softmax model's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_contloss.functional._checks import (
    check_generator,
    check_ignore_index,
    check_log_partition,
    check_number,
    check_positive_int,
    check_table,
    full_precision,
    nonfinite_per_row,
)

__all__ = [
    "fit_kappa",
    "merge_log_partition",
    "sample_from_logits",
    "vmf_log_partition",
    "vmf_log_prob",
    "vmf_sample",
]

DEFAULT_CHUNK_SIZE = 4096
# At most this many (query, row) scores are alive at once, so the few [N, chunk] temporaries stay
# in the tens of MiB however many queries come in: 8192 validation tokens × 4096 rows held ~0.3 GiB.
_PAIR_BUDGET = 1 << 21


def _chunk_for(chunk_size: int, queries: int) -> int:
    """Rows per chunk: ``chunk_size``, fewer when ``queries × chunk_size`` would exceed the budget."""
    return max(1, min(chunk_size, _PAIR_BUDGET // max(queries, 1)))


def _check_inputs(
    pred: Tensor, table: Tensor, exclude_mask: Tensor | None, chunk_size: int, kappa: float | None
) -> None:
    check_table(table)
    if not isinstance(pred, Tensor):
        raise ValueError(f"pred must be a [..., D] tensor, got {type(pred).__name__}")
    if pred.dim() < 1 or pred.shape[-1] != table.shape[1]:
        raise ValueError(
            f"pred has dim {pred.shape[-1] if pred.dim() else 'none'} but the target table has dim "
            f"{table.shape[1]}; build the head with out_features=targets.dim"
        )
    if not pred.is_floating_point():
        raise ValueError(f"pred must be floating point, got {pred.dtype}")
    check_positive_int(chunk_size, "chunk_size")
    if kappa is not None:
        check_number(kappa, "kappa", low=0.0)
    if exclude_mask is not None:
        if (
            not isinstance(exclude_mask, Tensor)
            or exclude_mask.shape != (table.shape[0],)
            or exclude_mask.dtype != torch.bool
        ):
            what = (
                f"{exclude_mask.dtype} {tuple(exclude_mask.shape)}"
                if isinstance(exclude_mask, Tensor)
                else type(exclude_mask).__name__
            )
            raise ValueError(
                f"exclude_mask must be a bool tensor of shape [V]=[{table.shape[0]}], got {what}; "
                "pass targets.special_mask or None"
            )
        if bool(exclude_mask.all()):
            raise ValueError("exclude_mask excludes every row of the table; the distribution would be empty")


def _check_finite(x: Tensor, name: str, why: str) -> None:
    bad = int(nonfinite_per_row(x).sum())
    if bad:
        raise ValueError(f"{name} must be finite, but it holds {bad} NaN or infinite values; {why}")


def _query(pred: Tensor, kappa: float | None) -> Tensor:
    """``q`` such that ``q · e_w / ‖e_w‖ = κ·cos(ê, e_w)`` for every row ``w``."""
    flat = pred.reshape(-1, pred.shape[-1]).float()
    if kappa is None:
        # κ·cos(ê, e) = ‖ê‖ · (ê/‖ê‖)·(e/‖e‖) = ê·(e/‖e‖): the raw prediction is already the query.
        return flat
    return F.normalize(flat, dim=-1) * kappa


def _row_chunks(
    table: Tensor, exclude_mask: Tensor | None, chunk_size: int, device: torch.device
) -> Iterator[tuple[int, Tensor, Tensor | None]]:
    """Yield ``(start, unit rows [C, D], excluded [C] or None)`` for consecutive chunks of the table."""
    for start in range(0, table.shape[0], chunk_size):
        rows = F.normalize(table[start : start + chunk_size].to(device, torch.float32), dim=-1)
        excl = None if exclude_mask is None else exclude_mask[start : start + chunk_size].to(device)
        yield start, rows, excl


def _score_chunks(
    query: Tensor, table: Tensor, exclude_mask: Tensor | None, chunk_size: int
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(start, scores [N, C])``: ``query · e_w/‖e_w‖`` per row, ``-inf`` on excluded rows."""
    for start, rows, excl in _row_chunks(table, exclude_mask, chunk_size, query.device):
        scores = query @ rows.T
        if excl is not None:
            scores = scores.masked_fill(excl, float("-inf"))
        yield start, scores


def merge_log_partition(running: Tensor, scores: Tensor, row_max: Tensor | None = None) -> Tensor:
    """Fold one chunk of scores into a running log-partition: ``log(exp(running) + Σ_c exp(scores[:, c]))``.

    An online logsumexp: visiting the table in chunks and merging each one keeps a single
    ``[N, C]`` block of scores alive, and gives the log-partition of all the rows seen so far.
    Start from ``-inf`` (no row seen); ``-inf`` scores (excluded rows) add nothing.

    A caller that already knows each row's largest score (exact k-NN search has just taken the
    top-k of the same block) passes it as ``row_max``: the sum is then shifted by it in place,
    which saves logsumexp's own max pass and its copy of the block, and **overwrites**
    ``scores``.

    Args:
        running: ``[N]`` log-partition over the rows seen so far.
        scores: ``[N, C]`` scores (``κ·cos``) of the next chunk of rows.
        row_max: optional ``[N]`` largest score of each row of ``scores`` (``-inf`` for a row of
            excluded entries only).

    Returns:
        ``[N]`` log-partition over the rows seen so far and this chunk.

    Example:
        >>> s = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
        >>> total = torch.full((1,), float("-inf"))
        >>> for chunk in s.split(2, dim=1):
        ...     total = merge_log_partition(total, chunk)
        >>> torch.allclose(total, torch.logsumexp(s, dim=-1))
        True
        >>> shifted = merge_log_partition(torch.full((1,), float("-inf")), s.clone(), row_max=s.amax(dim=-1))
        >>> torch.allclose(shifted, total)
        True
    """
    if row_max is None:
        return torch.logaddexp(running, torch.logsumexp(scores, dim=-1))
    # A row of -inf only (every entry excluded) adds nothing; shift it by 0 so exp gives 0, not NaN.
    shift = torch.where(torch.isfinite(row_max), row_max, 0.0)
    chunk = scores.sub_(shift[:, None]).exp_().sum(dim=-1).log_().add_(shift)
    return torch.logaddexp(running, chunk)


def _log_partition_flat(query: Tensor, table: Tensor, exclude_mask: Tensor | None, chunk_size: int) -> Tensor:
    total = torch.full((query.shape[0],), float("-inf"), device=query.device)
    for _, scores in _score_chunks(query, table, exclude_mask, _chunk_for(chunk_size, query.shape[0])):
        total = merge_log_partition(total, scores)
    return total


def vmf_log_partition(
    pred: Tensor,
    table: Tensor,
    *,
    kappa: float | None = None,
    exclude_mask: Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Exact ``log Σ_w exp(κ·cos(ê, e_w))`` over the V table rows, computed in chunks of rows.

    Args:
        pred: ``[..., D]`` predictions ``ê``.
        table: ``[V, D]`` target table (rows need not be unit-norm; cosines are used).
        kappa: concentration; ``None`` uses ``κ = ‖ê‖`` per prediction (vMF-trained models).
        exclude_mask: optional ``[V]`` bool, rows left out of the distribution.
        chunk_size: table rows scored at once (fewer for large N, so at most ~2M scores are
            alive at a time).

    Returns:
        ``[...]`` float32 log-partition per prediction.

    Example:
        >>> table = torch.eye(3)
        >>> vmf_log_partition(torch.zeros(1, 3), table)  # κ = 0: log V
        tensor([1.0986])
        >>> vmf_log_partition(torch.tensor([[2.0, 0.0, 0.0]]), table, chunk_size=1)
        tensor([2.2395])
    """
    _check_inputs(pred, table, exclude_mask, chunk_size, kappa)
    with full_precision(pred.device):
        query = _query(pred, kappa)
        return _log_partition_flat(query, table, exclude_mask, chunk_size).reshape(pred.shape[:-1])


def _target_scores(query: Tensor, target: Tensor, table: Tensor) -> Tensor:
    rows = F.normalize(table[target].to(query.device, torch.float32), dim=-1)
    return (query * rows).sum(dim=-1)


def _check_target(pred: Tensor, target: Tensor, num_rows: int | None) -> Tensor:
    """``target`` flattened to int64, after checking it against ``pred`` (and the table's ``num_rows``)."""
    if not isinstance(target, Tensor):
        raise ValueError(f"target must be a tensor of token ids, got {type(target).__name__}")
    if target.shape != pred.shape[:-1]:
        raise ValueError(
            f"target has shape {tuple(target.shape)} but pred has shape {tuple(pred.shape)}; "
            "target must be pred.shape[:-1] (one token id per prediction)"
        )
    if target.dtype in (torch.bool,) or target.is_floating_point() or target.is_complex():
        raise ValueError(f"target must hold integer token ids, got {target.dtype}")
    flat = target.reshape(-1).long()
    if num_rows is not None and flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= num_rows):
        bad = flat[(flat < 0) | (flat >= num_rows)][:5].tolist()
        raise ValueError(
            f"target ids {bad} are out of range for a table of {num_rows} rows; drop padding "
            "(ignore_index) before calling, or check that the targets match the table"
        )
    return flat


def vmf_log_prob(
    pred: Tensor,
    target: Tensor,
    table: Tensor,
    *,
    kappa: float | None = None,
    exclude_mask: Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    log_partition: Tensor | None = None,
) -> Tensor:
    """``log p(target)`` under the vMF-induced distribution ``p(w) ∝ exp(κ·cos(ê, e_w))``.

    A target that ``exclude_mask`` removes has probability 0, so its log-probability is ``-inf``.
    The normaliser is the one pass over all V rows; a caller that has already scanned the table
    with the same κ (exact k-NN search does: :meth:`~lightning_contloss.decoding.ExactDecoder.query_with_log_partition`)
    passes its ``log_partition`` and only the target scores are computed here.

    Args:
        pred: ``[..., D]`` predictions ``ê``.
        target: ``[...]`` token ids in ``[0, V)``.
        table: ``[V, D]`` target table.
        kappa: concentration; ``None`` uses ``κ = ‖ê‖`` (see :func:`vmf_log_partition`).
        exclude_mask: optional ``[V]`` bool, rows left out of the distribution.
        chunk_size: table rows scored at once.
        log_partition: optional ``[...]`` (``target``'s shape) ``log Σ_w exp(κ·cos(ê, e_w))`` over
            the rows ``exclude_mask`` keeps, with the same κ, computed elsewhere.

    Returns:
        ``[...]`` float32 log-probabilities.

    Example:
        >>> table = torch.eye(4)
        >>> lp = vmf_log_prob(torch.tensor([[3.0, 0.0, 0.0, 0.0]]), torch.tensor([0]), table)
        >>> torch.allclose(lp, torch.log_softmax(torch.tensor([3.0, 0.0, 0.0, 0.0]), 0)[:1])
        True
    """
    _check_inputs(pred, table, exclude_mask, chunk_size, kappa)
    flat_target = _check_target(pred, target, table.shape[0])
    if log_partition is not None:
        check_log_partition(log_partition, target.shape)
        _check_finite(log_partition, "log_partition", "it must be a log-sum over at least one kept row")
    with full_precision(pred.device):
        query = _query(pred, kappa)
        if log_partition is None:
            log_z = _log_partition_flat(query, table, exclude_mask, chunk_size)
        else:
            log_z = log_partition.reshape(-1).to(query.device, torch.float32)
        logp = _target_scores(query, flat_target.to(table.device), table) - log_z
    if exclude_mask is not None:
        excluded = exclude_mask.to(flat_target.device)[flat_target].to(logp.device)
        logp = logp.masked_fill(excluded, float("-inf"))
    return logp.reshape(target.shape)


def _gumbel(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    # -log(-log(u)) is a standard Gumbel. Uniforms in float64 resolve 2^-53, so the noise has no
    # visible truncation of its upper tail (float32's 2^-24 grid would cap it near 16.6).
    u = torch.rand(shape, device=device, dtype=torch.float64, generator=generator)
    return u.log_().neg_().log_().neg_().float()


def sample_from_logits(logits: Tensor, num_samples: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
    """Draw ids from ``softmax(logits)``, independently per position; the softmax-model side of BrierLM.

    Args:
        logits: ``[..., V]`` unnormalised log-probabilities (``-inf`` entries are never drawn).
        num_samples: independent draws per position.
        generator: optional ``torch.Generator`` on ``logits.device`` for reproducible draws.

    Returns:
        ``[num_samples, ...]`` int64 ids, so ``s1, s2 = sample_from_logits(x, 2)`` unpacks.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> s1, s2 = sample_from_logits(torch.tensor([[0.0, -float("inf"), 50.0]]), 2, generator=g)
        >>> s1.tolist(), s2.tolist()
        ([2], [2])
    """
    check_positive_int(num_samples, "num_samples")
    check_generator(generator)
    if not isinstance(logits, Tensor):
        raise ValueError(f"logits must be a float tensor [..., V], got {type(logits).__name__}")
    if logits.dim() < 1 or logits.shape[-1] == 0 or not logits.is_floating_point():
        raise ValueError(f"logits must be a float tensor [..., V] with V > 0, got {logits.dtype} {tuple(logits.shape)}")
    flat = logits.reshape(-1, logits.shape[-1]).float()
    if flat.shape[0] == 0:
        return torch.zeros((num_samples, *logits.shape[:-1]), dtype=torch.long, device=logits.device)
    probs = torch.softmax(flat, dim=-1)
    if not bool(torch.isfinite(probs).all()):
        raise ValueError("logits give NaN probabilities (a row is NaN or entirely -inf); check the model output")
    draws = torch.multinomial(probs, num_samples, replacement=True, generator=generator)
    return draws.T.reshape(num_samples, *logits.shape[:-1])


_SAMPLE_BLOCK = 256


def vmf_sample(
    pred: Tensor,
    table: Tensor,
    num_samples: int = 1,
    *,
    kappa: float | None = None,
    exclude_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """Draw ids from ``p(w) ∝ exp(κ·cos(ê, e_w))`` exactly, in one chunked pass, by two-level Gumbel-max.

    Gumbel-max over all V rows equals Gumbel-max over blocks of 256 rows, each scored by its
    logsumexp, followed by Gumbel-max inside the winning block. The pass keeps, per draw, the
    best block so far; when a chunk holds a better one, a row is drawn inside it at once, from
    scores already in memory. The noise costs ``O(N · (V/256 + 256 · V/chunk_size))`` instead
    of the ``O(N · V)`` of one Gumbel variable per row, and nothing is scored twice.

    Args:
        pred: ``[..., D]`` predictions ``ê``.
        table: ``[V, D]`` target table.
        num_samples: independent draws per prediction.
        kappa: concentration; ``None`` uses ``κ = ‖ê‖``.
        exclude_mask: optional ``[V]`` bool, rows never drawn.
        generator: optional ``torch.Generator`` on ``pred.device`` for reproducible draws.
        chunk_size: table rows scored at once (rounded up to a multiple of 256).

    Returns:
        ``[num_samples, ...]`` int64 ids.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> table = torch.eye(3)
        >>> vmf_sample(torch.tensor([[0.0, 80.0, 0.0]]), table, 2, generator=g).tolist()
        [[1], [1]]
    """
    check_positive_int(num_samples, "num_samples")
    check_generator(generator)
    _check_inputs(pred, table, exclude_mask, chunk_size, kappa)
    # A NaN score never wins a Gumbel-max, so NaN input would come out as a valid-looking id.
    _check_finite(pred, "pred", "a draw from a NaN prediction means nothing; check the model output")
    _check_finite(table, "table", "pass a finite target table")
    with full_precision(pred.device):
        out = _sample_flat(_query(pred, kappa), table, num_samples, exclude_mask, generator, chunk_size)
    return out.reshape(num_samples, *pred.shape[:-1])


def _sample_flat(
    query: Tensor,
    table: Tensor,
    num_samples: int,
    exclude_mask: Tensor | None,
    generator: torch.Generator | None,
    chunk_size: int,
) -> Tensor:
    n, blk = query.shape[0], _SAMPLE_BLOCK
    best = torch.full((num_samples, n), float("-inf"), device=query.device)
    best_id = torch.zeros((num_samples, n), dtype=torch.long, device=query.device)
    if n == 0:
        return best_id
    # Block boundaries stay at multiples of blk from row 0.
    chunk = -(-_chunk_for(chunk_size, n * num_samples) // blk) * blk
    for start, scores in _score_chunks(query, table, exclude_mask, chunk):
        short = -scores.shape[1] % blk
        if short:
            scores = F.pad(scores, (0, short), value=float("-inf"))
        blocks = scores.view(n, -1, blk)
        top, pick = (
            torch.logsumexp(blocks, dim=-1) + _gumbel((num_samples, n, blocks.shape[1]), query.device, generator)
        ).max(-1)
        better = top > best
        s_idx, n_idx = better.nonzero(as_tuple=True)
        if s_idx.numel() == 0:
            continue
        chosen = pick[s_idx, n_idx]
        inside = blocks[n_idx, chosen]  # [m, blk]: the rows of each draw's new best block
        row = (inside + _gumbel(tuple(inside.shape), query.device, generator)).argmax(dim=-1)
        best_id[s_idx, n_idx] = start + chosen * blk + row
        best = torch.where(better, top, best)
    return best_id


# fit_kappa keeps the [N, V] cosine gaps of its tokens in memory, scored once, when they fit in
# this many floats (128 MiB); each Newton step is then an exp pass instead of a matrix product.
_FIT_CACHE_BUDGET = 1 << 25


def _gap_chunks(
    query_dir: Tensor, target_cos: Tensor, table: Tensor, exclude_mask: Tensor | None, chunk_size: int
) -> Iterator[tuple[Tensor, Tensor | None, Tensor]]:
    """Yield ``(d [N, C], excluded [C] or None, d_max [N])`` with ``d = cos(ê, e_w) - cos(ê, e_y)``, chunk by chunk.

    ``d_max`` is each row's largest ``d`` over the chunk's included entries (``-inf`` when the
    chunk has none): for κ ≥ 0 the largest ``κ·d`` is ``κ·d_max``, so the Newton steps need no
    max pass of their own.
    """
    for _, rows, excl in _row_chunks(table, exclude_mask, _chunk_for(chunk_size, query_dir.shape[0]), query_dir.device):
        # Moments of d = cos - cos_y rather than of cos: d -> 0 where p concentrates on the
        # target, so E[d²] - E[d]² keeps its precision in float32 even for large κ.
        d = query_dir @ rows.T - target_cos.unsqueeze(-1)
        d_max = (d if excl is None else d.masked_fill(excl, float("-inf"))).amax(dim=-1)
        yield d, excl, d_max


def _nll_grad_hess(
    query_dir: Tensor,
    target_cos: Tensor,
    table: Tensor,
    exclude_mask: Tensor | None,
    kappa: float,
    chunk_size: int,
    gaps: list[tuple[Tensor, Tensor | None, Tensor]] | None = None,
) -> tuple[float, float]:
    """The mean NLL's derivative in κ, ``mean(E_p[cos] - cos_y)``, and its second, ``mean(Var_p[cos])``.

    ``gaps`` holds the chunks of :func:`_gap_chunks` when they were kept; otherwise they are scored again.
    """
    n = query_dir.shape[0]
    run_max = torch.full((n,), float("-inf"), device=query_dir.device)
    s0 = torch.zeros(n, device=query_dir.device, dtype=torch.float64)
    s1 = torch.zeros_like(s0)
    s2 = torch.zeros_like(s0)
    chunks = gaps if gaps is not None else _gap_chunks(query_dir, target_cos, table, exclude_mask, chunk_size)
    w: Tensor | None = None
    for d, excl, d_max in chunks:
        # Online sums of exp(κd - m), d·exp(κd - m), d²·exp(κd - m), rescaled whenever the
        # running max m grows, so a large κ cannot overflow. κ·cos is κ·d up to a per-row
        # constant, which the softmax ignores.
        new_max = torch.maximum(run_max, torch.where(torch.isinf(d_max), d_max, d_max * kappa))
        # A chunk with every row excluded leaves the max at -inf; shift by 0 there instead.
        shift = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max)
        rescale = torch.exp(run_max - shift).double()
        # One reused buffer, in place: each step is a few elementwise passes, no [N, C] allocations.
        w = torch.mul(d, kappa, out=w if w is not None and w.shape == d.shape else None)
        w.sub_(shift.unsqueeze(-1))
        if excl is not None:
            w.masked_fill_(excl, float("-inf"))
        w.exp_()
        s0 = s0 * rescale + w.sum(-1).double()  # float32 pairwise sums: a float64 sum costs 5x
        s1 = s1 * rescale + _row_dot(w, d)
        s2 = s2 * rescale + _row_dot(w.mul_(d), d)
        run_max = new_max
    mean_d = s1 / s0
    var_d = (s2 / s0 - mean_d**2).clamp_min(0.0)
    return float(mean_d.mean()), float(var_d.mean())


def _row_dot(a: Tensor, b: Tensor) -> Tensor:
    """``[N]`` float64 dot products of the rows of ``a [N, C]`` and ``b [N, C]``, as a batched matrix product."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(-1)).reshape(-1).double()


def fit_kappa(
    pred: Tensor,
    target: Tensor,
    table: Tensor,
    *,
    exclude_mask: Tensor | None = None,
    ignore_index: int | None = None,
    kappa_max: float = 1e4,
    tol: float = 1e-6,
    max_iter: int = 100,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    kappa_init: float = 1.0,
) -> float:
    """The single κ minimising the mean NLL of ``target`` under ``p(w) ∝ exp(κ·cos(ê, e_w))``.

    The mean NLL is convex in κ: its derivative is ``mean(E_p[cos] - cos(ê, e_y))`` and its
    second derivative the mean variance of the cosine under ``p``. Newton steps on that
    derivative from ``kappa_init``, safeguarded by a bracket (bisection whenever a step would
    leave it), converge in a handful of passes. The cosines are scored once: when the ``[N, V]``
    block fits in 2²⁵ floats it is kept, and each further step is an ``exp`` pass over it rather
    than another matrix product (same values, so the same κ).
    Only the direction of ``pred`` is used, so this suits cosine- and L2-trained models whose
    norm is arbitrary. Fit on validation data, then evaluate test perplexity with that κ.

    Args:
        pred: ``[..., D]`` predictions.
        target: ``[...]`` token ids.
        table: ``[V, D]`` target table.
        exclude_mask: optional ``[V]`` bool, rows left out of the distribution.
        ignore_index: target id to skip (padding).
        kappa_max: upper end of the search; returned when the NLL still falls there.
        tol: stop when the derivative's size (a mean cosine gap), or the bracket's relative
            width, is below this.
        max_iter: cap on Newton/bisection steps.
        chunk_size: table rows scored at once.
        kappa_init: the first κ tried, > 0; a good guess (last epoch's κ̂) saves steps, and
            the answer does not depend on it beyond ``tol``.

    Returns:
        κ ≥ 0 as a float (0 when a uniform distribution beats any concentration).

    Example:
        >>> table = torch.eye(2)
        >>> pred = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]])
        >>> target = torch.tensor([0, 0, 0, 0])  # the first direction is right 3 times in 4
        >>> round(fit_kappa(pred, target, table), 4)  # 1/(1 + e^{-κ}) = 3/4 at κ = log 3
        1.0986
    """
    _check_inputs(pred, table, exclude_mask, chunk_size, None)
    check_number(kappa_max, "kappa_max", low=0.0, low_open=True)
    check_number(tol, "tol", low=0.0, low_open=True)
    check_positive_int(max_iter, "max_iter")
    check_number(kappa_init, "kappa_init", low=0.0, low_open=True)
    check_ignore_index(ignore_index)
    # The range is checked after ignore_index is dropped: padding ids may lie outside it.
    flat_target = _check_target(pred, target, None)
    flat_pred = pred.reshape(-1, pred.shape[-1])
    if ignore_index is not None:
        keep = flat_target != ignore_index
        flat_target, flat_pred = flat_target[keep], flat_pred[keep]
    if flat_target.numel() == 0:
        raise ValueError(
            "fit_kappa got no tokens in pred and target (after dropping ignore_index); pass validation predictions"
        )
    ids = _check_target(flat_pred, flat_target, table.shape[0])
    # NaN moments would end the search at an arbitrary κ; ignored positions are never read.
    _check_finite(flat_pred, "pred", "κ cannot be fitted to NaN predictions; check the model output")
    _check_finite(table, "table", "pass a finite target table")
    if exclude_mask is not None and bool(exclude_mask.to(ids.device)[ids].any()):
        raise ValueError(
            "some targets are rows that exclude_mask removes, so their NLL is infinite for every κ; "
            "drop those tokens or do not exclude their ids"
        )
    with full_precision(pred.device):
        query_dir = _query(flat_pred, 1.0)
        target_cos = _target_scores(query_dir, ids.to(table.device), table)
        gaps = (
            list(_gap_chunks(query_dir, target_cos, table, exclude_mask, chunk_size))
            if query_dir.shape[0] * table.shape[0] <= _FIT_CACHE_BUDGET
            else None
        )

    def grad_hess(k: float) -> tuple[float, float]:
        with full_precision(query_dir.device):
            g, h = _nll_grad_hess(query_dir, target_cos, table, exclude_mask, k, chunk_size, gaps)
        return g, h

    lo, hi = 0.0, math.inf
    kappa = min(float(kappa_init), kappa_max)
    for _ in range(max_iter):
        g, h = grad_hess(kappa)
        if abs(g) < tol:
            break
        if g < 0:
            lo = kappa
            if kappa >= kappa_max:
                break
        else:
            if math.isinf(hi) and lo == 0.0 and grad_hess(0.0)[0] >= 0:
                return 0.0  # the NLL rises from κ = 0 on: uniform is best
            hi = kappa
        if not math.isinf(hi) and hi - lo <= tol * max(1.0, hi):
            break
        step = kappa - g / h if h > 0 else math.nan
        if math.isinf(hi):
            # No upper end yet: follow Newton rightwards, at most 8x per step, up to kappa_max.
            kappa = min(step if kappa < step < 8 * kappa else 8 * kappa, kappa_max)
        else:
            # Newton while it stays strictly inside the bracket, bisection otherwise.
            kappa = step if lo < step < hi else 0.5 * (lo + hi)
    return float(kappa)
