"""An on-disk cache of built indexes, keyed by the table's content and the build parameters."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from lightning_contloss._fingerprint import table_fingerprint
from lightning_contloss.decoding.manifest import IntegrityError, read_manifest, write_manifest

__all__ = ["CACHE_ENV_VAR", "CacheEntryWarning", "IndexCache", "cache_key", "default_cache_dir", "table_fingerprint"]

T = TypeVar("T")

log = logging.getLogger(__name__)

CACHE_ENV_VAR = "LIGHTNING_CONTLOSS_CACHE"
_KEY = re.compile(r"[0-9a-f]{32}")
# A writer's temporary folder older than this is a leftover of a crashed writer, which clear() removes.
_STALE_TEMP_S = 3600.0


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
    """A folder of cache entries, one sub-folder per key, written atomically and checked on every read.

    An entry is written into a temporary folder, sealed with a manifest (each file's size and
    blake2b hash, the table fingerprint and the parameters; see
    :mod:`~lightning_contloss.decoding.manifest`) and renamed into place, so a reader never sees
    a half-written entry, and two processes (e.g. DDP ranks) building the same index at once
    both succeed: the first rename wins, the other copy is dropped. :meth:`lookup` checks the
    manifest before anything reads the files: a damaged entry (truncated, bit-flipped or
    swapped file, no manifest) or a foreign one (another table or parameters under this key,
    e.g. from a copied cache folder) is a miss; it is removed, with a warning.

    Args:
        root: the cache folder; ``None`` means :func:`default_cache_dir`.

    Example:
        >>> import tempfile, pathlib
        >>> cache = IndexCache(tempfile.mkdtemp())
        >>> key = cache_key("0123", {"M": 16})
        >>> cache.lookup(key) is None
        True
        >>> path = cache.store(key, lambda d: (d / "x.txt").write_text("hi"), table="0123", params={"M": 16})
        >>> cache.lookup(key, table="0123") == path, (path / "x.txt").read_text()
        (True, 'hi')
        >>> cache.load(key, lambda d: (d / "x.txt").read_text(), table="0123", params={"M": 16})
        'hi'
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

    def lookup(self, key: str, *, table: str | None = None, params: Mapping[str, object] | None = None) -> Path | None:
        """The entry's folder if it exists, is intact and (when given) holds ``table`` and ``params``; else ``None``.

        A damaged or foreign entry is removed, with a warning.
        """
        path = self.path(key)
        if not path.is_dir():
            return None
        try:
            read_manifest(path, table=table, params=params)
        except IntegrityError as err:
            self._discard(key, err.problem)
            return None
        return path

    def load(
        self,
        key: str,
        read: Callable[[Path], T],
        *,
        table: str | None = None,
        params: Mapping[str, object] | None = None,
    ) -> T | None:
        """``read(folder)`` of the intact entry (see :meth:`lookup`), or ``None`` on a miss."""
        path = self.lookup(key, table=table, params=params)
        if path is None:
            return None
        try:
            return read(path)
        except Exception as err:
            # The files are the ones that were written, yet they do not read (e.g. a writer bug or
            # an incompatible library): whatever the error, the entry is useless, and a rebuild
            # replaces it.
            self._discard(key, f"it could not be read ({type(err).__name__}: {err})")
            return None

    def store(
        self,
        key: str,
        write: Callable[[Path], object],
        *,
        table: str = "",
        params: Mapping[str, object] | None = None,
    ) -> Path:
        """Write an entry with ``write(folder)``, seal it with a manifest and publish it atomically.

        Args:
            key: the entry's key.
            write: writes the entry's files into the folder it is given.
            table: the fingerprint of the table the entry belongs to.
            params: the parameters the entry was built with (JSON values).

        Returns:
            the entry's folder.
        """
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
            try:
                write(tmp)
            except Exception as err:
                if tmp.is_dir():
                    raise
                # hnswlib reports a vanished folder as a RuntimeError; callers treat OSError as "not cached".
                raise OSError(
                    f"the index cache's temporary folder {str(tmp)!r} was removed while this process was writing "
                    "the entry (another process cleared the cache?); the entry is not cached"
                ) from err
            write_manifest(tmp, [p.name for p in tmp.iterdir() if p.is_file()], table=table, params=params or {})
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
        path = self.path(key)
        # Renamed away first, so a writer publishing the same key meanwhile is not deleted with it.
        trash = self.root / f".{key}.removed-{os.getpid()}-{time.monotonic_ns()}"
        try:
            os.rename(path, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def clear(self) -> None:
        """Delete every entry of this cache, and the temporary folders writers left behind, nothing else.

        A writer's temporary folder younger than an hour is left alone: another process may be
        writing its entry into it right now (deleting it broke that process's build).
        """
        if not self.root.is_dir():
            return
        now = time.time()
        for child in self.root.iterdir():
            # Only folders named like a key: the root may be shared with unrelated files.
            if not child.is_dir() or not _KEY.fullmatch(child.name.lstrip(".").split(".")[0]):
                continue
            if _KEY.fullmatch(child.name):
                self.remove(child.name)
                continue
            try:
                age = now - child.stat().st_mtime
            except OSError:  # gone meanwhile
                continue
            if ".removed-" in child.name or age > _STALE_TEMP_S:
                shutil.rmtree(child, ignore_errors=True)

    def _discard(self, key: str, problem: str) -> None:
        message = (
            f"ignoring the broken index cache entry {str(self.path(key))!r}: {problem}; "
            "it was removed and the index is built again"
        )
        log.warning(message)
        warnings.warn(message, CacheEntryWarning, stacklevel=4)
        self.remove(key)


class CacheEntryWarning(UserWarning):
    """A damaged or foreign index cache entry was found, removed and is rebuilt."""
