"""Micro-batch ping-pong (``batching.microbatches: 2``): a unique node's decode batch in two
halves taking turns on its compute. The simulation against the closed form of ``analyze``
(its two-micro-batch step), conservation of the node's work, and the config's checks."""

from __future__ import annotations

import dataclasses

import pytest

from sim.analytic import evaluate, scenario
from sim.config import config_from_dict, resolve
from sim.engine.experiment import make_experiment
from sim.engine.nodes.pricing import bucket
from sim.run import run_simulation, simulate
from tests.small_config import small_config
from tests.test_serving_model import decode_only
from workloads.request import RequestSpec


def far_and_busy(mb: int, latency_ns: int) -> dict:
    """One unique node decoding 512 short-context requests at once (its projections and FFN
    compute-bound, so half the batch is about half the work) behind a long fabric latency."""
    return decode_only("far", **{
        "cluster.unique": {"nodes": 1, "chip": "moska-unique"},
        "cluster.fabric": {"topology": "switch",
                           "link": {"bandwidth_GBps": 450, "latency_ns": latency_ns}},
        "workload.arrivals": {"kind": "closed_loop", "concurrency": 512},
        "workload.unique_tokens": 512, "workload.output_tokens": 8, "run.requests": 512,
        "batching.window_us": 0, "batching.microbatches": mb})


@pytest.mark.parametrize("name,d", [
    ("moska-small", decode_only("moska-small", **{"batching.microbatches": 2})),
    ("one-node-far-busy", far_and_busy(2, 50_000)),
])
def test_two_micro_batches_agree_with_the_closed_form(name, d) -> None:
    """Decode-only closed loop at concurrency C, micro-batches 2: TPOT and throughput
    within 5% of ``analyze``'s ping-pong step (per layer the longest of both halves'
    compute, one half's cycle and the shared node's two launches)."""
    cfg = config_from_dict(d)
    exp = resolve(cfg, with_workload=False)
    concurrency = cfg.workload.arrivals.concurrency
    point = evaluate(scenario(exp), concurrency)
    assert point.feasible, point.reason
    s = run_simulation(cfg, write=False, progress=False).summary
    assert s["requests_completed"] == cfg.run.requests
    assert s["tpot_ms"]["p50"] == pytest.approx(point.step_latency_ms, rel=0.05)
    assert s["throughput_tokens_per_s"] == pytest.approx(point.throughput_tokens_per_s, rel=0.05)


@pytest.mark.parametrize("latency_ns", [20_000, 50_000])
def test_ping_pong_hides_a_long_round_trip_when_half_the_batch_is_half_the_work(latency_ns) -> None:
    """A compute-bound batch behind a long round trip: one batch waits the round trip out
    every layer; two halves taking turns keep the node busy meanwhile. The step is at
    least 20% shorter, in the simulation and in the closed form alike. (At small batches
    the weights are read once per half and the step gets longer instead: see
    docs/results.md.)"""
    tpot, closed = {}, {}
    for mb in (1, 2):
        cfg = config_from_dict(far_and_busy(mb, latency_ns))
        tpot[mb] = run_simulation(cfg, write=False, progress=False).summary["tpot_ms"]["p50"]
        closed[mb] = evaluate(scenario(resolve(cfg, with_workload=False)), 512).step_latency_ms
    assert tpot[2] < 0.8 * tpot[1]
    assert closed[2] < 0.8 * closed[1]
    assert tpot[1] == pytest.approx(closed[1], rel=0.05)


def test_the_node_does_both_halves_work_exactly_once() -> None:
    """Busy time of a unique node with two micro-batches is, step by step, the priced work
    of its two halves (each at its size and mean context) and of nothing else; and a step
    is shorter than the two halves' chains run one after the other."""
    base = dict(requests=8, unique_nodes=1, shared_nodes=1, shared_tokens=2**18,
                chunk_tokens=2048, window_ns=0, granularity="layer", microbatches=2)
    reqs = [RequestSpec(i, 0, 4096, 5, prefill_tokens=0) for i in range(8)]
    r = simulate(make_experiment(**base).with_requests(reqs))
    node = r.cluster.unique[0]
    pricer = node.pricer
    L = pricer.layers
    busy = 0
    for done in range(5):  # every request decodes 5 tokens together: 5 steps of 4 + 4
        half = pricer.decode(4, bucket(4096 + done), bucket(2**18))
        busy += 2 * ((half.pre_ns + half.overlap_ns + half.post_ns) * L + half.step_ns)
    assert node.steps == 5
    assert node.busy_ns == busy
    step_ns = (r.cluster.log.done_ns[0] - 0) / 5
    one = simulate(make_experiment(**{**base, "microbatches": 1}).with_requests(reqs))
    assert step_ns < 2 * (one.cluster.log.done_ns[0] / 5)


def test_micro_batches_are_checked() -> None:
    with pytest.raises(ValueError, match="batching.microbatches"):
        config_from_dict(small_config(**{"batching.microbatches": 3}))
    with pytest.raises(ValueError, match="batching.microbatches.*faults"):
        config_from_dict(small_config(**{
            "batching.microbatches": 2,
            "faults": [{"kind": "fail", "target": "shared0", "at_s": 0.1, "duration_s": 0.1}]}))


def test_a_busy_run_with_micro_batches_attributes_every_decode_nanosecond() -> None:
    """Prefill chunks ride with the first half; the breakdown still sums to the token-
    weighted TPOT and the run's invariants hold."""
    cfg = config_from_dict(small_config("mb-busy", **{
        "batching.microbatches": 2, "run.granularity": "layer", "run.requests": 30}))
    r = run_simulation(cfg, write=False, progress=False)
    s = r.summary
    assert s["requests_completed"] == 30 and all(s["invariants"].values())
    log = r.cluster.log
    gen = log.generated
    decode_ns = float((log.done_ns - log.first_ns)[gen > 1].sum())
    per_token_ms = decode_ns / 1e6 / float((gen - 1)[gen > 1].sum())
    assert sum(s["time_breakdown_per_token_ms"].values()) == pytest.approx(per_token_ms, rel=1e-9)
    assert dataclasses.asdict(resolve(cfg, with_workload=False).batching)["microbatches"] == 2
