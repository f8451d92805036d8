"""The Mooncake trace reader: JSONL rows of timestamp (ms), input_length,
output_length and hash_ids (512-token prefix blocks)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from workloads.arrivals.trace_rows import TraceRows, open_trace
from workloads.errors import WorkloadError


def read_mooncake(path: str | Path) -> TraceRows:
    """Mooncake JSONL: one object per line with ``timestamp`` (ms, >= 0), ``input_length``
    (>= 1), ``output_length`` (>= 0) and ``hash_ids`` (integer ids of 512-token blocks)."""
    path = Path(path)
    lines, times, ins, outs, hashes = [], [], [], [], []
    with open_trace(path) as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise WorkloadError(f"{path}: line {line}: expected a JSON object, got invalid "
                                    f"JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise WorkloadError(f"{path}: line {line}: expected a JSON object, "
                                    f"got {type(row).__name__}")
            ts = row.get("timestamp")
            if (isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts)
                    or ts < 0):
                raise WorkloadError(f"{path}: line {line}: timestamp: expected a number of ms "
                                    f">= 0, got {ts!r}")
            n_in = _json_int(row, "input_length", 1, path, line)
            n_out = _json_int(row, "output_length", 0, path, line)
            ids = row.get("hash_ids")
            if not isinstance(ids, list) or not all(
                    isinstance(h, int) and not isinstance(h, bool) for h in ids):
                raise WorkloadError(f"{path}: line {line}: hash_ids: expected a list of "
                                    f"integer block ids, got {_short(ids)}")
            lines.append(line)
            times.append(round(ts * 1_000_000))
            ins.append(n_in)
            outs.append(n_out)
            hashes.append(ids)
    if not lines:
        raise WorkloadError(f"{path}: expected at least one request row, found none")
    return TraceRows(path, "mooncake", np.array(lines), np.array(times, dtype=np.int64),
                     np.array(ins, dtype=np.int64), np.array(outs, dtype=np.int64), hashes)


def _json_int(row: dict, key: str, least: int, path: Path, line: int) -> int:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < least:
        raise WorkloadError(f"{path}: line {line}: {key}: expected an integer >= {least}, "
                            f"got {_short(v)}")
    return v


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."




__all__ = ["read_mooncake"]
