"""``gamma``: open loop, gamma inter-arrival times of mean 1/rate and coefficient of
variation ``cv`` (bursty when cv > 1; cv = 1 is Poisson in law)."""

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


def gamma_times(rate_per_s: float, cv: float, rng: np.random.Generator, *,
                max_requests: int | None = None, duration_ns: int | None = None) -> np.ndarray:
    """Arrival times (int64 ns) with gamma gaps: mean 1/rate, coefficient of variation cv
    (shape 1/cv^2)."""
    rate = positive(rate_per_s, "rate_per_s")
    shape = 1.0 / positive(cv, "cv") ** 2
    return renewal_times(lambda n: rng.standard_gamma(shape, n) / (shape * rate), max_requests,
                    duration_ns)


class GammaArrivals(ArrivalProcess):
    """Open loop, gamma inter-arrival times: bursty when cv > 1."""

    kind = "gamma"
    description = "Open loop, gamma inter-arrival times: bursty when cv > 1."
    params = (Param("rate_per_s", "number", "mean arrivals per second", gt=0),
              Param("cv", "number", "coefficient of variation of inter-arrival times", gt=0))

    def plan(self, values: Mapping[str, Any], ctx: ArrivalContext) -> ArrivalPlan:
        times = gamma_times(positive(values["rate_per_s"], "rate_per_s"),
                            positive(values["cv"], "cv"), ctx.rng_arrivals,
                            max_requests=ctx.max_requests, duration_ns=ctx.duration_ns)
        return synthetic_plan(times, ctx.unique_tokens, ctx.output_tokens, ctx.rng_sizes,
                              ctx.shared, ctx.corpus_rng)


__all__ = ["GammaArrivals", "gamma_times"]
