"""AutoPolicy: when ``decoder="auto"`` decodes by exact search, and when by an HNSW index.

Every decision of ``"auto"`` is here, each made from numbers it is given (a table's shape and
device, a screen's unreachable share, measured recall and query rates), so each can be checked
without building an index. :class:`~lightning_contloss.decoding.DecoderFactory` holds one and
asks it; the factory keeps what was decided (``exact_fallback``, ``screened``, ``tuned_ef``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from lightning_contloss._arguments import int_arg
from lightning_contloss.decoding.base import TableLike
from lightning_contloss.decoding.screen import SCREEN_ROWS, hnsw_unreachable_share

__all__ = ["EXACT", "EXACT_MAX_ELEMENTS", "INDEX", "SCREEN_MAX_UNREACHABLE", "SCREEN_MIN_ROWS", "AutoPolicy"]

log = logging.getLogger(__name__)

# The two decoder kinds "auto" chooses between.
EXACT = "exact"
INDEX = "hnsw"

# Largest V·D for which "auto" picks exact search on a CPU table. Measured on 2 shared CPU
# cores with `python benchmarks/decode.py --crossover` (docs/decoding.md, "make_decoder rule"):
# exact search is as fast as HNSW (ef=64) per query up to about V·D = 5e5, and HNSW also costs a
# build; beyond that HNSW wins by a factor that grows with V.
EXACT_MAX_ELEMENTS = 500_000

# "auto" screens tables with at least this many returnable rows before indexing them with HNSW
# (smaller ones build in about the screen's time), and decodes them exactly when the sample
# graph leaves more than SCREEN_MAX_UNREACHABLE of its rows unreachable. Measured on 400k-row
# tables (docs/decoding.md): GloVe 50-d leaves 0.03% of the sample (HNSW at 8x exact search's
# speed), random 50-d about as little (validation at 0.12x softmax's with HNSW); random 128-d
# leaves 0.73-0.81% and random 256-d 3.8%, and on both a full index answered no faster than exact
# search (236 against 239 queries/s at ef=16 for 128-d), after builds of 8 and 10 minutes.
SCREEN_MIN_ROWS = 4 * SCREEN_ROWS
SCREEN_MAX_UNREACHABLE = 0.005


@dataclass(frozen=True)
class AutoPolicy:
    """The rules of ``decoder="auto"``: exact search or an HNSW index, and when to give HNSW up.

    1. The V·D rule (:meth:`kind`): exact search for a table on an accelerator (a matrix product
       over the vocabulary is cheap there) or with ``V·D <= exact_max_elements``.
    2. The screen (:meth:`screens`, :meth:`screen`): before indexing a CPU table of at least
       ``screen_min_rows`` returnable rows, build a graph over ``screen_rows`` sampled rows and
       decode exactly when more than ``max_unreachable`` of them are unreachable.
    3. On the first real predictions (:meth:`speed_verdict`, :meth:`recall_verdict`): exact
       search when it answers faster than HNSW, or when no ``ef`` reaches the target recall.

    Args:
        exact_max_elements: the V·D threshold of the V·D rule.
        screen_min_rows: the fewest returnable rows worth a screen.
        screen_rows: rows of the screen's sample graph, >= 2.
        max_unreachable: the largest unreachable share of the sample that keeps HNSW.

    Example:
        >>> import torch
        >>> policy = AutoPolicy(exact_max_elements=1000, screen_min_rows=50)
        >>> policy.kind(torch.zeros(10, 16)), policy.kind(torch.zeros(100, 16))
        ('exact', 'hnsw')
        >>> policy.screens(torch.zeros(100, 16), returnable=100)
        True
        >>> policy.screen_verdict(0.0003, sampled=100, returnable=100) is None
        True
        >>> policy.speed_verdict(hnsw_qps=900.0, exact_qps=1200.0, ef=16, tuned=True)
        "exact search answers 1,200 queries/s against HNSW's 900 at the tuned ef=16"
    """

    exact_max_elements: int = EXACT_MAX_ELEMENTS
    screen_min_rows: int = SCREEN_MIN_ROWS
    screen_rows: int = SCREEN_ROWS
    max_unreachable: float = SCREEN_MAX_UNREACHABLE

    def __post_init__(self) -> None:
        int_arg(self.exact_max_elements, "exact_max_elements", 0)
        int_arg(self.screen_min_rows, "screen_min_rows", 0)
        int_arg(self.screen_rows, "screen_rows", 2)
        share = self.max_unreachable
        if isinstance(share, bool) or not isinstance(share, int | float) or math.isnan(share):
            raise ValueError(f"max_unreachable must be a share in [0, 1] (below 0 refuses every table), got {share!r}")

    def kind(self, weight: Tensor) -> str:
        """The V·D rule: ``"exact"`` for ``weight [V, D]`` on an accelerator or with a small V·D, else ``"hnsw"``."""
        small = weight.shape[0] * weight.shape[1] <= self.exact_max_elements
        return EXACT if weight.device.type != "cpu" or small else INDEX

    def screens(self, weight: Tensor, returnable: int) -> bool:
        """Whether to screen ``weight [V, D]`` before indexing it: the V·D rule sends it to HNSW, and it is large."""
        return self.kind(weight) == INDEX and returnable >= self.screen_min_rows

    def screen(
        self, table: TableLike, space: str, *, returnable: int, seed: int, num_threads: int, **graph: Any
    ) -> str | None:
        """Build the sample graph of ``table``; the reason to decode it exactly, or None to keep HNSW.

        Args:
            table: the table about to be indexed.
            space: the decode space.
            returnable: how many rows an index of ``table`` would hold.
            seed: seed of the sample and of the graph.
            num_threads: threads of the sample build.
            graph: the full build's ``M``, ``ef_construction`` and ``exclude``, those it was given
                (see :func:`~lightning_contloss.decoding.hnsw_unreachable_share`).
        """
        start = time.perf_counter()
        share = hnsw_unreachable_share(table, space, rows=self.screen_rows, seed=seed, num_threads=num_threads, **graph)
        sampled = min(self.screen_rows, returnable)
        log.info(
            "HNSW screen: %.2f%% of %d sampled rows unreachable (%.1f s)",
            100 * share,
            sampled,
            time.perf_counter() - start,
        )
        return self.screen_verdict(share, sampled=sampled, returnable=returnable)

    def screen_verdict(self, share: float, *, sampled: int, returnable: int) -> str | None:
        """Why HNSW is refused when ``share`` of ``sampled`` rows are unreachable; None when it is kept."""
        if share <= self.max_unreachable:
            return None
        return (
            f"an HNSW graph over {sampled:,} sampled rows of the {returnable:,}-row table cannot reach {share:.2%} "
            f"of them (> {self.max_unreachable:.1%}: high-dimensional rows without structure, such as random "
            "targets, are HNSW's worst case, and a full index would answer no faster than exact search)"
        )

    def speed_verdict(self, *, hnsw_qps: float, exact_qps: float, ef: int, tuned: bool) -> str | None:
        """Why HNSW at ``ef`` is given up for exact search on measured query rates; None when HNSW is faster.

        ``tuned=False``: ``ef`` is the smallest candidate, HNSW's fastest; if exact search beats
        even that, tuning cannot help.
        """
        if exact_qps <= hnsw_qps:
            return None
        if tuned:
            return f"exact search answers {exact_qps:,.0f} queries/s against HNSW's {hnsw_qps:,.0f} at the tuned {ef=}"
        return f"exact search answers {exact_qps:,.0f} queries/s, HNSW {hnsw_qps:,.0f} even at ef={ef}"

    def recall_verdict(self, best: float, target_recall: float, ef: int) -> str | None:
        """Why HNSW is given up when its best tuned recall@1 ``best`` (at ``ef``) misses ``target_recall``; else None.

        It happens on an untrained model's look-alike predictions.
        """
        if best >= target_recall:
            return None
        return f"HNSW reached recall@1 {best:.4f} < {target_recall:.3f} at its best ef={ef}"
