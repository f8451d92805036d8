"""One comparison end to end: run every variant (and its load sweep), then write the
results folder with the report, atomically.

Folder layout (built in ``.tmp-<name>-XXXX`` beside the target, moved into place with one
``os.replace``, so a folder under its final name is always complete)::

    compare.md, compare.html, compare_*.png   the report (sim.report.write_compare_report)
    compare.json                              table rows, shared-node balance, load sweep,
                                              failures (deterministic)
    runs/<label>/                             each variant's own results folder
                                              (or error.txt + config.yaml if it failed)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sim.atomic import staged_folder
from sim.config import with_overrides
from sim.report import compare_rows, write_compare_report
from sim.run.results import config_yaml, default_out_dir
from sim.studies.balance import balance_rows
from sim.studies.cost import node_prices, run_cost
from sim.studies.jobs import Job, Outcome, run_jobs
from sim.studies.saturation import Saturation, analytic_saturation, workload_means
from sim.studies.sweep import (
    SweepPoint,
    SweepSettings,
    point_requests,
    sweep_axis,
    sweep_points,
    sweep_record,
)
from sim.studies.variants import CompareInputs, Variant


@dataclass
class _Sweep:
    """The planned load sweep of one variant."""

    variant: Variant
    sat: Saturation
    points: list[SweepPoint]
    first_job: int  # index of its first point in the job list


@dataclass
class CompareResult:
    """What a comparison produced (all of it is also in ``out_dir``)."""

    out_dir: Path
    rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    load_sweep: dict[str, dict[str, Any]]
    balance: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)


def decode_step_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary as the compare report should read it: ``time_breakdown_ms`` there is the
    run's total (request-weighted) time per phase, which grows with the run's length; a
    decode step's breakdown is ``time_breakdown_per_token_ms`` (ms per decode step as one
    request sees it), so the report gets that one."""
    out = dict(summary)
    per_step = summary.get("time_breakdown_per_token_ms")
    if isinstance(per_step, Mapping) and per_step:
        out["time_breakdown_ms"] = dict(per_step)
    return out


def sweep_key(variant: Variant) -> str:
    """The load-sweep series name: the label, marked when its x axis is a concurrency."""
    if sweep_axis(variant.config) == "concurrency":
        return f"{variant.label} (x = concurrency)"
    return variant.label


def _plan(inputs: CompareInputs, settings: SweepSettings, tmp: Path
          ) -> tuple[list[Job], list[_Sweep], dict[str, str]]:
    """Main-run jobs first (one per variant, in order), then every sweep point's job."""
    jobs = [Job(v.label, "main run", v.config, tmp / "runs" / v.label) for v in inputs.variants]
    sweeps: list[_Sweep] = []
    skipped: dict[str, str] = {}
    if settings.points <= 0:
        return jobs, sweeps, skipped
    for v in inputs.variants:
        try:
            sat = analytic_saturation(v.config, workload_means(v.config))
            requests = point_requests(v.config, settings, sat)
            rate = None
            if v.config.workload.arrivals.kind == "trace":
                rate = workload_means(v.config, requests).rate_per_s
            points = sweep_points(v.config, settings, sat, requests, rate)
        except ValueError as exc:
            skipped[v.label] = f"load sweep skipped: {exc}"
            continue
        sweeps.append(_Sweep(v, sat, points, len(jobs)))
        axis = sweep_axis(v.config)
        for p in points:
            cfg = with_overrides(v.config, p.overrides, source=f"{v.label}: load sweep")
            x = f"concurrency {int(p.x)}" if axis == "concurrency" else f"{p.x:.4g} req/s"
            jobs.append(Job(v.label, f"sweep {p.index + 1}/{len(points)} ({x})", cfg, None))
    return jobs, sweeps, skipped


def _write_failure(folder: Path, variant: Variant, error: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "error.txt").write_text(error.rstrip() + "\n", encoding="utf-8")
    (folder / "config.yaml").write_text(config_yaml(variant.config, variant.config.run.seed),
                                        encoding="utf-8")


def _run_entry(variant: Variant, out: Outcome) -> dict[str, Any]:
    """One variant as ``write_compare_report`` takes it."""
    cfg = variant.config
    if not out.ok or out.summary is None:
        return {"label": variant.label, "summary": {"system": cfg.system},
                "price_per_hour": node_prices(cfg)}
    summary = out.summary
    return {
        "label": variant.label,
        "summary": decode_step_summary(summary),
        "requests_csv": (out.out_dir / "requests.csv") if out.out_dir else None,
        "cost_per_million_tokens": run_cost(cfg, summary),
        "price_per_hour": node_prices(cfg),
    }


def _target(out_dir: Path | str | None, name: str) -> Path:
    target = Path(out_dir) if out_dir is not None else default_out_dir(name)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"--out: {target} exists and is not empty")
    return target


def run_compare(inputs: CompareInputs, out_dir: Path | str | None = None,
                settings: SweepSettings | None = None, workers: int = 1,
                progress: bool = True) -> CompareResult:
    """Run every variant (and its load sweep) and write the comparison folder."""
    settings = settings or SweepSettings()
    target = _target(out_dir, inputs.name)
    with staged_folder(target) as tmp:
        jobs, sweeps, failures = _plan(inputs, settings, tmp)
        outcomes = run_jobs(jobs, workers, progress)
        runs = []
        for i, v in enumerate(inputs.variants):
            out = outcomes[i]
            if not out.ok:
                failures[v.label] = f"run failed: {out.error}"
                _write_failure(tmp / "runs" / v.label, v, out.error or "")
            runs.append(_run_entry(v, out))
        load_sweep: dict[str, dict[str, Any]] = {}
        for sw in sweeps:
            outs = outcomes[sw.first_job: sw.first_job + len(sw.points)]
            load_sweep[sweep_key(sw.variant)] = sweep_record(
                sw.points, [o.summary if o.ok else None for o in outs],
                sweep_axis(sw.variant.config), sw.sat)
            bad = [o.error for o in outs if not o.ok]
            if bad:
                failures.setdefault(sw.variant.label, f"{len(bad)} sweep point(s) failed: {bad[0]}")
        rows = compare_rows(runs)
        balance = balance_rows(runs)
        write_compare_report(tmp, runs, load_sweep or None)
        record = {
            "name": inputs.name,
            "variants": [{"label": v.label, "source": v.source} for v in inputs.variants],
            "rows": rows,
            "shared_balance": balance,
            "load_sweep_settings": asdict(settings),
            "load_sweep": load_sweep,
            "failures": failures,
        }
        (tmp / "compare.json").write_text(json.dumps(record, indent=2, default=str) + "\n",
                                          encoding="utf-8")
    runs = [_relocated(r, tmp, target) for r in runs]
    wall = {f"{j.label}: {j.what}": o.wall_s for j, o in zip(jobs, outcomes)}
    return CompareResult(target, rows, runs, load_sweep, balance, failures, wall)


def _relocated(run: dict[str, Any], tmp: Path, target: Path) -> dict[str, Any]:
    """A run entry with paths under the temporary folder moved to the final one."""
    csv = run.get("requests_csv")
    if isinstance(csv, Path):
        run = {**run, "requests_csv": target / csv.relative_to(tmp)}
    return run


__all__ = ["CompareResult", "decode_step_summary", "run_compare", "sweep_key"]
