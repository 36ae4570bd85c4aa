"""``table_fingerprint``: one content digest of a table and an id mask, for caches and change detection."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

__all__ = ["table_fingerprint"]


def table_fingerprint(weight: Tensor, mask: Tensor) -> str:
    """A hex digest of a table's shape and values and of a ``[V]`` bool mask over its ids.

    ``TargetEmbeddings.content_hash`` passes its special mask; the index cache passes the
    mask of returnable ids. Equal tables and masks give equal digests on any device.

    Args:
        weight: ``[V, D]`` table.
        mask: ``[V]`` bool mask.

    Example:
        >>> w = torch.eye(3)
        >>> mask = torch.ones(3, dtype=torch.bool)
        >>> table_fingerprint(w, mask) == table_fingerprint(w.clone(), mask)
        True
        >>> table_fingerprint(w, mask) == table_fingerprint(w, torch.tensor([True, True, False]))
        False
    """
    h = hashlib.blake2b(digest_size=16)
    w = weight.detach().to("cpu", torch.float32).contiguous()
    h.update(str(tuple(w.shape)).encode())
    # The array's own buffer, not a bytes copy: that would double a 400k × 256 table (400 MB).
    h.update(w.numpy().data)
    h.update(mask.detach().to("cpu", torch.bool).contiguous().numpy().data)
    return h.hexdigest()
