"""What several commands share: the timeline flags, ``--set`` overrides, the ``--out``
check, and the one-line outcome of a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sim.config import parse_assignment
from sim.engine.timeline import DEFAULT_MAX_EVENTS, Timeline, TimelineOptions, parse_window


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
    """Fail before simulating when ``--out`` names a folder that is not empty."""
    if out is not None and out.exists() and any(out.iterdir()):
        raise ValueError(f"--out: {out} exists and is not empty")


def summary_line(s: dict) -> str:
    """The one-line outcome a command prints: requests, simulated time, throughput."""
    return (f"{s['requests_completed']} completed, {s['requests_in_flight']} in flight, "
            f"{s['requests_rejected']} rejected in {s['sim_time_s']:.3f} s simulated; "
            f"{s['throughput_tokens_per_s']:.1f} tokens/s")


__all__ = [
    "add_set_argument",
    "add_timeline_arguments",
    "check_out_dir",
    "options_from_args",
    "overrides_from_args",
    "print_note",
    "summary_line",
]
