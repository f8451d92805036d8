"""The serving model: decode-only requests over resident context, chunked prefill beside
decode, decode-first shared nodes, and agreement of decode-only closed-loop runs with the
closed form of ``moska-sim analyze``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sim.analytic import evaluate, scenario
from sim.config import config_from_dict, resolve
from sim.engine.experiment import make_experiment
from sim.run import run_simulation, simulate
from tests.small_config import small_config
from workloads.request import RequestSpec


def decode_only(name: str, **over) -> dict:
    """A closed-loop, decode-only config at layer granularity: every request's context is
    resident, so the run is the steady state the closed form describes."""
    d = small_config(name, **{
        "workload.arrivals": {"kind": "closed_loop", "concurrency": 16},
        "workload.prefill_tokens": 0,
        "workload.unique_tokens": 8192,
        "workload.output_tokens": 24,
        "run.requests": 16,
        "run.granularity": "layer",
        "batching.window_us": 20,
        **over})
    return d


@pytest.mark.parametrize("name,over", [
    ("moska-small", {}),
    ("moska-h200-b200", {"cluster.unique": {"nodes": 2, "chip": "h200"},
                         "cluster.shared": {"nodes": 2, "chip": "b200"},
                         "workload.shared": {"tokens": "1Mi", "chunk_tokens": 4096,
                                             "keep_fraction": 0.25}}),
    ("shared-gemm", {"system": "shared_gemm", "cluster.shared": {"nodes": 0, "chip": "moska-shared"}}),
])
def test_decode_only_closed_loop_agrees_with_the_closed_form(name, over) -> None:
    """TPOT and throughput of a decode-only closed loop at concurrency C against
    ``analyze``'s step time and C / step at that concurrency, within 10%."""
    cfg = config_from_dict(decode_only(name, **over))
    exp = resolve(cfg, with_workload=False)
    concurrency = cfg.workload.arrivals.concurrency
    # the replicas the run has (the closed form would otherwise pick the best tp)
    sc = dataclasses.replace(scenario(exp), baseline_tp=exp.cluster.unique.tp)
    point = evaluate(sc, concurrency)
    assert point.feasible, point.reason
    s = run_simulation(cfg, write=False, progress=False).summary
    assert s["requests_completed"] == 16
    tpot_ms = s["tpot_ms"]["p50"]
    assert tpot_ms == pytest.approx(point.step_latency_ms, rel=0.10)
    # every request decodes the whole run: tokens / time is C / step
    assert s["throughput_tokens_per_s"] == pytest.approx(
        point.throughput_tokens_per_s, rel=0.10)


def test_decode_only_first_token_comes_from_the_first_decode_step() -> None:
    """No prefill: TTFT is one decode step, and a request makes exactly its output tokens
    in that many steps."""
    exp = make_experiment(requests=1, unique_nodes=1, shared_nodes=1, window_ns=0,
                          shared_tokens=2**16, chunk_tokens=2048)
    req = RequestSpec(0, 0, 4096, 5, prefill_tokens=0)
    r = simulate(exp.with_requests([req]))
    log = r.cluster.log
    ttft = log.first_ns[0] - log.arrival_ns[0]
    tpot = (log.done_ns[0] - log.first_ns[0]) / 4
    assert ttft == pytest.approx(tpot, rel=1e-6)  # every step the same shape
    assert r.summary["unique_nodes"]["unique0"]["steps"] == 5
    assert r.summary["unique_nodes"]["unique0"]["prefill_tokens"] == 0


def test_resident_context_is_not_prefilled() -> None:
    """Of 8192 unique tokens, 1024 new: the node prefills 1024, and attends to all 8192."""
    exp = make_experiment(requests=1, unique_nodes=1, shared_nodes=1, shared_tokens=2**16,
                          chunk_tokens=2048, prefill_chunk_tokens=None)
    full = simulate(exp.with_requests([RequestSpec(0, 0, 8192, 3)]))
    part = simulate(exp.with_requests([RequestSpec(0, 0, 8192, 3, prefill_tokens=1024)]))
    assert part.summary["unique_nodes"]["unique0"]["prefill_tokens"] == 1024
    assert full.summary["unique_nodes"]["unique0"]["prefill_tokens"] == 8192
    assert part.cluster.log.first_ns[0] < full.cluster.log.first_ns[0] / 2
    # decode steps see the same context either way
    tp = lambda r: (r.cluster.log.done_ns[0] - r.cluster.log.first_ns[0]) / 2  # noqa: E731
    assert tp(part) == pytest.approx(tp(full), rel=1e-9)


def _stalls(chunk: int | None, policy: str = "decode_first") -> tuple[float, float]:
    """A decode batch running when long prompts arrive: (longest inter-token gap of the
    decoding requests, ms; TPOT p99, ms)."""
    exp = make_experiment(requests=20, unique_nodes=1, shared_nodes=1, shared_tokens=2**18,
                          chunk_tokens=2048, prefill_chunk_tokens=chunk, shared_policy=policy,
                          granularity="layer", window_ns=0)
    reqs = [RequestSpec(i, 0, 2048, 200, prefill_tokens=0) for i in range(16)]
    reqs += [RequestSpec(16 + i, 5_000_000 * (i + 1), 16384, 4) for i in range(4)]
    r = simulate(exp.with_requests(reqs))
    times, counts = r.cluster.records.tokens.arrays()
    # steps that made tokens for the 16 decoders: gaps between consecutive steps
    steps = times[counts >= 16]
    return float(np.diff(steps).max() / 1e6), r.summary["tpot_ms"]["p99"]


def test_chunked_prefill_bounds_the_stall_of_running_requests() -> None:
    """Whole 16Ki prompts stall every decoding request for a whole prompt's prefill; a
    2Ki token budget per step stalls them for at most one chunk's worth."""
    whole_gap, _ = _stalls(None)
    chunk_gap, _ = _stalls(2048)
    assert chunk_gap < whole_gap / 3


def test_decode_first_keeps_decode_ahead_of_prefill_work_at_shared_nodes() -> None:
    """With prefill chunks queued at the shared node, decode queries go first: TPOT p99 is
    no worse than in arrival order, and the stalls no longer."""
    df_gap, df_p99 = _stalls(2048, "decode_first")
    fifo_gap, fifo_p99 = _stalls(2048, "fifo")
    assert df_p99 <= fifo_p99 * 1.001
    assert df_gap <= fifo_gap * 1.001


def test_overlap_hides_unique_attention_behind_the_round_trip() -> None:
    """MoSKA at batch 1: with overlap a step is shorter by exactly min(unique attention,
    round trip) per layer than without (the closed form says the same)."""
    base = dict(requests=1, unique_nodes=1, shared_nodes=1, shared_tokens=2**18,
                chunk_tokens=2048, window_ns=0, granularity="layer")
    req = [RequestSpec(0, 0, 32768, 6, prefill_tokens=0)]
    on = simulate(make_experiment(overlap=True, **base).with_requests(req))
    off = simulate(make_experiment(overlap=False, **base).with_requests(req))
    t_on = (on.cluster.log.done_ns[0] - on.cluster.log.first_ns[0]) / 5
    t_off = (off.cluster.log.done_ns[0] - off.cluster.log.first_ns[0]) / 5
    assert t_on < t_off
    sc_on = scenario(make_experiment(overlap=True, **base))
    sc_off = scenario(make_experiment(overlap=False, **base))
    sc_on = type(sc_on)(**{**sc_on.__dict__, "unique_tokens": 32768})
    sc_off = type(sc_off)(**{**sc_off.__dict__, "unique_tokens": 32768})
    saved_closed = (evaluate(sc_off, 1).step_latency_ms - evaluate(sc_on, 1).step_latency_ms) * 1e6
    assert t_off - t_on == pytest.approx(saved_closed, rel=0.02)


def _dedicated(placement: str):  # noqa: ANN202
    """A busy MoSKA run: Poisson arrivals of 4Ki-token prompts, on_unique or with two
    dedicated H100 prefill nodes."""
    over = {"run.requests": 40, "batching.prefill_placement": placement,
            "workload.unique_tokens": 4096, "workload.arrivals.rate_per_s": 60}
    if placement == "dedicated":
        over["cluster.prefill"] = {"nodes": 2, "chip": "h100-sxm"}
    return run_simulation(config_from_dict(small_config("ded", **over)), write=False,
                          progress=False)


def test_dedicated_prefill_nodes_prefill_move_the_kv_and_leave_decode_alone() -> None:
    on_unique, dedicated = _dedicated("on_unique"), _dedicated("dedicated")
    s = dedicated.summary
    assert s["requests_completed"] == 40 and all(s["invariants"].values())
    nodes = s["prefill_nodes"]
    # every prompt was prefilled on a prefill node, none on a unique node
    assert sum(n["handed_over"] for n in nodes.values()) == 40
    assert sum(n["prefill_tokens"] for n in nodes.values()) == 40 * 4096
    assert all(u["prefill_tokens"] == 0 for u in s["unique_nodes"].values())
    # the KV moved is each prompt's tokens x KV bytes per token (Llama 3.1 8B fp8: 64 KiB)
    kvb = 2 * 8 * 128 * 32
    assert sum(n["kv_bytes_sent"] for n in nodes.values()) == 40 * 4096 * kvb
    # decode no longer shares steps with prefill chunks: no prefill stall, shorter tail
    assert s["time_breakdown_per_token_ms"]["prefill_stall"] == 0.0
    assert on_unique.summary["time_breakdown_per_token_ms"]["prefill_stall"] > 0
    assert s["tpot_ms"]["p99"] < on_unique.summary["tpot_ms"]["p99"]
    # the per-token phases still sum to the token-weighted TPOT (the KV's trip included)
    log = dedicated.cluster.log
    gen = log.generated
    decode_ns = float((log.done_ns - log.first_ns)[gen > 1].sum())
    weighted_ms = decode_ns / 1e6 / float((gen - 1)[gen > 1].sum())
    assert sum(s["time_breakdown_per_token_ms"].values()) == pytest.approx(weighted_ms, rel=1e-9)


def test_dedicated_placement_needs_prefill_nodes() -> None:
    with pytest.raises(ValueError, match="cluster.prefill.nodes"):
        config_from_dict(small_config(**{"batching.prefill_placement": "dedicated"}))
