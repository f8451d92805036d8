"""Tables: a list of dict rows rendered to Markdown, HTML and plain terminal text.

One formatter (:func:`format_value`) is shared by every renderer so a number reads the
same in the terminal, the Markdown report and the HTML report: floats to 3 significant
digits with thousands separators, integers exactly, missing values as an em dash.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

MISSING = "—"  # shown for None / NaN cells and cells a row does not have
# Words that stand in for a number: they do not stop a column from being right-aligned.
PLACEHOLDERS = frozenset({MISSING, "infeasible", "n/a", "not in range", ""})

Row = Mapping[str, Any]


def format_number(value: float, sig: int = 3) -> str:
    """``value`` to ``sig`` significant digits with thousands separators (1,230; 0.0123).

    Very small or very large magnitudes switch to scientific notation so a column never
    shows a run of meaningless zeros.
    """
    v = float(value)
    if math.isnan(v):
        return MISSING
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v == 0:
        return "0"
    r = float(f"{v:.{sig}g}")  # round first: 999.6 -> 1000 changes the exponent
    exp = math.floor(math.log10(abs(r)))
    if exp < -3 or exp >= 15:
        return f"{v:.{sig - 1}e}"
    decimals = max(0, sig - 1 - exp)
    return f"{r:,.{decimals}f}"


def format_value(value: Any) -> str:
    """Format one cell: ints exactly, floats via :func:`format_number`, None as a dash."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Integral):
        return f"{int(value):,}"
    if isinstance(value, Real):
        return format_number(float(value))
    return str(value)


def is_numeric(value: Any) -> bool:
    """True for numbers (not bools); used to right-align numeric columns."""
    return isinstance(value, Real) and not isinstance(value, bool)


def table_columns(rows: Sequence[Row], columns: Sequence[str] | None = None) -> list[str]:
    """The columns to show: ``columns`` if given, else every key in first-seen order."""
    if columns is not None:
        return list(columns)
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(str(key), None)
    return list(seen)


def _numeric_columns(rows: Sequence[Row], columns: Sequence[str]) -> set[str]:
    """Columns whose values are all numbers or placeholders, with at least one number."""
    out: set[str] = set()
    for col in columns:
        vals = [r.get(col) for r in rows]
        vals = [v for v in vals if v is not None and not (isinstance(v, str) and v in PLACEHOLDERS)]
        if vals and all(is_numeric(v) for v in vals):
            out.add(col)
    return out


def _cells(rows: Sequence[Row], columns: Sequence[str]) -> list[list[str]]:
    return [[format_value(row.get(col)) for col in columns] for row in rows]


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Row], columns: Sequence[str] | None = None) -> str:
    """GitHub-flavoured Markdown table; numeric columns right-aligned. Empty rows -> ''."""
    if not rows:
        return ""
    cols = table_columns(rows, columns)
    numeric = _numeric_columns(rows, cols)
    cells = _cells(rows, cols)
    header = "| " + " | ".join(_md_escape(c) for c in cols) + " |"
    rule = "|" + "|".join("---:" if c in numeric else ":---" for c in cols) + "|"
    body = ["| " + " | ".join(_md_escape(c) for c in line) + " |" for line in cells]
    return "\n".join([header, rule, *body])


def escape_html(text: str) -> str:
    """HTML-escape ``text``; also defuses ``://`` so user text (a URL in a config) can
    never read as an external reference in a report that must open offline."""
    return html.escape(text, quote=True).replace("://", "&#58;//")


def html_table(
    rows: Sequence[Row], columns: Sequence[str] | None = None, caption: str | None = None
) -> str:
    """An HTML ``<table>``; numeric cells get ``class="num"`` (right-aligned by the CSS)."""
    if not rows:
        return ""
    cols = table_columns(rows, columns)
    numeric = _numeric_columns(rows, cols)
    cells = _cells(rows, cols)
    out = ['<div class="table-wrap"><table>']
    if caption:
        out.append(f"<caption>{escape_html(caption)}</caption>")

    def attr(col: str) -> str:
        return ' class="num"' if col in numeric else ""

    out.append(
        "<thead><tr>"
        + "".join(f"<th{attr(c)}>{escape_html(c)}</th>" for c in cols)
        + "</tr></thead>"
    )
    out.append("<tbody>")
    for line in cells:
        tds = "".join(f"<td{attr(c)}>{escape_html(v)}</td>" for c, v in zip(cols, line))
        out.append(f"<tr>{tds}</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _wrap_header(name: str, width: int) -> list[str]:
    """``name`` on lines of at most ``width`` characters, split at spaces only (a word
    longer than ``width`` keeps its own line)."""
    lines: list[str] = []
    for word in name.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def format_table_text(rows: Sequence[Row], columns: Sequence[str] | None = None,
                      max_width: int | None = None) -> str:
    """Plain aligned columns for a terminal (no ANSI codes, so safe to pipe or log).

    With ``max_width`` (e.g. the terminal's width), a table wider than that gets its column
    names wrapped onto several header lines, each column as narrow as its widest cell or
    the longest word of its name; cells are never cut, so a table may stay wider when its
    data is."""
    if not rows:
        return "(no rows)"
    cols = table_columns(rows, columns)
    numeric = _numeric_columns(rows, cols)
    cells = _cells(rows, cols)
    data_widths = [max((len(line[i]) for line in cells), default=0) for i in range(len(cols))]
    widths = [max(len(c), w) for c, w in zip(cols, data_widths)]
    headers = [[c] for c in cols]
    if max_width is not None and sum(widths) + 2 * (len(cols) - 1) > max_width:
        for i, c in enumerate(cols):
            longest_word = max((len(w) for w in c.split()), default=0)
            widths[i] = max(data_widths[i], longest_word)
            headers[i] = _wrap_header(c, widths[i])
            widths[i] = max(widths[i], *(len(h) for h in headers[i]))
    depth = max(len(h) for h in headers)

    def fmt(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if c in numeric else v.ljust(w) for c, v, w in zip(cols, values, widths)
        ]
        return "  ".join(parts).rstrip()

    # header lines bottom-aligned, so every name ends just above the rule
    header_lines = [fmt([(([""] * (depth - len(h))) + h)[k] for h in headers])
                    for k in range(depth)]
    lines = [*header_lines, "  ".join("-" * w for w in widths)]
    lines.extend(fmt(line) for line in cells)
    return "\n".join(lines)
