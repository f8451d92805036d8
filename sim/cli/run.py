"""``moska-sim run CONFIG``: simulate one experiment YAML and write its results folder."""

from __future__ import annotations

import sys
from pathlib import Path

from sim.cli.common import (
    ArgumentParser,
    add_set_argument,
    add_timeline_arguments,
    check_out_path,
    is_study_file,
    options_from_args,
    overrides_from_args,
    print_note,
    summary_line,
    write_results_announced,
)
from sim.config import load_config
from sim.report import verdict_lines
from sim.run import run_simulation
from sim.run.results import default_out_dir


def run_main(argv: list[str]) -> int:
    """``moska-sim run CONFIG [--out DIR] [--set KEY=VALUE ...] [--no-progress] [--timeline
    [--timeline-window START:END] [--timeline-max-events N]]``.

    Everything is checked before simulating: the options, the config and the results
    folder (``--out``, or ``results/<name>-<time>/``), which must be absent or empty and
    writable with free space; the folder is written atomically at the end.
    """
    parser = ArgumentParser(prog="moska-sim run", description="Simulate one experiment YAML.")
    parser.add_argument("config", type=Path, help="experiment YAML")
    parser.add_argument("--out", default=None,
                        help="results folder (default results/<name>-<YYYYmmdd-HHMMSS>/)")
    add_set_argument(parser, "run.requests=200")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress (on stderr: requests done, time elapsed, an "
                             "estimate of the time left)")
    add_timeline_arguments(parser)
    args = parser.parse_args(argv)
    try:
        timeline = options_from_args(args)
        if is_study_file(args.config):
            raise ValueError(f"{args.config}: this is a study (base + variants), not one "
                             f"experiment: run it with moska-sim compare {args.config}")
        config = load_config(args.config, overrides_from_args(args))
        out = check_out_path(args.out if args.out is not None else default_out_dir(config.name))
        result = run_simulation(config, progress=not args.no_progress, timeline=timeline,
                                write=False)
        result.out_dir = write_results_announced(result, out, args.no_progress)
    except (ValueError, KeyError) as exc:
        print(f"moska-sim run: error: {exc}", file=sys.stderr)
        return 2
    print_note(result.timeline)
    s = result.summary
    print(f"{s['name']}: {summary_line(s)}; results in {result.out_dir}")
    for line in verdict_lines(s, result.out_dir / "requests.csv"):
        print(line)
    return 0


__all__ = ["run_main"]
