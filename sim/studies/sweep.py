"""The load sweep: each config rerun at several offered loads, short, to show where it
saturates (throughput stops following the load, p99 TPOT climbs).

Open-loop arrivals (poisson, gamma) sweep ``rate_per_s``; traces sweep ``time_scale`` so
that the trace's rate takes the same values; closed-loop arrivals sweep ``concurrency``.
Point i of N (1-based) offers ``max_factor x i / N`` of the analytic saturation point
(:mod:`sim.studies.saturation`: the request rate, or for closed loops the knee
concurrency N*).

Every point is a short run of R requests (``run.requests``): R = the sweep's ``requests``,
by default 8 x N* within [64, 2000] (a trace replays the main run's ``run.requests``), but
never shorter than 8 request latencies W (open loop: R >= 8 x W(rate) x rate, W by the
closed form at that rate (``Saturation.latency_at``), at most 2000; closed loop: R >= 8 x
concurrency), or a point would measure only the ramp-up.
Open loops stop when the last of those requests has arrived (``run.duration_s`` = R /
rate) and leave the first ``warmup_fraction`` of that time out of the metrics; closed
loops run until all R requests finish.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sim.config import ConfigError, Issue
from sim.studies.saturation import Saturation
from sim.units import UnitError, describe, parse_int, parse_number

AUTO_MIN_REQUESTS = 64
AUTO_MAX_REQUESTS = 2000
MIN_LIFETIMES = 8  # a point runs at least this many request latencies (the closed form
                   # underestimates loaded latency, up to about 2x)
SETTING_KEYS = ("points", "requests", "max_factor", "warmup_fraction")


@dataclass(frozen=True)
class SweepSettings:
    """How many load points, how far beyond saturation, how long each point runs."""

    points: int = 0  # 0: no sweep
    requests: int | None = None  # run.requests of each point; None: auto
    max_factor: float = 1.5  # the last point offers this multiple of the analytic saturation
    warmup_fraction: float = 0.25  # open loop: share of each point's run left out of metrics

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "load_sweep",
                     points: int | None = None, requests: int | None = None) -> SweepSettings:
        """Settings from a variants file's ``load_sweep`` mapping, then command-line values."""
        issues: list[Issue] = []
        values: dict[str, Any] = {}
        for key, raw in data.items():
            field = f"load_sweep.{key}"
            if key not in SETTING_KEYS:
                issues.append(Issue(source, ("load_sweep", str(key)),
                                    f"unknown field; valid fields: {', '.join(SETTING_KEYS)}"))
                continue
            try:
                values[key] = _parse(key, raw, field)
            except (UnitError, ValueError) as exc:
                issues.append(Issue(source, ("load_sweep", key), getattr(exc, "reason", str(exc))))
        if issues:
            raise ConfigError(issues)
        if points is not None:
            values["points"] = points
        if requests is not None:
            values["requests"] = requests
        return cls(**values)


def _parse(key: str, raw: Any, field: str) -> Any:
    if key == "points":
        v = parse_int(raw, field)
        if v < 0:
            raise ValueError(f"expected an integer >= 0, got {describe(raw)}")
        return v
    if key == "requests":
        if raw is None:
            return None
        v = parse_int(raw, field)
        if v < 1:
            raise ValueError(f"expected an integer >= 1 or null, got {describe(raw)}")
        return v
    v = parse_number(raw, field)
    if key == "max_factor" and not v > 0:
        raise ValueError(f"expected a number > 0, got {describe(raw)}")
    if key == "warmup_fraction" and not 0 <= v < 1:
        raise ValueError(f"expected a number in [0, 1), got {describe(raw)}")
    return v


@dataclass(frozen=True)
class SweepPoint:
    """One load point of one config: its x value and the overrides that make it."""

    index: int
    x: float  # requests/s offered, or the concurrency for closed loops
    overrides: dict[str, Any]


def sweep_axis(config: Any) -> str:
    """'concurrency' for closed-loop arrivals, else 'rate'."""
    return "concurrency" if config.workload.arrivals.kind == "closed_loop" else "rate"


def auto_requests(sat: Saturation) -> int:
    """Requests per point when not set: at saturation about 8 lifetimes of a request
    (N* requests are in the system at once there)."""
    return int(min(AUTO_MAX_REQUESTS, max(AUTO_MIN_REQUESTS, 8 * sat.concurrency)))


def point_requests(config: Any, settings: SweepSettings, sat: Saturation) -> int:
    """``run.requests`` of every point: as set; else a trace replays the main run's requests
    (its head differs from its body, so a shorter replay would be another workload); else
    :func:`auto_requests`."""
    if settings.requests:
        return settings.requests
    if config.workload.arrivals.kind == "trace" and config.run.requests:
        return int(config.run.requests)
    return auto_requests(sat)


def sweep_points(config: Any, settings: SweepSettings, sat: Saturation, requests: int,
                 trace_rate: float | None = None) -> list[SweepPoint]:
    """The N load points of ``config`` (empty when ``settings.points`` is 0), each run with
    ``requests`` requests; ``trace_rate`` is the replayed requests' own arrival rate."""
    n = settings.points
    kind = config.workload.arrivals.kind
    out: list[SweepPoint] = []
    for i in range(1, n + 1):
        share = settings.max_factor * i / n
        if kind == "closed_loop":
            c = max(1, math.ceil(share * sat.concurrency))
            out.append(SweepPoint(i - 1, float(c), {
                "workload.arrivals.concurrency": c,
                "run.requests": max(requests, MIN_LIFETIMES * c),
                "run.duration_s": None,
                "run.warmup_s": 0.0,
            }))
            continue
        rate = share * sat.rate_per_s
        n_req = requests
        if kind != "trace":  # a trace's rate was measured over exactly ``requests`` rows
            n_req = min(AUTO_MAX_REQUESTS, max(
                requests, math.ceil(MIN_LIFETIMES * sat.latency_at(rate) * rate)))
        duration = n_req / rate
        ov: dict[str, Any] = {
            "run.requests": n_req,
            "run.duration_s": duration,
            "run.warmup_s": settings.warmup_fraction * duration,
        }
        if kind == "trace":
            if not trace_rate:
                raise ValueError(f"{config.name}: the trace has no arrival rate to scale")
            ov["workload.arrivals.time_scale"] = (
                config.workload.arrivals.time_scale * trace_rate / rate)
        else:
            ov["workload.arrivals.rate_per_s"] = rate
        out.append(SweepPoint(i - 1, rate, ov))
    return with_main_load(config, out, requests, trace_rate)


def main_load(config: Any, trace_rate: float | None = None) -> float | None:
    """The main run's own load on the sweep's axis: its concurrency, its arrival rate, or the
    replayed trace's rate at its time scale (None when unknown)."""
    arr = config.workload.arrivals
    if arr.kind == "closed_loop":
        return float(arr.concurrency)
    if arr.kind == "trace":
        return trace_rate if trace_rate else None
    return float(arr.rate_per_s)


def with_main_load(config: Any, points: list[SweepPoint], requests: int,
                   trace_rate: float | None) -> list[SweepPoint]:
    """``points`` with the main run's load added (when not already among them), so the
    sweep says where the headline run sits against the knee; re-indexed by load."""
    x = main_load(config, trace_rate)
    if not points or x is None or any(abs(p.x - x) <= 1e-9 * max(1.0, x) for p in points):
        return points
    kind = config.workload.arrivals.kind
    if kind == "closed_loop":
        c = int(x)
        ov: dict[str, Any] = {"workload.arrivals.concurrency": c,
                              "run.requests": max(requests, MIN_LIFETIMES * c),
                              "run.duration_s": None, "run.warmup_s": 0.0}
    else:
        template = dict(points[-1].overrides)
        n_req = int(template["run.requests"])
        duration = n_req / x
        ov = {**template, "run.duration_s": duration,
              "run.warmup_s": template["run.warmup_s"] / template["run.duration_s"] * duration}
        if kind == "trace":
            ov["workload.arrivals.time_scale"] = config.workload.arrivals.time_scale
        else:
            ov["workload.arrivals.rate_per_s"] = x
    merged = sorted([*points, SweepPoint(-1, x, ov)], key=lambda p: p.x)
    return [SweepPoint(i, p.x, p.overrides) for i, p in enumerate(merged)]


def sweep_record(points: Sequence[SweepPoint], summaries: Sequence[Mapping[str, Any] | None],
                 axis: str, sat: Saturation, main_x: float | None = None) -> dict[str, Any]:
    """One config's sweep as ``sim.report`` reads it (offered_rate_per_s,
    throughput_tokens_per_s, p99_tpot_ms), plus what was run, for ``compare.json``."""
    def p99(s: Mapping[str, Any] | None) -> float | None:
        stats = (s or {}).get("tpot_ms") or {}
        return stats.get("p99")

    return {
        "axis": axis,
        "main_run_x": main_x,
        "offered_rate_per_s": [p.x for p in points],
        "throughput_tokens_per_s": [(s or {}).get("throughput_tokens_per_s") for s in summaries],
        "p99_tpot_ms": [p99(s) for s in summaries],
        "p99_ttft_ms": [((s or {}).get("ttft_ms") or {}).get("p99") for s in summaries],
        "requests_completed": [(s or {}).get("requests_completed") for s in summaries],
        "analytic_saturation": {
            "rate_per_s": sat.rate_per_s,
            "concurrency": sat.concurrency,
            "best_concurrency": sat.best_concurrency,
            "decode_tokens_per_s": sat.decode_tokens_per_s,
            "prefill_s": sat.prefill_s,
            "unloaded_latency_s": sat.unloaded_latency_s,
        },
        "overrides": [p.overrides for p in points],
    }


__all__ = ["SweepPoint", "SweepSettings", "auto_requests", "point_requests", "sweep_axis",
           "sweep_points", "sweep_record"]
