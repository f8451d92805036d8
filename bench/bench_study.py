"""How much faster a study runs on a Dask cluster of 2 workers than of 1 (and in this process
alone), beside bare SimPy's speed measured in the same run.

    python bench/bench_study.py                       # 8 configs of 300 requests (~2-4 min)
    python bench/bench_study.py --points 16 --requests 600 --workers 1,2,4 --json s.json

The study is ``moska-sim sweep workloads/default.yaml --param batching.window_us=...`` with
``--points`` values of the batching window and ``run.requests`` = ``--requests``, every
run at ``--granularity`` (default ``step``). For each worker count: a fresh
``distributed.LocalCluster`` (processes, one thread each, as ``dask worker --nthreads 1``),
then the whole study into a fresh folder (nothing cached), timed from submitting the first
run to the report written; the cluster's start is timed apart. The reports of every worker
count are checked to be the same bytes. Speed-up = wall(1 worker) / wall(N workers).
Needs the dask extra (``pip install -e '.[dask]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import bare_simpy

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "workloads" / "default.yaml"


def study_inputs(points: int, requests: int, granularity: str) -> Any:
    from sim.studies.grid import grid_inputs, parse_param

    windows = ",".join(str(25 * i) for i in range(points))
    return grid_inputs(DEFAULT, [parse_param(f"batching.window_us={windows}")],
                       {"run.requests": requests, "run.granularity": granularity},
                       "bench-study")


def same_report(a: Path, b: Path) -> bool:
    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and "cache" not in p.relative_to(root).parts
                and p.name != "run_info.json"}

    return files(a) == files(b)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=8, help="configs in the study (default 8)")
    ap.add_argument("--requests", type=int, default=300, help="run.requests of each (300)")
    ap.add_argument("--granularity", default="step", choices=("step", "layer"))
    ap.add_argument("--workers", default="1,2", help="Dask worker counts (default 1,2)")
    ap.add_argument("--local", action="store_true",
                    help="also run the study in this process alone (--jobs 1)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import distributed

    from sim.studies.backends import DaskBackend, LocalBackend
    from sim.studies.runner import run_compare

    inputs = study_inputs(args.points, args.requests, args.granularity)
    work = Path(tempfile.mkdtemp(prefix="bench-study-"))
    out: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "points": args.points, "requests": args.requests,
                           "granularity": args.granularity, "runs": []}
    bare = [bare_simpy()]
    folders = []
    try:
        counts = [int(x) for x in args.workers.split(",") if x]
        for n in counts:
            t0 = time.perf_counter()
            with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                          dashboard_address=None) as cluster, \
                    distributed.Client(cluster, set_as_default=False) as client:
                start_s = time.perf_counter() - t0
                folder = work / f"dask-{n}"
                t1, c1 = time.perf_counter(), time.process_time()
                result = run_compare(inputs, folder, progress=False, backend=DaskBackend(client))
                wall = time.perf_counter() - t1
                client_cpu = time.process_time() - c1
            folders.append(folder)
            run_walls = sorted(result.wall_s.values())
            out["runs"].append({"backend": f"dask, {n} worker(s)", "workers": n,
                                "cluster_start_s": start_s, "study_wall_s": wall,
                                "client_cpu_s": client_cpu, "runs": result.ran,
                                "sum_run_wall_s": sum(run_walls)})
            print(f"dask {n} worker(s): study {wall:.1f} s (cluster start {start_s:.1f} s; "
                  f"sum of run walls {sum(run_walls):.1f} s)", file=sys.stderr)
        if args.local:
            folder = work / "local-1"
            t1 = time.perf_counter()
            result = run_compare(inputs, folder, progress=False, backend=LocalBackend(1))
            wall = time.perf_counter() - t1
            folders.append(folder)
            out["runs"].append({"backend": "this process (--jobs 1)", "workers": 1,
                                "cluster_start_s": 0.0, "study_wall_s": wall,
                                "runs": result.ran,
                                "sum_run_wall_s": sum(result.wall_s.values())})
        bare.append(bare_simpy())
        out["bare"] = bare
        bare_eps = sum(b["events_per_s"] for b in bare) / len(bare)
        out["bare_events_per_s"] = bare_eps
        out["same_report"] = all(same_report(folders[0], f) for f in folders[1:])
        base = out["runs"][0]["study_wall_s"]
        print("\n| backend | cluster start s | study wall s | speed-up vs 1 worker | "
              "runs per wall s | runs per wall s / bare SimPy Mevents/s |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in out["runs"]:
            r["speedup_vs_1"] = base / r["study_wall_s"]
            r["runs_per_wall_s"] = r["runs"] / r["study_wall_s"]
            r["runs_per_wall_s_per_bare_mevents"] = r["runs_per_wall_s"] / (bare_eps / 1e6)
            print(f"| {r['backend']} | {r['cluster_start_s']:.1f} | {r['study_wall_s']:.1f} | "
                  f"{r['speedup_vs_1']:.2f}x | {r['runs_per_wall_s']:.3f} | "
                  f"{r['runs_per_wall_s_per_bare_mevents']:.3f} |")
        print(f"\nbare SimPy: {bare_eps:,.0f} events/s (mean of before and after); "
              f"reports identical across backends: {out['same_report']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out.get("same_report", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
