"""``closed_loop``: the engine keeps ``concurrency`` requests in flight, issuing request
``i + concurrency`` when one completes. The plan's requests carry ``arrival_ns = 0`` as a
placeholder (the engine knows the real issue times) and ``closed_loop_concurrency`` says
so. With only a duration bound, ``CLOSED_LOOP_DEFAULT_REQUESTS`` are planned (a note says
so); the run ends early if they all complete."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from workloads.arrivals.base import (
    BLOCK,
    ArrivalContext,
    ArrivalPlan,
    ArrivalProcess,
    Param,
    count_arg,
    routing_rng,
    size_blocks,
    synthetic_plan,
)
from workloads.distributions import TokenDistribution
from workloads.request import RequestSpec
from workloads.sharing import SharedCorpusSpec

CLOSED_LOOP_DEFAULT_REQUESTS = 100_000  # closed loop bounded by a duration only


def closed_loop_requests(concurrency: int, *, unique_tokens: TokenDistribution,
                         output_tokens: TokenDistribution, rng_sizes: np.random.Generator,
                         max_requests: int | None = None, shared: SharedCorpusSpec | None = None,
                         rng_routing: np.random.Generator | None = None) -> Iterator[RequestSpec]:
    """Closed-loop requests in issue order, ``arrival_ns = 0`` (the engine issues the first
    ``concurrency`` at once and the next whenever one completes); endless without
    ``max_requests``."""
    count_arg(concurrency, "concurrency")
    if max_requests is not None:
        count_arg(max_requests, "max_requests", least=0)
    blocks = size_blocks(unique_tokens, output_tokens, rng_sizes, shared,
                          routing_rng(shared, rng_routing, rng_sizes))
    for i in itertools.count() if max_requests is None else range(max_requests):
        if i % BLOCK == 0:
            u, o, c = (a.tolist() for a in next(blocks))
        j = i % BLOCK
        yield RequestSpec(i, 0, u[j], o[j], c[j])


class ClosedLoopArrivals(ArrivalProcess):
    """A fixed number of clients; each sends its next request when the last one ends."""

    kind = "closed_loop"
    description = "A fixed number of clients; each sends its next request when the last one ends."
    params = (Param("concurrency", "integer", "requests in flight at all times", ge=1),)

    def plan(self, values: Mapping[str, Any], ctx: ArrivalContext) -> ArrivalPlan:
        c = count_arg(values["concurrency"], "concurrency")
        n = ctx.max_requests
        notes: list[str] = []
        if n is None:
            n = CLOSED_LOOP_DEFAULT_REQUESTS
            notes.append(f"closed loop bounded by a duration only: {n} requests planned; the "
                         "run ends early if they all complete")
        # the same draws as ``closed_loop_requests``, in arrays
        p = synthetic_plan(np.zeros(n, dtype=np.int64), ctx.unique_tokens, ctx.output_tokens,
                           ctx.rng_sizes, ctx.shared, ctx.corpus_rng)
        return replace(p, closed_loop_concurrency=c, notes=tuple(notes))


__all__ = ["CLOSED_LOOP_DEFAULT_REQUESTS", "ClosedLoopArrivals", "closed_loop_requests"]
