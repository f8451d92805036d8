"""How fast the event engine simulates: events/s, simulated requests per wall second, cost
vs number of requests, and the whole Azure conversation trace on the default cluster.

    python bench/bench_engine.py                 # everything (the Azure trace at 1x takes minutes)
    python bench/bench_engine.py --quick         # smaller sizes, Azure trace compressed only
    python bench/bench_engine.py --azure-scales 1,0.1,0.02 --json out.json

Sections (each prints one table row per run):
- ``kernel``: one node serving one request at a time (M/D/1 at rho 0.8): the engine's
  per-event overhead with the lightest per-event work;
- ``default``: workloads/default.yaml as shipped;
- ``scaling``: the default workload at 1x, 2x and 4x the requests (cost should be linear);
- ``azure``: the Azure LLM 2023 conversation trace (19,366 requests) on the default
  cluster at granularity step, at each ``--azure-scales`` time scale (1 = real time; 0.1 =
  arrivals 10x denser).
Wall times are of the simulation proper (``run_info.wall_time_s``), not of start-up; CPU
times (``cpu_s``, the process's own) are the steadier figure on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "workloads" / "default.yaml"
AZURE = ROOT / "data" / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"


def _run_config(overrides: dict[str, Any]) -> dict[str, Any]:
    from sim.config import load_config
    from sim.run import run_simulation

    cfg = load_config(DEFAULT, overrides)
    t0 = time.perf_counter()
    r = run_simulation(cfg, progress=False, write=False)
    total = time.perf_counter() - t0
    info, s = r.run_info, r.summary
    return {
        "requests": s["requests_arrived"],
        "completed": s["requests_completed"],
        "sim_time_s": s["sim_time_s"],
        "wall_s": info["wall_time_s"],
        "cpu_s": info["cpu_time_s"],
        "wall_incl_setup_s": total,
        "events": info["events"],
        "events_per_s": info["events_per_s"],
        "requests_per_wall_s": info["simulated_requests_per_wall_s"],
        "tokens_per_s_simulated": s["throughput_tokens_per_s"],
    }


def bench_kernel(n: int) -> dict[str, Any]:
    """One node, one request at a time, one token each: M/D/1 at rho 0.8."""
    from sim.engine.experiment import make_experiment
    from sim.run import simulate
    from workloads.request import RequestSpec

    spec = make_experiment(system="shared_gemm", shared_tokens=0, unique_nodes=1, shared_nodes=0,
                     max_running=1, max_batch=1, requests=1)
    service = simulate(spec.with_requests([RequestSpec(0, 0, 1024, 1)])).summary["e2e_ms"]["mean"] * 1e6
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.exponential(service / 0.8, n)).astype(np.int64)
    reqs = [RequestSpec(i, int(a), 1024, 1) for i, a in enumerate(t.tolist())]
    r = simulate(make_experiment(system="shared_gemm", shared_tokens=0, unique_nodes=1,
                                 shared_nodes=0, max_running=1, max_batch=1,
                                 requests=n).with_requests(reqs))
    info = r.run_info
    return {"requests": n, "completed": r.summary["requests_completed"],
            "sim_time_s": r.summary["sim_time_s"], "wall_s": info["wall_time_s"],
            "cpu_s": info["cpu_time_s"],
            "events": info["events"], "events_per_s": info["events_per_s"],
            "requests_per_wall_s": info["simulated_requests_per_wall_s"]}


def bench_azure(scale: float, limit: int | None) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "name": f"azure-conv-x{scale:g}",
        "workload.arrivals": {"kind": "trace", "path": str(AZURE), "format": "azure",
                              "time_scale": scale},
        "run.requests": limit or 19_366,
        "run.granularity": "step",
    }
    row = _run_config(overrides)
    row["time_scale"] = scale
    return row


def _table(title: str, rows: list[dict[str, Any]], keys: list[str]) -> None:
    print(f"\n## {title}")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            cells.append(f"{v:,.3g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int)
                         else str(v))
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes; compressed trace only")
    ap.add_argument("--azure-scales", default=None,
                    help="comma-separated trace time scales (default 1,0.1; --quick: 0.1)")
    ap.add_argument("--azure-limit", type=int, default=None,
                    help="simulate only the first N trace requests")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    out: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "cpus": __import__("os").cpu_count()}
    base = 500 if args.quick else 2000
    keys = ["requests", "completed", "sim_time_s", "wall_s", "cpu_s", "events", "events_per_s",
            "requests_per_wall_s"]
    if "kernel" not in skip:
        rows = [bench_kernel(20_000 if args.quick else 100_000)]
        out["kernel"] = rows
        _table("kernel: M/D/1, one node, one request at a time", rows, keys)
    if "default" not in skip:
        rows = [_run_config({})]
        out["default"] = rows
        _table("default: workloads/default.yaml", rows, keys)
    if "scaling" not in skip:
        rows = []
        for mult in (1, 2, 4):
            row = _run_config({"run.requests": base * mult})
            row["x"] = mult
            rows.append(row)
        for row in rows:
            row["wall_vs_1x"] = row["wall_s"] / rows[0]["wall_s"]
            row["cpu_vs_1x"] = row["cpu_s"] / rows[0]["cpu_s"]
        out["scaling"] = rows
        _table("scaling: default workload, 1x / 2x / 4x requests", rows,
               ["x"] + keys + ["wall_vs_1x", "cpu_vs_1x"])
    if "azure" not in skip and AZURE.is_file():
        scales = [float(x) for x in (args.azure_scales or ("0.1" if args.quick else "1,0.1"))
                  .split(",")]
        rows = [bench_azure(s, args.azure_limit) for s in scales]
        out["azure"] = rows
        _table("azure: conversation trace, default cluster, granularity step", rows,
               ["time_scale"] + keys + ["tokens_per_s_simulated"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
