"""``generate()`` for a converted Hugging Face model: vocabulary scores that rank as the decoder does.

After ``replace_softmax_head`` the model's ``logits`` are predicted embeddings ``[..., D]``.
While ``generate()`` runs, :class:`ContinuousLogitsView` turns the last position's prediction
into scores over the vocabulary: the decoder's ``k`` nearest returnable tokens get their
continuous token score (``"cosine"``: cos - 1, ``"vmf"``: the vMF log-density, the same
scores as :func:`~lightning_contloss.beam_search`), every other id ``-inf``. So

* greedy search picks the decoder's nearest token, as :func:`~lightning_contloss.greedy_decode`;
* beam search extends each hypothesis by its ``k`` nearest tokens (``k = num_beams`` by
  default, as ``beam_search``'s ``num_candidates``) and sums their scores;
* sampling (``do_sample=True``) draws from the model's calibrated distribution: the ``k``
  candidates get the logits ``κ·cos(ê, e_w)`` of
  :class:`~lightning_contloss.calibration.Calibration` (κ̂ fitted on validation tokens, a vMF
  loss's own κ, or InfoNCE's 1/τ), which HF's ``temperature``, ``top_k`` and ``top_p`` then act
  on as on a softmax model's logits;
* logits processors and stopping criteria (``min_new_tokens``, ``bad_words_ids``,
  ``no_repeat_ngram_size``, ``StoppingCriteria``) act on those candidates.

HF's beam search log-softmaxes the logits before the processors run; continuous scores are
not log-probabilities, so :class:`RestoreScores` (the first processor in beam mode without
sampling) adds the row's log-normaliser back and the search sums the scores themselves, as
``beam_search`` does. Sampled logits are those of a distribution, so HF's log-softmax stays.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_contloss._arguments import int_arg
from lightning_contloss.functional.scoring import TOKEN_SCORES, token_log_scores
from lightning_contloss.integrations.state import ContinuousOwner

__all__ = ["DEFAULT_SAMPLING_CANDIDATES", "CandidatesGuard", "ContinuousLogitsView", "RestoreScores"]

# Candidates per step outside beam search, and when sampling: HF's default top_k, so sampling
# draws from the same number of tokens as it would from a softmax.
DEFAULT_SAMPLING_CANDIDATES = 50


class ContinuousLogitsView:
    """Scores over the vocabulary from a continuous head's predictions, for one ``generate()`` call.

    Args:
        owner: the module with the decoder (a ``ContinuousOutputMixin``).
        vocab_width: width of the scores (the replaced layer's ``out_features``; ids past the
            target table, e.g. padding, stay ``-inf``).
        score: ``"cosine"`` or ``"vmf"``, as ``beam_search``'s ``score``.
        num_candidates: tokens scored per step; ``None`` for ``num_beams`` in beam search
            without sampling and :data:`DEFAULT_SAMPLING_CANDIDATES` otherwise.
        exact_stop: in beam search, set the call's ``early_stopping`` to ``"never"`` (the exact
            bound ``beam_search`` uses); pass it when neither the call nor the model set it.
    """

    def __init__(
        self,
        owner: ContinuousOwner,
        vocab_width: int,
        score: str = "cosine",
        num_candidates: int | None = None,
        *,
        exact_stop: bool = False,
    ) -> None:
        if score not in TOKEN_SCORES:
            raise ValueError(f"token_score must be one of {TOKEN_SCORES}, got {score!r}")
        if num_candidates is not None:
            num_candidates = int_arg(num_candidates, "num_candidates", 1, rule="an int >= 1 or None")
        self.owner = owner
        self.vocab_width = vocab_width
        self.score = score
        self.num_candidates = num_candidates
        self.exact_stop = exact_stop
        self.k: int | None = None  # set by configure(), once generate() has resolved its config
        self.beam = False
        self.sample = False
        self.log_norm: Tensor | None = None

    def configure(self, generation_config: Any, processors: list[Any]) -> None:
        """Fix ``k`` and the search kind from HF's resolved config (this call's copy); add this view's processors."""
        num_beams = int(getattr(generation_config, "num_beams", 1) or 1)
        self.beam = num_beams > 1
        if self.beam and self.exact_stop:
            # HF's default heuristic assumes log-probabilities; "never" is beam_search's exact bound.
            generation_config.early_stopping = "never"
        self.sample = bool(getattr(generation_config, "do_sample", False))
        decoder = self.owner.continuous_decoder
        if len(decoder) > self.vocab_width:
            raise ValueError(
                f"the target table has {len(decoder)} rows but the model's vocabulary has {self.vocab_width} ids; "
                "build targets with at most one row per vocabulary id"
            )
        default = num_beams if self.beam and not self.sample else DEFAULT_SAMPLING_CANDIDATES
        self.k = min(self.num_candidates or default, int(decoder.returnable.sum()))
        if self.sample:
            self.owner.continuous_calibration.current_kappa()  # warns now, once, when κ is uncalibrated
        if self.beam and not self.sample:
            processors.insert(0, RestoreScores(self))
        elif not self.beam:
            processors.append(CandidatesGuard(self))

    def __call__(self, logits: Tensor) -> Tensor:
        """``logits [N, T, D]`` (predictions) -> scores ``[N, 1, vocab_width]`` for the last position."""
        if self.k is None:
            raise RuntimeError(
                "this transformers version's generate() did not call _get_logits_processor, so lightning-contloss "
                "could not set up continuous scores; decode with lightning_contloss.greedy_decode/beam_search"
            )
        lg, pred = self.owner.continuous_split_output(logits[:, -1:])
        if lg is not None:  # ReWE: tokens come from the kept softmax, as in ContinuousOutputMixin.continuous_decode
            self.log_norm = None
            return self._pad(lg.float())
        pred = pred[:, 0].float()
        decoder = self.owner.continuous_decoder
        ids, _ = decoder.query(pred, self.k)
        table = decoder.table
        cands = table[ids.to(table.device)].to(device=pred.device, dtype=pred.dtype)
        if self.sample:  # the calibrated distribution's logits; HF's temperature divides them
            scores = self.owner.continuous_calibration.logits(pred, cands)
        else:
            scores = token_log_scores(pred, cands, self.score)  # type: ignore[arg-type]
        out = pred.new_full((pred.shape[0], self.vocab_width), float("-inf"))
        out.scatter_(1, ids.to(pred.device), scores.float())
        # HF's beam search log-softmaxes these scores; RestoreScores adds this back.
        self.log_norm = torch.logsumexp(out, dim=-1, keepdim=True) if self.beam and not self.sample else None
        return out[:, None]

    def _pad(self, logits: Tensor) -> Tensor:
        extra = self.vocab_width - logits.shape[-1]
        return torch.nn.functional.pad(logits, (0, extra), value=float("-inf")) if extra > 0 else logits


class RestoreScores:
    """Beam-search logits processor: undoes HF's log-softmax so hypotheses sum continuous scores.

    Example:
        >>> class _View:
        ...     log_norm = torch.tensor([[2.0]])
        >>> RestoreScores(_View())(torch.zeros(1, 1), torch.tensor([[-3.0, -2.5]]))
        tensor([[-1.0000, -0.5000]])
    """

    def __init__(self, view: Any) -> None:
        self.view = view

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        log_norm = self.view.log_norm
        if log_norm is None:  # ReWE: real logits, HF's log-softmax is right
            return scores
        return scores + log_norm.to(scores)


class CandidatesGuard:
    """Last logits processor outside beam search: refuses to pick a token when all candidates are masked.

    With every candidate at ``-inf`` (a processor such as ``min_new_tokens`` or
    ``no_repeat_ngram_size`` removed all ``k`` of them), HF's argmax would silently return id 0.

    Example:
        >>> class _View:
        ...     k = 1
        >>> masked = torch.tensor([[float("-inf"), float("-inf")]])
        >>> CandidatesGuard(_View())(torch.zeros(1, 1), masked)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: logits processors masked all 1 candidate tokens of 1 sequence(s); pass generate(..., ...
    """

    def __init__(self, view: Any) -> None:
        self.view = view

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        dead = ~torch.isfinite(scores).any(dim=-1)
        if bool(dead.any()):
            raise ValueError(
                f"logits processors masked all {self.view.k} candidate tokens of {int(dead.sum())} sequence(s); "
                f"pass generate(..., num_candidates=N) with a larger N (default {DEFAULT_SAMPLING_CANDIDATES} "
                "outside beam search)"
            )
        return scores
