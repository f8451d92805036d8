"""The Mooncake trace reader: JSONL rows of timestamp (ms), input_length,
output_length and hash_ids (512-token prefix blocks)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from workloads.arrivals.trace_rows import (
    MAX_LINE_CHARS,
    MAX_TRACE_TOKENS,
    TraceRows,
    checked_rows,
    decode_error,
    open_trace,
)
from workloads.errors import WorkloadError

MAX_TIMESTAMP_MS = 4 * 10**12  #: latest timestamp, ms (in ns it stays within int64)
MAX_JSON_DEPTH = 16  #: deepest nesting of a row (a row is an object holding one list)
MAX_HASH_ID = 2**63 - 1
MAX_HASH_IDS = MAX_TRACE_TOKENS // 512  #: block ids of the longest plausible prompt
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _too_deep(text: str) -> bool:
    """Whether brackets outside strings nest deeper than MAX_JSON_DEPTH (json.loads would
    recurse once per level; a flat row is counted in one pass of ``str.count``)."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif token in "]}":
            depth -= 1
    return False


def read_mooncake(path: str | Path) -> TraceRows:
    """Mooncake JSONL: one object per line with ``timestamp`` (ms, in [0, 4e12]),
    ``input_length`` (in [1, 2^30]), ``output_length`` (in [0, 2^30]) and ``hash_ids``
    (integer ids in [0, 2^63) of 512-token blocks). Lines longer than 16 Mi characters or
    nesting deeper than 16 are refused; every problem is a one-line WorkloadError naming
    the file and line."""
    path = Path(path)
    lines: list[int] = []
    times: list[int] = []
    ins: list[int] = []
    outs: list[int] = []
    hashes: list[list[int]] = []
    line = 0
    with open_trace(path) as fh:
        while True:
            line += 1
            try:
                text = fh.readline(MAX_LINE_CHARS + 1)
            except UnicodeDecodeError as exc:
                raise decode_error(path, exc) from None
            if not text:
                break
            if len(text) > MAX_LINE_CHARS:
                raise WorkloadError(f"{path}: line {line}: expected a line of at most "
                                    f"{MAX_LINE_CHARS:,} characters, got a longer one")
            if not text.strip():
                continue
            row = _parse(text, path, line)
            ts = row.get("timestamp")
            if (isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts)
                    or ts < 0):
                raise WorkloadError(f"{path}: line {line}: timestamp: expected a number of ms "
                                    f">= 0, got {_short(ts)}")
            if ts > MAX_TIMESTAMP_MS:
                raise WorkloadError(f"{path}: line {line}: timestamp: expected a number of ms "
                                    f"<= {MAX_TIMESTAMP_MS:.0e}, got {_short(ts)}")
            n_in = _json_int(row, "input_length", 1, path, line)
            n_out = _json_int(row, "output_length", 0, path, line)
            ids = row.get("hash_ids")
            if not isinstance(ids, list) or not all(
                    isinstance(h, int) and not isinstance(h, bool) for h in ids):
                raise WorkloadError(f"{path}: line {line}: hash_ids: expected a list of "
                                    f"integer block ids, got {_short(ids)}")
            if len(ids) > MAX_HASH_IDS:
                raise WorkloadError(f"{path}: line {line}: hash_ids: expected at most "
                                    f"{MAX_HASH_IDS:,} block ids (2^30 tokens / 512), got "
                                    f"{len(ids):,}")
            if ids and not (0 <= min(ids) and max(ids) <= MAX_HASH_ID):
                raise WorkloadError(f"{path}: line {line}: hash_ids: expected block ids in "
                                    f"[0, 2^63), got {_short(min(ids) if min(ids) < 0 else max(ids))}")
            lines.append(line)
            times.append(round(ts * 1_000_000))
            ins.append(n_in)
            outs.append(n_out)
            hashes.append(ids)
    return checked_rows(path, "mooncake", lines, times, ins, outs, hashes)


def _parse(text: str, path: Path, line: int) -> dict[str, Any]:
    """One line as a JSON object (depth checked before parsing)."""
    if _too_deep(text):
        raise WorkloadError(f"{path}: line {line}: expected a JSON object nesting at most "
                            f"{MAX_JSON_DEPTH} levels, got deeper")
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkloadError(f"{path}: line {line}: expected a JSON object, got invalid "
                            f"JSON ({exc.msg} at column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of over 4300 digits
        raise WorkloadError(f"{path}: line {line}: expected a JSON object, got "
                            f"{str(exc)[:80]}") from None
    if not isinstance(row, dict):
        raise WorkloadError(f"{path}: line {line}: expected a JSON object, "
                            f"got {type(row).__name__}")
    return row


def _json_int(row: dict, key: str, least: int, path: Path, line: int) -> int:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < least:
        raise WorkloadError(f"{path}: line {line}: {key}: expected an integer >= {least}, "
                            f"got {_short(v)}")
    if v > MAX_TRACE_TOKENS:
        raise WorkloadError(f"{path}: line {line}: {key}: expected an integer <= "
                            f"{MAX_TRACE_TOKENS} (2^30), got {_short(v)}")
    return v


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**60 else "a huge integer"
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["read_mooncake"]
