"""Von Mises-Fisher negative log-likelihood (Kumar & Tsvetkov, 2019) with both regularisers."""

from __future__ import annotations

from torch import Tensor

from lightning_contloss.functional._checks import (
    Batch,
    check_ignore_index,
    check_number,
    check_reduction,
    full_precision,
    prepare,
    reduce,
)
from lightning_contloss.functional.cosine import row_dot_norm, safe_norm
from lightning_contloss.functional.vmf_normalizer import log_vmf_normalizer

__all__ = ["vmf_nll"]

# The constants `lambda1 = 0.02` and `lambda2 = 0.1` of `ContinuousLossCompute._nllvmf` in the
# reference code (github.com/Sachin19/seq2seq-con, OpenNMT-py/onmt/utils/loss.py).
DEFAULT_LAMBDA1 = 0.02
DEFAULT_LAMBDA2 = 0.1


def _check_vmf_nll_args(lambda1: float, lambda2: float, approx: bool) -> None:
    check_number(lambda1, "lambda1", low=0.0, why="it penalises the norm of pred")
    check_number(lambda2, "lambda2", low=0.0, high=1.0, low_open=True, why="it scales the dot product with the target")
    if not isinstance(approx, bool):
        raise ValueError(f"approx must be True or False, got {approx!r}")


def _vmf_nll_tokens(
    pred: Tensor,
    ids: Tensor,
    table: Tensor,
    *,
    lambda1: float,
    lambda2: float,
    approx: bool,
    ignore_index: int | None,
) -> tuple[Tensor, Batch]:
    """Per-token regularised vMF NLL (``[N]``) and the checked, flattened batch it was computed on."""
    batch = prepare(pred, ids, table, ignore_index)
    with full_precision(batch.pred.device):
        target = batch.rows(table)
        # The norm's gradient at exactly zero is 0 and the normaliser substitutes its finite
        # κ -> 0 limit there, so a zero prediction needs no epsilon.
        dot, kappa = row_dot_norm(batch.pred, target)
        log_c = log_vmf_normalizer(kappa, batch.pred.shape[-1], approx=approx).to(batch.dtype)
        # ê·μ_w = ê·e_w / ‖e_w‖, without materialising the normalised rows.
        per_token = -log_c - lambda2 * dot / safe_norm(target) + lambda1 * kappa
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
) -> Tensor:
    """Regularised von Mises-Fisher NLL of the target direction under ``vMF(ê/‖ê‖, κ=‖ê‖)``.

    ``loss = −log C_m(κ) − λ2·ê·μ_w + λ1·κ`` with ``κ = ‖ê‖``, ``m = D`` and ``μ_w = e_w/‖e_w‖``
    (the target row as a unit direction). With ``λ1 = 0, λ2 = 1`` this is the plain NLL
    ``−log C_m(κ) − κ·cos(ê, e_w)`` of Kumar & Tsvetkov (2019), eq. 4. Their two regularisers,
    both on by default:

    * reg1, ``λ1·‖ê‖``: penalises the concentration so κ does not grow without bound;
    * reg2, ``λ2 < 1``: scales the dot product, which also limits κ.

    Defaults ``λ1 = 0.02`` and ``λ2 = 0.1`` are the constants ``lambda1``/``lambda2`` in
    ``ContinuousLossCompute._nllvmf`` of the authors' reference code
    (``Sachin19/seq2seq-con``, ``OpenNMT-py/onmt/utils/loss.py``). Set ``lambda1=0`` or
    ``lambda2=1`` to switch one off. ``log C_m`` is the exact, differentiable
    :func:`~lightning_contloss.functional.log_vmf_normalizer`; ``approx=True`` uses their
    gradient-only approximation instead (the loss value is then not a log-likelihood).

    The loss is not bounded by 0: it is a negative log-density. A zero prediction gives a
    finite loss (the κ → 0 limit) and a finite gradient (``−λ2·μ_w``). Decode with cosine:
    for a fixed ``ê`` the vMF density ranks words by ``ê·μ_w``, which is ``‖ê‖·cos(ê, e_w)``.

    Args:
        pred: ``[..., D]`` predicted embeddings; the norm is the concentration κ.
        ids: ``[...]`` target ids into ``table``.
        table: ``[V, D]`` target embeddings (rows are normalised inside the loss).
        lambda1: weight of the ``‖ê‖`` penalty (reg1), >= 0.
        lambda2: scale of the dot product (reg2), in (0, 1].
        approx: use Kumar & Tsvetkov's approximation of ``log C_m``.
        ignore_index: id of tokens to skip (padding).
        reduction: ``"mean"`` over counted tokens, ``"sum"`` or ``"none"``.

    Example:
        >>> table = torch.eye(4)
        >>> pred = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
        >>> loss = vmf_nll(pred, torch.tensor([0, 0]), table, reduction="none")
        >>> bool(loss[0] < loss[1])  # pointing at the target costs less
        True
    """
    check_reduction(reduction)
    check_ignore_index(ignore_index)
    _check_vmf_nll_args(lambda1, lambda2, approx)
    per_token, batch = _vmf_nll_tokens(
        pred, ids, table, lambda1=lambda1, lambda2=lambda2, approx=approx, ignore_index=ignore_index
    )
    return reduce(per_token, batch, reduction)
