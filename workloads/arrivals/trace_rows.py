"""A trace file's rows as arrays (``TraceRows``), shared by every trace reader, and what
every reader checks: the file is a regular file (a named pipe or device is refused at
once, never waited on), each count and time is plausible, and the rows span a time the
simulated clock can hold even after ``time_scale``."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from workloads.errors import WorkloadError

MAX_TRACE_TOKENS = 2**30  #: most prompt or output tokens of one trace row (1Gi)
MAX_TRACE_SPAN_NS = 10**16  #: longest span of a trace's times (1e7 s, about 116 days)
MAX_LINE_CHARS = 16 * 2**20  #: longest line of a text trace (16 Mi characters)


@dataclass(frozen=True)
class TraceRows:
    """A trace file's rows in file order: line numbers, times (ns on the trace's own clock),
    prompt and output tokens, and (Mooncake) each prompt's prefix-block hash ids."""

    path: Path
    format: str
    line: np.ndarray
    time_ns: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    hash_ids: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.line)


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_trace(path: str | Path) -> IO[str]:
    """The trace file opened as UTF-8 text (a BOM skipped); a missing, unreadable or
    non-regular file is a one-line WorkloadError naming it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:
        why = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
        raise WorkloadError(f"workload.arrivals.path: cannot read {path}: {why}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise WorkloadError(f"workload.arrivals.path: {path}: expected a regular file, got "
                            f"{_kind_of(mode)}")
    os.set_blocking(fd, True)
    return open(fd, newline="", encoding="utf-8-sig", closefd=True)


def checked_rows(path: Path, format: str, lines: list[int], times: list[int],
                 inputs: list[int], outputs: list[int],
                 hash_ids: list[list[int]] | None = None) -> TraceRows:
    """``TraceRows`` of parsed rows, after the checks every reader shares: at least one
    row, and times spanning at most MAX_TRACE_SPAN_NS (so that the arrival times, scaled,
    stay within the simulated clock). Counts are checked by the readers, per row."""
    if not lines:
        raise WorkloadError(f"{path}: expected at least one request row, found none")
    first, last = int(np.argmin(times)), int(np.argmax(times))
    if times[last] - times[first] > MAX_TRACE_SPAN_NS:
        raise WorkloadError(f"{path}: line {lines[last]}: expected the rows to span at most "
                            f"{MAX_TRACE_SPAN_NS / 1e9:.0e} s, got "
                            f"{(times[last] - times[first]) / 1e9:.3g} s from line "
                            f"{lines[first]}")
    return TraceRows(path, format, np.array(lines), np.array(times, dtype=np.int64),
                     np.array(inputs, dtype=np.int64), np.array(outputs, dtype=np.int64),
                     hash_ids)


def decode_error(path: Path, exc: UnicodeDecodeError) -> WorkloadError:
    """The error of a trace that is not UTF-8, at its first bad line (text is decoded in
    blocks, so the line is found again here, in binary)."""
    line, byte = 0, exc.object[exc.start] if exc.object else 0
    try:
        with open(path, "rb") as fh:
            for line, raw in enumerate(fh, start=1):
                try:
                    raw.decode("utf-8-sig" if line == 1 else "utf-8")
                except UnicodeDecodeError as bad:
                    byte = raw[bad.start]
                    break
    except OSError:
        pass
    where = f"line {line}: " if line else ""
    return WorkloadError(f"{path}: {where}expected UTF-8 text, got byte 0x{byte:02x} that is "
                         "not UTF-8")


__all__ = ["MAX_LINE_CHARS", "MAX_TRACE_SPAN_NS", "MAX_TRACE_TOKENS", "TraceRows",
           "checked_rows", "decode_error", "open_trace"]
