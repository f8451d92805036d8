"""The `moska-sim` command: one subcommand per job, each in its own module of this package
(argparse lives here and nowhere else in ``sim``).

Errors users can cause (bad config, bad preset, bad trace) print one line and exit 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)

# subcommand -> (module, function(argv) -> int, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("sim.cli.run", "run_main", "simulate a YAML experiment and write a results folder"),
    "validate": ("sim.cli.validate", "validate_main", "print the resolved config or the error"),
    "analyze": ("sim.cli.analyze", "analyze_main", "closed-form throughput of every system"),
    "cost": ("sim.cli.cost", "cost_main", "modeled cost of one op on one chip or link"),
    "capture": ("traces.capture.cli", "main", "run the reference MoSKA decoder, record a trace"),
    "replay": ("sim.cli.replay", "replay_main", "drive a simulation with a recorded trace"),
    "calibrate": ("sim.cli.calibrate", "calibrate_main", "fit a chip preset to a GPU trace"),
    "compare": ("sim.cli.compare", "compare_main", "run configs side by side, one report"),
    "sweep": ("sim.cli.sweep", "sweep_main", "one config over a grid of parameter values"),
    "probe": ("traces.capture.probe", "main", "time a standard kernel grid on this GPU (probe file)"),
}


def _resolve(name: str) -> Callable[[list[str]], int]:
    module, func, _ = SUBCOMMANDS[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if name in ("capture", "probe") and exc.name in ("torch", "triton"):
            raise SystemExit(
                f"moska-sim {name} needs the reference extra: pip install 'moska-sim[reference]'"
            ) from None
        raise
    return getattr(mod, func)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="moska-sim",
        description="Discrete-event simulator of MoSKA disaggregated long-context inference.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"moska-sim {version('moska-sim')}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(SUBCOMMANDS)}")
    func = _resolve(name)
    try:
        return int(func(rest) or 0)
    except USER_ERRORS as exc:
        print(f"moska-sim {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"moska-sim {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
