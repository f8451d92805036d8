"""Simulate one experiment: build the cluster, run the SimPy clock until every request has
finished (or ``run.duration_s``), and collect the summary, per-request rows and time
series. ``simulate`` is the one entry point that ``run``, ``replay``, ``compare`` and
``sweep`` all use; ``run_experiment`` adds the results folder.

Stopping. With ``run.duration_s`` the run stops at that simulated time (requests still
waiting or running are *in flight*), or earlier if every planned request has finished;
with only ``run.requests`` it drains: it ends when the last request completes.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from sim.engine.cluster import Cluster, RouterFactory
from sim.engine.experiment import Experiment
from sim.engine.kernel import Engine
from sim.engine.records import MAX_SAMPLES, Sampler
from sim.engine.timeline import Timeline, TimelineOptions
from sim.run.request_records import RequestRecords
from sim.run.summary import summarize, timeseries
from sim.units import format_duration
from workloads.request import RequestTable

MAX_LINK_SERIES = 64  # link queue series in timeseries.csv (larger fabrics: none)


@dataclass
class RunResult:
    """What a run produced: the summary, per-request records, time series, run info."""

    summary: dict
    requests: RequestRecords  # requests.csv, formatted a block at a time
    timeseries_header: list[str]
    timeseries_rows: np.ndarray
    run_info: dict
    config: Any = None
    out_dir: Path | None = None
    cluster: Cluster | None = field(default=None, repr=False)
    timeline: Timeline | None = field(default=None, repr=False)

    @property
    def requests_header(self) -> list[str]:
        return list(self.requests.header)

    @property
    def requests_rows(self) -> list[list[Any]]:
        """Every row of ``requests.csv`` as Python values, built on each call (O(requests)
        objects: for small runs and tests; files are written from ``requests`` in blocks)."""
        return self.requests.rows()


# -- progress ---------------------------------------------------------------------------
@contextlib.contextmanager
def _progress_bar(enabled: bool, total: float, unit: str, *,
                  clock: Callable[[], float] = time.perf_counter,
                  stream: TextIO | None = None) -> Iterator[Callable[[float], None]]:
    """A rich progress bar on stderr (``stream``), with the time elapsed and an estimate of
    the time left; when it is not a terminal (a log, CI), a plain line saying the same per
    tenth of the run at most every 5 s; a no-op when disabled. The estimate assumes the
    rest of the run goes at its pace so far (simulated requests or seconds per wall
    second)."""
    if not enabled:
        yield lambda _x: None
        return
    out = sys.stderr if stream is None else stream
    if not out.isatty():
        t0 = clock()
        state = {"t": t0, "frac": 0.0}

        def line(x: float) -> None:
            frac = min(1.0, x / total) if total else 1.0
            now = clock()
            if frac - state["frac"] >= 0.1 and now - state["t"] >= 5.0:
                state.update(t=now, frac=frac)
                digits = 2 if unit == "s" else 0
                elapsed = now - t0
                left = elapsed * (1.0 - frac) / frac
                print(f"simulating: {x:,.{digits}f}/{total:,.{digits}f} {unit} ({frac:.0%}), "
                      f"{format_duration(elapsed)} elapsed, ~{format_duration(left)} left",
                      file=out, flush=True)

        yield line
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    digits = 2 if unit == "s" else 0
    with Progress(TextColumn("[bold]simulating"), BarColumn(),
                  TextColumn(f"{{task.completed:,.{digits}f}}/{{task.total:,.{digits}f}} {unit}"),
                  TimeElapsedColumn(), TextColumn("elapsed,"), TimeRemainingColumn(),
                  TextColumn("left"), console=Console(file=out), transient=True) as bar:
        task = bar.add_task("sim", total=total)
        last = [0.0]

        def update(x: float) -> None:
            now = clock()
            if now - last[0] > 0.1:
                last[0] = now
                bar.update(task, completed=min(x, total))

        yield update


def simulate(experiment: Experiment, router: RouterFactory | None = None, *,
             progress: bool = False, timeline: TimelineOptions | None = None) -> RunResult:
    """Simulate ``experiment`` (its workload's requests on its cluster); no files are written.

    ``router`` replaces the workload's statistical chunk router (a replayed trace's
    routing); ``timeline`` records a Chrome/Perfetto trace into ``RunResult.timeline``."""
    exp = experiment
    requests = RequestTable.of(exp.workload.requests)
    engine = Engine(exp.seed)
    env = engine.env
    cluster = Cluster(engine, exp, make_router=router)
    rec = cluster.records
    tl = None
    if timeline is not None:
        tl = Timeline(timeline).attach(cluster)

    def gauges() -> list[float]:
        run = sum(u.running for u in cluster.unique)
        wait = sum(len(u.waiting) for u in cluster.unique)
        row = [float(run), float(wait), float(rec.occupancy.n)]
        if len(cluster.unique) <= 16:
            row += [float(len(u.waiting)) for u in cluster.unique]
        if len(cluster.shared) <= 16:
            row += [float(s.queue_length()) for s in cluster.shared]
        if fab is not None and len(fab.link_names) <= MAX_LINK_SERIES:
            row += [float(fab.queue_length(li)) for li in range(len(fab.link_names))]
        return row

    names = ["running", "queue.waiting", "in_system"]
    if len(cluster.unique) <= 16:
        names += [f"queue.{u.name}" for u in cluster.unique]
    if len(cluster.shared) <= 16:
        names += [f"queue.{s.name}" for s in cluster.shared]
    fab = cluster.fabric
    if fab is not None and len(fab.link_names) <= MAX_LINK_SERIES:
        names += [f"queue.{name}" for name in fab.link_names]
    last_arrival = int(requests.arrival_ns.max()) if len(requests) else 0
    horizon = exp.run.duration_ns or last_arrival or 10**9
    sampler = Sampler(gauges, names, max(1000, horizon // MAX_SAMPLES))
    rec.tokens.use_grid(sampler.dt, exp.run.warmup_ns)  # tokens binned on the sampler's grid

    if exp.run.duration_ns is not None:
        target, unit = exp.run.duration_ns / 1e9, "s"
    else:
        target, unit = float(len(requests)), "requests"

    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    with _progress_bar(progress, target, unit) as update:
        base_gauges = sampler.gauges

        def gauges_with_progress() -> list[float]:
            update(env.now / 1e9 if unit == "s" else float(cluster.driver.finished))
            return base_gauges()

        sampler.gauges = gauges_with_progress
        env.process(sampler.process(env))
        cluster.start()
        if exp.run.duration_ns is not None:
            stop = env.any_of([cluster.done, env.timeout(exp.run.duration_ns)])
        else:
            stop = cluster.done
        env.run(until=stop)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    t_end = int(env.now)
    assert isinstance(env.now, int), "the clock left the integers"
    for u in cluster.unique:
        u.flush_generated()
        u.close_round_trip(t_end)
    rec.log.finish()  # from here the log's columns are the whole run's, by request id
    if tl is not None:
        tl.finish(cluster, t_end)
    if not sampler.times or sampler.times[-1] < t_end:
        sampler.sample(t_end)
    summary = summarize(exp, cluster, t_end, exp.workload.sharing)
    ts_names, ts_rows = timeseries(rec.tokens, sampler, t_end)
    req_records = RequestRecords(rec.log, [u.name for u in cluster.unique])
    events = engine.events_scheduled
    run_info = {
        "wall_time_s": wall,
        "cpu_time_s": cpu,
        "events": events,
        "events_per_s": events / wall if wall > 0 else None,
        "simulated_requests_per_wall_s": summary["requests_arrived"] / wall if wall > 0 else None,
        "sim_seconds_per_wall_second": (t_end / 1e9) / wall if wall > 0 else None,
        "price_cache_shapes": cluster.pricer.cache_sizes(),
        "routing_draws": {"exact": cluster.router.exact_draws if cluster.router else 0,
                          "binomial": cluster.router.binomial_draws if cluster.router else 0},
    }
    if tl is not None:
        run_info["timeline"] = tl.summary()
    return RunResult(summary, req_records, ts_names, ts_rows, run_info,
                     cluster=cluster, timeline=tl)


def request_rows(cluster: Cluster) -> tuple[list[str], list[list[Any]]]:
    """Per-request records for ``requests.csv`` (times in ms; blank where not reached), as
    one list of rows (O(requests) objects; ``RequestRecords`` formats them in blocks)."""
    records = RequestRecords(cluster.log, [u.name for u in cluster.unique])
    return list(records.header), records.rows()


def run_simulation(config: Any, out_dir: Path | str | None = None, progress: bool = True,
                   *, write: bool = True, timeline: TimelineOptions | None = None,
                   overrides: dict | None = None) -> RunResult:
    """Simulate ``config`` (an ``ExperimentConfig`` or a path to its YAML, with optional
    dotted ``overrides``) and, unless ``write`` is False, write its results folder
    (default ``results/<name>-<time>/``; ``timeline``: also ``timeline.json``)."""
    from sim.config import load_config, resolve, with_overrides

    if isinstance(config, (str, Path)):
        config = load_config(Path(config), overrides)
    elif overrides:
        config = with_overrides(config, overrides)
    experiment = resolve(config)
    result = simulate(experiment, progress=progress, timeline=timeline)
    result.config = config
    result.summary["config"] = experiment.config
    if write:
        from sim.run.results import write_results

        result.out_dir = write_results(result, out_dir)
    return result


__all__ = ["MAX_LINK_SERIES", "RunResult", "request_rows", "run_simulation", "simulate"]
