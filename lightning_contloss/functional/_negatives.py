"""Drawing negative ids shared by a whole batch (uniform or smoothed-unigram)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_contloss.functional._checks import check_choice, check_number, check_positive_int

SAMPLERS = ("uniform", "unigram")


def check_sampler(num_negatives: int, sampler: str, counts: Tensor | None, power: float) -> None:
    """Raise on a bad sampler configuration: the hyper-parameters and the values of ``counts``.

    Whether ``counts`` has one entry per table row is :func:`check_counts_fit`'s job, since a
    loss class may be built before its table is bound.
    """
    check_positive_int(num_negatives, "num_negatives")
    check_choice(sampler, "sampler", SAMPLERS)
    if sampler == "unigram":
        if counts is None:
            raise ValueError("sampler='unigram' needs counts=[V] token counts (e.g. from the training set)")
        if not isinstance(counts, Tensor) or counts.dim() != 1 or counts.dtype == torch.bool or counts.is_complex():
            what = f"{counts.dtype} {tuple(counts.shape)}" if isinstance(counts, Tensor) else type(counts).__name__
            raise ValueError(f"counts must be a [V] tensor of token counts, got {what}")
        if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()) or not bool((counts > 0).any()):
            raise ValueError("counts must be finite, >= 0 and not all zero")
        check_number(power, "power", low=0.0, why="0.75 is word2vec's smoothing")


def check_counts_fit(sampler: str, counts: Tensor | None, num_embeddings: int) -> None:
    """Raise unless the unigram ``counts`` have one entry per row of a ``num_embeddings``-row table."""
    if sampler == "unigram" and counts is not None and counts.shape != (num_embeddings,):
        raise ValueError(
            f"counts has shape {tuple(counts.shape)} but the target table has {num_embeddings} rows; "
            "pass one count per id"
        )


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
        assert counts is not None  # check_sampler guarantees it for the unigram sampler
        weights = counts.detach().to(where, torch.float64).pow(power)
        drawn = torch.multinomial(weights, num_negatives, replacement=True, generator=generator)
    return drawn.to(device)
