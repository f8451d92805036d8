"""``moska-sim replay TRACE --config CONFIG``: a recorded trace's routing drives a run
(the model of replay: ``sim.run.replay``)."""

from __future__ import annotations

import sys
from pathlib import Path

from sim.cli.common import (
    ArgumentParser,
    add_set_argument,
    add_timeline_arguments,
    check_out_path,
    options_from_args,
    overrides_from_args,
    print_note,
    summary_line,
    write_results_announced,
)
from sim.config import load_config
from sim.run.replay import replay_simulation
from sim.run.results import default_out_dir


def replay_main(argv: list[str]) -> int:
    """``moska-sim replay TRACE --config CONFIG [--out DIR] [--arrivals config|trace]``."""
    parser = ArgumentParser(
        prog="moska-sim replay",
        description="Simulate an experiment YAML with a recorded trace's routing decisions "
                    "(and optionally its requests) instead of the statistical router.")
    parser.add_argument("trace", type=Path, help="a moska-trace file (*.trace.npz)")
    parser.add_argument("--config", type=Path, required=True, help="experiment YAML")
    parser.add_argument("--out", default=None,
                        help="results folder (default results/<name>-<YYYYmmdd-HHMMSS>/)")
    parser.add_argument("--arrivals", choices=("config", "trace"), default="config",
                        help="requests from the config's arrivals (default) or the trace's "
                             "batch composition")
    add_set_argument(parser, "run.requests=200")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_timeline_arguments(parser)
    args = parser.parse_args(argv)
    try:
        timeline = options_from_args(args)
        config = load_config(args.config, overrides_from_args(args))
        out = check_out_path(args.out if args.out is not None else default_out_dir(config.name))
        result = replay_simulation(args.trace, config, arrivals=args.arrivals,
                                   progress=not args.no_progress, timeline=timeline,
                                   write=False)
        result.out_dir = write_results_announced(result, out, args.no_progress)
    except (ValueError, KeyError) as exc:
        print(f"moska-sim replay: error: {exc}", file=sys.stderr)
        return 2
    print_note(result.timeline)
    s = result.summary
    for note in s["notes"]:  # the replay's notes (chunk mapping, model); cycling printed itself
        if note.startswith("replay:") and "cycle" not in note:
            print(f"note: {note}", file=sys.stderr)
    r = s["replay"]
    print(f"{s['name']} (replay of {r['trace']}): {summary_line(s)}; "
          f"{r['queries_used']} queries routed from the trace's {r['queries_in_trace']} "
          f"({r['cycles']} cycle(s)); results in {result.out_dir}")
    return 0


__all__ = ["replay_main"]
