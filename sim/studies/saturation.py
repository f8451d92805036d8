"""Where a config saturates, from the closed form (``sim.analytic``): the load sweep of
``moska-sim compare`` spreads its points up to beyond this.

The analytic model prices decode steps only; here each request also pays its prefill
(the system's ``prefill_ops`` priced by the same ``hw`` model), because with long
prompts prefill, not decode, often bounds how many requests per second a cluster takes:

    rate_sat = 1 / (output_tokens / decode_tokens_per_s + prefill_unique_s / replicas)

capped by the shared nodes' prefill work for moska (S / prefill_shared_s). Baselines are
evaluated on the unique nodes only, as the engine deploys them (shared nodes idle).

For closed loops the knee is the concurrency N* = rate_sat x W0 (operational analysis's
balanced bound), W0 being one request's latency alone (its prefill plus its output tokens
at the batch-1 step latency), at most the analytic best concurrency: below N* clients
wait on their own requests, above it on each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sim.analytic import Scenario, best_point, evaluate, op_time_ns, scenario
from sim.config import analysis_settings, resolve, with_overrides
from sim.engine.experiment import UNBOUNDED
from workloads.systems import get_system


@dataclass(frozen=True)
class WorkloadMeans:
    """Mean request sizes and the native arrival rate of the requests a config plans."""

    unique_tokens: float
    output_tokens: float
    rate_per_s: float | None  # arrivals per simulated second (None: closed loop or < 2)
    prefill_tokens: float | None = None  # mean new prompt tokens (None: all unique tokens)


@dataclass(frozen=True)
class Saturation:
    """The closed form's estimate of where a config stops keeping up."""

    rate_per_s: float  # requests per second the cluster completes, prefill included
    concurrency: int  # the closed-loop knee N* = rate_per_s x unloaded_latency_s (>= 1)
    best_concurrency: int  # requests decoding at once at the best analytic decode point
    decode_tokens_per_s: float  # analytic decode throughput at best_concurrency
    prefill_s: float  # one request's prefill on its unique-node replica, shared part included
    unloaded_latency_s: float  # one request alone: prefill + output tokens x batch-1 step
    scenario: Scenario | None = None  # what the closed form evaluated (for latency_at)
    output_tokens: float = 1.0  # mean output tokens of a request

    def latency_at(self, rate_per_s: float) -> float:
        """One request's latency at ``rate_per_s`` by the closed form: the fixed point of
        W = prefill + (output - 1) x step(concurrency = rate x W) (Little's law), the
        concurrency capped at ``best_concurrency``. Sizes how long a load point must run."""
        w = self.unloaded_latency_s
        if self.scenario is None:
            return w
        for _ in range(30):
            c = min(self.best_concurrency, max(1, math.ceil(rate_per_s * w)))
            pt = evaluate(self.scenario, c)
            if not pt.feasible:
                break
            new = self.prefill_s + max(0.0, self.output_tokens - 1) * pt.step_latency_ms / 1e3
            done = abs(new - w) <= 0.01 * w
            w = max(w, new)
            if done:
                break
        return w


def workload_means(config: Any, requests: int | None = None) -> WorkloadMeans:
    """Means of the requests ``config`` plans (trace sizes included) and their arrival rate;
    with ``requests``, of the first that many (``run.requests`` set, no duration)."""
    if requests is not None:
        config = with_overrides(config, {"run.requests": requests, "run.duration_s": None,
                                         "run.warmup_s": 0.0}, source=f"{config.name}: sweep")
    exp = resolve(config)
    reqs = list(exp.workload.requests)
    if not reqs:
        raise ValueError(f"{config.name}: the workload plans no requests")
    unique = float(np.mean([r.unique_tokens for r in reqs]))
    new = float(np.mean([r.unique_tokens if r.prefill_tokens is None
                         else min(r.prefill_tokens, r.unique_tokens) for r in reqs]))
    output = float(np.mean([max(1, r.output_tokens) for r in reqs]))
    rate = None
    if exp.workload.closed_loop_concurrency is None and len(reqs) > 1:
        times = np.array([r.arrival_ns for r in reqs], dtype=np.float64)
        span = (times.max() - times.min()) / 1e9
        rate = (len(reqs) - 1) / span if span > 0 else None
    return WorkloadMeans(unique, output, rate, new)


def _concurrencies(sweep: tuple[int, ...], max_running: int, replicas: int) -> list[int]:
    """The analysis sweep's concurrencies, capped by ``batching.max_running``."""
    candidates = {int(c) for c in sweep}
    if max_running != UNBOUNDED:
        limit = int(max_running) * replicas
        candidates = {c for c in candidates if c <= limit} | {limit}
    return sorted(candidates)


def analytic_saturation(config: Any, means: WorkloadMeans | None = None) -> Saturation:
    """The saturation point of ``config``; ValueError when no concurrency is feasible."""
    means = means or workload_means(config)
    exp = resolve(config, with_workload=False)
    sc = scenario(exp, unique_tokens=max(1, round(means.unique_tokens)))
    moska = exp.disaggregated
    if not moska:
        sc = replace(sc, shared_nodes=0)
    replicas = sc.unique_nodes // exp.cluster.unique.tp
    sweep = analysis_settings(config).batch_sweep
    pt = best_point(sc, _concurrencies(sweep, exp.batching.max_running, max(1, replicas)))
    if not pt.feasible or pt.throughput_tokens_per_s <= 0:
        raise ValueError(f"{config.name}: the closed form finds no feasible concurrency "
                         f"({pt.reason or 'no throughput'})")
    # a prefill of the mean new prompt tokens after the resident rest (none: decode only)
    new = sc.unique_tokens if means.prefill_tokens is None else round(means.prefill_tokens)
    ops = [] if new <= 0 else get_system(sc.system).prefill_ops(
        sc.model, sc.precision, new, sc.shared_tokens, keep_fraction=sc.keep_fraction,
        tp=max(1, pt.tp), prior_tokens=max(0, sc.unique_tokens - new))
    busy = {"unique": 0.0, "shared": 0.0}
    for o in ops:
        where = "unique" if o.where == "node" else o.where  # collectives hold the replica
        if where in busy:
            busy[where] += op_time_ns(o, sc.unique_chip, sc.shared_chip, sc.link,
                                      sc.node_link) * sc.model.layers / 1e9
    shared_nodes = max(1, sc.shared_nodes)
    per_request_s = (means.output_tokens / pt.throughput_tokens_per_s
                     + busy["unique"] / max(1, pt.replicas))
    rate = 1.0 / per_request_s
    if moska and busy["shared"] > 0:
        rate = min(rate, shared_nodes / busy["shared"])
    prefill_s = busy["unique"] + busy["shared"] / (shared_nodes if moska else 1)
    alone = evaluate(sc, 1)
    step_s = alone.step_latency_ms / 1e3 if alone.feasible else 0.0
    unloaded = prefill_s + max(0.0, means.output_tokens - 1) * step_s
    knee = max(1, min(int(pt.concurrency), math.ceil(rate * unloaded)))
    return Saturation(rate, knee, int(pt.concurrency), float(pt.throughput_tokens_per_s),
                      prefill_s, unloaded, sc, means.output_tokens)


__all__ = ["Saturation", "WorkloadMeans", "analytic_saturation", "workload_means"]
