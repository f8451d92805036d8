"""Arrival processes: when requests arrive and how big they are, as an ``ArrivalPlan``.

- ``poisson``: exponential gaps of mean 1/rate; ``gamma``: gamma gaps of mean 1/rate and
  coefficient of variation ``cv`` (bursty when cv > 1; cv = 1 is Poisson in law).
- ``closed_loop``: the engine keeps ``concurrency`` requests in flight, issuing request
  ``i + concurrency`` when one completes. The plan's requests carry ``arrival_ns = 0`` as a
  placeholder (the engine knows the real issue times) and ``closed_loop_concurrency`` says
  so. With only a duration bound, ``CLOSED_LOOP_DEFAULT_REQUESTS`` are planned (a note says
  so); the run ends early if they all complete.
- ``trace``: ``azure`` CSV (TIMESTAMP, ContextTokens, GeneratedTokens) or ``mooncake`` JSONL
  (timestamp ms, input_length, output_length, hash_ids). Times are relative to the earliest
  row; rows before ``start_offset_s`` (trace seconds) are skipped and times then start from
  that offset; ``time_scale`` multiplies the gaps (0.5 = twice as fast). Rows out of time
  order are sorted stably (ties keep file order) and the plan carries a note; bad rows raise
  ``WorkloadError`` naming the file, line, field and what was expected. Mooncake's sharing
  is read off the replayed requests' hash ids (``workloads.sharing``).

Sizes come from the ``TokenDistribution`` laws (traces: from the file; output clipped to
>= 1). With a synthetic ``SharedCorpusSpec`` each request picks a corpus by its
``corpus_popularity`` and reads it whole (``shared_tokens`` None). Draws are made in fixed
blocks, so with the same streams a shorter run is a prefix of a longer one. Streams:
``rng_arrivals`` gaps, ``rng_sizes`` sizes, ``rng_routing`` corpus picks (default: a child
spawned from ``rng_sizes``, so sizes do not depend on the corpus count).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from workloads.distributions import TokenDistribution
from workloads.errors import WorkloadError
from workloads.request import RequestSpec
from workloads.sharing import (
    MOONCAKE_BLOCK_TOKENS,
    SharedCorpusSpec,
    SharingStats,
    assign_corpora,
    split_mooncake,
    synthetic_sharing,
)

KINDS = ("poisson", "gamma", "closed_loop", "trace")
FORMATS = ("azure", "mooncake")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BLOCK = 4096  # draws per block (fixed: shorter runs are prefixes of longer ones)
CLOSED_LOOP_DEFAULT_REQUESTS = 100_000  # closed loop bounded by a duration only
_EPOCH = date(1970, 1, 1).toordinal()
_AZURE_TIME = re.compile(r"\s*(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*$")


@dataclass(frozen=True)
class ArrivalPlan:
    """A run's requests, sorted by ``arrival_ns`` with ids 0..n-1 in arrival order.

    ``closed_loop_concurrency``: set for closed loop (arrival times are placeholders).
    ``sharing``: the workload's sharing statistics (None without a shared corpus).
    ``corpus_tokens``: each corpus's size when the trace defines the corpora (Mooncake).
    ``notes``: what the plan had to adjust (unsorted rows, clipped sizes, defaults).
    """

    requests: tuple[RequestSpec, ...]
    closed_loop_concurrency: int | None = None
    sharing: SharingStats | None = None
    corpus_tokens: tuple[int, ...] | None = None
    notes: tuple[str, ...] = ()


# -- renewal processes --------------------------------------------------------------------
def poisson_times(rate_per_s: float, rng: np.random.Generator, *, max_requests: int | None = None,
                  duration_ns: int | None = None) -> np.ndarray:
    """Arrival times (int64 ns) of a Poisson process: exponential gaps of mean 1/rate."""
    rate = _positive(rate_per_s, "rate_per_s")
    return _renewal(lambda n: rng.standard_exponential(n) / rate, max_requests, duration_ns)


def gamma_times(rate_per_s: float, cv: float, rng: np.random.Generator, *,
                max_requests: int | None = None, duration_ns: int | None = None) -> np.ndarray:
    """Arrival times (int64 ns) with gamma gaps: mean 1/rate, coefficient of variation cv
    (shape 1/cv^2)."""
    rate = _positive(rate_per_s, "rate_per_s")
    shape = 1.0 / _positive(cv, "cv") ** 2
    return _renewal(lambda n: rng.standard_gamma(shape, n) / (shape * rate), max_requests,
                    duration_ns)


def _renewal(gaps_s: Callable[[int], np.ndarray], max_requests: int | None,
             duration_ns: int | None) -> np.ndarray:
    """Cumulative gaps, drawn in blocks, until the count or the duration is reached."""
    _bounds(max_requests, duration_ns)
    parts: list[np.ndarray] = []
    count, t_ns = 0, 0.0
    while (max_requests is None or count < max_requests) and (
            duration_ns is None or t_ns < duration_ns):
        t = t_ns + np.cumsum(gaps_s(BLOCK) * 1e9)
        parts.append(t)
        count, t_ns = count + BLOCK, float(t[-1])
    times = np.rint(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
    if max_requests is not None:
        times = times[:max_requests]
    if duration_ns is not None:
        times = times[times < duration_ns]
    return times


# -- sizes ----------------------------------------------------------------------------------
def _size_blocks(unique: TokenDistribution, output: TokenDistribution,
                 rng_sizes: np.random.Generator, shared: SharedCorpusSpec | None,
                 rng_corpora: np.random.Generator | None,
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Endless blocks of ``BLOCK`` (unique tokens, output tokens, corpus id) draws."""
    while True:
        u, o = unique.sample(rng_sizes, BLOCK), output.sample(rng_sizes, BLOCK)
        if shared is None or rng_corpora is None:
            c = np.zeros(BLOCK, dtype=np.int64)
        else:
            c = assign_corpora(shared, rng_corpora, BLOCK)
        yield u, o, c


def _sizes(n: int, blocks: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]],
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n`` draws of ``blocks`` as three arrays."""
    drawn = [next(blocks) for _ in range(-(-n // BLOCK))]
    if not drawn:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(3))  # type: ignore[return-value]
    u, o, c = (np.concatenate([d[j] for d in drawn])[:n] for j in range(3))
    return u, o, c


def _routing_rng(shared: SharedCorpusSpec | None, rng_routing: np.random.Generator | None,
                 rng_sizes: np.random.Generator) -> np.random.Generator | None:
    """The stream corpus picks come from: ``rng_routing``, else a child of ``rng_sizes``
    (spawned, so the size draws stay as they are); None when there is nothing to pick."""
    if shared is None or shared.corpora == 1:
        return None
    if rng_routing is not None:
        return rng_routing
    try:
        return rng_sizes.spawn(1)[0]
    except (TypeError, ValueError):  # a generator without a seed sequence
        return np.random.default_rng(int(rng_sizes.bit_generator.random_raw()))


def closed_loop_requests(concurrency: int, *, unique_tokens: TokenDistribution,
                         output_tokens: TokenDistribution, rng_sizes: np.random.Generator,
                         max_requests: int | None = None, shared: SharedCorpusSpec | None = None,
                         rng_routing: np.random.Generator | None = None) -> Iterator[RequestSpec]:
    """Closed-loop requests in issue order, ``arrival_ns = 0`` (the engine issues the first
    ``concurrency`` at once and the next whenever one completes); endless without
    ``max_requests``."""
    _count(concurrency, "concurrency")
    if max_requests is not None:
        _count(max_requests, "max_requests", least=0)
    blocks = _size_blocks(unique_tokens, output_tokens, rng_sizes, shared,
                          _routing_rng(shared, rng_routing, rng_sizes))
    for i in itertools.count() if max_requests is None else range(max_requests):
        if i % BLOCK == 0:
            u, o, c = (a.tolist() for a in next(blocks))
        j = i % BLOCK
        yield RequestSpec(i, 0, u[j], o[j], c[j])


def _synthetic(times: np.ndarray, unique: TokenDistribution, output: TokenDistribution,
               rng_sizes: np.random.Generator, shared: SharedCorpusSpec | None,
               rng_corpora: np.random.Generator | None) -> ArrivalPlan:
    """Requests at ``times`` with drawn sizes (and corpus picks, with their stats)."""
    u, o, c = _sizes(len(times), _size_blocks(unique, output, rng_sizes, shared, rng_corpora))
    reqs = tuple(RequestSpec(i, t, a, b, k) for i, (t, a, b, k)
                 in enumerate(zip(times.tolist(), u.tolist(), o.tolist(), c.tolist())))
    return ArrivalPlan(reqs, sharing=synthetic_sharing(shared, c, u) if shared else None)


# -- traces -----------------------------------------------------------------------------------
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


def read_trace(path: str | Path, format: str) -> TraceRows:
    """Parse a trace file of ``format`` ('azure' or 'mooncake')."""
    if format not in FORMATS:
        raise WorkloadError(f"workload.arrivals.format: expected one of {', '.join(FORMATS)}, "
                            f"got {format!r}")
    return read_azure(path) if format == "azure" else read_mooncake(path)


def _open(path: str | Path) -> Any:
    try:
        return open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise WorkloadError(f"workload.arrivals.path: cannot read {path}: "
                            f"{exc.strerror or exc}") from None


def read_azure(path: str | Path) -> TraceRows:
    """Azure LLM inference CSV: TIMESTAMP ('2023-11-16 18:15:46.6805900', any number of
    fractional digits), ContextTokens, GeneratedTokens (integers >= 0); extra columns and
    any column order are fine."""
    path = Path(path)
    lines, times, ctx, gen = [], [], [], []
    with _open(path) as fh:
        reader = csv.reader(fh)
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
    if not lines:
        raise WorkloadError(f"{path}: expected at least one request row, found none")
    return TraceRows(path, "azure", np.array(lines), np.array(times, dtype=np.int64),
                     np.array(ctx, dtype=np.int64), np.array(gen, dtype=np.int64))


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
        frac_ns = int((frac or "0")[:9].ljust(9, "0"))
        seconds = (_day_ordinal(day) - _EPOCH) * 86_400 + h * 3600 + mi * 60 + s
        return seconds * 1_000_000_000 + frac_ns
    except ValueError:
        raise WorkloadError(f"{path}: line {line}: TIMESTAMP: expected "
                            f"'YYYY-MM-DD HH:MM:SS[.fraction]', got {text!r}") from None


@lru_cache(maxsize=64)
def _day_ordinal(day: str) -> int:
    return date.fromisoformat(day).toordinal()


def _int_cell(text: str, path: Path, line: int, field: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise WorkloadError(f"{path}: line {line}: {field}: expected an integer >= 0, "
                            f"got {text!r}")
    return value


def read_mooncake(path: str | Path) -> TraceRows:
    """Mooncake JSONL: one object per line with ``timestamp`` (ms, >= 0), ``input_length``
    (>= 1), ``output_length`` (>= 0) and ``hash_ids`` (integer ids of 512-token blocks)."""
    path = Path(path)
    lines, times, ins, outs, hashes = [], [], [], [], []
    with _open(path) as fh:
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


def replay_times(rows: TraceRows, *, time_scale: float = 1.0, start_offset_s: float = 0.0,
                 max_requests: int | None = None, duration_ns: int | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(row indices in arrival order, arrival times in ns, notes) of the replayed rows."""
    scale = _positive(time_scale, "time_scale")
    offset = _nonnegative(start_offset_s, "start_offset_s")
    _bounds(max_requests, duration_ns)
    notes = []
    t = rows.time_ns
    order = np.arange(len(t))
    late = np.nonzero(np.diff(t) < 0)[0]
    if len(late):
        order = np.argsort(t, kind="stable")
        notes.append(f"{rows.path}: {len(late)} rows out of time order (first at line "
                     f"{int(rows.line[late[0] + 1])}); sorted by time, ties in file order")
    rel = t[order] - t[order[0]] - round(offset * 1e9)
    keep = rel >= 0
    order, rel = order[keep], rel[keep]
    times = np.rint(rel * scale).astype(np.int64) if scale != 1.0 else rel.astype(np.int64)
    n = len(times)
    if max_requests is not None:
        n = min(n, max_requests)
    if duration_ns is not None:
        n = min(n, int(np.searchsorted(times, duration_ns, side="left")))
    return order[:n], times[:n], notes


def trace_plan(rows: TraceRows, *, time_scale: float = 1.0, start_offset_s: float = 0.0,
               max_requests: int | None = None, duration_ns: int | None = None,
               shared: SharedCorpusSpec | None = None,
               rng_corpora: np.random.Generator | None = None) -> ArrivalPlan:
    """The plan replaying ``rows``: Azure sizes as given (corpora drawn when ``shared``);
    Mooncake with its own corpora read off the replayed rows' hash ids."""
    idx, times, notes = replay_times(rows, time_scale=time_scale, start_offset_s=start_offset_s,
                                     max_requests=max_requests, duration_ns=duration_ns)
    inputs, outputs = rows.input_tokens[idx], rows.output_tokens[idx]
    if (outputs < 1).any():
        notes.append(f"{rows.path}: {int((outputs < 1).sum())} requests with 0 output tokens "
                     "get 1")
    outputs = np.maximum(outputs, 1)
    if rows.format == "mooncake":
        assert rows.hash_ids is not None
        hashes = [rows.hash_ids[i] for i in idx.tolist()]
        odd = sum(len(h) != -(-int(n) // MOONCAKE_BLOCK_TOKENS)
                  for h, n in zip(hashes, inputs.tolist()))
        if odd:
            notes.append(f"{rows.path}: {odd} requests whose hash_ids do not number "
                         "ceil(input_length / 512); their tokens beyond the ids are unique")
        if shared is not None:
            notes.append("workload.shared: the corpora, their sizes and which requests read "
                         "them come from the Mooncake trace; of the configured corpus only "
                         "chunk_tokens, keep_fraction and popularity (within a corpus) apply")
        split = split_mooncake(hashes, inputs)
        reqs = tuple(RequestSpec(i, t, u, o, max(c, 0), s) for i, (t, u, o, c, s) in enumerate(zip(
            times.tolist(), split.unique_tokens.tolist(), outputs.tolist(),
            split.corpus.tolist(), split.shared_tokens.tolist())))
        return ArrivalPlan(reqs, sharing=split.stats,
                           corpus_tokens=tuple(split.corpus_tokens.tolist()), notes=tuple(notes))
    if (inputs < 1).any():
        notes.append(f"{rows.path}: {int((inputs < 1).sum())} requests with 0 context tokens "
                     "get 1")
    unique = np.maximum(inputs, 1)
    corpus = np.zeros(len(idx), dtype=np.int64)
    if shared is not None and rng_corpora is not None:
        corpus = assign_corpora(shared, rng_corpora, len(idx))
    reqs = tuple(RequestSpec(i, t, u, o, c) for i, (t, u, o, c) in enumerate(zip(
        times.tolist(), unique.tolist(), outputs.tolist(), corpus.tolist())))
    sharing = synthetic_sharing(shared, corpus, unique) if shared is not None else None
    return ArrivalPlan(reqs, sharing=sharing, notes=tuple(notes))


# -- the entry point --------------------------------------------------------------------------
def build_arrivals(
    kind: str, *, rate_per_s: float | None = None, cv: float | None = None,
    concurrency: int | None = None, path: str | Path | None = None, format: str | None = None,
    time_scale: float = 1.0, start_offset_s: float = 0.0,
    unique_tokens: TokenDistribution, output_tokens: TokenDistribution,
    shared: SharedCorpusSpec | None = None, rng_arrivals: np.random.Generator,
    rng_sizes: np.random.Generator, rng_routing: np.random.Generator | None = None,
    max_requests: int | None = None, duration_ns: int | None = None,
) -> ArrivalPlan:
    """The requests of a run for arrival ``kind`` (see the module docstring), bounded by
    ``max_requests`` and/or ``duration_ns`` (arrivals at or after it are dropped)."""
    if kind not in KINDS:
        raise WorkloadError(f"workload.arrivals.kind: expected one of {', '.join(KINDS)}, "
                            f"got {kind!r}")
    _bounds(max_requests, duration_ns)
    corpus_rng = _routing_rng(shared, rng_routing, rng_sizes)
    if kind == "trace":
        if path is None:
            raise WorkloadError("workload.arrivals.path: expected a trace file, got nothing")
        rows = read_trace(path, format)  # type: ignore[arg-type]
        return trace_plan(rows, time_scale=time_scale, start_offset_s=start_offset_s,
                          max_requests=max_requests, duration_ns=duration_ns, shared=shared,
                          rng_corpora=corpus_rng)
    notes: list[str] = []
    if kind == "closed_loop":
        c = _count(concurrency, "concurrency")
        n = max_requests
        if n is None:
            n = CLOSED_LOOP_DEFAULT_REQUESTS
            notes.append(f"closed loop bounded by a duration only: {n} requests planned; the "
                         "run ends early if they all complete")
        # the same draws as ``closed_loop_requests``, in arrays
        p = _synthetic(np.zeros(n, dtype=np.int64), unique_tokens, output_tokens, rng_sizes,
                       shared, corpus_rng)
        return replace(p, closed_loop_concurrency=c, notes=tuple(notes))
    rate = _positive(rate_per_s, "rate_per_s")
    if kind == "poisson":
        times = poisson_times(rate, rng_arrivals, max_requests=max_requests,
                              duration_ns=duration_ns)
    else:
        times = gamma_times(rate, _positive(cv, "cv"), rng_arrivals, max_requests=max_requests,
                            duration_ns=duration_ns)
    return _synthetic(times, unique_tokens, output_tokens, rng_sizes, shared, corpus_rng)


# -- argument checks --------------------------------------------------------------------------
def _positive(value: Any, name: str) -> float:
    if (value is None or isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise WorkloadError(f"workload.arrivals.{name}: expected a number > 0, got {value!r}")
    return float(value)


def _nonnegative(value: Any, name: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value < 0):
        raise WorkloadError(f"workload.arrivals.{name}: expected a number >= 0, got {value!r}")
    return float(value)


def _count(value: Any, name: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        where = ("run.requests (max_requests)" if name == "max_requests"
                 else f"workload.arrivals.{name}")
        raise WorkloadError(f"{where}: expected an integer >= {least}, got {value!r}")
    return int(value)


def _bounds(max_requests: int | None, duration_ns: int | None) -> None:
    if max_requests is None and duration_ns is None:
        raise WorkloadError("run: expected a bound: run.requests (max_requests) and/or "
                            "run.duration_s (duration_ns), got neither")
    if max_requests is not None:
        _count(max_requests, "max_requests", least=0)
    if duration_ns is not None and (isinstance(duration_ns, bool)
                                    or not isinstance(duration_ns, (int, np.integer))
                                    or duration_ns <= 0):
        raise WorkloadError(f"run.duration_s (duration_ns): expected an integer number of ns "
                            f"> 0, got {duration_ns!r}")
