"""The integrity manifest of a folder the decoders write: each file's size and hash, the format and the table.

Every folder written by ``HNSWDecoder.save`` and by the index cache ends with a
``manifest.json``, written last and atomically, that records the size and blake2b hash of each
file, the manifest version, the fingerprint of the table the files belong to and the build
parameters. A reader calls :func:`read_manifest` before it parses any file, so a truncated,
bit-flipped, swapped or foreign file is an :class:`IntegrityError` (a ``ValueError``) instead
of reaching a parser (hnswlib's crashes on damaged input).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST_FILE", "MANIFEST_VERSION", "IntegrityError", "Manifest", "read_manifest", "write_manifest"]

MANIFEST_FILE = "manifest.json"
# Bumped whenever the manifest's own layout changes.
MANIFEST_VERSION = 1
_CHUNK = 1 << 20


class IntegrityError(ValueError):
    """A folder whose files do not match its manifest, or whose manifest is not the one expected.

    Attributes:
        folder: the folder.
        problem: what disagrees, without the folder.
    """

    def __init__(self, folder: Path, problem: str) -> None:
        super().__init__(f"{str(folder)!r}: {problem}")
        self.folder = folder
        self.problem = problem


@dataclass(frozen=True)
class Manifest:
    """What a folder's manifest records.

    Attributes:
        table: the fingerprint of the table the files belong to (see ``table_fingerprint``).
        params: the writer's parameters (JSON values), e.g. the build parameters of an index.
        files: ``{name: (size in bytes, blake2b hex digest)}``.
    """

    table: str
    params: dict[str, Any]
    files: dict[str, tuple[int, str]]


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _as_json(params: Mapping[str, object]) -> dict[str, Any]:
    # The round trip gives the form read back from disk, so written and expected compare equal.
    return dict(json.loads(json.dumps(dict(params), sort_keys=True)))


def write_manifest(folder: Path, files: Iterable[str], *, table: str, params: Mapping[str, object]) -> Manifest:
    """Hash ``files`` (names inside ``folder``) and write ``manifest.json`` atomically; call it last.

    The manifest goes to a temporary file that is renamed over ``manifest.json``, so a reader
    sees the old manifest, the new one, or none, never half of one.

    Args:
        folder: the folder holding the files.
        files: the names of the files to record.
        table: the table fingerprint the files belong to.
        params: JSON-serialisable parameters to record.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "a.bin").write_bytes(b"abc")
        >>> write_manifest(folder, ["a.bin"], table="f00d", params={"M": 16}).files["a.bin"][0]
        3
        >>> read_manifest(folder, table="f00d").params
        {'M': 16}
    """
    folder = Path(folder)
    names = sorted(set(files))
    if MANIFEST_FILE in names:
        raise ValueError(f"{MANIFEST_FILE} cannot record itself; pass the other files")
    records = {name: ((folder / name).stat().st_size, _digest(folder / name)) for name in names}
    manifest = Manifest(table=table, params=_as_json(params), files=records)
    blob = json.dumps(
        {
            "manifest": MANIFEST_VERSION,
            "table": table,
            "params": manifest.params,
            "files": {n: {"size": s, "blake2b": d} for n, (s, d) in records.items()},
        },
        indent=1,
        sort_keys=True,
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST_FILE}.", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(blob)
        os.replace(tmp, folder / MANIFEST_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return manifest


def _parse(folder: Path) -> Manifest:
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise IntegrityError(folder, f"there is no {MANIFEST_FILE}: the folder was not written completely")
    try:
        raw = json.loads(path.read_bytes())
        if raw["manifest"] != MANIFEST_VERSION:
            raise IntegrityError(
                folder, f"{MANIFEST_FILE} has version {raw['manifest']!r}; this version reads {MANIFEST_VERSION}"
            )
        files = {str(n): (int(r["size"]), str(r["blake2b"])) for n, r in raw["files"].items()}
        outside = [n for n in files if n in ("", ".", "..") or Path(n).name != n]
        if outside:
            raise IntegrityError(folder, f"{MANIFEST_FILE} lists files outside the folder: {outside}")
        return Manifest(table=str(raw["table"]), params=dict(raw["params"]), files=files)
    except IntegrityError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise IntegrityError(folder, f"{MANIFEST_FILE} is damaged ({type(err).__name__}: {err})") from err


def read_manifest(folder: Path, *, table: str | None = None, params: Mapping[str, object] | None = None) -> Manifest:
    """Read a folder's manifest and check every file it lists against it; returns the manifest.

    Args:
        folder: the folder.
        table: if given, the table fingerprint the folder must belong to.
        params: if given, the parameters the folder must have been written with.

    Raises:
        IntegrityError: no or a damaged manifest, a listed file missing or of another size or
            hash, or another table or parameters than expected.
    """
    folder = Path(folder)
    manifest = _parse(folder)
    if table is not None and manifest.table != table:
        raise IntegrityError(
            folder, f"it belongs to another table (fingerprint {manifest.table[:12]}…, expected {table[:12]}…)"
        )
    if params is not None:
        expected = _as_json(params)
        keys = expected.keys() | manifest.params.keys()
        differ = sorted(k for k in keys if expected.get(k) != manifest.params.get(k))
        if differ:
            what = ", ".join(f"{k}={manifest.params.get(k)!r} (expected {expected.get(k)!r})" for k in differ)
            raise IntegrityError(folder, f"it was written with other parameters: {what}")
    for name, (size, digest) in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise IntegrityError(folder, f"{name} is missing")
        actual = path.stat().st_size
        if actual != size:
            raise IntegrityError(folder, f"{name} has {actual} bytes but was written with {size}")
        if _digest(path) != digest:
            raise IntegrityError(folder, f"{name} differs from the file that was written (blake2b mismatch)")
    return manifest
