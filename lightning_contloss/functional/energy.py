"""Energy score: the strictly proper scoring rule of a distribution known only through samples.

For a predictive distribution ``P`` and an observed ``y`` (Gneiting & Raftery 2007; the training
loss of CALM, Shao et al. 2025)::

    ES(P, y) = E‖X − y‖^β − ½·E‖X − X'‖^β,    X, X' ~ P independent,  0 < β < 2.

It is minimised in expectation exactly when ``P`` is the distribution of ``y``, and needs no
density, only samples, so it trains a generative head (noise in, embedding out). With ``S``
samples ``x_1..x_S`` the unbiased Monte-Carlo estimate is::

    (1/S)·Σ_i ‖x_i − y‖^β  −  1/(S(S−1))·Σ_{i<j} ‖x_i − x_j‖^β

(the pairwise term runs over the ``S(S−1)/2`` distinct pairs; a sample paired with itself would
bias it). A single point ``x`` is the degenerate distribution δ_x, whose score is ``‖x − y‖^β``.
"""

from __future__ import annotations

from torch import Tensor

from lightning_contloss.functional._checks import (
    Batch,
    check_ignore_index,
    check_number,
    check_reduction,
    compute_dtype,
    full_precision,
    prepare,
    reduce,
)

__all__ = ["energy_loss", "energy_score"]

DEFAULT_BETA = 1.0


def _check_beta(beta: float) -> None:
    check_number(
        beta,
        "beta",
        low=0.0,
        high=2.0,
        low_open=True,
        high_open=True,
        why="from 2 on the energy score is no longer strictly proper (at 2 it scores only the mean); use 1",
    )


def _check_energy_loss_args(beta: float) -> None:
    """Check the hyper-parameters of :func:`energy_loss` / ``EnergyLoss``, naming what to change."""
    _check_beta(beta)


def distance_power(diff: Tensor, beta: float) -> Tensor:
    """``‖diff‖^β`` over the last dim (``[..., D] -> [...]``), with gradient 0 where ``diff`` is 0.

    ``‖x‖`` is not differentiable at 0 and autograd's ``sqrt`` gives ``0·∞ = nan`` there; 0 is a
    valid subgradient of the norm at 0 and the one used here, for every β. Coinciding samples
    are the rule, not the exception: a generative head whose last layer starts at zero emits
    S identical samples on its first step.

    Example:
        >>> import torch
        >>> d = torch.tensor([[3.0, 4.0], [0.0, 0.0]], requires_grad=True)
        >>> distance_power(d, 1.0).sum().backward()
        >>> d.grad
        tensor([[0.6000, 0.8000],
                [0.0000, 0.0000]])
    """
    squared = (diff * diff).sum(dim=-1)
    positive = squared != 0  # not `> 0`: a NaN must propagate, not be read as a zero distance
    # The inner where keeps pow's backward away from 0 (its derivative is infinite there for β < 2).
    safe = squared.where(positive, 1.0)
    return (safe ** (0.5 * beta)).where(positive, 0.0)


def _energy_score_rows(samples: Tensor, target: Tensor, beta: float) -> Tensor:
    """Per-row Monte-Carlo energy score of ``samples [N, S, D]`` against ``target [N, D]``: ``[N]``."""
    num = samples.shape[-2]
    fidelity = distance_power(samples - target.unsqueeze(-2), beta).mean(dim=-1)
    if num == 1:
        return fidelity  # a point mass: no spread term
    # Pairs (i, i + k) for k = 1..S-1: each distinct pair exactly once, S - 1 small tensors
    # instead of one [N, S(S-1)/2, D] gather.
    spread = sum(distance_power(samples[:, k:] - samples[:, :-k], beta).sum(dim=-1) for k in range(1, num))
    assert isinstance(spread, Tensor)
    return fidelity - spread / (num * (num - 1))


def _as_samples(pred: Tensor, ids: Tensor) -> Tensor:
    """``pred`` as ``[..., S, D]``: a ``[..., D]`` point prediction (same leading shape as ``ids``) is S = 1."""
    if isinstance(pred, Tensor) and isinstance(ids, Tensor) and pred.dim() == ids.dim() + 1:
        return pred.unsqueeze(-2)
    return pred


def _energy_loss_tokens(
    pred: Tensor, ids: Tensor, table: Tensor, *, beta: float, ignore_index: int | None
) -> tuple[Tensor, Batch]:
    """Per-token energy scores (``[N]``) and the checked, flattened batch (its ``pred`` is the first sample)."""
    samples = _as_samples(pred, ids)
    if not isinstance(samples, Tensor) or samples.dim() < 2:
        what = tuple(samples.shape) if isinstance(samples, Tensor) else type(samples).__name__
        raise ValueError(
            f"pred must be a floating-point [..., S, D] tensor of S samples per position (or [..., D], one "
            f"point), got {what}"
        )
    # The first sample carries every check of the other losses (dims, ids, devices, dtype).
    batch = prepare(samples.select(-2, 0), ids, table, ignore_index)
    flat = samples.reshape(-1, samples.shape[-2], samples.shape[-1]).to(batch.dtype)
    with full_precision(flat.device):
        per_token = _energy_score_rows(flat, batch.rows(table), beta)
    return per_token, batch


def energy_score(samples: Tensor, target: Tensor, beta: float = DEFAULT_BETA) -> Tensor:
    """Unbiased Monte-Carlo energy score of ``S`` samples per position against the observed targets.

    Args:
        samples: ``[..., S, D]`` draws from the predictive distribution at each position
            (S ≥ 1; S = 1 scores a point prediction, ``‖x − y‖^β``).
        target: ``[..., D]`` the observed vectors.
        beta: the exponent β in (0, 2); 1 as in CALM.

    Returns:
        ``[...]`` the score per position (lower is better; it can be negative).

    Example:
        >>> import torch
        >>> samples = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])  # two samples at one position
        >>> energy_score(samples, torch.tensor([[1.0, 0.0]]))      # 1 − ½·2
        tensor([0.])
    """
    _check_beta(beta)
    if not isinstance(samples, Tensor) or not isinstance(target, Tensor):
        raise ValueError(
            f"samples and target must be tensors, got {type(samples).__name__} and {type(target).__name__}"
        )
    if samples.dim() < 2 or samples.shape[:-2] + samples.shape[-1:] != target.shape:
        raise ValueError(
            f"samples has shape {tuple(samples.shape)} and target {tuple(target.shape)}; samples must be "
            "[..., S, D] for a [..., D] target"
        )
    if not (samples.is_floating_point() and target.is_floating_point()):
        raise ValueError(f"samples and target must be floating point, got {samples.dtype} and {target.dtype}")
    if samples.shape[-2] == 0:
        raise ValueError("samples has no samples (S = 0); draw at least one per position")
    dtype = compute_dtype(samples, target)
    flat = samples.reshape(-1, samples.shape[-2], samples.shape[-1]).to(dtype)
    with full_precision(flat.device):
        per_row = _energy_score_rows(flat, target.reshape(-1, target.shape[-1]).to(dtype), beta)
    return per_row.reshape(target.shape[:-1])


def energy_loss(
    pred: Tensor,
    ids: Tensor,
    table: Tensor,
    beta: float = DEFAULT_BETA,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Energy score of sampled predictions against their target rows: the loss of a generative head.

    Euclidean, so decode by L2 distance (on a unit-norm table that ranks as cosine does). The
    scale of the table matters: the score is in the table's units, and a table of unit rows
    keeps it in ``[−1, 2]`` for β = 1.

    Args:
        pred: ``[..., S, D]`` S samples per position, or ``[..., D]`` one point per position
            (scored as a point mass: ``‖ê − e_w‖^β``, the plain L2 distance for β = 1).
        ids: ``[...]`` target ids into ``table``.
        table: ``[V, D]`` target embeddings (``targets.weight``).
        beta: the exponent β in (0, 2).
        ignore_index: id of tokens to skip (padding); they add neither loss nor gradient.
        reduction: ``"mean"`` over counted tokens, ``"sum"``, or ``"none"`` (``[...]``, 0 at
            ignored tokens).

    Example:
        >>> import torch
        >>> table = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> samples = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [2.0, 0.0]]])
        >>> energy_loss(samples, torch.tensor([0, 0]), table, reduction="none")
        tensor([0., 0.])
    """
    check_reduction(reduction)
    check_ignore_index(ignore_index)
    _check_energy_loss_args(beta)
    return reduce(*_energy_loss_tokens(pred, ids, table, beta=beta, ignore_index=ignore_index), reduction)
