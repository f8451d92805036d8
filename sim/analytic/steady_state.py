"""Closed-form steady state of each system: the paper's kind of model, with no queueing.

It sums the hw prices of the serving systems' op lists (``workloads.systems``), so at low load the event
simulation must agree with it; every difference the simulation shows is queueing,
batching or contention. ``concurrency`` below is the number of requests decoding at
once in the whole cluster.

Deployments (see docs/paper.md): ``moska`` runs on the configured unique and shared
nodes, its unique chips grouped into replicas of ``tp``; the baselines cannot use
disaggregation, so they get the same number of nodes (unique + shared), all of the unique
kind, grouped into tensor-parallel replicas of the power-of-two size that serves the
concurrency best (or ``baseline_tp``). A replica of ``tp`` > 1 pays its collectives (two
all-reduces per layer, the logits' gather, MoSKA's query gather and partial scatter) on
``node_link``, its internal link, as the op lists say; only ``hbm_usable_fraction`` of
each chip's HBM holds weights and KV.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from hw.compute import kernel_cost
from hw.link import transfer_cost
from hw.ops import Transfer
from hw.specs import ChipSpec, LinkSpec, load_link
from sim.engine.experiment import HBM_USABLE_FRACTION, NODE_LINK, Experiment
from workloads.models import ModelSpec
from workloads.systems import available_systems, decode_step_ops, get_system
from workloads.systems.ops import StepOp, n_chunks, partial_bytes, query_bytes

FABRIC_HOPS = 2  # unique node -> switch -> shared node


@dataclass(frozen=True)
class Scenario:
    """Everything the closed form needs: model, system, hardware, context sizes."""

    model: ModelSpec
    precision: str
    system: str
    unique_chip: ChipSpec
    unique_nodes: int
    shared_chip: ChipSpec
    shared_nodes: int
    link: LinkSpec
    unique_tokens: int
    shared_tokens: int
    chunk_tokens: int
    keep_fraction: float
    name: str = "scenario"
    overlap: bool = True  # unique attention hidden behind the shared round trip
    window_ns: float = 0.0  # shared nodes' batching window (batching.window_us)
    max_batch: int = 1 << 30  # queries per chunk that launch at once (batching.max_batch)
    tp: int = 1  # the disaggregated system's unique replica size (chips)
    node_link: LinkSpec = field(default_factory=lambda: load_link(NODE_LINK))
    unique_hbm_fraction: float = HBM_USABLE_FRACTION
    shared_hbm_fraction: float = HBM_USABLE_FRACTION
    baseline_tp: int | None = None  # the baselines' replica size; None: the best power of 2
    microbatches: int = 1  # 2: a replica's batch in two halves taking turns (ping-pong)

    @property
    def unique_usable_bytes(self) -> float:
        """HBM of one unique chip that may hold weights and KV."""
        return self.unique_hbm_fraction * self.unique_chip.hbm_capacity_bytes

    @property
    def shared_usable_bytes(self) -> float:
        return self.shared_hbm_fraction * self.shared_chip.hbm_capacity_bytes

    def with_system(self, system: str) -> Scenario:
        return replace(self, system=system)


@dataclass
class SystemPoint:
    """One system at one concurrency: feasibility, latency, throughput, memory, breakdown."""

    system: str
    concurrency: int
    feasible: bool
    reason: str = ""
    replicas: int = 0
    tp: int = 1
    batch_per_replica: int = 0
    max_concurrency: int = 0
    step_latency_ms: float = math.nan
    throughput_tokens_per_s: float = 0.0
    pipelined_throughput_tokens_per_s: float = 0.0
    nodes: int = 0
    memory_gib_per_node: dict[str, float] = field(default_factory=dict)
    breakdown_ms: dict[str, float] = field(default_factory=dict)
    bound: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
        return out


def op_time_ns(step_op: StepOp, unique_chip: ChipSpec, shared_chip: ChipSpec, link: LinkSpec,
               node_link: LinkSpec | None = None) -> int:
    """The modeled time of one op on the node kind (or link) it runs on: ``link`` is the
    network between nodes, ``node_link`` a replica's internal link (its collectives)."""
    if step_op.where in ("fabric", "node"):
        assert isinstance(step_op.op, Transfer)
        if step_op.where == "node":
            node_link = node_link if node_link is not None else load_link(NODE_LINK)
            return transfer_cost(step_op.op, node_link).time_ns
        return transfer_cost(step_op.op, link).time_ns
    chip = unique_chip if step_op.where == "unique" else shared_chip
    return kernel_cost(step_op.op, chip).time_ns


def _gib(x: float) -> float:
    return x / 2**30


def baseline_state_bytes(sc: Scenario, system: str, batch: int) -> float:
    """Bytes a baseline replica must hold for ``batch`` requests (weights, what the system
    keeps resident for the corpus, and each request's KV)."""
    kvb = sc.model.kv_bytes_per_token(sc.precision)
    weights = sc.model.weight_bytes(sc.precision)
    sys_ = get_system(system)
    chunks = n_chunks(sc.shared_tokens, sc.chunk_tokens) if sc.shared_tokens else 0
    resident = sys_.resident_shared_bytes(sc.model, sc.precision, sc.shared_tokens, chunks)
    per_request_tokens = sys_.request_kv_tokens(sc.unique_tokens, 0, sc.shared_tokens)
    return weights + resident + batch * per_request_tokens * kvb


def baseline_tps(sc: Scenario, system: str, nodes: int) -> list[int]:
    """Power-of-two replica sizes (in unique-kind nodes) that hold one request's state
    (only ``sc.baseline_tp`` when it is set)."""
    candidates = [sc.baseline_tp] if sc.baseline_tp else [2**i for i in range(nodes.bit_length())]
    return [tp for tp in candidates if tp <= nodes
            and baseline_state_bytes(sc, system, 1) <= tp * sc.unique_usable_bytes]


def step_from_ops(
    ops: list[StepOp], sc: Scenario, layers: int
) -> tuple[float, dict[str, float], dict[str, float]]:
    """Serial step latency (ns), per-phase breakdown (ns) and per-resource busy time (ns)."""
    total = 0.0
    phases: dict[str, float] = {}
    busy: dict[str, float] = {}
    for o in ops:
        reps = layers if o.per == "layer" else 1
        t = op_time_ns(o, sc.unique_chip, sc.shared_chip, sc.link, sc.node_link) * reps
        total += t
        phases[o.phase] = phases.get(o.phase, 0.0) + t
        where = "unique" if o.where == "node" else o.where  # collectives hold the replica
        busy[where] = busy.get(where, 0.0) + t
    return total, phases, busy


def evaluate(sc: Scenario, concurrency: int) -> SystemPoint:
    """Steady-state decode of ``concurrency`` requests in the whole cluster."""
    if get_system(sc.system).disaggregated:
        return _evaluate_disaggregated(sc, concurrency)
    return _evaluate_baseline(sc, concurrency)


def _evaluate_baseline(sc: Scenario, concurrency: int) -> SystemPoint:
    """The best replica size (tp) for this concurrency; infeasible if none holds it."""
    nodes = sc.unique_nodes + sc.shared_nodes
    tps = baseline_tps(sc, sc.system, nodes)
    if not tps:
        pt = SystemPoint(sc.system, concurrency, False, nodes=nodes)
        where = (f"a replica of {sc.baseline_tp} node(s)" if sc.baseline_tp
                 else f"all {nodes} nodes")
        pt.reason = (f"one request's state ({_gib(baseline_state_bytes(sc, sc.system, 1)):.0f} GiB)"
                     f" exceeds {where}' usable HBM")
        return pt
    points = [_evaluate_baseline_tp(sc, concurrency, nodes, tp) for tp in tps]
    feasible = [p for p in points if p.feasible]
    if feasible:
        return max(feasible, key=lambda p: p.throughput_tokens_per_s)
    return max(points, key=lambda p: p.max_concurrency)


def _evaluate_baseline_tp(sc: Scenario, concurrency: int, nodes: int, tp: int) -> SystemPoint:
    pt = SystemPoint(sc.system, concurrency, False, nodes=nodes)
    replicas = nodes // tp
    cap = tp * sc.unique_usable_bytes
    per_req = baseline_state_bytes(sc, sc.system, 2) - baseline_state_bytes(sc, sc.system, 1)
    max_batch = int((cap - baseline_state_bytes(sc, sc.system, 0)) // per_req)
    pt.tp, pt.replicas, pt.max_concurrency = tp, replicas, max_batch * replicas
    batch = math.ceil(concurrency / replicas)
    pt.batch_per_replica = batch
    pt.memory_gib_per_node = {
        "unique": _gib(baseline_state_bytes(sc, sc.system, batch) / tp)}
    if batch > max_batch:
        pt.reason = (f"needs {batch} requests per replica of {tp} node(s); HBM holds {max_batch}")
        return pt
    ops = decode_step_ops(sc.model, sc.system, sc.precision, batch, sc.unique_tokens,
                          sc.shared_tokens, tp=tp, keep_fraction=sc.keep_fraction,
                          chunk_tokens=sc.chunk_tokens)
    step, phases, _ = step_from_ops(ops, sc, sc.model.layers)
    pt.feasible = True
    pt.step_latency_ms = step / 1e6
    pt.throughput_tokens_per_s = concurrency / (step / 1e9)  # the busiest replica sets the step
    pt.pipelined_throughput_tokens_per_s = pt.throughput_tokens_per_s
    pt.breakdown_ms = {k: v / 1e6 for k, v in phases.items()}
    pt.bound = _dominant(ops, sc)
    return pt


def moska_fabric_ns(sc: Scenario, batch: int, concurrency: int) -> tuple[float, float]:
    """One layer's query send and partial return through a switch, uncontended.

    A unique replica's uplink carries its batch's queries to each shared node; a shared
    node's downlink carries every replica's queries; returns are the mirror image.
    """
    lat = FABRIC_HOPS * sc.link.latency_ns + sc.link.fixed_ns  # a preset's per-message cost
    q, p = query_bytes(sc.model, batch), partial_bytes(sc.model, batch)
    replicas = max(1, sc.unique_nodes // sc.tp)
    fan = max(sc.shared_nodes, min(replicas, math.ceil(concurrency / batch)))
    return lat + fan * q / sc.link.bytes_per_ns, lat + fan * p / sc.link.bytes_per_ns


def _evaluate_disaggregated(sc: Scenario, concurrency: int) -> SystemPoint:
    S, tp = sc.shared_nodes, sc.tp
    U = sc.unique_nodes // tp  # replicas of tp chips
    system = get_system(sc.system)
    pt = SystemPoint(sc.system, concurrency, False, nodes=sc.unique_nodes + S, replicas=U, tp=tp)
    if U < 1:
        pt.reason = f"{sc.unique_nodes} unique node(s) cannot form a replica of tp {tp}"
        return pt
    kvb = sc.model.kv_bytes_per_token(sc.precision)
    layers = sc.model.layers
    chunks = n_chunks(sc.shared_tokens, sc.chunk_tokens) if sc.shared_tokens else 0
    resident = system.resident_shared_bytes(sc.model, sc.precision, sc.shared_tokens, chunks)
    unique_fixed = sc.model.weight_bytes(sc.precision) + resident
    shared_need = sc.shared_tokens * kvb / max(S, 1)
    pt.max_concurrency = U * max(0, int(
        (tp * sc.unique_usable_bytes - unique_fixed) // (sc.unique_tokens * kvb)))
    batch = math.ceil(concurrency / U)
    pt.batch_per_replica = batch
    pt.memory_gib_per_node = {"unique": _gib(unique_fixed + batch * sc.unique_tokens * kvb) / tp,
                              "shared": _gib(shared_need)}
    if sc.shared_tokens and S < 1:
        pt.reason = f"{sc.system} needs at least one shared node"
        return pt
    if shared_need > sc.shared_usable_bytes:
        pt.reason = (f"shared KV slice {_gib(shared_need):.0f} GiB per shared node exceeds "
                     f"its {_gib(sc.shared_usable_bytes):.0f} GiB usable")
        return pt
    if concurrency > pt.max_concurrency:
        pt.reason = f"unique nodes' HBM holds {pt.max_concurrency} requests"
        return pt
    ops = decode_step_ops(
        sc.model, sc.system, sc.precision, batch, sc.unique_tokens, sc.shared_tokens,
        keep_fraction=sc.keep_fraction, chunk_tokens=sc.chunk_tokens,
        shared_queries=concurrency, shared_nodes=max(S, 1), tp=tp)
    compute_ops = [o for o in ops if o.where != "fabric"]
    step, phases, busy = step_from_ops(compute_ops, sc, layers)
    if sc.shared_tokens:
        send, ret = moska_fabric_ns(sc, batch, concurrency)
        fabric = layers * (send + ret)
        step += fabric
        phases["fabric"] = fabric
        busy["fabric"] = fabric
        if sc.overlap:
            # the unique attention runs while queries are out: per layer the step pays
            # only the longer of the two
            own = sum(op_time_ns(o, sc.unique_chip, sc.shared_chip, sc.link)
                      for o in compute_ops if o.where == "unique" and o.per == "layer"
                      and o.phase == "unique_attention")
            trip = sum(op_time_ns(o, sc.unique_chip, sc.shared_chip, sc.link)
                       for o in compute_ops if o.where == "shared") + send + ret
            hidden = layers * min(own, trip)
            step -= hidden
            # the phases sum to the step: the hidden part of unique attention is not paid
            phases["unique_attention"] = phases.get("unique_attention", 0.0) - hidden
        # a launch whose chunks stay below max_batch waits out the batching window first
        # (the policy cannot know that no more queries are coming)
        biggest = max(b for b, _ in _shared_histogram(ops))
        if biggest < sc.max_batch and sc.window_ns > 0:
            wait = layers * sc.window_ns
            step += wait
            phases["queueing"] = phases.get("queueing", 0.0) + wait
    if sc.shared_tokens and sc.microbatches > 1 and batch > 1:
        step, phases = _ping_pong_step_ns(sc, batch, concurrency)
    pt.feasible = True
    pt.step_latency_ms = step / 1e6
    pt.throughput_tokens_per_s = concurrency / (step / 1e9)
    # with enough micro-batches in flight the slowest stage alone sets the pace
    pt.pipelined_throughput_tokens_per_s = concurrency / (max(busy.values()) / 1e9)
    pt.breakdown_ms = {k: v / 1e6 for k, v in phases.items()}
    pt.bound = _dominant(ops, sc)
    return pt


def _ping_pong_step_ns(sc: Scenario, batch: int, concurrency: int) -> tuple[float, dict[str, float]]:
    """A decode step with the replica's batch in two halves that take turns on its compute
    (``batching.microbatches: 2``), and its breakdown.

    Per layer a half needs ``c`` of the replica's compute before and after its round trip,
    ``o`` that may overlap it (unique attention, with overlap on) and a round trip ``r``
    (query send, the shared launch of every replica's half, the window, the return). Two
    halves on one compute, steady state: a layer takes the longest of the compute both
    halves need, ``2 (c + o)``; one half's own cycle, ``c + max(o, r)`` (``c + o + r``
    without overlap); and the shared node's two launches, ``2 s``. Ops run once a step
    (lm_head) run once per half."""
    half = -(-batch // 2)
    shared_queries = -(-concurrency // 2)
    ops = decode_step_ops(
        sc.model, sc.system, sc.precision, half, sc.unique_tokens, sc.shared_tokens,
        keep_fraction=sc.keep_fraction, chunk_tokens=sc.chunk_tokens,
        shared_queries=shared_queries, shared_nodes=max(sc.shared_nodes, 1), tp=sc.tp)
    own = over = shared = per_step = 0.0
    phases: dict[str, float] = {}
    for o in ops:
        if o.where == "fabric":
            continue
        t = op_time_ns(o, sc.unique_chip, sc.shared_chip, sc.link, sc.node_link)
        if o.where == "shared":
            shared += t
            continue
        if o.per == "step":
            per_step += t
        elif sc.overlap and o.phase == "unique_attention":
            over += t
        else:
            own += t
        reps = 1 if o.per == "step" else sc.model.layers
        phases[o.phase] = phases.get(o.phase, 0.0) + 2 * t * reps
    send, ret = moska_fabric_ns(sc, half, shared_queries)
    biggest = max(b for b, _ in _shared_histogram(ops))
    wait = sc.window_ns if biggest < sc.max_batch and sc.window_ns > 0 else 0.0
    trip = send + shared + ret + wait
    cycle = own + (max(over, trip) if sc.overlap else over + trip)
    layer = max(2 * (own + over), cycle, 2 * shared)
    step = sc.model.layers * layer + 2 * per_step
    # what the halves' own work does not fill is time the replica waits on a round trip
    phases["queueing"] = phases.get("queueing", 0.0) + step - sum(phases.values())
    return step, phases


def _shared_histogram(ops: list[StepOp]) -> tuple[tuple[int, int], ...]:
    """The chunk-batch histogram of the step's grouped shared-attention launch."""
    for o in ops:
        if o.where == "shared" and hasattr(o.op, "chunk_batches"):
            return o.op.chunk_batches
    return ((0, 0),)


def _dominant(ops: list[StepOp], sc: Scenario) -> str:
    """Name of the op that takes the largest share of a step (for the table)."""
    best, name = -1.0, ""
    for o in ops:
        if o.where in ("fabric", "node"):
            continue
        t = op_time_ns(o, sc.unique_chip, sc.shared_chip, sc.link) * (
            sc.model.layers if o.per == "layer" else 1)
        if t > best:
            chip = sc.unique_chip if o.where == "unique" else sc.shared_chip
            best, name = t, f"{o.name} ({kernel_cost(o.op, chip).bound})"
    return name


def best_point(sc: Scenario, concurrencies: list[int]) -> SystemPoint:
    """The feasible point of highest throughput over ``concurrencies`` (or the first)."""
    points = [evaluate(sc, c) for c in concurrencies]
    feasible = [p for p in points if p.feasible]
    if not feasible:
        return points[0]
    return max(feasible, key=lambda p: p.throughput_tokens_per_s)


def scenario(exp: Experiment, unique_tokens: int | None = None) -> Scenario:
    """The closed form's view of an experiment; ``unique_tokens`` defaults to the mean of
    the workload's unique-token law (rounded)."""
    return Scenario(
        model=exp.model,
        precision=exp.precision,
        system=exp.system.name,
        unique_chip=exp.cluster.unique.chip,
        unique_nodes=exp.cluster.unique.nodes,
        shared_chip=exp.cluster.shared.chip,
        shared_nodes=exp.cluster.shared.nodes,
        link=LinkSpec("fabric", exp.cluster.fabric.bandwidth_GBps, exp.cluster.fabric.latency_ns,
                      fixed_ns=exp.cluster.fabric.message_ns),
        unique_tokens=exp.sizes.unique_tokens_mean if unique_tokens is None else unique_tokens,
        shared_tokens=exp.corpus.tokens,
        chunk_tokens=exp.corpus.chunk_tokens,
        keep_fraction=exp.corpus.keep_fraction,
        name=exp.name,
        overlap=exp.batching.overlap,
        window_ns=float(exp.batching.window_ns),
        max_batch=exp.batching.max_batch,
        tp=exp.cluster.unique.tp,
        node_link=exp.cluster.unique.link,
        unique_hbm_fraction=exp.cluster.unique.hbm_usable_fraction,
        shared_hbm_fraction=exp.cluster.shared.hbm_usable_fraction,
        microbatches=exp.batching.microbatches,
    )


def step_latency_ns(exp: Experiment, batch: int = 1) -> float:
    """Decode step latency of the experiment's system with ``batch`` requests per replica
    (of the configured ``tp``)."""
    sc = replace(scenario(exp), baseline_tp=exp.cluster.unique.tp)
    pt = evaluate(sc, batch * (sc.unique_nodes // sc.tp if exp.disaggregated else 1))
    return pt.step_latency_ms * 1e6


def systems() -> list[str]:
    """Every registered serving system (the closed form evaluates each)."""
    return available_systems()


__all__ = [
    "Scenario",
    "SystemPoint",
    "best_point",
    "evaluate",
    "scenario",
    "step_latency_ns",
    "systems",
]
