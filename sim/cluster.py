"""Builds the simulated cluster from a resolved config: the deployment, HBM budgets, the
fabric, the nodes, the router, and the request drivers (open loop and closed loop).

Deployment.
- ``moska``: ``cluster.unique.nodes`` unique nodes and ``cluster.shared.nodes`` shared
  nodes on one fabric; the shared corpus's chunks are striped (chunk ``g`` on shared node
  ``g % S``); unique nodes hold only per-request KV (and the router's chunk means).
- ``vanilla`` / ``prefix_cache`` / ``shared_gemm``: no disaggregation. Every group of
  ``cluster.unique.tp`` unique nodes is one independent replica that runs every op locally
  (priced with ``tp``; capacity ``tp`` x HBM); shared nodes are unused.
Requests go to the least-loaded replica (fewest running + waiting; ties: lowest id).

HBM budget of a replica: ``tp * HBM - weights - resident shared KV`` (prefix_cache and
shared_gemm: the corpus once; moska: the router's chunk means; vanilla: nothing, each
request carries its own copy). Each request reserves ``(unique + output [+ shared for
vanilla]) tokens x KV bytes per token`` at admission. A request that cannot fit alone is
rejected (counted by reason); if nothing can ever fit the run fails before it starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hw.specs import ChipSpec, load_chip
from sim.engine import Engine
from sim.fabric import Fabric, build_topology
from sim.metrics import Occupancy, RequestLog, TokenLog
from sim.nodes.pricing import PHASES, Pricer
from sim.nodes.shared import SharedNode
from sim.nodes.unique import UniqueNode
from sim.routing import NodeLoad, QueryRouter
from workloads.models import SYSTEMS, ModelSpec, get_model, n_chunks
from workloads.request import RequestSpec

GIB = 2**30
UNBOUNDED = 1 << 30  # batching.max_running: null (HBM alone bounds admission)


def _get(obj: Any, path: str, default: Any = None) -> Any:
    """``obj.a.b.c`` (attributes or mapping keys), or ``default`` where a level is missing."""
    cur = obj
    for part in path.split("."):
        if cur is None:
            return default
        if isinstance(cur, dict):
            cur = cur.get(part, None)
        else:
            cur = getattr(cur, part, None)
    return default if cur is None else cur


@dataclass(frozen=True)
class EngineSpec:
    """Everything the engine reads from the config, resolved to plain values."""

    name: str
    model: ModelSpec
    precision: str
    system: str
    unique_nodes: int
    unique_chip: ChipSpec
    tp: int
    shared_nodes: int
    shared_chip: ChipSpec
    topology: str
    bandwidth_GBps: float
    latency_ns: float
    switch_latency_ns: float
    hosts_per_leaf: int
    spines: int | None
    shared_tokens: int
    chunk_tokens: int
    keep_fraction: float
    corpora: int
    max_batch: int
    window_ns: int
    max_running: int
    requests: int | None
    duration_ns: int | None
    warmup_ns: int
    seed: int
    granularity: str
    service: str = "deterministic"
    # each corpus's own size when the workload defines its corpora (a Mooncake trace);
    # None: ``corpora`` corpora of ``shared_tokens`` each (the configured corpus)
    corpus_tokens: tuple[int, ...] | None = None

    @property
    def disaggregated(self) -> bool:
        return self.system == "moska"

    @property
    def chunks_per_corpus(self) -> int:
        """Chunks of one configured corpus (``workload.shared.tokens``)."""
        return n_chunks(self.shared_tokens, self.chunk_tokens) if self.shared_tokens else 0

    @property
    def corpus_chunk_counts(self) -> tuple[int, ...]:
        """Chunks of each corpus, in corpus order (a short last chunk counts as one)."""
        if self.corpus_tokens is not None:
            return tuple(n_chunks(max(1, t), self.chunk_tokens) for t in self.corpus_tokens)
        return (self.chunks_per_corpus,) * self.corpora if self.shared_tokens else ()

    @property
    def total_chunks(self) -> int:
        return sum(self.corpus_chunk_counts)

    @property
    def total_corpus_tokens(self) -> int:
        """Shared tokens stored once across all corpora."""
        if self.corpus_tokens is not None:
            return sum(self.corpus_tokens)
        return self.shared_tokens * self.corpora

    def keep_chunks_of(self, n: int) -> int:
        """Chunks a query keeps of an ``n``-chunk corpus: round(keep_fraction x n), >= 1."""
        return max(1, min(n, round(self.keep_fraction * n))) if n else 0

    @property
    def keep_chunks(self) -> int:
        """Chunks each query keeps: round(keep_fraction x chunks), at least one."""
        n = self.chunks_per_corpus
        return max(1, min(n, round(self.keep_fraction * n))) if n else 0


def spec_from_config(cfg: Any) -> EngineSpec:
    """Read the fields the engine needs from a resolved ``ExperimentConfig``.

    Optional fields not (yet) in the schema are read with defaults: ``cluster.unique.tp``
    (1), ``cluster.fabric.spines`` (= hosts_per_leaf), ``run.service`` ('deterministic').
    """
    system = str(_get(cfg, "system"))
    if system not in SYSTEMS:
        raise ValueError(f"system: expected one of {', '.join(SYSTEMS)}, got {system!r}")
    duration_s = _get(cfg, "run.duration_s")
    requests = _get(cfg, "run.requests")
    if duration_s is None and requests is None:
        raise ValueError("run: set run.requests and/or run.duration_s to bound the run")
    shared_tokens = int(_get(cfg, "workload.shared.tokens", 0) or 0)
    chunk_tokens = int(_get(cfg, "workload.shared.chunk_tokens", 0) or 0) or max(1, shared_tokens)
    window_us = float(_get(cfg, "batching.window_us", 0.0))
    granularity = str(_get(cfg, "run.granularity", "step"))
    if granularity not in ("layer", "step"):
        raise ValueError(f"run.granularity: expected 'layer' or 'step', got {granularity!r}")
    service = str(_get(cfg, "run.service", "deterministic"))
    if service not in ("deterministic", "exponential"):
        raise ValueError(
            f"run.service: expected 'deterministic' or 'exponential', got {service!r}")
    spines = _get(cfg, "cluster.fabric.spines")
    return EngineSpec(
        name=str(_get(cfg, "name", "run")),
        model=get_model(str(_get(cfg, "model"))),
        precision=str(_get(cfg, "precision")),
        system=system,
        unique_nodes=int(_get(cfg, "cluster.unique.nodes")),
        unique_chip=load_chip(str(_get(cfg, "cluster.unique.chip"))),
        tp=int(_get(cfg, "cluster.unique.tp", 1)),
        shared_nodes=int(_get(cfg, "cluster.shared.nodes", 0)),
        shared_chip=load_chip(str(_get(cfg, "cluster.shared.chip", _get(cfg, "cluster.unique.chip")))),
        topology=str(_get(cfg, "cluster.fabric.topology", "switch")),
        bandwidth_GBps=float(_get(cfg, "cluster.fabric.link.bandwidth_GBps")),
        latency_ns=float(_get(cfg, "cluster.fabric.link.latency_ns", 0.0)),
        switch_latency_ns=float(_get(cfg, "cluster.fabric.switch_latency_ns", 0.0)),
        hosts_per_leaf=int(_get(cfg, "cluster.fabric.hosts_per_leaf", 8)),
        spines=int(spines) if spines is not None else None,
        shared_tokens=shared_tokens,
        chunk_tokens=chunk_tokens,
        keep_fraction=float(_get(cfg, "workload.shared.keep_fraction", 1.0)),
        corpora=int(_get(cfg, "workload.shared.corpora", 1) or 1),
        max_batch=int(_get(cfg, "batching.max_batch")),
        window_ns=int(round(window_us * 1000)),
        max_running=int(_get(cfg, "batching.max_running", UNBOUNDED)),
        requests=int(requests) if requests is not None else None,
        duration_ns=int(round(float(duration_s) * 1e9)) if duration_s is not None else None,
        warmup_ns=int(round(float(_get(cfg, "run.warmup_s", 0.0)) * 1e9)),
        seed=int(_get(cfg, "run.seed", 0)),
        granularity=granularity,
        service=service,
    )


@dataclass(frozen=True)
class MemoryPlan:
    """A replica's HBM budget: capacity for per-request KV and what each request needs."""

    replica_hbm_bytes: int
    weights_bytes: int
    resident_shared_bytes: int
    kv_capacity_bytes: int
    kv_bytes_per_token: float
    shared_kv_per_shared_node_bytes: int
    carries_shared: bool  # vanilla: each request holds its own copy of its shared tokens

    def request_bytes(self, unique: np.ndarray, output: np.ndarray,
                      shared: np.ndarray) -> np.ndarray:
        """KV bytes each request reserves at admission."""
        tokens = unique + output + (shared if self.carries_shared else 0)
        return np.ceil(tokens * self.kv_bytes_per_token).astype(np.int64)

    def to_dict(self) -> dict[str, float]:
        return {
            "replica_hbm_gib": self.replica_hbm_bytes / GIB,
            "weights_gib": self.weights_bytes / GIB,
            "resident_shared_gib": self.resident_shared_bytes / GIB,
            "kv_capacity_gib": self.kv_capacity_bytes / GIB,
            "shared_kv_per_shared_node_gib": self.shared_kv_per_shared_node_bytes / GIB,
        }


def _corpus_words(spec: EngineSpec) -> str:
    """Where the shared corpus size came from, for error messages."""
    if spec.corpus_tokens is not None:
        return (f"{len(spec.corpus_tokens)} corpora of {spec.total_corpus_tokens} tokens in "
                "all, read off the workload's trace")
    return f"workload.shared.tokens={spec.shared_tokens} x corpora {spec.corpora}"


def memory_plan(spec: EngineSpec) -> MemoryPlan:
    """HBM accounting per replica; a clear error naming the fields when nothing fits."""
    m, prec = spec.model, spec.precision
    kvb = m.kv_bytes_per_token(prec)
    weights = int(math.ceil(m.weight_bytes(prec)))
    hbm = spec.tp * spec.unique_chip.hbm_capacity_bytes
    corpus_tokens = spec.total_corpus_tokens
    shared_per_node = 0
    if spec.system == "moska":
        chunks = spec.total_chunks
        resident = chunks * m.kv_heads * m.head_dim * m.layers * 2  # bf16 chunk means
        if corpus_tokens:
            if spec.shared_nodes < 1:
                raise ValueError("cluster.shared.nodes: moska with a shared corpus needs >= 1 "
                                 "shared node")
            per_node_chunks = -(-chunks // spec.shared_nodes)
            shared_per_node = int(math.ceil(per_node_chunks * spec.chunk_tokens * kvb))
            if shared_per_node > spec.shared_chip.hbm_capacity_bytes:
                raise ValueError(
                    f"cluster.shared: each of {spec.shared_nodes} shared node(s) must hold "
                    f"{shared_per_node / GIB:.1f} GiB of shared KV ({_corpus_words(spec)}), "
                    f"more than the "
                    f"{spec.shared_chip.name}'s {spec.shared_chip.hbm_capacity_GiB} GiB; add "
                    f"shared nodes or use a larger cluster.shared.chip")
    elif spec.system in ("prefix_cache", "shared_gemm"):
        resident = int(math.ceil(corpus_tokens * kvb))
    else:
        resident = 0
    cap = hbm - weights - resident
    if cap <= 0:
        raise ValueError(
            f"cluster.unique: a replica of {spec.tp} x {spec.unique_chip.name} "
            f"({hbm / GIB:.1f} GiB HBM; cluster.unique.chip, cluster.unique.tp) cannot hold "
            f"the {m.name} {prec} weights ({weights / GIB:.1f} GiB; model, precision) plus "
            f"resident shared KV ({resident / GIB:.1f} GiB; workload.shared.tokens)")
    return MemoryPlan(hbm, weights, resident, cap, kvb, shared_per_node,
                      carries_shared=spec.system == "vanilla")


@dataclass
class Cluster:
    """The nodes, fabric and bookkeeping of one run; drives requests into the nodes."""

    engine: Engine
    spec: EngineSpec
    requests: list[RequestSpec]
    routers: list[QueryRouter] = field(default_factory=list)
    closed_loop_concurrency: int | None = None

    def __post_init__(self) -> None:
        spec = self.spec
        self.env = self.engine.env
        self.granularity = spec.granularity
        self.memory = memory_plan(spec)
        self.log = RequestLog(len(self.requests))
        self.tokens = TokenLog()
        self.occupancy = Occupancy()
        self.breakdown = np.zeros(len(PHASES), dtype=np.float64)
        self.admission_wait_ns = 0
        self.remote_shared = spec.disaggregated and spec.shared_tokens > 0
        self._service_rng = self.engine.rng["service"]
        self.exp_service = self.spec.service == "exponential"
        self.done = self.env.event()
        self._expected = len(self.requests)
        self._finished = 0
        self._next = 0
        self._fill_log()
        self._build_nodes()

    # -- construction ---------------------------------------------------------------------
    def _fill_log(self) -> None:
        log = self.log
        reqs = self.requests
        if not reqs:
            return
        log.unique_tokens[:] = [r.unique_tokens for r in reqs]
        log.output_tokens[:] = [max(1, r.output_tokens) for r in reqs]
        if self.spec.corpus_tokens is None:
            # corpora drawn by the workload are folded onto the configured ones
            log.corpus[:] = [r.corpus % self.spec.corpora for r in reqs]
        else:  # the workload's own corpora (Mooncake); -1: the request shares nothing
            log.corpus[:] = [r.corpus if r.shared_tokens else -1 for r in reqs]
        shared = self.spec.shared_tokens
        log.shared_tokens[:] = [shared if r.shared_tokens is None else r.shared_tokens
                                for r in reqs]
        log.kv_bytes[:] = self.memory.request_bytes(log.unique_tokens, log.output_tokens,
                                                    log.shared_tokens)
        log.freeze_rows()
        if int(log.kv_bytes.min()) > self.memory.kv_capacity_bytes:
            i = int(np.argmin(log.kv_bytes))
            raise ValueError(
                f"no request fits: the smallest needs {log.kv_bytes[i] / GIB:.2f} GiB of KV "
                f"(workload.unique_tokens + workload.output_tokens"
                f"{' + workload.shared.tokens' if self.spec.system == 'vanilla' else ''}) but a "
                f"replica has {self.memory.kv_capacity_bytes / GIB:.2f} GiB left after weights "
                f"and shared KV (cluster.unique.chip, cluster.unique.tp)")

    def _build_nodes(self) -> None:
        spec = self.spec
        if spec.tp < 1 or spec.unique_nodes % spec.tp:
            raise ValueError(f"cluster.unique.tp: expected a divisor of cluster.unique.nodes "
                             f"({spec.unique_nodes}), got {spec.tp}")
        if spec.disaggregated and spec.tp != 1:
            raise ValueError("cluster.unique.tp: moska unique nodes run unsplit (tp 1)")
        if spec.max_running < 1:
            raise ValueError(f"batching.max_running: expected >= 1, got {spec.max_running}")
        replicas = spec.unique_nodes // spec.tp
        S = spec.shared_nodes if self.remote_shared else 0
        self.pricer = Pricer(
            spec.model, spec.system, spec.precision, spec.unique_chip, spec.shared_chip,
            tp=spec.tp, shared_nodes=max(1, spec.shared_nodes) if spec.disaggregated else 1,
            keep_fraction=spec.keep_fraction, chunk_tokens=spec.chunk_tokens)
        hosts = [f"unique{i}" for i in range(replicas)] + [f"shared{s}" for s in range(S)]
        self.fabric: Fabric | None = None
        if S:
            graph = build_topology(spec.topology, hosts, hosts_per_leaf=spec.hosts_per_leaf,
                                   spines=spec.spines)
            self.fabric = Fabric(self.engine, graph, bandwidth_GBps=spec.bandwidth_GBps,
                                 latency_ns=spec.latency_ns,
                                 switch_latency_ns=spec.switch_latency_ns)
        host_of = {h: i for i, h in enumerate(self.fabric.hosts)} if self.fabric else {}
        total_chunks = spec.total_chunks
        self._corpus_offsets = [0, *np.cumsum(spec.corpus_chunk_counts).tolist()]
        S_ = max(1, S)
        self._padded_chunks = -(-total_chunks // S_) * S_
        self._local_chunks = [len(range(s, total_chunks, S_)) for s in range(S_)]
        self.shared: list[SharedNode] = [
            SharedNode(s, host_of.get(f"shared{s}", -1), self.engine, self.fabric, self.pricer,
                       local_chunks=len(range(s, total_chunks, S)), max_batch=spec.max_batch,
                       window_ns=spec.window_ns)
            for s in range(S)
        ]
        self.unique: list[UniqueNode] = [
            UniqueNode(i, host_of.get(f"unique{i}", -1), self.engine, self, self.pricer,
                       capacity_bytes=self.memory.kv_capacity_bytes,
                       max_running=spec.max_running, tp=spec.tp)
            for i in range(replicas)
        ]
        self.unused_shared_nodes = spec.shared_nodes - S

    # -- routing --------------------------------------------------------------------------
    def route(self, corpus_ids: np.ndarray, batch: int, layer: int = 0) -> list[NodeLoad]:
        """Each shared node's share of this batch's routed queries (``layer``: the decode
        layer of the round trip, 0 at granularity step)."""
        routers = self.routers
        if len(routers) == 1 and self.spec.corpus_tokens is None:
            return routers[0].route(batch, layer)
        per_corpus = np.bincount(corpus_ids[corpus_ids >= 0], minlength=len(routers))
        S = len(self.shared)
        offsets = self._corpus_offsets
        # NOTE: for performance: one vector over every global chunk; global chunk g is
        # slot g // S of node g % S, so node s's counts are the stride-S slice from s.
        # (padded to a multiple of S, so the stride-S slices are the rows of one transpose)
        glob = np.zeros(self._padded_chunks, dtype=np.int64)
        reqs = [0] * S
        for corpus in np.flatnonzero(per_corpus).tolist():
            per_chunk, r = routers[corpus].draw_counts(int(per_corpus[corpus]), layer)
            o = offsets[corpus]
            glob[o:o + len(per_chunk)] += per_chunk
            for s in range(S):
                reqs[s] += r[s]
        mat = glob.reshape(-1, S).T.copy()
        pairs = np.add.reduce(mat, axis=1).tolist()
        maxs = np.maximum.reduce(mat, axis=1).tolist() if mat.shape[1] else [0] * S
        local = self._local_chunks
        return [NodeLoad(mat[s, :local[s]], reqs[s], pairs[s], maxs[s]) for s in range(S)]

    # -- request flow ---------------------------------------------------------------------
    def dispatch(self, rid: int) -> None:
        """A request arrives now: reject it, or queue it on the least-loaded replica."""
        now = self.env.now
        log = self.log
        log.arrival_ns[rid] = now
        if int(log.kv_bytes[rid]) > self.memory.kv_capacity_bytes:
            log.status[rid] = log.REJECTED
            reason = "kv_exceeds_replica_hbm"
            log.reject_reasons[reason] = log.reject_reasons.get(reason, 0) + 1
            self._finish(1)
            return
        best = self.unique[0]
        best_load = best.load
        for node in self.unique[1:]:
            load = node.load
            if load < best_load:
                best, best_load = node, load
        log.node[rid] = best.index
        log.status[rid] = log.WAITING
        self.occupancy.change(now, +1)
        best.submit(rid)

    def on_completed(self, ids: np.ndarray) -> None:
        """Requests finished (called by a unique node)."""
        n = len(ids)
        self.occupancy.change(self.env.now, -n)
        self._finish(n)

    def _finish(self, n: int) -> None:
        self._finished += n
        if self.closed_loop_concurrency:
            for _ in range(n):
                self._issue_next()
        if self._finished >= self._expected and not self.done.triggered:
            self.done.succeed()

    def _issue_next(self) -> None:
        if self._next < len(self.requests):
            rid = self._next
            self._next += 1
            self.dispatch(rid)

    def open_loop(self):  # noqa: ANN201 - a SimPy process
        """Requests arrive at their planned times."""
        env = self.env
        for rid, r in enumerate(self.requests):
            delay = int(r.arrival_ns) - env.now
            if delay > 0:
                yield env.timeout(delay)
            self._next = rid + 1
            self.dispatch(rid)

    def start(self) -> None:
        """Start the request driver."""
        if self.closed_loop_concurrency:
            for _ in range(min(self.closed_loop_concurrency, len(self.requests))):
                self._issue_next()
        else:
            self.env.process(self.open_loop())
        if not self.requests and not self.done.triggered:
            self.done.succeed()

    def service_scale(self) -> float:
        """1, or an Exp(1) draw when ``run.service: exponential`` (the M/M/1 test knob):
        it scales a prefill group's and a local decode step's unique-node time; remote
        (shared-node and fabric) times stay as priced."""
        if self.spec.service == "exponential":
            return float(self._service_rng.exponential())
        return 1.0


def make_spec(**overrides: Any) -> EngineSpec:
    """An ``EngineSpec`` for programmatic use (tests, benchmarks): the default cluster of
    ``workloads/default.yaml`` (moska, Llama 3.1 8B fp8, 4 moska-unique + 2 moska-shared
    nodes on a 450 GB/s switch, a 1Mi-token corpus) with ``overrides`` applied. Chip and
    model names are looked up; pass ``model``/``unique_chip``/``shared_chip`` as names."""
    d: dict[str, Any] = dict(
        name="spec", model="llama-3.1-8b", precision="fp8", system="moska",
        unique_nodes=4, unique_chip="moska-unique", tp=1, shared_nodes=2,
        shared_chip="moska-shared", topology="switch", bandwidth_GBps=450.0,
        latency_ns=1000.0, switch_latency_ns=0.0, hosts_per_leaf=8, spines=None,
        shared_tokens=2**20, chunk_tokens=2048, keep_fraction=0.25, corpora=1,
        max_batch=256, window_ns=50_000, max_running=UNBOUNDED, requests=None, duration_ns=None,
        warmup_ns=0, seed=0, granularity="step", service="deterministic")
    d.update(overrides)
    if isinstance(d["model"], str):
        d["model"] = get_model(d["model"])
    for key in ("unique_chip", "shared_chip"):
        if isinstance(d[key], str):
            d[key] = load_chip(d[key])
    return EngineSpec(**d)


__all__ = ["Cluster", "EngineSpec", "MemoryPlan", "make_spec", "memory_plan", "spec_from_config"]
