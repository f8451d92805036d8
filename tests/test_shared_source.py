"""``workload.shared.source``: where the shared corpora come from. A Mooncake trace brings
its own (``trace``, the default there; ``tokens`` and ``corpora`` are errors), synthetic
arrivals and Azure traces take them from the config (``config``), and ``none`` turns the
shared context off; every bad form is one error naming the file, the field and the line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.cli.validate import validate_main
from sim.config import ConfigError, config_from_dict, load_config, resolve, with_overrides
from workloads.arrivals import build_arrivals, get_arrivals
from workloads.distributions import TokenDistribution

REPO = Path(__file__).resolve().parents[1]
MOONCAKE_YAML = REPO / "workloads" / "mooncake.yaml"

# three prompts: the first two share blocks 0 and 1, all three block 0
ROWS = [{"timestamp": 0, "input_length": 1100, "output_length": 5, "hash_ids": [0, 1, 2]},
        {"timestamp": 3, "input_length": 1200, "output_length": 4, "hash_ids": [0, 1, 3]},
        {"timestamp": 7, "input_length": 600, "output_length": 9, "hash_ids": [0, 4]}]
UNSHARED = [{"timestamp": 0, "input_length": 700, "output_length": 3, "hash_ids": [5, 6]},
            {"timestamp": 2, "input_length": 300, "output_length": 2, "hash_ids": [7]}]

CONFIG = """\
name: src
cluster:
  unique: {nodes: 2, chip: moska-unique}
  shared: {nodes: 2, chip: moska-shared}
  fabric: {link: {bandwidth_GBps: 400, latency_ns: 600}}
workload:
  arrivals: {kind: trace, format: mooncake, path: t.jsonl}
SHARED
run: {seed: 0, granularity: step}
"""


def setup(tmp_path: Path, shared: str, rows=ROWS, arrivals: str | None = None) -> Path:
    """An experiment YAML over a small Mooncake trace; ``shared`` is the workload's
    ``shared:`` line (or nothing)."""
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = CONFIG.replace("SHARED\n", f"  {shared}\n" if shared else "")
    if arrivals is not None:
        text = text.replace("{kind: trace, format: mooncake, path: t.jsonl}", arrivals)
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def error_lines(path: Path, overrides=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value).splitlines()


# ------------------------------------------------------------------ the new form


def test_shipped_mooncake_config_takes_the_corpora_from_the_trace():
    cfg = load_config(MOONCAKE_YAML)
    shared = cfg.workload.shared
    assert (shared.source, shared.tokens, shared.corpora) == ("trace", None, None)
    assert (shared.chunk_tokens, shared.keep_fraction) == (512, 0.25)
    written = yaml.safe_load(MOONCAKE_YAML.read_text())["workload"]["shared"]
    assert written["source"] == "trace" and "tokens" not in written  # the new form, shipped
    resolved = cfg.to_dict()["workload"]["shared"]
    assert resolved == {"source": "trace", "chunk_tokens": 512, "keep_fraction": 0.25,
                        "popularity": "uniform"}
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("shared", ["", "shared: {}", "shared:", "shared: {source: trace}",
                                    "shared: {source: null}"])
def test_trace_source_is_the_default_with_a_mooncake_trace(tmp_path, shared):
    cfg = load_config(setup(tmp_path, shared))
    assert cfg.workload.shared.source == "trace"
    assert cfg.workload.shared.tokens is None and cfg.workload.shared.corpora is None
    assert cfg == load_config(setup(tmp_path, "shared: {source: trace}"))


def test_trace_source_resolves_to_the_traces_corpora(tmp_path):
    exp = resolve(load_config(setup(tmp_path, "shared: {chunk_tokens: 512}")))
    assert exp.corpus.corpus_tokens == (1024, 512) and exp.corpus.corpora == 2
    assert exp.remote_shared
    assert [(r.shared_tokens, r.unique_tokens) for r in exp.workload.requests] == [
        (1024, 76), (1024, 176), (512, 88)]
    assert exp.workload.sharing["source"] == "mooncake"


def test_a_trace_that_shares_nothing_has_no_shared_context(tmp_path):
    exp = resolve(load_config(setup(tmp_path, "shared: {chunk_tokens: 512}", rows=UNSHARED)))
    assert exp.corpus.tokens == 0 and exp.corpus.corpus_tokens is None
    assert not exp.remote_shared


def test_source_none_runs_the_trace_without_a_shared_context(tmp_path):
    cfg = load_config(setup(tmp_path, "shared: {source: none, chunk_tokens: 512}"))
    assert cfg.to_dict()["workload"]["shared"]["source"] == "none"
    assert "tokens" not in cfg.to_dict()["workload"]["shared"]
    exp = resolve(cfg)
    assert exp.corpus.tokens == 0 and exp.corpus.corpus_tokens is None
    assert not exp.remote_shared and exp.workload.sharing is None
    # each prompt is wholly its request's own context
    assert [(r.unique_tokens, r.shared_tokens) for r in exp.workload.requests] == [
        (1100, None), (1200, None), (600, None)]
    assert any("source none" in n for n in exp.workload.notes)
    # switching a resolved trace config off needs no other change
    off = with_overrides(load_config(setup(tmp_path, "")), {"workload.shared.source": "none"})
    assert off.workload.shared.source == "none"


def test_source_none_with_synthetic_arrivals_is_no_shared_context(tmp_path):
    path = setup(tmp_path, "shared: {source: none}",
                 arrivals="{kind: poisson, rate_per_s: 5}\n  unique_tokens: 1Ki\n"
                          "  output_tokens: 8")
    cfg = load_config(path, {"run.requests": 4})
    exp = resolve(cfg)
    assert exp.corpus.tokens == 0 and not exp.remote_shared
    assert config_from_dict(cfg.to_dict()) == cfg


def test_config_source_keeps_its_resolved_form():
    """Without a Mooncake trace the resolved config reads as before ``source`` existed."""
    cfg = load_config(REPO / "workloads" / "default.yaml")
    shared = cfg.to_dict()["workload"]["shared"]
    assert "source" not in shared and shared["corpora"] == 1 and shared["tokens"] == 2**20
    assert cfg.workload.shared.source == "config"
    explicit = load_config(REPO / "workloads" / "default.yaml", {"workload.shared.source": "config"})
    assert explicit == cfg


def test_trace_arrivals_say_whether_they_bring_corpora():
    trace = get_arrivals("trace")
    assert trace.defines_corpora({"format": "mooncake"})
    assert not trace.defines_corpora({"format": "azure"})
    assert not get_arrivals("poisson").defines_corpora({"rate_per_s": 1.0})


def test_trace_corpora_false_leaves_mooncake_prompts_unique(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in ROWS))

    def plan(**kw):
        return build_arrivals("trace", unique_tokens=TokenDistribution.fixed(1),
                              output_tokens=TokenDistribution.fixed(1),
                              rng_arrivals=np.random.default_rng(0),
                              rng_sizes=np.random.default_rng(1), path=str(f),
                              format="mooncake", **kw)

    shared, alone = plan(), plan(trace_corpora=False)
    assert shared.corpus_tokens == (1024, 512) and shared.sharing is not None
    assert alone.corpus_tokens is None and alone.sharing is None
    assert [r.unique_tokens for r in alone.requests] == [1100, 1200, 600]
    assert [r.arrival_ns for r in alone.requests] == [r.arrival_ns for r in shared.requests]
    assert [r.output_tokens for r in alone.requests] == [r.output_tokens for r in shared.requests]


# ------------------------------------------------------------------ bad forms


@pytest.mark.parametrize("shared,field,message", [
    ("shared: {tokens: 1Mi, chunk_tokens: 512}", "workload.shared.tokens",
     ("not used with source 'trace': the corpora and their sizes come from the trace; remove "
      "it (source 'none' turns the shared context off) (line 8)")),
    ("shared: {tokens: 0}", "workload.shared.tokens",
     "not used with source 'trace': the corpora and their sizes come from the trace"),
    ("shared: {source: trace, corpora: 3}", "workload.shared.corpora",
     "not used with source 'trace': the corpora and their sizes come from the trace"),
    ("shared: {source: config, tokens: 1Mi}", "workload.shared.source",
     ("expected 'trace' (the default) or 'none' with a Mooncake trace, whose prompts' shared "
      "blocks are the corpora; got 'config' (line 8)")),
    ("shared: {source: none, tokens: 1Mi}", "workload.shared.tokens",
     "not used with source 'none': there is no shared context; remove it (line 8)"),
    ("shared: {source: trcae}", "workload.shared.source",
     "expected one of 'config', 'trace', 'none', got 'trcae' (did you mean 'trace'?) (line 8)"),
    ("shared: none", "workload.shared",
     "expected a mapping, got 'none' (no shared context: {source: none}) (line 8)"),
])
def test_bad_shared_forms_with_a_mooncake_trace(tmp_path, shared, field, message):
    path = setup(tmp_path, shared)
    lines = error_lines(path)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: {field}: ")
    assert message in lines[0]


@pytest.mark.parametrize("arrivals,shared,field,message", [
    ("{kind: poisson, rate_per_s: 5}", "shared: {source: trace}", "workload.shared.source",
     ("expected 'config' or 'none' with workload.arrivals kind 'poisson' (only a Mooncake "
      "trace brings its own corpora), got 'trace'")),
    ("{kind: trace, format: azure, path: t.csv}", "shared: {source: trace, tokens: 1Mi}",
     "workload.shared.source",
     "expected 'config' or 'none' with workload.arrivals format 'azure'"),
    ("{kind: poisson, rate_per_s: 5}", "shared: {chunk_tokens: 512}", "workload.shared.tokens",
     "missing; expected a size >= 0 (the tokens of each corpus) with source 'config'"),
    ("{kind: poisson, rate_per_s: 5}", "", "workload.shared", "missing required field"),
])
def test_bad_shared_forms_with_other_arrivals(tmp_path, arrivals, shared, field, message):
    (tmp_path / "t.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                    "2023-11-16 18:15:46.0,100,5\n")
    sizes = "\n  unique_tokens: 1Ki\n  output_tokens: 8" if "poisson" in arrivals else ""
    path = setup(tmp_path, shared, arrivals=arrivals + sizes)
    lines = error_lines(path, {"run.requests": 4})
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: {field}: ") and message in lines[0]


def test_cached_fraction_needs_the_mooncake_corpora_off(tmp_path):
    """A Mooncake prompt's shared blocks are its corpus and the rest is new, so a resident
    fraction is an error with the trace's corpora; with source none it applies."""
    arrivals = "{kind: trace, format: mooncake, path: t.jsonl, cached_fraction: 0.5}"
    path = setup(tmp_path, "", arrivals=arrivals)
    lines = error_lines(path)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: workload.arrivals.cached_fraction: expected 0 with "
                               "a Mooncake trace's own corpora")
    assert lines[0].endswith("got 0.5 (line 7)")
    load_config(setup(tmp_path, "shared: {source: none}", arrivals=arrivals))


def test_validate_cli_accepts_the_new_form_and_names_the_bad_one(tmp_path, capsys):
    assert validate_main([str(MOONCAKE_YAML)]) == 0
    out = capsys.readouterr().out
    assert "source: trace" in out
    resolved = yaml.safe_load(out)["workload"]["shared"]
    assert "tokens" not in resolved and "corpora" not in resolved
    assert validate_main([str(MOONCAKE_YAML), "--set", "workload.shared.tokens=1Mi"]) == 2
    err = capsys.readouterr().err
    assert (f"{MOONCAKE_YAML}: workload.shared.tokens: not used with source 'trace'" in err
            and "(set by override)" in err)
