"""Arrival processes: when requests arrive and how big they are.

Poisson and gamma (bursty, given coefficient of variation) interarrivals, closed loop
(the engine issues a new request whenever one completes, keeping ``concurrency`` in
flight), and two real traces: Azure LLM inference CSV and Mooncake JSONL, each with an
optional ``time_scale`` that multiplies the gaps between arrivals (0.5 = twice as fast).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from workloads.distributions import TokenDistribution
from workloads.errors import WorkloadError
from workloads.request import RequestSpec
from workloads.sharing import SharedCorpusSpec, SharingStats, load_mooncake_rows, split_mooncake

KINDS = ("poisson", "gamma", "closed_loop", "trace")
FORMATS = ("azure", "mooncake")
CLOSED_LOOP_DEFAULT_REQUESTS = 100_000  # when only a duration bounds a closed-loop run
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


@dataclass(frozen=True)
class ArrivalPlan:
    """The requests of a run (sorted by arrival, ids 0..n-1) and how to drive them."""

    requests: list[RequestSpec]
    closed_loop_concurrency: int | None = None
    sharing: SharingStats | None = None


def _positive(name: str, value: Any) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise WorkloadError(f"workload.arrivals.{name}: expected a number > 0, got {value!r}")
    return float(value)


def interarrival_gaps(kind: str, rate_per_s: float, cv: float | None, rng: np.random.Generator,
                      n: int) -> np.ndarray:
    """``n`` gaps in seconds: exponential (Poisson) or gamma with mean 1/rate and the given cv."""
    mean = 1.0 / rate_per_s
    if kind == "poisson":
        return rng.exponential(mean, size=n)
    shape = 1.0 / (cv * cv)
    return rng.gamma(shape, mean / shape, size=n)


def _renewal_times(kind: str, rate: float, cv: float | None, rng: np.random.Generator,
                   max_requests: int | None, duration_ns: int | None) -> np.ndarray:
    """Arrival times (ns) until the count or the duration bound is reached."""
    if max_requests is not None:
        t = np.cumsum(interarrival_gaps(kind, rate, cv, rng, max_requests)) * 1e9
    else:
        parts, total, end = [], 0.0, duration_ns / 1e9
        block = max(1024, int(rate * end * 1.1) + 16)
        while total <= end:
            gaps = interarrival_gaps(kind, rate, cv, rng, block)
            parts.append(total + np.cumsum(gaps))
            total = parts[-1][-1]
        t = np.concatenate(parts) * 1e9
    times = np.floor(t).astype(np.int64)
    if duration_ns is not None:
        times = times[times < duration_ns]
    return times


def _synthetic(times: np.ndarray, unique: TokenDistribution, output: TokenDistribution,
               rng_sizes: np.random.Generator) -> list[RequestSpec]:
    n = len(times)
    u, o = unique.sample(rng_sizes, n), output.sample(rng_sizes, n)
    return [RequestSpec(i, int(times[i]), int(u[i]), int(o[i])) for i in range(n)]


def _parse_azure_time(text: str) -> float:
    """Seconds since the epoch of '2023-11-16 18:15:46.6805900' (any number of digits)."""
    date, _, frac = text.strip().partition(".")
    base = datetime.strptime(date, "%Y-%m-%d %H:%M:%S").timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def load_azure(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seconds from the first row, context tokens, generated tokens); line-numbered errors."""
    try:
        fh = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read the trace: {exc.strerror}") from None
    times, ctx, gen = [], [], []
    with fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:3]) != AZURE_COLUMNS:
            raise WorkloadError(f"{path}: line 1: expected the header {','.join(AZURE_COLUMNS)}, "
                                f"got {','.join(header or [])!r}")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 3:
                raise WorkloadError(f"{path}: line {lineno}: expected 3 columns, got {len(row)}")
            try:
                times.append(_parse_azure_time(row[0]))
            except ValueError:
                raise WorkloadError(f"{path}: line {lineno}: TIMESTAMP: expected "
                                    f"'YYYY-mm-dd HH:MM:SS.fff', got {row[0]!r}") from None
            for col, name, out in ((1, "ContextTokens", ctx), (2, "GeneratedTokens", gen)):
                try:
                    value = int(row[col])
                except ValueError:
                    value = -1
                if value < 0:
                    raise WorkloadError(f"{path}: line {lineno}: {name}: expected a whole number "
                                        f">= 0, got {row[col]!r}")
                out.append(value)
    if not times:
        raise WorkloadError(f"{path}: the trace has no requests")
    t = np.array(times)
    return t - t.min(), np.array(ctx, dtype=np.int64), np.array(gen, dtype=np.int64)


def _trace_times_ns(seconds: np.ndarray, time_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Stable sort by time, scale the gaps, round to ns; returns (order, times_ns)."""
    order = np.argsort(seconds, kind="stable")
    s = seconds[order]
    return order, np.floor((s - s[0]) * time_scale * 1e9).astype(np.int64)


def _bounded(n: int, times: np.ndarray, max_requests: int | None,
             duration_ns: int | None) -> int:
    if max_requests is not None:
        n = min(n, max_requests)
    if duration_ns is not None:
        n = min(n, int(np.searchsorted(times, duration_ns, side="left")))
    return n


def _trace(path: Path, fmt: str, time_scale: float, max_requests: int | None,
           duration_ns: int | None) -> ArrivalPlan:
    if fmt == "azure":
        seconds, ctx, gen = load_azure(path)
        order, times = _trace_times_ns(seconds, time_scale)
        n = _bounded(len(times), times, max_requests, duration_ns)
        reqs = [RequestSpec(i, int(times[i]), max(1, int(ctx[order[i]])),
                            max(1, int(gen[order[i]]))) for i in range(n)]
        return ArrivalPlan(reqs)
    ts_ms, ins, outs, hashes = load_mooncake_rows(path)
    order, times = _trace_times_ns(ts_ms / 1e3, time_scale)
    n = _bounded(len(times), times, max_requests, duration_ns)
    keep = order[:n]
    split = split_mooncake([hashes[i] for i in keep], ins[keep])
    reqs = [RequestSpec(i, int(times[i]), int(split.unique_tokens[i]), max(1, int(outs[keep[i]])),
                        corpus=max(0, int(split.corpus[i])), shared_tokens=int(split.shared_tokens[i]))
            for i in range(n)]
    return ArrivalPlan(reqs, sharing=split.stats)


def build_arrivals(
    kind: str, *, rate_per_s: float | None = None, cv: float | None = None,
    concurrency: int | None = None, path: str | Path | None = None, format: str | None = None,
    time_scale: float = 1.0, unique_tokens: TokenDistribution, output_tokens: TokenDistribution,
    shared: SharedCorpusSpec | None = None, rng_arrivals: np.random.Generator,
    rng_sizes: np.random.Generator, max_requests: int | None = None,
    duration_ns: int | None = None,
) -> ArrivalPlan:
    """The requests of a run for the configured arrival kind (see the module docstring).

    ``shared`` is accepted for symmetry with the config; synthetic requests read their
    corpus whole (RequestSpec.shared_tokens None), traces with real sharing set it.
    """
    del shared
    if kind not in KINDS:
        raise WorkloadError(f"workload.arrivals.kind: expected one of {', '.join(KINDS)}, "
                            f"got {kind!r}")
    if max_requests is None and duration_ns is None:
        raise WorkloadError("run: expected run.requests or run.duration_s to bound the run")
    if kind == "trace":
        if format not in FORMATS:
            raise WorkloadError(f"workload.arrivals.format: expected one of {', '.join(FORMATS)}, "
                                f"got {format!r}")
        if path is None:
            raise WorkloadError("workload.arrivals.path: expected the trace file's path")
        return _trace(Path(path), format, _positive("time_scale", time_scale), max_requests,
                      duration_ns)
    if kind == "closed_loop":
        if concurrency is None or isinstance(concurrency, bool) or int(concurrency) < 1:
            raise WorkloadError(f"workload.arrivals.concurrency: expected a whole number >= 1, "
                                f"got {concurrency!r}")
        n = max_requests if max_requests is not None else CLOSED_LOOP_DEFAULT_REQUESTS
        reqs = _synthetic(np.zeros(n, dtype=np.int64), unique_tokens, output_tokens, rng_sizes)
        return ArrivalPlan(reqs, closed_loop_concurrency=int(concurrency))
    rate = _positive("rate_per_s", rate_per_s)
    cv_value = _positive("cv", cv) if kind == "gamma" else None
    times = _renewal_times(kind, rate, cv_value, rng_arrivals, max_requests, duration_ns)
    return ArrivalPlan(_synthetic(times, unique_tokens, output_tokens, rng_sizes))
