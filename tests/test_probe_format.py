"""The probe file format (traces/probe_format.py), the standard grid, and a CPU dry run of the probe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from traces.probe_format import (
    FAMILIES,
    SHAPE_FIELDS,
    ProbeError,
    ProbeFile,
    ProbeRecord,
    probe_from_dict,
    read_probe,
    write_probe,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "traces" / "probes").glob("*.probe.json"))


def _record(**over) -> ProbeRecord:
    base = {"family": "gemm", "kernel": "cublas", "clock": "burst", "dtype": "bf16",
            "shape": {"m": 1, "n": 64, "k": 64}, "median_ns": 10.0, "p10_ns": 9.0, "p90_ns": 12.0, "n": 20}
    base.update(over)
    return ProbeRecord(**base)


def test_round_trip(tmp_path):
    probe = ProbeFile(device={"name": "test GPU"}, env={}, method={"repeats": 20}, records=[_record()])
    path = write_probe(probe, tmp_path / "x.probe.json")
    back = read_probe(path)
    assert back.records == probe.records and back.device == probe.device


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d.update(format="other"), "format"),
    (lambda d: d.update(version=2), "version"),
    (lambda d: d["records"][0].update(family="conv"), "records[0].family"),
    (lambda d: d["records"][0].update(clock="warm"), "records[0].clock"),
    (lambda d: d["records"][0]["shape"].pop("k"), "records[0].shape"),
    (lambda d: d["records"][0]["shape"].update(m=0), "records[0].shape.m"),
    (lambda d: d["records"][0].update(p10_ns=50.0), "p10_ns <= median_ns"),
    (lambda d: d["records"][0].update(speed=1), "unknown field 'speed'"),
    (lambda d: d["device"].pop("name"), "device.name"),
])
def test_errors_name_the_field(mutate, field):
    doc = ProbeFile(device={"name": "g"}, env={}, method={}, records=[_record()]).to_dict()
    doc = json.loads(json.dumps(doc))
    mutate(doc)
    with pytest.raises(ProbeError) as e:
        probe_from_dict(doc, "f.probe.json")
    assert field in str(e.value) and "f.probe.json" in str(e.value)


def test_unreadable_file_is_named(tmp_path):
    bad = tmp_path / "bad.probe.json"
    bad.write_text("{not json")
    with pytest.raises(ProbeError, match="bad.probe.json: malformed JSON"):
        read_probe(bad)


@pytest.mark.skipif(not SHIPPED, reason="no shipped probe file")
def test_shipped_probe_files_are_valid_small_and_cover_every_family():
    for path in SHIPPED:
        probe = read_probe(path)
        assert path.stat().st_size < 1_000_000
        want = set(FAMILIES) - ({"router"} if probe.method["grid"] == "validation" else set())
        assert {r.family for r in probe.records} == want
        assert {r.clock for r in probe.records} == {"burst", "sustained"}
        assert probe.method["timer"] == "cuda-events" and probe.method["l2_flush_bytes"] > probe.device["l2_bytes"]
        assert all(r.sm_clock_mhz and r.power_w for r in probe.records)  # NVML was read
        keys = [r.key() for r in probe.records]
        assert len(keys) == len(set(keys))


def test_validation_grid_shares_no_shape_with_the_standard_grid():
    pytest.importorskip("torch")
    from traces.capture.probe import grid

    key = lambda c: (c.family, c.kernel, c.dtype, tuple(sorted(c.shape.items())))
    standard = {key(c) for c in grid("standard")}
    assert not any(key(c) in standard for c in grid("validation"))


def test_standard_grid_covers_the_issue_grid():
    pytest.importorskip("torch")
    from traces.capture.probe import grid, sustained_subset

    cases = grid("standard")
    fams = {c.family for c in cases}
    assert fams == set(SHAPE_FIELDS)
    for c in cases:
        assert set(c.shape) == set(SHAPE_FIELDS[c.family])
    gemm = [c for c in cases if c.family == "gemm"]
    assert {c.dtype for c in gemm} == {"bf16", "fp8"}
    assert {c.shape["m"] for c in gemm} >= {1, 64, 4096, 8192}
    shared = {(c.kernel, c.shape["batch"]) for c in cases if c.family == "shared_attention"}
    assert {("triton-moska", b) for b in (1, 512)} <= shared and ("sdpa", 512) in shared
    assert sustained_subset(cases) and all(c in cases for c in sustained_subset(cases))


def test_probe_runs_on_cpu_and_writes_a_valid_file(tmp_path):
    """The whole probe path (build, time, sample, write) on the CPU with the Triton interpreter."""
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    out = tmp_path / "cpu.probe.json"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run([sys.executable, "-m", "traces.capture.probe", "--out", str(out), "--grid", "tiny",
                          "--device", "cpu", "--repeats", "2", "--warmup", "0", "--families", "copy,gemm,merge"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    probe = read_probe(out)
    assert {r.family for r in probe.records} == {"copy", "gemm", "merge"}
    assert probe.method["timer"] == "host-perf-counter" and probe.device["name"].startswith("cpu")
    assert all(r.n == 2 and r.median_ns > 0 for r in probe.records)
