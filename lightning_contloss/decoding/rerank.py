"""RerankedDecoder: a decoder's candidates re-ranked by similarity plus a per-id bias (CSLS, priors)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_contloss._arguments import int_arg, is_real
from lightning_contloss.decoding.base import Decoder, ResolvedTable, _TableDecoder, check_query
from lightning_contloss.functional.hubness import csls_penalty

__all__ = ["RerankedDecoder"]


class RerankedDecoder(_TableDecoder):
    """Ranks by ``sim(x, w) + bias[w]``: the base decoder's top ``candidates``, re-scored.

    The base decoder (exact or HNSW) finds the ``candidates`` most similar ids; adding
    ``bias`` and sorting gives the final ``k``. It is exact for the biased score whenever the
    biased best lies among those candidates; raise ``candidates`` for larger biases. Two uses:

    * hubness correction with CSLS: ``bias = −r_w / 2`` (:meth:`csls`), which spreads the
      predictions of a model that collapses onto frequent words;
    * a prior: ``bias = β · log p(w)`` (:meth:`prior`).

    Args:
        base: the decoder that proposes candidates.
        bias: ``[V]`` additive score per id (finite).
        candidates: neighbours fetched from ``base`` per query before re-ranking (at least ``k``).

    Example:
        >>> from lightning_contloss.decoding import ExactDecoder
        >>> base = ExactDecoder(torch.eye(3))
        >>> dec = RerankedDecoder(base, torch.tensor([-1.0, 0.0, 0.0]), candidates=3)
        >>> dec.query(torch.tensor([[1.0, 0.5, 0.0]]), k=1)[0].tolist()  # id 0 is nearest, but penalised
        [[1]]
    """

    def __init__(self, base: Decoder, bias: Tensor, candidates: int = 32) -> None:
        if not isinstance(base, Decoder):
            raise ValueError(f"base must be a Decoder (e.g. an ExactDecoder or HNSWDecoder), got {type(base).__name__}")
        if not isinstance(bias, Tensor):
            raise ValueError(f"bias must be a [V] tensor, got {type(bias).__name__}")
        if bias.dim() != 1 or bias.shape[0] != len(base):
            raise ValueError(
                f"bias has shape {tuple(bias.shape)} but the decoder's table has {len(base)} rows; "
                "pass one value per id"
            )
        if not bias.is_floating_point() or not bool(torch.isfinite(bias).all()):
            raise ValueError("bias must hold finite floating-point numbers")
        candidates = int_arg(candidates, "candidates", 1)
        # The base decoder's table, space and returnable ids are this decoder's too.
        super().__init__(ResolvedTable(base.table, base.returnable), base.space)
        self.base = base
        self.bias = bias.detach().float().cpu()
        self.candidates = candidates

    @classmethod
    def csls(cls, base: Decoder, queries: Tensor, k: int = 10, candidates: int = 32) -> RerankedDecoder:
        """CSLS re-ranking, ``bias = −r_w / 2`` with ``r_w`` from :func:`~lightning_contloss.functional.csls_penalty`.

        Args:
            base: the decoder that proposes candidates.
            queries: ``[N, D]`` real predictions to estimate ``r_w`` on (a few thousand suffice).
            k: CSLS neighbourhood size.
            candidates: neighbours re-ranked per query.

        Example:
            >>> from lightning_contloss.decoding import ExactDecoder
            >>> g = torch.Generator().manual_seed(0)
            >>> table = torch.randn(50, 8, generator=g)
            >>> dec = RerankedDecoder.csls(ExactDecoder(table), torch.randn(200, 8, generator=g))
            >>> dec.query(torch.randn(4, 8, generator=g), k=3)[0].shape
            torch.Size([4, 3])
        """
        # Checked, not reshaped: [40, 7] queries for a D=8 table are an error, not [35, 8].
        flat = check_query(queries, base.dim).reshape(-1, base.dim)
        penalty = csls_penalty(base.table, flat, k=k, space=base.space)
        return cls(base, -0.5 * penalty, candidates)

    @classmethod
    def prior(
        cls, base: Decoder, counts: Tensor | Sequence[float], weight: float, candidates: int = 32
    ) -> RerankedDecoder:
        """A frequency prior, ``bias = weight · log p(w)``, ``p`` the add-one-smoothed unigram of ``counts``.

        ``p(w) = (counts[w] + 1) / (Σ counts + V)``. A positive ``weight`` favours frequent
        words (for vMF predictions ``1/κ̂`` makes it the posterior's weight); a negative one
        penalises them.

        Args:
            base: the decoder that proposes candidates.
            counts: ``[V]`` non-negative word counts (e.g. a datamodule's ``unigram_counts``).
            weight: β, a finite number.
            candidates: neighbours re-ranked per query.

        Example:
            >>> from lightning_contloss.decoding import ExactDecoder
            >>> base = ExactDecoder(torch.eye(3))
            >>> dec = RerankedDecoder.prior(base, torch.tensor([0, 99, 0]), weight=0.5, candidates=3)
            >>> dec.query(torch.tensor([[1.0, 0.8, 0.0]]), k=1)[0].tolist()  # id 1 is frequent enough to win
            [[1]]
        """
        if not is_real(weight) or not math.isfinite(weight):
            raise ValueError(f"weight must be a finite number, got {weight!r}")
        try:
            c = torch.as_tensor(counts).detach()
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"counts must be a [V] tensor of word counts, got {type(counts).__name__}") from err
        if c.dim() != 1 or c.shape[0] != len(base):
            raise ValueError(
                f"counts has shape {tuple(c.shape)} but the decoder's table has {len(base)} rows; pass one count per id"
            )
        if c.dtype == torch.bool or c.is_complex():
            raise ValueError(f"counts must hold real numbers, got {c.dtype}")
        c = c.to("cpu", torch.float64)
        bad = ~torch.isfinite(c) | (c < 0)
        if bool(bad.any()):
            ids = bad.nonzero().flatten()[:10].tolist()
            raise ValueError(f"counts must be finite and >= 0, but ids {ids} are not")
        smoothed = c + 1.0
        return cls(base, (weight * (smoothed / smoothed.sum()).log()).float(), candidates)

    def query(self, x: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
        """The ``k`` best ids by ``sim + bias`` among the base decoder's candidates.

        Args:
            x: ``[..., D]`` queries.
            k: ids per query.

        Returns:
            ``(ids [..., k] int64, scores [..., k] float32)``, best first, on ``x``'s device.
        """
        q, k = self._check(x, k)
        fetch = min(max(k, self.candidates), self._count)
        ids, scores = self.base.query(q, fetch)
        biased = scores.float() + self.bias.to(ids.device)[ids]
        top, order = biased.topk(k, dim=-1)
        return ids.gather(-1, order), top

    def __getattr__(self, name: str) -> Any:
        # ef, tune_ef, ...: what the base decoder offers beyond the protocol.
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)
