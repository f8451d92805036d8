"""The `moska-sim` command: one subcommand per job, each in its own module of this package
(argparse lives here and nowhere else in ``sim``).

Errors users can cause (bad config, bad preset, bad trace, an output folder that cannot be
written, a full disk) print one line and exit 2; SIGINT exits 130 and SIGTERM 143 (SIGHUP
129), each with one line, after removing what the command was staging; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwinds like Ctrl-C (staging folders are removed on the
    way out) and exits 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)  # args = (signum,): rebuilt as type(exc)(*exc.args) intact
        self.signum = int(signum)

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


@contextmanager
def _signals_as_exceptions() -> Iterator[None]:
    """While the command runs, SIGTERM/SIGHUP raise :class:`Terminated` in this process
    (a forked worker that inherits the handler dies by the signal as usual); a second one
    during clean-up is ignored so the clean-up finishes."""
    owner = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        for s in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {}
    for s in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[s] = signal.signal(s, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def _os_error_text(exc: OSError) -> str:
    """One line for an OSError: what failed and on which file."""
    where = f"{exc.filename}: " if exc.filename is not None else ""
    return f"{where}{exc.strerror or exc}"

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
    """Run ``moska-sim ARGV`` and return its exit status (argparse's own exits, for
    ``--help`` and bad options, raise SystemExit as usual)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from sim.cli.common import ArgumentParser

    parser = ArgumentParser(
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
        parser.error(f"unknown command {name[:40]!r}; choose from {', '.join(SUBCOMMANDS)}")
    func = _resolve(name)
    try:
        with _signals_as_exceptions():
            return int(func(rest) or 0)
    except Terminated as exc:
        print(f"moska-sim {name}: terminated ({signal.Signals(exc.signum).name}); "
              "nothing half-written left", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"moska-sim {name}: interrupted; nothing half-written left", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"moska-sim {name}: error: {_os_error_text(exc)}", file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        print(f"moska-sim {name}: error: {exc}", file=sys.stderr)  # one line per problem
        return 2
    except MemoryError:
        print(f"moska-sim {name}: error: out of memory", file=sys.stderr)
        return 1


__all__ = ["SUBCOMMANDS", "USER_ERRORS", "Terminated", "main"]


if __name__ == "__main__":
    raise SystemExit(main())
