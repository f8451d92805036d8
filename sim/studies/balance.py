"""How evenly the shared nodes are loaded, per config: the compare table shows the mean
utilization of each node kind, which hides hot chunks piling work onto a few nodes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _shared_utilization(summary: Mapping[str, Any]) -> list[float]:
    util = summary.get("utilization") or {}
    return [float(v) for k, v in util.items()
            if str(k).startswith("shared") and isinstance(v, (int, float))]


def balance_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per config with shared nodes: min / max shared-node utilization, max over mean, and
    the chunk batches (queries per chunk per launch) the shared nodes saw."""
    rows = []
    for run in runs:
        summary = run.get("summary") or {}
        util = _shared_utilization(summary)
        nodes = summary.get("shared_nodes") or {}
        if not util:
            continue
        mean = sum(util) / len(util)
        batches = [v.get("mean_chunk_batch") for v in nodes.values()
                   if isinstance(v, Mapping) and v.get("mean_chunk_batch") is not None]
        peaks = [v.get("max_chunk_batch") for v in nodes.values()
                 if isinstance(v, Mapping) and v.get("max_chunk_batch") is not None]
        rows.append({
            "config": str(run.get("label", "?")),
            "shared nodes": len(util),
            "util min": min(util),
            "util max": max(util),
            "max / mean": max(util) / mean if mean > 0 else None,
            "mean chunk batch": sum(batches) / len(batches) if batches else None,
            "max chunk batch": max(peaks) if peaks else None,
        })
    return rows


__all__ = ["balance_rows"]
