"""An on-disk cache of built indexes, keyed by the table's content and the build parameters."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from lightning_contloss._fingerprint import table_fingerprint

__all__ = ["CACHE_ENV_VAR", "IndexCache", "cache_key", "default_cache_dir", "table_fingerprint"]

log = logging.getLogger(__name__)

CACHE_ENV_VAR = "LIGHTNING_CONTLOSS_CACHE"
_KEY = re.compile(r"[0-9a-f]{32}")


def default_cache_dir() -> Path:
    """Where built indexes are cached unless told otherwise.

    ``$LIGHTNING_CONTLOSS_CACHE`` if set, else ``$XDG_CACHE_HOME/lightning-contloss``, else
    ``~/.cache/lightning-contloss``.

    Example:
        >>> import os
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"LIGHTNING_CONTLOSS_CACHE": "/tmp/lc-cache"}):
        ...     print(default_cache_dir())
        /tmp/lc-cache
    """
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "lightning-contloss"


def cache_key(fingerprint: str, params: Mapping[str, object]) -> str:
    """The cache key of an index: a digest of the table fingerprint and the build parameters.

    Example:
        >>> key = cache_key("ab", {"M": 16})
        >>> key == cache_key("ab", {"M": 16}), key == cache_key("ab", {"M": 32})
        (True, False)
    """
    blob = json.dumps({"table": fingerprint, **params}, sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


class IndexCache:
    """A folder of cache entries, one sub-folder per key, written atomically.

    An entry is written into a temporary folder and renamed into place, so a reader never
    sees a half-written entry, and two processes (e.g. DDP ranks) building the same index at
    once both succeed: the first rename wins, the other copy is dropped.

    Args:
        root: the cache folder; ``None`` means :func:`default_cache_dir`.

    Example:
        >>> import tempfile, pathlib
        >>> cache = IndexCache(tempfile.mkdtemp())
        >>> key = cache_key("0123", {"M": 16})
        >>> cache.lookup(key) is None
        True
        >>> path = cache.store(key, lambda d: (d / "x.txt").write_text("hi"))
        >>> cache.lookup(key) == path, (path / "x.txt").read_text()
        (True, 'hi')
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"IndexCache({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The folder an entry with this key lives in (whether or not it exists)."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"cache keys are 32 lowercase hex digits (see cache_key), got {key!r}")
        return self.root / key

    def lookup(self, key: str) -> Path | None:
        """The entry's folder if it exists, else ``None``."""
        path = self.path(key)
        return path if path.is_dir() else None

    def store(self, key: str, write: Callable[[Path], object]) -> Path:
        """Write an entry with ``write(folder)`` and publish it atomically; returns its folder."""
        final = self.path(key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(
                f"cannot create the index cache folder {str(self.root)!r} ({err}); pass a writable "
                f"cache_dir or set ${CACHE_ENV_VAR}"
            ) from err
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.root))
        try:
            write(tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                log.debug("index cache entry %s was written concurrently; keeping the existing one", key)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def remove(self, key: str) -> None:
        """Delete one entry, if present."""
        shutil.rmtree(self.path(key), ignore_errors=True)

    def clear(self) -> None:
        """Delete every entry (and leftover temporary folder) of this cache, nothing else."""
        if self.root.is_dir():
            for child in self.root.iterdir():
                # Only folders named like a key: the root may be shared with unrelated files.
                name = child.name.lstrip(".").split(".")[0]
                if child.is_dir() and _KEY.fullmatch(name):
                    shutil.rmtree(child, ignore_errors=True)
