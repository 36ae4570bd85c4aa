"""Translation quality figures: corpus BLEU and chrF (sacrebleu), EOS rate and distinct output words.

BLEU and chrF are computed on *tokenized* text: hypotheses and references are both the
lower-cased :func:`~lightning_contloss.examples.translation_data.tokenize` tokens joined by
single spaces, and sacrebleu is told not to tokenize again (``tokenize="none"``). The figures
are therefore comparable between models on this data, not with detokenized, cased BLEU
reported elsewhere. ``sacrebleu`` is an optional extra: ``pip install 'lightning-contloss[mt]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

__all__ = ["corpus_scores", "distinct_words", "eos_rate"]


def _sacrebleu() -> Any:
    try:
        import sacrebleu
    except ImportError as err:
        raise ImportError(
            "BLEU and chrF come from the 'sacrebleu' package; install it with: pip install 'lightning-contloss[mt]'"
        ) from err
    return sacrebleu


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (0-100) of tokenized hypotheses against one tokenized reference each.

    Args:
        hypotheses: the system outputs, tokens joined by spaces.
        references: the reference translations, same form, aligned with ``hypotheses``.

    Returns:
        ``{"bleu", "chrf"}``.

    Example:
        >>> s = corpus_scores(["the cat sat on the mat ."], ["the cat sat on the mat ."])
        >>> round(s["bleu"], 1), round(s["chrf"], 1)
        (100.0, 100.0)
    """
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses for {len(references)} references; pass one hypothesis per reference"
        )
    if not hypotheses:
        raise ValueError("no hypotheses to score; pass at least one sentence")
    sb = _sacrebleu()
    hyps, refs = list(hypotheses), [list(references)]
    return {
        "bleu": float(sb.corpus_bleu(hyps, refs, tokenize="none").score),
        "chrf": float(sb.corpus_chrf(hyps, refs).score),
    }


def eos_rate(ids: Tensor, lengths: Tensor, eos_id: int) -> float:
    """Share of generated sequences that ended with ``eos_id`` (rather than running to the length limit).

    Args:
        ids: ``[B, L]`` generated ids (a search's ``SearchResult.ids``).
        lengths: ``[B]`` generated lengths, EOS included.
        eos_id: the end-of-sentence id.

    Example:
        >>> import torch
        >>> eos_rate(torch.tensor([[5, 2, 0], [5, 6, 7]]), torch.tensor([2, 3]), eos_id=2)
        0.5
    """
    if ids.shape[0] != lengths.shape[0]:
        raise ValueError(f"ids has {ids.shape[0]} rows but lengths {lengths.shape[0]}; pass one search's result")
    if ids.shape[0] == 0:
        raise ValueError("no sequences; pass at least one")
    last = ids.gather(1, (lengths.clamp(min=1) - 1)[:, None].to(ids.device))[:, 0]
    return float(((last == eos_id) & (lengths > 0)).float().mean())


def distinct_words(hypotheses: Sequence[str]) -> int:
    """How many different words the hypotheses use (a collapsed model repeats a few).

    Example:
        >>> distinct_words(["the the cat", "a cat"])
        3
    """
    return len({w for h in hypotheses for w in h.split()})
