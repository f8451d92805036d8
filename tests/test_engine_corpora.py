"""Workload-defined corpora (a Mooncake trace): each corpus keeps its own size in the
engine: its own chunks on the shared nodes, its own routing, its own share of HBM."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.engine.experiment import make_experiment
from sim.run import run_simulation, simulate
from workloads.request import RequestSpec

MOONCAKE = Path(__file__).resolve().parents[1] / "data/mooncake-fast25/conversation_trace.jsonl"
CHUNK = 2048


def _requests(sizes: tuple[int, ...], n: int) -> list[RequestSpec]:
    """Requests cycling over the corpora, every fourth sharing nothing."""
    reqs = []
    for i in range(n):
        c = i % len(sizes)
        shared = 0 if i % 4 == 3 else sizes[c]
        reqs.append(RequestSpec(i, i * 2_000_000, 256 + 64 * (i % 5), 2 + i % 7, c, shared))
    return reqs


def test_each_corpus_routes_over_its_own_chunks() -> None:
    sizes = (3 * CHUNK, 10 * CHUNK, 512)  # 3, 10 and 1 chunk(s)
    chunks = (3, 10, 1)
    reqs = _requests(sizes, 60)
    # keep_fraction 1: every query keeps all of its corpus's chunks, so the pairs are exact
    spec = make_experiment(keep_fraction=1.0, corpus_tokens=sizes, corpora=len(sizes),
                     chunk_tokens=CHUNK, requests=len(reqs))
    r = simulate(spec.with_requests(reqs))
    assert r.summary["requests_completed"] == len(reqs)
    nodes = r.cluster.shared
    assert sum(n.local_chunks for n in nodes) == sum(chunks)
    # a decode step after the prefill routes each sharing request's query to every chunk
    # of its own corpus once (step granularity: one message per step)
    expected = sum((q.output_tokens - 1) * chunks[q.corpus] for q in reqs if q.shared_tokens)
    assert sum(n.launch_pairs for n in nodes) == expected


def test_shared_hbm_counts_every_corpus_once() -> None:
    sizes = (3 * CHUNK, 10 * CHUNK, 512)
    spec = make_experiment(corpus_tokens=sizes, corpora=3, chunk_tokens=CHUNK, shared_nodes=2)
    kvb = spec.model.kv_bytes_per_token(spec.precision)
    plan = spec.memory
    # 14 chunks striped over 2 nodes: 7 chunk slots each
    assert plan.shared_kv_per_shared_node_bytes == pytest.approx(7 * CHUNK * kvb, abs=1)
    with pytest.raises(ValueError, match="read off the workload's trace"):
        make_experiment(corpus_tokens=(2**40,), corpora=1, chunk_tokens=CHUNK)


@pytest.mark.skipif(not MOONCAKE.exists(), reason=f"real trace not found at {MOONCAKE}")
def test_mooncake_run_uses_the_traces_corpora(tmp_path: Path) -> None:
    from sim.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "workloads/default.yaml", {
        "workload.arrivals": {"kind": "trace", "path": str(MOONCAKE), "format": "mooncake"},
        "workload.shared": {"chunk_tokens": 512}, "run.requests": 120})  # source: trace
    r = run_simulation(cfg, progress=False, write=False)
    sharing = r.summary["sharing"]
    spec = r.cluster.experiment
    assert spec.corpus.corpus_tokens is not None and len(spec.corpus.corpus_tokens) == sharing["corpora"]
    assert sum(spec.corpus.corpus_tokens) == sharing["corpus_tokens_total"]
    assert r.summary["requests_completed"] == 120
