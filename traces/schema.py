"""The moska-trace record format (version 1): header, per-(step, layer) records, and their validation.

numpy only (no torch): the simulator reads traces on machines without the reference extra.
Field meanings and units are documented in docs/traces.md; this module is the executable form of
that document. ``traces.io`` packs records into columns and calls :func:`validate_columns`, so the
writer and the reader enforce exactly the same rules.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT_NAME = "moska-trace"
FORMAT_VERSION = 1
DTYPES = ("bf16", "fp32", "fp8")
KERNEL_NAMES = ("router", "shared_attention", "unique_attention", "merge")
LSE_BASE = "e"


class TraceError(ValueError):
    """A trace (file or in-memory object) is invalid; the one-line message names file, record, field."""


def top_k_for(n_chunks: int, keep_fraction: float) -> int:
    """Chunks each (request, kv head) keeps: ceil(keep_fraction * n_chunks), at least 1."""
    return max(1, min(n_chunks, math.ceil(keep_fraction * n_chunks - 1e-9)))


def n_chunks_for(shared_tokens: int, chunk_tokens: int) -> int:
    """Number of chunks the shared KV is cut into; the last one may be shorter."""
    return -(-shared_tokens // chunk_tokens)


def chunk_batch_of(selected_chunks: np.ndarray, n_chunks: int) -> np.ndarray:
    """Per (kv head, chunk): how many requests selected it. selected_chunks is (R, kv_heads, k)."""
    sel = np.asarray(selected_chunks)
    _, kv_heads, _ = sel.shape
    flat = (np.arange(kv_heads, dtype=np.int64)[None, :, None] * n_chunks + sel).ravel()
    counts = np.bincount(flat, minlength=kv_heads * n_chunks)
    return counts.reshape(kv_heads, n_chunks).astype(np.int32)


@dataclass(frozen=True, kw_only=True)
class TraceHeader:
    """What was run: model shape, dtype, shared-KV chunking, device and software (see docs/traces.md)."""

    layers: int
    q_heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    shared_tokens: int
    chunk_tokens: int
    n_chunks: int
    keep_fraction: float
    device: str
    chip_hint: str | None = None
    software: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    notes: str = ""
    capture: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def top_k(self) -> int:
        """Chunks kept per (request, kv head): the last axis of every record's selected_chunks."""
        return top_k_for(self.n_chunks, self.keep_fraction)

    @property
    def group_size(self) -> int:
        """Query heads per kv head (GQA group)."""
        return self.q_heads // self.kv_heads

    def to_json_dict(self) -> dict[str, Any]:
        """The header as written to header.json (plus the format name)."""
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "layers": self.layers,
            "q_heads": self.q_heads,
            "kv_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "dtype": self.dtype,
            "shared_tokens": self.shared_tokens,
            "chunk_tokens": self.chunk_tokens,
            "n_chunks": self.n_chunks,
            "keep_fraction": self.keep_fraction,
            "top_k": self.top_k,
            "lse_base": LSE_BASE,
            "device": self.device,
            "chip_hint": self.chip_hint,
            "software": dict(self.software),
            "created_at": self.created_at,
            "notes": self.notes,
            "capture": dict(self.capture),
        }

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any], source: str = "header") -> TraceHeader:
        """Parse and validate header.json; errors name ``source`` and the field."""
        if not isinstance(data, Mapping):
            raise TraceError(f"{source}: header: expected a JSON object, got {type(data).__name__}")
        fmt = data.get("format")
        if fmt != FORMAT_NAME:
            raise TraceError(
                f"{source}: header: field 'format': expected {FORMAT_NAME!r}, got {_short(fmt)}"
            )
        version = data.get("format_version")
        if not _is_int(version):
            raise TraceError(
                f"{source}: header: field 'format_version': expected an integer, got {_short(version)}"
            )
        if version > FORMAT_VERSION:
            raise TraceError(
                f"{source}: header: field 'format_version': version {version} is newer than this "
                f"reader (supports up to {FORMAT_VERSION}); upgrade moska-sim"
            )
        known = {f for f in cls.__dataclass_fields__}
        derived = {"format", "top_k", "lse_base"}
        unknown = sorted(set(data) - known - derived)
        if unknown:
            raise TraceError(f"{source}: header: field {_short(unknown[0])}: unknown field")
        missing = [
            f
            for f in (
                "layers",
                "q_heads",
                "kv_heads",
                "head_dim",
                "dtype",
                "shared_tokens",
                "chunk_tokens",
                "n_chunks",
                "keep_fraction",
                "device",
            )
            if f not in data
        ]
        if missing:
            raise TraceError(f"{source}: header: field {missing[0]!r}: missing")
        kwargs = {k: data[k] for k in known if k in data}
        if isinstance(kwargs.get("keep_fraction"), int) and not isinstance(
            kwargs["keep_fraction"], bool
        ):
            kwargs["keep_fraction"] = float(kwargs["keep_fraction"])
        header = cls(**kwargs)
        validate_header(header, source)
        if "top_k" in data and data["top_k"] != header.top_k:
            raise TraceError(
                f"{source}: header: field 'top_k': {_short(data['top_k'])} disagrees with "
                f"ceil(keep_fraction * n_chunks) = {header.top_k}"
            )
        if "lse_base" in data and data["lse_base"] != LSE_BASE:
            raise TraceError(
                f"{source}: header: field 'lse_base': expected {LSE_BASE!r}, got {_short(data['lse_base'])}"
            )
        return header


@dataclass(eq=False)
class StepRecord:
    """One decode step of one layer: which requests ran, what each (request, kv head) routed to, timings.

    Arrays: request_ids int64 (R,), unique_tokens int64 (R,), selected_chunks int32 (R, kv_heads, k)
    (ascending chunk ids per row), chunk_batch int32 (kv_heads, n_chunks). kernel_ns maps names in
    KERNEL_NAMES to nanoseconds measured with CUDA events; empty when not measured (CPU).
    """

    step: int
    layer: int
    request_ids: np.ndarray
    unique_tokens: np.ndarray
    selected_chunks: np.ndarray
    chunk_batch: np.ndarray
    kernel_ns: dict[str, float] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        """Requests in this step (R)."""
        return len(self.request_ids)

    @classmethod
    def from_selection(
        cls,
        step: int,
        layer: int,
        request_ids: np.ndarray,
        unique_tokens: np.ndarray,
        selected_chunks: np.ndarray,
        n_chunks: int,
        kernel_ns: Mapping[str, float] | None = None,
    ) -> StepRecord:
        """Build a record, deriving chunk_batch from selected_chunks."""
        sel = np.ascontiguousarray(selected_chunks, dtype=np.int32)
        return cls(
            step=int(step),
            layer=int(layer),
            request_ids=np.ascontiguousarray(request_ids, dtype=np.int64),
            unique_tokens=np.ascontiguousarray(unique_tokens, dtype=np.int64),
            selected_chunks=sel,
            chunk_batch=chunk_batch_of(sel, n_chunks),
            kernel_ns=dict(kernel_ns or {}),
        )


@dataclass(eq=False)
class Trace:
    """A header and its records in (step, layer) order."""

    header: TraceHeader
    records: Sequence[StepRecord]

    @property
    def n_records(self) -> int:
        """Number of (step, layer) records."""
        return len(self.records)

    def steps(self) -> np.ndarray:
        """Distinct decode-step numbers, ascending (int64)."""
        column = getattr(self.records, "step_column", None)
        if column is None:
            column = np.fromiter(
                (r.step for r in self.records), dtype=np.int64, count=len(self.records)
            )
        return np.unique(column)

    def step_records(self, step: int) -> list[StepRecord]:
        """The records (one per layer) of one decode step, in layer order."""
        column = getattr(self.records, "step_column", None)
        if column is not None:
            lo, hi = np.searchsorted(column, [step, step + 1])
            return [self.records[i] for i in range(int(lo), int(hi))]
        return [r for r in self.records if r.step == step]

    def __iter__(self) -> Iterator[StepRecord]:
        return iter(self.records)


# ---------------------------------------------------------------------------------------------
# validation


#: plausible ceilings of the header's integers (far beyond any model or corpus), so that no
#: accepted header makes a reader allocate or compute out of range
HEADER_LIMITS: dict[str, int] = {
    "layers": 4096, "q_heads": 4096, "kv_heads": 4096, "head_dim": 65536,
    "shared_tokens": 2**34, "chunk_tokens": 2**34, "n_chunks": 2**24,
}


def _short(v: Any) -> str:
    """``repr(v)``, cut to 60 characters (a header value can be anything)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**60:
        return "a huge integer"
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def validate_header(h: TraceHeader, source: str = "trace") -> None:
    """Raise TraceError naming the first bad header field."""

    def bad(name: str, why: str) -> TraceError:
        return TraceError(f"{source}: header: field {name!r}: {why}")

    if not _is_int(h.format_version) or h.format_version < 1:
        raise bad("format_version",
                  f"expected a positive integer, got {_short(h.format_version)}")
    for name in (
        "layers",
        "q_heads",
        "kv_heads",
        "head_dim",
        "shared_tokens",
        "chunk_tokens",
        "n_chunks",
    ):
        v = getattr(h, name)
        if not _is_int(v) or not 1 <= v <= HEADER_LIMITS[name]:
            raise bad(name, f"expected an integer in [1, {HEADER_LIMITS[name]}], got {_short(v)}")
    if h.q_heads % h.kv_heads:
        raise bad("q_heads", f"{h.q_heads} is not a multiple of kv_heads={h.kv_heads}")
    if h.dtype not in DTYPES:
        raise bad("dtype", f"expected one of {', '.join(DTYPES)}, got {_short(h.dtype)}")
    expect = n_chunks_for(h.shared_tokens, h.chunk_tokens)
    if h.n_chunks != expect:
        raise bad("n_chunks", f"{h.n_chunks} != ceil(shared_tokens / chunk_tokens) = {expect}")
    kf = h.keep_fraction
    if not isinstance(kf, (float, np.floating)) or not (0.0 < float(kf) <= 1.0):
        raise bad("keep_fraction", f"expected a number in (0, 1], got {_short(kf)}")
    if not isinstance(h.device, str) or not h.device:
        raise bad("device", f"expected a non-empty string, got {_short(h.device)}")
    if h.chip_hint is not None and (not isinstance(h.chip_hint, str) or not h.chip_hint):
        raise bad("chip_hint",
                  f"expected null or a non-empty string, got {_short(h.chip_hint)}")
    if not isinstance(h.software, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in h.software.items()
    ):
        raise bad("software", "expected an object of string -> string (package -> version)")
    for name in ("created_at", "notes"):
        if not isinstance(getattr(h, name), str):
            raise bad(name, f"expected a string, got {_short(getattr(h, name))}")
    if not isinstance(h.capture, Mapping) or not all(isinstance(k, str) for k in h.capture):
        raise bad("capture", "expected an object with string keys")


# Column names, their on-disk dtypes (selected_chunks and chunk_batch may be stored narrower).
COLUMN_DTYPES: dict[str, tuple[np.dtype, ...]] = {
    "step": (np.dtype(np.int64),),
    "layer": (np.dtype(np.int32),),
    "req_offsets": (np.dtype(np.int64),),
    "request_ids": (np.dtype(np.int64),),
    "unique_tokens": (np.dtype(np.int64),),
    "selected_chunks": (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int32)),
    "chunk_batch": (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int32)),
    "kernel_ns": (np.dtype(np.float64),),
}

_BLOCK_RECORDS = 4096  # records per block when recounting chunk_batch (bounds temporary memory)


@dataclass(frozen=True)
class Columns:
    """All records of a trace as flat arrays (the on-disk layout; R_total = sum of batch sizes)."""

    step: np.ndarray  # int64 (N,)
    layer: np.ndarray  # int32 (N,)
    req_offsets: np.ndarray  # int64 (N+1,): record i owns rows req_offsets[i]:req_offsets[i+1]
    request_ids: np.ndarray  # int64 (R_total,)
    unique_tokens: np.ndarray  # int64 (R_total,)
    selected_chunks: np.ndarray  # (R_total, kv_heads, k)
    chunk_batch: np.ndarray  # (N, kv_heads, n_chunks)
    kernel_ns: np.ndarray  # float64 (N, len(KERNEL_NAMES)); NaN = not measured

    @property
    def n_records(self) -> int:
        return int(self.step.shape[0])

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in COLUMN_DTYPES}


def validate_columns(h: TraceHeader, cols: Columns, source: str = "trace") -> None:
    """Check shapes, dtypes, ranges and cross-field consistency; raise TraceError at the first bad record."""
    validate_header(h, source)
    n = cols.n_records
    k = h.top_k

    def field_err(name: str, why: str) -> TraceError:
        return TraceError(f"{source}: field {name!r}: {why}")

    def rec_err(i: int, name: str, why: str) -> TraceError:
        where = f"record {i}"
        if 0 <= i < n:
            where += f" (step {int(cols.step[i])}, layer {int(cols.layer[i])})"
        return TraceError(f"{source}: {where}: field {name!r}: {why}")

    for name, allowed in COLUMN_DTYPES.items():
        arr = getattr(cols, name)
        if not isinstance(arr, np.ndarray):
            raise field_err(name, f"expected a numpy array, got {type(arr).__name__}")
        if arr.dtype not in allowed:
            raise field_err(
                name, f"dtype {arr.dtype} is not one of {', '.join(str(a) for a in allowed)}"
            )

    expect_shapes = {
        "step": (n,),
        "layer": (n,),
        "req_offsets": (n + 1,),
        "chunk_batch": (n, h.kv_heads, h.n_chunks),
        "kernel_ns": (n, len(KERNEL_NAMES)),
    }
    for name, shape in expect_shapes.items():
        if getattr(cols, name).shape != shape:
            raise field_err(name, f"shape {getattr(cols, name).shape} != expected {shape}")

    off = cols.req_offsets
    if n and off[0] != 0:
        raise field_err("req_offsets", f"must start at 0, starts at {int(off[0])}")
    if n == 0 and off.shape == (1,) and off[0] != 0:
        raise field_err("req_offsets", "must be [0] for an empty trace")
    sizes = np.diff(off)
    bad = np.flatnonzero(sizes < 1)
    if bad.size:
        raise rec_err(int(bad[0]), "request_ids", "a record needs at least one request")
    total = int(off[-1])
    for name, shape in (
        ("request_ids", (total,)),
        ("unique_tokens", (total,)),
        ("selected_chunks", (total, h.kv_heads, k)),
    ):
        if getattr(cols, name).shape != shape:
            raise field_err(
                name,
                f"shape {getattr(cols, name).shape} != expected {shape} "
                f"(sum of batch sizes = {total}, kv_heads = {h.kv_heads}, top_k = {k})",
            )
    if n == 0:
        return

    row_record = np.repeat(np.arange(n, dtype=np.int64), sizes)

    # step / layer ranges and (step, layer) order
    bad = np.flatnonzero(cols.step < 0)
    if bad.size:
        raise rec_err(int(bad[0]), "step", f"negative step {int(cols.step[bad[0]])}")
    bad = np.flatnonzero((cols.layer < 0) | (cols.layer >= h.layers))
    if bad.size:
        raise rec_err(
            int(bad[0]), "layer", f"layer {int(cols.layer[bad[0]])} outside [0, {h.layers})"
        )
    if n > 1:
        ds = np.diff(cols.step)
        dl = np.diff(cols.layer.astype(np.int64))
        bad = np.flatnonzero((ds < 0) | ((ds == 0) & (dl <= 0)))
        if bad.size:
            i = int(bad[0]) + 1
            raise rec_err(
                i,
                "step",
                f"records must be in increasing (step, layer) order; follows "
                f"(step {int(cols.step[i - 1])}, layer {int(cols.layer[i - 1])})",
            )

    # request ids: non-negative, unique within a record
    bad = np.flatnonzero(cols.request_ids < 0)
    if bad.size:
        r = int(bad[0])
        raise rec_err(
            int(row_record[r]), "request_ids", f"negative request id {int(cols.request_ids[r])}"
        )
    order = np.lexsort((cols.request_ids, row_record))
    rid_sorted, rec_sorted = cols.request_ids[order], row_record[order]
    dup = np.flatnonzero((rid_sorted[1:] == rid_sorted[:-1]) & (rec_sorted[1:] == rec_sorted[:-1]))
    if dup.size:
        raise rec_err(
            int(rec_sorted[dup[0]]), "request_ids", f"request id {int(rid_sorted[dup[0]])} repeated"
        )
    bad = np.flatnonzero(cols.unique_tokens < 0)
    if bad.size:
        r = int(bad[0])
        raise rec_err(
            int(row_record[r]),
            "unique_tokens",
            f"negative token count {int(cols.unique_tokens[r])}",
        )

    # selected chunk ids: in range, strictly ascending along k
    sel = cols.selected_chunks
    bad_rows = np.flatnonzero((sel >= h.n_chunks).reshape(total, -1).any(axis=1))
    if bad_rows.size:
        r = int(bad_rows[0])
        raise rec_err(
            int(row_record[r]),
            "selected_chunks",
            f"chunk id {int(sel[r].max())} outside [0, {h.n_chunks}) (request {int(cols.request_ids[r])})",
        )
    if sel.dtype == np.int32:
        bad_rows = np.flatnonzero((sel < 0).reshape(total, -1).any(axis=1))
        if bad_rows.size:
            r = int(bad_rows[0])
            raise rec_err(
                int(row_record[r]),
                "selected_chunks",
                f"chunk id {int(sel[r].min())} outside [0, {h.n_chunks}) (request {int(cols.request_ids[r])})",
            )
    if k > 1:
        s64 = sel.astype(np.int64)
        bad_rows = np.flatnonzero((np.diff(s64, axis=2) <= 0).reshape(total, -1).any(axis=1))
        if bad_rows.size:
            r = int(bad_rows[0])
            raise rec_err(
                int(row_record[r]),
                "selected_chunks",
                f"chunk ids of request {int(cols.request_ids[r])} must be distinct and ascending",
            )

    # chunk_batch == counts of selected_chunks, recounted in blocks of records
    hk, nc = h.kv_heads, h.n_chunks
    head_off = (np.arange(hk, dtype=np.int64) * nc)[None, :, None]
    for lo in range(0, n, _BLOCK_RECORDS):
        hi = min(n, lo + _BLOCK_RECORDS)
        r0, r1 = int(off[lo]), int(off[hi])
        rec_local = (row_record[r0:r1] - lo)[:, None, None]
        flat = (rec_local * (hk * nc) + head_off + sel[r0:r1].astype(np.int64)).ravel()
        counts = np.bincount(flat, minlength=(hi - lo) * hk * nc).reshape(hi - lo, hk, nc)
        mismatch = np.flatnonzero(
            (counts != cols.chunk_batch[lo:hi]).reshape(hi - lo, -1).any(axis=1)
        )
        if mismatch.size:
            i = int(mismatch[0])
            hh, cc = np.argwhere(counts[i] != cols.chunk_batch[lo + i])[0]
            raise rec_err(
                lo + i,
                "chunk_batch",
                f"kv head {int(hh)}, chunk {int(cc)}: {int(cols.chunk_batch[lo + i, hh, cc])} != "
                f"{int(counts[i, hh, cc])} requests that selected it in selected_chunks",
            )

    # kernel times: NaN (not measured) or finite >= 0
    t = cols.kernel_ns
    bad = np.flatnonzero((~np.isnan(t) & ~((t >= 0) & np.isfinite(t))).any(axis=1))
    if bad.size:
        i = int(bad[0])
        j = int(np.flatnonzero(~np.isnan(t[i]) & ~((t[i] >= 0) & np.isfinite(t[i])))[0])
        raise rec_err(
            i, f"kernel_ns.{KERNEL_NAMES[j]}", f"expected a finite time >= 0 ns, got {t[i, j]!r}"
        )
