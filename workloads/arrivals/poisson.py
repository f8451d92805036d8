"""``poisson``: open loop, exponential inter-arrival times of mean 1/rate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from workloads.arrivals.base import (
    ArrivalContext,
    ArrivalPlan,
    ArrivalProcess,
    Param,
    positive,
    renewal_times,
    synthetic_plan,
)


def poisson_times(rate_per_s: float, rng: np.random.Generator, *, max_requests: int | None = None,
                  duration_ns: int | None = None) -> np.ndarray:
    """Arrival times (int64 ns) of a Poisson process: exponential gaps of mean 1/rate."""
    rate = positive(rate_per_s, "rate_per_s")
    return renewal_times(lambda n: rng.standard_exponential(n) / rate, max_requests, duration_ns)


class PoissonArrivals(ArrivalProcess):
    """Open loop, exponential inter-arrival times."""

    kind = "poisson"
    description = "Open loop, exponential inter-arrival times."
    params = (Param("rate_per_s", "number", "mean arrivals per second", gt=0),)

    def plan(self, values: Mapping[str, Any], ctx: ArrivalContext) -> ArrivalPlan:
        times = poisson_times(positive(values["rate_per_s"], "rate_per_s"), ctx.rng_arrivals,
                              max_requests=ctx.max_requests, duration_ns=ctx.duration_ns)
        return synthetic_plan(times, ctx.unique_tokens, ctx.output_tokens, ctx.rng_sizes,
                              ctx.shared, ctx.corpus_rng)


__all__ = ["PoissonArrivals", "poisson_times"]
