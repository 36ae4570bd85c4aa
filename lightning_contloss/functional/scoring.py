"""Similarities used by the decoders and per-token log-scores used by sequence search.

Three similarities, one per decoder space, all "higher is better":

* ``"cosine"``: cos(x, w);
* ``"ip"``: the inner product x·w;
* ``"l2"``: the negative squared Euclidean distance -‖x - w‖².

Two token scores for beam search, each the log-likelihood a continuous loss assigns to a
token (up to a constant per step that does not change the ranking):

* ``"cosine"``: cos(x, e_w) - 1, the negative cosine loss, always <= 0;
* ``"vmf"``: log C_m(κ) + x·ê_w with κ = ‖x‖, the von Mises-Fisher log-density of the unit
  target ê_w under the prediction x (Kumar & Tsvetkov, 2019), computed as
  (log C_m(κ) + κ) + κ·(cos(x, ê_w) - 1) so that it stays exact for any finite κ.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_contloss.functional.vmf_normalizer import _work_dtype, log_vmf_mode_density

__all__ = ["SPACES", "TOKEN_SCORES", "Space", "TokenScore", "pairwise_similarity", "similarity", "token_log_scores"]

Space = Literal["cosine", "ip", "l2"]
TokenScore = Literal["cosine", "vmf"]
SPACES: tuple[str, ...] = ("cosine", "ip", "l2")
TOKEN_SCORES: tuple[str, ...] = ("cosine", "vmf")


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")


def pairwise_similarity(x: Tensor, table: Tensor, space: Space) -> Tensor:
    """Similarity of every query to every table row, in a decoder space.

    Args:
        x: ``[N, D]`` queries.
        table: ``[V, D]`` rows.
        space: ``"cosine"``, ``"ip"`` or ``"l2"`` (negative squared distance).

    Returns:
        ``[N, V]``, higher is more similar.

    Example:
        >>> x = torch.tensor([[1.0, 0.0]])
        >>> w = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> pairwise_similarity(x, w, "cosine"), pairwise_similarity(x, w, "ip"), pairwise_similarity(x, w, "l2")
        (tensor([[1., 0.]]), tensor([[2., 0.]]), tensor([[-1., -2.]]))
    """
    _check_space(space)
    if space == "cosine":
        return F.normalize(x, dim=-1) @ F.normalize(table, dim=-1).T
    if space == "ip":
        return x @ table.T
    # ‖x-w‖² = ‖x‖² - 2x·w + ‖w‖²; rounding can push an exact match slightly below zero.
    sq = x.pow(2).sum(-1, keepdim=True) - 2 * (x @ table.T) + table.pow(2).sum(-1)
    return -sq.clamp_min(0)


def similarity(x: Tensor, rows: Tensor, space: Space) -> Tensor:
    """Similarity of each query to its own candidate rows, computed directly (no expansion).

    Args:
        x: ``[..., D]`` queries.
        rows: ``[..., k, D]`` candidate rows of each query.
        space: ``"cosine"``, ``"ip"`` or ``"l2"`` (negative squared distance).

    Returns:
        ``[..., k]``, higher is more similar.

    Example:
        >>> x = torch.tensor([[3.0, 4.0]])
        >>> rows = torch.tensor([[[3.0, 4.0], [0.0, 0.0]]])
        >>> similarity(x, rows, "l2")
        tensor([[ -0., -25.]])
    """
    _check_space(space)
    q = x.unsqueeze(-2)
    if space == "cosine":
        return F.cosine_similarity(q, rows, dim=-1, eps=1e-12)
    if space == "ip":
        return (q * rows).sum(-1)
    return -(q - rows).pow(2).sum(-1)


def token_log_scores(pred: Tensor, candidates: Tensor, score: TokenScore = "cosine") -> Tensor:
    """Per-candidate log-score of a token given a predicted embedding.

    ``"cosine"`` gives cos(pred, e_w) - 1 (the negative cosine loss, so every token costs
    something and sums over a sequence behave like log-probabilities). ``"vmf"`` gives the
    vMF log-density log C_m(‖pred‖) + pred·ê_w, with ê_w the unit-normalised candidate
    (the vMF is a density on the sphere) and m = D; the log C_m term differs between
    predictions, so it matters when hypotheses with different predictions are compared.

    Args:
        pred: ``[..., D]`` predictions (for vMF, unnormalised: the norm is κ).
        candidates: ``[..., k, D]`` candidate target embeddings of each prediction.
        score: ``"cosine"`` or ``"vmf"``.

    Returns:
        ``[..., k]`` log-scores in the dtype of ``pred`` (float32 at least), higher is better.

    Example:
        >>> pred = torch.tensor([[0.0, 2.0]])
        >>> cands = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
        >>> token_log_scores(pred, cands, "cosine")
        tensor([[ 0., -1.]])
        >>> s = token_log_scores(pred, cands, "vmf")
        >>> round(float(s[0, 0] - s[0, 1]), 4)  # κ·(cos₀ - cos₁) with κ = 2
        2.0
    """
    if score not in TOKEN_SCORES:
        raise ValueError(f"score must be one of {TOKEN_SCORES}, got {score!r}")
    if pred.shape[-1] != candidates.shape[-1] or pred.shape[:-1] != candidates.shape[:-2]:
        raise ValueError(
            f"pred has shape {tuple(pred.shape)} but candidates have shape {tuple(candidates.shape)}; "
            "candidates must be [..., k, D] for pred [..., D]"
        )
    dtype = pred.dtype if pred.dtype in (torch.float32, torch.float64) else torch.float32
    p, c = pred.to(dtype), candidates.to(dtype)
    if score == "cosine":
        # Rounding can push a cosine just past 1; clamp so the score really is <= 0.
        return F.cosine_similarity(p.unsqueeze(-2), c, dim=-1, eps=1e-12).clamp(-1, 1) - 1
    if p.shape[-1] < 2:
        raise ValueError(f"the vMF score needs embeddings of dim >= 2, got dim {p.shape[-1]}")
    # In the work dtype (float64 but on MPS), from rows scaled to a largest entry of 1: ‖pred‖²
    # of a float32 prediction overflows from ‖pred‖ = 1.8e19 on.
    work = _work_dtype(pred.device)
    pw = pred.to(work)
    scale = pw.abs().amax(dim=-1, keepdim=True)
    unit = pw / scale.clamp_min(torch.finfo(work).tiny)
    kappa = unit.norm(dim=-1) * scale.squeeze(-1)
    cos = F.cosine_similarity(unit.unsqueeze(-2), candidates.to(work), dim=-1, eps=1e-12).clamp(-1, 1)
    # log C_m(κ) + κ·cos written as (log C_m(κ) + κ) + κ·(cos - 1): the two terms of size κ in
    # the first form cancel, leaving rounding error for κ past ~1e7 (float32) or ~1e16 (float64).
    mode = log_vmf_mode_density(kappa, int(p.shape[-1]))
    return (mode.unsqueeze(-1) + kappa.unsqueeze(-1) * (cos - 1)).to(dtype)
