"""Reports a person opens: tables, plots, Markdown and self-contained HTML.

Public entry points:
- :func:`write_run_report` for one run (``report.md``, ``report.html``, PNGs),
- :func:`write_analysis_report` / :func:`plot_analysis` for ``moska-sim analyze``,
- :func:`write_compare_report` for ``moska-sim compare``,
- :func:`verdict_lines` / :func:`compare_verdict_lines`: the verdict at the top of those
  reports as plain text lines, for the CLI to print (:mod:`sim.report.verdict`),
- table helpers (:func:`markdown_table`, :func:`html_table`, :func:`format_table_text`)
  shared with the CLI's terminal output.
All files are written atomically and identical inputs give identical bytes.
"""

from sim.report.analysis_report import write_analysis_report
from sim.report.compare_report import compare_rows, write_compare_report
from sim.report.plots import plot_analysis
from sim.report.run_report import latency_rows, overview_rows, write_run_report
from sim.report.tables import (
    format_number,
    format_table_text,
    format_value,
    html_table,
    markdown_table,
)
from sim.report.verdict import compare_verdict_lines, verdict_lines

__all__ = [
    "compare_rows",
    "compare_verdict_lines",
    "format_number",
    "format_table_text",
    "format_value",
    "html_table",
    "latency_rows",
    "markdown_table",
    "overview_rows",
    "plot_analysis",
    "verdict_lines",
    "write_analysis_report",
    "write_compare_report",
    "write_run_report",
]
