"""EpochMetrics: what the decoding callback measures in one validation or test epoch."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from torchmetrics import MeanMetric, Metric, MetricCollection

from lightning_contloss.callbacks.likelihood import skip_id
from lightning_contloss.decoding.base import Decoder
from lightning_contloss.metrics import BrierLM, DecodingRecall, NeighborAccuracy, PredictionSpread, VMFPerplexity

__all__ = ["EpochMetrics"]


class EpochMetrics:
    """The callback's metrics of one epoch: one ``MetricCollection`` (synced across processes) and decode timing.

    Holds ``acc@1``, ``acc@k``, ``mean_cos``, ``decode_recall``, ``spread`` (``distinct_pred``,
    ``top_pred_share``), ``vmf_ppl`` and, with ``brier_lm``, ``brier_lm``;
    :class:`~lightning_contloss.callbacks.LikelihoodScorer` updates the last two.

    Args:
        k: the k of ``acc@k``.
        recall_sample: tokens per epoch checked against exact search.

    Example:
        >>> m = EpochMetrics(k=2, recall_sample=8)
        >>> m.new_epoch(vocab_size=5, ignore_index=None, device=torch.device("cpu"), brier_lm=False)
        >>> ids, target = torch.tensor([[1, 2], [3, 1]]), torch.tensor([1, 1])
        >>> m.update(ids, target, torch.eye(5)[[1, 3]], torch.eye(5), ignore_index=None)
        >>> m.update_recall(torch.eye(5)[[1, 3]], ids, ids.float(), reference=lambda: None)  # exact: recall 1
        >>> values = m.values(world_size=1, likelihood=True)
        >>> [(name, round(float(values[name]), 2)) for name in ("acc@1", "acc@2", "mean_cos", "decode_recall")]
        [('acc@1', 0.5), ('acc@2', 1.0), ('mean_cos', 0.5), ('decode_recall', 1.0)]
        >>> float(values["distinct_pred"]), float(values["top_pred_share"])
        (2.0, 0.5)
    """

    def __init__(self, k: int, recall_sample: int) -> None:
        self.k = k
        self.recall_sample = recall_sample
        self.collection = MetricCollection({}, compute_groups=False)
        self.decode_tokens = 0
        self.decode_seconds = 0.0
        self.recall_seen = 0

    def new_epoch(self, vocab_size: int, ignore_index: int | None, device: torch.device, brier_lm: bool) -> None:
        """Fresh metrics for ``vocab_size`` targets on ``device`` (padding: ``ignore_index``), ``brier_lm`` too."""
        metrics: dict[str, Metric | MetricCollection] = {
            "acc@1": NeighborAccuracy(1, ignore_index=ignore_index),
            f"acc@{self.k}": NeighborAccuracy(self.k, ignore_index=ignore_index),
            "mean_cos": MeanMetric(),
            "decode_recall": DecodingRecall(1),
            "spread": PredictionSpread(vocab_size, ignore_index=ignore_index),
            "vmf_ppl": VMFPerplexity(ignore_index=skip_id(ignore_index)),
        }
        if brier_lm:
            metrics["brier_lm"] = BrierLM(ignore_index=skip_id(ignore_index))
        self.collection = MetricCollection(metrics, compute_groups=False).to(device)
        self.decode_tokens, self.decode_seconds, self.recall_seen = 0, 0.0, 0

    @contextmanager
    def timed(self, tokens: int) -> Iterator[None]:
        """Count the time of the block as decoding ``tokens`` tokens (``decode_qps``)."""
        start = time.perf_counter()
        yield
        self.decode_seconds += time.perf_counter() - start
        self.decode_tokens += tokens

    def update(self, ids: Tensor, target: Tensor, pred: Tensor, table: Tensor, ignore_index: int | None) -> None:
        """Accuracy, spread and mean cosine of decoded ``ids [N, k]`` against ``target [N]``; ``pred [N, D]``."""
        m = self.collection
        m["acc@1"].update(ids, target)
        m[f"acc@{self.k}"].update(ids, target)
        m["spread"].update(ids[:, 0], target)
        kept_pred, kept = pred.to(table.device), target
        if ignore_index is not None:
            keep = target != ignore_index
            kept_pred, kept = kept_pred[keep], kept[keep]
        if kept.numel():
            m["mean_cos"].update(torch.nn.functional.cosine_similarity(kept_pred, table[kept], dim=-1))

    def update_recall(
        self, queries: Tensor, ids: Tensor, scores: Tensor, reference: Callable[[], Decoder | None]
    ) -> None:
        """Recall@1 of ``ids``/``scores [N, k]`` of ``queries [N, D]`` against ``reference()``, up to ``recall_sample``.

        ``reference()`` (asked only when tokens are still wanted) is the exact search to compare
        with, or ``None`` when the decoder is exact search itself: recall is then 1 by construction.
        """
        take = min(self.recall_sample - self.recall_seen, queries.shape[0])
        if take <= 0:
            return
        exact = reference()
        if exact is None:
            self.collection["decode_recall"].update(ids[:take, :1], ids[:take, :1])
        else:
            exact_ids, exact_scores = exact.query(queries[:take], 1)
            # With scores, a tie (e.g. a duplicate row) counts as found, as in tune_ef's knn_recall.
            self.collection["decode_recall"].update(
                ids[:take, :1],
                exact_ids.to(ids.device),
                approx_scores=scores[:take, :1],
                exact_scores=exact_scores.to(scores.device, scores.dtype),
            )
        self.recall_seen += take

    def values(self, world_size: int, likelihood: bool) -> dict[str, Tensor]:
        """Every metric that saw data this epoch, computed (synced across processes) and flattened.

        Under DDP a metric is computed on every rank unless the configuration turns it off, even
        where this rank saw none of its tokens (a sampled ``vmf_ppl`` may pick none of a rank's
        sequences): ``compute`` syncs, and a rank that skipped it would leave the others waiting.

        Args:
            world_size: processes sharing the epoch.
            likelihood: whether ``vmf_ppl`` is on (``metric_tokens`` is not 0).
        """
        values: dict[str, Tensor] = {}
        off = {"decode_recall": self.recall_sample == 0, "vmf_ppl": not likelihood}
        for name, metric in self.collection.items(keep_base=True):
            if not metric.update_count and (world_size <= 1 or off.get(name, False)):
                continue
            with warnings.catch_warnings():
                # The rank-without-tokens case above: its zero states join the sum.
                warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
                value = metric.compute()
            values.update(value if isinstance(value, dict) else {name: value})
        if self.decode_seconds > 0:
            values["decode_qps"] = torch.tensor(self.decode_tokens / self.decode_seconds)
        return values
