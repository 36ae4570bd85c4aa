"""``compare``: the same LM body trained with softmax and continuous heads for equal wall-clock budgets.

Each run trains in a fresh process (:mod:`~lightning_contloss.compare.worker`), so its peak
memory is its own; the runner collects the rows and writes ``report.md`` (sections that open with
which head to use and why, and warn when a run is too short to tell) and ``report.png``.
"""

from lightning_contloss.compare.report import Section, lm_section, translation_section, write_report
from lightning_contloss.compare.runner import CompareError, build_parser, compare_main, run_compare
from lightning_contloss.compare.spec import DEFAULT_RUNS, DataOptions, RunSpec, parse_run

# The Lightning-heavy parts (budget callback, datamodules, worker) are imported from their
# modules, so that ``compare``'s parent process starts fast and fails fast on bad input.
__all__ = [
    "DEFAULT_RUNS",
    "CompareError",
    "DataOptions",
    "RunSpec",
    "Section",
    "build_parser",
    "compare_main",
    "lm_section",
    "parse_run",
    "run_compare",
    "translation_section",
    "write_report",
]
