"""``moska-sim sweep``: a parameter grid becomes one comparison, one row per point."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.cli import main as cli_main
from sim.config import ConfigError
from sim.studies.grid import grid_inputs, parse_param, split_values

DEFAULT = Path(__file__).resolve().parents[1] / "workloads" / "default.yaml"


def test_values_split_on_top_level_commas_only() -> None:
    assert split_values("1Mi, 4Mi,16Mi") == ["1Mi", "4Mi", "16Mi"]
    assert split_values("uniform,{zipf: 1.1},[1, 2]") == ["uniform", "{zipf: 1.1}", "[1, 2]"]


def test_grid_is_the_product_first_parameter_slowest() -> None:
    params = [parse_param("workload.shared.tokens=256Ki,1Mi,4Mi"),
              parse_param("workload.shared.popularity=uniform,{zipf: 1.1}")]
    inputs = grid_inputs(DEFAULT, params, {"run.requests": 10})
    labels = [v.label for v in inputs.variants]
    assert labels == ["tokens=256Ki,popularity=uniform", "tokens=256Ki,popularity=zipf-1.1",
                      "tokens=1Mi,popularity=uniform", "tokens=1Mi,popularity=zipf-1.1",
                      "tokens=4Mi,popularity=uniform", "tokens=4Mi,popularity=zipf-1.1"]
    tokens = [v.config.workload.shared.tokens for v in inputs.variants]
    assert tokens == [2**18, 2**18, 2**20, 2**20, 2**22, 2**22]
    assert all(v.config.run.requests == 10 for v in inputs.variants)
    assert inputs.name == "default-sweep"


def test_a_bad_value_names_its_point_and_field() -> None:
    with pytest.raises(ConfigError) as exc:
        grid_inputs(DEFAULT, [parse_param("workload.arrivals.rate_per_s=4,-1")])
    text = str(exc.value)
    assert "workload.arrivals.rate_per_s" in text and "sweep point rate_per_s=-1" in text
    for bad in ("workload.shared.tokens", "workload.shared.tokens=1Mi,1Mi", "x=1,,2"):
        with pytest.raises(ConfigError):
            parse_param(bad)


def test_sweep_command_writes_one_row_per_point(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sweep"
    rc = cli_main(["sweep", str(DEFAULT), "--param", "batching.window_us=0,400",
                   "--set", "run.requests=40", "--out", str(out), "--no-progress"])
    assert rc == 0
    md = (out / "compare.md").read_text()
    assert "| window_us=0 |" in md and "| window_us=400 |" in md
    assert (out / "runs" / "window_us=400" / "summary.json").is_file()
    assert cli_main(["sweep", str(DEFAULT), "--param", "batching.window_us=-5"]) == 2
    assert "window_us" in capsys.readouterr().err
