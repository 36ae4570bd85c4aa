"""SearchRules: what greedy and beam search may generate (EOS bias, minimum length, repetition blocking).

A continuous model scores EOS by one target row, the cosine (or vMF log-density) of its
prediction with ``e_EOS``; the k nearest neighbours of a prediction rarely include it, so
without help a generation runs to ``max_len``. ``eos_bias`` makes EOS a candidate at every
step, with its score plus the bias (:func:`~lightning_contloss.decoding.calibrate_eos_bias`
fits the bias on validation data). The other rules are the usual ones of softmax search:
no EOS before ``min_length`` tokens, no repeated n-gram, and a penalty on tokens the
hypothesis already holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_contloss._arguments import int_arg, is_real

__all__ = ["SearchRules"]


@dataclass(frozen=True)
class SearchRules:
    """Constraints on the tokens a search may pick, applied to each step's candidate scores.

    Args:
        eos_bias: ``None``: EOS competes only when it is among a prediction's nearest
            candidates (plain k-NN search). A number: EOS is scored at every step, and the
            number is added to its score (0 scores it as it is; > 0 ends sequences sooner).
        min_length: EOS is not allowed before this many tokens (EOS counted).
        no_repeat_ngram_size: ``n >= 2`` forbids a token that would repeat an n-gram of the
            hypothesis (start tokens included); 0 turns it off.
        repetition_penalty: subtracted from the score of a token the hypothesis already
            holds (``>= 0``; 0 turns it off).

    Example:
        >>> rules = SearchRules(no_repeat_ngram_size=2)
        >>> history = torch.tensor([[5, 6, 5]])  # after "5 6 5", another 6 would repeat "5 6"
        >>> rules.apply(torch.zeros(1, 2), torch.tensor([[6, 7]]), history, step=3, eos_id=None).tolist()
        [[-inf, 0.0]]
    """

    eos_bias: float | None = None
    min_length: int = 0
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 0.0

    def __post_init__(self) -> None:
        # Frozen: the checked values (plain ints and floats, also from numpy scalars) are set through object.
        bias = self.eos_bias
        bad_bias = not is_real(bias) or not math.isfinite(bias)
        if bias is not None and bad_bias:
            raise ValueError(f"eos_bias must be a finite number or None, got {bias!r}")
        if bias is not None:
            object.__setattr__(self, "eos_bias", float(bias))
        for name in ("min_length", "no_repeat_ngram_size"):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, int_arg(value, name, 0))
            except ValueError:  # int_arg's wrong-type error is a ValueError too
                raise ValueError(f"{name} must be an int >= 0 (0 turns it off), got {value!r}") from None
        if self.no_repeat_ngram_size == 1:
            raise ValueError(
                "no_repeat_ngram_size=1 would forbid every token already generated; use n >= 2, "
                "or repetition_penalty for a soft version"
            )
        pen = self.repetition_penalty
        if not is_real(pen) or not math.isfinite(pen) or pen < 0:
            raise ValueError(f"repetition_penalty must be a finite number >= 0, got {pen!r}")
        object.__setattr__(self, "repetition_penalty", float(pen))

    @property
    def scores_eos(self) -> bool:
        """Whether EOS is a candidate at every step (``eos_bias`` is set)."""
        return self.eos_bias is not None

    @property
    def blocks(self) -> bool:
        """Whether a rule can rule out or demote a near candidate (so searches query spares)."""
        return self.no_repeat_ngram_size > 0 or self.repetition_penalty > 0 or self.min_length > 0

    @property
    def keeps_scores_nonpositive(self) -> bool:
        """Whether cosine token scores stay <= 0 under these rules (beam search's early stop needs it)."""
        return self.eos_bias is None or self.eos_bias <= 0

    def apply(self, scores: Tensor, cand_ids: Tensor, history: Tensor, step: int, eos_id: int | None) -> Tensor:
        """The candidate scores after the rules (``-inf`` where a candidate is not allowed).

        Args:
            scores: ``[N, C]`` token scores of the candidates.
            cand_ids: ``[N, C]`` their token ids.
            history: ``[N, t]`` the start tokens and the tokens generated so far, per row.
            step: how many tokens were generated before this one (0 on the first step).
            eos_id: the EOS id, or ``None``.
        """
        out = scores.clone()
        if eos_id is not None:
            is_eos = cand_ids == eos_id
            if self.eos_bias is not None:
                out = out + is_eos.to(out.dtype) * self.eos_bias
            if step + 1 < self.min_length:
                out = out.masked_fill(is_eos, -math.inf)
        if self.repetition_penalty > 0 and history.shape[1] > 0:
            seen = (cand_ids[:, :, None] == history[:, None, :]).any(dim=-1)
            out = out - seen.to(out.dtype) * self.repetition_penalty
        n = self.no_repeat_ngram_size
        if n and history.shape[1] >= n - 1:
            out = out.masked_fill(_repeats_ngram(cand_ids, history, n), -math.inf)
        return out


def _repeats_ngram(cand_ids: Tensor, history: Tensor, n: int) -> Tensor:
    # An n-gram ends at the candidate; it repeats one of history's n-grams when history's last
    # n - 1 tokens occurred before, followed by the candidate.
    length = history.shape[1]
    if length < n:
        return torch.zeros_like(cand_ids, dtype=torch.bool)
    windows = history.unfold(1, n, 1)  # [N, length - n + 1, n]
    tail = history[:, length - n + 1 :]  # [N, n - 1]
    match = (windows[:, :, : n - 1] == tail[:, None, :]).all(dim=-1)  # [N, M]
    follower = windows[:, :, n - 1]  # [N, M]
    hit = (cand_ids[:, :, None] == follower[:, None, :]) & match[:, None, :]
    return hit.any(dim=-1)
