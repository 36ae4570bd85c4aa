"""Reading word2vec / GloVe / fastText vector files (text or word2vec binary, optionally gzip) row by row.

Every way a file can be damaged or misread ends in a ``ValueError`` that names the file, the
line (text) or entry (binary), and the fix: another ``encoding=``, ``binary=True``/``False``,
or downloading the file again. Nothing from the codec, gzip or the allocator escapes bare.
"""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["check_encoding", "is_binary_name", "read_rows", "read_vectors"]

_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = codecs.BOM_UTF8
# Bytes of a number written as text: a "binary" entry made only of these is a text file.
_TEXT_NUMBER_BYTES = frozenset(b"0123456789.-+eE \t\r\n")
_MAX_WORD_BYTES = 4096
_CHUNK = 1 << 20
_DECOMPRESS_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def check_encoding(encoding: object) -> str:
    """``encoding`` if Python knows the codec; a ``TypeError``/``ValueError`` naming it otherwise.

    Example:
        >>> check_encoding("latin-1")
        'latin-1'
    """
    if not isinstance(encoding, str):
        raise TypeError(f"encoding must be a codec name such as 'utf-8', got {type(encoding).__name__}")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(
            f"encoding {encoding!r} is not a text encoding Python knows; try 'utf-8' or 'latin-1'"
        ) from None
    return encoding


def is_binary_name(path: Path) -> bool:
    """Whether ``path`` names a binary word2vec file by its suffix (``.bin`` or ``.bin.gz``).

    Example:
        >>> is_binary_name(Path("vectors.bin.gz")), is_binary_name(Path("glove.txt"))
        (True, False)
    """
    stem = path.with_suffix("") if path.suffix == ".gz" else path
    return stem.suffix == ".bin"


def read_rows(
    path: Path, words: Sequence[str], *, binary: bool, encoding: str = "utf-8"
) -> tuple[np.ndarray, np.ndarray, int]:
    """Streams ``path`` and keeps only the rows of ``words``, written straight into a ``[V, D]`` table.

    The first row of a word wins when the file repeats it.

    Args:
        path: the vector file.
        words: the V distinct words, in row order.
        binary: a word2vec binary file (True) or a text file (False).
        encoding: the text encoding of the file (of the words, in a binary file).

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
    for word, vec in read_vectors(path, binary=binary, encoding=encoding):
        rows += 1
        if table is None:
            table = _allocate(len(words), vec.shape[0], path)
        i = index.get(word)
        if i is not None and not found[i]:
            table[i] = vec
            found[i] = True
    if table is None:
        raise ValueError(f"vector file {str(path)!r} has no vectors; is it empty or only a header?")
    return table, found, rows


def read_vectors(path: Path, *, binary: bool, encoding: str = "utf-8") -> Iterator[tuple[str, np.ndarray]]:
    """Yields ``(word, vector)`` for every row of a vector file, validating each as it goes.

    Args:
        path: the file; gzip data (by its magic bytes) is decompressed on the fly.
        binary: a word2vec binary file (True) or a text file (False).
        encoding: the text encoding (of the words, in a binary file).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "v.txt"
        >>> _ = p.write_text("2 3\\nthe 1 0 0\\ncat 0 1 0\\n")
        >>> [(w, v.tolist()) for w, v in read_vectors(p, binary=False)]
        [('the', [1.0, 0.0, 0.0]), ('cat', [0.0, 1.0, 0.0])]
    """
    return _read_binary(path, encoding) if binary else _read_text(path, encoding)


def _allocate(rows: int, width: int, path: Path) -> np.ndarray:
    try:
        return np.zeros((rows, width), dtype=np.float32)
    except MemoryError:
        gib = rows * width * 4 / 2**30
        raise ValueError(
            f"{path}: a table of {rows} words × dim {width} needs {gib:.1f} GiB, more than this machine can "
            "allocate; use a smaller vocabulary or a lower-dimensional file"
        ) from None


def _open(path: Path) -> IO[bytes]:
    try:
        with open(path, "rb") as probe:
            magic = probe.read(2)
        if magic == _GZIP_MAGIC:
            return gzip.GzipFile(path, "rb")  # type: ignore[return-value]  # GzipFile is a BinaryIO at run time
    except OSError as err:
        raise ValueError(f"vector file {str(path)!r} could not be read: {err.strerror or err}") from None
    if path.suffix == ".gz":
        raise ValueError(
            f"{path}: the name ends in .gz but the file is not gzip data (it starts with {magic!r}); "
            "download it again, or rename it without .gz if it is an uncompressed vector file"
        )
    return open(path, "rb")


def _read_failure(path: Path, where: str, err: BaseException) -> ValueError:
    """The error for a read that failed inside the file: truncated or damaged gzip, or an I/O error."""
    if isinstance(err, EOFError):
        return ValueError(
            f"{path}:{where}: the compressed data ends early, so the file is truncated (an interrupted "
            "download?); download it again (`gzip -t` checks a .gz file)"
        )
    if isinstance(err, (zlib.error, gzip.BadGzipFile)):
        return ValueError(f"{path}:{where}: the gzip data is damaged ({err}); download the file again")
    return ValueError(f"{path}:{where}: the file could not be read: {getattr(err, 'strerror', None) or err}")


def _byte_lines(raw: IO[bytes], path: Path) -> Iterator[bytes]:
    lineno = 0
    it = iter(raw)
    while True:
        try:
            line = next(it)
        except StopIteration:
            return
        except (*_DECOMPRESS_ERRORS, OSError) as err:
            raise _read_failure(path, f"{lineno + 1}", err) from None
        lineno += 1
        yield line


def _text_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` decoded with ``encoding``; a decoding error names the line and the fixes."""
    # An incremental decoder fed byte lines keeps multi-byte encodings (UTF-16) correct and
    # still pins an error to its line in every ASCII-compatible one.
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    pending = ""
    lineno = 0
    first = True
    with _open(path) as raw:
        for chunk in _byte_lines(raw, path):
            if first:
                # A UTF-8 byte-order mark is not part of the first word, whatever encoding= says.
                chunk, first = chunk.removeprefix(_UTF8_BOM), False
            try:
                pending += decoder.decode(chunk)
            except UnicodeDecodeError as err:
                bad = chunk[err.start : err.start + 1]
                raise ValueError(
                    f"{path}:{lineno + 1}: not valid {encoding} text ({err.reason}, byte {err.start + 1} of the "
                    f"line is {bad!r}); pass encoding='latin-1' (or the file's own encoding) for a text file, "
                    "or binary=True for a binary word2vec file"
                ) from None
            *complete, pending = pending.split("\n")
            for line in complete:
                lineno += 1
                yield lineno, line.removeprefix("\ufeff") if lineno == 1 else line
    try:
        pending += decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ValueError(
            f"{path}:{lineno + 1}: the file ends inside a {encoding} character; it is truncated or not {encoding}"
        ) from None
    if pending:
        yield lineno + 1, pending.removeprefix("\ufeff") if lineno == 0 else pending


def _header(parts: list[str]) -> tuple[int, int] | None:
    """``(count, dim)`` when a first line is a word2vec/fastText header, else ``None``."""
    if len(parts) != 2:
        return None
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return None


def _read_text(path: Path, encoding: str) -> Iterator[tuple[str, np.ndarray]]:
    width: int | None = None
    header_note = ""
    for lineno, line in _text_lines(path, encoding):
        if "\x00" in line:
            raise ValueError(
                f"{path}:{lineno}: the line holds NUL bytes, so this is not a text vector file; "
                "pass binary=True for a binary word2vec file"
            )
        parts = line.rstrip("\r").rstrip(" ").split(" ")
        if lineno == 1 and (header := _header(parts)) is not None:
            count, width = header  # word2vec / fastText header: "count dim"
            if count < 0 or width < 1:
                raise ValueError(
                    f"{path}:1: the header says {count} rows of dim {width}; a 'count dim' header needs a count "
                    ">= 0 and a dim >= 1: fix the first line, or delete it (the dim is then read from the rows)"
                )
            header_note = f" (the header on line 1 says dim {width})"
            continue
        if len(parts) == 1 and not parts[0]:
            continue
        if width is None:
            width = len(parts) - 1
            if width < 1:
                raise ValueError(f"{path}:{lineno}: malformed line, expected 'word v1 ... vD', got {line[:80]!r}")
        if len(parts) - 1 != width:
            raise ValueError(
                f"{path}:{lineno}: row of word {parts[0][:80]!r} has {len(parts) - 1} values but the file's "
                f"width is {width}{header_note}; fix or delete that line"
            )
        try:
            vec = np.array(parts[1:], dtype=np.float32)
        except ValueError:
            raise ValueError(
                f"{path}:{lineno}: malformed line, could not parse the values of {parts[0][:80]!r} as numbers"
            ) from None
        if not np.isfinite(vec).all():
            raise ValueError(f"{path}:{lineno}: row of word {parts[0][:80]!r} has NaN or inf; fix or delete it")
        yield parts[0], vec


def _read_exact(f: IO[bytes], size: int) -> bytes:
    # In bounded chunks, so a header that promises a huge dim meets the end of the file
    # instead of one huge allocation.
    parts: list[bytes] = []
    left = size
    while left:
        piece = f.read(min(left, _CHUNK))
        if not piece:
            break
        parts.append(piece)
        left -= len(piece)
    return b"".join(parts)


def _binary_header(f: IO[bytes], path: Path) -> tuple[int, int]:
    line = f.readline(256).removeprefix(_UTF8_BOM)
    try:
        count, width = (int(x) for x in line.split())
    except ValueError:
        raise ValueError(
            f"{path}:1: a binary word2vec file starts with 'count dim', got {line[:40]!r}; "
            "pass binary=False for a text file"
        ) from None
    if count < 0 or width < 1:
        raise ValueError(
            f"{path}:1: the header says {count} entries of dim {width}; a binary word2vec header needs a count >= 0 "
            "and a dim >= 1, so the file is damaged or not word2vec binary (binary=False reads text files)"
        )
    size = path.stat().st_size
    if not isinstance(f, gzip.GzipFile) and count and 4 * width > size:
        raise ValueError(
            f"{path}:1: the header says dim {width}, i.e. {4 * width} bytes per entry, but the whole file has "
            f"{size} bytes; the header is damaged or the file truncated"
        )
    return count, width


def _read_word(f: IO[bytes], path: Path, n: int, count: int) -> bytes:
    chars = bytearray()
    while True:
        c = f.read(1)
        if not c:
            raise ValueError(f"{path}: file ends inside entry {n} of {count}; it is truncated")
        if c == b" ":
            return bytes(chars)
        if c != b"\n":
            chars += c
        if len(chars) > _MAX_WORD_BYTES:
            raise ValueError(
                f"{path}: entry {n} of {count} has no space within {_MAX_WORD_BYTES} bytes, so the file is damaged "
                "or not word2vec binary; pass binary=False for a text file"
            )


def _read_binary(path: Path, encoding: str) -> Iterator[tuple[str, np.ndarray]]:
    # word2vec binary: "count dim\n", then per entry the word, a space and dim little-endian float32.
    with _open(path) as f:
        n = 0
        try:
            count, width = _binary_header(f, path)
            nbytes = 4 * width
            for n in range(1, count + 1):
                word_bytes = _read_word(f, path, n, count)
                data = _read_exact(f, nbytes)
                if len(data) != nbytes:
                    raise ValueError(
                        f"{path}: file ends inside entry {n} of {count} ({len(data)} of the {nbytes} bytes of "
                        f"dim {width}); it is truncated, or the header's count or dim is wrong"
                    )
                if n == 1 and _TEXT_NUMBER_BYTES.issuperset(data):
                    raise ValueError(
                        f"{path}: entry 1 holds the text {data[:40]!r} where binary floats belong; this is a text "
                        "vector file: pass binary=False"
                    )
                vec = np.frombuffer(data, dtype="<f4").astype(np.float32)
                word = word_bytes.decode(encoding, errors="replace")
                if not np.isfinite(vec).all():
                    raise ValueError(f"{path}: entry {n} ({word!r}) has NaN or inf; fix or delete it")
                yield word, vec
        except (*_DECOMPRESS_ERRORS, OSError) as err:
            raise _read_failure(path, f"entry {max(n, 1)}", err) from None
