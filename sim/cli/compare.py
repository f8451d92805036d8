"""``moska-sim compare CONFIG... [--out DIR] [--load-sweep N] [--jobs J | --dask ADDRESS]``:
the table on the terminal, the report in the results folder.

``--out`` a folder that an earlier (perhaps killed) study wrote resumes it: only the runs
its cache lacks are made. Exit status: 0 when every run succeeded; 1 when some run failed
(the report is still written, with dashes in that config's row); 2 for a bad config or
variants file, an ``--out`` that is not a study folder, or a Dask cluster that cannot run
the study.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from sim.cli.common import check_out_path
from sim.config import ConfigError, parse_assignment
from sim.report import compare_verdict_lines, format_table_text
from sim.report.compare_report import saturation_rows
from sim.studies.backends import Backend, BackendError, make_backend
from sim.studies.runner import CompareResult, run_compare
from sim.studies.sweep import SweepSettings
from sim.studies.variants import CompareInputs, load_inputs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moska-sim compare",
        description="Run the same workload on several configs (or one variants file) and "
                    "write one report: table, latency CDFs, throughput vs load, utilization, "
                    "decode-step breakdown.")
    p.add_argument("configs", nargs="+", type=Path, metavar="CONFIG",
                   help="experiment YAMLs, or one variants file (base + variants)")
    p.add_argument("--out", type=str, default=None,
                   help="results folder (default results/<name>-<YYYYmmdd-HHMMSS>/); a study "
                        "folder written before (even by a killed study) is resumed: only the "
                        "runs its cache lacks are made")
    p.add_argument("--load-sweep", type=int, default=None, metavar="N",
                   help="rerun each config at N offered loads up to beyond its analytic "
                        "saturation (0: none; default: the variants file's load_sweep.points, "
                        "else 0)")
    p.add_argument("--sweep-requests", type=int, default=None, metavar="R",
                   help="run.requests of each sweep point (default: load_sweep.requests, else "
                        "8 x the analytic closed-loop knee concurrency, within [64, 2000])")
    add_backend_arguments(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of every config, e.g. run.requests=200 (repeatable)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (runs done / running / failed, time left)")
    return p


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """``--jobs J`` and ``--dask ADDRESS``: where a study's runs execute."""
    p.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="simulations run in parallel processes on this machine (default 1; "
                        "results do not depend on it)")
    p.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="run every simulation on the Dask distributed cluster whose scheduler "
                        "is at ADDRESS (e.g. tcp://10.0.0.5:8786; needs the dask extra); "
                        "results do not depend on it")


def backend_from_args(prog: str, args: argparse.Namespace) -> Backend | None:
    """The backend ``--jobs``/``--dask`` ask for, or None after printing why it cannot be
    had (one line on stderr)."""
    if args.jobs < 1:
        print(f"{prog}: error: --jobs: expected an integer >= 1", file=sys.stderr)
        return None
    if args.dask is not None and args.jobs != 1:
        print(f"{prog}: error: --jobs and --dask exclude each other (the cluster's workers "
              "set the parallelism)", file=sys.stderr)
        return None
    try:
        return make_backend(args.jobs, args.dask)
    except BackendError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return None


def run_study(prog: str, args: argparse.Namespace, inputs: CompareInputs,
              settings: SweepSettings) -> int:
    """Run the study on the backend the flags ask for; print the table. The exit status."""
    try:  # the study folder can be written, checked before any run (a study's own: resumed)
        out = None if args.out is None else Path(args.out)
        nonempty = out is not None and out.is_dir() and any(out.iterdir())
        if args.out is not None and not nonempty:  # (a non-empty one must be a study's)
            out = check_out_path(args.out)
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    backend = backend_from_args(prog, args)
    if backend is None:
        return 2
    try:
        result = run_compare(inputs, out, settings, progress=not args.no_progress,
                             backend=backend)
    except (ValueError, BackendError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        backend.close()
    print_result(result)
    return 1 if result.failures else 0


def print_result(result: CompareResult) -> None:
    """The comparison table, the load sweep's saturation points, failures, the verdict, and
    where to look (tables fit the terminal's width, wrapping their headers)."""
    width = shutil.get_terminal_size((120, 24)).columns
    print(format_table_text(result.rows, max_width=width))
    if any(row["shared nodes"] > 1 for row in result.balance):
        print("\nshared-node balance (utilization spread, queries per chunk per launch):")
        print(format_table_text(result.balance, max_width=width))
    if result.load_sweep:
        print()
        rows = saturation_rows(result.load_sweep)
        for row, (label, sweep) in zip(rows, result.load_sweep.items()):
            sat = sweep["analytic_saturation"]
            row["analytic saturation"] = (sat["concurrency"] if sweep["axis"] == "concurrency"
                                          else sat["rate_per_s"])
            row["config"] = label
        print(format_table_text(rows, max_width=width))
    for label, error in result.failures.items():
        print(f"warning: {label}: {error}", file=sys.stderr)
    print()
    for line in compare_verdict_lines(result.runs, {label: error for label, error
                                                    in result.failures.items()}):
        print(line)
    print(f"\nreport: {result.out_dir / 'compare.html'} (and compare.md)")
    if result.cached:
        print(f"{result.cached} of {result.cached + result.ran} runs read from "
              f"{result.out_dir / 'cache'} (finished before), {result.ran} made now",
              file=sys.stderr)


def compare_main(argv: list[str]) -> int:
    """Entry point of ``moska-sim compare``."""
    args = _parser().parse_args(argv)
    if args.load_sweep is not None and args.load_sweep < 0:
        print("moska-sim compare: error: --load-sweep: expected an integer >= 0",
              file=sys.stderr)
        return 2
    try:
        extra = dict(parse_assignment(item) for item in args.set)
        inputs = load_inputs(args.configs, extra)
        settings = SweepSettings.from_mapping(inputs.load_sweep, inputs.load_sweep_source,
                                              points=args.load_sweep,
                                              requests=args.sweep_requests)
    except ConfigError as exc:
        n = len(exc.issues)
        print(f"moska-sim compare: {n} error{'s' if n != 1 else ''}\n{exc}", file=sys.stderr)
        return 2
    return run_study("moska-sim compare", args, inputs, settings)


__all__ = ["add_backend_arguments", "backend_from_args", "compare_main", "print_result",
           "run_study"]
