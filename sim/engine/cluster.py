"""Wires one run's parts together from an ``Experiment``: the records, the pricer, the
fabric, the shared and unique nodes, the query router and the request driver.

Deployment. Every group of ``cluster.unique.tp`` unique chips is one replica (a
multi-GPU node: ops split ``tp`` ways, its collectives priced on ``cluster.unique.link``,
usable HBM ``tp x hbm_usable_fraction x HBM``), one host of the fabric.
- A disaggregated system (``moska``): the unique replicas and ``cluster.shared.nodes``
  shared nodes on one fabric (the inter-node network); the shared corpus's chunks are
  striped (chunk ``g`` on shared node ``g % S``); unique replicas hold only per-request
  KV (and what the system keeps resident, e.g. the router's chunk means).
- Any other system: no disaggregation. Every replica runs every op locally; shared nodes
  are unused.

Each part receives its collaborators (records, pricer, fabric, peers, the router's
``route``, the driver's ``on_completed``); none holds a pointer back to the cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sim.engine.deployment import GIB, memory_plan
from sim.engine.driver import RequestDriver
from sim.engine.experiment import Experiment
from sim.engine.fabric import Fabric, build_topology
from sim.engine.faults import FaultManager
from sim.engine.kernel import Engine
from sim.engine.nodes.prefill import PrefillNode
from sim.engine.nodes.pricing import PHASES, Pricer
from sim.engine.nodes.shared import SharedNode
from sim.engine.nodes.unique import UniqueNode
from sim.engine.records import PLAN_BLOCK, PlanBlock, RunRecords
from sim.engine.routing import QueryRouter, ShardRouter
from workloads.request import RequestTable
from workloads.sharing import ChunkRouter, SharedCorpusSpec

RouterFactory = Callable[[int, np.random.Generator], Any]  # (corpus, rng) -> .select(n)


class Cluster:
    """The parts of one run, built and connected; ``start()`` begins issuing requests."""

    def __init__(self, engine: Engine, experiment: Experiment,
                 make_router: RouterFactory | None = None) -> None:
        self.engine = engine
        self.experiment = experiment
        exp = experiment
        self.memory = exp.memory
        requests = RequestTable.of(exp.workload.requests)
        plan = self._plan_block(requests)
        self._check_fits(plan, len(requests))
        self.records = RunRecords(len(requests), len(PHASES), plan)
        self.remote_shared = exp.remote_shared
        self._build_nodes()
        self.driver = RequestDriver(engine, requests, self.records, self.unique,
                                    self.memory.kv_capacity_bytes,
                                    exp.workload.closed_loop_concurrency,
                                    prefill_nodes=self.prefill,
                                    prefill_capacity_bytes=self.prefill_capacity_bytes,
                                    fabric=self.fabric)
        for p in self.prefill:
            p.hand_over = self.driver.hand_over
        for u in self.unique:
            u.on_completed = self.driver.on_completed
        self.router: ShardRouter | None = None
        if self.remote_shared:
            self.router = self._build_router(make_router)
            for u in self.unique:
                u.route = self.router.route_layers
        self.faults: FaultManager | None = None
        if exp.faults.faults:
            self.faults = FaultManager(self.engine, exp.faults, unique=self.unique,
                                       shared=self.shared, fabric=self.fabric,
                                       driver=self.driver, replicas=exp.corpus.replicas)

    @property
    def log(self):
        return self.records.log

    @property
    def done(self):
        return self.driver.done

    # -- construction ---------------------------------------------------------------------
    def _plan_block(self, requests: RequestTable) -> PlanBlock:
        """The plan fields (``PLAN_FIELDS``) of requests [a, b) as this cluster serves
        them: outputs of at least one token, corpora folded onto the configured ones, the
        whole corpus where a request does not say, the KV each reserves."""
        exp = self.experiment
        memory = self.memory

        def block(a: int, b: int) -> dict[str, np.ndarray]:
            part = requests[a:b]
            unique = part.unique_tokens
            pre = part.prefill_tokens  # -1: None (all unique tokens are new)
            prefill = unique if pre is None else np.where(pre < 0, unique,
                                                          np.minimum(pre, unique))
            output = np.maximum(part.output_tokens, 1)
            shared_col = part.shared_tokens  # -1: None (the whole configured corpus)
            if exp.corpus.corpus_tokens is None:
                # corpora drawn by the workload are folded onto the configured ones
                corpus = part.corpus % exp.corpus.corpora
            else:  # the workload's own corpora (Mooncake); -1: the request shares nothing
                # (``if r.shared_tokens``: None and 0 share nothing)
                reads = np.zeros(b - a, bool) if shared_col is None else shared_col > 0
                corpus = np.where(reads, part.corpus, -1)
            shared = exp.corpus.tokens
            shared_tokens = (np.full(b - a, shared, dtype=np.int64) if shared_col is None
                             else np.where(shared_col < 0, shared, shared_col))
            columns = {"unique_tokens": unique, "prefill_tokens": prefill, "output_tokens": output,
                       "corpus": corpus, "shared_tokens": shared_tokens,
                       "kv_bytes": memory.request_bytes(unique, output, shared_tokens)}
            return {name: np.asarray(c, dtype=np.int64) for name, c in columns.items()}

        return block

    def _check_fits(self, plan: PlanBlock, n: int) -> None:
        """Fail before the run when no planned request fits a replica (a pass over the
        plan a block at a time: nothing per request is kept)."""
        if not n:
            return
        smallest = min(int(plan(a, min(n, a + PLAN_BLOCK))["kv_bytes"].min())
                       for a in range(0, n, PLAN_BLOCK))
        if smallest > self.memory.kv_capacity_bytes:
            carries = " + workload.shared.tokens" if self.memory.carries_shared else ""
            raise ValueError(
                f"no request fits: the smallest needs {smallest / GIB:.2f} GiB of KV "
                f"(workload.unique_tokens + workload.output_tokens{carries}) but a "
                f"replica has {self.memory.kv_capacity_bytes / GIB:.2f} GiB left after weights "
                f"and shared KV (cluster.unique.chip, cluster.unique.tp, "
                f"cluster.unique.hbm_usable_fraction)")

    def _build_nodes(self) -> None:
        exp = self.experiment
        unique, shared_cls = exp.cluster.unique, exp.cluster.shared
        tp = unique.tp
        if tp < 1 or unique.nodes % tp:
            raise ValueError(f"cluster.unique.tp: expected a divisor of cluster.unique.nodes "
                             f"({unique.nodes}), got {tp}")
        if exp.batching.max_running < 1:
            raise ValueError(f"batching.max_running: expected >= 1, got "
                             f"{exp.batching.max_running}")
        replicas = unique.nodes // tp
        S = shared_cls.nodes if self.remote_shared else 0
        self.pricer = Pricer(
            exp.model, exp.system, exp.precision, unique.chip, shared_cls.chip, tp=tp,
            shared_nodes=max(1, shared_cls.nodes) if exp.disaggregated else 1,
            keep_fraction=exp.corpus.keep_fraction, chunk_tokens=exp.corpus.chunk_tokens,
            overlap=exp.batching.overlap, node_link=unique.link)
        P = exp.cluster.prefill.nodes if exp.batching.prefill_placement == "dedicated" else 0
        hosts = [f"unique{i}" for i in range(replicas)] + [f"shared{s}" for s in range(S)]
        hosts += [f"prefill{p}" for p in range(P)]
        self.fabric: Fabric | None = None
        if S or P:
            fab = exp.cluster.fabric
            graph = build_topology(fab.topology, hosts, hosts_per_leaf=fab.hosts_per_leaf,
                                   spines=fab.spines)
            self.fabric = Fabric(self.engine, graph, bandwidth_GBps=fab.bandwidth_GBps,
                                 latency_ns=fab.latency_ns,
                                 switch_latency_ns=fab.switch_latency_ns,
                                 message_ns=fab.message_ns)
        host_of = {h: i for i, h in enumerate(self.fabric.hosts)} if self.fabric else {}
        total_chunks = exp.corpus.total_chunks
        self.shared: list[SharedNode] = [
            SharedNode(s, host_of.get(f"shared{s}", -1), self.engine, self.fabric, self.pricer,
                       local_chunks=len(range(s, total_chunks, S)),
                       max_batch=exp.batching.max_batch, window_ns=exp.batching.window_ns,
                       decode_first=exp.batching.shared_policy == "decode_first")
            for s in range(S)
        ]
        service_rng = self.engine.rng["service"]
        scale = ((lambda: float(service_rng.exponential()))
                 if exp.run.service == "exponential" else None)
        self.unique: list[UniqueNode] = [
            UniqueNode(i, host_of.get(f"unique{i}", -1), self.engine, self.pricer,
                       self.records, fabric=self.fabric, shared_nodes=self.shared,
                       service_scale=scale, step_mode=exp.run.granularity == "step",
                       remote=self.remote_shared,
                       capacity_bytes=self.memory.kv_capacity_bytes,
                       max_running=exp.batching.max_running,
                       prefill_chunk_tokens=exp.batching.prefill_chunk_tokens, tp=tp,
                       microbatches=exp.batching.microbatches)
            for i in range(replicas)
        ]
        self.unused_shared_nodes = shared_cls.nodes - S
        self.prefill: list[PrefillNode] = []
        self.prefill_capacity_bytes = 0
        if P:
            self._build_prefill_nodes(P, S, host_of, scale)

    def _build_prefill_nodes(self, P: int, S: int, host_of: dict[str, int],
                             scale: Any) -> None:
        """Dedicated prefill nodes: their own chip and HBM plan (weights and what the
        system keeps resident, then room for the prompts in flight), priced by their own
        pricer, sending corpus work to the same shared nodes."""
        exp = self.experiment
        pcls, shared_cls = exp.cluster.prefill, exp.cluster.shared
        plan = memory_plan(
            exp.model, exp.precision, exp.system, pcls.chip, 1, shared_cls.chip,
            shared_cls.nodes, exp.corpus.total_corpus_tokens, exp.corpus.total_chunks,
            exp.corpus.chunk_tokens, exp.corpus.describe(),
            unique_usable=pcls.hbm_usable_fraction,
            shared_usable=shared_cls.hbm_usable_fraction)
        self.prefill_capacity_bytes = plan.kv_capacity_bytes
        pricer = Pricer(
            exp.model, exp.system, exp.precision, pcls.chip, shared_cls.chip, tp=1,
            shared_nodes=max(1, shared_cls.nodes) if exp.disaggregated else 1,
            keep_fraction=exp.corpus.keep_fraction, chunk_tokens=exp.corpus.chunk_tokens,
            overlap=exp.batching.overlap, node_link=exp.cluster.unique.link)
        self.prefill = [
            PrefillNode(p, host_of.get(f"prefill{p}", -1), self.engine, pricer, self.records,
                        fabric=self.fabric, shared_nodes=self.shared, service_scale=scale,
                        step_mode=exp.run.granularity == "step", remote=self.remote_shared,
                        capacity_bytes=plan.kv_capacity_bytes,
                        max_running=exp.batching.max_running,
                        prefill_chunk_tokens=exp.batching.prefill_chunk_tokens,
                        kv_bytes_per_token=plan.kv_bytes_per_token)
            for p in range(P)
        ]

    def _build_router(self, make_router: RouterFactory | None) -> ShardRouter:
        """One query router per corpus (the workload's chunk router, or ``make_router``'s,
        e.g. a replayed trace's), joined into one shard router over the shared nodes."""
        exp = self.experiment
        factory = make_router or default_router_factory(exp)
        rng = self.engine.rng["routing"]
        uniform = _is_uniform(exp.corpus.popularity)
        S = exp.cluster.shared.nodes
        routers: list[QueryRouter] = []
        offset = 0  # corpus c's chunks are global chunks offset .. offset + n - 1
        for c, n in enumerate(exp.corpus.corpus_chunk_counts):
            chunk_router = factory(c, rng)
            if hasattr(chunk_router, "query_router"):  # e.g. a replay: counts its own way
                routers.append(chunk_router.query_router(n, S, rng, offset=offset))
            else:
                k = int(getattr(chunk_router, "k", exp.corpus.keep_chunks_of(n)))
                routers.append(QueryRouter(chunk_router, n, k, S, rng, uniform=uniform,
                                           offset=offset))
            offset += n
        return ShardRouter(routers, exp.corpus.corpus_chunk_counts, S,
                           single_corpus=exp.corpus.corpus_tokens is None)

    def start(self) -> None:
        """Start the request driver (and the fault schedule)."""
        if self.faults is not None:
            self.faults.start()
        self.driver.start()


def default_router_factory(exp: Experiment) -> RouterFactory:
    """The workload's statistical chunk router for each corpus."""
    corpus, popularity = exp.corpus, exp.corpus.popularity
    if corpus.corpus_tokens is not None:  # each corpus its own size (a Mooncake trace)
        def per_corpus(c: int, rng: np.random.Generator) -> ChunkRouter:
            t = max(1, corpus.corpus_tokens[c])  # type: ignore[index]
            return ChunkRouter(SharedCorpusSpec(
                tokens=t, chunk_tokens=min(corpus.chunk_tokens, t),
                keep_fraction=corpus.keep_fraction, popularity=popularity), rng)
        return per_corpus
    spec = SharedCorpusSpec(tokens=corpus.tokens, chunk_tokens=corpus.chunk_tokens,
                            keep_fraction=corpus.keep_fraction, popularity=popularity,
                            corpora=corpus.corpora)
    return lambda _corpus, rng: ChunkRouter(spec, rng)


def _is_uniform(popularity: Any) -> bool:
    """'uniform', or Zipf with exponent 0 (config: ``popularity: uniform | {zipf: s}``)."""
    if popularity is None or popularity == "uniform":
        return True
    s = popularity.get("zipf") if isinstance(popularity, dict) else getattr(popularity, "zipf", None)
    return s is not None and float(s) == 0.0


__all__ = ["Cluster", "RouterFactory", "default_router_factory"]
