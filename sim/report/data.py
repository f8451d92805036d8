"""Load the run's CSVs into numpy columns, tolerantly: a report should still come out
when a file is missing, empty, or has a column the engine did not write this time."""

from __future__ import annotations

import csv
import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LATENCY_COLUMNS = ("ttft_ms", "tpot_ms", "e2e_ms")


def _to_float(text: str) -> float:
    """CSV cell -> float; empty or unparsable cells become NaN (e.g. in-flight requests)."""
    try:
        return float(text)  # float() itself ignores surrounding whitespace
    except ValueError:
        return math.nan


def read_numeric_csv(
    path: Path | None, columns: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Columns of a CSV (all, or those of ``columns`` it has) as float arrays, non-numbers
    as NaN; {} when there is no file or no header. Parsing only the wanted columns keeps
    a million-request CSV quick."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            return {}
        names = [h.strip() for h in header]
        wanted = [i for i, n in enumerate(names) if columns is None or n in columns]
        # array('d'): 8 bytes a value, not a 32-byte float object in a list (a million rows)
        cols: list[array] = [array("d") for _ in wanted]
        for line in reader:
            if not line:
                continue
            n = len(line)
            for j, i in enumerate(wanted):
                cols[j].append(_to_float(line[i]) if i < n else math.nan)
    return {names[i]: np.frombuffer(vals, dtype=np.float64)
            for i, vals in zip(wanted, cols)}


@dataclass
class Latencies:
    """Per-request latency samples (ms) of one run, finite values only."""

    ttft_ms: np.ndarray = field(default_factory=lambda: np.empty(0))
    tpot_ms: np.ndarray = field(default_factory=lambda: np.empty(0))
    e2e_ms: np.ndarray = field(default_factory=lambda: np.empty(0))

    def get(self, metric: str) -> np.ndarray:
        """Samples of ``metric`` (one of :data:`LATENCY_COLUMNS`)."""
        return getattr(self, metric)

    def __bool__(self) -> bool:
        return any(self.get(m).size for m in LATENCY_COLUMNS)


def read_latencies(requests_csv: Path | None) -> Latencies:
    """TTFT/TPOT/e2e samples from requests.csv; NaN (in-flight) and negative cells dropped.

    TPOT is undefined for one-token outputs; the engine may write it empty or 0, so zeros
    are dropped for TPOT only (a real TTFT or e2e is never 0 but keeping it is harmless).
    """
    cols = read_numeric_csv(requests_csv, LATENCY_COLUMNS)
    out = Latencies()
    for metric in LATENCY_COLUMNS:
        arr = cols.get(metric)
        if arr is None:
            continue
        arr = arr[np.isfinite(arr) & (arr >= 0)]
        if metric == "tpot_ms":
            arr = arr[arr > 0]
        setattr(out, metric, np.sort(arr))
    return out


@dataclass
class TimeSeries:
    """time_s plus named numeric series of the same length."""

    time_s: np.ndarray
    series: dict[str, np.ndarray]

    def __bool__(self) -> bool:
        return self.time_s.size > 0 and bool(self.series)


def read_timeseries(timeseries_csv: Path | None) -> TimeSeries:
    """timeseries.csv -> :class:`TimeSeries`; columns that are all NaN are dropped."""
    cols = read_numeric_csv(timeseries_csv)
    time = cols.pop("time_s", None)
    if time is None:
        return TimeSeries(np.empty(0), {})
    series = {k: v for k, v in cols.items() if v.size and np.isfinite(v).any()}
    return TimeSeries(time, series)


def resource_kind(name: str) -> str:
    """'unique', 'shared', 'link' or 'other', from the resource name's prefix."""
    low = name.lower()
    for kind in ("unique", "shared", "link"):
        if low.startswith(kind):
            return kind
    return "other"


def mean_utilization_by_kind(utilization: Mapping[str, Any] | None) -> dict[str, float | None]:
    """Mean utilization of the unique nodes, shared nodes and links (None if there are none)."""
    groups: dict[str, list[float]] = {"unique": [], "shared": [], "link": []}
    for name, value in (utilization or {}).items():
        kind = resource_kind(str(name))
        v = as_float(value)
        if kind in groups and v is not None:
            groups[kind].append(v)
    return {k: (float(np.mean(v)) if v else None) for k, v in groups.items()}


def as_float(value: Any) -> float | None:
    """A finite float from a summary value, or None (missing, NaN, not a number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
