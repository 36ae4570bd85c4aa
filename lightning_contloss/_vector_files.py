"""Reading word2vec / GloVe / fastText vector files (text or word2vec binary, optionally gzip) row by row."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["is_binary_name", "read_rows", "read_vectors"]


def is_binary_name(path: Path) -> bool:
    """Whether ``path`` names a binary word2vec file by its suffix (``.bin`` or ``.bin.gz``).

    Example:
        >>> is_binary_name(Path("vectors.bin.gz")), is_binary_name(Path("glove.txt"))
        (True, False)
    """
    stem = path.with_suffix("") if path.suffix == ".gz" else path
    return stem.suffix == ".bin"


def read_vectors(path: Path, *, binary: bool) -> Iterator[tuple[str, np.ndarray]]:
    """Yields ``(word, vector)`` for every row of a vector file, validating each as it goes.

    Args:
        path: the file; ``.gz`` files are decompressed on the fly.
        binary: a word2vec binary file (True) or a text file (False).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "v.txt"
        >>> _ = p.write_text("2 3\\nthe 1 0 0\\ncat 0 1 0\\n")
        >>> [(w, v.tolist()) for w, v in read_vectors(p, binary=False)]
        [('the', [1.0, 0.0, 0.0]), ('cat', [0.0, 1.0, 0.0])]
    """
    return _read_binary(path) if binary else _read_text(path)


def read_rows(path: Path, words: Sequence[str], *, binary: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Streams ``path`` and keeps only the rows of ``words``, written straight into a ``[V, D]`` table.

    The first row of a word wins when the file repeats it.

    Args:
        path: the vector file.
        words: the V distinct words, in row order.
        binary: a word2vec binary file (True) or a text file (False).

    Returns:
        ``(table [V, D] float32, found [V] bool, rows read from the file)``; rows of words
        not found are zero.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "v.txt"
        >>> _ = p.write_text("the 1 0\\ncat 0 1\\n")
        >>> table, found, rows = read_rows(p, ["cat", "dog"], binary=False)
        >>> table.tolist(), found.tolist(), rows
        ([[0.0, 1.0], [0.0, 0.0]], [True, False], 2)
    """
    index = {w: i for i, w in enumerate(words)}
    table: np.ndarray | None = None
    found = np.zeros(len(words), dtype=bool)
    rows = 0
    for word, vec in read_vectors(path, binary=binary):
        rows += 1
        if table is None:
            table = np.zeros((len(words), vec.shape[0]), dtype=np.float32)
        i = index.get(word)
        if i is not None and not found[i]:
            table[i] = vec
            found[i] = True
    if table is None:
        raise ValueError(f"vector file {str(path)!r} has no vectors; is it empty or only a header?")
    return table, found, rows


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]  # GzipFile is a BinaryIO at run time
    return open(path, "rb")


def _read_text(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    width: int | None = None
    with _open(path) as raw:
        stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="\n")
        for lineno, line in enumerate(stream, start=1):
            parts = line.rstrip("\r\n").rstrip(" ").split(" ")
            if lineno == 1 and len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                width = int(parts[1])  # word2vec / fastText header: "count dim"
                continue
            if len(parts) == 1 and not parts[0]:
                continue
            if width is None:
                width = len(parts) - 1
                if width < 1:
                    raise ValueError(f"{path}:{lineno}: malformed line, expected 'word v1 ... vD', got {line[:80]!r}")
            if len(parts) - 1 != width:
                raise ValueError(
                    f"{path}:{lineno}: row of word {parts[0]!r} has {len(parts) - 1} values but the file's "
                    f"width is {width}; fix or delete that line"
                )
            try:
                vec = np.array(parts[1:], dtype=np.float32)
            except ValueError:
                raise ValueError(
                    f"{path}:{lineno}: malformed line, could not parse the values of {parts[0]!r} as numbers"
                ) from None
            if not np.isfinite(vec).all():
                raise ValueError(f"{path}:{lineno}: row of word {parts[0]!r} has NaN or inf; fix or delete it")
            yield parts[0], vec


def _read_binary(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    # word2vec binary: "count dim\n", then per entry the word, a space and dim little-endian float32.
    with _open(path) as f:
        header = f.readline()
        try:
            count, width = (int(x) for x in header.split())
        except ValueError:
            raise ValueError(
                f"{path}:1: a binary word2vec file starts with 'count dim', got {header[:40]!r}; "
                "pass binary=False for a text file"
            ) from None
        nbytes = 4 * width
        for n in range(count):
            chars = bytearray()
            while True:
                c = f.read(1)
                if not c:
                    raise ValueError(f"{path}: file ends inside entry {n + 1} of {count}; it is truncated")
                if c == b" ":
                    break
                if c != b"\n":
                    chars += c
            data = f.read(nbytes)
            if len(data) != nbytes:
                raise ValueError(f"{path}: file ends inside entry {n + 1} of {count}; it is truncated")
            vec = np.frombuffer(data, dtype="<f4").astype(np.float32)
            word = chars.decode("utf-8", errors="replace")
            if not np.isfinite(vec).all():
                raise ValueError(f"{path}: entry {n + 1} ({word!r}) has NaN or inf; fix or delete it")
            yield word, vec
