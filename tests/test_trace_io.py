"""The trace format: round trips, deterministic atomic writes, and one-line errors naming file, record
and field for every invalid or damaged trace. numpy only (no torch)."""

import io
import json
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from traces.io import read_trace, write_trace
from traces.schema import (
    FORMAT_VERSION,
    KERNEL_NAMES,
    StepRecord,
    Trace,
    TraceError,
    TraceHeader,
    chunk_batch_of,
    top_k_for,
)

SAMPLES = Path(__file__).resolve().parents[1] / "traces" / "samples"


def header(**kw) -> TraceHeader:
    base = {
        "layers": 3,
        "q_heads": 8,
        "kv_heads": 2,
        "head_dim": 16,
        "dtype": "bf16",
        "shared_tokens": 1000,
        "chunk_tokens": 100,
        "n_chunks": 10,
        "keep_fraction": 0.3,
        "device": "test",
        "chip_hint": "h100-sxm",
        "software": {"numpy": np.__version__},
        "created_at": "2026-01-01T00:00:00Z",
        "notes": "unit test",
        "capture": {"seed": 1},
    }
    base.update(kw)
    return TraceHeader(**base)


def make_trace(steps=3, batch=4, seed=0, timed=True, h=None) -> Trace:
    h = h or header()
    rng = np.random.default_rng(seed)
    records = []
    for s in range(steps):
        for layer in range(h.layers):
            sel = np.sort(
                np.stack(
                    [
                        [rng.choice(h.n_chunks, h.top_k, replace=False) for _ in range(h.kv_heads)]
                        for _ in range(batch)
                    ]
                ),
                axis=-1,
            )
            times = {"router": 1500.0, "shared_attention": 12345.5, "merge": 800.0} if timed else {}
            if timed and layer == 0:
                times["unique_attention"] = 4321.0
            records.append(
                StepRecord.from_selection(
                    s,
                    layer,
                    np.arange(10, 10 + batch),
                    np.arange(batch) * 7 + s,
                    sel,
                    h.n_chunks,
                    times,
                )
            )
    return Trace(header=h, records=records)


def assert_same(a: Trace, b: Trace) -> None:
    assert a.header == b.header
    assert a.n_records == b.n_records
    for ra, rb in zip(a.records, b.records):
        assert (ra.step, ra.layer) == (rb.step, rb.layer)
        for f in ("request_ids", "unique_tokens", "selected_chunks", "chunk_batch"):
            x, y = getattr(ra, f), getattr(rb, f)
            assert x.dtype == y.dtype and np.array_equal(x, y), f
        assert ra.kernel_ns == rb.kernel_ns


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# -- round trips -----------------------------------------------------------------------------------


def test_round_trip_keeps_every_field(tmp_path):
    t = make_trace()
    p = tmp_path / "t.trace.npz"
    write_trace(p, t)
    back = read_trace(p)
    assert_same(t, back)
    r = back.records[4]
    assert r.selected_chunks.dtype == np.int32 and r.chunk_batch.dtype == np.int32
    assert r.request_ids.dtype == np.int64 and r.unique_tokens.dtype == np.int64
    assert set(back.records[0].kernel_ns) == set(KERNEL_NAMES)
    assert "unique_attention" not in back.records[1].kernel_ns
    assert back.header.top_k == top_k_for(10, 0.3) == 3
    assert list(back.steps()) == [0, 1, 2]
    assert [r.layer for r in back.step_records(1)] == [0, 1, 2]
    assert [r.layer for r in t.step_records(1)] == [0, 1, 2]


def test_empty_and_untimed_traces_round_trip(tmp_path):
    for t in (Trace(header=header(), records=[]), make_trace(timed=False)):
        p = tmp_path / "x.npz"
        write_trace(p, t)
        assert_same(t, read_trace(p))
    assert read_trace(p).records[0].kernel_ns == {}


def test_writes_are_deterministic_and_atomic(tmp_path):
    p1, p2 = tmp_path / "a.npz", tmp_path / "b.npz"
    write_trace(p1, make_trace())
    write_trace(p2, make_trace())
    assert p1.read_bytes() == p2.read_bytes()
    good = p1.read_bytes()
    bad = make_trace()
    bad.records[2].selected_chunks[0, 0, 0] = 99
    with pytest.raises(TraceError):
        write_trace(p1, bad)
    assert p1.read_bytes() == good  # the old file is untouched
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.npz", "b.npz"]  # no temp file left


def test_large_chunk_counts_use_wider_columns(tmp_path):
    h = header(shared_tokens=400 * 100, n_chunks=400, keep_fraction=0.5)
    t = make_trace(h=h, batch=600, steps=1)  # ids up to 399, about 300 requests per chunk
    p = tmp_path / "wide.npz"
    write_trace(p, t)
    back = read_trace(p)
    assert_same(t, back)
    with zipfile.ZipFile(p) as zf:
        sel = np.lib.format.read_array(io.BytesIO(zf.read("selected_chunks.npy")))
        cb = np.lib.format.read_array(io.BytesIO(zf.read("chunk_batch.npy")))
    assert sel.dtype == np.uint16 and cb.dtype == np.uint16


def test_compact_many_records(tmp_path):
    h = header(layers=32, kv_heads=8, n_chunks=64, shared_tokens=6400, keep_fraction=0.125)
    rng = np.random.default_rng(0)
    records = []
    for i in range(20_000):
        step, layer = divmod(i, 32)
        sel = np.sort(rng.random((16, 8, 64)).argsort(-1)[..., :8], -1)
        records.append(
            StepRecord.from_selection(step, layer, np.arange(16), np.full(16, 100 + step), sel, 64)
        )
    p = tmp_path / "big.npz"
    write_trace(p, Trace(header=h, records=records))
    raw = 20_000 * (16 * 8 * 8 * 4 + 8 * 64 * 4)
    assert p.stat().st_size < raw / 3
    back = read_trace(p)
    assert back.n_records == 20_000 and len(back.steps()) == 625


# -- invalid content -------------------------------------------------------------------------------


def _mutate(t: Trace, i: int, **fields) -> Trace:
    recs = list(t.records)
    recs[i] = replace(recs[i], **fields)
    return Trace(header=t.header, records=recs)


@pytest.mark.parametrize(
    "case, record, field",
    [
        ("chunk_out_of_range", 4, "selected_chunks"),
        ("unsorted_chunks", 2, "selected_chunks"),
        ("chunk_batch_wrong", 5, "chunk_batch"),
        ("step_goes_back", 6, "step"),
        ("layer_out_of_range", 1, "layer"),
        ("duplicate_request", 3, "request_ids"),
        ("negative_tokens", 7, "unique_tokens"),
        ("bad_shape", 2, "selected_chunks"),
        ("unknown_kernel", 0, "kernel_ns"),
        ("negative_time", 8, "kernel_ns.merge"),
        ("no_requests", 3, "request_ids"),
    ],
)
def test_invalid_records_name_record_and_field(tmp_path, case, record, field):
    t = make_trace()
    r = t.records[record]
    if case == "chunk_out_of_range":
        sel = r.selected_chunks.copy()
        sel[1, 1, -1] = 10
        t = _mutate(t, record, selected_chunks=sel)
    elif case == "unsorted_chunks":
        t = _mutate(t, record, selected_chunks=r.selected_chunks[..., ::-1].copy())
    elif case == "chunk_batch_wrong":
        cb = r.chunk_batch.copy()
        cb[0, 0] += 1
        t = _mutate(t, record, chunk_batch=cb)
    elif case == "step_goes_back":
        t = _mutate(t, record, step=0)
    elif case == "layer_out_of_range":
        t = _mutate(t, record, layer=3)
    elif case == "duplicate_request":
        t = _mutate(t, record, request_ids=np.array([10, 11, 10, 12]))
    elif case == "negative_tokens":
        t = _mutate(t, record, unique_tokens=np.array([1, -2, 3, 4]))
    elif case == "bad_shape":
        t = _mutate(t, record, selected_chunks=r.selected_chunks[:, :, :2].copy())
    elif case == "unknown_kernel":
        t = _mutate(t, record, kernel_ns={"attention": 5.0})
    elif case == "negative_time":
        t = _mutate(t, record, kernel_ns={"merge": -1.0})
    elif case == "no_requests":
        t = _mutate(
            t,
            record,
            request_ids=np.zeros(0, np.int64),
            unique_tokens=np.zeros(0, np.int64),
            selected_chunks=np.zeros((0, 2, 3), np.int32),
            chunk_batch=np.zeros((2, 10), np.int32),
        )
    p = tmp_path / "bad.npz"
    with pytest.raises(TraceError) as exc:
        write_trace(p, t)
    msg = one_line(exc)
    assert str(p) in msg and f"record {record}" in msg and repr(field) in msg, msg
    assert not p.exists()


@pytest.mark.parametrize(
    "change, field",
    [
        ({"dtype": "fp16"}, "dtype"),
        ({"n_chunks": 11}, "n_chunks"),
        ({"keep_fraction": 0.0}, "keep_fraction"),
        ({"q_heads": 7}, "q_heads"),
        ({"layers": 0}, "layers"),
        ({"software": {"torch": 2}}, "software"),
        ({"device": ""}, "device"),
    ],
)
def test_invalid_header_names_the_field(tmp_path, change, field):
    t = Trace(header=replace(header(), **change), records=[])
    with pytest.raises(TraceError) as exc:
        write_trace(tmp_path / "h.npz", t)
    msg = one_line(exc)
    assert "header" in msg and repr(field) in msg, msg


# -- damaged files ---------------------------------------------------------------------------------


@pytest.fixture()
def good_file(tmp_path) -> Path:
    p = tmp_path / "good.npz"
    write_trace(p, make_trace())
    return p


def _rezip(src: Path, dst: Path, edit) -> None:
    """Copy a trace zip, letting edit(name, bytes) -> bytes | None (None drops the member)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = edit(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr)
    return buf.getvalue()


def test_truncated_file(good_file, tmp_path):
    data = good_file.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 30):
        p = tmp_path / f"cut{cut}.npz"
        p.write_bytes(data[:cut])
        with pytest.raises(TraceError) as exc:
            read_trace(p)
        msg = one_line(exc)
        assert str(p) in msg and "truncated or corrupt" in msg


def test_corrupt_member_names_the_field(good_file, tmp_path):
    data = bytearray(good_file.read_bytes())
    with zipfile.ZipFile(good_file) as zf:
        info = zf.getinfo("selected_chunks.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 5, start + 15):
        data[i] ^= 0xFF
    p = tmp_path / "flip.npz"
    p.write_bytes(bytes(data))
    with pytest.raises(TraceError) as exc:
        read_trace(p)
    msg = one_line(exc)
    assert str(p) in msg and "'selected_chunks'" in msg


def test_not_a_trace_missing_file_and_directory(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_text("hello, not a zip")
    for path, words in (
        (junk, "not a readable trace"),
        (tmp_path / "nope.npz", "no such file"),
        (tmp_path, "directory"),
    ):
        with pytest.raises(TraceError) as exc:
            read_trace(path)
        assert words in one_line(exc)


def test_tampered_columns_are_caught_with_record_numbers(good_file, tmp_path):
    def bad_sel(name, data):
        if name != "selected_chunks.npy":
            return data
        arr = np.lib.format.read_array(io.BytesIO(data)).copy()
        arr[4 * 7 + 2, 0, 0] = 200  # request row 2 of record 7
        return _npy(arr)

    p = tmp_path / "tampered.npz"
    _rezip(good_file, p, bad_sel)
    with pytest.raises(TraceError) as exc:
        read_trace(p)
    msg = one_line(exc)
    assert "record 7" in msg and "'selected_chunks'" in msg and "200" in msg

    def wrong_dtype(name, data):
        return (
            _npy(np.lib.format.read_array(io.BytesIO(data)).astype(np.float32))
            if name == "layer.npy"
            else data
        )

    _rezip(good_file, p, wrong_dtype)
    with pytest.raises(TraceError) as exc:
        read_trace(p)
    assert "'layer'" in one_line(exc) and "dtype" in str(exc.value)

    _rezip(good_file, p, lambda name, data: None if name == "kernel_ns.npy" else data)
    with pytest.raises(TraceError) as exc:
        read_trace(p)
    assert "'kernel_ns'" in one_line(exc) and "missing" in str(exc.value)

    def pickled(name, data):
        if name != "step.npy":
            return data
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.array([object()] * 9), allow_pickle=True)
        return buf.getvalue()

    _rezip(good_file, p, pickled)
    with pytest.raises(TraceError) as exc:
        read_trace(p)
    assert "'step'" in one_line(exc)


def test_newer_format_version_and_bad_header_json(good_file, tmp_path):
    def bump(name, data):
        if name != "header.json":
            return data
        h = json.loads(data)
        h["format_version"] = FORMAT_VERSION + 1
        return json.dumps(h).encode()

    p = tmp_path / "v2.npz"
    _rezip(good_file, p, bump)
    with pytest.raises(TraceError) as exc:
        read_trace(p)
    assert "newer than this reader" in one_line(exc)

    _rezip(good_file, p, lambda name, data: b"{not json" if name == "header.json" else data)
    with pytest.raises(TraceError) as exc:
        read_trace(p)
    assert "header" in one_line(exc) and "JSON" in str(exc.value)

    def count(name, data):
        if name != "header.json":
            return data
        h = json.loads(data)
        h["n_records"] = 5
        return json.dumps(h).encode()

    _rezip(good_file, p, count)
    with pytest.raises(TraceError) as exc:
        read_trace(p)
    assert "'n_records'" in one_line(exc)


# -- the format stays torch-free, and the shipped samples are valid ----------------------------------


def test_schema_and_io_do_not_import_torch():
    code = "import sys, traces.schema, traces.io; sys.exit(1 if 'torch' in sys.modules else 0)"
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0


def test_shipped_samples_are_valid_and_small():
    files = sorted(SAMPLES.glob("*.npz"))
    assert sum(f.stat().st_size for f in files) < 5 * 2**20
    traces = {f.name: read_trace(f) for f in files}
    cpu = [t for t in traces.values() if t.header.device.startswith("cpu")]
    gpu = [t for t in traces.values() if t.header.chip_hint == "h100-sxm"]
    assert cpu, "a CPU-captured sample must ship"
    assert all(not r.kernel_ns for t in cpu for r in t.records)
    assert gpu, "an H100-captured sample with kernel times must ship"
    for t in gpu:
        assert all(set(r.kernel_ns) == set(KERNEL_NAMES) for r in t.records)
        assert all(r.kernel_ns["shared_attention"] > 0 for r in t.records)
    for t in traces.values():
        for r in t.records[:50]:
            assert np.array_equal(
                r.chunk_batch, chunk_batch_of(r.selected_chunks, t.header.n_chunks)
            )
