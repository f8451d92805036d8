"""The report of ``moska-sim analyze``: the analytic model's sweeps as a figure and tables.

Infeasible points (the state does not fit in memory) arrive as 0, None or NaN; the
figure leaves gaps there and the tables say "infeasible" instead of a misleading 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sim.report.common import emit_image, write_document
from sim.report.data import as_float
from sim.report.document import Document, Heading, Note, Paragraph, Table
from sim.report.plots import render_analysis_png

INFEASIBLE = "infeasible"
_METRIC_HINTS = ("throughput", "latency", "_ms", "tokens_per_s")


def _is_metric_column(name: str) -> bool:
    """Columns where 0/None/NaN means "this point cannot run" rather than "no value"."""
    low = name.lower()
    return any(h in low for h in _METRIC_HINTS)


def mark_infeasible(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copy of ``rows`` with infeasible metric cells replaced by "infeasible".

    A metric cell is infeasible when it is None, NaN or non-positive, or when its row
    says ``feasible: False``.
    """
    out = []
    for row in rows:
        row_infeasible = row.get("feasible") is False
        new: dict[str, Any] = {}
        for key, value in row.items():
            if _is_metric_column(str(key)) and not isinstance(value, str):
                v = as_float(value)
                new[key] = INFEASIBLE if row_infeasible or v is None or v <= 0 else value
            else:
                new[key] = value
        out.append(new)
    return out


def _cell(values: Sequence[Any] | None, i: int) -> Any:
    """values[i] as a number, or "infeasible" when missing / 0 / NaN."""
    v = as_float(values[i]) if values is not None and i < len(values) else None
    return INFEASIBLE if v is None or v <= 0 else v


def sweep_rows(
    sweep: Mapping[str, Any], x_key: str, x_label: str, metrics: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """One row per sweep point, columns "<system> <metric label>" for each system."""
    xs = sweep.get(x_key) or []
    systems = sweep.get("systems") or {}
    rows = []
    for i, x in enumerate(xs):
        row: dict[str, Any] = {x_label: x}
        for system, series in systems.items():
            for key, label in metrics:
                if key in (series or {}):
                    row[f"{system} {label}"] = _cell(series[key], i)
        rows.append(row)
    return rows


def write_analysis_report(out_dir: Path, analysis: dict) -> list[Path]:
    """Write ``analysis.png``, ``analysis.md`` and ``analysis.html`` into ``out_dir``.

    Returns the paths written (figure first).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    analysis = analysis or {}
    written: list[Path] = []
    name = analysis.get("name") or "analysis"
    doc = Document(f"Analytic model: {name}")
    doc.add(
        Paragraph(
            "Closed-form steady state of each system (no queueing, no contention). "
            "Gaps in the figure and 'infeasible' in the tables mark points whose state does "
            "not fit in memory."
        )
    )
    doc.add(
        emit_image(
            out_dir,
            "analysis.png",
            "Throughput vs batch size and vs shared tokens, one line per system",
            render_analysis_png(analysis),
            written,
        )
    )

    doc.add(Heading("Summary table"))
    table = analysis.get("table")
    if isinstance(table, Sequence) and table:
        doc.add(Table(mark_infeasible(table)))
    else:
        doc.add(Note("The analysis has no table."))

    batch = analysis.get("batch_sweep")
    doc.add(Heading("Batch sweep"))
    if isinstance(batch, Mapping) and batch.get("batch"):
        doc.add(
            Table(
                sweep_rows(
                    batch,
                    "batch",
                    "batch",
                    (("throughput_tokens_per_s", "tok/s"), ("step_latency_ms", "step ms")),
                )
            )
        )
    else:
        doc.add(Note("No batch sweep in the analysis."))

    shared = analysis.get("shared_sweep")
    doc.add(Heading("Shared-context sweep"))
    if isinstance(shared, Mapping) and shared.get("shared_tokens"):
        doc.add(
            Table(
                sweep_rows(
                    shared,
                    "shared_tokens",
                    "shared tokens",
                    (("throughput_tokens_per_s", "tok/s"), ("step_latency_ms", "step ms")),
                )
            )
        )
    else:
        doc.add(Note("No shared-token sweep in the analysis."))

    written.extend(write_document(out_dir, "analysis", doc))
    return written
