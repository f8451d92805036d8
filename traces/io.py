"""Read and write moska-trace files: one zip holding header.json and columnar .npy arrays.

numpy only. Writes are atomic (temp file in the same folder, then os.replace) and byte-for-byte
deterministic for equal input. Reads validate everything (traces.schema.validate_columns) and turn
every failure (truncated zip, bad CRC, bad .npy header, wrong dtype, inconsistent record) into a
one-line TraceError naming the file, the record and the field.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import overload

import numpy as np

from traces.schema import (
    COLUMN_DTYPES,
    KERNEL_NAMES,
    Columns,
    StepRecord,
    Trace,
    TraceError,
    TraceHeader,
    validate_columns,
    validate_header,
)

HEADER_MEMBER = "header.json"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: equal traces give equal bytes


# ---------------------------------------------------------------------------------------------
# records <-> columns


def _narrow_uint(max_value: int) -> np.dtype:
    """Smallest on-disk integer dtype for non-negative values up to max_value."""
    if max_value < 2**8:
        return np.dtype(np.uint8)
    if max_value < 2**16:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def _as_int_array(value: object, name: str, index: int, source: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise TraceError(
            f"{source}: record {index}: field {name!r}: expected an integer array, got dtype {arr.dtype}"
        )
    return arr


def records_to_columns(
    header: TraceHeader, records: Sequence[StepRecord], source: str = "trace"
) -> Columns:
    """Pack records into the on-disk columns, checking each record's shapes and kernel names."""
    validate_header(header, source)
    n, k = len(records), header.top_k
    steps = np.empty(n, np.int64)
    layers = np.empty(n, np.int32)
    offsets = np.zeros(n + 1, np.int64)
    kernel = np.full((n, len(KERNEL_NAMES)), np.nan)
    rids, utoks, sels, batches = [], [], [], []
    for i, rec in enumerate(records):
        if not isinstance(rec, StepRecord):
            raise TraceError(
                f"{source}: record {i}: expected a StepRecord, got {type(rec).__name__}"
            )
        for name in ("step", "layer"):
            v = getattr(rec, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise TraceError(
                    f"{source}: record {i}: field {name!r}: expected an integer, got {v!r}"
                )
        steps[i], layers[i] = rec.step, rec.layer
        rid = _as_int_array(rec.request_ids, "request_ids", i, source)
        ut = _as_int_array(rec.unique_tokens, "unique_tokens", i, source)
        sel = _as_int_array(rec.selected_chunks, "selected_chunks", i, source)
        cb = _as_int_array(rec.chunk_batch, "chunk_batch", i, source)
        r = rid.shape[0] if rid.ndim == 1 else -1
        checks = (
            ("request_ids", rid.shape, (r,)),
            ("unique_tokens", ut.shape, (r,)),
            ("selected_chunks", sel.shape, (r, header.kv_heads, k)),
            ("chunk_batch", cb.shape, (header.kv_heads, header.n_chunks)),
        )
        for name, got, want in checks:
            if r < 0 or got != want:
                raise TraceError(
                    f"{source}: record {i} (step {rec.step}, layer {rec.layer}): field {name!r}: "
                    f"shape {got} != expected {want}"
                )
        if not isinstance(rec.kernel_ns, dict):
            raise TraceError(
                f"{source}: record {i}: field 'kernel_ns': expected a dict, got {type(rec.kernel_ns).__name__}"
            )
        for key, val in rec.kernel_ns.items():
            if key not in KERNEL_NAMES:
                raise TraceError(
                    f"{source}: record {i} (step {rec.step}, layer {rec.layer}): field 'kernel_ns': "
                    f"unknown kernel {key!r} (expected one of {', '.join(KERNEL_NAMES)})"
                )
            if (
                val is None
                or not isinstance(val, (int, float, np.integer, np.floating))
                or np.isnan(val)
            ):
                raise TraceError(
                    f"{source}: record {i} (step {rec.step}, layer {rec.layer}): field "
                    f"'kernel_ns.{key}': expected a number of ns, got {val!r}"
                )
            kernel[i, KERNEL_NAMES.index(key)] = float(val)
        offsets[i + 1] = offsets[i] + r
        rids.append(rid)
        utoks.append(ut)
        sels.append(sel)
        batches.append(cb)

    def cat(parts: list[np.ndarray], shape_tail: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        if not parts:
            return np.zeros((0, *shape_tail), dtype)
        return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]).astype(
            dtype, copy=False
        )

    sel_all = cat(sels, (header.kv_heads, k), np.dtype(np.int64))
    cb_all = (
        np.stack(batches).astype(np.int64)
        if batches
        else np.zeros((0, header.kv_heads, header.n_chunks), np.int64)
    )
    # Narrow the two large columns on disk; out-of-range values keep int32 so validation reports them.
    sel_dtype = _narrow_uint(header.n_chunks - 1)
    if sel_all.size and (sel_all.min() < 0 or sel_all.max() > np.iinfo(sel_dtype).max):
        sel_dtype = np.dtype(np.int32)
    cb_max = int(cb_all.max()) if cb_all.size else 0
    cb_dtype = (
        _narrow_uint(cb_max) if (not cb_all.size or cb_all.min() >= 0) else np.dtype(np.int32)
    )
    return Columns(
        step=steps,
        layer=layers,
        req_offsets=offsets,
        request_ids=cat(rids, (), np.dtype(np.int64)),
        unique_tokens=cat(utoks, (), np.dtype(np.int64)),
        selected_chunks=_checked_cast(sel_all, sel_dtype),
        chunk_batch=_checked_cast(cb_all, cb_dtype),
        kernel_ns=kernel,
    )


def _checked_cast(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        return np.clip(arr, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
    return arr.astype(dtype)


class ColumnRecords(Sequence[StepRecord]):
    """Records of a read trace, built on access as views into the columns (cheap for millions)."""

    def __init__(self, header: TraceHeader, columns: Columns) -> None:
        self._h = header
        self._c = columns
        self._sel = columns.selected_chunks.astype(np.int32, copy=False)
        self._cb = columns.chunk_batch.astype(np.int32, copy=False)

    @property
    def columns(self) -> Columns:
        """The underlying on-disk columns (for vectorised analysis)."""
        return self._c

    @property
    def step_column(self) -> np.ndarray:
        return self._c.step

    def __len__(self) -> int:
        return self._c.n_records

    @overload
    def __getitem__(self, i: int) -> StepRecord: ...
    @overload
    def __getitem__(self, i: slice) -> list[StepRecord]: ...

    def __getitem__(self, i: int | slice) -> StepRecord | list[StepRecord]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record {i} out of range ({n} records)")
        c = self._c
        lo, hi = int(c.req_offsets[i]), int(c.req_offsets[i + 1])
        times = c.kernel_ns[i]
        return StepRecord(
            step=int(c.step[i]),
            layer=int(c.layer[i]),
            request_ids=c.request_ids[lo:hi],
            unique_tokens=c.unique_tokens[lo:hi],
            selected_chunks=self._sel[lo:hi],
            chunk_batch=self._cb[i],
            kernel_ns={
                name: float(times[j])
                for j, name in enumerate(KERNEL_NAMES)
                if not np.isnan(times[j])
            },
        )


# ---------------------------------------------------------------------------------------------
# files


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def write_trace(path: str | os.PathLike[str], trace: Trace) -> None:
    """Validate ``trace`` and write it atomically to ``path`` (a zip: header.json + <column>.npy)."""
    path = Path(path)
    source = str(path)
    if not isinstance(trace, Trace):
        raise TraceError(f"{source}: expected a Trace, got {type(trace).__name__}")
    columns = records_to_columns(trace.header, trace.records, source)
    validate_columns(trace.header, columns, source)
    header_json = dict(trace.header.to_json_dict(), n_records=columns.n_records)
    try:
        header_bytes = json.dumps(header_json, sort_keys=True, indent=1, allow_nan=False).encode(
            "utf-8"
        )
    except (TypeError, ValueError) as exc:
        raise TraceError(
            f"{source}: header: field 'capture': not JSON-serialisable ({exc})"
        ) from None

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                members = [(HEADER_MEMBER, header_bytes)]
                members += [
                    (f"{name}.npy", _npy_bytes(arr)) for name, arr in columns.as_dict().items()
                ]
                for name, data in members:
                    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


MAX_HEADER_BYTES = 2**20  #: largest header.json
MAX_HEADER_DEPTH = 32  #: deepest nesting of header.json
MAX_COLUMN_BYTES = 4 * 2**30  #: largest column (.npy member), uncompressed
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _open_regular(path: Path, source: str) -> io.BufferedReader:
    """``path`` opened for reading if it is a regular file (a named pipe or a device is
    refused at once, never waited on); a one-line TraceError otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise TraceError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise TraceError(f"{source}: is a directory, expected a trace file") from None
    except (OSError, ValueError) as exc:
        why = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
        raise TraceError(f"{source}: cannot read: {why}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "a directory" if stat.S_ISDIR(mode) else (
            "a named pipe" if stat.S_ISFIFO(mode) else "not a regular file")
        raise TraceError(f"{source}: is {what}, expected a trace file")
    os.set_blocking(fd, True)
    return open(fd, "rb")


def _json_too_deep(text: str) -> bool:
    """Whether brackets outside strings nest deeper than MAX_HEADER_DEPTH."""
    if text.count("[") + text.count("{") <= MAX_HEADER_DEPTH:
        return False
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_HEADER_DEPTH:
                return True
        elif token in "]}":
            depth -= 1
    return False


def read_trace(path: str | os.PathLike[str]) -> Trace:
    """Read and fully validate a trace file; any problem raises a one-line TraceError.

    Hostile files are refused before they cost memory: a header.json over 1 MiB or nesting
    deeper than 32, an array whose .npy header declares more data than its member holds.
    """
    path = Path(path)
    source = str(path)
    fh = _open_regular(path, source)
    try:
        zf = zipfile.ZipFile(fh, "r")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        fh.close()
        raise TraceError(
            f"{source}: not a readable trace file (truncated or corrupt zip: {exc})"
        ) from None
    with fh, zf:
        names = set(zf.namelist())
        header_data = _read_member(zf, HEADER_MEMBER, names, source, MAX_HEADER_BYTES)
        try:
            header_text = header_data.decode("utf-8")
            if _json_too_deep(header_text):
                raise TraceError(f"{source}: header: expected JSON nesting at most "
                                 f"{MAX_HEADER_DEPTH} levels, got deeper")
            header_obj = json.loads(header_text)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            if isinstance(exc, TraceError):
                raise
            raise TraceError(f"{source}: header: not valid JSON ({str(exc)[:120]})") from None
        if not isinstance(header_obj, dict):
            raise TraceError(f"{source}: header: expected a JSON object")
        n_records = header_obj.pop("n_records", None)
        header = TraceHeader.from_json_dict(header_obj, source)
        arrays: dict[str, np.ndarray] = {}
        for name in COLUMN_DTYPES:
            data = _read_member(zf, f"{name}.npy", names, source, MAX_COLUMN_BYTES)
            arrays[name] = _array(data, name, source)
    columns = Columns(**arrays)
    if n_records is not None and n_records != columns.n_records:
        raise TraceError(
            f"{source}: header: field 'n_records': {n_records!r} but the columns hold "
            f"{columns.n_records} records (truncated or mixed file)"
        )
    validate_columns(header, columns, source)
    return Trace(header=header, records=ColumnRecords(header, columns))


def _array(data: bytes, name: str, source: str) -> np.ndarray:
    """One column from its .npy bytes, after checking that its header is a plain array
    whose declared shape and dtype match the bytes present (never allocating more)."""
    where = f"{source}: field {name!r}"
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(buf, max_header_size=10_000)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(buf, max_header_size=10_000)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        if dtype.hasobject or dtype.kind not in "biuf" or len(shape) > 4:
            raise ValueError(f"expected a plain numeric array of at most 4 dims, got dtype "
                             f"{dtype} and {len(shape)} dims")
        count = 1
        for n in shape:
            count *= n
        if count * dtype.itemsize != len(data) - buf.tell():
            raise ValueError(f"its header declares shape {shape} of {dtype}, "
                             f"{count * dtype.itemsize:,} bytes; the member holds "
                             f"{len(data) - buf.tell():,}")
        buf.seek(0)
        return np.lib.format.read_array(buf, allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, OverflowError) as exc:
        raise TraceError(f"{where}: corrupt array data ({str(exc)[:160]})") from None


def _read_member(zf: zipfile.ZipFile, member: str, names: set[str], source: str,
                 limit: int | None = None) -> bytes:
    field = member.removesuffix(".npy").removesuffix(".json")
    where = "header" if member == HEADER_MEMBER else f"field {field!r}"
    if member not in names:
        raise TraceError(f"{source}: {where}: missing from the file ({member})")
    size = zf.getinfo(member).file_size
    if limit is not None and size > limit:
        raise TraceError(f"{source}: {where}: expected at most {limit:,} bytes, the file "
                         f"declares {size:,}")
    try:
        return zf.read(member)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise TraceError(f"{source}: {where}: corrupt or truncated data ({exc})") from None
