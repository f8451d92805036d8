"""The config -> results-folder path: what a run writes, atomically, and how bad input fails."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from small_config import small_config

from sim.cli.run import run_main
from sim.config import config_from_dict, load_config
from sim.run import run_simulation

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "workloads" / "default.yaml"


def write_yaml(tmp_path: Path, data: dict) -> Path:
    import yaml

    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_results_folder_is_complete_and_loads_back(tmp_path):
    cfg = config_from_dict(small_config())
    out = tmp_path / "res" / "tiny-run"
    r = run_simulation(cfg, out, progress=False)
    assert r.out_dir == out
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "summary.json", "requests.csv", "timeseries.csv",
            "run_info.json"} <= names
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]
    # config.yaml is the resolved config, headed by version and seed
    text = (out / "config.yaml").read_text()
    assert text.startswith("# moska-sim ") and "# seed: 3" in text
    assert load_config(out / "config.yaml").to_dict() == cfg.to_dict()
    summary = json.loads((out / "summary.json").read_text())
    for key in ("requests_arrived", "requests_completed", "requests_in_flight",
                "requests_rejected", "sim_time_s", "throughput_tokens_per_s", "ttft_ms",
                "tpot_ms", "e2e_ms", "utilization", "bytes", "time_breakdown_ms",
                "max_chunk_batch", "littles_law", "invariants", "config"):
        assert key in summary, key
    for metric in ("ttft_ms", "tpot_ms", "e2e_ms"):
        assert set(summary[metric]) >= {"mean", "p50", "p90", "p99", "p999"}
    assert summary["requests_completed"] == 40
    with (out / "requests.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40 and {"ttft_ms", "tpot_ms", "e2e_ms", "node"} <= set(rows[0])
    info = json.loads((out / "run_info.json").read_text())
    assert info["events"] > 0 and info["wall_time_s"] > 0


def test_summary_json_is_byte_identical_across_runs(tmp_path):
    cfg = config_from_dict(small_config(**{"run.granularity": "layer"}))
    a = run_simulation(cfg, tmp_path / "a", progress=False).out_dir
    b = run_simulation(cfg, tmp_path / "b", progress=False).out_dir
    assert (a / "summary.json").read_bytes() == (b / "summary.json").read_bytes()
    assert (a / "requests.csv").read_bytes() == (b / "requests.csv").read_bytes()
    assert (a / "timeseries.csv").read_bytes() == (b / "timeseries.csv").read_bytes()


def test_default_folder_name_and_no_clobbering(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict(small_config(**{"run.requests": 5}))
    first = run_simulation(cfg, progress=False).out_dir
    second = run_simulation(cfg, progress=False).out_dir
    assert first.parent == Path("results") and first.name.startswith("tiny-")
    assert first != second and first.is_dir() and second.is_dir()


def test_a_failure_while_writing_leaves_no_folder(tmp_path, monkeypatch):
    from sim.run import results

    def boom(_summary):
        raise OSError("disk full")

    monkeypatch.setattr(results, "summary_json", boom)
    cfg = config_from_dict(small_config(**{"run.requests": 5}))
    with pytest.raises(OSError, match="disk full"):
        run_simulation(cfg, tmp_path / "out" / "x", progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_run_main_writes_and_reports(tmp_path, capsys):
    cfg = write_yaml(tmp_path, small_config(**{"run.requests": 8}))
    rc = run_main([str(cfg), "--out", str(tmp_path / "r"), "--no-progress"])
    assert rc == 0
    assert (tmp_path / "r" / "summary.json").is_file()
    assert "8 completed" in capsys.readouterr().out


@pytest.mark.parametrize("override, needle", [
    ({"cluster.unique.chip": "h900"}, "h900"),
    ({"workload.arrivals.rate_per_s": -3}, "rate_per_s"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, override, needle):
    cfg = write_yaml(tmp_path, small_config(**override))
    out = tmp_path / "never"
    rc = run_main([str(cfg), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and err.startswith("moska-sim run: error:")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_impossible_deployment_fails_before_simulating(tmp_path, capsys):
    cfg = write_yaml(tmp_path, small_config(**{"system": "vanilla",
                                               "workload.shared.tokens": "8Mi"}))
    rc = run_main([str(cfg), "--out", str(tmp_path / "x"), "--no-progress"])
    assert rc == 2
    assert "cluster.unique" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_default_workload_validates_and_a_short_run_is_clean(tmp_path):
    cfg = load_config(DEFAULT, {"run.requests": 60})
    assert cfg.system == "moska" and cfg.cluster.unique.nodes == 4
    r = run_simulation(cfg, tmp_path / "d", progress=False)
    s = r.summary
    assert s["requests_completed"] == 60
    assert all(s["invariants"].values())
