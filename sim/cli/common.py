"""What several commands share: a parser whose errors are one line, the timeline flags,
``--set`` overrides, the ``--out`` check made before any work, and the one-line outcome of
a run."""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from sim.atomic import live_staging, remove_stale_staging
from sim.config import ConfigError, parse_assignment
from sim.config.fields import MAX_DURATION_S
from sim.config.loader import read_text_file
from sim.config.yaml_source import load_yaml_text
from sim.engine.timeline import DEFAULT_MAX_EVENTS, Timeline, TimelineOptions, parse_window
from sim.studies.variants import is_variants_data

NAME_MAX = 255  #: longest file or folder name in bytes (Linux, macOS)
PATH_MAX = 4095  #: longest path in bytes
MIN_FREE_MB_DEFAULT = 64  #: free space a results folder needs at least, MiB
MIN_FREE_ENV = "MOSKA_SIM_MIN_FREE_MB"  #: environment variable that overrides it
MAX_TIMELINE_EVENTS = 10**9  #: largest --timeline-max-events


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE (see PROG --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def min_free_bytes() -> int:
    """The free space an output folder needs: ``$MOSKA_SIM_MIN_FREE_MB`` MiB, default 64."""
    text = os.environ.get(MIN_FREE_ENV, "").strip()
    if not text:
        return MIN_FREE_MB_DEFAULT * 2**20
    try:
        mb = float(text)
    except ValueError:
        mb = -1.0
    if not 0 <= mb <= 2**40:
        raise ValueError(f"environment {MIN_FREE_ENV}: expected a number of MiB in "
                         f"[0, 2^40], got {text[:40]!r}")
    return int(mb * 2**20)


def _fail(option: str, path: Path | str, why: str) -> NoReturn:
    raise ValueError(f"{option}: {str(path)[:200]!r}: {why}")


def check_out_path(out: Path | str, option: str = "--out", *, need_bytes: int | None = None,
                   ) -> Path:
    """Check, before any work, that a results folder can be written at ``out``; return it.

    Refused with a one-line ``ValueError`` naming the option and path: an empty path or one
    holding a NUL byte; a name over 255 bytes or a path over 4095; an existing file, or a
    folder that is not empty; a path under a file; a folder where nothing can be created
    (permissions, a read-only or virtual file system: a probe folder is created and
    removed); a disk with less than ``need_bytes`` free (default :func:`min_free_bytes`).
    Another live run writing the same folder is refused too; staging folders left by killed
    runs beside it are removed.
    """
    text = os.fspath(out)
    if not text:
        _fail(option, text, "expected a folder path, got an empty string")
    if "\0" in text:
        _fail(option, text, "a path cannot hold a NUL byte")
    path = Path(os.path.abspath(text))
    try:
        raw = os.fsencode(path)
    except UnicodeError:
        _fail(option, text, "not representable as a file name on this system")
    if len(raw) > PATH_MAX:
        _fail(option, text, f"path of {len(raw)} bytes; expected at most {PATH_MAX}")
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            _fail(option, text, f"name {part[:40]!r}... is {len(os.fsencode(part))} bytes; "
                                f"expected at most {NAME_MAX}")
    if path.is_symlink() and not path.exists():
        _fail(option, text, "a broken symbolic link")
    if path.exists():
        if not path.is_dir():
            _fail(option, text, "exists and is a file; expected an absent or empty folder")
        try:
            empty = not any(path.iterdir())
        except OSError as exc:
            _fail(option, text, f"cannot list it: {exc.strerror or exc}")
        if not empty:
            _fail(option, text, "exists and is not empty; expected an absent or empty folder")
    ancestor = path.parent
    while not ancestor.exists():
        if ancestor.is_symlink():
            _fail(option, text, f"{ancestor} is a broken symbolic link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        _fail(option, text, f"{ancestor} is a file, not a folder")
    try:
        probe = tempfile.mkdtemp(prefix=".moska-probe-", dir=ancestor)
        os.rmdir(probe)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno in (errno.EROFS,):
            why = "read-only file system"
        _fail(option, text, f"cannot create folders in {ancestor}: {why}")
    need = min_free_bytes() if need_bytes is None else need_bytes
    try:
        st = os.statvfs(ancestor)
        free = st.f_bavail * st.f_frsize
    except (OSError, AttributeError):
        free = None
    if free is not None and free < need:
        _fail(option, text, f"only {free / 2**20:.1f} MiB free on the disk of {ancestor}; "
                            f"expected at least {need / 2**20:.0f} MiB ({MIN_FREE_ENV})")
    if path.parent.is_dir():
        remove_stale_staging(path.parent)
        if busy := live_staging(path.parent, path.name):
            _fail(option, text, f"another run (pid {busy[0][1]}) is writing this folder")
    return path


def add_timeline_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--timeline``, ``--timeline-window``, ``--timeline-max-events`` to a parser."""
    g = parser.add_argument_group("timeline")
    g.add_argument("--timeline", action="store_true",
                   help="also write timeline.json (Chrome trace / Perfetto) into the results "
                        "folder")
    g.add_argument("--timeline-window", metavar="START:END", default=None,
                   help="record only events overlapping [START, END) simulated seconds "
                        "(default: the whole run)")
    g.add_argument("--timeline-max-events", metavar="N", type=int, default=None,
                   help=f"keep at most N events, the earliest (default {DEFAULT_MAX_EVENTS:,})")


def options_from_args(args: argparse.Namespace) -> TimelineOptions | None:
    """The ``TimelineOptions`` the parsed flags ask for, or None without ``--timeline``
    (``--timeline-window`` / ``--timeline-max-events`` imply ``--timeline``)."""
    window = getattr(args, "timeline_window", None)
    max_events = getattr(args, "timeline_max_events", None)
    if not (getattr(args, "timeline", False) or window is not None or max_events is not None):
        return None
    start, end = parse_window(window) if window is not None else (0.0, None)
    for value in (start, end):
        if value is not None and not (math.isfinite(value) and abs(value) <= MAX_DURATION_S):
            raise ValueError(f"--timeline-window: expected START:END in seconds within "
                             f"[0, {MAX_DURATION_S:.0e}], got {str(window)[:60]!r}")
    if max_events is not None and not 1 <= int(max_events) <= MAX_TIMELINE_EVENTS:
        raise ValueError(f"--timeline-max-events: expected an integer in "
                         f"[1, {MAX_TIMELINE_EVENTS:.0e}], got {max_events}")
    return TimelineOptions(start, end, DEFAULT_MAX_EVENTS if max_events is None
                           else int(max_events))


def print_note(tl: Timeline | None) -> None:
    if tl is not None and (msg := tl.note()):
        print(msg, file=sys.stderr)


def add_set_argument(parser: argparse.ArgumentParser, example: str = "run.seed=3") -> None:
    """``--set KEY=VALUE`` (repeatable): override a config field by dotted path."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config field by dotted path, e.g. {example} "
                             "(repeatable)")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``--set`` assignments as a dotted-path mapping (None when there are none)."""
    items = getattr(args, "set", None) or []
    return dict(parse_assignment(item) for item in items) or None


def check_out_dir(out: Path | None) -> None:
    """Fail before simulating when ``--out`` cannot take a results folder (None: nothing to
    check; see :func:`check_out_path`)."""
    if out is not None:
        check_out_path(out)


def is_study_file(path: str | Path) -> bool:
    """Whether ``path`` is a study (variants) file rather than one experiment: its top
    level has ``base`` or ``variants``. Unreadable or malformed files are not (the config
    reader then reports them)."""
    try:
        return is_variants_data(load_yaml_text(read_text_file(path, str(path)), str(path)).data)
    except ConfigError:
        return False


def write_results_announced(result: Any, out: Path, quiet: bool) -> Path:
    """Write ``result``'s folder at ``out``, saying so first unless ``quiet`` (the report's
    plots take a few seconds); returns the folder."""
    from sim.run.results import write_results

    if not quiet:
        print(f"writing {out} (data, plots, report) ...", file=sys.stderr, flush=True)
    return write_results(result, out)


def summary_line(s: dict) -> str:
    """The one-line outcome a command prints: requests, simulated time, throughput."""
    return (f"{s['requests_completed']} completed, {s['requests_in_flight']} in flight, "
            f"{s['requests_rejected']} rejected in {s['sim_time_s']:.3f} s simulated; "
            f"{s['throughput_tokens_per_s']:.1f} tokens/s")


__all__ = [
    "MIN_FREE_ENV",
    "ArgumentParser",
    "add_set_argument",
    "add_timeline_arguments",
    "check_out_dir",
    "check_out_path",
    "min_free_bytes",
    "options_from_args",
    "overrides_from_args",
    "print_note",
    "is_study_file",
    "summary_line",
    "write_results_announced",
]
