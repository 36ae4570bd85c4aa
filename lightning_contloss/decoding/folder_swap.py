"""Write a folder beside the old one and swap it in, so an interrupted write never costs the old folder.

``HNSWDecoder.save`` over an earlier save used to delete the old manifest and overwrite the old
files in place: a save interrupted halfway (Ctrl-C, a full disk, a killed job) lost both. Now
the new folder is written in full next to the old one (a hidden ``.NAME.saving-*`` sibling on
the same file system), then the two are exchanged in one step: Linux's
``renameat2(RENAME_EXCHANGE)``, or elsewhere two renames, the second undone if it fails. Until
the exchange the old folder is untouched; after it the old copy is deleted.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Collection
from pathlib import Path

__all__ = ["replace_folder"]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with ``renameat2``; ``False`` where the system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without renameat2 (glibc < 2.28, musl)
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # the kernel or file system lacks it
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap(new: Path, folder: Path) -> None:
    """Put ``new`` at ``folder``; afterwards ``new`` holds the old folder (or nothing)."""
    if not folder.exists():
        os.rename(new, folder)
        return
    if _exchange(new, folder):
        return
    aside = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(folder, aside)
    try:
        os.rename(new, folder)
    except BaseException:
        os.rename(aside, folder)
        raise
    os.rename(aside, new)


def replace_folder(folder: Path, write: Callable[[Path], object], owned: Collection[str]) -> Path:
    """Write a fresh folder with ``write(tmp)`` and swap it in for ``folder`` (created if missing).

    Args:
        folder: where the folder goes; an existing one may hold only the names in ``owned``
            (and hidden leftovers of them), since the swap replaces it as a whole.
        write: writes every file of the folder into the empty folder it is given.
        owned: the file names a folder written by ``write`` holds.

    Returns:
        ``folder``, as given.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = replace_folder(root / "f", lambda d: (d / "a.txt").write_text("1"), {"a.txt"})
        >>> _ = replace_folder(root / "f", lambda d: (d / "a.txt").write_text("2"), {"a.txt"})
        >>> (root / "f" / "a.txt").read_text(), sorted(p.name for p in root.iterdir())
        ('2', ['f'])
    """
    given, folder = folder, Path(os.path.abspath(folder))  # a name and a parent even for "." or "x/.."
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{str(folder)!r} is a file; save(path) writes a folder, pass a folder path")
    if folder.is_dir():
        # The owned files, and the hidden temporary files of an interrupted write of one (".manifest.json.x1y2").
        foreign = sorted(
            p.name
            for p in folder.iterdir()
            if p.name not in owned and not any(p.name.startswith(f".{n}.") for n in owned)
        )
        if foreign:
            shown = ", ".join(repr(n) for n in foreign[:5])
            raise ValueError(
                f"{str(folder)!r} also holds {shown}, which a save would replace along with the old save; "
                f"save into a folder of its own, e.g. {str(folder / 'decoder')!r}"
            )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.saving-", dir=folder.parent))
    try:
        write(tmp)
        _swap(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return given
