"""Multi-GPU nodes: tensor-parallel replicas for every system, their collectives on the
node's internal link, and the HBM reserve for activations and workspace.

The expected figures are written out here from first principles (bytes over a link's
bandwidth plus its latency, HBM capacity x the usable fraction), not from the systems' op
lists: a ring all-reduce of an M-byte tensor over tp GPUs is 2(tp - 1) steps, each moving
M / tp bytes per GPU and paying one link latency; a gather to one GPU (or a scatter from
it) moves (tp - 1)/tp x M through the root's port in one step.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hw.specs import LinkSpec, load_chip
from sim import analytic
from sim.config import load_config
from sim.config.resolve import resolve
from sim.engine.experiment import make_experiment
from sim.run import simulate
from workloads.request import RequestSpec

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("vanilla", "prefix_cache", "shared_gemm", "moska")
UNIQUE = 4096  # a multiple of the context bucket: the engine prices this exact shape
OUTPUT = 9
SHARED = 2**16
ACT = 2  # bf16 activations, queries and partial outputs
STAT = 4  # fp32 log-sum-exp


def experiment(system: str, tp: int, model: str = "llama-3.1-8b", **kw):
    """One replica of ``tp`` H100s (and one H200 shared node for moska), an idle fabric;
    prompts prefilled whole (one chunk), so a prompt's collectives are one prefill's."""
    kw = {"shared_tokens": SHARED, "prefill_chunk_tokens": None, **kw}
    return make_experiment(system=system, model=model, unique_chip="h100-sxm", unique_nodes=tp,
                           tp=tp, shared_chip="h200", shared_nodes=1, chunk_tokens=2048,
                           keep_fraction=0.25, window_ns=0, requests=1, max_batch=64, **kw)


def run_alone(exp, unique: int = UNIQUE, output: int = OUTPUT):
    r = simulate(exp.with_requests([RequestSpec(0, 0, unique, output)]))
    log = r.cluster.log
    return r, (log.done_ns[0] - log.first_ns[0]) / (output - 1)


# ---------------------------------------------------------------- first-principles closed forms


def message_ns(nbytes: float, link: LinkSpec) -> float:
    """One message over a link as the collective library achieves it: its fixed cost per
    message, the one-way latency, and the bytes at the achieved bandwidth (1 GB/s = 1 B/ns)."""
    return link.fixed_ns + link.latency_ns + nbytes / link.bandwidth_GBps


def all_reduce_ns(nbytes: float, tp: int, link: LinkSpec) -> float:
    """Ring all-reduce: 2(tp-1) steps, each one message of nbytes/tp."""
    return 2 * (tp - 1) * message_ns(nbytes / tp, link)


def gather_ns(nbytes: float, tp: int, link: LinkSpec) -> float:
    """Gather to (or scatter from) one GPU: (tp-1)/tp of the tensor through its port."""
    return message_ns((tp - 1) / tp * nbytes, link) if tp > 1 else 0.0


def decode_collective_ns(exp, batch: int = 1) -> float:
    """A decode step's collectives: two all-reduces of batch x hidden per layer, the
    logits' gather, and MoSKA's query gather and partial scatter per layer."""
    m, tp, link = exp.model, exp.cluster.unique.tp, exp.cluster.unique.link
    if tp == 1:
        return 0.0
    per_layer = 2 * all_reduce_ns(batch * m.hidden * ACT, tp, link)
    if exp.system.name == "moska":
        per_layer += gather_ns(batch * m.q_heads * m.head_dim * ACT, tp, link)
        per_layer += gather_ns(batch * m.q_heads * (m.head_dim * ACT + STAT), tp, link)
    return m.layers * per_layer + gather_ns(batch * m.vocab * ACT, tp, link)


def prefill_collective_ns(exp, tokens: int) -> float:
    """A prompt's collectives: the same per-layer all-reduces with m = tokens (and MoSKA's
    gather of the prompt's queries and scatter of their partials); no LM head."""
    m, tp, link = exp.model, exp.cluster.unique.tp, exp.cluster.unique.link
    if tp == 1:
        return 0.0
    per_layer = 2 * all_reduce_ns(tokens * m.hidden * ACT, tp, link)
    if exp.system.name == "moska":
        per_layer += gather_ns(tokens * m.q_heads * m.head_dim * ACT, tp, link)
        per_layer += gather_ns(tokens * m.q_heads * (m.head_dim * ACT + STAT), tp, link)
    return m.layers * per_layer


def test_all_reduce_closed_form_numbers():
    """The formula itself, in numbers: 8B's 8 KiB layer output over NVLink 4 at tp 2 is
    2 steps of (1000 ns + 4096 B / 450 B/ns) = 2018.2 ns; at tp 4, 6 x (1000 + 2048/450)."""
    nvlink = LinkSpec("nvlink4", 450.0, 1000.0)
    assert all_reduce_ns(8192, 2, nvlink) == pytest.approx(2 * (1000 + 4096 / 450))
    assert all_reduce_ns(8192, 4, nvlink) == pytest.approx(6 * (1000 + 2048 / 450))
    assert all_reduce_ns(8192, 1, nvlink) == 0


# ---------------------------------------------------------------- engine and closed form


@pytest.mark.parametrize("granularity", ["step", "layer"])
@pytest.mark.parametrize("tp", [1, 2, 4])
@pytest.mark.parametrize("system", SYSTEMS)
def test_engine_and_closed_form_agree_at_low_load(system, tp, granularity):
    """One request alone on one replica of tp GPUs: the simulated TPOT equals
    ``sim.analytic.evaluate``'s step, and the collectives in both equal the first-principles
    sum above (the op lists round each transfer up to a whole ns)."""
    exp = experiment(system, tp, granularity=granularity)
    r, tpot = run_alone(exp)
    sc = dataclasses.replace(analytic.scenario(exp), unique_tokens=UNIQUE, baseline_tp=tp,
                             shared_nodes=1 if system == "moska" else 0)
    point = analytic.evaluate(sc, 1)
    assert point.feasible, point.reason
    assert (point.tp, point.replicas) == (tp, 1)
    assert tpot / 1e6 == pytest.approx(point.step_latency_ms, rel=0.02)
    per_token = r.summary["time_breakdown_per_token_ms"]
    expected = decode_collective_ns(exp) / 1e6
    assert per_token["collective"] == pytest.approx(expected, rel=2e-3, abs=1e-12)
    assert point.breakdown_ms.get("collective", 0.0) == pytest.approx(expected, rel=2e-3,
                                                                      abs=1e-12)
    # the link's busy time: every decode step's collectives and the prompt's
    busy = r.summary["unique_nodes"]["unique0"]["node_link_busy_s"] * 1e9
    whole = (OUTPUT - 1) * decode_collective_ns(exp) + prefill_collective_ns(exp, UNIQUE)
    assert busy == pytest.approx(whole, rel=2e-3, abs=1e-9)


@pytest.mark.parametrize("system", SYSTEMS)
def test_tensor_parallel_splits_the_weights_it_streams(system):
    """Llama 3.1 70B at batch 1 is memory-bound: each GPU streams 1/tp of the fp8 weights
    per step, so the dense part of a step can never beat weights / (tp x peak HBM
    bandwidth), stays within 2x of it (decode GEMMs reach 60-75% of peak on Hopper: the
    measured cuBLAS profiles, docs/fidelity.md), and halves with tp."""
    chip = load_chip("h100-sxm")
    peak = chip.hbm_bandwidth_GBps  # B/ns
    dense = {}
    for tp in (2, 4):
        exp = experiment(system, tp, model="llama-3.1-70b")
        r, _ = run_alone(exp)
        dense[tp] = r.summary["time_breakdown_per_token_ms"]["other_layers"] * 1e6
        floor = exp.model.weight_bytes("fp8") / tp / peak
        assert floor <= dense[tp] <= 2.0 * floor
    assert 0.5 <= dense[4] / dense[2] <= 0.6


def test_a_slower_node_link_costs_what_its_bandwidth_and_latency_say():
    """A PCIe-5-class link (64 GB/s, the same per-message costs) instead of NVLink 4
    inside a replica: the collectives grow by the formula's difference (each of the step's
    193 transfers is rounded up to a whole ns); nothing else in the step changes."""
    nv = experiment("moska", 2)
    pcie = dataclasses.replace(nv.cluster.unique.link, name="pcie5-x16", bandwidth_GBps=64.0)
    slow = dataclasses.replace(nv, cluster=dataclasses.replace(
        nv.cluster, unique=dataclasses.replace(nv.cluster.unique, link=pcie)))
    (_, t_nv), (_, t_slow) = run_alone(nv), run_alone(slow)
    transfers = nv.model.layers * (2 * 2 * (2 - 1) + 2) + 1
    assert t_slow - t_nv == pytest.approx(decode_collective_ns(slow) - decode_collective_ns(nv),
                                          abs=transfers)
    assert decode_collective_ns(slow) > decode_collective_ns(nv)


# ---------------------------------------------------------------- memory


def test_hbm_plan_holds_back_the_reserve():
    """Usable HBM of a replica = tp x fraction x chip HBM; the KV capacity is what the
    weights and the router's chunk means leave of it."""
    for tp, frac in ((1, 0.9), (2, 0.9), (2, 0.8), (4, 1.0)):
        exp = experiment("moska", tp, model="llama-3.1-8b", unique_hbm_fraction=frac)
        m, mem = exp.model, exp.memory
        chip = load_chip("h100-sxm")
        usable = tp * frac * chip.hbm_capacity_GiB * 2**30
        weights = m.weight_bytes("fp8")
        chunk_means = (SHARED // 2048) * m.kv_heads * m.head_dim * m.layers * 2  # bf16 keys
        assert mem.replica_hbm_bytes == pytest.approx(usable, abs=1)
        assert mem.kv_capacity_bytes == pytest.approx(usable - weights - chunk_means, abs=2)
        assert mem.to_dict()["unique_hbm_usable_fraction"] == frac


def test_shared_node_reserve_bounds_the_corpus_slice():
    """A shared node may fill only hbm_usable_fraction of its HBM with the corpus."""
    h200 = load_chip("h200")
    kvb = 2 * 8 * 128 * 32  # Llama 3.1 8B fp8: K and V, 8 KV heads x 128, 32 layers, 1 B
    fits = int(0.9 * h200.hbm_capacity_GiB * 2**30 // kvb) // 2048 * 2048  # whole chunks
    exp = experiment("moska", 1, shared_tokens=fits)
    assert exp.memory.shared_kv_per_shared_node_bytes <= 0.9 * h200.hbm_capacity_bytes
    with pytest.raises(ValueError, match="hbm_usable_fraction"):
        experiment("moska", 1, shared_tokens=fits + 64 * 2048)
    experiment("moska", 1, shared_tokens=fits + 64 * 2048, shared_hbm_fraction=1.0)


def test_closed_form_capacity_uses_the_reserve():
    """``analyze``'s concurrency bound: replicas x floor((tp x 0.9 x HBM - weights -
    chunk means) / (unique tokens x KV bytes per token))."""
    exp = experiment("moska", 2, model="llama-3.1-70b")
    sc = dataclasses.replace(analytic.scenario(exp), unique_tokens=16384)
    m = exp.model
    kvb = 2 * m.kv_heads * m.head_dim * m.layers  # fp8
    chunk_means = (SHARED // 2048) * m.kv_heads * m.head_dim * m.layers * 2
    free = 2 * 0.9 * load_chip("h100-sxm").hbm_capacity_bytes - m.weight_bytes("fp8") - chunk_means
    assert analytic.evaluate(sc, 1).max_concurrency == int(free // (16384 * kvb))


# ---------------------------------------------------------------- Llama 3.1 70B MoSKA on H100


def test_llama70b_moska_runs_on_h100_with_tp2():
    """The shipped example, end to end through the config: at tp 2 each replica of two
    H100s holds many 16Ki-token requests (68 GiB of KV room); at tp 1 none fits."""
    cfg = load_config(ROOT / "workloads" / "llama70b-tp2.yaml", {"run.requests": 24})
    exp = resolve(cfg)
    assert exp.cluster.unique.tp == 2 and exp.cluster.unique.replicas == 4
    kv_per_request = (16384 + 64) * 2 * 8 * 128 * 80  # fp8 K+V, 8 KV heads, 80 layers
    held = exp.memory.kv_capacity_bytes // kv_per_request
    assert held >= 16
    r = simulate(exp)
    s = r.summary
    assert s["requests_completed"] == 24 and s["requests_rejected"] == 0
    assert all(all(s["invariants"].values()) for _ in [0])
    nodes = s["unique_nodes"]
    assert len(nodes) == 4
    assert max(n["max_running"] for n in nodes.values()) > 1  # a replica holds requests
    assert max(n["max_running"] for n in nodes.values()) <= held
    assert all(n["node_link_busy_s"] > 0 for n in nodes.values())
    assert s["time_breakdown_per_token_ms"]["collective"] > 0
    with pytest.raises(ValueError, match="no request fits"):
        simulate(resolve(load_config(ROOT / "workloads" / "llama70b-tp2.yaml",
                                     {"run.requests": 4, "cluster.unique.tp": 1})))


def test_tp_runs_are_deterministic():
    cfg = load_config(ROOT / "workloads" / "llama70b-tp2.yaml", {"run.requests": 12})
    a, b = simulate(resolve(cfg)).summary, simulate(resolve(cfg)).summary
    assert a == b
