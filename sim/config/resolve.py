"""``resolve(config) -> Experiment``: the ONLY reader of config fields.

Every section of a validated ``ExperimentConfig`` is read here once and turned into the
engine's typed sections; the workload's arrival plan is drawn (seeded streams), the
trace's own corpora (Mooncake, ``workload.shared.source: trace``) take the place of the
one-chunk stand-in the experiment holds until then, and the HBM plan is computed once, for
the corpora the run really has. The closed form (``scenario``) and the studies
read the same ``Experiment``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from hw.specs import LinkSpec, load_chip, load_link
from sim.config.schema import ExperimentConfig
from sim.engine.experiment import (
    UNBOUNDED,
    BatchingSpec,
    ClusterSpec,
    CorpusSpec,
    Experiment,
    FabricSpec,
    FaultPlan,
    FaultSpec,
    PrefillNodes,
    RunSpec,
    SharedNodes,
    SizeLaws,
    UniqueNodes,
)
from sim.engine.kernel import RngStreams
from workloads.arrivals import ArrivalPlan, build_arrivals
from workloads.distributions import TokenDistribution
from workloads.models import get_model
from workloads.request import RequestTable
from workloads.sharing import SharedCorpusSpec
from workloads.systems import get_system

DEFAULT_HOSTS_PER_LEAF = 8  # used by topologies without leaves only as a placeholder


def resolve(cfg: ExperimentConfig, *, with_workload: bool = True) -> Experiment:
    """The ``Experiment`` a validated config describes. With ``with_workload`` (default)
    the arrival plan is drawn and the run's requests are part of it; without, the
    experiment has no requests (the closed form and capacity checks need none)."""
    cluster, run, shared = cfg.cluster, cfg.run, cfg.workload.shared
    if run.duration_s is None and run.requests is None and cfg.workload.arrivals.kind != "trace":
        raise ValueError("run: set run.requests and/or run.duration_s to bound the run")
    if shared.source == "trace":
        # the corpora and their sizes come with the plan (below); until then one chunk
        # stands for them, so the experiment has a shared context (a remote one for moska)
        shared_tokens = int(shared.chunk_tokens)
    else:
        shared_tokens = int(shared.tokens or 0)  # source none: no shared context
    fabric = cluster.fabric
    exp = Experiment(
        name=str(cfg.name),
        seed=int(run.seed),
        model=get_model(cfg.model),
        precision=str(cfg.precision),
        system=get_system(cfg.system),
        cluster=ClusterSpec(
            unique=UniqueNodes(int(cluster.unique.nodes), _chip(cluster.unique, cfg),
                               int(cluster.unique.tp), _link(cluster.unique.link),
                               float(cluster.unique.hbm_usable_fraction)),
            shared=SharedNodes(int(cluster.shared.nodes), _chip(cluster.shared, cfg),
                               float(cluster.shared.hbm_usable_fraction)),
            prefill=PrefillNodes(int(cluster.prefill.nodes), _chip(cluster.prefill, cfg),
                                 float(cluster.prefill.hbm_usable_fraction))
            if cfg.batching.prefill_placement == "dedicated" else PrefillNodes(),
            fabric=FabricSpec(
                topology=str(fabric.topology),
                bandwidth_GBps=float(fabric.link.bandwidth_GBps),
                latency_ns=float(fabric.link.latency_ns),
                switch_latency_ns=float(fabric.switch_latency_ns),
                message_ns=float(_link(fabric.link).fixed_ns),
                hosts_per_leaf=int(fabric.hosts_per_leaf or DEFAULT_HOSTS_PER_LEAF),
                spines=int(fabric.spines) if fabric.spines is not None else None)),
        corpus=CorpusSpec(
            tokens=shared_tokens,
            chunk_tokens=int(shared.chunk_tokens or 0) or max(1, shared_tokens),
            keep_fraction=float(shared.keep_fraction),
            corpora=int(shared.corpora or 1),
            popularity=_popularity(shared.popularity),
            replicas=int(shared.replicas)),
        batching=BatchingSpec(
            max_batch=int(cfg.batching.max_batch),
            window_ns=int(round(float(cfg.batching.window_us) * 1000)),
            max_running=int(cfg.batching.max_running) if cfg.batching.max_running is not None
            else UNBOUNDED,
            prefill_chunk_tokens=int(cfg.batching.prefill_chunk_tokens)
            if cfg.batching.prefill_chunk_tokens is not None else None,
            shared_policy=str(cfg.batching.shared_policy),
            overlap=bool(cfg.batching.overlap),
            microbatches=int(cfg.batching.microbatches),
            prefill_placement=str(cfg.batching.prefill_placement)),
        run=RunSpec(
            requests=int(run.requests) if run.requests is not None else None,
            duration_ns=int(round(float(run.duration_s) * 1e9))
            if run.duration_s is not None else None,
            warmup_ns=int(round(float(run.warmup_s) * 1e9)),
            granularity=str(run.granularity),
            service=str(run.service)),
        sizes=_size_laws(cfg),
        faults=FaultPlan(
            faults=tuple(FaultSpec(str(f.kind), str(f.target), int(round(float(f.at_s) * 1e9)),
                                   int(round(float(f.duration_s) * 1e9))
                                   if f.duration_s is not None else None,
                                   float(f.fraction) if f.fraction is not None else 1.0)
                         for f in cfg.faults),
            timeout_ns=int(round(float(cfg.faults_policy.query_timeout_ms) * 1e6))
            if cfg.faults_policy.query_timeout_ms is not None else None,
            on_timeout=str(cfg.faults_policy.on_timeout),
            max_retries=int(cfg.faults_policy.max_retries)),
        config=cfg.to_dict(),
    )
    if not with_workload:
        return exp
    plan = arrival_plan(cfg, exp)
    if plan.corpus_tokens and exp.corpus.tokens:
        exp = exp.with_corpora(plan.corpus_tokens)
    elif shared.source == "trace":  # the replayed requests share no prompt block
        exp = dataclasses.replace(exp, corpus=dataclasses.replace(exp.corpus, tokens=0),
                                  memory=None)
    requests = with_prefill_tokens(plan.requests, cfg.workload.prefill_tokens,
                                   RngStreams(exp.seed)["prefill"])
    if cfg.workload.unique_tokens is None and len(requests):  # the trace's own sizes
        n = len(requests)
        exp = dataclasses.replace(exp, sizes=SizeLaws(
            unique_tokens_mean=int(round(int(requests.unique_tokens.sum()) / n)),
            output_tokens_mean=int(np.maximum(requests.output_tokens, 1).sum()) / n))
    return exp.with_requests(requests, plan.closed_loop_concurrency,
                             _sharing_dict(plan.sharing), plan.notes)


def with_prefill_tokens(requests: Any, law: Any, rng: Any) -> RequestTable:
    """Each request's new prompt tokens under ``workload.prefill_tokens``: 'all' leaves
    them as the arrival process set them (None: all unique tokens are new); a count or a
    distribution (drawn from the ``prefill`` stream) applies to the requests the arrival
    process left undecided, clipped to their unique tokens; 0 makes them decode-only."""
    requests = RequestTable.of(requests)
    if law == "all":
        return requests
    prefill = requests.prefill_tokens
    todo = (np.arange(len(requests)) if prefill is None
            else np.flatnonzero(prefill == -1))  # -1: None, the arrival process left it
    if not len(todo):
        return requests
    if isinstance(law, int):
        counts = np.full(len(todo), law, dtype=np.int64)
    else:
        counts = TokenDistribution.from_config(law, "workload.prefill_tokens").sample(
            rng, len(todo))
    out = (np.full(len(requests), -1, dtype=np.int64) if prefill is None else prefill.copy())
    out[todo] = np.minimum(counts.astype(np.int64), requests.unique_tokens[todo])
    return requests.with_prefill_tokens(out)


def _chip(group: Any, cfg: ExperimentConfig) -> Any:
    """A node group's chip preset at its configured clock, with the run's kernel choices."""
    overrides: dict[str, Any] = {"clock": str(group.clock)}
    kernels = cfg.kernels.as_chip_overrides()
    if kernels:
        overrides["kernel_profiles"] = kernels
    return load_chip(group.chip, overrides)


def arrival_plan(cfg: ExperimentConfig, exp: Experiment) -> ArrivalPlan:
    """The workload's arrival plan for ``cfg`` (drawn from the run's seeded streams)."""
    wl = cfg.workload
    arrivals = wl.arrivals
    rng = RngStreams(exp.seed)
    shared = None
    if exp.corpus.tokens and wl.shared.source == "config":
        c = exp.corpus
        shared = SharedCorpusSpec(tokens=c.tokens, chunk_tokens=c.chunk_tokens,
                                  keep_fraction=c.keep_fraction, popularity=wl.shared.popularity,
                                  corpora=c.corpora)
    params = {name: getattr(arrivals, name) for name in type(arrivals).model_fields
              if name != "kind"}
    return build_arrivals(
        arrivals.kind,
        unique_tokens=_law(wl.unique_tokens, "workload.unique_tokens"),
        output_tokens=_law(wl.output_tokens, "workload.output_tokens"),
        shared=shared, rng_arrivals=rng["arrivals"], rng_sizes=rng["sizes"],
        max_requests=exp.run.requests, duration_ns=exp.run.duration_ns,
        trace_corpora=wl.shared.source == "trace", **params)


@dataclass(frozen=True)
class AnalysisSettings:
    """The closed-form sweeps of ``moska-sim analyze`` (config section ``analysis``)."""

    batch: int
    batch_sweep: tuple[int, ...]
    shared_tokens_sweep: tuple[int, ...]


def analysis_settings(cfg: ExperimentConfig) -> AnalysisSettings:
    """The ``analysis`` section, resolved."""
    an = cfg.analysis
    return AnalysisSettings(int(an.batch), tuple(int(b) for b in an.batch_sweep),
                            tuple(int(s) for s in an.shared_tokens_sweep))


def _law(value: Any, field: str) -> TokenDistribution:
    """A token-count law; a trace that brings its own sizes needs none (a placeholder)."""
    return TokenDistribution.fixed(1) if value is None else TokenDistribution.from_config(value, field)


def _size_laws(cfg: ExperimentConfig) -> SizeLaws:
    """The means the closed form prices (from a trace's requests, after the plan, when the
    config gives no laws)."""
    wl = cfg.workload
    if wl.unique_tokens is None or wl.output_tokens is None:
        return SizeLaws()
    return SizeLaws(unique_tokens_mean=_mean_tokens(wl.unique_tokens),
                    output_tokens_mean=float(_mean_tokens(wl.output_tokens, exact=True)))


def _mean_tokens(dist: Any, exact: bool = False) -> Any:
    """Mean of a token-count setting (an int or a distribution section); rounded to whole
    tokens unless ``exact``."""
    if isinstance(dist, int) and not isinstance(dist, bool):
        return dist
    if isinstance(dist, dict):
        mean = float(dist.get("mean") or (dist["min"] + dist["max"]) / 2)
    else:
        m = getattr(dist, "mean", None)
        if callable(m):
            mean = float(m())
        elif m is not None:
            mean = float(m)
        else:
            mean = float((dist.min + dist.max) / 2)
    return mean if exact else int(round(mean))


def _link(link: Any) -> LinkSpec:
    """A configured link as a ``LinkSpec``: a preset's (its per-message ``fixed_ns`` too, the
    library cost its achieved bandwidth was fitted with) with the configured bandwidth and
    latency; without a preset, those two alone."""
    bandwidth, latency = float(link.bandwidth_GBps), float(link.latency_ns)
    if link.preset:
        return dataclasses.replace(load_link(str(link.preset)), bandwidth_GBps=bandwidth,
                                   latency_ns=latency)
    return LinkSpec("link", bandwidth, latency)


def _popularity(popularity: Any) -> Any:
    """'uniform', or ``{'zipf': s}`` as plain data (what the routers take)."""
    if popularity is None or isinstance(popularity, str):
        return popularity or "uniform"
    return popularity


def _sharing_dict(stats: Any) -> dict | None:
    if stats is None:
        return None
    return stats.to_dict()


__all__ = ["AnalysisSettings", "analysis_settings", "arrival_plan", "resolve",
           "with_prefill_tokens"]
