"""The engine against queueing theory: one unique node serving one request at a time with
one output token is a single FIFO server whose service time is one prefill.

- exact: departures follow Lindley's recursion to the nanosecond (any arrival sequence);
- M/D/1 (Pollaczek-Khinchine): W = S + rho S / (2 (1 - rho)), within 3 %;
- M/M/1 (``run.service: exponential``, the test knob that scales each service by an
  Exp(1) draw): W = S / (1 - rho), within 3 %;
- Little's law: L = lambda W on every run.
Statistics pool 5 seeds of 100k requests (spread measured in
repeated runs) and also require the formula to
lie in the 99 % t-interval of the 5 seed means.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.engine.experiment import Experiment, make_experiment
from sim.run import simulate
from workloads.request import RequestSpec

PROMPT = 1024
T_995_4 = 4.604  # Student t, 99 % two-sided, 4 degrees of freedom


def single_server(**kw) -> Experiment:
    """One replica, one request at a time, no shared corpus: service = one prefill."""
    return make_experiment(system="shared_gemm", shared_tokens=0, unique_nodes=1, shared_nodes=0,
                     max_running=1, max_batch=1, **kw)


def service_ns() -> int:
    """The engine's own service time for one request alone."""
    r = simulate(single_server(requests=1).with_requests([RequestSpec(0, 0, PROMPT, 1)]))
    return round(r.summary["e2e_ms"]["mean"] * 1e6)


def poisson_run(rho: float, seed: int, n: int, service: str) -> tuple[float, dict]:
    S = service_ns()
    rng = np.random.default_rng(1000 + seed)
    t = np.cumsum(rng.exponential(S / rho, n)).astype(np.int64)
    reqs = [RequestSpec(i, int(a), PROMPT, 1) for i, a in enumerate(t.tolist())]
    spec = single_server(requests=n, seed=seed, service=service)
    r = simulate(spec.with_requests(reqs))
    return r.summary["e2e_ms"]["mean"] * 1e6, r.summary


def check_closed_form(rho: float, service: str, expected_over_S) -> None:
    S = service_ns()
    expected = expected_over_S(rho) * S
    means = []
    for seed in range(5):
        w, summary = poisson_run(rho, seed, 100_000, service)
        means.append(w)
        assert summary["littles_law"]["relative_error"] < 1e-9
        assert summary["requests_completed"] == 100_000
    means_a = np.array(means)
    pooled = means_a.mean()
    half = T_995_4 * means_a.std(ddof=1) / np.sqrt(len(means))
    assert abs(pooled / expected - 1) < 0.03, (pooled, expected)
    assert pooled - half <= expected <= pooled + half, (pooled, half, expected)


@pytest.mark.slow
@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_mean_time_in_system(rho):
    check_closed_form(rho, "deterministic", lambda r: 1 + r / (2 * (1 - r)))


@pytest.mark.slow
@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_mm1_mean_time_in_system(rho):
    check_closed_form(rho, "exponential", lambda r: 1 / (1 - r))


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.lists(st.integers(0, 30_000_000), min_size=1, max_size=60))
def test_departures_follow_lindley_exactly(gaps):
    """Any arrival sequence, deterministic service: d_i = max(a_i, d_{i-1}) + S."""
    S = service_ns()
    arrivals = np.cumsum(gaps).tolist()
    reqs = [RequestSpec(i, a, PROMPT, 1) for i, a in enumerate(arrivals)]
    r = simulate(single_server(requests=len(reqs)).with_requests(reqs))
    log = r.cluster.log
    d_prev = 0
    for i, a in enumerate(arrivals):
        d = max(a, d_prev) + S
        assert log.done_ns[i] == d
        assert log.first_ns[i] == d  # one output token: the first is the last
        d_prev = d
    assert r.summary["littles_law"]["relative_error"] < 1e-9
    assert r.summary["utilization"]["unique0"] == pytest.approx(len(reqs) * S / log.done_ns[-1])


def test_littles_law_with_a_duration_bound_counts_requests_in_flight():
    S = service_ns()
    rng = np.random.default_rng(7)
    t = np.cumsum(rng.exponential(S / 0.95, 3000)).astype(np.int64)
    reqs = [RequestSpec(i, int(a), PROMPT, 1) for i, a in enumerate(t.tolist())]
    stop = int(t[1500])
    r = simulate(single_server(duration_ns=stop).with_requests(reqs))
    s = r.summary
    assert s["sim_time_s"] == stop / 1e9
    assert s["requests_arrived"] == s["requests_completed"] + s["requests_in_flight"]
    assert s["requests_in_flight"] > 0
    assert s["littles_law"]["relative_error"] < 1e-9
