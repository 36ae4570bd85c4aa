"""The ``Decoder`` protocol, the input checks every decoder shares, and their common base."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_contloss._arguments import int_arg
from lightning_contloss.functional._checks import nonfinite_per_row
from lightning_contloss.functional.scoring import SPACES, Space
from lightning_contloss.targets import TargetEmbeddings

__all__ = [
    "Decoder",
    "LogPartitionDecoder",
    "ResolvedTable",
    "TableLike",
    "check_k",
    "check_query",
    "check_space",
    "is_exhaustive",
    "log_partition_decoder",
    "resolve_table",
    "unit_rows",
]
# _TableDecoder is private: the base of this package's decoders, not an extension point (the
# Decoder protocol is).

TableLike = TargetEmbeddings | Tensor


@runtime_checkable
class Decoder(Protocol):
    """What a decoder offers: k-nearest-neighbour search over a target table.

    ``query(x, k)`` takes predictions ``x [..., D]`` and returns ``(ids [..., k] int64,
    scores [..., k])``, best first, on ``x``'s device. Scores are similarities in the
    decoder's ``space``, higher is better: cosine similarity (``"cosine"``), inner product
    (``"ip"``) or negative squared Euclidean distance (``"l2"``). Ids that are not
    ``returnable`` (special ids of a ``TargetEmbeddings``, ``exclude=`` ids, and all-zero
    rows in cosine space) are never returned.

    Two optional capabilities, read with ``getattr`` (a decoder without them has neither; this
    package's decoders declare both): ``exhaustive``, True when ``query`` scores every returnable
    row so its top-k is exact (:func:`is_exhaustive`), and ``supports_log_partition``, True when
    the decoder offers :class:`LogPartitionDecoder`'s ``query_with_log_partition``
    (:func:`log_partition_decoder`).

    Example:
        >>> from lightning_contloss.decoding import ExactDecoder
        >>> isinstance(ExactDecoder(torch.eye(3)), Decoder)
        True
    """

    @property
    def space(self) -> Space: ...

    @property
    def dim(self) -> int: ...

    @property
    def table(self) -> Tensor: ...

    @property
    def returnable(self) -> Tensor: ...

    def __len__(self) -> int: ...

    def query(self, x: Tensor, k: int = 1) -> tuple[Tensor, Tensor]: ...


class LogPartitionDecoder(Decoder, Protocol):
    """A decoder that also returns each query's vMF log-partition, from the scores it computes anyway.

    ``query_with_log_partition(x, k, kappa)`` returns ``(ids [..., k], scores [..., k],
    log_partition [...])`` with ``log_partition = log Σ_w exp(κ·cos(x, w))`` over the returnable
    ids; ``kappa`` is one float or one value per query. A decoder declares it with
    ``supports_log_partition = True`` (exact search in cosine space does).
    """

    def query_with_log_partition(
        self, x: Tensor, k: int, kappa: float | Tensor
    ) -> tuple[Tensor, Tensor, Tensor]: ...


def is_exhaustive(decoder: Decoder) -> bool:
    """Whether ``decoder`` declares that it scores every returnable row (its top-k is exact search's).

    Example:
        >>> from lightning_contloss.decoding import ExactDecoder, RerankedDecoder
        >>> exact = ExactDecoder(torch.eye(3))
        >>> is_exhaustive(exact), is_exhaustive(RerankedDecoder(exact, torch.zeros(3)))
        (True, False)
    """
    return getattr(decoder, "exhaustive", False) is True


def log_partition_decoder(decoder: Decoder) -> LogPartitionDecoder | None:
    """``decoder`` as a :class:`LogPartitionDecoder` when it declares ``supports_log_partition``, else ``None``.

    Example:
        >>> from lightning_contloss.decoding import ExactDecoder
        >>> log_partition_decoder(ExactDecoder(torch.eye(3))) is not None
        True
        >>> log_partition_decoder(ExactDecoder(torch.eye(3), space="l2")) is None  # cosine space only
        True
    """
    if getattr(decoder, "supports_log_partition", False) is True:
        return cast(LogPartitionDecoder, decoder)
    return None


@dataclass(frozen=True)
class ResolvedTable:
    """A validated table and the ids a decoder may return.

    Attributes:
        weight: ``[V, D]`` floating-point rows, as given (not copied, not normalised).
        returnable: ``[V]`` bool on ``weight``'s device, True for ids a decoder may return.
    """

    weight: Tensor
    returnable: Tensor


def check_space(space: str) -> Space:
    """Return ``space`` if it is a decoder space, else raise naming the valid ones.

    Example:
        >>> check_space("ip")
        'ip'
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES} (the loss's decode space), got {space!r}")
    return space  # type: ignore[return-value]


def resolve_table(table: TableLike, space: str, exclude: Iterable[int] | Tensor | None = None) -> ResolvedTable:
    """Validate a decoder's table and work out which ids it may return.

    A ``TargetEmbeddings`` contributes its ``special_mask``; ``exclude`` adds ids; in
    cosine space all-zero rows are excluded too, because a zero vector has no direction.

    Args:
        table: a ``TargetEmbeddings`` or a ``[V, D]`` floating-point tensor.
        space: the decoder space.
        exclude: ids never to return.

    Example:
        >>> w = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
        >>> resolve_table(w, "cosine", exclude=[2]).returnable.tolist()
        [True, False, False]
    """
    check_space(space)
    if isinstance(table, TargetEmbeddings):
        weight = table.weight.detach()
        returnable = ~table.special_mask.detach().to(weight.device)
    elif isinstance(table, Tensor):
        weight = table.detach()
        if weight.dim() != 2 or weight.shape[0] == 0 or weight.shape[1] == 0:
            raise ValueError(f"the table must be a non-empty [V, D] tensor, got shape {tuple(weight.shape)}")
        if not weight.is_floating_point():
            raise ValueError(f"the table must be floating point, got {weight.dtype}; call .float() first")
        bad = nonfinite_per_row(weight) > 0
        if bool(bad.any()):
            rows = bad.nonzero().flatten()[:10].tolist()
            raise ValueError(f"the table has NaN or inf in rows {rows}; clean or exclude those rows first")
        returnable = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
    else:
        raise ValueError(f"table must be a TargetEmbeddings or a [V, D] tensor, got {type(table).__name__}")
    num = weight.shape[0]
    if exclude is not None:
        ids = torch.as_tensor(np.asarray(exclude.cpu() if isinstance(exclude, Tensor) else list(exclude)))
        ids = ids.flatten()
        if ids.numel():
            if ids.is_floating_point() or ids.dtype == torch.bool:
                raise ValueError(f"exclude must hold integer ids, got dtype {ids.dtype}")
            if int(ids.min()) < 0 or int(ids.max()) >= num:
                raise ValueError(f"exclude holds ids {int(ids.min())}..{int(ids.max())} but valid ids are 0..{num - 1}")
            returnable = returnable.clone()
            returnable[ids.to(device=weight.device, dtype=torch.int64)] = False
    if space == "cosine":
        returnable = returnable & (weight != 0).any(dim=-1)
    if not bool(returnable.any()):
        raise ValueError(
            "no id is left to decode: every row is special, excluded or (in cosine space) all-zero; "
            "unmark some ids or pass a table with usable rows"
        )
    return ResolvedTable(weight=weight, returnable=returnable)


def unit_rows(x: Tensor) -> Tensor:
    """Rows of ``x [..., D]`` scaled to unit norm, safely for any finite values; zero rows stay zero.

    Each row is divided by its largest absolute value first, so the squared norm can neither
    overflow (a row of norm 1e20, e.g. a vMF prediction whose norm is κ, would otherwise become
    the zero vector) nor underflow.

    Example:
        >>> unit_rows(torch.tensor([[3e30, 4e30], [0.0, 0.0]]))
        tensor([[0.6000, 0.8000],
                [0.0000, 0.0000]])
    """
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return F.normalize(x / scale, dim=-1)


def check_query(x: Tensor | np.ndarray, dim: int) -> Tensor:
    """Validate queries ``[..., D]``: a floating-point tensor with finite values and ``D == dim``.

    Example:
        >>> check_query(torch.zeros(2, 3), dim=3).shape
        torch.Size([2, 3])
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise ValueError(f"queries must be a [N, D] tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError(f"queries must be a [N, D] tensor, got a scalar; the decoder expects dim {dim}")
    if not x.is_floating_point():
        raise ValueError(f"queries must be floating point, got {x.dtype}")
    if x.shape[-1] != dim:
        raise ValueError(
            f"queries have dim {x.shape[-1]} but the decoder's table has dim {dim}; the model's head must "
            f"output out_features=targets.dim"
        )
    x = x.detach()
    if x.numel():
        bad = ~torch.isfinite(x.reshape(-1, dim)).all(dim=-1)
        if bool(bad.any()):
            rows = bad.nonzero().flatten()[:10].tolist()
            raise ValueError(
                f"queries have NaN or inf in rows {rows} (of the flattened [N, D] view); "
                "the model's predictions diverged, check the loss and learning rate"
            )
    return x


def check_k(k: int, returnable: int) -> int:
    """Validate ``k``: an int with ``1 <= k <= returnable``.

    Example:
        >>> check_k(5, returnable=10)
        5
    """
    k = int_arg(k, "k", 1, rule=">= 1")
    if k > returnable:
        raise ValueError(
            f"k={k} but the decoder can return only {returnable} ids (special, excluded and, in cosine "
            f"space, all-zero rows are never returned); ask for k <= {returnable}"
        )
    return int(k)


class _TableDecoder:
    """What every decoder over a resolved table shares: its space, table, returnable ids and query checks.

    Args:
        resolved: the validated table and returnable ids (see :func:`resolve_table`).
        space: the decoder space.

    Example:
        >>> dec = _TableDecoder(resolve_table(torch.eye(3), "ip", exclude=[0]), "ip")
        >>> dec.dim, len(dec), dec.returnable.tolist()
        (3, 3, [False, True, True])
    """

    # The optional capabilities of the Decoder protocol. Declared here, on the class, so that a
    # wrapper's attribute delegation (RerankedDecoder's __getattr__) never lends it its base's.
    exhaustive: bool = False

    def __init__(self, resolved: ResolvedTable, space: Space) -> None:
        self._space: Space = space
        self._table = resolved.weight
        self._returnable = resolved.returnable
        self._count = int(resolved.returnable.sum())

    @property
    def space(self) -> Space:
        """The similarity the decoder ranks by."""
        return self._space

    @property
    def dim(self) -> int:
        """D, the dimension queries must have."""
        return int(self._table.shape[1])

    @property
    def table(self) -> Tensor:
        """The ``[V, D]`` table as given (not normalised)."""
        return self._table

    @property
    def returnable(self) -> Tensor:
        """``[V]`` bool: True for ids this decoder may return."""
        return self._returnable

    @property
    def supports_log_partition(self) -> bool:
        """Whether this decoder offers ``query_with_log_partition`` (see :class:`LogPartitionDecoder`)."""
        return False

    @property
    def device(self) -> torch.device:
        """The table's device (exact search runs there; HNSW search runs on the CPU)."""
        return self._table.device

    def __len__(self) -> int:
        return int(self._table.shape[0])

    def _check(self, x: Tensor | np.ndarray, k: int) -> tuple[Tensor, int]:
        """Validated queries ``[..., D]`` and ``k`` (see :func:`check_query`, :func:`check_k`)."""
        return check_query(x, self.dim), check_k(k, self._count)
