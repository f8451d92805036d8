"""sim.config: experiment YAML -> validated, resolved config; errors name file, field, line."""

import json
import re
import typing
from pathlib import Path

import pydantic
import pytest
import yaml

from hw.specs import load_link
from sim.cli.validate import validate_main
from sim.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_assignment,
    with_overrides,
)
from sim.config.schema import LognormalDist, PoissonArrivals, UniformDist, Zipf

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
name: paper-16m
cluster:
  unique: {nodes: 8, chip: moska-unique, price_per_hour: 4.0}
  shared: {nodes: 4, chip: moska-shared}
  fabric:
    link: {bandwidth_GBps: 400, latency_ns: 600}
workload:
  arrivals: {kind: poisson, rate_per_s: 200}
  unique_tokens: 64Ki
  output_tokens: {dist: lognormal, mean: 256, cv: 1.0}
  shared: {tokens: 16Mi, chunk_tokens: 2048, keep_fraction: 0.25}
run: {duration_s: 30, seed: 7}
"""


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def good_dict() -> dict:
    return yaml.safe_load(GOOD)


def errors_of(data: dict, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "exp.yaml", **kw)
    return str(info.value)


def load_errors(path: Path, overrides=None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value


# ------------------------------------------------------------------ a good config


def test_good_config_resolves_with_defaults(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.name == "paper-16m"
    assert (cfg.model, cfg.precision, cfg.system) == ("llama-3.1-8b", "fp8", "moska")
    assert cfg.cluster.unique.price_per_hour == 4.0
    assert cfg.cluster.shared.price_per_hour is None
    assert cfg.cluster.fabric.topology == "switch"
    assert cfg.cluster.fabric.hosts_per_leaf is None  # fat_tree only
    assert cfg.cluster.fabric.switch_latency_ns == 0.0
    assert cfg.workload.arrivals == PoissonArrivals(rate_per_s=200.0)
    assert cfg.workload.unique_tokens == 64 * 1024
    assert cfg.workload.output_tokens == LognormalDist(mean=256.0, cv=1.0, min=1, max=None)
    shared = cfg.workload.shared
    assert (shared.tokens, shared.chunk_tokens, shared.keep_fraction) == (16 * 2**20, 2048, 0.25)
    assert (shared.popularity, shared.corpora) == ("uniform", 1)
    assert (cfg.batching.max_batch, cfg.batching.window_us, cfg.batching.max_running) == (
        512, 0.0, None)
    assert (cfg.run.requests, cfg.run.duration_s, cfg.run.seed) == (None, 30.0, 7)
    assert (cfg.run.granularity, cfg.run.warmup_s) == ("layer", 0.0)
    assert cfg.analysis.batch == 64
    assert cfg.analysis.batch_sweep == tuple(2**i for i in range(11))
    assert cfg.analysis.shared_tokens_sweep == tuple(n * 2**20 for n in (1, 2, 4, 8, 16))


def test_config_is_frozen_and_hashable(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    with pytest.raises(pydantic.ValidationError):
        cfg.run.seed = 3
    assert hash(cfg) == hash(load_config(write(tmp_path, GOOD)))


def test_paper_workload_loads():
    cfg = load_config(REPO / "workloads" / "paper.yaml")
    assert cfg.system == "moska" and cfg.workload.shared.tokens == 16 * 2**20


# ------------------------------------------------------------------ sizes and numbers


@pytest.mark.parametrize(("text", "tokens"), [("64Ki", 65536), ("16Mi", 16 * 2**20),
                                               ("1M", 10**6), ("1e6", 10**6), ("1_000", 1000),
                                               (4096, 4096), ("2k", 2000)])
def test_sizes(text, tokens):
    data = good_dict()
    data["workload"]["unique_tokens"] = text
    assert config_from_dict(data).workload.unique_tokens == tokens


def test_exponent_strings_are_numbers_where_numbers_are_expected(tmp_path):
    # PyYAML reads 1e9 and 3.35e2 as strings; the loader must still see numbers
    text = GOOD.replace("bandwidth_GBps: 400", "bandwidth_GBps: 4e2").replace(
        "rate_per_s: 200", "rate_per_s: 2.5e2")
    cfg = load_config(write(tmp_path, text))
    assert cfg.cluster.fabric.link.bandwidth_GBps == 400.0
    assert cfg.workload.arrivals.rate_per_s == 250.0


@pytest.mark.parametrize("bad", ["64K", -5, 1.5, "lots", True])
def test_bad_sizes_are_rejected_with_the_field(bad):
    data = good_dict()
    data["workload"]["unique_tokens"] = bad
    assert "exp.yaml: workload.unique_tokens: expected a size >= 1" in errors_of(data)


# ------------------------------------------------------------------ error messages


def test_negative_rate_message_names_file_field_expectation_and_line(tmp_path):
    path = write(tmp_path, GOOD.replace("rate_per_s: 200", "rate_per_s: -3"), "paper.yaml")
    err = load_errors(path)
    assert str(err) == (f"{path}: workload.arrivals.rate_per_s: expected a number > 0, "
                        "got -3 (line 8)")
    assert err.issues[0].path == ("workload", "arrivals", "rate_per_s")


def test_unknown_key_suggests_the_nearest_name(tmp_path):
    path = write(tmp_path, GOOD.replace("rate_per_s: 200", "rate_per_sec: 200"))
    message = str(load_errors(path))
    assert "workload.arrivals.rate_per_sec: unknown field" in message
    assert "did you mean 'rate_per_s'?" in message
    assert "workload.arrivals.rate_per_s: missing required field" in message


def test_unknown_top_level_section_suggests(tmp_path):
    data = good_dict()
    data["batchng"] = {"max_batch": 4}
    assert "exp.yaml: batchng: unknown field (did you mean 'batching'?)" in errors_of(data)


def test_wrong_type(tmp_path):
    data = good_dict()
    data["cluster"]["unique"]["nodes"] = "eight"
    data["cluster"]["fabric"] = 5
    message = errors_of(data)
    assert "exp.yaml: cluster.unique.nodes: expected an integer >= 0, got 'eight'" in message
    assert "exp.yaml: cluster.fabric: expected a mapping, got 5" in message


def test_yaml_booleans_are_not_numbers(tmp_path):
    path = write(tmp_path, GOOD + "batching: {max_batch: yes}\n")
    assert "batching.max_batch: expected an integer >= 1, got True (a boolean" in str(
        load_errors(path))


def test_unknown_chip_lists_valid_names_nearest_first():
    data = good_dict()
    data["cluster"]["shared"]["chip"] = "h100"
    message = errors_of(data)
    assert message.startswith("exp.yaml: cluster.shared.chip: unknown chip 'h100'")
    listed = re.findall(r"'([^']+)'", message.split("expected one of")[1])
    import hw.specs

    assert sorted(listed) == sorted(hw.specs.available_chips())
    assert listed[0].startswith("h")  # nearest first


def test_unknown_model_and_choice_suggest():
    data = good_dict()
    data["model"] = "llama-3.1-8B"
    data["precision"] = "fp16"
    data["system"] = "mosca"
    message = errors_of(data)
    assert "model: unknown model 'llama-3.1-8B' (did you mean 'llama-3.1-8b'?)" in message
    assert "precision: expected one of 'fp8', 'bf16', got 'fp16'" in message
    assert "system: unknown system 'mosca' (did you mean 'moska'?)" in message


def test_all_errors_are_reported_together_one_per_line():
    data = good_dict()
    data["workload"]["arrivals"]["rate_per_s"] = 0
    data["cluster"]["unique"]["chip"] = "nope"
    data["run"]["seed"] = -1
    err = pytest.raises(ConfigError, config_from_dict, data, "exp.yaml").value
    lines = str(err).splitlines()
    assert len(lines) == len(err.issues) == 3
    assert all(line.startswith("exp.yaml: ") for line in lines)
    assert [i.path[-1] for i in err.issues] == ["chip", "rate_per_s", "seed"]


def test_no_raw_pydantic_text_reaches_users():
    data = good_dict()
    data["workload"]["arrivals"] = {"kind": "gamma", "rate_per_s": "x", "concurrency": 3}
    data["analysis"] = {"batch_sweep": "1,2"}
    message = errors_of(data)
    for raw in ("Input should", "type=", "errors.pydantic.dev", "~Gamma"):
        assert raw not in message


# ------------------------------------------------------------------ YAML loading


def test_duplicate_key_is_rejected_with_lines(tmp_path):
    path = write(tmp_path, GOOD + "run: {requests: 5}\n")
    err = load_errors(path)
    assert str(err) == (f"{path}: run: duplicate key; first set at line 12 "
                        "(YAML would keep the last silently) (line 13)")


def test_nested_duplicate_key(tmp_path):
    path = write(tmp_path, GOOD.replace("seed: 7}", "seed: 7, seed: 8}"))
    assert "run.seed: duplicate key; first set at line 12" in str(load_errors(path))


def test_malformed_yaml_names_line_and_column(tmp_path):
    path = write(tmp_path, GOOD.replace("  shared: {nodes: 4, chip: moska-shared}",
                                        "  shared: {nodes: 4, chip: moska-shared"))
    message = str(load_errors(path))
    assert message.startswith(f"{path}: malformed YAML: ")
    assert re.search(r"\(line \d+, column \d+\)$", message)


def test_bad_indentation_points_at_its_line(tmp_path):
    path = write(tmp_path, "name: a\n  run: 1\n")
    err = load_errors(path)
    assert err.issues[0].line == 2 and "malformed YAML" in str(err)


@pytest.mark.parametrize(("text", "needle"), [("", "got an empty file"), ("- 1\n", "got [1]"),
                                              ("a: 1\n---\nb: 2\n", "single document")])
def test_top_level_must_be_one_mapping(tmp_path, text, needle):
    assert needle in str(load_errors(write(tmp_path, text)))


def test_non_string_keys_are_rejected(tmp_path):
    path = write(tmp_path, GOOD + "on: 3\n")
    assert "key True (a boolean" in str(load_errors(path))


def test_missing_file():
    err = pytest.raises(ConfigError, load_config, "no/such/file.yaml").value
    assert str(err) == "no/such/file.yaml: file not found"


# ------------------------------------------------------------------ arrivals


def test_gamma_without_cv(tmp_path):
    path = write(tmp_path, GOOD.replace("kind: poisson", "kind: gamma"))
    assert str(load_errors(path)) == (
        f"{path}: workload.arrivals.cv: missing required field (needed by kind 'gamma'); "
        "expected a number >= 0.001 and <= 100 (line 8)")


def test_fields_that_make_no_sense_for_the_kind_are_rejected():
    data = good_dict()
    data["workload"]["arrivals"] = {"kind": "poisson", "rate_per_s": 5, "cv": 2}
    assert "workload.arrivals.cv: unknown field for kind 'poisson'" in errors_of(data)
    data["workload"]["arrivals"] = {"kind": "closed_loop", "concurrency": 4, "rate_per_s": 5}
    assert "workload.arrivals.rate_per_s: unknown field for kind 'closed_loop'" in errors_of(data)


@pytest.mark.parametrize(("arrivals", "needle"), [
    ({"kind": "posson", "rate_per_s": 1}, ("workload.arrivals.kind: expected one of 'poisson', "
                                          "'gamma', 'closed_loop', 'trace', got 'posson' "
                                          "(did you mean 'poisson'?)")),
    ({"rate_per_s": 1}, "workload.arrivals.kind: missing; expected one of 'poisson'"),
    ("poisson", "workload.arrivals: expected a mapping with kind: one of 'poisson'"),
    ({"kind": "closed_loop", "concurrency": 0}, "concurrency: expected an integer >= 1, got 0"),
])
def test_arrival_kind_errors(arrivals, needle):
    data = good_dict()
    data["workload"]["arrivals"] = arrivals
    assert needle in errors_of(data)


def test_trace_path_resolves_against_the_yaml_folder(tmp_path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "azure.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    text = GOOD.replace("{kind: poisson, rate_per_s: 200}",
                        "{kind: trace, path: traces/azure.csv, format: azure}")
    cfg = load_config(write(tmp_path, text))
    assert cfg.workload.arrivals.path == str(tmp_path / "traces" / "azure.csv")
    assert Path(cfg.workload.arrivals.path).is_absolute()
    assert cfg.workload.arrivals.time_scale == 1.0


def test_trace_path_missing(tmp_path):
    text = GOOD.replace("{kind: poisson, rate_per_s: 200}",
                        "{kind: trace, path: missing.csv, format: mooncake}")
    path = write(tmp_path, text)
    assert str(load_errors(path)) == (
        f"{path}: workload.arrivals.path: file not found: {str(tmp_path / 'missing.csv')!r} "
        "(from 'missing.csv') (line 8)")


# ------------------------------------------------------------------ the rest of the schema


def test_distributions_and_popularity():
    data = good_dict()
    data["workload"]["unique_tokens"] = {"dist": "uniform", "min": "1Ki", "max": "2Ki"}
    data["workload"]["output_tokens"] = {"dist": "fixed", "mean": 128}
    data["workload"]["shared"]["popularity"] = {"zipf": 1.1}
    cfg = config_from_dict(data)
    assert cfg.workload.unique_tokens == UniformDist(min=1024, max=2048)
    assert cfg.workload.unique_tokens.expected() == 1536
    assert cfg.workload.output_tokens.expected() == 128
    assert cfg.workload.shared.popularity == Zipf(zipf=1.1)


@pytest.mark.parametrize(("tokens", "needle"), [
    ({"dist": "lognorm", "mean": 3}, ("output_tokens.dist: expected one of 'fixed', 'uniform', "
                                     "'exponential', 'lognormal', 'normal', got 'lognorm'")),
    ({"dist": "normal", "mean": 256}, ("output_tokens.cv: missing required field (needed by "
                                      "dist 'normal')")),
    ({"dist": "uniform", "min": 10, "max": 5}, "output_tokens.max: expected a size >= min (10)"),
    ({"dist": "fixed", "mean": 5, "cv": 1}, "output_tokens.cv: unknown field for dist 'fixed'"),
    ({"dist": "exponential", "mean": 500, "max": 100}, ("output_tokens.mean: expected a number "
                                                       "within [min, max] = [1, 100]")),
    ({"mean": 5}, "output_tokens.dist: missing; expected one of"),
])
def test_distribution_errors(tokens, needle):
    data = good_dict()
    data["workload"]["output_tokens"] = tokens
    assert needle in errors_of(data)


@pytest.mark.parametrize(("popularity", "needle"), [
    ("zipf", "popularity: expected 'uniform' or a mapping {zipf: s}, got 'zipf'"),
    ({"zipf": -1}, "popularity.zipf: expected a number >= 0, got -1"),
    ({"s": 1}, "popularity.s: unknown field; valid fields: zipf"),
])
def test_popularity_errors(popularity, needle):
    data = good_dict()
    data["workload"]["shared"]["popularity"] = popularity
    assert needle in errors_of(data)


def test_cross_field_rules():
    data = good_dict()
    data["workload"]["shared"]["chunk_tokens"] = "32Mi"
    data["run"] = {"seed": 1}
    message = errors_of(data)
    assert "workload.shared.chunk_tokens: expected a size <= tokens (16777216)" in message
    # the run's bound is checked against the arrivals (a trace needs none), once the
    # sections themselves are valid
    data["workload"]["shared"]["chunk_tokens"] = "1Mi"
    assert "run.requests: missing; set requests, duration_s or both" in errors_of(data)


def test_keep_fraction_range():
    data = good_dict()
    data["workload"]["shared"]["keep_fraction"] = 1.5
    assert "keep_fraction: expected a number > 0 and <= 1, got 1.5" in errors_of(data)


def test_moska_needs_shared_nodes_other_systems_do_not():
    data = good_dict()
    data["cluster"]["shared"]["nodes"] = 0
    assert "cluster.shared.nodes: expected an integer >= 1 for system 'moska', got 0" in (
        errors_of(data))
    data["system"] = "prefix_cache"
    assert config_from_dict(data).cluster.shared.nodes == 0
    data["cluster"]["unique"]["nodes"] = 0
    assert "cluster.unique.nodes: expected an integer >= 1, got 0" in errors_of(data)


def test_fabric_topologies_and_link_preset():
    data = good_dict()
    data["cluster"]["fabric"] = {"topology": "fat_tree", "link": {"preset": "ib-ndr"}}
    fabric = config_from_dict(data).cluster.fabric
    assert fabric.hosts_per_leaf == 4
    preset = load_link("ib-ndr")  # the preset's numbers fill the link
    assert (fabric.link.bandwidth_GBps, fabric.link.latency_ns) == (preset.bandwidth_GBps,
                                                                    preset.latency_ns)
    data["cluster"]["fabric"] = {"topology": "ring", "hosts_per_leaf": 2,
                                 "link": {"preset": "ib-ndr", "latency_ns": 10}}
    assert "cluster.fabric.hosts_per_leaf: only used by topology 'fat_tree'" in errors_of(data)
    data["cluster"]["fabric"] = {"link": {"preset": "ib-nrd"}}
    assert "cluster.fabric.link.preset: unknown link preset 'ib-nrd' (did you mean 'ib-ndr'?)" \
        in errors_of(data)


def test_fat_tree_spines_and_tensor_parallel_replicas():
    data = good_dict()
    data["system"] = "shared_gemm"
    data["cluster"]["unique"]["tp"] = 4
    data["cluster"]["fabric"] = {"topology": "fat_tree", "hosts_per_leaf": 2,
                                 "link": {"preset": "nvlink4"}}
    cfg = config_from_dict(data)
    assert (cfg.cluster.unique.tp, cfg.cluster.fabric.spines) == (4, 2)
    data["cluster"]["unique"]["tp"] = 3
    assert "cluster.unique.tp: expected a divisor of unique.nodes (8), got 3" in errors_of(data)
    data["system"] = "moska"  # moska's unique replicas are tensor parallel too
    data["cluster"]["unique"]["tp"] = 2
    data["cluster"]["unique"]["link"] = {"preset": "nvlink5"}
    cfg = config_from_dict(data)
    assert cfg.cluster.unique.tp == 2
    nvlink5 = load_link("nvlink5")  # the preset's numbers fill the node link
    assert (cfg.cluster.unique.link.bandwidth_GBps, cfg.cluster.unique.link.latency_ns) == (
        nvlink5.bandwidth_GBps, nvlink5.latency_ns)
    assert config_from_dict(cfg.to_dict()) == cfg
    data["cluster"]["unique"]["hbm_usable_fraction"] = 1.5
    assert "cluster.unique.hbm_usable_fraction" in errors_of(data)
    del data["cluster"]["unique"]["hbm_usable_fraction"], data["cluster"]["unique"]["link"]
    data["cluster"]["unique"]["tp"] = 1
    data["cluster"]["fabric"] = {"spines": 2, "link": {"preset": "nvlink4"}}
    assert "cluster.fabric.spines: only used by topology 'fat_tree'" in errors_of(data)


def test_service_time_model():
    data = good_dict()
    assert config_from_dict(data).run.service == "deterministic"
    data["run"]["service"] = "exp"
    assert "run.service: expected one of 'deterministic', 'exponential', got 'exp'" in (
        errors_of(data))


def test_empty_section_means_defaults():
    data = good_dict()
    data["batching"] = None
    assert config_from_dict(data).batching.max_batch == 512


# ------------------------------------------------------------------ round trip, overrides, CLI


def test_round_trip_yaml_and_dict(tmp_path):
    data = good_dict()
    data["cluster"]["fabric"] = {"topology": "fat_tree", "link": {"preset": "nvlink4"}}
    data["workload"]["shared"]["popularity"] = {"zipf": 0.9}
    data["workload"]["unique_tokens"] = {"dist": "normal", "mean": "32Ki", "cv": 0.5, "max": "64Ki"}
    data["run"]["requests"] = "10k"
    cfg = config_from_dict(data)
    again = load_config(write(tmp_path, cfg.to_yaml(), "resolved.yaml"))
    assert again == cfg
    assert config_from_dict(cfg.to_dict()) == cfg
    assert config_from_dict(json.loads(cfg.to_json())) == cfg
    assert again.to_yaml() == cfg.to_yaml()


def test_to_dict_is_plain_data(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    plain = cfg.to_dict()
    assert plain["analysis"]["batch_sweep"] == [2**i for i in range(11)]
    assert plain["workload"]["unique_tokens"] == 65536
    assert plain["workload"]["output_tokens"]["dist"] == "lognormal"
    assert yaml.safe_load(cfg.to_yaml()) == plain


def test_with_overrides(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    swept = with_overrides(cfg, {"workload.arrivals.rate_per_s": 50, "run.seed": "3",
                                 "workload.shared.tokens": "1Mi"})
    assert swept.workload.arrivals.rate_per_s == 50.0
    assert (swept.run.seed, swept.workload.shared.tokens) == (3, 2**20)
    assert cfg.workload.arrivals.rate_per_s == 200.0  # the original is untouched
    closed = with_overrides(cfg, {"workload.arrivals": {"kind": "closed_loop", "concurrency": 8}})
    assert closed.workload.arrivals.concurrency == 8


def test_overrides_are_validated_the_same_way(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    err = pytest.raises(ConfigError, with_overrides, cfg,
                        {"workload.arrivals.rate_per_s": -1, "run.sed": 1}).value
    assert str(err).splitlines() == [
        ("<overrides>: workload.arrivals.rate_per_s: expected a number > 0, got -1 "
        "(set by override)"),
        "<overrides>: run.sed: unknown field (did you mean 'seed'?) (set by override)",
    ]


def test_load_config_with_overrides_names_the_file(tmp_path):
    path = write(tmp_path, GOOD)
    assert load_config(path, {"run.seed": 11}).run.seed == 11
    err = load_errors(path, {"workload.unique_tokens.mean": 3})
    assert str(err) == (f"{path}: workload.unique_tokens: cannot set "
                        "workload.unique_tokens.mean: this field is '64Ki', not a mapping")


def test_apply_overrides_creates_sections_and_copies():
    base = {"run": {"seed": 1}}
    out, paths = apply_overrides(base, {"batching.max_batch": 4, ("run", "seed"): 2})
    assert out == {"run": {"seed": 2}, "batching": {"max_batch": 4}}
    assert paths == [("batching", "max_batch"), ("run", "seed")]
    assert base == {"run": {"seed": 1}}


def test_parse_assignment_reads_yaml_values():
    assert parse_assignment("run.seed=3") == ("run.seed", 3)
    assert parse_assignment("workload.shared.popularity={zipf: 1.1}") == (
        "workload.shared.popularity", {"zipf": 1.1})
    assert parse_assignment("batching.max_running=null") == ("batching.max_running", None)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_assignment("run.seed")


def test_validate_main_prints_resolved_yaml(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert validate_main([str(path)]) == 0
    out = capsys.readouterr().out
    assert load_config(write(tmp_path, out, "printed.yaml")) == load_config(path)
    assert "max_batch: 512" in out  # defaults are shown


def test_validate_main_json_and_set(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    assert validate_main([str(path), "--json", "--set", "run.seed=9"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["seed"] == 9


def test_validate_main_reports_errors_and_exits_2(tmp_path, capsys):
    path = write(tmp_path, GOOD.replace("rate_per_s: 200", "rate_per_s: -3"))
    assert validate_main([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "workload.arrivals.rate_per_s: expected a number > 0, got -3" in captured.err


def test_cli_validate_subcommand(tmp_path, capsys):
    from sim.cli import main

    assert main(["validate", str(write(tmp_path, GOOD))]) == 0
    assert "name: paper-16m" in capsys.readouterr().out


# ------------------------------------------------------------------ docs


def _field_paths(model: type[pydantic.BaseModel], prefix: str = "") -> set[str]:
    """Dotted names of every schema field, through nested and union-member models.

    Fields of the token distributions are named ``distribution.<field>``: docs/config.md
    documents that mapping once for both ``unique_tokens`` and ``output_tokens``.
    """
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(f"{prefix}{name}")
        for sub in _models_in(info.annotation):
            inner = "distribution." if sub.__name__.endswith("Dist") else f"{prefix}{name}."
            names |= _field_paths(sub, inner)
    return names


def _models_in(annotation) -> list[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def test_docs_cover_every_field():
    docs = (REPO / "docs" / "config.md").read_text()
    documented = set(re.findall(r"`([A-Za-z0-9_.]+)`", docs))
    missing = sorted(p for p in _field_paths(ExperimentConfig) if p not in documented)
    assert not missing, f"docs/config.md lacks: {missing}"


def test_a_trace_brings_its_own_sizes_and_end(tmp_path):
    """With trace arrivals, unique/output tokens and the run's bound may be left out; any
    other arrival kind still needs them."""
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2023-11-16 18:15:46.0,100,5\n2023-11-16 18:15:47.5,300,7\n")
    data = good_dict()
    data["workload"]["arrivals"] = {"kind": "trace", "path": str(trace), "format": "azure"}
    del data["workload"]["unique_tokens"], data["workload"]["output_tokens"]
    data["workload"]["shared"]["tokens"] = "1Mi"  # fits the 4 shared nodes
    data["run"] = {"seed": 1}
    cfg = config_from_dict(data)
    from sim.config import resolve

    exp = resolve(cfg)
    assert [r.unique_tokens for r in exp.workload.requests] == [100, 300]
    assert exp.sizes.unique_tokens_mean == 200
    data["workload"]["arrivals"] = {"kind": "poisson", "rate_per_s": 5}
    message = errors_of(data)
    assert "workload.unique_tokens: missing; required unless workload.arrivals is a trace" in message
    assert "run.requests: missing" in message
