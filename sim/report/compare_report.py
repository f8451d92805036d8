"""One report over several configs (``moska-sim compare``): a table row per config,
overlaid latency CDFs, throughput vs offered load, utilization and time breakdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sim.report import plots
from sim.report.common import emit_image, flatten, write_document
from sim.report.data import as_float, mean_utilization_by_kind, read_latencies
from sim.report.document import Document, Heading, Note, Paragraph, Table

OPTIONAL_COLUMNS = ("memory (GiB)", "cost ($/M tokens)")


def _pct(summary: Mapping[str, Any], metric: str, key: str) -> float | None:
    stats = summary.get(metric)
    return as_float(stats.get(key)) if isinstance(stats, Mapping) else None


def memory_gib(summary: Mapping[str, Any]) -> float | None:
    """summary['memory_gib'] as one number; a per-resource mapping is summed."""
    value = summary.get("memory_gib")
    if isinstance(value, Mapping):
        parts = [as_float(v) for v in flatten(value).values()]
        parts = [p for p in parts if p is not None]
        return sum(parts) if parts else None
    return as_float(value)


def compare_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per config: throughput, TTFT/TPOT p50/p99, mean utilization by kind,
    memory and cost. Optional columns that no run has are left out."""
    rows = []
    for run in runs:
        s = run.get("summary") or {}
        util = mean_utilization_by_kind(s.get("utilization"))
        rows.append(
            {
                "config": str(run.get("label", "?")),
                "system": s.get("system"),
                "throughput (tok/s)": as_float(s.get("throughput_tokens_per_s")),
                "TTFT p50 (ms)": _pct(s, "ttft_ms", "p50"),
                "TTFT p99 (ms)": _pct(s, "ttft_ms", "p99"),
                "TPOT p50 (ms)": _pct(s, "tpot_ms", "p50"),
                "TPOT p99 (ms)": _pct(s, "tpot_ms", "p99"),
                "util unique": util["unique"],
                "util shared": util["shared"],
                "util links": util["link"],
                "memory (GiB)": memory_gib(s),
                "cost ($/M tokens)": as_float(run.get("cost_per_million_tokens")),
            }
        )
    for col in OPTIONAL_COLUMNS:
        if all(r[col] is None for r in rows):
            for r in rows:
                del r[col]
    return rows


def saturation_rows(load_sweep: Mapping[str, Mapping[str, Sequence[Any]]]) -> list[dict]:
    """Per config: peak throughput over the sweep and the offered load where it saturates."""
    rows = []
    for label, sweep in load_sweep.items():
        offered = list(sweep.get("offered_rate_per_s") or [])
        thr = list(sweep.get("throughput_tokens_per_s") or [])
        vals = [v for v in (as_float(t) for t in thr) if v is not None]
        sat = plots.saturation_index(offered, thr)
        rows.append(
            {
                "config": label,
                "points": min(len(offered), len(thr)),
                "peak throughput (tok/s)": max(vals) if vals else None,
                "saturates at (req/s)": as_float(offered[sat])
                if sat is not None
                else "not in range",
            }
        )
    return rows


def _price_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        prices = run.get("price_per_hour")
        if isinstance(prices, Mapping) and prices:
            rows.append(
                {
                    "config": str(run.get("label", "?")),
                    **{f"{k} ($/h)": v for k, v in flatten(prices).items()},
                }
            )
    return rows


def write_compare_report(out_dir: Path, runs: list[dict], load_sweep: dict | None) -> list[Path]:
    """Write ``compare.md``, ``compare.html`` and their figures into ``out_dir``.

    Returns every path written (PNGs first).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = list(runs or [])
    written: list[Path] = []
    labels = [str(r.get("label", "?")) for r in runs]
    doc = Document(
        "Comparison: " + (", ".join(labels) if len(labels) <= 4 else f"{len(labels)} configs")
    )

    doc.add(Heading("Summary"))
    rows = compare_rows(runs)
    if rows:
        doc.add(Table(rows))
        missing = [c for c in OPTIONAL_COLUMNS if c not in rows[0]]
        if missing:
            doc.add(Note(f"Not available for any config: {', '.join(missing)}."))
        doc.add(
            Paragraph(
                "Utilization columns are the mean over resources of each kind (names starting "
                "with unique, shared, link); '—' where a config has none of that kind."
            )
        )
    else:
        doc.add(Note("No runs to compare."))
    prices = _price_rows(runs)
    if prices:
        doc.add(Table(prices, caption="Prices used for the cost column"))

    doc.add(Heading("Latency distributions"))
    latencies = [(label, read_latencies(r.get("requests_csv"))) for label, r in zip(labels, runs)]
    if any(lat for _l, lat in latencies):
        doc.add(
            emit_image(
                out_dir,
                "compare_latency_cdf.png",
                "TTFT, TPOT and end-to-end CDFs, one line per config (dots: p99)",
                plots.plot_latency_cdfs_overlay(latencies),
                written,
            )
        )
        empty = [label for label, lat in latencies if not lat]
        if empty:
            doc.add(Note(f"No per-request latencies for: {', '.join(empty)}."))
    else:
        doc.add(Note("No per-request latencies in any requests_csv; CDF plot skipped."))

    doc.add(Heading("Throughput vs offered load"))
    if isinstance(load_sweep, Mapping) and load_sweep:
        doc.add(Table(saturation_rows(load_sweep)))
        doc.add(
            emit_image(
                out_dir,
                "compare_load.png",
                "Throughput and p99 TPOT vs offered load; stars mark saturation",
                plots.plot_load_sweep(load_sweep),
                written,
            )
        )
    else:
        doc.add(Note("No load sweep given; plot skipped."))

    doc.add(Heading("Utilization"))
    util_rows = [
        (label, mean_utilization_by_kind((r.get("summary") or {}).get("utilization")))
        for label, r in zip(labels, runs)
    ]
    if any(v is not None for _l, u in util_rows for v in u.values()):
        doc.add(
            emit_image(
                out_dir,
                "compare_utilization.png",
                "Mean utilization of unique nodes, shared nodes and links per config",
                plots.plot_utilization_grouped(util_rows),
                written,
            )
        )
    else:
        doc.add(Note("No utilization in any summary; plot skipped."))

    doc.add(Heading("Where a decode step's time goes"))
    breakdowns = [
        (label, (r.get("summary") or {}).get("time_breakdown_ms")) for label, r in zip(labels, runs)
    ]
    breakdowns = [(label, b if isinstance(b, Mapping) else {}) for label, b in breakdowns]
    if any(b for _l, b in breakdowns):
        doc.add(
            emit_image(
                out_dir,
                "compare_time_breakdown.png",
                "Decode step time per phase, one stacked bar per config",
                plots.plot_time_breakdown_stacked(breakdowns),
                written,
            )
        )
    else:
        doc.add(Note("No time_breakdown_ms in any summary; plot skipped."))

    written.extend(write_document(out_dir, "compare", doc))
    return written
