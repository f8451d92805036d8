"""A run's statistics: percentiles, latencies, Little's law, throughput over time, and
``summary.json`` merged from every part's own ``stats()``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.engine.cluster import Cluster
from sim.engine.experiment import Experiment
from sim.engine.fabric import FabricStats
from sim.engine.nodes.pricing import PHASES
from sim.engine.records import RequestLog, Sampler, TokenLog

PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0),
                                             ("p999", 99.9))


def stats(values: np.ndarray) -> dict[str, float | None]:
    """mean, p50, p90, p99, p999 of ``values`` (None when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"count": 0, "mean": None, **{k: None for k, _ in PERCENTILES}}
    out: dict[str, float | None] = {"count": int(v.size), "mean": float(v.mean())}
    qs = np.percentile(v, [q for _, q in PERCENTILES])
    out.update({k: float(q) for (k, _), q in zip(PERCENTILES, qs)})
    return out


@dataclass(frozen=True)
class LatencyColumns:
    """Per-request latencies in ms (NaN where not defined)."""

    ttft_ms: np.ndarray
    tpot_ms: np.ndarray
    e2e_ms: np.ndarray


def latencies(log: RequestLog) -> LatencyColumns:
    """TTFT = first token - arrival; TPOT = mean gap after the first token; e2e."""
    return latency_columns(log.arrival_ns, log.first_ns, log.done_ns, log.output_tokens)


def latency_columns(arrival_ns: np.ndarray, first_ns: np.ndarray, done_ns: np.ndarray,
                    output_tokens: np.ndarray) -> LatencyColumns:
    """:func:`latencies` of any rows of the log's columns (elementwise: the value for a
    request does not depend on which other rows are passed)."""
    arr = arrival_ns.astype(np.float64)
    first = np.where(first_ns >= 0, first_ns, np.nan).astype(np.float64)
    done = np.where(done_ns >= 0, done_ns, np.nan).astype(np.float64)
    ttft = (first - arr) / 1e6
    e2e = (done - arr) / 1e6
    gaps = output_tokens - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(gaps > 0, (done - first) / np.maximum(gaps, 1) / 1e6, np.nan)
    return LatencyColumns(ttft, tpot, e2e)


def littles_law(log: RequestLog, area_request_ns: int, t_end: int) -> dict[str, float | None]:
    """L (time-averaged number in system, from the occupancy integral) against lambda*W
    (arrival rate times mean time in system, from the per-request records; requests still
    in the system count up to ``t_end``). On any sample path these are equal; the check
    holds the two bookkeepings together."""
    if t_end <= 0:
        return {"L": None, "lambda_per_s": None, "W_s": None, "lambda_W": None,
                "relative_error": None}
    admitted = (log.arrival_ns >= 0) & (log.status != RequestLog.REJECTED)
    end = np.where(log.done_ns >= 0, log.done_ns, t_end)[admitted]
    sojourn = (np.minimum(end, t_end) - log.arrival_ns[admitted]).astype(np.float64)
    n = int(admitted.sum())
    L = area_request_ns / t_end
    lam = n / (t_end / 1e9)
    W = float(sojourn.mean()) / 1e9 if n else 0.0
    lw = lam * W
    err = abs(L - lw) / lw if lw > 0 else (0.0 if L == 0 else math.inf)
    return {"L": L, "lambda_per_s": lam, "W_s": W, "lambda_W": lw, "relative_error": err}


def throughput_series(times: np.ndarray, counts: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Tokens/s in each interval (grid[i-1], grid[i]] (the first from 0)."""
    if grid.size == 0:
        return np.empty(0)
    edges = np.concatenate(([-1], grid))
    idx = np.searchsorted(edges, times, side="left") - 1
    ok = (idx >= 0) & (idx < grid.size)
    made = np.bincount(idx[ok], weights=counts[ok], minlength=grid.size)[: grid.size]
    widths = np.diff(np.concatenate(([0], grid))).astype(np.float64)
    widths[widths <= 0] = np.nan
    return made / (widths / 1e9)


def token_throughput(tokens: TokenLog, grid: np.ndarray) -> np.ndarray:
    """:func:`throughput_series` of a run's token log on ``grid`` (the sampler's times),
    from its reduced counts: the tokens made up to each grid time, differenced. The same
    numbers as from the per-step log (integer counts, exact in float64)."""
    grid = np.asarray(grid, dtype=np.int64)
    if grid.size == 0:
        return np.empty(0)
    made = np.diff(np.concatenate(([0], tokens.made_until_each(grid)))).astype(np.float64)
    widths = np.diff(np.concatenate(([0], grid))).astype(np.float64)
    widths[widths <= 0] = np.nan
    return made / (widths / 1e9)


# -- the run's summary -------------------------------------------------------------------
def _clean(x: object) -> object:
    """JSON-safe: numpy scalars to Python, non-finite floats to None, recursively."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def summarize(exp: Experiment, cluster: Cluster, t_end: int,
              sharing: dict | None = None) -> dict:
    """The run's ``summary.json`` content: deterministic (no wall-clock values). Every
    node and the fabric report their own part (``stats``); this merges them."""
    rec = cluster.records
    log = rec.log
    warm = min(exp.run.warmup_ns, t_end)
    arrived_mask = log.arrival_ns >= 0
    arrived = int(arrived_mask.sum())
    completed = log.count(log.COMPLETED)
    rejected = log.count(log.REJECTED)
    waiting = log.count(log.WAITING)
    running = log.count(log.RUNNING)
    in_flight = waiting + running
    lat = latencies(log)
    measured = arrived_mask & (log.arrival_ns >= warm)
    done = measured & (log.status == log.COMPLETED)
    first = measured & (log.first_ns >= 0)
    window = max(1, t_end - warm)
    tokens_in_window = rec.tokens.made_since(warm)
    admitted = measured & (log.admit_ns >= 0)
    wait_ms = (log.admit_ns[admitted] - log.arrival_ns[admitted]) / 1e6

    unique_stats = [u.stats(t_end) for u in cluster.unique]
    shared_stats = [s.stats(t_end) for s in cluster.shared]
    prefill_stats = [p.stats(t_end) for p in cluster.prefill]
    util: dict[str, float] = {}
    busy_s: dict[str, float] = {}
    for st in unique_stats + shared_stats + prefill_stats:
        util[st.name] = st.busy_ns / t_end if t_end else 0.0
        busy_s[st.name] = st.busy_ns / 1e9
    fab = cluster.fabric.stats(t_end) if cluster.fabric is not None else None
    bytes_out: dict[str, object] = {}
    if fab is not None:
        for name, b in fab.link_busy_ns.items():
            util[name] = b / t_end if t_end else 0.0
            busy_s[name] = b / 1e9
        bytes_out = fab.bytes
    mem = exp.memory
    peak_kv = max((u.max_kv_used for u in cluster.unique), default=0)
    breakdown = {p: float(v) / 1e6 for p, v in zip(PHASES, rec.breakdown)}
    tok_total = max(1, rec.tokens.total - int(log.first_ns.__ge__(0).sum()))
    per_token = {p: v / tok_total for p, v in breakdown.items() if p != "prefill"}
    max_chunk_batch = max((st.detail["max_chunk_batch"] for st in shared_stats), default=0)
    little = littles_law(log, rec.occupancy.area_until(t_end), t_end)
    notes = []
    tp = exp.cluster.unique.tp
    if cluster.unused_shared_nodes:
        why = (f"system {exp.system.name} runs every op on its unique-node replicas"
               if not exp.disaggregated else "the workload has no shared corpus")
        notes.append(f"{cluster.unused_shared_nodes} shared node(s) unused: {why}")
    if tp > 1:
        link = exp.cluster.unique.link
        notes.append(f"each unique<i> is one replica of {tp} tensor-parallel nodes "
                     f"(cluster.unique.tp); {len(cluster.unique)} replicas; their collectives "
                     f"run on cluster.unique.link ({link.bandwidth_GBps:g} GB/s, "
                     f"{link.latency_ns:g} ns)")
    if warm:
        notes.append("warm-up: latency and throughput count requests arriving after "
                     "run.warmup_s; utilization, bytes and the breakdown cover the whole run")
    if exp.run.granularity == "step" and cluster.remote_shared:
        notes.append("granularity step: one unique/shared round trip per decode step, each "
                     "cost x layers (unique nodes' layers treated as aligned at shared nodes)")
    summary: dict = {
        "name": exp.name,
        "system": exp.system.name,
        "model": exp.model.name,
        "precision": exp.precision,
        "seed": exp.seed,
        "granularity": exp.run.granularity,
        "sim_time_s": t_end / 1e9,
        "warmup_s": warm / 1e9,
        "requests_planned": log.n,
        "requests_arrived": arrived,
        "requests_completed": completed,
        "requests_in_flight": in_flight,
        "requests_waiting_at_end": waiting,
        "requests_running_at_end": running,
        "requests_rejected": rejected,
        "reject_reasons": dict(sorted(log.reject_reasons.items())),
        "tokens_generated": int(rec.tokens.total),
        "throughput_tokens_per_s": tokens_in_window / (window / 1e9),
        "throughput_requests_per_s": int(done.sum()) / (window / 1e9),
        "ttft_ms": stats(lat.ttft_ms[first]),
        "tpot_ms": stats(lat.tpot_ms[done]),
        "e2e_ms": stats(lat.e2e_ms[done]),
        "admission_wait_ms": stats(wait_ms),
        "utilization": util,
        "busy_s": busy_s,
        "bytes": bytes_out,
        "time_breakdown_ms": breakdown,
        "time_breakdown_per_token_ms": per_token,
        "max_chunk_batch": max_chunk_batch,
        "max_batch": exp.batching.max_batch,
        "shared_nodes": {st.name: st.detail for st in shared_stats},
        "unique_nodes": {st.name: st.detail for st in unique_stats},
        **({"prefill_nodes": {st.name: st.detail for st in prefill_stats}}
           if prefill_stats else {}),
        "memory_gib": (mem.weights_bytes + mem.resident_shared_bytes + peak_kv) / 2**30,
        "memory": {**mem.to_dict(), "peak_kv_gib": peak_kv / 2**30},
        "max_in_system": rec.occupancy.max_n,
        "littles_law": little,
        "notes": notes,
    }
    if sharing:
        summary["sharing"] = sharing
    if cluster.faults is not None:
        summary["requests_failed"] = log.count(log.FAILED)
        summary["fail_reasons"] = dict(sorted(log.fail_reasons.items()))
        summary["faults"] = fault_windows(cluster.faults.windows, log, lat, t_end)
        summary["fault_counters"] = {k: v for k, v in cluster.faults.stats().items()
                                     if k != "windows"}
    summary["invariants"] = check_invariants(summary, fab, exp.batching.max_batch)
    return _clean(summary)  # type: ignore[return-value]


def fault_windows(windows: list[dict], log: RequestLog, lat: LatencyColumns,
                  t_end: int) -> list[dict]:
    """Each fault's window with p99 TTFT and TPOT of the requests that arrived before it
    started, during it, and after it ended (``null`` where none did), and how many of
    each phase's requests completed and failed."""
    arr = log.arrival_ns
    arrived = arr >= 0
    out = []
    for w in windows:
        t0 = int(round(w["start_s"] * 1e9))
        t1 = t_end if w["end_s"] is None else int(round(w["end_s"] * 1e9))
        phases = {"before": arrived & (arr < t0), "during": arrived & (arr >= t0) & (arr < t1),
                  "after": arrived & (arr >= t1)}
        by: dict[str, dict] = {}
        for name, m in phases.items():
            done = m & (log.status == log.COMPLETED)
            first = m & (log.first_ns >= 0)
            by[name] = {"requests": int(m.sum()), "completed": int(done.sum()),
                        "failed": int((m & (log.status == log.FAILED)).sum()),
                        "ttft_p99_ms": stats(lat.ttft_ms[first])["p99"],
                        "tpot_p99_ms": stats(lat.tpot_ms[done])["p99"]}
        out.append({**w, **by})
    return out


def check_invariants(summary: dict, fabric: FabricStats | None,
                     max_batch: int) -> dict[str, bool]:
    """Conservation checks every run must pass; a violation is a simulator bug."""
    arrived = summary["requests_arrived"]
    accounted = (summary["requests_completed"] + summary.get("requests_failed", 0)
                 + summary["requests_in_flight"] + summary["requests_rejected"])
    util_ok = all(0.0 <= v <= 1.0 + 1e-12 for v in summary["utilization"].values())
    bytes_ok = True
    if fabric is not None:
        bytes_ok = fabric.conserved
        # every request done and none failed: nothing can still be on the wire (a failed
        # request's messages may be, e.g. to a node that failed as the run ended)
        if summary["requests_in_flight"] == 0 and not summary.get("requests_failed"):
            bytes_ok = bytes_ok and fabric.in_flight == 0
    batch_ok = summary["max_chunk_batch"] <= max_batch
    out = {
        "arrived_eq_completed_in_flight_rejected": arrived == accounted,
        "utilization_in_0_1": util_ok,
        "bytes_sent_eq_received": bytes_ok,
        "chunk_batch_le_max_batch": batch_ok,
    }
    bad = [k for k, ok in out.items() if not ok]
    if bad:
        raise RuntimeError(f"simulator invariant violated: {', '.join(bad)}")
    return out


def timeseries(tokens: TokenLog, sampler: Sampler, t_end: int) -> tuple[list[str], np.ndarray]:
    """(column names, rows) of ``timeseries.csv``: tokens/s per interval and the sampled
    gauges (running, queue lengths of nodes and links), on the sampler's grid (at most
    ``MAX_SAMPLES`` rows)."""
    grid = np.asarray(sampler.times, dtype=np.int64)
    gauges = np.asarray(sampler.rows, dtype=np.float64).reshape(len(grid), len(sampler.names))
    thr = token_throughput(tokens, grid)
    cols = [grid / 1e9, thr] + [gauges[:, i] for i in range(gauges.shape[1])]
    names = ["time_s", "throughput_tokens_per_s", *sampler.names]
    return names, np.column_stack(cols) if len(grid) else np.empty((0, len(names)))


__all__ = [
    "PERCENTILES",
    "LatencyColumns",
    "check_invariants",
    "fault_windows",
    "latencies",
    "latency_columns",
    "littles_law",
    "stats",
    "summarize",
    "throughput_series",
    "timeseries",
    "token_throughput",
]
