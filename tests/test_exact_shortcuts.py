"""The engine's shortcuts are exact: folding a unique node's work after a round trip into
the round trip's event (``UniqueNode.fold_round_trips``), and taking a query message or
prefill job into a busy shared node's inbox when it is sent, with no delivery event
(``SharedNode.deliver_ahead``). On random configs the engine with and without them gives
byte-identical summaries, request records, time series and timelines."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.engine.experiment import make_experiment
from sim.engine.nodes.shared import SharedNode
from sim.engine.nodes.unique import UniqueNode
from sim.engine.timeline import TimelineOptions
from sim.run import simulate
from sim.run.results import summary_json, timeseries_csv
from workloads.request import RequestSpec


def _requests(seed: int, n: int, gap_ns: float) -> list[RequestSpec]:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(gap_ns, n)).astype(np.int64)
    return [RequestSpec(i, int(t[i]), int(rng.integers(100, 4000)), int(rng.integers(1, 30)))
            for i in range(n)]


def _outputs(spec, reqs, shortcuts: bool, timeline: bool) -> tuple[str, ...]:
    UniqueNode.fold_round_trips = SharedNode.deliver_ahead = shortcuts
    try:
        res = simulate(spec.with_requests(reqs),
                       timeline=TimelineOptions() if timeline else None)
    finally:
        UniqueNode.fold_round_trips = SharedNode.deliver_ahead = True
    out = (summary_json(res.summary), "".join(res.requests.csv_chunks()),
           timeseries_csv(res.timeseries_header, res.timeseries_rows))
    if timeline:
        out += (res.timeline.to_json(),)
    return out


configs = st.fixed_dictionaries({
    "unique_nodes": st.integers(1, 3),
    "shared_nodes": st.integers(1, 3),
    "max_batch": st.sampled_from([1, 4, 64, 256]),
    "window_ns": st.sampled_from([0, 5_000, 50_000]),
    "granularity": st.sampled_from(["layer", "step"]),
    "overlap": st.booleans(),
    "microbatches": st.sampled_from([1, 2]),
    "shared_policy": st.sampled_from(["decode_first", "fifo"]),
    "prefill_chunk_tokens": st.sampled_from([None, 256, 2048]),
    "latency_ns": st.sampled_from([0.0, 1000.0]),
    "service": st.sampled_from(["deterministic", "exponential"]),
    "seed": st.integers(0, 2**16),
})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs, gap_ns=st.sampled_from([2e5, 2e6, 2e7]), stop=st.booleans(),
       timeline=st.booleans())
def test_the_shortcuts_give_the_results_of_the_engine_without_them(cfg, gap_ns, stop,
                                                                   timeline):
    reqs = _requests(cfg["seed"], 24, gap_ns)
    spec = make_experiment(requests=len(reqs),
                           duration_ns=int(reqs[len(reqs) // 2].arrival_ns) if stop else None,
                           **cfg)
    assert _outputs(spec, reqs, True, timeline) == _outputs(spec, reqs, False, timeline)


@pytest.mark.parametrize("granularity", ["layer", "step"])
def test_folding_saves_one_event_a_round_trip(granularity):
    """The point of folding: at ``layer``, about one event fewer per round trip."""
    reqs = _requests(1, 30, 2e6)
    spec = make_experiment(requests=len(reqs), granularity=granularity, unique_nodes=2)
    events = {}
    for fold in (True, False):
        UniqueNode.fold_round_trips = fold
        try:
            res = simulate(spec.with_requests(reqs))
        finally:
            UniqueNode.fold_round_trips = True
        events[fold] = res.run_info["events"]
    steps = sum(u.steps for u in res.cluster.unique)
    round_trips = steps * (spec.model.layers if granularity == "layer" else 1)
    assert events[False] - events[True] == pytest.approx(round_trips, rel=0.05)


def test_delivering_ahead_spares_the_delivery_events_of_a_busy_node():
    """Prompts' corpus attention keeps the shared nodes busy: jobs and queries sent to a
    node that will still be busy at their arrival need no delivery event."""
    reqs = _requests(2, 30, 1e6)
    spec = make_experiment(requests=len(reqs), granularity="layer", unique_nodes=2)
    events = {}
    for ahead in (True, False):
        SharedNode.deliver_ahead = ahead
        try:
            events[ahead] = simulate(spec.with_requests(reqs)).run_info["events"]
        finally:
            SharedNode.deliver_ahead = True
    assert events[True] < 0.95 * events[False]
