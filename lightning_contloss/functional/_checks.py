"""Input validation, ``ignore_index`` masking and reduction shared by the continuous losses.

Two kinds of check, run at two depths. Hyper-parameters (margins, temperatures, ``reduction``,
``ignore_index``) are checked by whoever takes them from the user: the public function on every
call, a loss class once in ``__init__``. Tensors are checked by the per-token maths
(:func:`prepare`), once per call, since they change with every batch.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_contloss._arguments import int_arg

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class Batch:
    """A validated, flattened batch.

    Args:
        pred: ``[N, D]`` predictions in the compute dtype.
        ids: ``[N]`` int64 target ids; ignored positions hold 0 so every id can be looked up.
        mask: ``[N]`` bool, True where the token counts; ``None`` when every token counts.
        shape: the leading shape ``[...]`` of the input, for ``reduction="none"``.
        dtype: the compute dtype (float32 for half-precision inputs).
    """

    pred: Tensor
    ids: Tensor
    mask: Tensor | None
    shape: torch.Size
    dtype: torch.dtype

    def rows(self, table: Tensor) -> Tensor:
        """The ``[N, D]`` target rows of the batch, in the compute dtype."""
        return F.embedding(self.ids, table).to(self.dtype)


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype the maths runs in: the promoted float type, never below float32.

    Example:
        >>> compute_dtype(torch.zeros(1, dtype=torch.bfloat16), torch.zeros(1))
        torch.float32
    """
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    # bf16/fp16 cannot hold a cosine to the precision a margin or temperature of 0.05 needs.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def full_precision(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """A context that switches autocast off, so the loss maths runs in the compute dtype."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:
        # Device types without autocast support have nothing to switch off.
        return contextlib.nullcontext()


def check_table(table: Tensor, name: str = "table") -> None:
    """Raise unless ``table`` is a non-empty ``[V, D]`` floating-point tensor."""
    if not isinstance(table, Tensor):
        raise ValueError(
            f"{name} must be a [V, D] tensor, got {type(table).__name__}; pass targets.weight for a TargetEmbeddings"
        )
    if table.dim() != 2 or table.shape[0] == 0 or table.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty [V, D] tensor, got shape {tuple(table.shape)}")
    if not table.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {table.dtype}; call .float() on it")


def check_reduction(reduction: str) -> None:
    """Raise unless ``reduction`` is ``"mean"``, ``"sum"`` or ``"none"``."""
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def check_ignore_index(ignore_index: int | None) -> None:
    """Raise unless ``ignore_index`` is an int (Python, numpy or 0-d torch; not a bool) or ``None``."""
    if ignore_index is None:
        return
    try:
        int_arg(ignore_index, "ignore_index")
    except ValueError:  # int_arg's wrong-type error is a ValueError too
        raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}") from None


def check_choice(value: str, name: str, choices: tuple[str, ...]) -> None:
    """Raise unless ``value`` is one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_positive_int(value: object, name: str) -> int:
    """``value`` as an int >= 1 (a bool is not); :func:`~lightning_contloss._arguments.int_arg`, worded for counts.

    Example:
        >>> check_positive_int(0, "num_negatives")
        Traceback (most recent call last):
        ...
        ValueError: num_negatives must be a positive int, got 0; use 1 or more
    """
    return int_arg(value, name, 1, rule="a positive int")


def check_number(
    value: float | Tensor,
    name: str,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    why: str = "",
) -> None:
    """Raise unless ``value`` is a finite real number in ``[low, high]`` (open ends: ``low_open``, ``high_open``).

    A Python or numpy number, or a one-element floating tensor (a learnable temperature, say);
    never a bool or a string.

    Example:
        >>> check_number(0.5, "margin", low=0.0)
        >>> check_number(float("inf"), "margin", low=0.0)
        Traceback (most recent call last):
        ...
        ValueError: margin must be >= 0 and finite, got inf
    """
    if high < math.inf:
        interval = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    else:
        interval = f"{'>' if low_open else '>='} {low:g} and finite"
    what = f"{name} must be {interval}{f' ({why})' if why else ''}"
    if isinstance(value, Tensor):
        if value.numel() != 1 or not value.is_floating_point():
            raise ValueError(f"{what}: a number, got a {value.dtype} tensor of shape {tuple(value.shape)}")
        number = float(value.detach())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"{what}: a number, got {type(value).__name__} {value!r}")
    open_end = (low_open and number == low) or (high_open and number == high)
    if not (math.isfinite(number) and low <= number <= high) or open_end:
        raise ValueError(f"{what}, got {value!r}")


def check_generator(generator: torch.Generator | None) -> None:
    """Raise unless ``generator`` is a ``torch.Generator`` or ``None``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def check_exclude(exclude: Tensor | None, num_embeddings: int) -> None:
    """Raise unless ``exclude`` is ``None`` or a ``[V]`` bool mask over the table's rows."""
    if exclude is None:
        return
    if not isinstance(exclude, Tensor) or exclude.dtype != torch.bool or exclude.shape != (num_embeddings,):
        what = f"{exclude.dtype} {tuple(exclude.shape)}" if isinstance(exclude, Tensor) else type(exclude).__name__
        raise ValueError(
            f"exclude must be a [V] bool mask with V={num_embeddings}, got {what}; pass targets.special_mask or None"
        )


def prepare(pred: Tensor, ids: Tensor, table: Tensor, ignore_index: int | None) -> Batch:
    """Validate ``pred [..., D]``, ``ids [...]`` and ``table [V, D]`` and flatten them.

    Raises ``ValueError`` on a dim mismatch (naming both dims), ids out of range (naming the
    valid range; ids equal to ``ignore_index`` are exempt), shape, dtype or device mismatches.

    Example:
        >>> b = prepare(torch.zeros(2, 3, 4), torch.tensor([[0, 1, -100], [2, 0, 1]]), torch.eye(4), -100)
        >>> b.pred.shape, b.ids.tolist(), b.mask.tolist()
        (torch.Size([6, 4]), [0, 1, 0, 2, 0, 1], [True, True, False, True, True, True])
    """
    check_table(table)
    if not isinstance(pred, Tensor) or not pred.is_floating_point() or pred.dim() == 0:
        what = (
            f"a {pred.dtype} tensor of shape {tuple(pred.shape)}" if isinstance(pred, Tensor) else type(pred).__name__
        )
        raise ValueError(f"pred must be a floating-point [..., D] tensor, got {what}")
    num, dim = table.shape
    if pred.shape[-1] != dim:
        raise ValueError(
            f"pred has dim {pred.shape[-1]} but the target table has dim {dim}; "
            "build the head with out_features=targets.dim"
        )
    if not isinstance(ids, Tensor) or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        what = str(ids.dtype) if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"ids must be an integer tensor of token ids, got {what}")
    if ids.shape != pred.shape[:-1]:
        raise ValueError(
            f"ids has shape {tuple(ids.shape)} but pred has shape {tuple(pred.shape)}; "
            "ids must match pred without its last (embedding) dimension"
        )
    if not (pred.device == ids.device == table.device):
        raise ValueError(
            f"pred is on {pred.device}, ids on {ids.device} and the target table on {table.device}; "
            "move them to one device (register the TargetEmbeddings on your LightningModule so it "
            "moves with the model)"
        )
    flat_ids = ids.reshape(-1).long()
    mask = flat_ids != ignore_index if ignore_index is not None else None
    bad = (flat_ids < 0) | (flat_ids >= num)
    if mask is not None:
        bad &= mask
    if bool(bad.any()):
        examples = flat_ids[bad].unique()[:5].tolist()
        ignored = f" (ignore_index={ignore_index} is skipped)" if ignore_index is not None else ""
        raise ValueError(
            f"ids {examples} are out of range: the target table has {num} rows, so valid ids are "
            f"0..{num - 1}{ignored}; check the vocabulary size or set ignore_index for padding"
        )
    if mask is not None:
        flat_ids = torch.where(mask, flat_ids, torch.zeros_like(flat_ids))
    dtype = compute_dtype(pred, table)
    return Batch(pred.reshape(-1, dim).to(dtype), flat_ids, mask, ids.shape, dtype)


def sum_count(per_token: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
    """Sum of the per-token losses over the tokens that count, and how many there are."""
    if batch.mask is None:
        return per_token.sum(), torch.tensor(per_token.shape[0], device=per_token.device)
    # where(), not multiplication: it passes exactly zero gradient to ignored tokens.
    kept = torch.where(batch.mask, per_token, torch.zeros_like(per_token))
    return kept.sum(), batch.mask.sum()


def reduce(per_token: Tensor, batch: Batch, reduction: str) -> Tensor:
    """Apply ``reduction`` (already checked) to ``[N]`` per-token losses; an all-ignored batch gives 0.

    Example:
        >>> b = prepare(torch.zeros(3, 2), torch.tensor([0, -1, 1]), torch.eye(2), -1)
        >>> reduce(torch.tensor([1.0, 5.0, 3.0]), b, "mean"), reduce(torch.tensor([1.0, 5.0, 3.0]), b, "none")
        (tensor(2.), tensor([1., 0., 3.]))
    """
    if reduction == "none":
        if batch.mask is not None:
            per_token = torch.where(batch.mask, per_token, torch.zeros_like(per_token))
        return per_token.reshape(batch.shape)
    total, count = sum_count(per_token, batch)
    if reduction == "sum":
        return total
    return total / count.clamp_min(1).to(total.dtype)


def check_log_partition(log_partition: object, shape: tuple[int, ...] | torch.Size) -> Tensor:
    """``log_partition`` checked to be a tensor of ``shape`` (one log-partition per prediction).

    Example:
        >>> check_log_partition(torch.zeros(3), (3,)).shape
        torch.Size([3])
    """
    if not isinstance(log_partition, Tensor) or log_partition.shape != tuple(shape):
        got = tuple(log_partition.shape) if isinstance(log_partition, Tensor) else type(log_partition).__name__
        raise ValueError(
            f"log_partition has shape {got} but target has shape {tuple(shape)}; pass one "
            "log-partition per prediction, or None to compute it here"
        )
    return log_partition


# Rows per block of the whole-table passes below (and fit_vmf's float64 sum): a [V, D] temporary
# of a 400k × 256 table would be 100 MB (bool) to 800 MB (float64).
ROW_BLOCK = 16384


def all_finite(x: Tensor) -> bool:
    """Whether every value of ``x`` is finite (see :func:`nonfinite_per_row`, which decides it from one sum).

    Example:
        >>> all_finite(torch.ones(3, 2)), all_finite(torch.tensor([1.0, float("inf")]))
        (True, False)
    """
    return not bool(nonfinite_per_row(x).any())


def nonfinite_per_row(x: Tensor) -> Tensor:
    """How many NaN or infinite values each row of ``x [..., D]`` holds: ``[N]`` int64.

    A NaN or infinity makes the sum of ``x`` non-finite, so a finite sum proves every row clean
    without a boolean temporary; only a non-finite sum (bad values, or finite ones whose sum
    overflows) takes the count, a block of rows at a time.

    Example:
        >>> nonfinite_per_row(torch.tensor([[1.0, float("nan")], [2.0, 3.0]])).tolist()
        [1, 0]
    """
    rows = x.reshape(-1, x.shape[-1]) if x.dim() > 1 else x.reshape(-1, 1)
    clean = torch.zeros(rows.shape[0], dtype=torch.int64, device=x.device)
    total = x.sum(dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    if rows.shape[0] == 0 or bool(torch.isfinite(total)):
        return clean
    return torch.cat([torch.isfinite(block).logical_not_().sum(dim=-1) for block in rows.split(ROW_BLOCK)])
