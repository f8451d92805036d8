"""At low load with an uncontended fabric the event simulation must reproduce the closed
form: one request alone, ``window_us: 0``, one unique and one shared node. Every system,
both granularities: the simulated decode step (TPOT) and TTFT equal the sum of the
``hw`` prices of the same op lists (and ``sim.analytic.evaluate``) within 2 %."""

from __future__ import annotations

import dataclasses

import pytest

from hw.compute import kernel_cost
from hw.link import transfer_cost
from hw.ops import SharedAttention, Transfer
from hw.specs import LinkSpec
from sim import analytic
from sim.engine.experiment import make_experiment
from sim.run import simulate
from workloads.request import RequestSpec
from workloads.systems import decode_step_ops, prefill_ops

UNIQUE = 4096  # a multiple of the context bucket, so the engine prices this exact shape
OUTPUT = 9
SHARED = 2**20
SYSTEMS = ("vanilla", "prefix_cache", "shared_gemm", "moska")


def spec_for(system: str, granularity: str, shared_nodes: int = 1):
    return make_experiment(system=system, unique_nodes=1, shared_nodes=shared_nodes,
                           window_ns=0, shared_tokens=SHARED, chunk_tokens=2048,
                           keep_fraction=0.25, granularity=granularity, requests=1,
                           max_batch=64, prefill_chunk_tokens=None)


def path_link(spec) -> LinkSpec:
    """The unique->shared route as one link: 2 hops through the switch."""
    return LinkSpec("path", spec.cluster.fabric.bandwidth_GBps, 2 * spec.cluster.fabric.latency_ns + spec.cluster.fabric.switch_latency_ns)


def op_ns(o, spec) -> int:
    if o.where == "fabric":
        assert isinstance(o.op, Transfer)
        return transfer_cost(o.op, path_link(spec)).time_ns
    chip = spec.cluster.shared.chip if o.where == "shared" else spec.cluster.unique.chip
    return kernel_cost(o.op, chip).time_ns


def overlapped_sum(ops, spec) -> int:
    """The ops' serial sum, less (per layer, when ops leave the node and overlap is on) the
    shorter of the unique attention and the round trip, which run at the same time."""
    L = spec.model.layers
    total = sum(op_ns(o, spec) * (L if o.per == "layer" else 1) for o in ops)
    if spec.batching.overlap and any(o.where == "shared" for o in ops):
        own = sum(op_ns(o, spec) for o in ops
                  if o.where == "unique" and o.phase == "unique_attention")
        trip = sum(op_ns(o, spec) for o in ops if o.where in ("shared", "fabric"))
        total -= L * min(own, trip)
    return total


def analytic_step_ns(spec) -> int:
    ops = decode_step_ops(spec.model, spec.system.name, spec.precision, 1, UNIQUE, SHARED,
                          keep_fraction=spec.corpus.keep_fraction, chunk_tokens=spec.corpus.chunk_tokens,
                          shared_queries=1, shared_nodes=1)
    return overlapped_sum(ops, spec)


def analytic_prefill_ns(spec) -> int:
    return overlapped_sum(prefill_ops(spec.model, spec.system.name, spec.precision, UNIQUE,
                                      SHARED, keep_fraction=spec.corpus.keep_fraction), spec)


def run_one(spec):
    r = simulate(spec.with_requests([RequestSpec(0, 0, UNIQUE, OUTPUT)]))
    log = r.cluster.log
    tpot = (log.done_ns[0] - log.first_ns[0]) / (OUTPUT - 1)
    return r, tpot, log.first_ns[0]


@pytest.mark.parametrize("granularity", ["step", "layer"])
@pytest.mark.parametrize("system", SYSTEMS)
def test_one_request_matches_the_op_sum(system, granularity):
    spec = spec_for(system, granularity)
    r, tpot, ttft = run_one(spec)
    step = analytic_step_ns(spec)
    assert tpot == pytest.approx(step, rel=0.02)
    assert ttft == pytest.approx(analytic_prefill_ns(spec), rel=0.02)
    s = r.summary
    assert s["tpot_ms"]["mean"] == pytest.approx(step / 1e6, rel=0.02)
    decode_tps = (OUTPUT - 1) / ((r.cluster.log.done_ns[0] - ttft) / 1e9)
    assert decode_tps == pytest.approx(1e9 / step, rel=0.02)
    assert s["time_breakdown_ms"]["queueing"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("system", SYSTEMS)
def test_one_request_matches_sim_analytic(system):
    """The lead's closed form (sim.analytic.evaluate) at concurrency 1."""
    spec = spec_for(system, "step")
    sc = analytic.Scenario(
        model=spec.model, precision=spec.precision, system=system,
        unique_chip=spec.cluster.unique.chip, unique_nodes=1, shared_chip=spec.cluster.shared.chip,
        shared_nodes=1 if system == "moska" else 0,
        link=LinkSpec("fabric", spec.cluster.fabric.bandwidth_GBps, spec.cluster.fabric.latency_ns),
        unique_tokens=UNIQUE, shared_tokens=SHARED, chunk_tokens=spec.corpus.chunk_tokens,
        keep_fraction=spec.corpus.keep_fraction)
    point = analytic.evaluate(sc, 1)
    assert point.feasible, point.reason
    _, tpot, _ = run_one(spec)
    assert tpot / 1e6 == pytest.approx(point.step_latency_ms, rel=0.02)
    assert 1e9 / tpot == pytest.approx(point.throughput_tokens_per_s, rel=0.02)


def test_moska_breakdown_adds_up_to_the_step():
    """Alone, a decode step's breakdown (per token) sums to the step time."""
    spec = spec_for("moska", "layer")
    r, tpot, _ = run_one(spec)
    per_token = r.summary["time_breakdown_per_token_ms"]
    assert sum(per_token.values()) == pytest.approx(tpot / 1e6, rel=1e-6)
    assert per_token["shared_attention"] > 0 and per_token["fabric"] > 0


def test_moska_shared_prefill_is_split_over_shared_nodes():
    """Two shared nodes each attend the prompt to half the kept corpus."""
    spec = spec_for("moska", "step", shared_nodes=2)
    ops = prefill_ops(spec.model, "moska", spec.precision, UNIQUE, SHARED,
                      keep_fraction=spec.corpus.keep_fraction)
    (shared_op,) = [o.op for o in ops if o.where == "shared"]
    assert isinstance(shared_op, SharedAttention)
    half = dataclasses.replace(shared_op, kv_tokens=shared_op.kv_tokens // 2)
    r = simulate(spec.with_requests([RequestSpec(0, 0, UNIQUE, 1)]))
    busy = r.summary["shared_nodes"]["shared0"]["prefill_busy_s"]
    assert busy * 1e9 == pytest.approx(kernel_cost(half, spec.cluster.shared.chip).time_ns
                                       * spec.model.layers, rel=1e-9)
