"""The report of a comparison: sections that say which head to use and why, warn when a run is too short, then tabulate.

- :mod:`.standing`: where each run stands (:class:`Comparison`, :class:`Entry`, :class:`Score`)
  and its ratios to softmax, marked when they mean nothing;
- :mod:`.noise`: when a difference is noise (binomial standard error on the validation tokens);
- :mod:`.sentences` and :mod:`.caveats`: the opening sentences and the one-line warnings;
- :mod:`.section` and :mod:`.document`: a section (sentences, warnings, tables, figures) and
  ``report.md`` made of sections;
- :mod:`.lm` (+ :mod:`.details`, :mod:`.plot`) and :mod:`.translation`: the two tasks' sections.
"""

from lightning_contloss.compare.report.caveats import caveats
from lightning_contloss.compare.report.document import format_failures, write_report
from lightning_contloss.compare.report.lm import MAIN_COLUMNS, acc_at, lm_comparison, lm_section
from lightning_contloss.compare.report.plot import write_plot
from lightning_contloss.compare.report.section import Figure, Section, Table
from lightning_contloss.compare.report.sentences import opening
from lightning_contloss.compare.report.standing import Comparison, Entry, Score
from lightning_contloss.compare.report.translation import translation_section

__all__ = [
    "MAIN_COLUMNS",
    "Comparison",
    "Entry",
    "Figure",
    "Score",
    "Section",
    "Table",
    "acc_at",
    "caveats",
    "format_failures",
    "lm_comparison",
    "lm_section",
    "opening",
    "translation_section",
    "write_plot",
    "write_report",
]
