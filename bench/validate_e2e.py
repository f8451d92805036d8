"""End-to-end validation: the simulator's prediction of every shipped real serving run.

For each measurement file (``traces/validation/<deployment>/*.serving.json``, written by the real
serving loop ``python -m traces.serving`` on a GPU), this simulates the same deployment and load with
the *current* hardware model (``workloads/validation/<deployment>-<system>.yaml`` with the measured
point's load: closed-loop concurrency or Poisson rate, and request count) and prints measured against
simulated throughput and TPOT p50/p99 with relative errors. No simulated number is stored anywhere:
every run recomputes them, so a change to hw/ or sim/ shows up here at once. No GPU needed, no torch.

    python bench/validate_e2e.py                 # table
    python bench/validate_e2e.py --json          # machine-readable
    python bench/validate_e2e.py --plot docs/validation_tpot.png

Decode-only: the measured loop serves requests whose prompt KV is already resident (as handed over
by a prefill node); every token is a decode step. The config field ``workload.prefill_tokens: 0``
asks the simulator for the same; where this simulator does not have that field yet, the run falls
back to prefilling each request's unique tokens on arrival (``decode_only: false`` in the output),
which TPOT in lock-step closed loops does not see but throughput does. For that case the output also
gives ``sim_decode_rate_tokens_per_s`` = concurrency / simulated TPOT p50, the closed loop's token rate
without the prefill (a derived figure, labelled as such). docs/validation.md discusses each miss.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.config import load_config
from sim.run import run_simulation
from traces.serving.records import MeasurementError, read_measurement

DEFAULT_MEASUREMENTS = ROOT / "traces" / "validation" / "h200-colocated"
CONFIG_DIR = ROOT / "workloads" / "validation"
GOAL = 0.10  # |relative error| of throughput and TPOT p50 (issue 11); stretch 0.05
DTYPE_PRECISION = {"bf16": "bf16", "fp32": None}


def config_path(doc: dict[str, Any], deployment: str) -> Path:
    """The YAML of a measurement's deployment: ``<deployment>-<system>.yaml`` (underscores as
    dashes) in workloads/validation/; the deployment is the measurement folder's name."""
    system = doc["deployment"]["system"].replace("_", "-")
    return CONFIG_DIR / f"{deployment}-{system}.yaml"


def load_overrides(doc: dict[str, Any]) -> dict[str, Any]:
    """The measured point's load as config overrides."""
    load = doc["load"]
    if load["kind"] == "closed_loop":
        arrivals = {"kind": "closed_loop", "concurrency": int(load["concurrency"])}
        max_running = None
    else:
        arrivals = {"kind": "poisson", "rate_per_s": float(load["rate_per_s"])}
        max_running = int(doc["engine"]["max_batch_run"])
    return {"workload.arrivals": arrivals, "run.requests": int(load["requests"]),
            "run.seed": int(load.get("seed", 0)), "batching.max_running": max_running}


# the simulator's system for a measured one, by deployment kind: on one GPU MoSKA's routed
# attention runs on the serving node (``moska_colocated``); across ranks it is ``moska``
COLOCATED_SYSTEM = {"moska": "moska_colocated", "shared_gemm": "shared_gemm"}


def simulated_system(doc: dict[str, Any]) -> str:
    """The registered system that models the measured deployment."""
    measured = doc["engine"]["system"]
    if doc["deployment"].get("kind") == "colocated":
        return COLOCATED_SYSTEM.get(measured, measured)
    return measured


def check_same_shapes(cfg: Any, doc: dict[str, Any], source: str) -> None:
    """Refuse to compare a config that does not describe the measured engine and load."""
    eng, load = doc["engine"], doc["load"]
    sh = cfg.workload.shared
    want = {
        "system": (cfg.system, simulated_system(doc)),
        "model": (cfg.model, {"llama-3.1-8b": "llama-3.1-8b"}.get(eng["preset"], eng["preset"])),
        "precision": (cfg.precision, DTYPE_PRECISION.get(eng["dtype"])),
        "shared tokens": (int(sh.tokens or 0), int(eng["shared_tokens"])),
        "chunk tokens": (int(sh.chunk_tokens), int(eng["chunk_tokens"])),
        "keep fraction": (float(sh.keep_fraction),
                          float(eng["keep_fraction"]) if eng["system"] == "moska" else 1.0),
    }
    ut, ot = cfg.workload.unique_tokens, cfg.workload.output_tokens
    want["unique tokens"] = ((int(getattr(ut, "min", ut)), int(getattr(ut, "max", ut))),
                             (int(load["unique_min"]), int(load["unique_max"])))
    want["output tokens"] = ((int(getattr(ot, "min", ot)), int(getattr(ot, "max", ot))),
                             (int(load["output_min"]), int(load["output_max"])))
    bad = [f"{k}: config {a!r}, measured {b!r}" for k, (a, b) in want.items() if a != b]
    if bad:
        raise SystemExit(f"validate_e2e: {source} does not describe the measured run: "
                         + "; ".join(bad))


def simulate(path: Path, overrides: dict[str, Any]) -> tuple[dict[str, Any], bool, Any]:
    """Run the simulator; ask for decode-only serving where the config schema knows the field."""
    try:
        cfg = load_config(path, {**overrides, "workload.prefill_tokens": 0})
        decode_only = True
    except ValueError as e:
        if "prefill_tokens" not in str(e):
            raise
        cfg = load_config(path, overrides)
        decode_only = False
    return run_simulation(cfg, write=False, progress=False).summary, decode_only, cfg


def rel(sim: float | None, meas: float | None) -> float | None:
    """(simulated - measured) / measured."""
    if sim is None or meas is None or meas == 0:
        return None
    return (sim - meas) / meas


def compare(doc: dict[str, Any], path: Path, cfg_path: Path) -> dict[str, Any]:
    """One row: the measured point beside its simulation."""
    summary, decode_only, cfg = simulate(cfg_path, load_overrides(doc))
    check_same_shapes(cfg, doc, str(cfg_path.relative_to(ROOT)))
    m = doc["summary"]
    load = doc["load"]
    closed = load["kind"] == "closed_loop"
    row: dict[str, Any] = {
        "file": str(path.relative_to(ROOT)),
        "config": str(cfg_path.relative_to(ROOT)),
        "device": doc["device"]["name"],
        "system": doc["deployment"]["system"],
        "glue": doc["deployment"].get("glue", "torch"),
        "load": (f"closed C={load['concurrency']}" if closed
                 else f"poisson {load['rate_per_s']:g}/s"),
        "concurrency": load["concurrency"] if closed else None,
        "requests": load["requests"],
        "decode_only": decode_only,
        "measured": {
            "throughput_tokens_per_s": m["throughput_tokens_per_s"],
            "tpot_p50_ms": m["tpot_ms"]["p50"], "tpot_p99_ms": m["tpot_ms"]["p99"],
            "ttft_p50_ms": m["ttft_ms"]["p50"],
        },
        "simulated": {
            "throughput_tokens_per_s": summary["throughput_tokens_per_s"],
            "tpot_p50_ms": summary["tpot_ms"]["p50"], "tpot_p99_ms": summary["tpot_ms"]["p99"],
            "ttft_p50_ms": summary["ttft_ms"]["p50"],
            "breakdown_per_token_ms": summary.get("time_breakdown_per_token_ms"),
        },
    }
    s, me = row["simulated"], row["measured"]
    row["error"] = {
        "throughput": rel(s["throughput_tokens_per_s"], me["throughput_tokens_per_s"]),
        "tpot_p50": rel(s["tpot_p50_ms"], me["tpot_p50_ms"]),
        "tpot_p99": rel(s["tpot_p99_ms"], me["tpot_p99_ms"]),
    }
    if not decode_only and closed and s["tpot_p50_ms"]:
        rate = load["concurrency"] / (s["tpot_p50_ms"] / 1e3)
        s["decode_rate_tokens_per_s"] = rate
        row["error"]["decode_rate_vs_throughput"] = rel(rate, me["throughput_tokens_per_s"])
    if "gpu_breakdown_ms_per_step" in doc:
        b = doc["gpu_breakdown_ms_per_step"]
        row["measured"]["breakdown_ms_per_step"] = {
            "other_layers": b.get("qkv", 0) + b.get("o_proj_mlp", 0) + b.get("lm_head", 0),
            **{k: b[k] for k in ("router", "shared_attention", "unique_attention", "merge")
               if k in b}}
    thr_err = (row["error"]["throughput"] if decode_only
               else row["error"].get("decode_rate_vs_throughput"))
    row["within_goal"] = {
        "throughput": None if thr_err is None else abs(thr_err) <= GOAL,
        "throughput_basis": "simulated" if decode_only else (
            "derived decode rate" if thr_err is not None else "not comparable"),
        "tpot_p50": (None if row["error"]["tpot_p50"] is None
                     else abs(row["error"]["tpot_p50"]) <= GOAL),
    }
    return row


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.1f}%" if pct else f"{x:.1f}"


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of docs/validation.md."""
    head = ("| system | load | measured tok/s | simulated tok/s (err) | sim decode rate tok/s (err) "
            "| measured TPOT p50 ms | simulated TPOT p50 ms (err) | measured TPOT p99 | "
            "simulated TPOT p99 (err) |")
    out = [head, "|" + "---|" * 9]
    for r in rows:
        m, s, e = r["measured"], r["simulated"], r["error"]
        out.append(
            f"| {r['system']} | {r['load']} | {_fmt(m['throughput_tokens_per_s'])} | "
            f"{_fmt(s['throughput_tokens_per_s'])} ({_fmt(e['throughput'], True)}) | "
            f"{_fmt(s.get('decode_rate_tokens_per_s'))} "
            f"({_fmt(e.get('decode_rate_vs_throughput'), True)}) | "
            f"{m['tpot_p50_ms']:.2f} | {s['tpot_p50_ms']:.2f} ({_fmt(e['tpot_p50'], True)}) | "
            f"{m['tpot_p99_ms']:.2f} | {s['tpot_p99_ms']:.2f} ({_fmt(e['tpot_p99'], True)}) |")
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Measured vs simulated TPOT p50 over concurrency (closed-loop points), one line per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colors = {"moska": "#d62728", "shared_gemm": "#2ca02c"}
    for system in sorted({r["system"] for r in rows}):
        pts = sorted((r["concurrency"], r["measured"]["tpot_p50_ms"],
                      r["simulated"]["tpot_p50_ms"])
                     for r in rows if r["system"] == system and r["concurrency"])
        if not pts:
            continue
        c, meas, sim = zip(*pts)
        col = colors.get(system, None)
        ax.plot(c, meas, "o-", color=col, label=f"{system} measured")
        ax.plot(c, sim, "s--", color=col, alpha=0.7, label=f"{system} simulated")
    ax.set_xscale("log", base=2)
    ticks = sorted({r["concurrency"] for r in rows if r["concurrency"]})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("concurrency (closed loop, requests)")
    ax.set_ylabel("TPOT p50 (ms)")
    ax.set_title("One H200, co-located: measured vs simulated TPOT")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("measurements", nargs="*", type=Path,
                   help="measurement files or folders (default: traces/validation/h200-colocated, "
                        "the shipped one-GPU set)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--plot", type=Path, help="write the TPOT-over-concurrency plot (PNG)")
    p.add_argument("--deployment", help="config prefix to use instead of each file's folder name "
                   "(e.g. h200-colocated for the archived h200-colocated-v1 run)")
    args = p.parse_args(argv)
    targets = args.measurements or [DEFAULT_MEASUREMENTS]
    files: list[Path] = []
    for t in targets:
        files += sorted(t.glob("*.serving.json")) if t.is_dir() else [t]
    if not files:
        raise SystemExit("validate_e2e: no *.serving.json measurement files found")
    rows = []
    for f in files:
        try:
            doc = read_measurement(f)
        except MeasurementError as e:
            raise SystemExit(f"validate_e2e: {e}") from e
        cfg_path = config_path(doc, args.deployment or f.resolve().parent.name)
        if not cfg_path.exists():
            if args.measurements:
                raise SystemExit(f"validate_e2e: {f}: no simulator config "
                                 f"{cfg_path.relative_to(ROOT)} (pass --deployment)")
            print(f"validate_e2e: skipping {f.relative_to(ROOT)}: no config "
                  f"{cfg_path.relative_to(ROOT)}", file=sys.stderr)
            continue
        rows.append(compare(doc, f.resolve(), cfg_path))
    if not rows:
        raise SystemExit("validate_e2e: no measurement file has a config in workloads/validation")
    rows.sort(key=lambda r: (r["system"], r["concurrency"] is None, r["concurrency"] or 0,
                             r["load"]))
    if args.plot:
        plot(rows, args.plot)
    if args.json:
        print(json.dumps({"goal_abs_relative_error": GOAL, "points": rows}, indent=1,
                         sort_keys=True))
    else:
        print(table(rows))
        met = sum(1 for r in rows if r["within_goal"]["tpot_p50"])
        print(f"\nTPOT p50 within {GOAL:.0%}: {met}/{len(rows)} points; throughput basis: "
              + ", ".join(sorted({r['within_goal']['throughput_basis'] for r in rows})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
