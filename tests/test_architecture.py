"""The layout holds: no import cycles, the layers contract, and a new serving system is one
class registered in ``workloads.systems`` that ``run`` and ``analyze`` pick up unchanged."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import networkx as nx
import pytest

from hw.ops import DecodeAttention
from sim.analytic import scenario
from sim.analytic.sweeps import analyze
from sim.config import config_from_dict, resolve
from sim.run import run_simulation
from tests.small_config import small_config
from workloads.models import ModelSpec
from workloads.systems import (
    ServingSystem,
    available_systems,
    register_system,
    unregister_system,
)
from workloads.systems.ops import StepOp, attention_kwargs

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "hw", "workloads", "traces")


def test_no_import_cycles_between_modules() -> None:
    """Every import of the project (type-checking ones too) forms a DAG of modules."""
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    g = nx.DiGraph()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            g.add_edge(module, imported)
    # a package's __init__ importing its own submodules is not a cycle of code
    g.remove_edges_from([(a, b) for a, b in list(g.edges) if b.startswith(a + ".")])
    cycles = list(nx.simple_cycles(g))
    assert cycles == [], f"import cycles: {cycles[:5]}"


@pytest.mark.skipif(shutil.which("lint-imports") is None and
                    not (Path(sys.executable).parent / "lint-imports").exists(),
                    reason="import-linter is not installed (pip install -e '.[dev]')")
def test_layers_contract_is_kept() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


class DenseCopy(ServingSystem):
    """A toy system (not shipped): every request reads a private copy of the corpus with
    one decode attention, like vanilla, but keeps one extra copy resident per replica."""

    name = "toy_dense_copy"
    description = "test-only system"
    carries_shared_kv = True

    def attention_ops(self, model: ModelSpec, precision: str, batch: int, unique_tokens: int,
                      shared_tokens: int, *, keep_fraction: float, chunk_tokens: int,
                      shared_queries: int, shared_nodes: int, tp: int) -> list[StepOp]:
        return [StepOp("attention", "unique_attention", "unique",
                       DecodeAttention(**attention_kwargs(model, precision), batch=batch,
                                       kv_tokens=shared_tokens + unique_tokens))]

    def corpus_prefill_ops(self, model: ModelSpec, precision: str, tokens: int,
                           shared_tokens: int, *, keep_fraction: float, tp: int) -> list[StepOp]:
        return []

    def resident_shared_bytes(self, model: ModelSpec, precision: str, corpus_tokens: int,
                              chunks: int) -> float:
        return corpus_tokens * model.kv_bytes_per_token(precision)


@pytest.fixture()
def toy_system():
    register_system(DenseCopy)
    yield DenseCopy.name
    unregister_system(DenseCopy.name)


def test_a_registered_toy_system_runs_through_run_and_analyze(toy_system: str) -> None:
    assert toy_system in available_systems()
    data = small_config("toy", system=toy_system, **{"run.requests": 6})
    cfg = config_from_dict(data)
    result = run_simulation(cfg, write=False, progress=False)
    s = result.summary
    assert s["system"] == toy_system
    assert s["requests_completed"] == 6
    # what the toy keeps resident is what the engine reserved: the corpus once per replica
    exp = resolve(cfg, with_workload=False)
    kvb = exp.model.kv_bytes_per_token(exp.precision)
    assert s["memory"]["resident_shared_gib"] * 2**30 == pytest.approx(2**18 * kvb, abs=1)
    # not disaggregated: its shared nodes sit unused, and the summary says why
    assert any("shared node(s) unused" in n for n in s["notes"])
    # the closed form evaluates every registered system, the toy included
    sc = scenario(exp)
    result = analyze(sc, 4, [1, 4], [2**18])
    assert toy_system in [row["system"] for row in result["table"]]


def test_moska_only_comparisons_are_by_registry_not_by_name() -> None:
    """No module outside workloads/systems compares a system's name with a literal."""
    offenders = []
    for path in sorted((ROOT / "sim").rglob("*.py")) + sorted((ROOT / "workloads").rglob("*.py")):
        if "systems" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ('== "moska"', "== 'moska'", '== "vanilla"', 'system == "'):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert offenders == []
