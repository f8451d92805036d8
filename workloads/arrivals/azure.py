"""The Azure LLM inference trace reader: CSV rows of TIMESTAMP, ContextTokens,
GeneratedTokens."""

from __future__ import annotations

import csv
import re
from datetime import date
from functools import lru_cache
from pathlib import Path

from workloads.arrivals.trace_rows import (
    MAX_TRACE_TOKENS,
    TraceRows,
    checked_rows,
    decode_error,
    open_trace,
)
from workloads.errors import WorkloadError

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_EPOCH = date(1970, 1, 1).toordinal()
MIN_YEAR, MAX_YEAR = 1900, 2200  # nanoseconds since 1970 stay within int64
# at most 12 fractional digits (the trace has 7; ns resolution needs 9)
_AZURE_TIME = re.compile(
    r"\s*(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,12}))?\s*$", re.ASCII)


def read_azure(path: str | Path) -> TraceRows:
    """Azure LLM inference CSV: TIMESTAMP ('2023-11-16 18:15:46.6805900', up to 12
    fractional digits, years 1900-2200), ContextTokens, GeneratedTokens (integers in
    [0, 2^30]); extra columns and any column order are fine. Every bad row, cell or byte
    is a one-line WorkloadError naming the file, line and column."""
    path = Path(path)
    lines: list[int] = []
    times: list[int] = []
    ctx: list[int] = []
    gen: list[int] = []
    with open_trace(path) as fh:
        reader = csv.reader(fh, strict=True)
        try:
            header = next(reader, None)
            names = [h.strip() for h in header or []]
            missing = [c for c in AZURE_COLUMNS if c not in names]
            if missing:
                raise WorkloadError(f"{path}: line 1: expected a header with columns "
                                    f"{', '.join(AZURE_COLUMNS)}; missing {', '.join(missing)}")
            cols = [names.index(c) for c in AZURE_COLUMNS]
            width = max(cols) + 1
            for row in reader:
                if not row or not any(cell.strip() for cell in row):
                    continue
                line = reader.line_num
                if len(row) < width:
                    raise WorkloadError(f"{path}: line {line}: expected {len(names)} columns "
                                        f"({', '.join(names)}), got {len(row)}")
                times.append(_azure_time_ns(row[cols[0]], path, line))
                ctx.append(_int_cell(row[cols[1]], path, line, AZURE_COLUMNS[1]))
                gen.append(_int_cell(row[cols[2]], path, line, AZURE_COLUMNS[2]))
                lines.append(line)
        except csv.Error as exc:
            raise WorkloadError(f"{path}: line {reader.line_num}: expected CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise decode_error(path, exc) from None
    return checked_rows(path, "azure", lines, times, ctx, gen)


def _azure_time_ns(text: str, path: Path, line: int) -> int:
    """Nanoseconds since 1970 of 'YYYY-MM-DD HH:MM:SS[.fraction]' (exact integers)."""
    m = _AZURE_TIME.match(text)
    try:
        if m is None:
            raise ValueError
        day, hh, mm, ss, frac = m.groups()
        h, mi, s = int(hh), int(mm), int(ss)
        if h > 23 or mi > 59 or s > 59:
            raise ValueError
        if not MIN_YEAR <= int(day[:4]) <= MAX_YEAR:
            raise WorkloadError(f"{path}: line {line}: TIMESTAMP: expected a year "
                                f"{MIN_YEAR}-{MAX_YEAR}, got {_short(text)}")
        frac_ns = int((frac or "0")[:9].ljust(9, "0"))
        seconds = (_day_ordinal(day) - _EPOCH) * 86_400 + h * 3600 + mi * 60 + s
        return seconds * 1_000_000_000 + frac_ns
    except ValueError:
        raise WorkloadError(f"{path}: line {line}: TIMESTAMP: expected "
                            f"'YYYY-MM-DD HH:MM:SS[.fraction]', got {_short(text)}") from None


@lru_cache(maxsize=64)
def _day_ordinal(day: str) -> int:
    return date.fromisoformat(day).toordinal()


def _int_cell(text: str, path: Path, line: int, field: str) -> int:
    stripped = text.strip()
    value = -1
    if stripped.isascii() and stripped.isdigit():
        value = int(stripped) if len(stripped) <= 12 else MAX_TRACE_TOKENS + 1
    if value < 0:
        raise WorkloadError(f"{path}: line {line}: {field}: expected an integer >= 0, "
                            f"got {_short(text)}")
    if value > MAX_TRACE_TOKENS:
        raise WorkloadError(f"{path}: line {line}: {field}: expected an integer <= "
                            f"{MAX_TRACE_TOKENS} (2^30), got {_short(text)}")
    return value


def _short(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")


__all__ = ["AZURE_COLUMNS", "read_azure"]
