"""Where finished requests' rows go while a run goes on, so that the run's memory grows with
the requests in flight, not with the requests simulated.

A request's row (its times, node, status and token counts) is written here once, when it
leaves the system (completed, rejected, failed), or at the end of the run (still in
flight, or never arrived). Rows are buffered ``FLUSH_ROWS`` at a time and written by
request id into one column-major table: in memory for runs of at most ``IN_MEMORY_MAX``
planned requests, else in an anonymous temporary file (``tempfile``: under ``$TMPDIR``,
unlinked from the start, so nothing is left behind even if the process dies), 121 bytes
a request. :meth:`RequestArchive.columns` gives the whole table back, one numpy column per
field indexed by request id (on file: copy-on-write maps): the summary, ``requests.csv``
and the timeline are an exact second pass over it.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO

import numpy as np

# (field, dtype, the value of a row that never reached it). int64 fields first, so every
# column of the file starts 8-byte aligned.
FIELDS: tuple[tuple[str, type, int], ...] = (
    ("arrival_ns", np.int64, -1), ("admit_ns", np.int64, -1), ("first_ns", np.int64, -1),
    ("done_ns", np.int64, -1), ("unique_tokens", np.int64, 0), ("output_tokens", np.int64, 0),
    ("shared_tokens", np.int64, 0), ("prefill_tokens", np.int64, 0), ("corpus", np.int64, 0),
    ("kv_bytes", np.int64, 0), ("generated", np.int64, 0), ("redo_prefill", np.int64, -1),
    ("resume_done", np.int64, 0), ("retries", np.int64, 0), ("node", np.int32, -1),
    ("prefill_node", np.int32, -1), ("status", np.int8, 0))
FIELD_NAMES: tuple[str, ...] = tuple(f for f, _, _ in FIELDS)
# the fields a request's plan decides (the rest start at their fill value)
PLAN_FIELDS: tuple[str, ...] = ("unique_tokens", "prefill_tokens", "output_tokens", "corpus",
                                "shared_tokens", "kv_bytes")
ROW_BYTES = sum(np.dtype(t).itemsize for _, t, _ in FIELDS)

FLUSH_ROWS = 4096  # finished rows buffered before they are written out
IN_MEMORY_MAX = 1 << 16  # planned requests up to which the table stays in memory


def _allocated_file(nbytes: int) -> IO[bytes]:
    """An unlinked temporary file with ``nbytes`` allocated on disk up front: writing
    through a map into a file the disk has no room for kills the process (SIGBUS), so a
    full disk is found here, before the run, as an error that says where."""
    fh = tempfile.TemporaryFile(prefix="moska-sim-requests-")  # noqa: SIM115 (returned)
    try:
        allocate = getattr(os, "posix_fallocate", None)
        if allocate is not None:
            allocate(fh.fileno(), 0, nbytes)
        else:  # macOS has none: write the zeros (the disk says ENOSPC the same way)
            zeros = bytes(1 << 20)
            for start in range(0, nbytes, len(zeros)):
                fh.write(zeros[:min(len(zeros), nbytes - start)])
            fh.flush()
    except OSError as e:
        fh.close()
        raise OSError(e.errno, f"request archive: cannot reserve {nbytes / 2**20:.1f} MiB "
                               f"for the run's request rows under {tempfile.gettempdir()} "
                               f"({e.strerror}); free space there or set TMPDIR") from None
    return fh


class RequestArchive:
    """The finished rows of a run of ``n`` planned requests, by request id.

    ``in_memory``: keep the table in numpy arrays (default: when ``n <= IN_MEMORY_MAX``)
    rather than a temporary file; the two give the same columns, byte for byte."""

    def __init__(self, n: int, *, in_memory: bool | None = None) -> None:
        self.n = int(n)
        self.in_memory = self.n <= IN_MEMORY_MAX if in_memory is None else bool(in_memory)
        self._offsets: dict[str, int] = {}
        off = 0
        for name, dtype, _ in FIELDS:
            self._offsets[name] = off
            off += self.n * np.dtype(dtype).itemsize
        self.nbytes = off
        self._file = None
        self._memory: dict[str, np.ndarray] | None = None
        if self.in_memory or self.n == 0:
            self._memory = {name: np.full(self.n, fill, dtype=dtype)
                            for name, dtype, fill in FIELDS}
        else:
            self._file = _allocated_file(self.nbytes)
        self._ids = np.empty(FLUSH_ROWS, dtype=np.int64)
        self._buffer = np.empty((FLUSH_ROWS, len(FIELDS)), dtype=np.int64)
        self._buffered = 0
        self.rows_written = 0
        self._columns: dict[str, np.ndarray] | None = None

    # -- writing ---------------------------------------------------------------------------
    def put(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """The rows of requests ``ids``: an int64 matrix, one row per id, ``FIELDS``'
        columns in order."""
        if self._columns is not None:
            raise RuntimeError("RequestArchive.put: the archive was read back already")
        m = len(ids)
        if self._buffered + m > FLUSH_ROWS:
            self._flush()
        if m > FLUSH_ROWS:
            self._write(np.asarray(ids, dtype=np.int64), rows)
            return
        a, b = self._buffered, self._buffered + m
        self._ids[a:b] = ids
        self._buffer[a:b] = rows
        self._buffered = b

    def _flush(self) -> None:
        k = self._buffered
        if k:
            self._write(self._ids[:k], self._buffer[:k])
            self._buffered = 0

    def _write(self, ids: np.ndarray, rows: np.ndarray) -> None:
        self.rows_written += len(ids)
        if self._memory is not None:
            for k, name in enumerate(FIELD_NAMES):
                self._memory[name][ids] = rows[:, k]
            return
        # map the file for this write only: the pages written leave the process's resident
        # set when the map is dropped (they stay in the page cache, not on our heap)
        raw = np.memmap(self._file, dtype=np.uint8, mode="r+", shape=(self.nbytes,))
        for k, (name, dtype, _) in enumerate(FIELDS):
            self._column_of(raw, name, dtype)[ids] = rows[:, k]
        del raw

    def _column_of(self, raw: np.ndarray, name: str, dtype: type) -> np.ndarray:
        off = self._offsets[name]
        return raw[off:off + self.n * np.dtype(dtype).itemsize].view(dtype)

    # -- reading ---------------------------------------------------------------------------
    def columns(self) -> dict[str, np.ndarray]:
        """Every field as a column indexed by request id (call once every row is in).
        File-backed columns are copy-on-write maps: writing to them changes no file."""
        if self._columns is None:
            self._flush()
            if self.rows_written != self.n:
                raise RuntimeError(f"RequestArchive.columns: {self.rows_written} rows written "
                                   f"of {self.n} planned")
            if self._memory is not None:
                self._columns = self._memory
            else:
                raw = np.memmap(self._file, dtype=np.uint8, mode="c", shape=(self.nbytes,))
                self._columns = {name: self._column_of(raw, name, dtype)
                                 for name, dtype, _ in FIELDS}
                self._file.close()  # the map keeps the (unlinked) file's pages alive
        return self._columns


__all__ = ["FIELDS", "FIELD_NAMES", "FLUSH_ROWS", "IN_MEMORY_MAX", "PLAN_FIELDS", "ROW_BYTES",
           "RequestArchive"]
