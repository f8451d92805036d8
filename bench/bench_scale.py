"""How the simulator scales, each figure beside bare SimPy's speed measured in the same run
(the machines are noisy, so ratios travel better than seconds).

    python bench/bench_scale.py                          # every section (hours: see --help)
    python bench/bench_scale.py --sections bare,default --default-requests 200
    python bench/bench_scale.py --sections memory --memory-requests 10000,100000 \\
        --granularity step --tracemalloc --json mem.json

Sections (each run is a fresh child process, so its peak RSS is its own):

- ``bare``: bare SimPy, ten processes yielding plain timeouts: the kernel's own events/s,
  measured before and after the runs (the figure used is their mean);
- ``default``: ``workloads/default.yaml`` (its ``run.requests``, 600, or ``--default-requests``);
- ``azure``: the Azure LLM 2023 conversation trace (``data/azure-llm-2023``, 19,366
  requests; ``--azure-limit``) as arrivals on the default cluster, in real time;
- ``synthetic``: the default workload for ``--synthetic-requests`` requests (1,000,000),
  Poisson arrivals, the same sizes;
- ``memory``: peak RSS against requests simulated (``--memory-requests``, default
  10k,100k,1M) on the default workload; with ``--tracemalloc`` also what holds the memory
  by the run, by source line, in a separate run of the smallest size (tracemalloc slows a
  run ~2-3x); ``--output-tokens N`` makes every request generate N tokens, so that a
  million requests fit in minutes; ``--write`` makes each run write its results folder
  too (requests.csv, timeseries.csv, the report and its plots), so the peak covers that.

Every run is at ``--granularity`` (default ``layer``, the faithful mode). Per run: wall
time of the simulation proper (``run_info.wall_time_s``), CPU time, SimPy events, events/s
and its ratio to bare SimPy's, simulated requests per wall second, peak RSS of the child
(``resource.getrusage``) and its RSS before the run (imports and the config), so the
difference is what the run itself took. ``s_at_750k_bare`` scales the run's CPU time to a
machine where bare SimPy does 750k events/s (the reference machine of issue 13's goals).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "workloads" / "default.yaml"
AZURE = ROOT / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
AZURE_REQUESTS = 19_366
SECTIONS = ("bare", "default", "azure", "synthetic", "memory")


# -- in the child -------------------------------------------------------------------------
def rss_mib() -> float:
    """Peak resident set of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """Resident set of this process now, MiB (from /proc; the peak where that is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return rss_mib()


def bare_simpy(events: int = 1_000_000, procs: int = 10) -> dict[str, Any]:
    """Events/s of SimPy alone: ``procs`` processes each yielding ``events / procs`` plain
    timeouts of 1 time unit."""
    import simpy

    env = simpy.Environment()
    per = events // procs

    def proc(env: simpy.Environment) -> Any:
        for _ in range(per):
            yield env.timeout(1)

    for _ in range(procs):
        env.process(proc(env))
    t0, c0 = time.perf_counter(), time.process_time()
    env.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = per * procs + procs  # the timeouts and each process's start
    return {"events": n, "wall_s": wall, "cpu_s": cpu, "events_per_s": n / wall,
            "events_per_cpu_s": n / cpu}


def overrides_for(kind: str, requests: int | None, granularity: str) -> dict[str, Any]:
    """The ``--set``-style overrides of one benchmark run over workloads/default.yaml."""
    over: dict[str, Any] = {"run.granularity": granularity}
    if kind == "azure":
        over["name"] = "azure-conv"
        over["workload.arrivals"] = {"kind": "trace", "path": str(AZURE), "format": "azure",
                                     "time_scale": 1.0}
        over["run.requests"] = requests or AZURE_REQUESTS
    elif requests is not None:
        over["run.requests"] = requests
    return over


def _where(frame: Any) -> str:
    path = Path(frame.filename)
    try:
        name = path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        name = path.name
    return f"{name}:{frame.lineno}"


def child(kind: str, requests: int | None, granularity: str, trace_top: int,
          output_tokens: int | None = None, write: bool = False) -> dict[str, Any]:
    """One run in this (fresh) process; the figures as a dict. With ``trace_top``, the
    memory the run itself allocated (tracemalloc, started after the imports and the config
    load) by source line, at its end and at its peak. With ``write``, the run also writes
    its results folder (requests.csv, the report and its plots, as ``moska-sim run`` does)
    into a temporary folder, removed afterwards; ``write_s`` is the time that took."""
    from sim.config import load_config
    from sim.run import run_simulation

    over = overrides_for(kind, requests, granularity)
    if output_tokens is not None:
        over["workload.output_tokens"] = output_tokens
    cfg = load_config(DEFAULT, over)
    if trace_top:
        import tracemalloc

        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
    rss_before = current_rss_mib()
    t0 = time.perf_counter()
    result = run_simulation(cfg, progress=False, write=False)
    total = time.perf_counter() - t0
    rss_after_run = rss_mib()
    write_s = report = None
    if write:
        import shutil
        import tempfile

        from sim.run.results import write_results

        tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
        try:
            t1 = time.perf_counter()
            write_results(result, tmp / "run")
            write_s = time.perf_counter() - t1
            report = json.loads((tmp / "run" / "run_info.json").read_text())["report"]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    info, s = result.run_info, result.summary
    row: dict[str, Any] = {
        "kind": kind, "granularity": granularity, "output_tokens": output_tokens or "file",
        "requests": s["requests_arrived"], "completed": s["requests_completed"],
        "sim_time_s": s["sim_time_s"], "wall_s": info["wall_time_s"],
        "wall_incl_setup_s": total, "cpu_s": info["cpu_time_s"],
        "events": info["events"], "events_per_s": info["events_per_s"],
        "requests_per_wall_s": info["simulated_requests_per_wall_s"],
        "tokens_generated": s["tokens_generated"],
        "rss_before_run_mib": rss_before, "peak_rss_mib": rss_mib(),
        "peak_rss_before_write_mib": rss_after_run, "write_s": write_s, "report": report,
    }
    if trace_top:
        import tracemalloc

        after = tracemalloc.take_snapshot()
        _cur, peak = tracemalloc.get_traced_memory()
        diff = after.compare_to(before, "lineno")
        row["tracemalloc_peak_mib"] = peak / 2**20
        row["tracemalloc_held_at_end_mib"] = sum(d.size_diff for d in diff) / 2**20
        row["tracemalloc_top"] = [
            {"where": _where(d.traceback[0]), "mib": d.size_diff / 2**20,
             "blocks": d.count_diff, "bytes_per_request": d.size_diff / max(1, s["requests_arrived"])}
            for d in diff[:trace_top]]
    return row


# -- in the parent ------------------------------------------------------------------------
def run_child(kind: str, requests: int | None, granularity: str, trace_top: int = 0,
              timeout_s: float | None = None, output_tokens: int | None = None,
              write: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind,
           "--granularity", granularity, "--trace-top", str(trace_top)]
    if write:
        cmd.append("--write")
    if output_tokens is not None:
        cmd += ["--output-tokens", str(output_tokens)]
    if requests is not None:
        cmd += ["--requests", str(requests)]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "requests": requests, "granularity": granularity,
                "error": f"stopped after {timeout_s:.0f} s (--timeout)"}
    except subprocess.CalledProcessError as exc:
        return {"kind": kind, "requests": requests, "granularity": granularity,
                "error": exc.stderr.strip().splitlines()[-1] if exc.stderr else str(exc)}
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["child_wall_s"] = time.perf_counter() - t0
    print(json.dumps(row), file=sys.stderr, flush=True)  # each run as it ends (long sections)
    return row


def with_ratios(rows: list[dict[str, Any]], bare: dict[str, float]) -> list[dict[str, Any]]:
    """Each run's speed as a fraction of bare SimPy's, by wall time and by CPU time (the
    steadier one on a loaded machine), and the wall time it would take where bare SimPy
    does 750k events/s (the issue's reference machine)."""
    for r in rows:
        if r.get("events_per_s"):
            r["events_per_s_vs_bare"] = r["events_per_s"] / bare["events_per_s"]
            r["events_per_cpu_s"] = r["events"] / r["cpu_s"]
            r["events_per_cpu_s_vs_bare"] = r["events_per_cpu_s"] / bare["events_per_cpu_s"]
            r["s_at_750k_bare"] = r["cpu_s"] * bare["events_per_cpu_s"] / 750_000
    return rows


def table(title: str, rows: list[dict[str, Any]], keys: list[str]) -> None:
    print(f"\n## {title}")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k, "")
            cells.append(f"{v:,.3g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int)
                         else str(v))
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()


KEYS = ["kind", "granularity", "requests", "completed", "sim_time_s", "wall_s", "cpu_s",
        "events", "events_per_s", "events_per_s_vs_bare", "events_per_cpu_s_vs_bare",
        "requests_per_wall_s", "rss_before_run_mib", "peak_rss_mib", "s_at_750k_bare", "error"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated, of {', '.join(SECTIONS)} (default: all)")
    ap.add_argument("--granularity", default="layer", choices=("layer", "step"),
                    help="run.granularity of every run (default layer: the faithful mode)")
    ap.add_argument("--default-requests", type=int, default=None,
                    help="run.requests of the default section (default: the file's, 600)")
    ap.add_argument("--azure-limit", type=int, default=None,
                    help=f"the first N trace requests (default all {AZURE_REQUESTS:,})")
    ap.add_argument("--synthetic-requests", type=int, default=1_000_000)
    ap.add_argument("--memory-requests", default="10000,100000,1000000")
    ap.add_argument("--output-tokens", type=int, default=None, metavar="N",
                    help="memory and synthetic sections: every request generates N tokens "
                         "(default: the file's lognormal, mean 200); a small N makes a "
                         "million requests affordable")
    ap.add_argument("--tracemalloc", type=int, nargs="?", const=12, default=0, metavar="TOP",
                    help="memory section: also a tracemalloc run of the largest size, "
                         "printing the TOP source lines holding memory at its end (12)")
    ap.add_argument("--write", action="store_true",
                    help="memory section: each run also writes its results folder (the "
                         "report included) to a temporary folder, as moska-sim run does; "
                         "peak RSS then covers writing too")
    ap.add_argument("--timeout", type=float, default=None, metavar="S",
                    help="stop any one run after S seconds (reported, not fatal)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--trace-top", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.requests, args.granularity, args.trace_top,
                               args.output_tokens, args.write)))
        return 0

    sections = [s for s in args.sections.split(",") if s]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        ap.error(f"--sections: unknown {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    out: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "cpus": os.cpu_count(), "granularity": args.granularity,
                           "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    bare = [bare_simpy()]
    g = args.granularity
    if "default" in sections:
        out["default"] = [run_child("default", args.default_requests, g, timeout_s=args.timeout)]
    if "azure" in sections:
        out["azure"] = [run_child("azure", args.azure_limit, g, timeout_s=args.timeout)]
    if "synthetic" in sections:
        out["synthetic"] = [run_child("synthetic", args.synthetic_requests, g,
                                      timeout_s=args.timeout,
                                      output_tokens=args.output_tokens)]
    if "memory" in sections:
        sizes = [int(x) for x in args.memory_requests.split(",") if x]
        rows = [run_child("memory", n, g, timeout_s=args.timeout,
                          output_tokens=args.output_tokens, write=args.write) for n in sizes]
        for r in rows:
            if "peak_rss_mib" in r and r.get("requests"):
                r["run_mib"] = r["peak_rss_mib"] - r["rss_before_run_mib"]
                r["run_kib_per_request"] = r["run_mib"] * 1024 / r["requests"]
        out["memory"] = rows
        if args.tracemalloc and sizes:
            out["memory_tracemalloc"] = run_child("memory", min(sizes), g, args.tracemalloc,
                                                  timeout_s=args.timeout,
                                                  output_tokens=args.output_tokens)
    bare.append(bare_simpy())
    bare_eps = {k: sum(b[k] for b in bare) / len(bare)
                for k in ("events_per_s", "events_per_cpu_s")}
    out["bare"] = bare
    out["bare_mean"] = bare_eps
    table("bare SimPy (ten processes, plain timeouts), before and after the runs", bare,
          ["events", "wall_s", "cpu_s", "events_per_s", "events_per_cpu_s"])
    for name in ("default", "azure", "synthetic"):
        if name in out:
            table(f"{name} at granularity {g}", with_ratios(out[name], bare_eps), KEYS)
    if "memory" in out:
        table(f"memory: peak RSS against requests simulated (granularity {g})",
              with_ratios(out["memory"], bare_eps),
              KEYS[:-1] + ["run_mib", "run_kib_per_request", "peak_rss_before_write_mib",
                           "write_s", "report", "error"])
        tm = out.get("memory_tracemalloc")
        if tm and "tracemalloc_top" in tm:
            print(f"\n## tracemalloc, {tm['requests']:,}-request run: allocated by the run and "
                  f"held at its end {tm['tracemalloc_held_at_end_mib']:.1f} MiB, peak "
                  f"{tm['tracemalloc_peak_mib']:.1f} MiB (peak RSS {tm['peak_rss_mib']:.0f} MiB)")
            table("top source lines (held at the end)", tm["tracemalloc_top"],
                  ["where", "mib", "blocks", "bytes_per_request"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
