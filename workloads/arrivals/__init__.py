"""Arrival processes behind a registry: when requests arrive and how big they are.

One module per process (``poisson``, ``gamma``, ``closed_loop``, ``trace``), each an
``ArrivalProcess`` that declares its parameters; the config schema is generated from the
declarations, so adding a process is one new module registered here with
``register_arrivals``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np

from workloads.arrivals.azure import read_azure
from workloads.arrivals.base import ArrivalContext, ArrivalPlan, ArrivalProcess, Param, check_bounds
from workloads.arrivals.closed_loop import (
    CLOSED_LOOP_DEFAULT_REQUESTS,
    ClosedLoopArrivals,
    closed_loop_requests,
)
from workloads.arrivals.gamma import GammaArrivals, gamma_times
from workloads.arrivals.mooncake import read_mooncake
from workloads.arrivals.poisson import PoissonArrivals, poisson_times
from workloads.arrivals.trace import FORMATS, TraceArrivals, read_trace, replay_times, trace_plan
from workloads.arrivals.trace_rows import TraceRows
from workloads.distributions import TokenDistribution
from workloads.errors import WorkloadError
from workloads.sharing import SharedCorpusSpec

_REGISTRY: dict[str, ArrivalProcess] = {}


def register_arrivals(cls: type[ArrivalProcess]) -> type[ArrivalProcess]:
    """Class decorator: make ``cls`` available as ``workload.arrivals.kind: cls.kind``."""
    if not cls.kind:
        raise WorkloadError(f"{cls.__name__}: an arrival process needs a kind")
    _REGISTRY[cls.kind] = cls()
    return cls


def available_arrivals() -> list[str]:
    """Registered arrival kinds, in registration order."""
    return list(_REGISTRY)


def arrival_processes() -> list[ArrivalProcess]:
    """Every registered arrival process (the config schema is built from these)."""
    return list(_REGISTRY.values())


def get_arrivals(kind: str) -> ArrivalProcess:
    """The registered arrival process of ``kind``; a clear error naming the known kinds."""
    try:
        return _REGISTRY[kind]
    except KeyError:
        near = difflib.get_close_matches(str(kind), list(_REGISTRY), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise WorkloadError(f"workload.arrivals.kind: expected one of "
                            f"{', '.join(_REGISTRY)}, got {kind!r}{hint}") from None


for _cls in (PoissonArrivals, GammaArrivals, ClosedLoopArrivals, TraceArrivals):
    register_arrivals(_cls)

KINDS = tuple(_REGISTRY)


def build_arrivals(
    kind: str, *, unique_tokens: TokenDistribution, output_tokens: TokenDistribution,
    rng_arrivals: np.random.Generator, rng_sizes: np.random.Generator,
    shared: SharedCorpusSpec | None = None, rng_routing: np.random.Generator | None = None,
    max_requests: int | None = None, duration_ns: int | None = None,
    trace_corpora: bool = True, **params: Any,
) -> ArrivalPlan:
    """The requests of a run for arrival ``kind``, bounded by ``max_requests`` and/or
    ``duration_ns`` (arrivals at or after it are dropped); ``params`` are the kind's own
    (``rate_per_s``, ``cv``, ``concurrency``, ``path``, ``format``, ``time_scale``;
    ``start_offset_s`` for traces). Parameters of other kinds passed as None are ignored.
    ``trace_corpora`` False: a trace that defines its own corpora (Mooncake) shares none."""
    process = get_arrivals(kind)
    check_bounds(max_requests, duration_ns, required=kind != "trace")
    own = {p.name for p in process.params} | ({"start_offset_s"} if kind == "trace" else set())
    values = {k: v for k, v in params.items() if k in own or v is not None}
    extra = {k: v for k, v in values.items() if k not in own}
    if extra:
        raise WorkloadError(f"workload.arrivals: kind {kind!r} takes no "
                            f"{', '.join(sorted(extra))}")
    start = values.pop("start_offset_s", None)
    full = process.with_defaults(values)
    if start is not None:
        full["start_offset_s"] = start
    ctx = ArrivalContext(unique_tokens, output_tokens, rng_arrivals, rng_sizes, shared,
                         rng_routing, max_requests, duration_ns, trace_corpora)
    return process.plan(full, ctx)


__all__ = [
    "CLOSED_LOOP_DEFAULT_REQUESTS",
    "FORMATS",
    "KINDS",
    "ArrivalContext",
    "ArrivalPlan",
    "ArrivalProcess",
    "Param",
    "Path",
    "TraceRows",
    "arrival_processes",
    "available_arrivals",
    "build_arrivals",
    "closed_loop_requests",
    "gamma_times",
    "get_arrivals",
    "poisson_times",
    "read_azure",
    "read_mooncake",
    "read_trace",
    "register_arrivals",
    "replay_times",
    "trace_plan",
]
