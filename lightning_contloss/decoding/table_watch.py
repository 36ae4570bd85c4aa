"""TableWatch: the content hash of a target table, taken again only when its tensors moved."""

from __future__ import annotations

from torch import Tensor

from lightning_contloss.targets import TargetEmbeddings

__all__ = ["TableWatch", "tensor_key"]


def tensor_key(*tensors: Tensor) -> tuple[int, ...]:
    """A cheap identity of tensors' storage, in-place version and device.

    It changes on ``load_state_dict``, ``.to()`` and in-place writes, so an unchanged key means
    unchanged content; a changed key does not mean changed content (a move keeps it).

    Example:
        >>> t = torch.zeros(3)
        >>> before = tensor_key(t)
        >>> _ = t.add_(1.0)
        >>> tensor_key(t) == before
        False
    """
    return tuple(v for t in tensors for v in (t.data_ptr(), t._version, hash(t.device)))


class TableWatch:
    """The content hash of a target table, taken again only when its tensors moved.

    Hashing a 400k × 256 table takes about 0.4 s, so a decoder's owner (the mixin, the
    callback's :class:`~lightning_contloss.callbacks.DecodingSession`) asks this object instead:
    it hashes when the table's weight or special mask has another storage, version or device
    than at the last call (see :func:`tensor_key`), and otherwise returns the last hash.

    Example:
        >>> targets = TargetEmbeddings.random(10, 4)
        >>> watch = TableWatch()
        >>> first = watch.digest(targets)
        >>> watch.digest(targets) == first  # the same tensors: not hashed again
        True
        >>> with torch.no_grad():
        ...     _ = targets.weight.mul_(-1.0)
        >>> watch.digest(targets) == first  # a write: hashed again, another content
        False
    """

    def __init__(self) -> None:
        self._key: tuple[int, ...] | None = None
        self._digest: str | None = None

    def digest(self, targets: TargetEmbeddings) -> str:
        """``targets.content_hash()``, hashed only when the tensors changed since the last call."""
        key = tensor_key(targets.weight, targets.special_mask)
        if self._digest is None or key != self._key:
            self._digest, self._key = targets.content_hash(), key
        return self._digest
