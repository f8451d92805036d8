"""moska-sim compare: one row and every file per config, variants-file errors that name the
field, cost per million tokens by hand, and the same table for the same seeds whatever
--jobs is."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sim.cli.compare import compare_main
from sim.config import ConfigError, load_config
from sim.studies import (
    cost_per_million_tokens,
    load_inputs,
    load_variants_file,
    run_cost,
)
from sim.studies.sweep import SweepSettings

TINY = """\
name: {name}
system: {system}
cluster:
  unique: {{nodes: 1, chip: {chip}, price_per_hour: 4.0}}
  shared: {{nodes: 1, chip: {chip}, price_per_hour: 6.0}}
  fabric: {{topology: switch, link: {{bandwidth_GBps: 450, latency_ns: 1000}}}}
workload:
  arrivals: {{kind: poisson, rate_per_s: 20}}
  unique_tokens: 512
  output_tokens: 16
  shared: {{tokens: 64Ki, chunk_tokens: 2048, keep_fraction: 0.25}}
batching: {{max_batch: 64}}
run: {{requests: 24, seed: 3, granularity: step}}
"""
CONFIGS = {
    "tiny-moska": ("moska", "moska-unique"),
    "tiny-h100": ("moska", "h100-sxm"),
    "tiny-prefix": ("prefix_cache", "moska-unique"),
}
REPORT_FILES = {
    "compare.md",
    "compare.html",
    "compare.json",
    "compare_latency_cdf.png",
    "compare_load.png",
    "compare_utilization.png",
    "compare_time_breakdown.png",
}
SWEEP = ["--load-sweep", "2", "--sweep-requests", "12"]


def write_configs(folder: Path) -> list[Path]:
    paths = []
    for name, (system, chip) in CONFIGS.items():
        path = folder / f"{name}.yaml"
        path.write_text(TINY.format(name=name, system=system, chip=chip))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], str]:
    """One compare of the three tiny configs with a 2-point load sweep, run once."""
    folder = tmp_path_factory.mktemp("compare")
    paths = write_configs(folder)
    out = folder / "out"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = compare_main([*map(str, paths), "--out", str(out), "--no-progress", *SWEEP])
    assert rc == 0
    return out, paths, buf.getvalue()


def test_one_row_per_config_and_every_file(compared: tuple[Path, list[Path], str]) -> None:
    out, _paths, printed = compared
    record = json.loads((out / "compare.json").read_text())
    assert [r["config"] for r in record["rows"]] == list(CONFIGS)
    assert [r["system"] for r in record["rows"]] == [s for s, _ in CONFIGS.values()]
    assert all(r["throughput (tok/s)"] > 0 for r in record["rows"])
    assert REPORT_FILES <= {p.name for p in out.iterdir()}
    for name in CONFIGS:  # each run's own results folder, complete
        run = out / "runs" / name
        assert {"summary.json", "requests.csv", "config.yaml", "report.html"} <= {
            p.name for p in run.iterdir()}
    html = (out / "compare.html").read_text()
    assert html.count("data:image/png;base64,") == 4  # plots embedded: opens offline
    assert "src=\"http" not in html and "href=\"http" not in html
    for name in CONFIGS:  # the table on the terminal and in the report
        assert name in printed
        assert name in (out / "compare.md").read_text()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]


def test_load_sweep_points_per_config(compared: tuple[Path, list[Path], str]) -> None:
    out, _paths, _printed = compared
    sweep = json.loads((out / "compare.json").read_text())["load_sweep"]
    assert list(sweep) == list(CONFIGS)
    for s in sweep.values():
        rates = s["offered_rate_per_s"]
        sat = s["analytic_saturation"]["rate_per_s"]
        # points at 0.75x and 1.5x the analytic saturation (max_factor 1.5, N = 2), and the
        # main run's own rate, so the sweep says where the headline run sits
        main = s["main_run_x"]
        assert main == pytest.approx(20.0)  # the configs' workload.arrivals.rate_per_s
        assert rates == pytest.approx(sorted([0.75 * sat, 1.5 * sat, main]))
        assert len(s["throughput_tokens_per_s"]) == 3
        sat_info = s["analytic_saturation"]
        for rate, o in zip(rates, s["overrides"]):
            # --sweep-requests, raised so the run lasts at least 8 request latencies (each at
            # least the unloaded one)
            assert o["run.requests"] >= max(12, math.ceil(8 * sat_info["unloaded_latency_s"] * rate))
            assert o["run.duration_s"] == pytest.approx(o["run.requests"] / rate)
            assert o["workload.arrivals.rate_per_s"] == pytest.approx(rate)


def test_cost_per_million_tokens_by_hand(compared: tuple[Path, list[Path], str]) -> None:
    # 2 unique nodes x $3 + 1 shared x $5 = $11/h; 1800 s = 0.5 h -> $5.50 for 2M tokens
    assert cost_per_million_tokens(11.0, 1800.0, 2_000_000) == pytest.approx(2.75)
    assert cost_per_million_tokens(None, 1800.0, 2e6) is None
    assert cost_per_million_tokens(11.0, 1800.0, 0) is None
    out, paths, _printed = compared
    record = json.loads((out / "compare.json").read_text())
    for path, row in zip(paths, record["rows"]):
        summary = json.loads((out / "runs" / row["config"] / "summary.json").read_text())
        # one unique node at $4/h + one shared node at $6/h = $10/h
        by_hand = 10.0 * summary["sim_time_s"] / 3600 / (summary["tokens_generated"] / 1e6)
        assert row["cost ($/M tokens)"] == pytest.approx(by_hand)
        assert run_cost(load_config(path), summary) == pytest.approx(by_hand)


def test_unpriced_groups_give_no_cost(tmp_path: Path) -> None:
    path = write_configs(tmp_path)[0]
    cfg = load_config(path, {"cluster.shared.price_per_hour": None})
    assert run_cost(cfg, {"sim_time_s": 10.0, "tokens_generated": 1000}) is None
    cfg = load_config(path, {"cluster.shared.price_per_hour": None, "system": "prefix_cache",
                             "cluster.shared.nodes": 0})
    assert run_cost(cfg, {"sim_time_s": 3600.0, "tokens_generated": 1e6}) == pytest.approx(4.0)


def test_same_seeds_same_table_whatever_jobs(compared: tuple[Path, list[Path], str],
                                              tmp_path: Path) -> None:
    out1, paths, _printed = compared
    out2 = tmp_path / "again"
    rc = compare_main([*map(str, paths), "--out", str(out2), "--no-progress", "--jobs", "2",
                       *SWEEP])
    assert rc == 0
    first = json.loads((out1 / "compare.json").read_text())
    second = json.loads((out2 / "compare.json").read_text())
    assert first["rows"] == second["rows"]
    assert first["load_sweep"] == second["load_sweep"]
    assert (out1 / "compare.md").read_bytes() == (out2 / "compare.md").read_bytes()


VARIANTS = """\
name: tiny-variants
base: {base}
overrides: {{run.requests: 12}}
variants:
  - label: moska
  - label: h100
    overrides: {{cluster.unique.chip: h100-sxm, cluster.shared.chip: h100-sxm}}
"""


def test_variants_file_resolves_each_variant(tmp_path: Path) -> None:
    base = write_configs(tmp_path)[0]
    path = tmp_path / "v.yaml"
    path.write_text(VARIANTS.format(base=base.name))  # relative to the variants file
    inputs = load_inputs([path])
    assert inputs.name == "tiny-variants"
    assert [v.label for v in inputs.variants] == ["moska", "h100"]
    moska, h100 = (v.config for v in inputs.variants)
    assert moska.run.requests == h100.run.requests == 12
    assert h100.cluster.unique.chip == "h100-sxm" and moska.cluster.unique.chip == "moska-unique"
    assert h100.name == "h100"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("base: {base}\nvariants: []\n", "v.yaml: variants: expected a non-empty list"),
        ("variants: [{{label: a}}]\n", "v.yaml: base: missing required field"),
        ("base: nowhere.yaml\nvariants: [{{label: a}}]\n", "v.yaml: base: config file"),
        ("base: {base}\nvariants: [{{label: a}}, {{label: a}}]\n",
         "v.yaml: variants[1].label: duplicate label 'a'"),
        ("base: {base}\nvariants: [{{label: 'a b'}}]\n", "v.yaml: variants[0].label: expected a label"),
        ("base: {base}\nvariants: [{{overrides: {{}}}}]\n",
         "v.yaml: variants[0].label: missing required field"),
        ("base: {base}\nvariants: [{{label: a, overide: {{}}}}]\n",
         "v.yaml: variants[0].overide: unknown field (did you mean 'overrides'?)"),
        ("base: {base}\nvariants:\n  - label: a\n    overrides: {{cluster.unique.chip: h100}}\n",
         ("v.yaml: variants[0].overrides.cluster.unique.chip: unknown chip 'h100' (did you "
          "mean 'h200'?)")),
        ("base: {base}\nvariants:\n  - label: a\n    overrides: {{run.seed: -1}}\n",
         "v.yaml: variants[0].overrides.run.seed: expected an integer >= 0"),
        ("base: {base}\noverrides: {{workload.arrivals.rate: 3}}\nvariants: [{{label: a}}]\n",
         "v.yaml: overrides.workload.arrivals.rate: unknown field"),
        ("base: {base}\nvariants: [{{label: a}}]\nload_sweep: {{points: -2}}\n",
         "v.yaml: load_sweep.points: expected an integer >= 0"),
        ("bsae: {base}\nbase: {base}\nvariants: [{{label: a}}]\n",
         "v.yaml: bsae: unknown field (did you mean 'base'?)"),
    ],
)
def test_variants_file_errors_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    base = write_configs(tmp_path)[0]
    path = tmp_path / "v.yaml"
    path.write_text(text.format(base=base.name))
    with pytest.raises(ConfigError) as err:
        inputs = load_inputs([path])
        SweepSettings.from_mapping(inputs.load_sweep, inputs.load_sweep_source)
    assert expected in str(err.value)


def test_errors_reach_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = write_configs(tmp_path)[0]
    path = tmp_path / "v.yaml"
    path.write_text(f"base: {base.name}\nvariants: [{{label: a, overrides: 3}}]\n")
    assert compare_main([str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "v.yaml: variants[0].overrides: expected a mapping" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="must be the only CONFIG"):
        load_inputs([path, base])
    with pytest.raises(ConfigError):
        load_variants_file(tmp_path / "missing.yaml")


def test_a_failed_run_keeps_the_others(tmp_path: Path) -> None:
    """A deployment that does not fit is a row of dashes and runs/<label>/error.txt."""
    paths = write_configs(tmp_path)
    path = tmp_path / "v.yaml"
    path.write_text(
        f"base: {paths[0].name}\noverrides: {{run.requests: 8}}\nvariants:\n  - label: ok\n"
        "  - label: too-big\n    overrides: {workload.shared.tokens: 16Mi}\n")
    out = tmp_path / "out"
    assert compare_main([str(path), "--out", str(out), "--no-progress"]) == 1
    record = json.loads((out / "compare.json").read_text())
    ok, bad = record["rows"]
    assert ok["throughput (tok/s)"] > 0 and bad["throughput (tok/s)"] is None
    assert "too-big" in record["failures"]
    assert "shared" in (out / "runs" / "too-big" / "error.txt").read_text()
    assert (out / "runs" / "too-big" / "config.yaml").is_file()


def test_out_must_be_empty(tmp_path: Path) -> None:
    paths = write_configs(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert compare_main([str(paths[0]), "--out", str(out), "--no-progress"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_dask_without_the_extra_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """--dask without the distributed package: exit 2, one line saying what to install,
    nothing run."""
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    path = write_configs(tmp_path)[0]
    out = tmp_path / "out"
    assert compare_main([str(path), "--dask", "tcp://127.0.0.1:8786", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("moska-sim compare: error: --dask: the distributed package is not "
                   "installed; pip install -e '.[dask]'")
    assert not out.exists()


def test_validate_reads_every_shipped_study_and_run_points_to_compare(capsys) -> None:
    """A study file is not an experiment: validate resolves each of its variants; run says
    to use compare instead of reporting schema errors."""
    from sim.cli import main

    studies = sorted((Path(__file__).resolve().parents[1] / "workloads" / "studies").glob("*.yaml"))
    assert studies
    for study in studies:
        assert main(["validate", str(study)]) == 0, study
        out = capsys.readouterr().out
        assert "valid study" in out and "--- # variant" in out
    assert main(["run", str(studies[0])]) == 2
    err = capsys.readouterr().err
    assert "this is a study" in err and "moska-sim compare" in err and "Traceback" not in err


def test_every_shipped_experiment_and_study_runs_per_layer() -> None:
    """The shipped configs use the faithful mode (one unique/shared round trip per layer),
    not the folded `step` approximation: every experiment and every study variant."""
    from sim.config import load_config
    from sim.studies.variants import load_variants_file

    root = Path(__file__).resolve().parents[1] / "workloads"
    experiments = sorted(root.glob("*.yaml"))
    studies = sorted((root / "studies").glob("*.yaml"))
    assert experiments and studies
    for path in experiments:
        assert load_config(path).run.granularity == "layer", path
    for path in studies:
        for variant in load_variants_file(path).variants:
            assert variant.config.run.granularity == "layer", (path, variant.label)
