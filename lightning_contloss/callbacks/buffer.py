"""PredictionBuffer: validation outputs held until enough tokens are buffered for one large decode."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_contloss.callbacks.sampling import sequence_shape

__all__ = ["PredictionBuffer"]


class PredictionBuffer:
    """The predictions and targets of validation steps, decoded together (hnswlib runs small batches on one thread).

    Each step's output is what ``continuous_validation_step`` returns: ``{"pred": [..., D],
    "target": [...]}``, plus ``"logits"`` in ReWE mode, whose top-k ids are kept instead of
    the logits (there tokens come from the kept softmax).

    Args:
        k: ids kept per position from ReWE logits.

    Example:
        >>> buffer = PredictionBuffer(k=2)
        >>> buffer.add({"pred": torch.ones(2, 3, 4), "target": torch.zeros(2, 3, dtype=torch.long)}, batch_idx=0)
        >>> buffer.tokens, buffer.shapes(), [t.shape for t in buffer.flat(torch.zeros(10, 4))]
        (6, [(2, 3)], [torch.Size([6, 4]), torch.Size([6])])
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.items: list[tuple[Tensor, Tensor]] = []
        self.logit_ids: list[Tensor] = []
        self.tokens = 0

    def __len__(self) -> int:
        return len(self.items)

    def add(self, outputs: Any, batch_idx: int) -> None:
        """Buffer one step's outputs; raise, naming the fix, when the step returned something else."""
        if not isinstance(outputs, dict) or "pred" not in outputs or "target" not in outputs:
            raise ValueError(
                f"validation/test step {batch_idx} returned {type(outputs).__name__}; return "
                "self.continuous_validation_step(pred, ids) so the callback can decode the predictions"
            )
        self.items.append((outputs["pred"], outputs["target"]))
        logits = outputs.get("logits")
        if logits is not None:
            # ReWE mode: tokens come from the kept softmax; k-NN metrics still judge the regression head.
            self.logit_ids.append(logits.topk(self.k, dim=-1).indices.reshape(-1, self.k))
        self.tokens += outputs["target"].numel()

    def clear(self) -> None:
        """Empty the buffer."""
        self.items, self.logit_ids, self.tokens = [], [], 0

    def shapes(self) -> list[tuple[int, int]]:
        """``(sequences, length)`` of each buffered step (``sampling.sequence_shape``)."""
        return [sequence_shape(pred) for pred, _ in self.items]

    def flat(self, table: Tensor) -> tuple[Tensor, Tensor]:
        """The buffered predictions ``[N, D]`` (float32) and targets ``[N]`` (on ``table [V, D]``'s device)."""
        if not self.items:
            empty = torch.zeros(0, dtype=torch.long, device=table.device)
            return table.new_zeros(0, table.shape[1], dtype=torch.float32), empty
        flat_pred = torch.cat([p.reshape(-1, p.shape[-1]) for p, _ in self.items]).float()
        flat_target = torch.cat([t.reshape(-1) for _, t in self.items]).to(table.device)
        return flat_pred, flat_target

    def logit_topk(self, device: torch.device) -> Tensor | None:
        """ReWE mode: the kept softmax's top-k ids ``[N, k]``; ``None`` outside it."""
        return torch.cat(self.logit_ids).to(device) if self.logit_ids else None
