"""What a run records and how it is summarised: per-request records, tokens over time,
the number in system (for Little's law), sampled queue lengths, and the statistics of
``summary.json``.

Recording is cheap and bounded: requests live in preallocated numpy columns; tokens are
appended once per step; queue lengths are sampled on a regular grid that halves itself
whenever it would exceed ``MAX_SAMPLES`` points (so any run has at most that many).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sim.cluster import Cluster

MAX_SAMPLES = 2000
PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0),
                                             ("p999", 99.9))


# The per-request row a unique node keeps while a request runs (RequestLog.rows):
# id, tokens generated so far (1 after prefill), output tokens, unique tokens, shared
# tokens, corpus, KV bytes reserved.
COLUMNS: tuple[str, ...] = ("id", "done", "out", "uctx", "sctx", "corpus", "kv")


class RequestLog:
    """One row per planned request, as numpy columns; -1 marks a time not reached."""

    PLANNED, WAITING, RUNNING, COMPLETED, REJECTED = 0, 1, 2, 3, 4
    STATUS_NAMES = ("planned", "waiting", "running", "completed", "rejected")

    def __init__(self, n: int) -> None:
        self.n = n
        neg = lambda: np.full(n, -1, dtype=np.int64)  # noqa: E731
        self.arrival_ns = neg()
        self.admit_ns = neg()
        self.first_ns = neg()
        self.done_ns = neg()
        self.node = np.full(n, -1, dtype=np.int32)
        self.unique_tokens = np.zeros(n, dtype=np.int64)
        self.output_tokens = np.zeros(n, dtype=np.int64)
        self.shared_tokens = np.zeros(n, dtype=np.int64)
        self.corpus = np.zeros(n, dtype=np.int64)
        self.kv_bytes = np.zeros(n, dtype=np.int64)
        self.generated = np.zeros(n, dtype=np.int64)
        self.status = np.zeros(n, dtype=np.int8)
        self.reject_reasons: dict[str, int] = {}
        self.rows = np.zeros((n, len(COLUMNS)), dtype=np.int64)

    def freeze_rows(self) -> None:
        """Build ``rows`` (the running-state row of each request) from the columns."""
        r = self.rows
        r[:, 0] = np.arange(self.n)
        r[:, 1] = 1
        r[:, 2] = self.output_tokens
        r[:, 3] = self.unique_tokens
        r[:, 4] = self.shared_tokens
        r[:, 5] = self.corpus
        r[:, 6] = self.kv_bytes

    def count(self, status: int) -> int:
        return int((self.status == status).sum())

    @property
    def arrived(self) -> int:
        return int((self.arrival_ns >= 0).sum())


class TokenLog:
    """(time, tokens made) per step, appended as the run goes."""

    def __init__(self) -> None:
        self.times = array("q")
        self.counts = array("q")
        self.total = 0

    def add(self, t: int, n: int) -> None:
        self.times.append(t)
        self.counts.append(n)
        self.total += n

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.frombuffer(self.times, dtype=np.int64).copy(),
                np.frombuffer(self.counts, dtype=np.int64).copy())


class Occupancy:
    """The number of requests in the system and its exact time integral (Little's L)."""

    def __init__(self) -> None:
        self.n = 0
        self.max_n = 0
        self.area = 0  # request-ns
        self.last_t = 0

    def change(self, t: int, delta: int) -> None:
        self.area += self.n * (t - self.last_t)
        self.last_t = t
        self.n += delta
        if self.n > self.max_n:
            self.max_n = self.n

    def area_until(self, t: int) -> int:
        return self.area + self.n * (t - self.last_t)


class Sampler:
    """Snapshots named gauges on a regular grid, at most ``max_samples`` points.

    The grid starts at ``dt_ns``; when it would exceed ``max_samples`` points every other
    sample is dropped and the step doubles, so the samples always sit on one grid.
    """

    def __init__(self, gauges: Callable[[], list[float]], names: list[str], dt_ns: int,
                 max_samples: int = MAX_SAMPLES) -> None:
        self.gauges = gauges
        self.names = names
        self.dt = max(1, int(dt_ns))
        self.max_samples = max_samples
        self.times: list[int] = []
        self.rows: list[list[float]] = []

    def sample(self, t: int) -> None:
        self.times.append(t)
        self.rows.append(self.gauges())
        if len(self.times) >= 2 * (self.max_samples // 2) + 1:
            self.times = self.times[::2]
            self.rows = self.rows[::2]
            self.dt *= 2

    def process(self, env):  # noqa: ANN001, ANN201 - a SimPy process
        while True:
            self.sample(env.now)
            nxt = (env.now // self.dt + 1) * self.dt  # the next point of the current grid
            yield env.timeout(nxt - env.now)


# -- statistics --------------------------------------------------------------------------
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
    arr = log.arrival_ns.astype(np.float64)
    first = np.where(log.first_ns >= 0, log.first_ns, np.nan).astype(np.float64)
    done = np.where(log.done_ns >= 0, log.done_ns, np.nan).astype(np.float64)
    ttft = (first - arr) / 1e6
    e2e = (done - arr) / 1e6
    gaps = log.output_tokens - 1
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


def summarize(cluster: Cluster, t_end: int, sampler: Sampler | None = None,
              sharing: dict | None = None) -> dict:
    """The run's ``summary.json`` content: deterministic (no wall-clock values)."""
    from sim.nodes.pricing import PHASES

    spec = cluster.spec
    log = cluster.log
    warm = min(spec.warmup_ns, t_end)
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
    times, counts = cluster.tokens.arrays()
    window = max(1, t_end - warm)
    tokens_in_window = int(counts[times >= warm].sum()) if times.size else 0
    admitted = measured & (log.admit_ns >= 0)
    wait_ms = (log.admit_ns[admitted] - log.arrival_ns[admitted]) / 1e6

    util: dict[str, float] = {}
    busy_s: dict[str, float] = {}
    for u in cluster.unique:
        b = u.busy_within(t_end)
        util[u.name] = b / t_end if t_end else 0.0
        busy_s[u.name] = b / 1e9
    for s in cluster.shared:
        b = s.busy_within(t_end)
        util[s.name] = b / t_end if t_end else 0.0
        busy_s[s.name] = b / 1e9
    fab = cluster.fabric
    bytes_out: dict[str, object] = {}
    if fab is not None:
        for name, b in zip(fab.link_names, fab.busy_within(t_end)):
            util[name] = b / t_end if t_end else 0.0
            busy_s[name] = b / 1e9
        bytes_out = {
            "sent": dict(zip(fab.hosts, fab.bytes_sent)),
            "received": dict(zip(fab.hosts, fab.bytes_received)),
            "total_sent": sum(fab.bytes_sent),
            "total_received": sum(fab.bytes_received),
            "in_flight_at_end": fab.in_flight_bytes(),
            "per_link": dict(zip(fab.link_names, fab.link_bytes)),
        }
    mem = cluster.memory
    peak_kv = max((u.max_kv_used for u in cluster.unique), default=0)
    breakdown = {p: float(v) / 1e6 for p, v in zip(PHASES, cluster.breakdown)}
    tok_total = max(1, cluster.tokens.total - int(log.first_ns.__ge__(0).sum()))
    per_token = {p: v / tok_total for p, v in breakdown.items() if p != "prefill"}
    shared_stats = {
        s.name: {
            "launches": s.launches,
            "messages": s.messages,
            "split_messages": s.split_messages,
            "mean_chunk_batch": (s.launch_pairs / s.launch_chunks) if s.launch_chunks else None,
            "mean_chunks_per_launch": (s.launch_chunks / s.launches) if s.launches else None,
            "max_chunk_batch": s.max_chunk_batch,
            "max_pending_pairs": s.max_pending_pairs,
            "prefill_jobs": s.prefill_jobs,
            "prefill_busy_s": s.prefill_busy_ns / 1e9,
        }
        for s in cluster.shared
    }
    max_chunk_batch = max((s.max_chunk_batch for s in cluster.shared), default=0)
    little = littles_law(log, cluster.occupancy.area_until(t_end), t_end)
    notes = []
    if cluster.unused_shared_nodes:
        why = (f"system {spec.system} runs every op on its unique-node replicas"
               if not spec.disaggregated else "the workload has no shared corpus")
        notes.append(f"{cluster.unused_shared_nodes} shared node(s) unused: {why}")
    if spec.tp > 1:
        notes.append(f"each unique<i> is one replica of {spec.tp} tensor-parallel nodes "
                     f"(cluster.unique.tp); {len(cluster.unique)} replicas")
    if warm:
        notes.append("warm-up: latency and throughput count requests arriving after "
                     "run.warmup_s; utilization, bytes and the breakdown cover the whole run")
    if spec.granularity == "step" and cluster.remote_shared:
        notes.append("granularity step: one unique/shared round trip per decode step, each "
                     "cost x layers (unique nodes' layers treated as aligned at shared nodes)")
    summary: dict = {
        "name": spec.name,
        "system": spec.system,
        "model": spec.model.name,
        "precision": spec.precision,
        "seed": spec.seed,
        "granularity": spec.granularity,
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
        "tokens_generated": int(cluster.tokens.total),
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
        "max_batch": spec.max_batch,
        "shared_nodes": shared_stats,
        "unique_nodes": {
            u.name: {"steps": u.steps, "prefill_groups": u.prefills,
                     "max_running": u.max_batch_seen,
                     "peak_kv_gib": u.max_kv_used / 2**30,
                     "requests": int((log.node == u.index).sum())}
            for u in cluster.unique
        },
        "memory_gib": (mem.weights_bytes + mem.resident_shared_bytes + peak_kv) / 2**30,
        "memory": {**mem.to_dict(), "peak_kv_gib": peak_kv / 2**30},
        "max_in_system": cluster.occupancy.max_n,
        "littles_law": little,
        "notes": notes,
    }
    if sharing:
        summary["sharing"] = sharing
    summary["invariants"] = check_invariants(summary, cluster)
    return _clean(summary)  # type: ignore[return-value]


def check_invariants(summary: dict, cluster: Cluster) -> dict[str, bool]:
    """Conservation checks every run must pass; a violation is a simulator bug."""
    arrived = summary["requests_arrived"]
    accounted = (summary["requests_completed"] + summary["requests_in_flight"]
                 + summary["requests_rejected"])
    util_ok = all(0.0 <= v <= 1.0 + 1e-12 for v in summary["utilization"].values())
    fab = cluster.fabric
    bytes_ok = True
    if fab is not None:
        bytes_ok = sum(fab.bytes_sent) == sum(fab.bytes_received) + fab.in_flight_bytes()
        if summary["requests_in_flight"] == 0:
            bytes_ok = bytes_ok and fab.in_flight_bytes() == 0
    batch_ok = summary["max_chunk_batch"] <= cluster.spec.max_batch
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


def timeseries(cluster: Cluster, sampler: Sampler, t_end: int) -> tuple[list[str], np.ndarray]:
    """(column names, rows) of ``timeseries.csv``: tokens/s per interval and the sampled
    gauges (running, queue lengths of nodes and links), on the sampler's grid (at most
    ``MAX_SAMPLES`` rows)."""
    grid = np.asarray(sampler.times, dtype=np.int64)
    gauges = np.asarray(sampler.rows, dtype=np.float64).reshape(len(grid), len(sampler.names))
    times, counts = cluster.tokens.arrays()
    thr = throughput_series(times, counts, grid)
    cols = [grid / 1e9, thr] + [gauges[:, i] for i in range(gauges.shape[1])]
    names = ["time_s", "throughput_tokens_per_s", *sampler.names]
    return names, np.column_stack(cols) if len(grid) else np.empty((0, len(names)))


__all__ = [
    "COLUMNS",
    "MAX_SAMPLES",
    "LatencyColumns",
    "Occupancy",
    "RequestLog",
    "Sampler",
    "TokenLog",
    "check_invariants",
    "latencies",
    "littles_law",
    "stats",
    "summarize",
    "throughput_series",
    "timeseries",
]
