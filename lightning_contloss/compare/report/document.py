"""``report.md``: a header, one section per comparison, the failed runs and the notes; the figures beside it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightning_contloss.compare.report.section import Section

__all__ = ["format_failures", "write_report"]


def format_failures(failures: Sequence[tuple[str, str]]) -> str:
    """The runs that failed, one table line each with the reason; ``""`` when none did.

    Args:
        failures: ``(label, reason)`` of each failed run.

    Example:
        >>> print(format_failures([("mlp · vmf · ppmi", "ValueError: dim must be in 1..vocab_size-1")]))
        | failed run | why |
        |---|---|
        | mlp · vmf · ppmi | ValueError: dim must be in 1..vocab_size-1 |
    """
    if not failures:
        return ""
    lines = ["| failed run | why |", "|---|---|"]
    # A reason is one table cell: no line breaks, and its pipes escaped.
    for label, reason in failures:
        cell = " ".join(reason.split()).replace("|", "\\|")
        lines.append(f"| {label} | {cell} |")
    return "\n".join(lines)


def write_report(
    sections: Sequence[Section],
    out_dir: str | Path,
    header: str,
    notes: Sequence[str] = (),
    *,
    title: str = "lightning-contloss compare",
    failures: Sequence[tuple[str, str]] = (),
    finished: int = 0,
) -> str:
    """Write ``report.md`` and every section's figures under ``out_dir``; returns the markdown.

    Args:
        sections: the comparisons, in order.
        out_dir: the run folder (created if missing).
        header: what was compared (corpus, budget, command, machine).
        notes: extra lines at the end (e.g. the total wall-clock, an interruption).
        title: the report's heading.
        failures: ``(label, reason)`` of each run that failed.
        finished: how many runs finished (to say "N of M runs failed").

    Example:
        >>> import tempfile
        >>> "No run finished" in write_report([], tempfile.mkdtemp(), "test")
        True
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", "", header, ""]
    for section in sections:
        for figure in section.figures:
            figure.write(out / figure.name)
        parts.append(section.markdown())
    if not sections:
        parts += ["No run finished.", ""]
    if failures:
        parts += [f"**{len(failures)} of {finished + len(failures)} runs failed** and are missing above:", ""]
        parts += [format_failures(failures), ""]
    parts += [f"- {n}" for n in notes]
    text = "\n".join(parts).rstrip("\n") + "\n"
    (out / "report.md").write_text(text, encoding="utf-8")
    return text
