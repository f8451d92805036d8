"""The sweeps of ``moska-sim analyze``: every registered system at the headline
concurrency, over a concurrency sweep and over shared-context sizes (with MoSKA's ratio
over each other system), as tables and ``analysis.{json,png,md}``."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from sim.analytic.steady_state import Scenario, SystemPoint, best_point, evaluate, systems
from workloads.systems import get_system

DEFAULT_BATCHES = [2**i for i in range(12)]
DEFAULT_SHARED = [2**20 * m for m in (1, 2, 4, 8, 16)]


def tokens_label(n: int) -> str:
    for unit, size in (("Mi", 2**20), ("Ki", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def analyze(sc: Scenario, batch: int, batches: list[int], shared: list[int]) -> dict[str, Any]:
    """Every system at the headline point, over the concurrency sweep and the shared sweep."""
    SYSTEMS = systems()
    headline = [evaluate(sc.with_system(s), batch) for s in SYSTEMS]
    batch_sweep = {s: [evaluate(sc.with_system(s), b) for b in batches] for s in SYSTEMS}
    shared_rows = []
    shared_sweep: dict[str, list[SystemPoint]] = {s: [] for s in SYSTEMS}
    for tokens in shared:
        best = {s: best_point(replace(sc, system=s, shared_tokens=tokens), batches)
                for s in SYSTEMS}
        for s in SYSTEMS:
            shared_sweep[s].append(best[s])
        row: dict[str, Any] = {"shared_tokens": tokens_label(tokens)}
        for s in SYSTEMS:
            p = best[s]
            row[f"{s} tok/s"] = p.throughput_tokens_per_s if p.feasible else None
            row[f"{s} @conc"] = p.concurrency if p.feasible else None
        # each disaggregated system's ratio over each co-located one (moska/vanilla, ...)
        for d in (x for x in SYSTEMS if get_system(x).disaggregated):
            mo = best[d].throughput_tokens_per_s
            for s in (x for x in SYSTEMS if not get_system(x).disaggregated):
                base = best[s].throughput_tokens_per_s
                row[f"{d}/{s}"] = (mo / base) if best[s].feasible and base > 0 else None
        shared_rows.append(row)
    return {
        "name": sc.name,
        "scenario": {
            "model": sc.model.name, "precision": sc.precision,
            "unique": f"{sc.unique_nodes} x {sc.unique_chip.name}",
            "unique_tp": sc.tp, "node_link_GBps": sc.node_link.bandwidth_GBps,
            "node_link_latency_ns": sc.node_link.latency_ns,
            "hbm_usable_fraction": {"unique": sc.unique_hbm_fraction,
                                    "shared": sc.shared_hbm_fraction},
            "shared": f"{sc.shared_nodes} x {sc.shared_chip.name}",
            "link_GBps": sc.link.bandwidth_GBps, "link_latency_ns": sc.link.latency_ns,
            "unique_tokens": sc.unique_tokens, "shared_tokens": sc.shared_tokens,
            "chunk_tokens": sc.chunk_tokens, "keep_fraction": sc.keep_fraction,
        },
        "headline_concurrency": batch,
        "headline": [p.to_dict() for p in headline],
        "table": [_headline_row(p) for p in headline],
        "shared_table": shared_rows,
        "batch_sweep": {
            "batch": batches,
            "systems": {s: {
                "throughput_tokens_per_s": [p.throughput_tokens_per_s if p.feasible else None
                                            for p in pts],
                "step_latency_ms": [p.step_latency_ms if p.feasible else None for p in pts],
            } for s, pts in batch_sweep.items()},
        },
        "shared_sweep": {
            "shared_tokens": shared,
            "systems": {s: {
                "throughput_tokens_per_s": [p.throughput_tokens_per_s if p.feasible else None
                                            for p in pts],
                "best_concurrency": [p.concurrency if p.feasible else None for p in pts],
            } for s, pts in shared_sweep.items()},
        },
    }


def _headline_row(p: SystemPoint) -> dict[str, Any]:
    return {
        "system": p.system,
        "feasible": "yes" if p.feasible else f"no: {p.reason}",
        "nodes": p.nodes,
        "replicas x tp": f"{p.replicas} x {p.tp}",
        "step ms": p.step_latency_ms if p.feasible else None,
        "tok/s": p.throughput_tokens_per_s if p.feasible else None,
        "tok/s pipelined": p.pipelined_throughput_tokens_per_s if p.feasible else None,
        "max conc": p.max_concurrency,
        "dominant op": p.bound,
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def text_table(rows: list[dict[str, Any]]) -> str:
    """Plain aligned columns (no colour codes), for terminals and logs."""
    if not rows:
        return ""
    cols = list(rows[0])
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) if i else v.ljust(w)
                                  for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, cells)])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def write_outputs(out: Path, result: dict[str, Any]) -> list[Path]:
    from sim.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "analysis.json"]
    atomic_write_text(written[0], json.dumps(result, indent=2, sort_keys=True) + "\n")
    try:
        from sim.report import plot_analysis
    except ImportError:
        plot_analysis = None
    if plot_analysis is not None:
        png = out / "analysis.png"
        plot_analysis(result, png)
        written.append(png)
    md = [f"# Analysis: {result['name']}", "",
          "Closed-form steady state (sim/analytic.py); see docs/paper.md for the derivation.", "",
          f"## Every system at {result['headline_concurrency']} concurrent requests", "",
          markdown_table(result["table"]), "",
          "## Best throughput per shared-context size (over the concurrency sweep)", "",
          markdown_table(result["shared_table"]), ""]
    if len(written) > 1:
        md += ["![throughput vs concurrency and shared tokens](analysis.png)", ""]
    written.append(out / "analysis.md")
    atomic_write_text(written[-1], "\n".join(md))
    return written


__all__ = ["DEFAULT_BATCHES", "DEFAULT_SHARED", "analyze", "markdown_table", "text_table",
           "tokens_label", "write_outputs"]
