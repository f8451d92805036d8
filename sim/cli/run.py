"""``moska-sim run CONFIG``: simulate one experiment YAML and write its results folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sim.cli.common import (
    add_set_argument,
    add_timeline_arguments,
    check_out_dir,
    options_from_args,
    overrides_from_args,
    print_note,
    summary_line,
)
from sim.run import run_simulation


def run_main(argv: list[str]) -> int:
    """``moska-sim run CONFIG [--out DIR] [--set KEY=VALUE ...] [--no-progress] [--timeline
    [--timeline-window START:END] [--timeline-max-events N]]``."""
    parser = argparse.ArgumentParser(prog="moska-sim run",
                                     description="Simulate one experiment YAML.")
    parser.add_argument("config", type=Path, help="experiment YAML")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default results/<name>-<YYYYmmdd-HHMMSS>/)")
    add_set_argument(parser, "run.requests=200")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_timeline_arguments(parser)
    args = parser.parse_args(argv)
    try:
        timeline = options_from_args(args)
        check_out_dir(args.out)
        result = run_simulation(args.config, args.out, progress=not args.no_progress,
                                timeline=timeline, overrides=overrides_from_args(args))
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"moska-sim run: error: {exc}", file=sys.stderr)
        return 2
    print_note(result.timeline)
    s = result.summary
    print(f"{s['name']}: {summary_line(s)}; results in {result.out_dir}")
    return 0


__all__ = ["run_main"]
