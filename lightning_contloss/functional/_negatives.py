"""Drawing negative ids shared by a whole batch (uniform or smoothed-unigram)."""

from __future__ import annotations

import torch
from torch import Tensor

SAMPLERS = ("uniform", "unigram")


def check_sampler(num_embeddings: int, num_negatives: int, sampler: str, counts: Tensor | None, power: float) -> None:
    """Raise on a bad sampler configuration, before any work is done."""
    if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 1:
        raise ValueError(f"num_negatives must be a positive int, got {num_negatives!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sampler == "unigram":
        if counts is None:
            raise ValueError("sampler='unigram' needs counts=[V] token counts (e.g. from the training set)")
        if counts.shape != (num_embeddings,):
            raise ValueError(
                f"counts has shape {tuple(counts.shape)} but the target table has {num_embeddings} rows; "
                "pass one count per id"
            )
        if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()) or not bool((counts > 0).any()):
            raise ValueError("counts must be finite, >= 0 and not all zero")
        if not power >= 0:
            raise ValueError(f"power must be >= 0 (0.75 is word2vec's smoothing), got {power}")


def sample_negatives(
    num_embeddings: int,
    num_negatives: int,
    sampler: str,
    counts: Tensor | None,
    power: float,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """``[K]`` negative ids drawn with replacement, on ``device``.

    Draws happen on the generator's device (CPU when there is none), so a seeded CPU generator
    gives the same negatives whatever device the loss runs on.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sample_negatives(10, 4, "unigram", torch.tensor([0.0] * 9 + [1.0]), 0.75, g, torch.device("cpu"))
        tensor([9, 9, 9, 9])
    """
    where = generator.device if generator is not None else torch.device("cpu")
    if sampler == "uniform":
        drawn = torch.randint(num_embeddings, (num_negatives,), generator=generator, device=where)
    else:
        assert counts is not None  # check_sampler guarantees it
        weights = counts.detach().to(where, torch.float64).pow(power)
        drawn = torch.multinomial(weights, num_negatives, replacement=True, generator=generator)
    return drawn.to(device)
