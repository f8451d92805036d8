"""``Experiment``: everything one simulation needs, resolved to typed sections.

``sim.config.resolve`` builds it from a validated config (the only reader of config
fields); tests and benchmarks build one with :func:`make_experiment`. The engine reads
only this: each part takes its own section (the cluster its ``cluster``, a shared node its
``batching`` limits, the summary its ``run`` bounds), never a dotted config path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hw.specs import ChipSpec, LinkSpec, load_chip, load_link
from sim.engine.deployment import MemoryPlan, memory_plan
from workloads.models import ModelSpec, get_model
from workloads.request import RequestTable
from workloads.systems import ServingSystem, get_system
from workloads.systems.ops import n_chunks

UNBOUNDED = 1 << 30  # batching.max_running: null (HBM alone bounds admission)
HBM_USABLE_FRACTION = 0.9  # of each chip's HBM; the rest is activations and workspace
NODE_LINK = "nvlink4"  # a tensor-parallel replica's internal link, unless configured


def _node_link() -> LinkSpec:
    return load_link(NODE_LINK)


@dataclass(frozen=True)
class UniqueNodes:
    """The unique node class: how many chips, which chip, tensor-parallel group size (a
    replica of ``tp`` chips is one multi-GPU node, its chips joined by ``link``), and the
    fraction of each chip's HBM that holds weights and KV."""

    nodes: int
    chip: ChipSpec
    tp: int = 1
    link: LinkSpec = field(default_factory=_node_link)
    hbm_usable_fraction: float = HBM_USABLE_FRACTION

    @property
    def replicas(self) -> int:
        return self.nodes // self.tp


@dataclass(frozen=True)
class SharedNodes:
    """The shared node class: how many, which chip, and the usable fraction of its HBM."""

    nodes: int
    chip: ChipSpec
    hbm_usable_fraction: float = HBM_USABLE_FRACTION


@dataclass(frozen=True)
class FabricSpec:
    """The interconnect between nodes: topology, per-link bandwidth and latencies."""

    topology: str = "switch"
    bandwidth_GBps: float = 450.0
    latency_ns: float = 0.0
    switch_latency_ns: float = 0.0
    message_ns: float = 0.0  # a link preset's per-message library cost (fixed_ns); 0: none
    hosts_per_leaf: int = 8
    spines: int | None = None


@dataclass(frozen=True)
class PrefillNodes:
    """Dedicated prefill nodes (``batching.prefill_placement: dedicated``): how many, which
    chip, the usable fraction of its HBM; none by default."""

    nodes: int = 0
    chip: ChipSpec | None = None
    hbm_usable_fraction: float = HBM_USABLE_FRACTION


@dataclass(frozen=True)
class ClusterSpec:
    unique: UniqueNodes
    shared: SharedNodes
    fabric: FabricSpec
    prefill: PrefillNodes = PrefillNodes()


@dataclass(frozen=True)
class CorpusSpec:
    """The shared corpora: ``corpora`` of ``tokens`` each, or (a Mooncake trace) each its own
    size in ``corpus_tokens``; chunking, the kept fraction and chunk popularity."""

    tokens: int = 0
    chunk_tokens: int = 1
    keep_fraction: float = 1.0
    corpora: int = 1
    corpus_tokens: tuple[int, ...] | None = None
    popularity: Any = "uniform"
    replicas: int = 1  # copies of each chunk: chunk g on shared nodes g % S, (g+1) % S, ...

    @property
    def chunks_per_corpus(self) -> int:
        """Chunks of one configured corpus (``workload.shared.tokens``)."""
        return n_chunks(self.tokens, self.chunk_tokens) if self.tokens else 0

    @property
    def corpus_chunk_counts(self) -> tuple[int, ...]:
        """Chunks of each corpus, in corpus order (a short last chunk counts as one)."""
        if self.corpus_tokens is not None:
            return tuple(n_chunks(max(1, t), self.chunk_tokens) for t in self.corpus_tokens)
        return (self.chunks_per_corpus,) * self.corpora if self.tokens else ()

    @property
    def total_chunks(self) -> int:
        return sum(self.corpus_chunk_counts)

    @property
    def total_corpus_tokens(self) -> int:
        """Shared tokens stored once across all corpora."""
        if self.corpus_tokens is not None:
            return sum(self.corpus_tokens)
        return self.tokens * self.corpora

    def keep_chunks_of(self, n: int) -> int:
        """Chunks a query keeps of an ``n``-chunk corpus: round(keep_fraction x n), >= 1."""
        return max(1, min(n, round(self.keep_fraction * n))) if n else 0

    @property
    def keep_chunks(self) -> int:
        """Chunks each query of a configured corpus keeps."""
        return self.keep_chunks_of(self.chunks_per_corpus)

    def describe(self) -> str:
        """Where the corpus size came from, for error messages."""
        if self.corpus_tokens is not None:
            return (f"{len(self.corpus_tokens)} corpora of {self.total_corpus_tokens} tokens "
                    "in all, read off the workload's trace")
        return f"workload.shared.tokens={self.tokens} x corpora {self.corpora}"


@dataclass(frozen=True)
class BatchingSpec:
    """Shared nodes' batching limits and unique nodes' admission cap."""

    max_batch: int = 256
    window_ns: int = 0
    max_running: int = UNBOUNDED
    prefill_chunk_tokens: int | None = 2048  # None: whole prompts in one step
    prefill_placement: str = "on_unique"  # or "dedicated": cluster.prefill nodes
    shared_policy: str = "decode_first"  # or "fifo"
    overlap: bool = True  # unique attention while the shared round trip is in flight
    microbatches: int = 1  # 2: the decode batch in two halves that take turns (ping-pong)


@dataclass(frozen=True)
class RunSpec:
    """How long, how faithfully, with which service-time law."""

    requests: int | None = None
    duration_ns: int | None = None
    warmup_ns: int = 0
    granularity: str = "step"
    service: str = "deterministic"


@dataclass(frozen=True)
class FaultSpec:
    """One injected fault: ``kind`` 'fail' or 'degrade'; ``target`` 'shared<i>', 'unique<i>'
    or a fabric cable 'a-b'; from ``at_ns`` for ``duration_ns`` (None: for ever);
    ``fraction`` of the bandwidth left (degrade)."""

    kind: str
    target: str
    at_ns: int
    duration_ns: int | None = None
    fraction: float = 1.0

    @property
    def end_ns(self) -> int | None:
        return None if self.duration_ns is None else self.at_ns + self.duration_ns


@dataclass(frozen=True)
class FaultPlan:
    """The run's faults and what happens to work they strand: ``timeout_ns`` (None: wait
    for recovery), ``on_timeout`` 'fail' or 'retry', ``max_retries``."""

    faults: tuple[FaultSpec, ...] = ()
    timeout_ns: int | None = None
    on_timeout: str = "fail"
    max_retries: int = 2


@dataclass(frozen=True)
class SizeLaws:
    """The workload's token-count laws (the closed form prices the mean request)."""

    unique_tokens_mean: int = 1
    output_tokens_mean: float = 1.0


@dataclass(frozen=True)
class WorkloadPlan:
    """The run's requests (arrival order) and what the arrival process said about them."""

    requests: RequestTable = field(default_factory=RequestTable.empty)
    closed_loop_concurrency: int | None = None
    sharing: dict | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Experiment:
    """One simulation, fully resolved; the HBM plan is computed once, when it is built."""

    name: str
    seed: int
    model: ModelSpec
    precision: str
    system: ServingSystem
    cluster: ClusterSpec
    corpus: CorpusSpec
    batching: BatchingSpec
    run: RunSpec
    workload: WorkloadPlan = WorkloadPlan()
    sizes: SizeLaws = SizeLaws()
    faults: FaultPlan = FaultPlan()
    memory: MemoryPlan = field(default=None)  # type: ignore[assignment]
    config: dict | None = field(default=None, repr=False)  # the resolved config, plain data

    def __post_init__(self) -> None:
        if self.memory is None:
            object.__setattr__(self, "memory", memory_plan(
                self.model, self.precision, self.system, self.cluster.unique.chip,
                self.cluster.unique.tp, self.cluster.shared.chip, self.cluster.shared.nodes,
                self.corpus.total_corpus_tokens, self.corpus.total_chunks,
                self.corpus.chunk_tokens, self.corpus.describe(),
                unique_usable=self.cluster.unique.hbm_usable_fraction,
                shared_usable=self.cluster.shared.hbm_usable_fraction,
                replicas=self.corpus.replicas))

    @property
    def disaggregated(self) -> bool:
        """Corpus attention runs on shared nodes over the fabric (a property of the system)."""
        return self.system.disaggregated

    @property
    def remote_shared(self) -> bool:
        """Queries go to shared nodes: a disaggregated system with a shared corpus."""
        return self.system.disaggregated and self.corpus.tokens > 0

    def with_requests(self, requests: Any, closed_loop_concurrency: int | None = None,
                      sharing: dict | None = None, notes: tuple[str, ...] = ()) -> Experiment:
        """The same experiment driven by ``requests`` (tests, benchmarks, replays)."""
        plan = WorkloadPlan(RequestTable.of(requests), closed_loop_concurrency, sharing,
                            tuple(notes))
        return dataclasses.replace(self, workload=plan)

    def with_corpora(self, corpus_tokens: tuple[int, ...]) -> Experiment:
        """The experiment with the workload's own corpora (each its own size); the HBM plan
        is recomputed for them (the trace's corpora must fit too)."""
        corpus = dataclasses.replace(self.corpus, corpus_tokens=tuple(int(t) for t in corpus_tokens),
                                     corpora=len(corpus_tokens))
        return dataclasses.replace(self, corpus=corpus, memory=None)


# flat keyword -> (section, field) for make_experiment
_FLAT: dict[str, tuple[str, str]] = {
    "unique_nodes": ("unique", "nodes"), "unique_chip": ("unique", "chip"), "tp": ("unique", "tp"),
    "node_link": ("unique", "link"), "unique_hbm_fraction": ("unique", "hbm_usable_fraction"),
    "shared_nodes": ("shared", "nodes"), "shared_chip": ("shared", "chip"),
    "shared_hbm_fraction": ("shared", "hbm_usable_fraction"),
    "topology": ("fabric", "topology"), "bandwidth_GBps": ("fabric", "bandwidth_GBps"),
    "latency_ns": ("fabric", "latency_ns"), "switch_latency_ns": ("fabric", "switch_latency_ns"),
    "hosts_per_leaf": ("fabric", "hosts_per_leaf"), "spines": ("fabric", "spines"),
    "shared_tokens": ("corpus", "tokens"), "chunk_tokens": ("corpus", "chunk_tokens"),
    "keep_fraction": ("corpus", "keep_fraction"), "corpora": ("corpus", "corpora"),
    "corpus_tokens": ("corpus", "corpus_tokens"), "popularity": ("corpus", "popularity"),
    "max_batch": ("batching", "max_batch"), "window_ns": ("batching", "window_ns"),
    "max_running": ("batching", "max_running"),
    "prefill_chunk_tokens": ("batching", "prefill_chunk_tokens"),
    "shared_policy": ("batching", "shared_policy"), "overlap": ("batching", "overlap"),
    "microbatches": ("batching", "microbatches"),
    "prefill_placement": ("batching", "prefill_placement"),
    "prefill_nodes": ("prefill", "nodes"), "prefill_chip": ("prefill", "chip"),
    "requests": ("run", "requests"), "duration_ns": ("run", "duration_ns"),
    "warmup_ns": ("run", "warmup_ns"), "granularity": ("run", "granularity"),
    "service": ("run", "service"), "replicas": ("corpus", "replicas"),
}


def make_experiment(**overrides: Any) -> Experiment:
    """An ``Experiment`` for programmatic use (tests, benchmarks): the default cluster of
    ``workloads/default.yaml`` (moska, Llama 3.1 8B fp8, 4 moska-unique + 2 moska-shared
    nodes on a 450 GB/s switch, a 1Mi-token corpus, 90 % of HBM usable, nvlink4 inside a
    replica) with ``overrides`` applied, by flat name (``shared_tokens=...``, ``tp=...``).
    Chip, link, model and system names are looked up."""
    top: dict[str, Any] = dict(name="experiment", seed=0, model="llama-3.1-8b", precision="fp8",
                               system="moska")
    sections: dict[str, dict[str, Any]] = {
        "unique": dict(nodes=4, chip="moska-unique", tp=1, link=NODE_LINK,
                       hbm_usable_fraction=HBM_USABLE_FRACTION),
        "shared": dict(nodes=2, chip="moska-shared", hbm_usable_fraction=HBM_USABLE_FRACTION),
        "prefill": dict(nodes=0, chip=None),
        "fabric": dict(topology="switch", bandwidth_GBps=450.0, latency_ns=1000.0,
                       switch_latency_ns=0.0, hosts_per_leaf=8, spines=None),
        "corpus": dict(tokens=2**20, chunk_tokens=2048, keep_fraction=0.25, corpora=1,
                       corpus_tokens=None, popularity="uniform"),
        "batching": dict(max_batch=256, window_ns=50_000, max_running=UNBOUNDED,
                         prefill_chunk_tokens=2048, shared_policy="decode_first", overlap=True,
                         microbatches=1),
        "run": dict(requests=None, duration_ns=None, warmup_ns=0, granularity="step",
                    service="deterministic"),
    }
    for key, value in overrides.items():
        if key in top:
            top[key] = value
        elif key in _FLAT:
            section, name = _FLAT[key]
            sections[section][name] = value
        else:
            raise TypeError(f"make_experiment: unknown field {key!r}")
    for sec in ("unique", "shared", "prefill"):
        if isinstance(sections[sec]["chip"], str):
            sections[sec]["chip"] = load_chip(sections[sec]["chip"])
    if isinstance(sections["unique"]["link"], str):
        sections["unique"]["link"] = load_link(sections["unique"]["link"])
    model = get_model(top["model"]) if isinstance(top["model"], str) else top["model"]
    system = get_system(top["system"]) if isinstance(top["system"], str) else top["system"]
    return Experiment(
        name=top["name"], seed=top["seed"], model=model, precision=top["precision"],
        system=system,
        cluster=ClusterSpec(UniqueNodes(**sections["unique"]), SharedNodes(**sections["shared"]),
                            FabricSpec(**sections["fabric"]), PrefillNodes(**sections["prefill"])),
        corpus=CorpusSpec(**sections["corpus"]), batching=BatchingSpec(**sections["batching"]),
        run=RunSpec(**sections["run"]))


__all__ = [
    "HBM_USABLE_FRACTION",
    "NODE_LINK",
    "UNBOUNDED",
    "BatchingSpec",
    "ClusterSpec",
    "CorpusSpec",
    "Experiment",
    "FabricSpec",
    "PrefillNodes",
    "RunSpec",
    "SharedNodes",
    "SizeLaws",
    "UniqueNodes",
    "WorkloadPlan",
    "make_experiment",
]
