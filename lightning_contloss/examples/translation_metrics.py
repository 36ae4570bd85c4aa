"""Translation quality figures: corpus BLEU and chrF (sacrebleu), EOS rate and distinct output words.

BLEU and chrF are detokenised scores: the hypotheses are the translators' detokenised outputs
(word tokens put together by
:func:`~lightning_contloss.examples.translation_data.detokenize`, or BPE pieces joined), the
references the original sentences, and sacrebleu tokenises both with its default ``13a``
tokenizer, as MT papers report. They are case-insensitive (``lowercase=True``): the example
models translate lower-cased text, word-level and BPE alike, so a cased reference would only
measure case. Word-level and BPE models are therefore scored the same way and compare with
each other. ``sacrebleu`` is an optional extra: ``pip install 'lightning-contloss[mt]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from lightning_contloss.examples.translation_data import tokenize

__all__ = ["corpus_scores", "distinct_words", "eos_rate"]


def _sacrebleu() -> Any:
    try:
        import sacrebleu
    except ImportError as err:
        raise ImportError(
            "BLEU and chrF come from the 'sacrebleu' package; install it with: pip install 'lightning-contloss[mt]'"
        ) from err
    return sacrebleu


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str], lowercase: bool = True) -> dict[str, float]:
    """Corpus BLEU and chrF (0-100) of detokenised hypotheses against one original reference each.

    Args:
        hypotheses: the system outputs, detokenised text.
        references: the reference translations as written, aligned with ``hypotheses``.
        lowercase: compare case-insensitively (the example models output lower-cased text).

    Returns:
        ``{"bleu", "chrf"}``: sacrebleu's BLEU with its ``13a`` tokenisation and its chrF.

    Example:
        >>> s = corpus_scores(["the lord’s house, (saith he)."], ["The LORD’s house, (saith he)."])
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
        "bleu": float(sb.BLEU(lowercase=lowercase).corpus_score(hyps, refs).score),
        "chrf": float(sb.CHRF(lowercase=lowercase).corpus_score(hyps, refs).score),
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

    Words are those of :func:`~lightning_contloss.examples.translation_data.tokenize`, so
    punctuation and case do not make new words and word-level and BPE outputs count alike.

    Example:
        >>> distinct_words(["the the cat.", "a Cat"])
        4
    """
    return len({w for h in hypotheses for w in tokenize(h)})
