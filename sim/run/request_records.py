"""``requests.csv``: one row per arrived request, formatted a block of requests at a time.

The rows are never held all at once: :class:`RequestRecords` keeps a reference to the
run's finished request log (its columns by request id, the request archive's: arrays, or
maps of a temporary file on long runs) and formats
``BLOCK`` requests at a time, in id order, into CSV text. Writing a million-request file
holds one block of Python rows (~64 Ki rows, ~50 MB) at a time, not a million of them
(~0.7 GB) plus the whole file as one string (~0.1 GB).

The text is the same, byte for byte, as formatting every row at once: the latencies are
computed elementwise (the same float operations on a block as on the whole column), and
each block goes through the same ``csv.writer``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sim.engine.records import RequestLog
from sim.run.summary import latency_columns

BLOCK = 1 << 16  # requests formatted at a time

HEADER: tuple[str, ...] = (
    "id", "node", "status", "arrival_ms", "admitted_ms", "first_token_ms", "completion_ms",
    "unique_tokens", "shared_tokens", "output_tokens", "tokens_generated", "ttft_ms",
    "tpot_ms", "e2e_ms")


def _ms(a: np.ndarray) -> list[str]:
    """ns -> ms with 6 decimals; blank where not reached (-1)."""
    return ["" if v < 0 else f"{v / 1e6:.6f}" for v in a.tolist()]


def _fl(a: np.ndarray) -> list[str]:
    """6 decimals; blank where not defined (NaN)."""
    return ["" if not np.isfinite(v) else f"{v:.6f}" for v in a.tolist()]


class RequestRecords:
    """The per-request records of ``requests.csv`` (times in ms; blank where not
    reached), read off ``log`` a block at a time. ``node_names[i]`` names unique node i."""

    header: tuple[str, ...] = HEADER

    def __init__(self, log: RequestLog, node_names: list[str], block: int | None = None) -> None:
        block = BLOCK if block is None else block
        if block < 1:
            raise ValueError(f"RequestRecords: block: expected an integer >= 1, got {block}")
        self.log = log
        self.node_names = list(node_names)
        self.block = int(block)

    def __len__(self) -> int:
        """Requests that arrived (the CSV's rows)."""
        return self.log.arrived

    def blocks(self) -> Iterator[list[list[Any]]]:
        """The rows, in id order, at most ``block`` per list."""
        log = self.log
        names = self.node_names
        status_names = log.STATUS_NAMES
        for a in range(0, log.n, self.block):
            b = min(log.n, a + self.block)
            sel = np.flatnonzero(log.arrival_ns[a:b] >= 0) + a
            if not len(sel):
                continue
            arr, first, done = log.arrival_ns[sel], log.first_ns[sel], log.done_ns[sel]
            lat = latency_columns(arr, first, done, log.output_tokens[sel])
            cols = [
                sel.tolist(),
                ["" if n < 0 else names[n] for n in log.node[sel].tolist()],
                [status_names[s] for s in log.status[sel].tolist()],
                _ms(arr), _ms(log.admit_ns[sel]), _ms(first), _ms(done),
                log.unique_tokens[sel].tolist(), log.shared_tokens[sel].tolist(),
                log.output_tokens[sel].tolist(), log.generated[sel].tolist(),
                _fl(lat.ttft_ms), _fl(lat.tpot_ms), _fl(lat.e2e_ms),
            ]
            yield [list(r) for r in zip(*cols)]

    def rows(self) -> list[list[Any]]:
        """Every row as one list (O(requests) Python objects: small runs and tests only)."""
        return [row for block in self.blocks() for row in block]

    def csv_chunks(self) -> Iterator[str]:
        """The CSV text (header first), one chunk per block."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.header)
        yield buf.getvalue()
        for rows in self.blocks():
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerows(rows)
            yield buf.getvalue()

    def csv_text(self) -> str:
        """The whole CSV as one string (small runs and tests only)."""
        return "".join(self.csv_chunks())

    def write_csv(self, path: Path | str) -> None:
        """Write the CSV to ``path`` (UTF-8), a block at a time. Not atomic by itself: the
        results folder that holds it is (``sim.run.results``)."""
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(self.csv_chunks())


__all__ = ["BLOCK", "HEADER", "RequestRecords"]
