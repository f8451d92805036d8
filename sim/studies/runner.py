"""One comparison end to end: run every variant (and its load sweep) that the study's cache
does not already hold, then write the results folder with the report.

Folder layout::

    cache/<key>/                              every finished run (sim.studies.cache): its
                                              outcome and, for a main run, its results folder
    compare.md, compare.html, compare_*.png   the report (sim.report.write_compare_report)
    compare.json                              table rows, shared-node balance, load sweep,
                                              failures (deterministic)
    runs/<label>/                             each variant's own results folder, hard links
                                              into cache/ (or error.txt + config.yaml if the
                                              run failed)

Resuming. ``cache/`` is written as runs finish, the report only at the end (built in
``.tmp-report-XXXX`` inside the folder, then moved into place, ``compare.json`` last). A
study killed midway leaves its folder with ``cache/`` and no ``compare.json``; the same
command with ``--out`` that folder runs only the runs the cache lacks (also after adding
variants or load-sweep points) and writes the report, byte for byte the one an
uninterrupted study writes, since every result is read back from the cache either way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sim.config import with_overrides
from sim.report import compare_rows, write_compare_report
from sim.run.results import config_yaml, default_out_dir
from sim.studies.backends import Backend, LocalBackend
from sim.studies.balance import balance_rows
from sim.studies.cache import CACHE_DIR, Entry, RunCache, code_version, link_tree, run_key
from sim.studies.cost import node_prices, run_cost
from sim.studies.jobs import Job
from sim.studies.progress import StudyProgress
from sim.studies.saturation import Saturation, analytic_saturation, workload_means
from sim.studies.sweep import (
    SweepPoint,
    SweepSettings,
    main_load,
    point_requests,
    sweep_axis,
    sweep_points,
    sweep_record,
)
from sim.studies.variants import CompareInputs, Variant

CACHEDIR_TAG = ("Signature: 8a477f597d28d172789f06886806bc55\n"
                "# This file marks the finished runs of a moska-sim study (see docs/studies.md).\n")
REPORT_STAGE_PREFIX = ".tmp-report-"


@dataclass
class _Sweep:
    """The planned load sweep of one variant."""

    variant: Variant
    sat: Saturation
    points: list[SweepPoint]
    first_job: int  # index of its first point in the job list
    main_x: float | None = None  # the main run's load on the sweep's axis


@dataclass
class CompareResult:
    """What a comparison produced (all of it is also in ``out_dir``)."""

    out_dir: Path
    rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    load_sweep: dict[str, dict[str, Any]]
    balance: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)  # per run, when it was made
    ran: int = 0  # runs made by this call
    cached: int = 0  # runs read from the cache (finished by an earlier call)
    code_version: str = ""


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


def _plan(inputs: CompareInputs, settings: SweepSettings, version: str
          ) -> tuple[list[Job], list[_Sweep], dict[str, str]]:
    """Main-run jobs first (one per variant, in order), then every sweep point's job."""
    jobs = [Job(v.label, "main run", v.config, True, run_key(v.config, True, version))
            for v in inputs.variants]
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
        sweeps.append(_Sweep(v, sat, points, len(jobs), main_load(v.config, rate)))
        axis = sweep_axis(v.config)
        for p in points:
            cfg = with_overrides(v.config, p.overrides, source=f"{v.label}: load sweep")
            x = f"concurrency {int(p.x)}" if axis == "concurrency" else f"{p.x:.4g} req/s"
            jobs.append(Job(v.label, f"sweep {p.index + 1}/{len(points)} ({x})", cfg, False,
                            run_key(cfg, False, version)))
    return jobs, sweeps, skipped


def _write_failure(folder: Path, variant: Variant, error: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "error.txt").write_text(error.rstrip() + "\n", encoding="utf-8")
    (folder / "config.yaml").write_text(config_yaml(variant.config, variant.config.run.seed),
                                        encoding="utf-8")


def _run_entry(variant: Variant, entry: Entry, folder: Path | None) -> dict[str, Any]:
    """One variant as ``write_compare_report`` takes it (``folder``: its runs/<label>/)."""
    cfg = variant.config
    if not entry.ok or entry.summary is None:
        return {"label": variant.label, "summary": {"system": cfg.system},
                "price_per_hour": node_prices(cfg)}
    summary = entry.summary
    return {
        "label": variant.label,
        "summary": decode_step_summary(summary),
        "requests_csv": (folder / "requests.csv") if folder else None,
        "cost_per_million_tokens": run_cost(cfg, summary),
        "price_per_hour": node_prices(cfg),
    }


def is_study_folder(path: Path) -> bool:
    """A folder a study wrote (finished or killed midway): its ``cache/`` carries the tag."""
    tag = Path(path) / CACHE_DIR / "CACHEDIR.TAG"
    try:
        return tag.read_text(encoding="utf-8").startswith(CACHEDIR_TAG.splitlines()[0])
    except OSError:
        return False


def _target(out_dir: Path | str | None, name: str) -> Path:
    """The study folder: new, empty, or one a study wrote before (resumed)."""
    target = Path(out_dir) if out_dir is not None else default_out_dir(name)
    if target.exists() and not target.is_dir():
        raise ValueError(f"--out: {target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not is_study_folder(target):
        raise ValueError(f"--out: {target} exists, is not empty and is not a study folder "
                         f"(no {CACHE_DIR}/CACHEDIR.TAG) to resume")
    return target


def _open_cache(target: Path) -> RunCache:
    cache = RunCache(target)
    cache.create()
    tag = cache.dir / "CACHEDIR.TAG"
    if not tag.is_file():
        tag.write_text(CACHEDIR_TAG, encoding="utf-8")
    for stale in target.glob(f"{REPORT_STAGE_PREFIX}*"):  # a report a kill interrupted
        shutil.rmtree(stale, ignore_errors=True)
    return cache


def _publish(stage: Path, target: Path) -> None:
    """Move the report built in ``stage`` into ``target``: everything but ``cache/`` is
    replaced, ``compare.json`` (which marks a finished study) last."""
    for old in target.iterdir():
        if old.name in (CACHE_DIR, stage.name):
            continue
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    names = sorted(p.name for p in stage.iterdir())
    names.sort(key=lambda n: n == "compare.json")
    for name in names:
        os.replace(stage / name, target / name)
    stage.rmdir()


def run_compare(inputs: CompareInputs, out_dir: Path | str | None = None,
                settings: SweepSettings | None = None, workers: int = 1,
                progress: bool = True, backend: Backend | None = None) -> CompareResult:
    """Run every variant (and its load sweep) that the study folder's cache lacks, on
    ``backend`` (default: a local pool of ``workers`` processes), and write the report."""
    settings = settings or SweepSettings()
    backend = backend or LocalBackend(workers)
    target = _target(out_dir, inputs.name)
    version = code_version()
    jobs, sweeps, failures = _plan(inputs, settings, version)
    cache = _open_cache(target)
    unique = list({j.key: j for j in jobs}.values())
    missing = [j for j in unique if not cache.has(j.key)]
    prog = StudyProgress(len(unique), len(unique) - len(missing), backend.slots(),
                         enabled=progress, name=inputs.name)
    backend.run(missing, target, prog)
    prog.close()
    entries = [cache.load(j.key) for j in jobs]

    stage = Path(tempfile.mkdtemp(prefix=REPORT_STAGE_PREFIX, dir=target))
    try:
        runs = []
        for v, entry in zip(inputs.variants, entries):
            folder = stage / "runs" / v.label
            if entry.ok and entry.folder is not None:
                link_tree(entry.folder, folder)
            elif not entry.ok:
                failures[v.label] = f"run failed: {entry.error}"
                _write_failure(folder, v, entry.error or "")
            runs.append(_run_entry(v, entry, folder if entry.ok else None))
        load_sweep: dict[str, dict[str, Any]] = {}
        for sw in sweeps:
            outs = entries[sw.first_job: sw.first_job + len(sw.points)]
            load_sweep[sweep_key(sw.variant)] = sweep_record(
                sw.points, [o.summary if o.ok else None for o in outs],
                sweep_axis(sw.variant.config), sw.sat, sw.main_x)
            bad = [o.error for o in outs if not o.ok]
            if bad:
                failures.setdefault(sw.variant.label, f"{len(bad)} sweep point(s) failed: {bad[0]}")
        rows = compare_rows(runs)
        balance = balance_rows(runs)
        write_compare_report(stage, runs, load_sweep or None)
        record = {
            "name": inputs.name,
            "variants": [{"label": v.label, "source": v.source} for v in inputs.variants],
            "rows": rows,
            "shared_balance": balance,
            "load_sweep_settings": asdict(settings),
            "load_sweep": load_sweep,
            "failures": failures,
        }
        (stage / "compare.json").write_text(json.dumps(record, indent=2, default=str) + "\n",
                                            encoding="utf-8")
        _publish(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    runs = [_relocated(r, stage, target) for r in runs]
    ran = {j.key for j in missing}
    wall = {f"{j.label}: {j.what}": e.wall_s for j, e in zip(jobs, entries)}
    return CompareResult(target, rows, runs, load_sweep, balance, failures, wall,
                         ran=len(ran), cached=len(unique) - len(ran), code_version=version)


def _relocated(run: dict[str, Any], tmp: Path, target: Path) -> dict[str, Any]:
    """A run entry with paths under the temporary folder moved to the final one."""
    csv = run.get("requests_csv")
    if isinstance(csv, Path):
        run = {**run, "requests_csv": target / csv.relative_to(tmp)}
    return run


__all__ = ["CompareResult", "decode_step_summary", "is_study_folder", "run_compare",
           "sweep_key"]
