"""Damaged and misread vector files (issue 11, rows 8 and 9): every failure names the file, the line and the fix."""

from __future__ import annotations

import gzip
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lightning_contloss import TargetEmbeddings, _vector_files

ROWS = {"the": [1.0, 0.0, 0.0], "cat": [0.0, 2.0, 0.0], "sat": [0.0, 0.0, 3.0], "mat": [1.0, 1.0, 0.0]}


def text_bytes(rows: dict[str, list[float]], header: bool = False, encoding: str = "utf-8") -> bytes:
    lines = [f"{len(rows)} {len(next(iter(rows.values())))}"] if header else []
    lines += [w + " " + " ".join(f"{v:.6f}" for v in vec) for w, vec in rows.items()]
    return ("\n".join(lines) + "\n").encode(encoding)


def binary_bytes(rows: dict[str, list[float]], header: str | None = None) -> bytes:
    dim = len(next(iter(rows.values())))
    out = (header or f"{len(rows)} {dim}\n").encode()
    for w, vec in rows.items():
        out += w.encode() + b" " + np.asarray(vec, dtype="<f4").tobytes() + b"\n"
    return out


def many_rows(n: int, dim: int = 8, seed: int = 0) -> dict[str, list[float]]:
    rng = random.Random(seed)
    return {f"w{i}": [rng.uniform(-1, 1) for _ in range(dim)] for i in range(n)}


def load(path: Path, vocab: list[str] | None = None, **kwargs: Any) -> TargetEmbeddings:
    return TargetEmbeddings.from_file(path, vocab or ["the", "cat"], **kwargs)


def raises_with(path: Path, *patterns: str) -> Any:
    """``pytest.raises(ValueError)`` whose message holds the path and every pattern."""
    return pytest.raises(ValueError, match="(?s)" + "".join(f"(?=.*{p})" for p in (re.escape(str(path)), *patterns)))


# ---------------------------------------------------------------------- encodings
def test_latin1_text_names_line_and_encoding(tmp_path: Path) -> None:
    p = tmp_path / "v.txt"
    p.write_bytes(text_bytes({"the": [1.0, 0.0], "cat": [0.0, 1.0], "café": [1.0, 1.0]}, encoding="latin-1"))
    with raises_with(p, re.escape(f"{p}:3:"), "not valid utf-8", "encoding='latin-1'"):
        load(p, ["the", "café"])
    t = load(p, ["the", "café"], encoding="latin-1", normalize=False)
    assert t.coverage is not None and t.coverage.missing == []
    torch.testing.assert_close(t.weight[1], torch.tensor([1.0, 1.0]))


def test_multibyte_encoding_is_decoded_across_lines(tmp_path: Path) -> None:
    p = tmp_path / "v.txt"
    p.write_bytes(text_bytes({"the": [1.0, 0.0], "ñu": [0.0, 1.0]}, encoding="utf-16"))
    t = load(p, ["ñu", "the"], encoding="utf-16", normalize=False)
    torch.testing.assert_close(t.weight, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


@pytest.mark.parametrize(("encoding", "error"), [("klingon", ValueError), (8, TypeError)])
def test_unknown_encoding(tmp_path: Path, encoding: Any, error: type[Exception]) -> None:
    p = tmp_path / "v.txt"
    p.write_bytes(text_bytes(ROWS))
    with pytest.raises(error, match="encoding"):
        load(p, encoding=encoding)


# ---------------------------------------------------------------------- text or binary
@pytest.mark.parametrize("name", ["v.vec", "v.txt", "vectors"])
def test_binary_file_without_bin_suffix_says_binary_true(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    p.write_bytes(binary_bytes(ROWS))
    with raises_with(p, re.escape(f"{p}:2:"), "binary=True"):
        load(p)
    reference = _write(tmp_path / "ref.bin", binary_bytes(ROWS))
    torch.testing.assert_close(load(p, binary=True).weight, load(reference).weight)


def test_binary_file_that_decodes_as_text_is_caught_by_its_nul_bytes(tmp_path: Path) -> None:
    p = tmp_path / "v.vec"
    p.write_bytes(binary_bytes({"the": [0.0, 0.0, 1e-45], "cat": [0.0, 0.0, 1e-45]}))
    with raises_with(p, "NUL", "binary=True"):
        load(p, encoding="latin-1")


@pytest.mark.parametrize("header", [True, False])
def test_text_file_read_as_binary_says_binary_false(tmp_path: Path, header: bool) -> None:
    p = tmp_path / "v.bin"
    p.write_bytes(text_bytes(ROWS, header=header))
    with raises_with(p, "binary=False"):
        load(p)


# ---------------------------------------------------------------------- headers
@pytest.mark.parametrize("header", ["4 -3\n", "-4 3\n", "4 0\n"])
def test_negative_header_binary(tmp_path: Path, header: str) -> None:
    p = tmp_path / "v.bin"
    p.write_bytes(binary_bytes(ROWS, header=header))
    with raises_with(p, re.escape(f"{p}:1:"), "the header says"):
        load(p)


@pytest.mark.parametrize("header", ["4 -3", "-4 3"])
def test_negative_header_text(tmp_path: Path, header: str) -> None:
    p = tmp_path / "v.txt"
    p.write_bytes(header.encode() + b"\n" + text_bytes(ROWS))
    with raises_with(p, re.escape(f"{p}:1:"), "the header says", "delete it"):
        load(p)


def test_huge_header_dim_binary_is_an_error_not_an_allocation(tmp_path: Path) -> None:
    p = tmp_path / "v.bin"
    p.write_bytes(binary_bytes(ROWS, header="4 1000000000000\n"))
    with raises_with(p, re.escape(f"{p}:1:"), "dim 1000000000000", "whole file has"):
        load(p)


def test_huge_header_dim_binary_gzip_meets_the_end_of_the_file(tmp_path: Path) -> None:
    p = tmp_path / "v.bin.gz"
    p.write_bytes(gzip.compress(binary_bytes(ROWS, header="4 1000000000000\n")))
    with raises_with(p, "entry 1 of 4", "truncated"):
        load(p)


def test_huge_header_dim_text(tmp_path: Path) -> None:
    p = tmp_path / "v.txt"
    p.write_bytes(b"4 1000000000000\n" + text_bytes(ROWS))
    with raises_with(p, re.escape(f"{p}:2:"), "header on line 1 says dim 1000000000000"):
        load(p)


def test_table_too_large_to_allocate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "v.txt"
    p.write_bytes(text_bytes(ROWS))
    real = np.zeros

    def no_memory(shape: Any, dtype: Any = float) -> np.ndarray:
        if dtype is np.float32:
            raise MemoryError
        return real(shape, dtype=dtype)

    monkeypatch.setattr(_vector_files.np, "zeros", no_memory)
    with raises_with(p, "GiB", "smaller vocabulary"):
        load(p)


# ---------------------------------------------------------------------- gzip
def test_truncated_gzip_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "v.txt.gz"
    whole = gzip.compress(text_bytes(many_rows(3000)))
    p.write_bytes(whole[: len(whole) // 2])
    with raises_with(p, r":\d+: the compressed data ends early", "truncated", "download it again"):
        load(p, ["w0", "w2999"])


def test_truncated_gzip_binary_names_the_entry(tmp_path: Path) -> None:
    p = tmp_path / "v.bin.gz"
    whole = gzip.compress(binary_bytes(many_rows(3000)))
    p.write_bytes(whole[: len(whole) // 2])
    with raises_with(p, r"entry \d+", "truncated"):
        load(p, ["w0", "w2999"])


def test_fake_gz_is_not_read_as_gzip(tmp_path: Path) -> None:
    p = tmp_path / "v.txt.gz"
    p.write_bytes(text_bytes(ROWS))
    with raises_with(p, "not gzip data", "rename it"):
        load(p)


def test_gzip_without_gz_suffix_is_decompressed(tmp_path: Path) -> None:
    p = tmp_path / "v.txt"
    p.write_bytes(gzip.compress(text_bytes(ROWS)))
    assert load(p).coverage is not None


@pytest.mark.parametrize(
    ("where", "value"),
    [(-8, None), (10, 0xFF)],  # the CRC in the trailer; the first deflate block's header (an invalid type)
    ids=["crc", "block-type"],
)
def test_damaged_gzip_says_damaged(tmp_path: Path, where: int, value: int | None) -> None:
    p = tmp_path / "v.txt.gz"
    data = bytearray(gzip.compress(text_bytes(many_rows(200))))
    data[where] = data[where] ^ 0xFF if value is None else value
    p.write_bytes(bytes(data))
    with raises_with(p, "gzip data is damaged", "download the file again"):
        load(p, ["w0", "w199"])


def test_damaged_gzip_in_the_middle_is_an_error_with_the_line(tmp_path: Path) -> None:
    # Flipped deflate bytes mostly decompress to garbage, caught by the row checks before the CRC.
    p = tmp_path / "v.txt.gz"
    data = bytearray(gzip.compress(text_bytes(many_rows(2000))))
    i = len(data) // 2
    data[i : i + 4] = bytes(b ^ 0xA5 for b in data[i : i + 4])
    p.write_bytes(bytes(data))
    with raises_with(p, r":\d+: "):
        load(p, ["w0", "w1999"])


def test_directory_is_not_a_vector_file(tmp_path: Path) -> None:
    with raises_with(tmp_path, "not a regular file"):
        load(tmp_path)


def test_path_of_wrong_type() -> None:
    with pytest.raises(TypeError, match="path must be a file path"):
        TargetEmbeddings.from_file(3, ["a"])  # type: ignore[arg-type]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------- row 9: BOM, zero vectors
@pytest.mark.parametrize("header", [False, True])
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_utf8_bom_is_stripped(tmp_path: Path, header: bool, encoding: str) -> None:
    p = tmp_path / "v.txt"
    p.write_bytes(b"\xef\xbb\xbf" + text_bytes(ROWS, header=header))
    t = load(p, ["the", "cat"], normalize=False, **({} if encoding == "utf-8" else {"encoding": encoding}))
    assert t.coverage is not None and t.coverage.missing == [] and t.coverage.file_rows == 4
    torch.testing.assert_close(t.weight[0], torch.tensor([1.0, 0.0, 0.0]))


def test_utf8_sig_and_utf16_boms(tmp_path: Path) -> None:
    p = tmp_path / "v.txt"
    for encoding in ("utf-8-sig", "utf-16"):
        p.write_bytes(text_bytes(ROWS, encoding=encoding))
        assert load(p, ["the"], encoding=encoding).coverage.missing == []  # type: ignore[union-attr]


def test_utf8_bom_before_a_binary_header(tmp_path: Path) -> None:
    p = tmp_path / "v.bin"
    p.write_bytes(b"\xef\xbb\xbf" + binary_bytes(ROWS))
    assert load(p, ["the"]).coverage.missing == []  # type: ignore[union-attr]


@pytest.mark.parametrize("binary", [False, True])
def test_zero_vectors_in_a_file_are_reported_and_warned(tmp_path: Path, binary: bool) -> None:
    rows = {**ROWS, "nil": [0.0, 0.0, 0.0], "void": [0.0, 0.0, 0.0]}
    p = _write(tmp_path / ("v.bin" if binary else "v.txt"), binary_bytes(rows) if binary else text_bytes(rows))
    with pytest.warns(UserWarning, match=r"2 rows of the target table are all zero: ids 1 \('nil'\), 3 \('void'\)"):
        t = load(p, ["the", "nil", "cat", "void", "dog"])
    assert t.coverage is not None
    assert t.coverage.zero == ["nil", "void"] and t.coverage.found == 4 and t.coverage.missing == ["dog"]
    assert "zero=['nil', 'void']" in repr(t.coverage)
    assert bool((t.weight[[1, 3]] == 0).all())


def test_zero_vector_of_a_special_word_is_reported_but_not_warned(tmp_path: Path) -> None:
    p = _write(tmp_path / "v.txt", text_bytes({**ROWS, "<pad>": [0.0, 0.0, 0.0]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = load(p, ["<pad>", "the"], special_ids=["<pad>"])
    assert t.coverage is not None and t.coverage.zero == ["<pad>"]
