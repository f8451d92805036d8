"""HBM per node class: used, capacity, headroom, and whether (and where) the shared KV fits.

Why: the question an architect asks of memory is not "how many GiB" but "does the shared
corpus fit, on which nodes, and how much room is left for per-request KV". This module
reads only ``summary["memory"]`` (the engine's memory plan plus ``peak_kv_gib``),
``summary["unique_nodes"]`` / ``summary["shared_nodes"]`` (node counts) and, to tell "no
corpus" from "each request carries its own copy", the shared tokens in ``summary["sharing"]``
or the resolved config; it imports no model code and never branches on a system's name
(where the shared KV lives is read off the memory figures, so a new system is described
correctly without a change here).

Keys read from ``summary["memory"]`` (GiB): ``replica_hbm_gib`` (a unique replica's usable
HBM, tp x hbm_usable_fraction x chip), ``weights_gib``, ``resident_shared_gib`` (MoSKA: the chunk means; prefix_cache /
shared_gemm: the whole shared KV on every replica), ``kv_capacity_gib`` (left for
per-request KV), ``shared_kv_per_shared_node_gib`` (MoSKA), ``peak_kv_gib`` (busiest
replica) and, when the summary has it, ``shared_node_hbm_gib`` (one shared node's HBM).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sim.report.data import as_float
from sim.report.tables import format_number

UNIQUE_CLASS = "unique nodes (per replica)"
SHARED_CLASS = "shared nodes (each)"


def _mem(summary: Mapping[str, Any]) -> dict[str, float | None]:
    raw = summary.get("memory")
    return {str(k): as_float(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}


def _count(summary: Mapping[str, Any], key: str) -> int | None:
    value = summary.get(key)
    return len(value) if isinstance(value, Mapping) else None


def _sum(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _headroom(capacity: float | None, used: float | None) -> tuple[float | None, float | None]:
    """(headroom GiB, used fraction) where both numbers are known."""
    if capacity is None or used is None or capacity <= 0:
        return None, None
    return capacity - used, used / capacity


def memory_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per node class with HBM (GiB): capacity, weights, shared KV held, peak
    per-request KV, used at peak, headroom and used share. [] without ``memory``."""
    mem = _mem(summary)
    if not mem:
        return []
    rows = []
    cap = mem.get("replica_hbm_gib")
    weights = mem.get("weights_gib")
    resident = mem.get("resident_shared_gib")
    peak = mem.get("peak_kv_gib")
    used = _sum(weights, resident, peak)
    head, frac = _headroom(cap, used)
    rows.append({
        "node class": UNIQUE_CLASS,
        "nodes": _count(summary, "unique_nodes"),
        "HBM (GiB)": cap,
        "weights": weights,
        "shared KV held": resident,
        "peak request KV": peak,
        "used at peak": used,
        "headroom": head,
        "used": f"{frac:.0%}" if frac is not None else "—",
    })
    per_shared = mem.get("shared_kv_per_shared_node_gib")
    if per_shared:
        scap = mem.get("shared_node_hbm_gib")
        shead, sfrac = _headroom(scap, per_shared)
        rows.append({
            "node class": SHARED_CLASS,
            "nodes": _count(summary, "shared_nodes"),
            "HBM (GiB)": scap,
            "weights": 0.0,
            "shared KV held": per_shared,
            "peak request KV": 0.0,
            "used at peak": per_shared,
            "headroom": shead,
            "used": f"{sfrac:.0%}" if sfrac is not None else "—",
        })
    return rows


def _gib(v: float | None) -> str:
    return "—" if v is None else f"{format_number(v)} GiB"


def shared_kv_fit(summary: Mapping[str, Any]) -> str | None:
    """One sentence: where the shared KV lives and whether it fits (None without memory)."""
    mem = _mem(summary)
    if not mem:
        return None
    resident = mem.get("resident_shared_gib")
    kv_cap = mem.get("kv_capacity_gib")
    peak = mem.get("peak_kv_gib")
    per_shared = mem.get("shared_kv_per_shared_node_gib")
    if per_shared:  # disaggregated: the corpus lives on the shared nodes
        n = _count(summary, "shared_nodes")
        scap = mem.get("shared_node_hbm_gib")
        where = f"each of the {n} shared nodes" if n else "each shared node"
        text = f"The shared KV fits: {_gib(per_shared)} on {where}"
        if scap:
            text += (f", {per_shared / scap:.0%} of its {_gib(scap)} HBM "
                     f"({_gib(scap - per_shared)} free)")
        else:
            text += " (a shared node's HBM capacity is not in summary.json)"
        text += (f"; the unique replicas keep only {_gib(resident)} of it (chunk summaries) "
                 f"and per-request KV (peak {_gib(peak)} of {_gib(kv_cap)} available).")
        return text
    if resident:  # one resident copy per unique replica
        return (f"The shared KV ({_gib(resident)}) is resident on every unique replica and "
                f"fits, leaving {_gib(kv_cap)} for per-request KV (peak used {_gib(peak)}).")
    if _has_shared_tokens(summary):
        return (f"No resident shared KV: each request holds its own copy of its shared tokens "
                f"in its KV reservation (peak {_gib(peak)} of {_gib(kv_cap)} available on the "
                "busiest replica), which is what limits how many requests run at once.")
    return "No shared corpus: HBM holds the weights and per-request KV only."


def _has_shared_tokens(summary: Mapping[str, Any]) -> bool:
    """Whether requests read a shared corpus: the measured sharing, else the config."""
    sharing = summary.get("sharing")
    if isinstance(sharing, Mapping):
        for key in ("shared_prompt_tokens", "mean_shared_tokens", "corpus_tokens_total"):
            v = as_float(sharing.get(key))
            if v is not None:
                return v > 0
    config = summary.get("config")
    shared = (config.get("workload") or {}).get("shared") if isinstance(config, Mapping) else None
    tokens = as_float(shared.get("tokens")) if isinstance(shared, Mapping) else None
    return bool(tokens)


MEMORY_CAPTION = ("HBM per node class, GiB (the usable part, hbm_usable_fraction of each "
                  "chip's). Unique: one replica (tp chips), the busiest "
                  "replica's peak; used at peak = weights + shared KV held + peak request KV. "
                  "Shared: one node's slice of the shared KV.")

__all__ = ["MEMORY_CAPTION", "memory_rows", "shared_kv_fit"]
