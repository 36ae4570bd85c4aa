"""When a difference is noise: the report's one definition, from the number of validation tokens.

An accuracy measured on ``n`` validation tokens has a binomial standard error
``sqrt(p (1 - p) / n)``. The report calls a difference *noise* when it is smaller than
:data:`Z` standard errors of it (about a 95% interval); neighbouring tokens of one text are
correlated, so the true error is somewhat larger and the rule errs on the side of claiming
too much, never too little.

Corpus BLEU is not a mean over tokens; its noise is :data:`Z` standard deviations of BLEU over
bootstrap resamples of the test sentences (:func:`bleu_noise`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["MIN_EVALS", "MIN_VALID_TOKENS", "Z", "binomial_noise", "bleu_noise", "differ"]

Z = 2.0
# Fewer accuracy evaluations than this and a curve (and a value read off it at equal tokens) is
# a line through too few points to trust.
MIN_EVALS = 3
# Fewer validation tokens than this and acc@1 differences of several points are noise.
MIN_VALID_TOKENS = 2000


def binomial_noise(p: float, n: int) -> float:
    """:data:`Z` binomial standard errors of an accuracy ``p`` measured on ``n`` tokens.

    Args:
        p: the accuracy, in ``[0, 1]``.
        n: the number of tokens it was measured on.

    Example:
        >>> round(binomial_noise(0.1, 10_000), 4)
        0.006
    """
    if n < 1:
        return math.inf
    p = min(max(p, 0.0), 1.0)
    return Z * math.sqrt(p * (1.0 - p) / n)


def differ(a: float, b: float, noise_a: float, noise_b: float) -> bool:
    """Whether ``a`` and ``b`` differ by more than the noise of their difference.

    Args:
        a: one measurement.
        b: another, independent of it.
        noise_a: ``a``'s noise (:data:`Z` standard errors).
        noise_b: ``b``'s noise.

    Example:
        >>> differ(0.147, 0.143, 0.008, 0.008), differ(0.20, 0.14, 0.008, 0.008)
        (False, True)
    """
    return abs(a - b) > math.hypot(noise_a, noise_b)


def bleu_noise(hypotheses: Sequence[str], references: Sequence[str], resamples: int = 200, seed: int = 0) -> float:
    """:data:`Z` standard deviations of corpus BLEU over bootstrap resamples of the sentences.

    Each sentence's n-gram statistics are counted once (sacrebleu, tokenized text as
    :func:`~lightning_contloss.examples.translation_metrics.corpus_scores` scores it); a resample
    sums them, so 200 resamples cost about one corpus score.

    Args:
        hypotheses: the system outputs, tokens joined by spaces.
        references: one reference per hypothesis.
        resamples: bootstrap resamples.
        seed: seed of the resampling.

    Example:
        >>> refs = ["the cat sat on the mat .", "a dog ran away .", "the house is big ."] * 10
        >>> round(bleu_noise(refs, refs), 6)  # a perfect system scores 100 on every resample
        0.0
    """
    from sacrebleu.metrics import BLEU

    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f"need one reference per hypothesis, got {len(hypotheses)} and {len(references)}")
    scorer = BLEU(tokenize="none", effective_order=True)  # effective_order only silences a sentence-level warning
    per_sentence = [scorer.sentence_score(h, [r]) for h, r in zip(hypotheses, references)]
    stats = np.array([[*s.counts, *s.totals, s.sys_len, s.ref_len] for s in per_sentence], dtype=np.int64)
    picks = np.random.default_rng(seed).integers(0, len(stats), (resamples, len(stats)))
    scores = [
        BLEU.compute_bleu(t[:4].tolist(), t[4:8].tolist(), int(t[8]), int(t[9]), smooth_method="exp").score
        for t in stats[picks].sum(axis=1)
    ]
    return Z * float(np.std(scores))
