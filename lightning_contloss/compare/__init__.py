"""``compare``: the same LM body trained with softmax and continuous heads for equal wall-clock budgets.

Each run trains in a fresh process (:mod:`~lightning_contloss.compare.worker`), so its peak
memory is its own; the runner collects the rows and writes ``report.md`` and ``report.png``.
"""

from lightning_contloss.compare.report import format_table, write_report
from lightning_contloss.compare.runner import CompareError, build_parser, compare_main, run_compare
from lightning_contloss.compare.spec import DEFAULT_RUNS, DataOptions, RunSpec, parse_run

# The Lightning-heavy parts (budget callback, datamodules, worker) are imported from their
# modules, so that ``compare``'s parent process starts fast and fails fast on bad input.
__all__ = [
    "DEFAULT_RUNS",
    "CompareError",
    "DataOptions",
    "RunSpec",
    "build_parser",
    "compare_main",
    "format_table",
    "parse_run",
    "run_compare",
    "write_report",
]
