"""Fuzz the trace readers through the command line (issue 14): generated bad Azure CSV rows,
Mooncake JSONL lines and moska-trace (.npz) files.

Each case is bad by construction and goes through ``sim.cli.main`` in this process
(``run`` with a trace-arrivals config, ``replay`` for .npz); each must end in exit 2 with
one stderr line naming the trace file (and the line, for text traces), no traceback, no
results folder, no hang. Hypothesis is derandomized: the same cases every CI run.
"""

from __future__ import annotations

import io
import json
import math
import string
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tests.test_fuzz_cli import base_config, call, fuzz, run_bad, workdir, write_config
from traces.io import MAX_HEADER_BYTES, MAX_HEADER_DEPTH
from workloads.arrivals.trace_rows import MAX_LINE_CHARS, MAX_TRACE_SPAN_NS, MAX_TRACE_TOKENS

SAMPLE = Path(__file__).resolve().parents[1] / "traces" / "samples" / "cpu-tiny.trace.npz"
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"
GOOD_AZURE = ["2023-11-16 18:15:46.6805900,374,44", "2023-11-16 18:15:47.1000000,1200,12",
              "2023-11-16 18:15:49,88,300", "2023-11-16 18:15:50.5,4096,7"]
GOOD_MOONCAKE = [{"timestamp": 0, "input_length": 1024, "output_length": 10, "hash_ids": [1, 2]},
                 {"timestamp": 15, "input_length": 600, "output_length": 3, "hash_ids": [1, 9]},
                 {"timestamp": 40, "input_length": 90, "output_length": 50, "hash_ids": [4]}]


def trace_config(folder: Path, trace: Path, fmt: str) -> Path:
    """A valid run config whose arrivals replay ``trace`` (format ``fmt``)."""
    data = base_config()
    data["workload"]["arrivals"] = {"kind": "trace", "format": fmt, "path": trace.name}
    if fmt == "mooncake":  # the trace's own corpora (workload.shared.source: trace)
        for name in ("tokens", "corpora"):
            data["workload"]["shared"].pop(name, None)
    return write_config(folder, data)


def run_trace(folder: Path, trace: Path, fmt: str, names: list[str]) -> None:
    cfg = trace_config(folder, trace, fmt)
    run_bad(folder, ["run", str(cfg), "--no-progress", "--out", str(folder / "out")],
            [str(trace), *names])


not_an_int = st.one_of(
    st.text(alphabet=string.ascii_letters + "-+._ é", min_size=1, max_size=12).filter(
        lambda t: not t.strip().isdigit()),
    st.integers(max_value=-1).map(str),
    st.integers(min_value=MAX_TRACE_TOKENS + 1, max_value=10**40).map(str),
    st.floats(allow_nan=True).map(repr),
    st.sampled_from([str(2**63), str(2**64), "1" + "0" * 30, "١٢"]))

bad_timestamp = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "-:/ ", max_size=30).filter(
        lambda t: not _valid_time(t)),
    st.integers(0, 1899).map(lambda y: f"{y:04d}-06-01 00:00:00"),
    st.integers(2201, 9999).map(lambda y: f"{y:04d}-06-01 00:00:00"),
    st.sampled_from(["2023-13-01 00:00:00", "2023-02-30 00:00:00", "2023-01-01 24:00:00",
                     "2023-01-01 00:60:00", "10000-01-01 00:00:00", "9999-12-31 23:59:59.9"]))


def _valid_time(text: str) -> bool:
    from workloads.arrivals.azure import _AZURE_TIME

    return _AZURE_TIME.match(text) is not None


@st.composite
def bad_azure(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """(CSV bytes, strings the error must hold)."""
    rows = [AZURE_HEADER, *GOOD_AZURE]
    how = draw(st.sampled_from(["count", "count", "time", "time", "columns", "header",
                                "nul", "utf8", "big-field", "quote", "empty", "span"]))
    at = draw(st.integers(1, len(GOOD_AZURE)))  # row index (line at + 1)
    line = f"line {at + 1}"
    cells = rows[at].split(",")
    if how == "count":
        column = draw(st.sampled_from([1, 2]))
        cells[column] = draw(not_an_int).replace(",", ";").replace('"', "'")
        rows[at] = ",".join(cells)
        return ("\n".join(rows) + "\n").encode(), [line, ("ContextTokens", "GeneratedTokens")
                                                   [column - 1]]
    if how == "time":
        cells[0] = draw(bad_timestamp)
        rows[at] = ",".join(cells)
        return ("\n".join(rows) + "\n").encode(), [line, "TIMESTAMP"]
    if how == "columns":
        rows[at] = ",".join(cells[: draw(st.integers(1, 2))])
        return ("\n".join(rows) + "\n").encode(), [line, "columns"]
    if how == "header":
        drop = draw(st.sampled_from(["TIMESTAMP", "ContextTokens", "GeneratedTokens"]))
        rows[0] = ",".join(c if c != drop else c.lower() for c in rows[0].split(","))
        return ("\n".join(rows) + "\n").encode(), ["line 1", drop]
    if how == "nul":
        rows[at] = rows[at][:5] + "\0" + rows[at][5:]
        return ("\n".join(rows) + "\n").encode(), [line]
    if how == "utf8":
        raw = ("\n".join(rows) + "\n").encode()
        pos = len(("\n".join(rows[:at]) + "\n").encode()) + draw(st.integers(0, 5))
        return raw[:pos] + draw(st.sampled_from([b"\xff", b"\xfe", b"\x80"])) + raw[pos:], \
            ["UTF-8", line]
    if how == "big-field":
        cells[1] = '"' + "9" * (128 * 1024 + draw(st.integers(1, 4096))) + '"'
        rows[at] = ",".join(cells)
        return ("\n".join(rows) + "\n").encode(), [line, "field"]
    if how == "quote":
        rows[at] = rows[at] + ',"unclosed'
        rows.insert(at + 1, "more")
        return ("\n".join(rows)).encode() + b"\0", ["line"]
    if how == "empty":
        return draw(st.sampled_from([b"", (AZURE_HEADER + "\n").encode(), b"\n\n"])), \
            ["expected"]
    days = MAX_TRACE_SPAN_NS // 86_400_000_000_000 + draw(st.integers(2, 3000))
    year = 2023 + days // 366 + 1
    rows.append(f"{min(year, 2200)}-11-16 18:15:46,5,5")
    return ("\n".join(rows) + "\n").encode(), ["span"]


@fuzz(90)
@given(bad_azure())
def test_bad_azure_traces_are_clean_errors(case: tuple[bytes, list[Any]]) -> None:
    """90 Azure CSV traces with one bad cell, row, header or byte."""
    data, names = case
    with workdir() as tmp:
        trace = tmp / "azure.csv"
        trace.write_bytes(data)
        run_trace(tmp, trace, "azure", names)


bad_json_value = st.one_of(
    st.none(), st.booleans(), st.text(max_size=8), st.lists(st.integers(), max_size=2),
    st.integers(max_value=-1), st.integers(min_value=MAX_TRACE_TOKENS + 1, max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()))


@st.composite
def bad_mooncake(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """(JSONL bytes, strings the error must hold)."""
    rows = [json.dumps(r) for r in GOOD_MOONCAKE]
    how = draw(st.sampled_from(["field", "field", "timestamp", "hash", "json", "deep",
                                "not-object", "utf8", "long", "missing", "big-number"]))
    at = draw(st.integers(0, len(rows) - 1))
    line = f"line {at + 1}"
    row = dict(GOOD_MOONCAKE[at])
    if how == "field":
        key = draw(st.sampled_from(["input_length", "output_length"]))
        row[key] = draw(bad_json_value.filter(lambda v: key != "output_length" or v != 0))
        rows[at] = json.dumps(row)
        return ("\n".join(rows) + "\n").encode(), [line, key]
    if how == "timestamp":
        row["timestamp"] = draw(st.one_of(
            st.none(), st.booleans(), st.text(max_size=5), st.floats(max_value=-1e-9),
            st.floats(min_value=4.1e12), st.sampled_from([math.nan, math.inf, -math.inf])))
        rows[at] = json.dumps(row)  # NaN and Infinity as JSON allows them (Python's dialect)
        return ("\n".join(rows) + "\n").encode(), [line, "timestamp"]
    if how == "hash":
        row["hash_ids"] = draw(st.one_of(
            st.none(), st.integers(), st.text(max_size=4),
            st.lists(st.one_of(st.text(max_size=3), st.floats(), st.booleans(),
                               st.lists(st.integers(), max_size=1)), min_size=1, max_size=3),
            st.lists(st.integers(min_value=2**63, max_value=10**30), min_size=1, max_size=2),
            st.lists(st.integers(max_value=-1), min_size=1, max_size=2)))
        rows[at] = json.dumps(row)
        return ("\n".join(rows) + "\n").encode(), [line, "hash_ids"]
    if how == "json":
        cut = draw(st.integers(1, len(rows[at]) - 1))
        rows[at] = rows[at][:cut] + draw(st.sampled_from(["", "}", ",", "]", "'"]))
        if rows[at].endswith("}") and cut == len(rows[at]) - 1:
            rows[at] = rows[at] + "x"
        return ("\n".join(rows) + "\n").encode(), [line]
    if how == "deep":
        depth = draw(st.integers(17, 200_000))
        row["hash_ids"] = None
        text = json.dumps(row).replace("null", "[" * depth + "]" * depth)
        rows[at] = text
        return ("\n".join(rows) + "\n").encode(), [line, "nesting"]
    if how == "not-object":
        rows[at] = draw(st.sampled_from(["[1, 2]", "3", '"x"', "null", "true"]))
        return ("\n".join(rows) + "\n").encode(), [line, "JSON object"]
    if how == "utf8":
        raw = ("\n".join(rows) + "\n").encode()
        pos = len(("\n".join(rows[:at]) + ("\n" if at else "")).encode()) + 3
        return raw[:pos] + b"\xff" + raw[pos:], [line, "UTF-8"]
    if how == "long":
        row["pad"] = "x" * (MAX_LINE_CHARS + draw(st.integers(1, 100)))
        rows[at] = json.dumps(row)
        return ("\n".join(rows) + "\n").encode(), [line, "at most"]
    if how == "missing":
        del row[draw(st.sampled_from(["timestamp", "input_length", "output_length",
                                      "hash_ids"]))]
        rows[at] = json.dumps(row)
        return ("\n".join(rows) + "\n").encode(), [line]
    rows[at] = rows[at].replace('"input_length": ', '"input_length": 1' + "0" * 5000 + "+", 1)
    rows[at] = rows[at].replace("+", "", 1)
    return ("\n".join(rows) + "\n").encode(), [line]


@fuzz(90)
@given(bad_mooncake())
def test_bad_mooncake_traces_are_clean_errors(case: tuple[bytes, list[str]]) -> None:
    """90 Mooncake JSONL traces with one bad line."""
    data, names = case
    with workdir() as tmp:
        trace = tmp / "mooncake.jsonl"
        trace.write_bytes(data)
        run_trace(tmp, trace, "mooncake", names)


def _members() -> dict[str, bytes]:
    with zipfile.ZipFile(SAMPLE) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


MEMBERS = _members()
HEADER = json.loads(MEMBERS["header.json"])
HEADER_INTS = ["layers", "q_heads", "kv_heads", "head_dim", "shared_tokens", "chunk_tokens",
               "n_chunks"]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


@st.composite
def bad_npz(draw: st.DrawFn) -> bytes:
    """Bytes of a moska-trace file that must be refused."""
    how = draw(st.sampled_from(["header-int", "header-int", "header-type", "header-json",
                                "header-deep", "header-big", "truncate", "npy-shape",
                                "npy-dtype", "missing-member", "not-zip"]))
    members = dict(MEMBERS)
    if how == "header-int":
        header = dict(HEADER)
        header[draw(st.sampled_from(HEADER_INTS))] = draw(st.one_of(
            st.integers(max_value=0), st.integers(min_value=2**34 + 1, max_value=10**40),
            st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
            st.text(max_size=4), st.none()))
        members["header.json"] = json.dumps(header).encode()
    elif how == "header-type":
        header = dict(HEADER)
        key = draw(st.sampled_from(["dtype", "device", "keep_fraction", "software", "capture",
                                    "format", "format_version", "notes"]))
        header[key] = draw(st.one_of(st.integers(-3, 0), st.lists(st.integers(), max_size=2),
                                     st.just(""), st.just(5.5), st.just({"a": 1})).filter(
            lambda v: not (key == "notes" and v == "")).filter(
            lambda v: not (key == "software" and v == {"a": 1})).filter(
            lambda v: not (key == "capture" and v == {"a": 1})))
        members["header.json"] = json.dumps(header).encode()
    elif how == "header-json":
        text = MEMBERS["header.json"].decode()
        cut = draw(st.integers(0, len(text) - 2))
        members["header.json"] = (text[:cut] + draw(st.sampled_from(["", "\xff", "]", ","]))
                                  ).encode("utf-8", "surrogateescape")
    elif how == "header-deep":
        depth = draw(st.integers(MAX_HEADER_DEPTH + 1, 100_000))
        members["header.json"] = json.dumps({**HEADER, "capture": {"x": None}}).replace(
            "null", "[" * depth + "]" * depth).encode()
    elif how == "header-big":
        members["header.json"] = json.dumps({**HEADER, "notes": "x" * (
            MAX_HEADER_BYTES + draw(st.integers(1, 10_000)))}).encode()
    elif how == "truncate":
        raw = SAMPLE.read_bytes()
        return raw[: draw(st.integers(0, len(raw) - 1))]
    elif how == "npy-shape":
        name = draw(st.sampled_from(["step.npy", "layer.npy", "request_ids.npy",
                                     "kernel_ns.npy"]))
        arr = np.lib.format.read_array(io.BytesIO(MEMBERS[name]))
        raw = _npy(arr)
        claimed = draw(st.integers(min_value=arr.shape[0] + 1, max_value=10**15))
        members[name] = raw.replace(f"({arr.shape[0]},".encode(), f"({claimed},".encode(), 1)
    elif how == "npy-dtype":
        name = draw(st.sampled_from(["step.npy", "layer.npy", "req_offsets.npy"]))
        n = len(np.lib.format.read_array(io.BytesIO(MEMBERS[name])))
        members[name] = _npy(draw(st.sampled_from([
            np.zeros(n, dtype="<U3"), np.zeros(n, dtype=np.complex64),
            np.zeros((n, 1, 1, 1, 1), dtype=np.int64)])))
    elif how == "missing-member":
        del members[draw(st.sampled_from(sorted(members)))]
    else:
        return draw(st.binary(min_size=0, max_size=200).filter(lambda b: not b.startswith(b"PK")))
    return _zip(members)


@fuzz(80)
@given(bad_npz())
def test_bad_npz_traces_are_clean_errors(data: bytes) -> None:
    """80 moska-trace files with a bad header, array, member or zip."""
    with workdir() as tmp:
        trace = tmp / "bad.trace.npz"
        trace.write_bytes(data)
        cfg = write_config(tmp, base_config())
        run_bad(tmp, ["replay", str(trace), "--config", str(cfg), "--no-progress",
                      "--out", str(tmp / "out")], [str(trace)])


def test_fifo_traces_are_refused_at_once(tmp_path: Path) -> None:
    """A named pipe as an Azure, Mooncake or npz trace: refused without waiting."""
    import os

    for name, fmt in (("a.csv", "azure"), ("m.jsonl", "mooncake")):
        fifo = tmp_path / name
        os.mkfifo(fifo)
        run_trace(tmp_path, fifo, fmt, ["named pipe"])
        (tmp_path / "exp.yaml").unlink()
    fifo = tmp_path / "t.trace.npz"
    os.mkfifo(fifo)
    cfg = write_config(tmp_path, base_config())
    run_bad(tmp_path, ["replay", str(fifo), "--config", str(cfg), "--no-progress"],
            [str(fifo), "named pipe"])
    run_bad(tmp_path, ["calibrate", str(fifo)], [str(fifo)])


def test_issue_trace_rows_are_refused(tmp_path: Path) -> None:
    """The issue's cases: 10^15-token rows, counts >= 2^63, timestamps outside the
    datetime range, and a 1e300 Mooncake timestamp."""
    for rows, name in (([f"2023-11-16 18:15:47,{10**15},1"], "ContextTokens"),
                       ([f"2023-11-16 18:15:47,5,{2**63}"], "GeneratedTokens"),
                       (["0000-01-01 00:00:00,5,5"], "TIMESTAMP"),
                       (["9999-12-31 23:59:59.999999999,5,5"], "TIMESTAMP")):
        trace = tmp_path / "a.csv"
        trace.write_text("\n".join([AZURE_HEADER, *GOOD_AZURE[:1], *rows]) + "\n")
        run_trace(tmp_path, trace, "azure", ["line 3", name])
        for p in (trace, tmp_path / "exp.yaml"):
            p.unlink()
    trace = tmp_path / "m.jsonl"
    trace.write_text(json.dumps({**GOOD_MOONCAKE[0], "timestamp": 1e300}) + "\n")
    run_trace(tmp_path, trace, "mooncake", ["line 1", "timestamp"])


def test_plausible_trace_still_runs(tmp_path: Path) -> None:
    """The readers' bounds leave a normal trace alone: it runs and writes its results."""
    trace = tmp_path / "a.csv"
    trace.write_text("\n".join([AZURE_HEADER, *GOOD_AZURE]) + "\n")
    cfg = trace_config(tmp_path, trace, "azure")
    outcome = call(["run", str(cfg), "--no-progress", "--out", str(tmp_path / "out")], tmp_path)
    assert outcome.code == 0, outcome.err
    assert (tmp_path / "out" / "summary.json").is_file()
