"""``moska-sim sweep CONFIG --param KEY=V1,V2``: one config over a grid of parameter values,
one comparison report (``--jobs``/``--dask`` and resuming as ``moska-sim compare``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sim.cli.compare import add_backend_arguments, run_study
from sim.config import ConfigError, parse_assignment
from sim.studies.grid import grid_inputs, parse_param
from sim.studies.sweep import SweepSettings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moska-sim sweep",
        description="Run one experiment over a grid of parameter values and write one "
                    "comparison report (the cartesian product of every --param).")
    p.add_argument("config", type=Path, metavar="CONFIG", help="experiment YAML")
    p.add_argument("--param", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a field and its values, e.g. workload.shared.tokens=1Mi,4Mi,16Mi "
                        "(repeatable: the grid is the product)")
    p.add_argument("--name", default=None, help="names the results folder "
                                                "(default <config name>-sweep)")
    p.add_argument("--out", type=str, default=None,
                   help="results folder (default results/<name>-<YYYYmmdd-HHMMSS>/); a study "
                        "folder written before (even by a killed sweep) is resumed: only the "
                        "runs its cache lacks are made")
    p.add_argument("--load-sweep", type=int, default=0, metavar="N",
                   help="also rerun each point at N offered loads (default 0: none)")
    p.add_argument("--sweep-requests", type=int, default=None, metavar="R",
                   help="run.requests of each load-sweep point")
    add_backend_arguments(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field at every point, e.g. run.requests=200")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (runs done / running / failed, time left)")
    return p


def sweep_main(argv: list[str]) -> int:
    """Entry point of ``moska-sim sweep``."""
    args = _parser().parse_args(argv)
    if args.load_sweep < 0:
        print("moska-sim sweep: error: --load-sweep: expected an integer >= 0",
              file=sys.stderr)
        return 2
    try:
        params = [parse_param(t) for t in args.param]
        extra = dict(parse_assignment(item) for item in args.set)
        inputs = grid_inputs(args.config, params, extra, args.name)
        settings = SweepSettings.from_mapping({}, "", points=args.load_sweep,
                                              requests=args.sweep_requests)
    except ConfigError as exc:
        n = len(exc.issues)
        print(f"moska-sim sweep: {n} error{'s' if n != 1 else ''}\n{exc}", file=sys.stderr)
        return 2
    print(f"sweep: {len(inputs.variants)} point(s) of {args.config}", file=sys.stderr)
    return run_study("moska-sim sweep", args, inputs, settings)


__all__ = ["sweep_main"]
