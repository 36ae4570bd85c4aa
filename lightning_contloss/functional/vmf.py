"""Von Mises-Fisher negative log-likelihood (Kumar & Tsvetkov, 2019) with its regularisers and a κ floor."""

from __future__ import annotations

from typing import Final

import torch
from torch import Tensor

from lightning_contloss.functional._checks import (
    Batch,
    check_choice,
    check_ignore_index,
    check_number,
    check_reduction,
    full_precision,
    prepare,
    reduce,
)
from lightning_contloss.functional.cosine import row_cosine, row_dot_norm, safe_norm, unit
from lightning_contloss.functional.vmf_normalizer import log_vmf_normalizer

__all__ = ["vmf_concentration", "vmf_nll"]

# The constants `lambda1 = 0.02` and `lambda2 = 0.1` of `ContinuousLossCompute._nllvmf` in the
# reference code (github.com/Sachin19/seq2seq-con, OpenNMT-py/onmt/utils/loss.py).
DEFAULT_LAMBDA1 = 0.02
DEFAULT_LAMBDA2 = 0.1
# `lambda_vmf = 0.2`, the λ of the `log(1 + κ)·(λ − cos)` form that the same code trains with.
DEFAULT_KUMAR_LAMBDA = 0.2
REGULARIZERS = ("default", "kumar")
# VMFLoss's defaults, the setting that learns on PTB (benchmarks/results/quality.md, "Losses at their
# defaults"): the reference form above collapses there (κ̂ = 0, acc@1 below the unigram baseline).
# vmf_nll keeps the reference code's form as its default.
LOSS_DEFAULT_REGULARIZER: Final = "kumar"
LOSS_DEFAULT_KAPPA_MIN: Final = 1.0


def _check_vmf_nll_args(
    lambda1: float,
    lambda2: float,
    approx: bool,
    regularizer: str = "default",
    kumar_lambda: float = DEFAULT_KUMAR_LAMBDA,
    kappa_min: float = 0.0,
) -> None:
    check_number(lambda1, "lambda1", low=0.0, why="it penalises the norm of pred")
    check_number(lambda2, "lambda2", low=0.0, high=1.0, low_open=True, why="it scales the dot product with the target")
    if not isinstance(approx, bool):
        raise ValueError(f"approx must be True or False, got {approx!r}")
    check_choice(regularizer, "regularizer", REGULARIZERS)
    # λ >= 1 makes log(1 + κ)·(λ − cos) >= 0 for every token, so κ -> 0 everywhere.
    check_number(
        kumar_lambda,
        "kumar_lambda",
        low=0.0,
        high=1.0,
        high_open=True,
        why="from 1 on, κ collapses to 0 for every token; 0.2 in the paper",
    )
    check_number(kappa_min, "kappa_min", low=0.0, why="it is the smallest concentration, κ = kappa_min + ‖pred‖")
    if regularizer == "kumar" and (lambda1 != DEFAULT_LAMBDA1 or lambda2 != DEFAULT_LAMBDA2):
        raise ValueError(
            f"lambda1={lambda1} and lambda2={lambda2} belong to regularizer='default'; regularizer='kumar' "
            "(VMFLoss's default) replaces both by log(1 + κ)·(kumar_lambda − cos): set kumar_lambda instead, "
            "or pass regularizer='default' to use them"
        )


def vmf_concentration(pred: Tensor, kappa_min: float = 0.0) -> Tensor:
    """``κ·ê/‖ê‖`` with ``κ = kappa_min + ‖ê‖``: the vMF natural parameter a prediction stands for.

    With ``kappa_min = 0`` this is ``pred`` itself (κ = ‖ê‖); a decoder or a likelihood metric that
    takes κ from the norm reads the right concentration from the result. A zero row stays zero
    (it has no direction).

    Args:
        pred: ``[..., D]`` predicted embeddings.
        kappa_min: the concentration floor, >= 0.

    Example:
        >>> vmf_concentration(torch.tensor([[3.0, 4.0], [0.0, 0.0]]), kappa_min=5.0)
        tensor([[6., 8.],
                [0., 0.]])
    """
    check_number(kappa_min, "kappa_min", low=0.0, why="it is the smallest concentration, κ = kappa_min + ‖pred‖")
    if kappa_min == 0.0:
        return pred
    return pred + kappa_min * unit(pred)


def _vmf_nll_tokens(
    pred: Tensor,
    ids: Tensor,
    table: Tensor,
    *,
    lambda1: float,
    lambda2: float,
    approx: bool,
    ignore_index: int | None,
    regularizer: str = "default",
    kumar_lambda: float = DEFAULT_KUMAR_LAMBDA,
    kappa_min: float = 0.0,
) -> tuple[Tensor, Batch]:
    """Per-token regularised vMF NLL (``[N]``) and the checked, flattened batch it was computed on."""
    batch = prepare(pred, ids, table, ignore_index)
    dim = batch.pred.shape[-1]
    with full_precision(batch.pred.device):
        target = batch.rows(table)
        if regularizer == "default" and kappa_min == 0.0:
            # The norm's gradient at exactly zero is 0 and the normaliser substitutes its finite
            # κ -> 0 limit there, so a zero prediction needs no epsilon.
            dot, kappa = row_dot_norm(batch.pred, target)
            log_c = log_vmf_normalizer(kappa, dim, approx=approx).to(batch.dtype)
            # ê·μ_w = ê·e_w / ‖e_w‖, without materialising the normalised rows.
            per_token = -log_c - lambda2 * dot / safe_norm(target) + lambda1 * kappa
            return per_token, batch
        norm = torch.linalg.vector_norm(batch.pred, dim=-1)
        kappa = kappa_min + norm
        cos = row_cosine(batch.pred, target)
        log_c = log_vmf_normalizer(kappa, dim, approx=approx).to(batch.dtype)
        if regularizer == "kumar":
            per_token = -log_c + torch.log1p(kappa) * (kumar_lambda - cos)
        else:
            # κ·cos = ê·μ_w + kappa_min·cos: the floor adds a cosine term of weight kappa_min.
            per_token = -log_c - lambda2 * kappa * cos + lambda1 * kappa
    return per_token, batch


def vmf_nll(
    pred: Tensor,
    ids: Tensor,
    table: Tensor,
    lambda1: float = DEFAULT_LAMBDA1,
    lambda2: float = DEFAULT_LAMBDA2,
    approx: bool = False,
    ignore_index: int | None = None,
    reduction: str = "mean",
    regularizer: str = "default",
    kumar_lambda: float = DEFAULT_KUMAR_LAMBDA,
    kappa_min: float = 0.0,
) -> Tensor:
    """Regularised von Mises-Fisher NLL of the target direction under ``vMF(ê/‖ê‖, κ)``, ``κ = kappa_min + ‖ê‖``.

    With ``regularizer="default"``: ``loss = −log C_m(κ) − λ2·κ·cos(ê, e_w) + λ1·κ`` with ``m = D``
    (for ``kappa_min = 0`` the middle term is ``λ2·ê·μ_w``, ``μ_w = e_w/‖e_w‖``). With
    ``λ1 = 0, λ2 = 1`` this is the plain NLL ``−log C_m(κ) − κ·cos(ê, e_w)`` of Kumar & Tsvetkov
    (2019), eq. 4. Their two regularisers, both on by default here (:class:`~lightning_contloss.losses.VMFLoss`
    defaults to the ``"kumar"`` form with ``kappa_min=1``, the setting that learns on PTB):

    * reg1, ``λ1·κ``: penalises the concentration so κ does not grow without bound;
    * reg2, ``λ2 < 1``: scales the dot product, which also limits κ.

    Defaults ``λ1 = 0.02`` and ``λ2 = 0.1`` are the constants ``lambda1``/``lambda2`` in
    ``ContinuousLossCompute._nllvmf`` of the authors' reference code
    (``Sachin19/seq2seq-con``, ``OpenNMT-py/onmt/utils/loss.py``). Set ``lambda1=0`` or
    ``lambda2=1`` to switch one off.

    With ``regularizer="kumar"``: ``loss = −log C_m(κ) + log(1 + κ)·(λ − cos(ê, e_w))``, ``λ =
    kumar_lambda`` (0.2), the form that reference code actually trains with: the ``κ·cos`` term
    is replaced by ``log(1 + κ)·cos``, which grows slower than ``−log C_m`` (≈ κ), so κ stays
    bounded without reg1/reg2; κ grows only where ``cos > λ``. ``lambda1``/``lambda2`` must then
    stay at their defaults (they belong to the other form).

    ``kappa_min`` floors the concentration, ``κ = kappa_min + ‖ê‖``, so it cannot reach 0 (where
    vMF is uniform on the sphere and says nothing about direction); the norm keeps its gradient
    below the floor, which a clamp would lose. Decode and score such a model with
    :func:`vmf_concentration` (``κ·ê/‖ê‖``), not ``pred``, wherever κ is read from the norm.

    ``log C_m`` is the exact, differentiable
    :func:`~lightning_contloss.functional.log_vmf_normalizer`; ``approx=True`` uses their
    gradient-only approximation instead (the loss value is then not a log-likelihood).

    The loss is not bounded by 0: it is a negative log-density. With ``kappa_min = 0`` and the
    default regulariser a zero prediction gives a finite loss (the κ → 0 limit) and a finite
    gradient (``−λ2·μ_w``). Decode with cosine: for a fixed ``ê`` the vMF density ranks words by
    ``κ·cos(ê, e_w)``, and κ is the same for every word.

    Args:
        pred: ``[..., D]`` predicted embeddings; the norm sets the concentration κ.
        ids: ``[...]`` target ids into ``table``.
        table: ``[V, D]`` target embeddings (rows are normalised inside the loss).
        lambda1: weight of the κ penalty (reg1), >= 0.
        lambda2: scale of the dot product (reg2), in (0, 1].
        approx: use Kumar & Tsvetkov's approximation of ``log C_m``.
        ignore_index: id of tokens to skip (padding).
        reduction: ``"mean"`` over counted tokens, ``"sum"`` or ``"none"``.
        regularizer: ``"default"`` (reg1 and reg2) or ``"kumar"`` (``log(1 + κ)·(λ − cos)``).
        kumar_lambda: λ of the ``"kumar"`` form, in [0, 1).
        kappa_min: concentration floor, >= 0; κ = kappa_min + ‖ê‖.

    Example:
        >>> table = torch.eye(4)
        >>> pred = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
        >>> loss = vmf_nll(pred, torch.tensor([0, 0]), table, reduction="none")
        >>> bool(loss[0] < loss[1])  # pointing at the target costs less
        True
        >>> kumar = vmf_nll(pred, torch.tensor([0, 0]), table, regularizer="kumar", kappa_min=1.0, reduction="none")
        >>> bool(kumar[0] < kumar[1])
        True
    """
    check_reduction(reduction)
    check_ignore_index(ignore_index)
    _check_vmf_nll_args(lambda1, lambda2, approx, regularizer, kumar_lambda, kappa_min)
    per_token, batch = _vmf_nll_tokens(
        pred,
        ids,
        table,
        lambda1=lambda1,
        lambda2=lambda2,
        approx=approx,
        ignore_index=ignore_index,
        regularizer=regularizer,
        kumar_lambda=kumar_lambda,
        kappa_min=kappa_min,
    )
    return reduce(per_token, batch, reduction)
