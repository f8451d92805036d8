"""bench/bench_floor.py's skeleton of per-layer round trips keeps the event structure it
claims: checked against closed forms worked out by hand, so its measured floor is the cost
of the events the faithful mode cannot drop."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_floor", BENCH / "bench_floor.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


floor = _load()


@given(shared=st.integers(1, 4), rounds=st.integers(1, 50), launch=st.integers(0, 10_000),
       latency=st.integers(0, 5_000), own=st.integers(0, 10_000))
@settings(max_examples=60, deadline=None)
def test_one_unique_node_closed_form(shared: int, rounds: int, launch: int, latency: int,
                                     own: int) -> None:
    """Alone, a unique node's round trip is latency out, one launch on each (idle) shared
    node in parallel, latency back, then its own work: R x (2 lat + launch + own). Every
    message finds its node idle, so each costs a delivery event and a launch, and each
    round trip one resumption: R x (2 S + 1) events."""
    model = floor.FloorModel(unique=1, shared=shared, round_trips_per_node=rounds,
                             launch_ns=launch, latency_ns=latency, own_ns=own)
    events = model.run()
    assert model.finished_ns == [rounds * (2 * latency + launch + own)]
    assert model.round_trips_done == rounds
    assert model.launches == rounds * shared
    assert events == rounds * (2 * shared + 1)


def test_messages_to_a_busy_node_join_the_next_launch_without_an_event() -> None:
    """Two unique nodes, one shared node, launch 10, latency 1, own work 0. Both send at 0
    and both messages find the node idle at send time (two delivery events at 1): A
    launches [1, 11], B waits and launches [11, 21]. A is back at 12 and sends; its
    message arrives at 13, while B's launch runs (until 21): no event, it launches at 21.
    From then on each node's message arrives while the other's launch runs, so the node
    is never idle and a round trip costs exactly a launch and a resumption."""
    model = floor.FloorModel(unique=2, shared=1, round_trips_per_node=3, launch_ns=10,
                             latency_ns=1, own_ns=0)
    events = model.run()
    # the launches run back to back from t=1: 6 of 10 ns end at 61; the last reply is
    # back 1 ns later
    assert model.launches == 6
    assert model.finished_ns == [52, 62]
    assert events == 2 + 6 + 6  # the two first deliveries, six launches, six resumptions


@pytest.mark.parametrize("field", ["unique", "shared", "round_trips_per_node"])
def test_rejects_empty_configs(field: str) -> None:
    kwargs = {"unique": 1, "shared": 1, "round_trips_per_node": 1, "launch_ns": 1, "latency_ns": 1,
                  "own_ns": 1}
    kwargs[field] = 0
    with pytest.raises(ValueError, match="must be >= 1"):
        floor.FloorModel(**kwargs)


def test_measure_reports_the_run() -> None:
    run = floor.measure(400, unique=4, shared=2, launch_ns=1000, latency_ns=100, own_ns=500)
    assert run["round_trips"] == 400
    assert run["events"] >= run["round_trips"] + run["launches"]
    assert run["us_per_round_trip"] > 0
