"""The report of one simulation run: ``report.md``, ``report.html`` and their figures.

Every section depends on some summary key or CSV; when one is missing the section says
so in a note rather than failing, because a report of a partial run is still useful.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sim.report import plots
from sim.report.common import (
    config_block,
    emit_image,
    format_bytes,
    key_value_rows,
    write_document,
)
from sim.report.data import (
    LATENCY_COLUMNS,
    as_float,
    read_latencies,
    read_timeseries,
    resource_kind,
)
from sim.report.document import Bullets, Document, Heading, Note, Paragraph, Table
from sim.report.memory import MEMORY_CAPTION, memory_rows, shared_kv_fit
from sim.report.plots import KIND_LABELS, METRIC_TITLES, natural_key, order_phases
from sim.report.tables import format_value
from sim.report.verdict import run_verdict

PERCENTILE_KEYS = (
    ("mean", "mean"),
    ("p50", "p50"),
    ("p90", "p90"),
    ("p99", "p99"),
    ("p999", "p99.9"),
)
OVERVIEW_KEYS = (
    ("system", "system"),
    ("model", "model"),
    ("precision", "precision"),
    ("granularity", "granularity"),
    ("seed", "seed"),
    ("requests_arrived", "requests arrived"),
    ("requests_completed", "requests completed"),
    ("requests_in_flight", "requests in flight at end"),
    ("requests_rejected", "requests rejected"),
    ("requests_failed", "requests failed (faults)"),
    ("sim_time_s", "simulated time (s)"),
    ("warmup_s", "warm-up excluded (s)"),
    ("tokens_generated", "tokens generated"),
    ("throughput_tokens_per_s", "throughput (tokens/s)"),
    ("throughput_requests_per_s", "throughput (requests/s)"),
    ("memory_gib", "HBM used, busiest unique replica (GiB)"),
)


def overview_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The headline numbers of a run as metric/value rows (keys it lacks are left out)."""
    rows = []
    for key, label in OVERVIEW_KEYS:
        if key in summary and not isinstance(summary[key], Mapping):
            rows.append({"metric": label, "value": summary[key]})
    return rows


def latency_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """TTFT/TPOT/e2e percentiles (ms) as one row per metric."""
    rows = []
    for metric in LATENCY_COLUMNS:
        stats = summary.get(metric)
        if not isinstance(stats, Mapping):
            continue
        row: dict[str, Any] = {"metric": f"{METRIC_TITLES[metric]} (ms)"}
        for key, label in PERCENTILE_KEYS:
            row[label] = as_float(stats.get(key))
        rows.append(row)
    return rows


def fault_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per fault (``summary["faults"]``): its window, and p99 TTFT/TPOT (ms) of
    the requests that arrived before, during and after it."""
    faults = summary.get("faults")
    if not isinstance(faults, list):
        return []
    rows = []
    for f in faults:
        if not isinstance(f, Mapping):
            continue
        end = f.get("end_s")
        what = f"{f.get('kind')} {f.get('target')}"
        if f.get("fraction") is not None:
            what += f" to {as_float(f.get('fraction')):g} of its bandwidth"
        row: dict[str, Any] = {"fault": what, "from (s)": as_float(f.get("start_s")),
                               "until (s)": "never" if end is None else as_float(end)}
        for phase in ("before", "during", "after"):
            part = f.get(phase) if isinstance(f.get(phase), Mapping) else {}
            row[f"TTFT p99 {phase}"] = as_float(part.get("ttft_p99_ms"))
            row[f"TPOT p99 {phase}"] = as_float(part.get("tpot_p99_ms"))
            row[f"failed {phase}"] = part.get("failed")
        rows.append(row)
    return rows


def fault_windows(summary: Mapping[str, Any]) -> list[tuple[float, float | None, str]]:
    """(start s, end s or None, label) of each fault, for the time-series markers."""
    out = []
    for f in summary.get("faults") or []:
        if isinstance(f, Mapping) and as_float(f.get("start_s")) is not None:
            end = f.get("end_s")
            out.append((float(f["start_s"]), None if end is None else float(end),
                        f"{f.get('kind')} {f.get('target')}"))
    return out


def utilization_rows(utilization: Mapping[str, Any]) -> tuple[list[dict], list[dict]]:
    """(per-kind mean/min/max rows, per-resource rows) of a utilization mapping."""
    rank = {"unique": 0, "shared": 1, "link": 2, "other": 3}  # same order as the figure
    per_resource = []
    for name in sorted(
        utilization, key=lambda n: (rank[resource_kind(str(n))], natural_key(str(n)))
    ):
        v = as_float(utilization[name])
        per_resource.append(
            {"resource": str(name), "kind": resource_kind(str(name)), "utilization": v}
        )
    by_kind: dict[str, list[float]] = {}
    for row in per_resource:
        if row["utilization"] is not None:
            by_kind.setdefault(row["kind"], []).append(row["utilization"])
    per_kind = [
        {
            "kind": KIND_LABELS[k],
            "resources": len(v),
            "mean": float(np.mean(v)),
            "min": min(v),
            "max": max(v),
        }
        for k in ("unique", "shared", "link", "other")
        if (v := by_kind.get(k))
    ]
    return per_kind, per_resource


BREAKDOWN_CAPTION = (
    "per token: a request's wait for one decode token, split by phase (its own prefill "
    "excluded; prefill_stall: waiting while its node prefills newly admitted requests); "
    "request-ms: the same summed over every request and token of the run, plus prefill")


def breakdown_rows(breakdown: Mapping[str, Any],
                   per_token: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Phase / per-token ms / summed request-ms / share rows in the standard phase order."""
    vals = {str(k): as_float(v) for k, v in breakdown.items()}
    tok = {str(k): as_float(v) for k, v in (per_token or {}).items()}
    total = sum(v for v in vals.values() if v is not None and v > 0)
    tok_total = sum(v for v in tok.values() if v is not None and v > 0)
    rows = []
    for phase in order_phases(list(vals)):
        v = vals[phase]
        share = f"{v / total:.1%}" if v is not None and v > 0 and total > 0 else "—"
        row = {"phase": phase}
        if per_token is not None:
            row["per token (ms)"] = tok.get(phase)
        row |= {"request-ms": v, "share": share}
        rows.append(row)
    if rows:
        row = {"phase": "total"}
        if per_token is not None:
            row["per token (ms)"] = tok_total
        rows.append(row | {"request-ms": total, "share": "100.0%" if total else "—"})
    return rows


def _bytes_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "quantity": r["key"],
            "bytes": r["value"],
            "size": format_bytes(r["value"]) if as_float(r["value"]) is not None else "—",
        }
        for r in key_value_rows(data)
    ]


SHARING_SCALARS = (
    ("source", "source"),
    ("definition", "definition"),
    ("requests", "requests"),
    ("requests_sharing", "requests reading a shared corpus"),
    ("prompt_tokens", "prompt tokens, all requests"),
    ("shared_prompt_tokens", "of which shared"),
    ("shared_fraction", "shared fraction of prompt tokens"),
    ("corpora", "corpora"),
    ("corpus_tokens_total", "corpus tokens, all corpora"),
    ("distinct_shared_tokens", "distinct shared tokens"),
    ("requests_per_corpus_top", "requests of the most-read corpora"),
    ("top_corpora_request_share", "request share of the top corpora"),
    ("mean_shared_tokens", "mean shared tokens per request"),
    ("mean_unique_tokens", "mean unique tokens per request"),
)
SHARING_DISTRIBUTIONS = (
    ("corpus_tokens", "corpus size (tokens)"),
    ("requests_per_corpus", "requests per corpus"),
)
_INTEGER_STATS = {"requests", "requests_sharing", "prompt_tokens", "shared_prompt_tokens",
                  "corpora", "corpus_tokens_total", "distinct_shared_tokens",
                  "mean_shared_tokens", "mean_unique_tokens"}


def _plural_corpora(text: str) -> str:
    """'1 synthetic corpora' -> '1 synthetic corpus' in a definition sentence."""
    return re.sub(r"\b1 (synthetic |shared )?corpora\b", r"1 \1corpus", text)


def _count_value(v: Any) -> Any:
    """A count or token percentile as a whole number, so a rounded p50 can never print
    above the max (1048576.0 would show as 1,050,000 beside a max of 1,048,576)."""
    f = as_float(v)
    return round(f) if f is not None else v


def sharing_tables(sharing: Mapping[str, Any]) -> tuple[list[dict], list[dict]]:
    """(statistic/value rows, distribution rows with p50/p90/max) of ``summary['sharing']``.

    Counts are whole numbers and the shared fraction a percentage; keys this function does
    not know are listed after the known ones, as they are."""
    scalars: list[dict[str, Any]] = []
    used: set[str] = set()
    for key, label in SHARING_SCALARS:
        if key not in sharing:
            continue
        used.add(key)
        v = sharing[key]
        if key == "definition" and isinstance(v, str):
            v = _plural_corpora(v)
        elif key in ("shared_fraction", "top_corpora_request_share") and as_float(v) is not None:
            v = f"{as_float(v):.1%}"
        elif key in _INTEGER_STATS:
            v = _count_value(v)
        elif isinstance(v, list | tuple):
            v = ", ".join(format_value(_count_value(x)) for x in v[:10]) + (
                " …" if len(v) > 10 else "")
        scalars.append({"statistic": label, "value": v})
    dists = []
    for stem, label in SHARING_DISTRIBUTIONS:
        keys = {q: f"{stem}_{q}" for q in ("p50", "p90", "max")}
        if not any(k in sharing for k in keys.values()):
            continue
        used.update(keys.values())
        dists.append({"quantity": label,
                      **{q: _count_value(sharing.get(k)) for q, k in keys.items()}})
    for key, v in sharing.items():
        if key in used:
            continue
        if isinstance(v, list | tuple):
            v = ", ".join(format_value(x) for x in v[:10]) + (" …" if len(v) > 10 else "")
        elif isinstance(v, Mapping):
            v = ", ".join(f"{k}: {format_value(x)}" for k, x in v.items())
        scalars.append({"statistic": str(key), "value": v})
    return scalars, dists


def write_run_report(
    out_dir: Path, summary: dict, requests_csv: Path, timeseries_csv: Path
) -> list[Path]:
    """Write plots, ``report.md`` and ``report.html`` for one run into ``out_dir``.

    Returns every path written (PNGs first, then the Markdown and the HTML).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summary or {}
    written: list[Path] = []
    name = summary.get("name") or "run"
    doc = Document(f"Run report: {name}")

    # Verdict: the answer first; the sections below hold the evidence
    verdict = run_verdict(summary, requests_csv)
    doc.add(Heading("Verdict"), Bullets([verdict.headline, *verdict.lines], style="verdict"))

    # Overview
    doc.add(Heading("Overview"))
    overview = overview_rows(summary)
    doc.add(Table(overview) if overview else Note("The summary has none of the headline keys."))
    notes = summary.get("notes")
    if isinstance(notes, str):
        notes = [notes]
    for note in notes if isinstance(notes, list) else []:
        doc.add(Note(str(note)))
    if (out_dir / "timeline.json").exists():
        doc.add(Note("timeline.json is a Chrome trace of this run: open it in "
                     "https://ui.perfetto.dev (tracks: docs/timeline.md)."))

    # Latency
    doc.add(Heading("Latency"))
    lat_rows = latency_rows(summary)
    if lat_rows:
        doc.add(Table(lat_rows))
    else:
        doc.add(Note("No ttft_ms / tpot_ms / e2e_ms in the summary; percentile table skipped."))
    latencies = read_latencies(requests_csv)
    if latencies:
        doc.add(
            emit_image(
                out_dir,
                "latency_cdf.png",
                "Latency CDFs (TTFT, TPOT, end-to-end) with p50 and p99 marked",
                plots.plot_latency_cdfs(latencies, summary),
                written,
            )
        )
    else:
        source = Path(requests_csv).name if requests_csv else "requests.csv"
        doc.add(Note(f"No per-request latencies in {source}; CDF plot skipped."))

    # Faults
    frows = fault_rows(summary)
    if frows:
        doc.add(Heading("Faults"))
        doc.add(Table(frows, caption="p99 latency (ms) of the requests that arrived before, "
                                     "during and after each fault (shaded on the time series)"))
        reasons = summary.get("fail_reasons")
        if isinstance(reasons, Mapping) and reasons:
            doc.add(Table([{"reason": k, "requests failed": v} for k, v in reasons.items()],
                          caption="Why requests failed"))

    # Time series
    doc.add(Heading("Throughput and queues over time"))
    ts = read_timeseries(timeseries_csv)
    if plots.has_timeseries_content(ts):
        doc.add(
            emit_image(
                out_dir,
                "timeseries.png",
                "Throughput, queue lengths and running requests over simulated time",
                plots.plot_timeseries(ts, as_float(summary.get("throughput_tokens_per_s")),
                                      faults=fault_windows(summary)),
                written,
            )
        )
    else:
        doc.add(Note("No throughput, queue.* or running series in the time series; plot skipped."))

    # Utilization
    doc.add(Heading("Utilization"))
    util = summary.get("utilization")
    if isinstance(util, Mapping) and util:
        per_kind, per_resource = utilization_rows(util)
        doc.add(
            emit_image(
                out_dir,
                "utilization.png",
                "Utilization per resource",
                plots.plot_utilization(util),
                written,
            )
        )
        if per_kind:
            doc.add(Table(per_kind, caption="By kind (fraction of simulated time busy)"))
        doc.add(Table(per_resource, caption="Per resource"))
    else:
        doc.add(Note("No utilization in the summary; section skipped."))

    # Time breakdown
    doc.add(Heading("Where a decode step's time goes"))
    breakdown = summary.get("time_breakdown_ms")
    if isinstance(breakdown, Mapping) and breakdown:
        per_token = summary.get("time_breakdown_per_token_ms")
        doc.add(Table(breakdown_rows(breakdown, per_token if isinstance(per_token, Mapping)
                                     else None), caption=BREAKDOWN_CAPTION))
        doc.add(
            emit_image(
                out_dir,
                "time_breakdown.png",
                "Decode step time breakdown",
                plots.plot_time_breakdown(per_token, "ms per decode token, mean over tokens")
                if isinstance(per_token, Mapping) and per_token
                else plots.plot_time_breakdown(breakdown),
                written,
            )
        )
    else:
        doc.add(Note("No time_breakdown_ms in the summary; section skipped."))

    # HBM per node class
    doc.add(Heading("HBM per node class"))
    mem_rows = memory_rows(summary)
    if mem_rows:
        doc.add(Table(mem_rows, caption=MEMORY_CAPTION))
        fit = shared_kv_fit(summary)
        if fit:
            doc.add(Paragraph(fit))
    else:
        doc.add(Note("No memory in the summary; section skipped."))

    # Bytes, sharing, config
    doc.add(Heading("Bytes moved and stored"))
    data = summary.get("bytes")
    if isinstance(data, Mapping) and data:
        doc.add(Table(_bytes_rows(data)))
    else:
        doc.add(Note("No bytes in the summary; section skipped."))
    sharing = summary.get("sharing")
    if isinstance(sharing, Mapping) and sharing:
        scalars, dists = sharing_tables(sharing)
        doc.add(Heading("Sharing"), Table(scalars))
        if dists:
            doc.add(Table(dists, caption="Across corpora"))
    doc.add(Heading("Resolved config"))
    config = summary.get("config")
    doc.add(config_block(config) if config else Note("No config in the summary."))

    written.extend(write_document(out_dir, "report", doc))
    return written
