"""Run one experiment: config -> arrivals -> cluster -> SimPy run -> summary -> results folder.

``simulate`` is the engine proper (an ``EngineSpec`` and a list of requests in, records
out); ``run_simulation`` adds the config, the workload's arrivals and the results folder;
``run_main`` is ``moska-sim run``.

Stopping. With ``run.duration_s`` the run stops at that simulated time (requests still
waiting or running are *in flight*), or earlier if every planned request has finished;
with only ``run.requests`` it drains: it ends when the last request completes.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.cluster import Cluster, EngineSpec, spec_from_config
from sim.engine import Engine
from sim.metrics import MAX_SAMPLES, Sampler, summarize, timeseries
from sim.routing import QueryRouter
from workloads.request import RequestSpec

MAX_LINK_SERIES = 64  # link queue series in timeseries.csv (larger fabrics: none)
RouterFactory = Callable[[int, np.random.Generator], Any]  # (corpus, rng) -> .select(n)


@dataclass
class RunResult:
    """What a run produced: the summary, per-request records, time series, run info."""

    summary: dict
    requests_header: list[str]
    requests_rows: list[list[Any]]
    timeseries_header: list[str]
    timeseries_rows: np.ndarray
    run_info: dict
    config: Any = None
    out_dir: Path | None = None
    cluster: Cluster | None = field(default=None, repr=False)
    timeline: Any = field(default=None, repr=False)  # sim.timeline.Timeline, if recorded


# -- progress ---------------------------------------------------------------------------
@contextlib.contextmanager
def _progress_bar(enabled: bool, total: float, unit: str) -> Iterator[Callable[[float], None]]:
    """A rich progress bar on stderr, or a no-op when disabled or not a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield lambda _x: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    digits = 2 if unit == "s" else 0
    with Progress(TextColumn("[bold]simulating"), BarColumn(),
                  TextColumn(f"{{task.completed:,.{digits}f}}/{{task.total:,.{digits}f}} {unit}"),
                  TimeElapsedColumn(), transient=True) as bar:
        task = bar.add_task("sim", total=total)
        last = [0.0]

        def update(x: float) -> None:
            now = time.perf_counter()
            if now - last[0] > 0.1:
                last[0] = now
                bar.update(task, completed=min(x, total))

        yield update


# -- the engine proper ------------------------------------------------------------------
def _default_router_factory(spec: EngineSpec, popularity: Any) -> RouterFactory:
    from workloads.sharing import ChunkRouter, SharedCorpusSpec

    if spec.corpus_tokens is not None:  # each corpus its own size (a Mooncake trace)
        def per_corpus(c: int, rng: np.random.Generator) -> ChunkRouter:
            t = max(1, spec.corpus_tokens[c])
            return ChunkRouter(SharedCorpusSpec(
                tokens=t, chunk_tokens=min(spec.chunk_tokens, t),
                keep_fraction=spec.keep_fraction, popularity=popularity), rng)
        return per_corpus
    corpus = SharedCorpusSpec(tokens=spec.shared_tokens, chunk_tokens=spec.chunk_tokens,
                              keep_fraction=spec.keep_fraction, popularity=popularity,
                              corpora=spec.corpora)
    return lambda _corpus, rng: ChunkRouter(corpus, rng)


def _is_uniform(popularity: Any) -> bool:
    """'uniform', or Zipf with exponent 0 (config: ``popularity: uniform | {zipf: s}``)."""
    if popularity is None or popularity == "uniform":
        return True
    s = popularity.get("zipf") if isinstance(popularity, dict) else getattr(popularity, "zipf", None)
    return s is not None and float(s) == 0.0


def simulate(
    spec: EngineSpec,
    requests: list[RequestSpec],
    *,
    closed_loop_concurrency: int | None = None,
    make_router: RouterFactory | None = None,
    popularity: Any = "uniform",
    sharing: dict | None = None,
    progress: bool = False,
    timeline: Any = None,
) -> RunResult:
    """Simulate ``requests`` on the cluster ``spec`` describes; no files are written.

    ``timeline`` (a ``sim.timeline.TimelineOptions``) records a Chrome/Perfetto trace into
    ``RunResult.timeline``; None (the default) records nothing."""
    engine = Engine(spec.seed)
    env = engine.env
    cluster = Cluster(engine, spec, requests, closed_loop_concurrency=closed_loop_concurrency)
    tl = None
    if timeline is not None:
        from sim.timeline import Timeline

        tl = Timeline(timeline).attach(cluster)
    if cluster.remote_shared:
        factory = make_router or _default_router_factory(spec, popularity)
        rng = engine.rng["routing"]
        cluster.routers = []
        offset = 0  # corpus c's chunks are global chunks offset .. offset + n - 1
        for c, n in enumerate(spec.corpus_chunk_counts):
            chunk_router = factory(c, rng)
            if hasattr(chunk_router, "query_router"):  # e.g. sim.replay: counts its own way
                cluster.routers.append(chunk_router.query_router(n, spec.shared_nodes, rng,
                                                                 offset=offset))
            else:
                k = int(getattr(chunk_router, "k", spec.keep_chunks_of(n)))
                cluster.routers.append(QueryRouter(chunk_router, n, k, spec.shared_nodes, rng,
                                                   uniform=_is_uniform(popularity),
                                                   offset=offset))
            offset += n

    def gauges() -> list[float]:
        run = sum(u.running for u in cluster.unique)
        wait = sum(len(u.waiting) for u in cluster.unique)
        row = [float(run), float(wait), float(cluster.occupancy.n)]
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
    horizon = spec.duration_ns or max((r.arrival_ns for r in requests), default=0) or 10**9
    sampler = Sampler(gauges, names, max(1000, horizon // MAX_SAMPLES))

    if spec.duration_ns is not None:
        target, unit = spec.duration_ns / 1e9, "s"
    else:
        target, unit = float(len(requests)), "requests"

    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    with _progress_bar(progress, target, unit) as update:
        base_gauges = sampler.gauges

        def gauges_with_progress() -> list[float]:
            update(env.now / 1e9 if unit == "s" else float(cluster._finished))
            return base_gauges()

        sampler.gauges = gauges_with_progress
        env.process(sampler.process(env))
        cluster.start()
        if spec.duration_ns is not None:
            stop = env.any_of([cluster.done, env.timeout(spec.duration_ns)])
        else:
            stop = cluster.done
        env.run(until=stop)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    t_end = int(env.now)
    assert isinstance(env.now, int), "the clock left the integers"
    for u in cluster.unique:
        u.flush_generated()
    if tl is not None:
        tl.finish(cluster, t_end)
    if not sampler.times or sampler.times[-1] < t_end:
        sampler.sample(t_end)
    summary = summarize(cluster, t_end, sampler, sharing)
    ts_names, ts_rows = timeseries(cluster, sampler, t_end)
    req_header, req_rows = request_rows(cluster)
    events = engine.events_scheduled
    run_info = {
        "wall_time_s": wall,
        "cpu_time_s": cpu,
        "events": events,
        "events_per_s": events / wall if wall > 0 else None,
        "simulated_requests_per_wall_s": summary["requests_arrived"] / wall if wall > 0 else None,
        "sim_seconds_per_wall_second": (t_end / 1e9) / wall if wall > 0 else None,
        "price_cache_shapes": cluster.pricer.cache_sizes(),
        "routing_draws": {"exact": sum(r.exact_draws for r in cluster.routers),
                          "binomial": sum(r.binomial_draws for r in cluster.routers)},
    }
    if tl is not None:
        run_info["timeline"] = tl.summary()
    return RunResult(summary, req_header, req_rows, ts_names, ts_rows, run_info,
                     cluster=cluster, timeline=tl)


def request_rows(cluster: Cluster) -> tuple[list[str], list[list[Any]]]:
    """Per-request records for ``requests.csv`` (times in ms; blank where not reached)."""
    from sim.metrics import latencies

    log = cluster.log
    lat = latencies(log)
    header = ["id", "node", "status", "arrival_ms", "admitted_ms", "first_token_ms",
              "completion_ms", "unique_tokens", "shared_tokens", "output_tokens",
              "tokens_generated", "ttft_ms", "tpot_ms", "e2e_ms"]
    arrived = np.nonzero(log.arrival_ns >= 0)[0]

    def ms(a: np.ndarray) -> list[str]:
        return ["" if v < 0 else f"{v / 1e6:.6f}" for v in a.tolist()]

    def fl(a: np.ndarray) -> list[str]:
        return ["" if not np.isfinite(v) else f"{v:.6f}" for v in a.tolist()]

    node_names = [u.name for u in cluster.unique]
    cols = [
        arrived.tolist(),
        ["" if n < 0 else node_names[n] for n in log.node[arrived].tolist()],
        [log.STATUS_NAMES[s] for s in log.status[arrived].tolist()],
        ms(log.arrival_ns[arrived]), ms(log.admit_ns[arrived]), ms(log.first_ns[arrived]),
        ms(log.done_ns[arrived]),
        log.unique_tokens[arrived].tolist(), log.shared_tokens[arrived].tolist(),
        log.output_tokens[arrived].tolist(), log.generated[arrived].tolist(),
        fl(lat.ttft_ms[arrived]), fl(lat.tpot_ms[arrived]), fl(lat.e2e_ms[arrived]),
    ]
    return header, [list(r) for r in zip(*cols)]


# -- from a config ----------------------------------------------------------------------
def plan_from_config(cfg: Any, spec: EngineSpec, engine_seed_streams: Any = None) -> Any:
    """The workload's arrival plan (``workloads.arrivals.build_arrivals``) for ``cfg``."""
    from sim.engine import RngStreams
    from workloads.arrivals import build_arrivals
    from workloads.distributions import TokenDistribution
    from workloads.sharing import SharedCorpusSpec

    wl = cfg.workload
    arr = wl.arrivals
    rng = engine_seed_streams or RngStreams(spec.seed)
    shared = None
    if spec.shared_tokens:
        shared = SharedCorpusSpec(tokens=spec.shared_tokens, chunk_tokens=spec.chunk_tokens,
                                  keep_fraction=spec.keep_fraction,
                                  popularity=wl.shared.popularity, corpora=spec.corpora)
    return build_arrivals(
        arr.kind,
        rate_per_s=getattr(arr, "rate_per_s", None),
        cv=getattr(arr, "cv", None),
        concurrency=getattr(arr, "concurrency", None),
        path=getattr(arr, "path", None),
        format=getattr(arr, "format", None),
        time_scale=getattr(arr, "time_scale", None) or 1.0,
        unique_tokens=TokenDistribution.from_config(wl.unique_tokens, "workload.unique_tokens"),
        output_tokens=TokenDistribution.from_config(wl.output_tokens, "workload.output_tokens"),
        shared=shared,
        rng_arrivals=rng["arrivals"],
        rng_sizes=rng["sizes"],
        max_requests=spec.requests,
        duration_ns=spec.duration_ns,
    )


def _sharing_dict(stats: Any) -> dict | None:
    if stats is None:
        return None
    if hasattr(stats, "to_dict"):
        return stats.to_dict()
    if hasattr(stats, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(stats)
    return dict(stats) if isinstance(stats, dict) else {"value": str(stats)}


def run_simulation(config: Any, out_dir: Path | str | None = None, progress: bool = True,
                   *, write: bool = True, timeline: Any = None) -> RunResult:
    """Simulate ``config`` (an ``ExperimentConfig`` or a path to its YAML) and, unless
    ``write`` is False, write its results folder (default ``results/<name>-<time>/``).
    ``timeline`` (``sim.timeline.TimelineOptions``): also write ``timeline.json``."""
    if isinstance(config, (str, Path)):
        from sim.config import load_config

        config = load_config(Path(config))
    spec = spec_from_config(config)
    from sim.cluster import memory_plan

    memory_plan(spec)  # fail on an impossible deployment before building the workload
    plan = plan_from_config(config, spec)
    spec = with_workload_corpora(spec, plan)
    wl_shared = getattr(config.workload, "shared", None)
    popularity = getattr(wl_shared, "popularity", "uniform") if wl_shared else "uniform"
    result = simulate(spec, list(plan.requests),
                      closed_loop_concurrency=getattr(plan, "closed_loop_concurrency", None),
                      popularity=popularity, sharing=_sharing_dict(getattr(plan, "sharing", None)),
                      progress=progress, timeline=timeline)
    result.config = config
    result.summary["config"] = _config_dict(config)
    if write:
        from sim.results import write_results

        result.out_dir = write_results(result, out_dir)
    return result


def with_workload_corpora(spec: EngineSpec, plan: Any) -> EngineSpec:
    """The spec with the plan's own corpora (a Mooncake trace: each corpus's size read off
    the trace) in place of the configured ones; unchanged when the plan has none, or when
    the run has no configured shared corpus to take the chunking from."""
    sizes = getattr(plan, "corpus_tokens", None)
    if not sizes or not spec.shared_tokens:
        return spec
    import dataclasses

    from sim.cluster import memory_plan

    spec = dataclasses.replace(spec, corpus_tokens=tuple(int(t) for t in sizes),
                               corpora=len(sizes))
    memory_plan(spec)  # the trace's corpora must fit too
    return spec


def _config_dict(config: Any) -> dict:
    """The resolved config as plain data (for the summary and the report)."""
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    return dict(config) if isinstance(config, dict) else {}


def check_out_dir(out: Path | None) -> None:
    """Fail before simulating when ``--out`` names a folder that is not empty."""
    if out is not None and out.exists() and any(out.iterdir()):
        raise ValueError(f"--out: {out} exists and is not empty")


def summary_line(s: dict) -> str:
    """The one-line outcome a command prints: requests, simulated time, throughput."""
    return (f"{s['requests_completed']} completed, {s['requests_in_flight']} in flight, "
            f"{s['requests_rejected']} rejected in {s['sim_time_s']:.3f} s simulated; "
            f"{s['throughput_tokens_per_s']:.1f} tokens/s")


def run_main(argv: list[str]) -> int:
    """``moska-sim run CONFIG [--out DIR] [--no-progress] [--timeline [--timeline-window
    START:END] [--timeline-max-events N]]``."""
    parser = argparse.ArgumentParser(prog="moska-sim run",
                                     description="Simulate one experiment YAML.")
    parser.add_argument("config", type=Path, help="experiment YAML")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default results/<name>-<YYYYmmdd-HHMMSS>/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from sim.timeline import add_timeline_arguments, options_from_args, print_note

    add_timeline_arguments(parser)
    args = parser.parse_args(argv)
    try:
        timeline = options_from_args(args)
        check_out_dir(args.out)
        result = run_simulation(args.config, args.out, progress=not args.no_progress,
                                timeline=timeline)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"moska-sim run: error: {exc}", file=sys.stderr)
        return 2
    print_note(result.timeline)
    s = result.summary
    print(f"{s['name']}: {summary_line(s)}; results in {result.out_dir}")
    return 0


__all__ = [
    "RunResult",
    "plan_from_config",
    "request_rows",
    "run_main",
    "run_simulation",
    "simulate",
]
