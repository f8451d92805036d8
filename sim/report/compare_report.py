"""One report over several configs (``moska-sim compare``): a table row per config,
overlaid latency CDFs, throughput vs offered load, utilization and time breakdown."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sim.report import plots
from sim.report.common import emit_image, flatten, write_document
from sim.report.data import as_float, mean_utilization_by_kind, read_latencies
from sim.report.document import Bullets, Document, Heading, Links, Note, Paragraph, Table
from sim.report.memory import memory_rows, shared_kv_fit
from sim.report.run_report import fault_rows
from sim.report.verdict import compare_verdict

OPTIONAL_COLUMNS = ("HBM free, unique (GiB)", "cost ($/M tokens)")


def _pct(summary: Mapping[str, Any], metric: str, key: str) -> float | None:
    stats = summary.get(metric)
    return as_float(stats.get(key)) if isinstance(stats, Mapping) else None


def unique_hbm_free_gib(summary: Mapping[str, Any]) -> float | None:
    """HBM left on the busiest unique replica at its peak (capacity - weights - resident
    shared KV - peak request KV), from ``summary['memory']``; None without it. The used
    figure alone hid what matters: the same 31.7 GiB is a third of an H100 and an eighth
    of the paper's unique node."""
    rows = memory_rows(summary)
    return rows[0]["headroom"] if rows else None


def compare_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per config: throughput, TTFT/TPOT p50/p99, mean utilization by kind, HBM
    left on a unique replica at its peak, and cost. Optional columns that no run has are
    left out; the report's "HBM per node class" section has the full memory picture."""
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
                "HBM free, unique (GiB)": unique_hbm_free_gib(s),
                "cost ($/M tokens)": as_float(run.get("cost_per_million_tokens")),
            }
        )
    for col in OPTIONAL_COLUMNS:
        if all(r[col] is None for r in rows):
            for r in rows:
                del r[col]
    return rows


LOAD_AXES = {"concurrency": "concurrency (closed loop)", "rate": "requests/s"}


def _load(value: Any) -> float | int | None:
    """A sweep load as a number; whole numbers (concurrencies) stay whole: 8, not 8.00."""
    v = as_float(value)
    return int(v) if v is not None and v.is_integer() else v


def saturation_rows(load_sweep: Mapping[str, Mapping[str, Sequence[Any]]]) -> list[dict]:
    """Per config: what the load axis is (requests/s, or concurrency for a closed loop:
    the 'saturates at' number is in that unit), peak throughput and the load it was
    reached at, the first load past saturation (:func:`sim.report.plots.saturation_index`),
    how many sweep points lie past it, and the main run's load when the sweep records it
    (``main_run_x``)."""
    rows = []
    for label, sweep in load_sweep.items():
        offered = list(sweep.get("offered_rate_per_s") or [])
        thr = list(sweep.get("throughput_tokens_per_s") or [])
        n = min(len(offered), len(thr))
        pairs = [(as_float(offered[i]), as_float(thr[i])) for i in range(n)]
        valid = [(x, t) for x, t in pairs if x is not None and t is not None]
        sat = plots.saturation_index(offered, thr)
        peak = max(valid, key=lambda xt: (xt[1], -xt[0])) if valid else None
        row: dict[str, Any] = {
            "config": label,
            "load axis": LOAD_AXES.get(str(sweep.get("axis", "rate")), str(sweep.get("axis"))),
            "points": n,
            "peak throughput (tok/s)": peak[1] if peak else None,
            "at load": _load(peak[0]) if peak else None,
            "saturates at": _load(offered[sat]) if sat is not None else "not in range",
            "past saturation": f"{n - sat} of {n} points" if sat is not None else "none",
        }
        missing = n - len(valid)
        if missing:
            row["past saturation"] += f"; {missing} without result"
        if "main_run_x" in sweep:
            row["main run at"] = _load(sweep.get("main_run_x"))
        rows.append(row)
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


def decode_step_breakdown(summary: Mapping[str, Any]) -> Mapping[str, Any]:
    """ms per decode token by phase: ``time_breakdown_per_token_ms`` when the summary has
    it (``time_breakdown_ms`` is the run's total over every request, which grows with the
    run's length and so cannot be compared across runs), else ``time_breakdown_ms``."""
    for key in ("time_breakdown_per_token_ms", "time_breakdown_ms"):
        value = summary.get(key)
        if isinstance(value, Mapping) and value:
            return value
    return {}


def run_folder(out_dir: Path, run: Mapping[str, Any]) -> Path | None:
    """The folder holding one run's own results: ``run['out_dir']`` if given, else the
    folder of its requests.csv, else ``<out_dir>/runs/<label>`` (where ``moska-sim
    compare`` puts every variant, failed ones included) when it exists."""
    if run.get("out_dir"):
        return Path(run["out_dir"])
    csv = run.get("requests_csv")
    if csv:
        return Path(csv).parent
    guess = Path(out_dir) / "runs" / str(run.get("label", "?"))
    return guess if guess.is_dir() else None


def failure_reason(out_dir: Path, run: Mapping[str, Any]) -> str | None:
    """Why a run has no results: ``run['error']``, else the ``error.txt`` in its folder
    (its first line: the message; a Python traceback's last line); None for a run with
    results."""
    if run.get("error"):
        return str(run["error"]).strip().splitlines()[0]
    if run.get("requests_csv") or (run.get("summary") or {}).get("throughput_tokens_per_s"):
        return None
    folder = run_folder(out_dir, run)
    err = folder / "error.txt" if folder else None
    if err is not None and err.is_file():
        lines = [ln.strip() for ln in err.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not lines:
            return "failed (empty error.txt)"
        return lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return "no results"


def report_links(out_dir: Path, runs: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(label, relative path) of each run's report.html (or error.txt for a failed run)
    that exists inside ``out_dir``; paths outside it are left out so the report never
    points out of its folder."""
    out_dir = Path(out_dir).resolve()
    links = []
    for run in runs:
        folder = run_folder(out_dir, run)
        if folder is None:
            continue
        for name, suffix in (("report.html", ""), ("error.txt", " (failed: error.txt)")):
            target = (folder / name).resolve()
            if target.is_file() and target.is_relative_to(out_dir):
                links.append((f"{run.get('label', '?')}{suffix}",
                              os.path.relpath(target, out_dir).replace(os.sep, "/")))
                break
    return links


def compare_memory_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per config and node class: HBM capacity, used at peak, headroom (GiB)."""
    rows = []
    for run in runs:
        summary = run.get("summary") or {}
        for r in memory_rows(summary):
            rows.append({"config": str(run.get("label", "?")), "node class": r["node class"],
                         "nodes": r["nodes"], "HBM (GiB)": r["HBM (GiB)"],
                         "shared KV held": r["shared KV held"],
                         "used at peak": r["used at peak"], "headroom": r["headroom"],
                         "used": r["used"]})
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

    reasons = {str(r.get("label", "?")): failure_reason(out_dir, r) for r in runs}
    verdict = compare_verdict(runs, reasons)
    doc.add(Heading("Verdict"), Bullets(list(verdict.lines), style="verdict"))

    doc.add(Heading("Summary"))
    rows = compare_rows(runs)
    for row in rows:
        label = row["config"]
        row["load"] = verdict.states.get(label, "failed" if reasons.get(label) else "—")
        if any(reasons.values()):
            row["failure"] = reasons.get(label) or ""
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
        doc.add(Paragraph(
            "load: past saturation (arrivals outpace completions, admission wait dominates, "
            "or a closed loop past its knee: latencies there are mostly waiting in queues), "
            "at capacity (the busiest resource at least 90% busy, or half of request time "
            "waiting, with a stable queue) or below saturation; each run's report says why."))
    else:
        doc.add(Note("No runs to compare."))
    links = report_links(out_dir, runs)
    if links:
        doc.add(Links(links, caption="Each run's own report (verdict, plots, HBM, config):"))
    prices = _price_rows(runs)
    if prices:
        doc.add(Table(prices, caption="Prices used for the cost column"))
    mem = compare_memory_rows(runs)
    if mem:
        doc.add(Heading("HBM per node class"))
        doc.add(Table(mem, caption="GiB; unique: one replica at the busiest replica's peak; "
                                   "shared: one node's slice of the shared KV"))
        fits = [(str(r.get("label", "?")), shared_kv_fit(r.get("summary") or {})) for r in runs]
        for label, text in fits:
            if text:
                doc.add(Paragraph(f"{label}: {text}"))

    frows = []
    for label, r in zip(labels, runs):
        summary = r.get("summary") or {}
        for row in fault_rows(summary):
            frows.append({"config": label, "requests failed": summary.get("requests_failed"),
                          **row})
    if frows:
        doc.add(Heading("Faults"))
        doc.add(Table(frows, caption="p99 latency (ms) of the requests that arrived before, "
                                     "during and after each fault; failed: requests of each "
                                     "phase that ended failed"))

    # the figures show the runs with results; failed ones are named in the verdict and table
    shown = [(label, r) for label, r in zip(labels, runs) if not reasons.get(label)]
    doc.add(Heading("Latency distributions"))
    latencies = [(label, read_latencies(r.get("requests_csv"))) for label, r in shown]
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
        for label, r in shown
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
    breakdowns = [(label, decode_step_breakdown(r.get("summary") or {})) for label, r in shown]
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
