"""``trace``: arrival times and sizes replayed from a trace file (``azure`` CSV or
``mooncake`` JSONL; one reader module each). Times are relative to the earliest row; rows
before ``start_offset_s`` (trace seconds) are skipped and times then start from that
offset; ``time_scale`` multiplies the gaps (0.5 = twice as fast). Rows out of time order
are sorted stably (ties keep file order) and the plan carries a note; bad rows raise
``WorkloadError`` naming the file, line, field and what was expected. Mooncake's sharing is
read off the replayed requests' hash ids (``workloads.sharing``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from workloads.arrivals.azure import read_azure
from workloads.arrivals.base import (
    ArrivalContext,
    ArrivalPlan,
    ArrivalProcess,
    Param,
    check_bounds,
    nonnegative,
    positive,
)
from workloads.arrivals.mooncake import read_mooncake
from workloads.arrivals.trace_rows import TraceRows
from workloads.errors import WorkloadError
from workloads.request import RequestTable
from workloads.sharing import (
    MOONCAKE_BLOCK_TOKENS,
    SharedCorpusSpec,
    assign_corpora,
    split_mooncake,
    synthetic_sharing,
)

#: trace format -> reader; a new format is one reader module and one entry here
READERS: dict[str, Callable[[str | Path], TraceRows]] = {
    "azure": read_azure,
    "mooncake": read_mooncake,
}
FORMATS = tuple(READERS)
#: formats whose rows carry prefix-block ids, so the trace defines the shared corpora
CORPORA_FORMATS = frozenset({"mooncake"})


def read_trace(path: str | Path, format: str) -> TraceRows:
    """Parse a trace file of ``format`` ('azure' or 'mooncake')."""
    if format not in READERS:
        raise WorkloadError(f"workload.arrivals.format: expected one of {', '.join(FORMATS)}, "
                            f"got {format!r}")
    return READERS[format](path)


def replay_times(rows: TraceRows, *, time_scale: float = 1.0, start_offset_s: float = 0.0,
                 max_requests: int | None = None, duration_ns: int | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(row indices in arrival order, arrival times in ns, notes) of the replayed rows."""
    scale = positive(time_scale, "time_scale")
    offset = nonnegative(start_offset_s, "start_offset_s")
    check_bounds(max_requests, duration_ns, required=False)  # a trace ends by itself
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
               rng_corpora: np.random.Generator | None = None,
               cached_fraction: float = 0.0, trace_corpora: bool = True) -> ArrivalPlan:
    """The plan replaying ``rows``: Azure sizes as given (corpora drawn when ``shared``);
    Mooncake with its own corpora read off the replayed rows' hash ids (with
    ``trace_corpora`` False: none, each prompt wholly its request's own context). With
    ``cached_fraction`` > 0, that fraction of each request's unique tokens is resident
    (prefill tokens = the rest, rounded up); 0 leaves the workload's law to decide."""
    idx, times, notes = replay_times(rows, time_scale=time_scale, start_offset_s=start_offset_s,
                                     max_requests=max_requests, duration_ns=duration_ns)
    inputs, outputs = rows.input_tokens[idx], rows.output_tokens[idx]
    if (outputs < 1).any():
        notes.append(f"{rows.path}: {int((outputs < 1).sum())} requests with 0 output tokens "
                     "get 1")
    outputs = np.maximum(outputs, 1)
    if rows.format == "mooncake" and not trace_corpora:
        notes.append("workload.shared.source none: each Mooncake prompt is wholly its "
                     "request's own context (the blocks it shares with other requests are "
                     "not shared)")
        new = _resident(inputs, cached_fraction, rows.path, notes)
        return ArrivalPlan(RequestTable(times, inputs, outputs, None, None, new),
                           notes=tuple(notes))
    if rows.format == "mooncake":
        if cached_fraction > 0:
            raise WorkloadError(
                f"workload.arrivals.cached_fraction: {cached_fraction} does not apply to a "
                "Mooncake trace with its own corpora (workload.shared.source: trace): a "
                "prompt's blocks seen in other requests are its shared corpus and the rest "
                "is new; expected 0, or workload.shared.source: none")
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
        reqs = RequestTable(times, split.unique_tokens, outputs, np.maximum(split.corpus, 0),
                            split.shared_tokens)
        return ArrivalPlan(reqs, sharing=split.stats,
                           corpus_tokens=tuple(split.corpus_tokens.tolist()), notes=tuple(notes))
    if (inputs < 1).any():
        notes.append(f"{rows.path}: {int((inputs < 1).sum())} requests with 0 context tokens "
                     "get 1")
    unique = np.maximum(inputs, 1)
    corpus = np.zeros(len(idx), dtype=np.int64)
    if shared is not None and rng_corpora is not None:
        corpus = assign_corpora(shared, rng_corpora, len(idx))
    new = _resident(unique, cached_fraction, rows.path, notes)
    reqs = RequestTable(times, unique, outputs, corpus, None, new)
    sharing = synthetic_sharing(shared, corpus, unique) if shared is not None else None
    return ArrivalPlan(reqs, sharing=sharing, notes=tuple(notes))


def _resident(unique: np.ndarray, cached_fraction: float, path: object,
              notes: list[str]) -> np.ndarray | None:
    """Prompt tokens to prefill when ``cached_fraction`` of each request's unique tokens is
    resident (the rest, rounded up); None when it is 0 (the workload's law decides)."""
    if cached_fraction <= 0:
        return None
    notes.append(f"{path}: workload.arrivals.cached_fraction {cached_fraction}: that "
                 "fraction of each prompt's unique tokens is resident, the rest prefilled")
    return np.ceil(unique * (1.0 - cached_fraction)).astype(np.int64)


class TraceArrivals(ArrivalProcess):
    """Arrival times and sizes replayed from a trace file."""

    kind = "trace"
    description = "Arrival times and sizes replayed from a trace file."
    params = (
        Param("path", "file", "trace file; relative to the YAML's folder"),
        Param("format", "choice", "azure | mooncake", options=FORMATS),
        Param("time_scale", "number", "multiplies trace times (2 = half rate)", default=1.0,
              gt=0),
        Param("cached_fraction", "number", "fraction of each prompt's unique tokens already "
              "resident (cached history); the rest is prefilled (mooncake: only with "
              "workload.shared.source none)",
              default=0.0, ge=0, le=1),
    )

    def plan(self, values: Mapping[str, Any], ctx: ArrivalContext) -> ArrivalPlan:
        path = values.get("path")
        if path is None:
            raise WorkloadError("workload.arrivals.path: expected a trace file, got nothing")
        rows = read_trace(path, values["format"])
        return trace_plan(rows, time_scale=values["time_scale"],
                          start_offset_s=values.get("start_offset_s", 0.0),
                          max_requests=ctx.max_requests, duration_ns=ctx.duration_ns,
                          shared=ctx.shared, rng_corpora=ctx.corpus_rng,
                          cached_fraction=values.get("cached_fraction", 0.0),
                          trace_corpora=ctx.trace_corpora)

    def defines_corpora(self, values: Mapping[str, Any]) -> bool:
        return values.get("format") in CORPORA_FORMATS


__all__ = ["CORPORA_FORMATS", "FORMATS", "READERS", "TraceArrivals", "read_trace", "replay_times",
           "trace_plan"]
