"""The cost of one fabric reservation (``Fabric.reserve``), the call every message and
reply of a round trip makes: the figure bench/README.md compares against the per-round-trip
budget ``bench_floor.py`` leaves.

    python bench/bench_fabric.py                    # ~5 s
    PYTHONPATH=<other tree> python bench/bench_fabric.py   # the same on another tree (run
                                                           # it from outside this folder)

The fabric is ``workloads/default.yaml``'s: four unique and two shared hosts on one switch,
450 GB/s links, 1 µs latency. Unique node ``i mod 4`` sends 4-7 KiB to shared node ``i mod
2`` every 300 ns of simulated time (the clock set by hand, no events): the links stay
mostly idle, as in the default run (1% busy). Prints the best of ``--repeats`` runs, in µs
a reservation, beside bare SimPy's events/s measured in the same process.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import bare_simpy

from sim.engine.fabric import Fabric, build_topology
from sim.engine.kernel import Engine

HOSTS = [f"unique{i}" for i in range(4)] + [f"shared{i}" for i in range(2)]


def reserve_us(n: int) -> float:
    """µs of CPU per ``Fabric.reserve`` over ``n`` reservations on a fresh fabric."""
    engine = Engine(seed=0)
    fabric = Fabric(engine, build_topology("switch", HOSTS), bandwidth_GBps=450,
                    latency_ns=1000)
    env = engine.env
    t0 = time.process_time()
    for i in range(n):
        env._now = i * 300
        fabric.reserve(i % 4, 4 + (i & 1), 4096 + (i % 7) * 512)
    return (time.process_time() - t0) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reservations", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    bare = bare_simpy()["events_per_cpu_s"]
    best = min(reserve_us(args.reservations) for _ in range(args.repeats))
    print(f"Fabric.reserve: {best:.2f} us a reservation (best of {args.repeats} x "
          f"{args.reservations:,}); bare SimPy {bare / 1e6:.2f} M events per CPU second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
