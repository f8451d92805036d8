"""moska-sim replay: a recorded trace's routing drives the simulation.

The agreement test is paired: for each seed, ``run`` (statistical uniform router; binomial
counts for batches > 1) and ``replay`` of a freshly drawn uniform trace see the same
arrivals and sizes (same seed streams), so they differ only in routing. Measured on this
config, replays of independent uniform traces spread by about 0.02 % in throughput and
TPOT and 0.2 % in the mean shared-node chunk batch; the tolerances below are ~25x that,
while a skewed trace (every query picks the same chunks) moves throughput by ~9 %, TPOT
by ~12 % and the mean chunk batch by ~3.5x, so the test fails if replay ignored the trace.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim.cli import main as cli_main
from sim.cli.replay import replay_main
from sim.config import config_from_dict
from sim.run import run_simulation
from sim.run.replay import ChunkMap, replay_simulation
from traces.io import write_trace
from traces.schema import StepRecord, Trace, TraceHeader

ROOT = Path(__file__).resolve().parents[1]
H100 = ROOT / "traces" / "samples" / "h100-llama8b-bf16.trace.npz"
H100_4L = ROOT / "traces" / "samples" / "h100-llama8b-4layers-b128.trace.npz"
CPU_TINY = ROOT / "traces" / "samples" / "cpu-tiny.trace.npz"
DEFAULT = ROOT / "workloads" / "default.yaml"

N_CHUNKS, TOP_K, KV_HEADS = 32, 8, 8  # 64Ki tokens in 2048-token chunks, keep 0.25


def config(seed: int = 0, requests: int = 300):
    return config_from_dict({
        "name": "replay-test", "model": "llama-3.1-8b", "precision": "fp8", "system": "moska",
        "cluster": {"unique": {"nodes": 2, "chip": "moska-unique"},
                    "shared": {"nodes": 1, "chip": "h100-sxm"},
                    "fabric": {"topology": "switch",
                               "link": {"bandwidth_GBps": 450, "latency_ns": 1000}}},
        "workload": {"arrivals": {"kind": "closed_loop", "concurrency": 64},
                     "unique_tokens": {"dist": "lognormal", "mean": 512, "cv": 0.5, "min": 64,
                                       "max": 4096},
                     "output_tokens": {"dist": "lognormal", "mean": 48, "cv": 0.5, "min": 4,
                                       "max": 256},
                     "shared": {"tokens": "64Ki", "chunk_tokens": 2048, "keep_fraction": 0.25}},
        "batching": {"max_batch": 256, "window_us": 50},
        "run": {"requests": requests, "seed": seed, "granularity": "step"},
    })


def synth_trace(path: Path, seed: int, *, steps: int = 60, batch: int = 64,
                skew: bool = False, layers: int = 1) -> Path:
    """A Llama-3.1-8B-shaped trace: uniform random selections (or all the same chunks)."""
    h = TraceHeader(layers=layers, q_heads=32, kv_heads=KV_HEADS, head_dim=128, dtype="fp8",
                    shared_tokens=65536, chunk_tokens=2048, n_chunks=N_CHUNKS,
                    keep_fraction=0.25, device="synthetic", chip_hint=None, software={},
                    created_at="", notes="tests/test_replay.py", capture={})
    rng = np.random.default_rng(seed)
    records = []
    for s in range(steps):
        for layer in range(layers):
            if skew:
                sel = np.broadcast_to(np.arange(TOP_K, dtype=np.int32), (batch, KV_HEADS, TOP_K))
            else:
                keys = rng.random((batch, KV_HEADS, N_CHUNKS))
                sel = np.sort(np.argpartition(keys, TOP_K - 1, axis=-1)[..., :TOP_K], axis=-1)
            records.append(StepRecord.from_selection(s, layer, np.arange(batch),
                                                     np.full(batch, 100 + s), sel, N_CHUNKS))
    write_trace(path, Trace(header=h, records=records))
    return path


def metrics(summary: dict) -> dict[str, float]:
    return {
        "throughput": summary["throughput_tokens_per_s"],
        "tpot": summary["tpot_ms"]["mean"],
        "chunk_batch": float(np.mean([v["mean_chunk_batch"]
                                      for v in summary["shared_nodes"].values()])),
    }


TOLERANCE = {"throughput": 0.01, "tpot": 0.01, "chunk_batch": 0.05}


def test_uniform_trace_matches_run_and_skewed_trace_does_not(tmp_path: Path) -> None:
    diffs: dict[str, list[float]] = {k: [] for k in TOLERANCE}
    runs = []
    for seed in range(3):
        ran = metrics(run_simulation(config(seed), write=False, progress=False).summary)
        trace = synth_trace(tmp_path / f"uniform{seed}.trace.npz", 100 + seed)
        res = replay_simulation(trace, config(seed), write=False, progress=False)
        assert res.summary["replay"]["cycles"] == 0  # the trace is long enough
        assert res.run_info["routing_draws"]["binomial"] == 0  # every batch from the trace
        rep = metrics(res.summary)
        runs.append(ran)
        for k in TOLERANCE:
            diffs[k].append(rep[k] / ran[k] - 1.0)
    for k, tol in TOLERANCE.items():
        assert abs(np.mean(diffs[k])) < tol, (k, diffs[k])

    skew = replay_simulation(synth_trace(tmp_path / "skew.trace.npz", 0, skew=True),
                             config(0), write=False, progress=False).summary
    sk = metrics(skew)
    assert sk["chunk_batch"] > 2.0 * runs[0]["chunk_batch"], (sk, runs[0])
    assert abs(sk["throughput"] / runs[0]["throughput"] - 1) > 3 * TOLERANCE["throughput"]
    assert abs(sk["tpot"] / runs[0]["tpot"] - 1) > 3 * TOLERANCE["tpot"]


def test_short_trace_is_cycled_with_a_note(tmp_path: Path, capsys) -> None:
    trace = synth_trace(tmp_path / "short.trace.npz", 1, steps=2, batch=8)
    res = replay_simulation(trace, config(0, requests=40), write=False, progress=False)
    info = res.summary["replay"]
    assert info["queries_in_trace"] == 2 * 8 * KV_HEADS
    assert info["queries_used"] > info["queries_in_trace"]
    assert info["cycles"] == (info["queries_used"] - 1) // info["queries_in_trace"] >= 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("note: replay:")]
    assert len(lines) == 1 and str(trace) in lines[0] and f"cycled {info['cycles']} time(s)" in lines[0]
    assert any("cycled" in n for n in res.summary["notes"])
    assert res.run_info["replay"] == info


def test_arrivals_from_the_trace_cycle_its_requests(capsys) -> None:
    res = replay_simulation(H100_4L, DEFAULT, write=False, progress=False, arrivals="trace",
                            overrides={"run.requests": 150, "run.granularity": "layer"})
    s = res.summary
    info = s["replay"]
    assert info["requests_in_trace"] == 128 and info["closed_loop_concurrency"] == 128
    assert info["layers_replayed"] == [0, 1, 2, 3]
    assert s["requests_completed"] == 150
    # every request decodes the trace's 8 recorded steps plus the prefill's token
    assert s["tokens_generated"] == 150 * 9
    assert any("cycles them" in n for n in s["notes"])
    assert any("mod 4" in n for n in s["notes"])  # 4 recorded layers of 32
    assert "cycled" in capsys.readouterr().err


def test_h100_sample_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "h100"
    rc = cli_main(["replay", str(H100), "--config", str(DEFAULT), "--out", str(out),
                   "--set", "run.requests=100", "--no-progress"])
    assert rc == 0
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    summary = json.loads((out / "summary.json").read_text())
    info = summary["replay"]
    assert info["trace"] == str(H100) and info["trace_model"] == "llama-3.1-8b"
    assert info["chunk_map"]["mode"] == "expand"  # 32 trace chunks onto the config's 512
    assert info["chunk_map"]["config_chunks_per_query"] == 128.0  # = keep 0.25 of 512
    assert summary["requests_completed"] == 100
    assert json.loads((out / "run_info.json").read_text())["replay"] == info


def test_replay_writes_a_timeline_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "tl"
    rc = cli_main(["replay", str(H100), "--config", str(DEFAULT), "--out", str(out),
                   "--set", "run.requests=30", "--no-progress", "--timeline-max-events", "5000"])
    assert rc == 0
    doc = json.loads((out / "timeline.json").read_text())
    events = [e for e in doc["traceEvents"] if e["ph"] != "M"]
    assert events and doc["otherData"]["max_events"] == 5000
    assert len(events) <= 5000
    assert all(e.get("dur", 0) >= 0 for e in events)
    ts = [e["ts"] for e in events]
    assert ts == sorted(ts)
    assert any(e["name"] == "grouped_shared_attention" for e in events)  # shared nodes ran


@pytest.mark.parametrize("damage", ["garbage", "truncated", "model"])
def test_bad_trace_is_one_error_line_and_nothing_written(tmp_path: Path, capsys,
                                                         damage: str) -> None:
    if damage == "model":
        trace = CPU_TINY  # a tiny model's trace against llama-3.1-8b
    else:
        trace = tmp_path / "bad.trace.npz"
        if damage == "garbage":
            trace.write_bytes(b"not a trace at all\n" * 10)
        else:
            data = H100.read_bytes()
            trace.write_bytes(data[: len(data) // 2])
    out = tmp_path / "results" / "r"
    rc = replay_main([str(trace), "--config", str(DEFAULT), "--out", str(out), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("moska-sim replay: error: ")
    assert str(trace) in err[0]
    if damage == "model":
        assert "field 'q_heads'" in err[0]
    assert not out.exists()
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_chunk_map_expand_and_collapse() -> None:
    rows = np.array([[0, 1, 3], [1, 2, 3]])
    ident = ChunkMap(4, 4)
    assert ident.counts(rows).tolist() == [1, 2, 1, 2]
    grow = ChunkMap(4, 8)  # trace chunk c -> config chunks 2c, 2c+1
    assert grow.counts(rows).tolist() == [1, 1, 2, 2, 1, 1, 2, 2]
    assert grow.chunks_per_query(rows) == 6.0
    shrink = ChunkMap(4, 2)  # trace chunks {0,1} -> 0, {2,3} -> 1; repeats count once
    assert shrink.counts(rows).tolist() == [2, 2]
    assert shrink.chunks_per_query(rows) == 2.0


def test_cli_dispatches_replay(capsys) -> None:
    from sim.cli import SUBCOMMANDS

    assert SUBCOMMANDS["replay"][:2] == ("sim.cli.replay", "replay_main")
    with pytest.raises(SystemExit) as exc:
        cli_main(["replay", "--help"])
    assert exc.value.code == 0 and "--arrivals" in capsys.readouterr().out


def test_step_granularity_replays_every_recorded_layer(tmp_path: Path) -> None:
    trace = synth_trace(tmp_path / "three.trace.npz", 2, steps=2, batch=8, layers=3)
    res = replay_simulation(trace, config(0, requests=30), write=False, progress=False)
    info = res.summary["replay"]
    assert info["granularity"] == "step" and info["layers_replayed"] == [0, 1, 2]
    assert info["queries_in_trace"] == 2 * 3 * 8 * KV_HEADS  # one stream of all layers' rows
