"""A report section: opening sentences, warnings, tables, figures, notes — one comparison each.

A report is a header and a list of sections (:func:`~lightning_contloss.compare.report.document.write_report`),
so a second comparison (say, the same heads over a 400k-word output vocabulary) is one more
:class:`Section` built the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Figure", "Section", "Table"]


@dataclass(frozen=True)
class Table:
    """A markdown table with a caption line.

    Args:
        columns: the header cells.
        rows: one list of cells per line; a ``|`` in a cell is escaped.
        caption: a line above the table (empty: none).
        console: whether the table is also printed on the console (the detail tables are not).

    Example:
        >>> print(Table(["run", "acc@1"], [["a|b", "0.1"]]).markdown())
        | run | acc@1 |
        |---|---|
        | a\\|b | 0.1 |
    """

    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""
    console: bool = True

    def markdown(self) -> str:
        """The table (after its caption and a blank line, when it has one)."""
        lines = [f"{self.caption}", ""] if self.caption else []
        lines += ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        for row in self.rows:
            lines.append("| " + " | ".join(" ".join(str(c).split()).replace("|", "\\|") for c in row) + " |")
        return "\n".join(lines)


@dataclass(frozen=True)
class Figure:
    """A figure of a section: the file it is written to, its alt text, and the function that writes it.

    Args:
        name: file name inside the report's folder, e.g. ``"report.png"``.
        alt: the image's alt text in markdown.
        write: ``path -> None``, draws the figure into ``path``.
    """

    name: str
    alt: str
    write: Callable[[Path], None]


@dataclass(frozen=True)
class Section:
    """One comparison of a report.

    Args:
        title: the section's heading.
        sentences: the opening sentences (which head, and why), markdown.
        caveats: one line per warning; shown under the sentences and printed on the console.
        tables: the main table first, then the others.
        figures: written next to ``report.md`` and shown after the tables.
        blocks: further markdown after the figures (e.g. sample translations).
        notes: what the columns mean, at the end of the section.

    Example:
        >>> s = Section("PTB", ["Use **softmax**."], ["Too short to tell."], [Table(["run"], [["softmax"]])])
        >>> print(s.console())
        Use softmax.
        warning: Too short to tell.
        <BLANKLINE>
        | run |
        |---|
        | softmax |
    """

    title: str
    sentences: Sequence[str]
    caveats: Sequence[str] = ()
    tables: Sequence[Table] = ()
    figures: Sequence[Figure] = ()
    blocks: Sequence[str] = ()
    notes: Sequence[str] = field(default_factory=tuple)

    def markdown(self) -> str:
        """The section as markdown, from its heading to its notes."""
        parts = [f"## {self.title}", "", " ".join(self.sentences), ""]
        if self.caveats:
            parts += [*(f"- **Warning:** {line}" for line in self.caveats), ""]
        for table in self.tables:
            parts += [table.markdown(), ""]
        parts += [f"![{f.alt}]({f.name})\n" for f in self.figures]
        parts += [*(f"{block}\n" for block in self.blocks)]
        if self.notes:
            parts += [" ".join(self.notes), ""]
        return "\n".join(parts)

    def console(self) -> str:
        """What the console shows: the sentences, one line per warning, and the tables marked for it."""
        lines = [" ".join(self.sentences).replace("**", "")]
        lines += [f"warning: {line}" for line in self.caveats]
        for table in self.tables:
            if table.console:
                lines += ["", table.markdown()]
        return "\n".join(lines)
