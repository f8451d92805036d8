"""The floor under issue 13's speed goals: how fast can ANY per-layer round-trip model run
on SimPy, before it prices, routes or accounts anything?

    python bench/bench_floor.py                       # default.yaml's round trips, ~1 min
    python bench/bench_floor.py --round-trips 100000 --json floor.json

The skeleton (``FloorModel``) keeps only the event structure that the faithful mode cannot
drop: ``unique`` nodes each run a chain of round trips; a round trip sends one message to
each of ``shared`` nodes; a shared node that is idle when a message arrives launches every
pending message as one kernel of ``launch_ns`` (a message arriving while it is busy waits,
with no event of its own, and goes in the next launch); when a launch ends each of its
messages' replies is due ``latency_ns`` later; a unique node resumes once, when its last
reply is back and its own ``own_ns`` of work is done, and sends the next round trip. So
its events are one per launch, one per message reaching an idle node and one per round
trip, the same shortcuts the engine takes (``sim/engine/nodes``), with plain callbacks
instead of processes (cheaper still), no batching window, no prefill jobs, no routing
draw, no pricing, no fabric contention and no records. Whatever it costs, a faithful
model of the same round trips costs more.

It runs the round trips of ``workloads/default.yaml`` at 2,000 requests (748,800 at
``granularity: layer``, 187,200 per unique node, ``--round-trips``) with bare SimPy's
events/s measured in the same process before and after, and prints CPU time, events and
``s_at_750k_bare``: the CPU time scaled to a machine where bare SimPy does 750k events/s
(issue 13's reference machine, as bench_scale.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import simpy
from simpy.events import NORMAL, Event

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import bare_simpy

# default.yaml at 2,000 requests, granularity layer (summary.json, shared_nodes.*.messages)
DEFAULT_ROUND_TRIPS = 748_800


class _RoundTrip:
    """One unique node's round trip: replies still due and when the last one is back."""

    __slots__ = ("latest", "left", "node")

    def __init__(self, node: int, left: int) -> None:
        self.node = node
        self.left = left
        self.latest = 0


class FloorModel:
    """The event skeleton of per-layer round trips (module docstring), on one SimPy
    environment. All times are integer ns."""

    def __init__(self, *, unique: int, shared: int, round_trips_per_node: int,
                 launch_ns: int, latency_ns: int, own_ns: int) -> None:
        if min(unique, shared, round_trips_per_node) < 1:
            raise ValueError("unique, shared and round_trips_per_node must be >= 1")
        if min(launch_ns, latency_ns, own_ns) < 0:
            raise ValueError("launch_ns, latency_ns and own_ns must be >= 0")
        self.env = simpy.Environment()
        self.shared = shared
        self.launch_ns = launch_ns
        self.latency_ns = latency_ns
        self.own_ns = own_ns
        self.left = [round_trips_per_node] * unique  # round trips each unique node has left
        self.busy_until = [-1] * shared  # when each shared node's launch ends (-1: idle)
        self.pending: list[list[_RoundTrip]] = [[] for _ in range(shared)]
        self.round_trips_done = 0
        self.launches = 0
        self.finished_ns = [0] * unique

    def run(self) -> int:
        """Run every chain to its end; returns the events processed."""
        env = self.env
        for node in range(len(self.left)):
            self._send(node)
        events = 0
        step = env.step
        try:
            while True:
                step()
                events += 1
        except simpy.core.EmptySchedule:
            pass
        return events

    def _send(self, node: int) -> None:
        """Unique node ``node`` sends its next round trip's message to every shared node."""
        env = self.env
        rt = _RoundTrip(node, self.shared)
        arrive = env._now + self.latency_ns
        for s in range(self.shared):
            if self.busy_until[s] > arrive:  # busy then: it joins the next launch, no event
                self.pending[s].append(rt)
                continue
            ev = Event(env)
            ev.callbacks.append(lambda _e, s=s, rt=rt: self._arrive(s, rt))
            ev._ok = True
            ev._value = None
            env.schedule(ev, NORMAL, self.latency_ns)

    def _arrive(self, s: int, rt: _RoundTrip) -> None:
        self.pending[s].append(rt)
        if self.busy_until[s] < 0:
            self._launch(s)

    def _launch(self, s: int) -> None:
        """Shared node ``s`` launches everything pending as one kernel."""
        env = self.env
        batch = self.pending[s]
        self.pending[s] = []
        self.launches += 1
        self.busy_until[s] = env._now + self.launch_ns
        ev = Event(env)
        ev.callbacks.append(lambda _e: self._launch_done(s, batch))
        ev._ok = True
        ev._value = None
        env.schedule(ev, NORMAL, self.launch_ns)

    def _launch_done(self, s: int, batch: list[_RoundTrip]) -> None:
        env = self.env
        back = env._now + self.latency_ns
        for rt in batch:
            rt.latest = max(rt.latest, back)
            rt.left -= 1
            if not rt.left:  # the last reply: the node resumes once its own work is done
                ev = Event(env)
                ev.callbacks.append(lambda _e, rt=rt: self._resume(rt.node))
                ev._ok = True
                ev._value = None
                env.schedule(ev, NORMAL, rt.latest + self.own_ns - env._now)
        self.busy_until[s] = -1
        if self.pending[s]:
            self._launch(s)

    def _resume(self, node: int) -> None:
        self.round_trips_done += 1
        self.left[node] -= 1
        if self.left[node]:
            self._send(node)
        else:
            self.finished_ns[node] = self.env._now


def measure(round_trips: int, unique: int, shared: int, launch_ns: int, latency_ns: int,
            own_ns: int) -> dict[str, Any]:
    """Run the skeleton for ``round_trips`` in all; its CPU time, events and ratios."""
    model = FloorModel(unique=unique, shared=shared,
                       round_trips_per_node=max(1, round_trips // unique),
                       launch_ns=launch_ns, latency_ns=latency_ns, own_ns=own_ns)
    t0 = time.process_time()
    events = model.run()
    cpu_s = time.process_time() - t0
    return {"round_trips": model.round_trips_done, "launches": model.launches,
            "events": events, "cpu_time_s": cpu_s, "simulated_s": model.env.now / 1e9,
            "events_per_cpu_s": events / cpu_s if cpu_s else None,
            "us_per_round_trip": 1e6 * cpu_s / model.round_trips_done}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--round-trips", type=int, default=DEFAULT_ROUND_TRIPS,
                    help="round trips in all (default: default.yaml's at 2,000 requests)")
    ap.add_argument("--unique", type=int, default=4, help="unique nodes (default.yaml: 4)")
    ap.add_argument("--shared", type=int, default=2, help="shared nodes (default.yaml: 2)")
    ap.add_argument("--launch-ns", type=int, default=255_000,
                    help="one launch's kernel (default.yaml: ~255 us a decode launch)")
    ap.add_argument("--latency-ns", type=int, default=2_000, help="one-way message latency")
    ap.add_argument("--own-ns", type=int, default=176_000,
                    help="a unique node's own work per round trip (default.yaml: ~176 us)")
    ap.add_argument("--goal-s", type=float, default=5.0,
                    help="the run's goal at 750k (issue 13: default.yaml 5 s, Azure 60 s): "
                         "prints what is left of it, per round trip, for the model's work")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    bare = [bare_simpy()]
    run = measure(args.round_trips, args.unique, args.shared, args.launch_ns,
                  args.latency_ns, args.own_ns)
    bare.append(bare_simpy())
    bare_cpu = sum(b["events_per_cpu_s"] for b in bare) / len(bare)
    run["bare_simpy_events_per_cpu_s"] = [b["events_per_cpu_s"] for b in bare]
    run["vs_bare_simpy"] = run["events_per_cpu_s"] / bare_cpu
    run["s_at_750k_bare"] = run["cpu_time_s"] * bare_cpu / 750_000
    run["goal_s_at_750k"] = args.goal_s
    # what the goal leaves for the model's own work per round trip, in this machine's us
    # (negative: the skeleton alone is over the goal)
    left_s = (args.goal_s - run["s_at_750k_bare"]) * 750_000 / bare_cpu
    run["model_us_per_round_trip_left"] = 1e6 * left_s / run["round_trips"]
    run["python"] = platform.python_version()
    run["simpy"] = simpy.__version__
    print(f"skeleton: {run['round_trips']:,} round trips, {run['launches']:,} launches, "
          f"{run['events']:,} events in {run['cpu_time_s']:.2f} s CPU "
          f"({run['us_per_round_trip']:.2f} us a round trip; "
          f"{run['vs_bare_simpy']:.3f} of bare SimPy's events/s); "
          f"at 750k: {run['s_at_750k_bare']:.2f} s")
    print(f"a goal of {args.goal_s:g} s at 750k leaves the model "
          f"{run['model_us_per_round_trip_left']:.2f} us (this machine's CPU) a round trip")
    if args.json:
        args.json.write_text(json.dumps(run, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
