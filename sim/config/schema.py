"""The experiment schema: every section and field of an experiment YAML, with its default.

Models are frozen and reject unknown keys. Defaults are written once, here; a validated
``ExperimentConfig`` is fully resolved (defaults filled in, sizes as ints, paths absolute),
and ``to_dict()`` of it validates back to an equal config. docs/config.md documents each
field; a test checks that every field here appears there.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, create_model, model_validator

from sim.config.fields import (
    MAX_BANDWIDTH_GBPS,
    MAX_BATCH,
    MAX_CONTEXT_TOKENS,
    MAX_CORPORA,
    MAX_CV,
    MAX_DURATION_S,
    MAX_LATENCY_NS,
    MAX_NODES,
    MAX_PRICE_PER_HOUR,
    MAX_REQUESTS,
    MAX_SEED,
    MAX_SHARED_TOKENS,
    MAX_WINDOW_US,
    MAX_ZIPF,
    MIN_BANDWIDTH_GBPS,
    Expect,
    StrictModel,
    arrival_bounds,
    by_shape,
    choice,
    cross_fail,
    existing_file,
    fail,
    integer,
    number,
    pattern,
    registered,
    size,
    size_list,
    tagged,
)
from sim.config.yaml_source import dump_yaml
from sim.units import BINARY_SUFFIXES, UnitError, describe, parse_int
from workloads.arrivals import ArrivalProcess, Param, arrival_processes, get_arrivals
from workloads.errors import WorkloadError

MiB_TOKENS = BINARY_SUFFIXES["Mi"]
MAX_FAULTS = 1024  # faults in one config


def _chips() -> list[str]:
    from hw.specs import available_chips  # lazy: hw is imported only when a config is checked

    return available_chips()


def _links() -> list[str]:
    from hw.specs import available_links

    return available_links()


def _models() -> list[str]:
    from workloads.models import available_models

    return available_models()


def _systems() -> list[str]:
    from workloads.systems import available_systems

    return available_systems()


# ----------------------------------------------------------------------------- cluster


class NodeGroup(StrictModel):
    """A group of identical nodes (one chip each)."""

    nodes: integer(ge=0, le=MAX_NODES) = Field(description="number of nodes in the group")
    chip: registered("chip", _chips) = Field(description="chip preset name (hw/presets)")
    price_per_hour: number(ge=0, le=MAX_PRICE_PER_HOUR) | None = Field(
        None, description="USD per node hour")
    hbm_usable_fraction: number(gt=0, le=1) = Field(
        0.9, description="fraction of each chip's HBM that holds weights and KV; the rest is "
                         "reserved for activations and workspace (vLLM's default 0.9)")
    clock: choice("burst", "sustained") = Field(
        "sustained", description="compute clock: sustained (continuous load at the power "
                                 "limit, as a serving node runs) or burst (an idle GPU's)")


class Link(StrictModel):
    """One link: bandwidth per direction and one-way latency (optionally a preset)."""

    preset: registered("link preset", _links) | None = Field(
        None, description="link preset name; its numbers fill the fields not given")
    bandwidth_GBps: number(ge=MIN_BANDWIDTH_GBPS, le=MAX_BANDWIDTH_GBPS) = Field(
        description="GB/s per direction, 1 GB = 1e9 B")
    latency_ns: number(ge=0, le=MAX_LATENCY_NS) = Field(description="one-way latency, ns")

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        """Numbers of a named preset fill in what the mapping leaves out."""
        preset = data.get("preset") if isinstance(data, dict) else None
        if isinstance(preset, str) and preset in _links():
            from hw.specs import load_link

            spec = load_link(preset)
            defaults = {"bandwidth_GBps": spec.bandwidth_GBps, "latency_ns": spec.latency_ns}
            return {**defaults, **data}
        return data


def _nvlink() -> Link:
    return Link(preset="nvlink4")


class UniqueNodeGroup(NodeGroup):
    """The unique nodes (chips); ``tp`` of them form one replica (a multi-GPU node)."""

    tp: integer(ge=1, le=MAX_NODES) = Field(
        1, description="tensor-parallel chips per replica (every system); a replica pays "
                       "two all-reduces per layer over its link")
    link: Link = Field(default_factory=_nvlink,
                       description="a replica's internal link between its chips (default: "
                                   "the nvlink4 preset); its collectives run on it")


class Fabric(StrictModel):
    """The interconnect between all nodes."""

    topology: choice("switch", "ring", "fat_tree") = Field(
        "switch", description="switch | ring | fat_tree")
    link: Link = Field(description="every link of the fabric")
    hosts_per_leaf: integer(ge=1, le=MAX_NODES) | None = Field(
        None, description="nodes per leaf switch; fat_tree only (default 4 there)")
    spines: integer(ge=1, le=MAX_NODES) | None = Field(
        None, description="spine switches; fat_tree only (default: hosts_per_leaf)")
    switch_latency_ns: number(ge=0, le=MAX_LATENCY_NS) = Field(0.0, description="extra latency per switch hop, ns")

    @model_validator(mode="before")
    @classmethod
    def _fat_tree_defaults(cls, data: Any) -> Any:
        """fat_tree: 4 hosts per leaf unless given, and as many spines as hosts per leaf."""
        if not (isinstance(data, dict) and data.get("topology") == "fat_tree"):
            return data
        data = dict(data)
        if data.get("hosts_per_leaf") is None:
            data["hosts_per_leaf"] = 4
        if data.get("spines") is None:
            data["spines"] = data["hosts_per_leaf"]
        return data

    @model_validator(mode="after")
    def _fat_tree_only(self) -> Fabric:
        if self.topology == "fat_tree":
            return self
        stray = [name for name in ("hosts_per_leaf", "spines") if getattr(self, name) is not None]
        if stray:
            raise cross_fail([(name, (f"only used by topology 'fat_tree' (topology is "
                                     f"{self.topology!r}); remove it")) for name in stray])
        return self


class Cluster(StrictModel):
    """Unique nodes (per-request KV), shared nodes (shared-context KV) and the fabric."""

    unique: UniqueNodeGroup = Field(description="nodes that hold each request's own KV")
    shared: NodeGroup = Field(description="nodes that hold the shared context's KV")
    prefill: NodeGroup = Field(
        default_factory=lambda: NodeGroup(nodes=0, chip="h100-sxm"),
        description="dedicated prefill nodes (batching.prefill_placement: dedicated)")
    fabric: Fabric = Field(description="interconnect")

    @model_validator(mode="after")
    def _one_unique_node(self) -> Cluster:
        nodes, tp = self.unique.nodes, self.unique.tp
        if nodes < 1:
            raise cross_fail([("unique.nodes", f"expected an integer >= 1, got {nodes}")])
        if nodes % tp:
            raise cross_fail([("unique.tp", (f"expected a divisor of unique.nodes ({nodes}), "
                                            f"got {tp}"))])
        return self


# ----------------------------------------------------------------------------- workload


def _arrival_field(param: Param) -> tuple[Any, Any]:
    """(type, Field) of one declared arrival parameter."""
    bounds = arrival_bounds(param.name, param.gt, param.ge)
    if param.kind == "number":
        if param.le is not None:
            bounds["le"] = param.le if bounds["le"] is None else min(bounds["le"], param.le)
        kind: Any = number(**bounds)
    elif param.kind == "integer":
        kind = integer(ge=int(bounds["ge"]) if bounds["ge"] is not None else None,
                       le=int(bounds["le"]) if bounds["le"] is not None else None)
    elif param.kind == "file":
        kind = existing_file()
    else:
        kind = choice(*param.options)
    if param.required:
        return kind, Field(description=param.description)
    return kind, Field(param.default, description=param.description)


def arrival_model(process: ArrivalProcess) -> type[StrictModel]:
    """The config section of one registered arrival process, generated from its declared
    parameters (so a new process is one module in ``workloads/arrivals``)."""
    name = "".join(part.title() for part in process.kind.split("_")) + "Arrivals"
    fields: dict[str, Any] = {"kind": (Literal[process.kind], process.kind)}  # type: ignore[valid-type]
    for param in process.params:
        fields[param.name] = _arrival_field(param)
    model = create_model(name, __base__=StrictModel, __doc__=process.description,
                         __module__=__name__, **fields)
    return model


ARRIVAL_MODELS: dict[str, type[StrictModel]] = {p.kind: arrival_model(p)
                                                for p in arrival_processes()}
PoissonArrivals = ARRIVAL_MODELS["poisson"]
GammaArrivals = ARRIVAL_MODELS["gamma"]
ClosedLoopArrivals = ARRIVAL_MODELS["closed_loop"]
TraceArrivals = ARRIVAL_MODELS["trace"]
Arrivals = tagged("kind", list(ARRIVAL_MODELS.values()))


MIN_HELP = "samples below are raised to this"
MAX_HELP = "samples above are lowered to this (null: no cap)"


class _Clipped:
    """Mixin of the sampled distributions whose samples are rounded and clipped to [min, max].

    Each subclass declares ``min`` and ``max`` itself (after ``dist``, so YAML reads well).
    """

    def _bound_issues(self, mean: float | None) -> list[tuple[str, str]]:
        """Problems with the bounds: min above max, or the mean outside them."""
        lo, hi = self.min, self.max  # type: ignore[attr-defined]
        issues = []
        if hi is not None and lo > hi:
            issues.append(("max", f"expected a size >= min ({lo}), got {hi}"))
        elif mean is not None and (mean < lo or (hi is not None and mean > hi)):
            issues.append(("mean", (f"expected a number within [min, max] = [{lo}, "
                                    f"{hi if hi is not None else 'inf'}], got {mean}")))
        return issues


class FixedDist(StrictModel):
    """Every request gets the same value."""

    dist: Literal["fixed"] = "fixed"
    mean: size(ge=1, le=MAX_CONTEXT_TOKENS) = Field(description="the value")

    def expected(self) -> float:
        return float(self.mean)


class UniformDist(StrictModel):
    """Integers uniform on [min, max]."""

    dist: Literal["uniform"] = "uniform"
    min: size(ge=0, le=MAX_CONTEXT_TOKENS) = Field(description="smallest value")
    max: size(ge=1, le=MAX_CONTEXT_TOKENS) = Field(description="largest value")

    @model_validator(mode="after")
    def _ordered(self) -> UniformDist:
        if self.min > self.max:
            raise cross_fail([("max", f"expected a size >= min ({self.min}), got {self.max}")])
        return self

    def expected(self) -> float:
        return (self.min + self.max) / 2


class ExponentialDist(_Clipped, StrictModel):
    """Exponential with the given mean (cv is 1), rounded and clipped."""

    dist: Literal["exponential"] = "exponential"
    mean: number(gt=0, le=MAX_CONTEXT_TOKENS) = Field(description="mean before clipping")
    min: size(ge=0, le=MAX_CONTEXT_TOKENS) = Field(1, description=MIN_HELP)
    max: size(ge=1, le=MAX_CONTEXT_TOKENS) | None = Field(None, description=MAX_HELP)

    @model_validator(mode="after")
    def _bounds(self) -> ExponentialDist:
        if issues := self._bound_issues(self.mean):
            raise cross_fail(issues)
        return self

    def expected(self) -> float:
        return self.mean


class LognormalDist(_Clipped, StrictModel):
    """Lognormal with the given mean and coefficient of variation, rounded and clipped."""

    dist: Literal["lognormal"] = "lognormal"
    mean: number(gt=0, le=MAX_CONTEXT_TOKENS) = Field(description="mean before clipping")
    cv: number(gt=0, le=MAX_CV) = Field(1.0, description="standard deviation / mean")
    min: size(ge=0, le=MAX_CONTEXT_TOKENS) = Field(1, description=MIN_HELP)
    max: size(ge=1, le=MAX_CONTEXT_TOKENS) | None = Field(None, description=MAX_HELP)

    @model_validator(mode="after")
    def _bounds(self) -> LognormalDist:
        if issues := self._bound_issues(self.mean):
            raise cross_fail(issues)
        return self

    def expected(self) -> float:
        return self.mean


class NormalDist(_Clipped, StrictModel):
    """Normal with the given mean and coefficient of variation, rounded and clipped."""

    dist: Literal["normal"] = "normal"
    mean: number(gt=0, le=MAX_CONTEXT_TOKENS) = Field(description="mean before clipping")
    cv: number(gt=0, le=MAX_CV) = Field(description="standard deviation / mean")
    min: size(ge=0, le=MAX_CONTEXT_TOKENS) = Field(1, description=MIN_HELP)
    max: size(ge=1, le=MAX_CONTEXT_TOKENS) | None = Field(None, description=MAX_HELP)

    @model_validator(mode="after")
    def _bounds(self) -> NormalDist:
        if issues := self._bound_issues(self.mean):
            raise cross_fail(issues)
        return self

    def expected(self) -> float:
        return self.mean


Distribution = tagged("dist", [FixedDist, UniformDist, ExponentialDist, LognormalDist, NormalDist])
TokenCount = by_shape(size(ge=1, le=MAX_CONTEXT_TOKENS), Distribution,
                      "a size >= 1 or a mapping {dist: fixed|uniform|exponential|lognormal|"
                      "normal, mean, cv, min, max}")


class Zipf(StrictModel):
    """Zipf popularity: the chunk of rank r is chosen with weight r^-s."""

    zipf: number(ge=0, le=MAX_ZIPF) = Field(description="exponent s (0 is uniform)")


Popularity = by_shape(choice("uniform", what="'uniform' or a mapping {zipf: s}"), Zipf,
                      "'uniform' or a mapping {zipf: s}")


SHARED_SOURCES = ("config", "trace", "none")


class SharedContext(StrictModel):
    """The shared corpus (or corpora) every request attends over, and how it is routed.

    ``source`` says where the corpora come from: ``config`` (``corpora`` of ``tokens``
    each), ``trace`` (a Mooncake trace's shared prompt blocks: the default with such
    arrivals; ``Workload`` fills the default in) or ``none`` (no shared context).
    """

    source: choice(*SHARED_SOURCES) = Field(
        "config", description="where the corpora come from: config (corpora of tokens each), "
                              "trace (a Mooncake trace's shared prompt blocks; the default "
                              "with such arrivals) or none (no shared context)")
    tokens: size(ge=0, le=MAX_SHARED_TOKENS) | None = Field(
        None, description="tokens in each shared corpus (source config only, where it is "
                          "required; 0 = no shared context)")
    chunk_tokens: size(ge=1, le=MAX_SHARED_TOKENS) = Field(2048, description="tokens per chunk (routing unit)")
    keep_fraction: number(gt=0, le=1) = Field(
        1.0, description="fraction of chunks the router keeps per query (0.25 = 75% sparsity)")
    popularity: Popularity = Field("uniform", description="how selections spread over chunks")
    corpora: integer(ge=1, le=MAX_CORPORA) | None = Field(
        None, description="number of distinct shared corpora (source config only; default 1)")
    replicas: integer(ge=1, le=MAX_NODES) = Field(
        1, description="copies of each chunk on distinct shared nodes (chunk g on nodes "
                       "g % S, (g+1) % S, ...): a live copy takes over while a node is down")

    @model_validator(mode="before")
    @classmethod
    def _one_corpus_by_default(cls, data: Any) -> Any:
        """Source config: one corpus unless ``corpora`` says otherwise."""
        if isinstance(data, dict) and data.get("source", "config") == "config" \
                and data.get("corpora") is None:
            return {**data, "corpora": 1}
        return data

    @model_validator(mode="after")
    def _chunk_fits(self) -> SharedContext:
        if self.tokens and self.chunk_tokens > self.tokens:
            raise cross_fail([("chunk_tokens", (f"expected a size <= tokens ({self.tokens}), "
                                               f"got {self.chunk_tokens}"))])
        return self


def _defines_corpora(arrivals: Any) -> bool:
    """Whether ``arrivals`` (a mapping or a validated section) bring their own corpora (a
    Mooncake trace); False for anything unrecognised (its own error is reported)."""
    if isinstance(arrivals, BaseModel):
        arrivals = arrivals.model_dump()
    if not isinstance(arrivals, dict) or not isinstance(arrivals.get("kind"), str):
        return False
    try:
        process = get_arrivals(arrivals["kind"])
    except WorkloadError:
        return False
    return process.defines_corpora(arrivals)


MAX_PROMPT_TOKENS = 2**30  # as workload.unique_tokens


def _prefill_scalar() -> Any:
    """``'all'`` (every unique token is a new prompt token) or a count >= 0 (0: the
    request's context is all resident, decode only)."""
    what = f"'all' or a size in [0, {MAX_PROMPT_TOKENS}]"

    def check(value: Any) -> int | str:
        if value == "all":
            return "all"
        try:
            n = parse_int(value)
        except UnitError:
            raise fail(f"expected {what}, got {describe(value)}") from None
        if n < 0 or n > MAX_PROMPT_TOKENS:
            raise fail(f"expected {what}, got {describe(value)}")
        return n

    return Annotated[int | str, BeforeValidator(check), Expect(what)]


PrefillTokens = by_shape(_prefill_scalar(), Distribution,
                         "'all', a size >= 0, or a mapping {dist: ..., mean, cv, min, max}")


class Workload(StrictModel):
    """What the requests look like and when they come."""

    arrivals: Arrivals = Field(description="arrival process")
    unique_tokens: TokenCount | None = Field(
        None, description="per-request (unique) context tokens: resident history plus new "
                          "prompt (required unless the arrivals are a trace, which has them)")
    prefill_tokens: PrefillTokens = Field(
        "all", description="new prompt tokens to prefill, of the unique tokens: 'all' "
                           "(default), a size or a distribution (clipped to unique_tokens); "
                           "0: context already resident, decode only (the paper's setting)")
    output_tokens: TokenCount | None = Field(
        None, description="tokens decoded per request (required unless the arrivals are a "
                          "trace, which has them)")
    shared: SharedContext = Field(
        description="the shared context (optional with a Mooncake trace: its corpora)")

    @model_validator(mode="before")
    @classmethod
    def _shared_source_default(cls, data: Any) -> Any:
        """``shared.source`` defaults to ``trace`` when the arrivals bring their own corpora
        (a Mooncake trace; ``shared`` may then be left out), else to ``config``."""
        if not isinstance(data, dict):
            return data
        shared = data.get("shared")
        if isinstance(shared, str):
            raise cross_fail([("shared", (f"expected a mapping, got {describe(shared)} (no "
                                          "shared context: {source: none})"))])
        trace = _defines_corpora(data.get("arrivals"))
        if shared is None and ("shared" in data or trace):
            shared = {}
        if isinstance(shared, dict) and shared.get("source") is None:
            return {**data, "shared": {**shared, "source": "trace" if trace else "config"}}
        return data

    @model_validator(mode="after")
    def _source_fits_the_arrivals(self) -> Workload:
        """``shared.source`` against the arrivals, and the fields each source takes."""
        shared, trace = self.shared, _defines_corpora(self.arrivals)
        issues = []
        if shared.source == "trace" and not trace:
            a = self.arrivals
            what = (f"format {a.format!r}" if a.kind == "trace"  # type: ignore[attr-defined]
                    else f"kind {a.kind!r}")
            issues.append(("shared.source", (
                f"expected 'config' or 'none' with workload.arrivals {what} (only a Mooncake "
                f"trace brings its own corpora), got 'trace'")))
        elif shared.source == "config" and trace:
            issues.append(("shared.source", (
                "expected 'trace' (the default) or 'none' with a Mooncake trace, whose "
                "prompts' shared blocks are the corpora; got 'config'")))
        if shared.source == "config" and shared.tokens is None and not trace:
            issues.append(("shared.tokens", (
                "missing; expected a size >= 0 (the tokens of each corpus) with source "
                "'config'; 0 or source 'none': no shared context")))
        elif shared.source == "none" or (shared.source == "trace" and trace):
            why = ("the corpora and their sizes come from the trace; remove it (source "
                   "'none' turns the shared context off)" if shared.source == "trace"
                   else "there is no shared context; remove it")
            issues += [(f"shared.{name}", f"not used with source {shared.source!r}: {why}")
                       for name in ("tokens", "corpora") if getattr(shared, name) is not None]
        cached = getattr(self.arrivals, "cached_fraction", None) or 0
        if trace and shared.source == "trace" and cached > 0:
            issues.append(("arrivals.cached_fraction", (
                f"expected 0 with a Mooncake trace's own corpora (a prompt's blocks seen in "
                f"other requests are its shared corpus, the rest is new), or shared.source "
                f"'none'; got {cached}")))
        if issues:
            raise cross_fail(issues)
        return self


# ----------------------------------------------------------------------------- run


class Batching(StrictModel):
    """How shared nodes batch queries and how many requests a unique node decodes at once."""

    max_batch: integer(ge=1, le=MAX_BATCH) = Field(512, description="queries per shared-node chunk batch")
    window_us: number(ge=0, le=MAX_WINDOW_US) = Field(0.0, description="longest wait to fill a batch, us")
    max_running: integer(ge=1, le=MAX_BATCH) | None = Field(
        None, description="cap on decoding requests per unique node (null: HBM decides)")
    prefill_chunk_tokens: integer(ge=1, le=MAX_CONTEXT_TOKENS) | None = Field(
        2048, description="prompt tokens a unique node prefills per step beside its decode "
                          "batch (chunked prefill; null: whole prompts at once)")
    shared_policy: choice("decode_first", "fifo") = Field(
        "decode_first", description="shared nodes: decode queries before prefill work "
                                    "(decode_first) or in arrival order (fifo)")
    overlap: bool = Field(
        True, description="unique attention runs while the shared round trip is in flight")
    microbatches: integer(ge=1, le=2) = Field(
        1, description="1: a unique node's decode batch makes each round trip as one; 2: "
                       "split in two halves that take turns (ping-pong), one's own work "
                       "while the other's round trip is in flight (systems with shared "
                       "nodes; not with faults)")
    prefill_placement: choice("on_unique", "dedicated") = Field(
        "on_unique", description="where prompts are prefilled: on_unique (chunked, beside "
                                 "decode) or dedicated (cluster.prefill nodes; KV moved over "
                                 "the fabric to a unique node)")


class Run(StrictModel):
    """How long to simulate, with which seed, at which fidelity."""

    requests: integer(ge=1, le=MAX_REQUESTS) | None = Field(None, description="stop after this many requests")
    duration_s: number(gt=0, le=MAX_DURATION_S) | None = Field(None, description="stop at this simulated time, s")
    seed: integer(ge=0, le=MAX_SEED) = Field(0, description="root seed of every random stream")
    granularity: choice("layer", "step") = Field(
        "layer", description="layer: a round trip per layer; step: one per decode step")
    warmup_s: number(ge=0, le=MAX_DURATION_S) = Field(0.0, description="simulated seconds left out of the metrics")
    service: choice("deterministic", "exponential") = Field(
        "deterministic", description="node service times: as priced, or exponential with that mean")

    @model_validator(mode="after")
    def _has_an_end(self) -> Run:
        issues = []
        if self.duration_s is not None and self.warmup_s >= self.duration_s:
            issues.append(("warmup_s", (f"expected a number < duration_s ({self.duration_s}), "
                                       f"got {self.warmup_s}")))
        if issues:
            raise cross_fail(issues)
        return self


DEFAULT_BATCH_SWEEP = tuple(2**i for i in range(11))  # 1 .. 1024
DEFAULT_SHARED_SWEEP = tuple(n * MiB_TOKENS for n in (1, 2, 4, 8, 16))


class Analysis(StrictModel):
    """Settings of the closed-form sweeps of ``moska-sim analyze``."""

    batch: integer(ge=1, le=MAX_BATCH) = Field(64, description="concurrent requests of the headline table")
    batch_sweep: size_list(ge=1, le=MAX_BATCH) = Field(DEFAULT_BATCH_SWEEP, description="concurrencies swept")
    shared_tokens_sweep: size_list(ge=1, le=MAX_SHARED_TOKENS) = Field(
        DEFAULT_SHARED_SWEEP, description="shared-context sizes swept, tokens")


# ----------------------------------------------------------------------------- faults


class Fault(StrictModel):
    """One fault: a node or a fabric cable fails (``fail``) or a cable runs at a fraction of
    its bandwidth (``degrade``) from ``at_s`` for ``duration_s`` (null: for ever)."""

    kind: choice("fail", "degrade") = Field("fail", description="fail | degrade (links only)")
    target: pattern(r"(shared|unique)[0-9]+|[A-Za-z0-9_]+-[A-Za-z0-9_]+",
                    "'shared<i>', 'unique<i>' or a cable 'a-b' of the fabric (e.g. "
                    "'unique0-sw', 'leaf0-spine1')") = Field(
        description="shared<i> | unique<i> (a replica) | a fabric cable 'a-b' (both directions)")
    at_s: number(ge=0, le=MAX_DURATION_S) = Field(description="simulated time the fault starts, s")
    duration_s: number(gt=0, le=MAX_DURATION_S) | None = Field(
        None, description="how long it lasts, s (null: it never recovers)")
    fraction: number(gt=0, le=1) | None = Field(
        None, description="degrade only: the fraction of the bandwidth left")

    @model_validator(mode="after")
    def _kind_fields(self) -> Fault:
        issues = []
        if self.kind == "degrade":
            if self.fraction is None:
                issues.append(("fraction", "missing; a degrade fault needs fraction in (0, 1]"))
            if self.target.startswith(("shared", "unique")) and "-" not in self.target:
                issues.append(("target", (f"expected a fabric cable 'a-b' for kind degrade, "
                                          f"got {self.target!r}")))
        elif self.fraction is not None:
            issues.append(("fraction", "only used by kind 'degrade'; remove it"))
        if issues:
            raise cross_fail(issues)
        return self


def _as_tuple(value: Any) -> Any:
    """A YAML list as a tuple (the config stays hashable)."""
    return tuple(value) if isinstance(value, list) else value


class FaultsPolicy(StrictModel):
    """What happens to work that a fault leaves without a live node or route."""

    query_timeout_ms: number(gt=0, le=MAX_DURATION_S * 1e3) | None = Field(
        None, description="longest a query waits for a failed shared node (or a route) "
                          "with no live replica before it times out (null: wait for "
                          "recovery; a fault that never recovers times out at once)")
    on_timeout: choice("retry", "fail") = Field(
        "fail", description="a timed-out request is failed with a reason (fail) or "
                            "re-admitted from scratch (retry, up to max_retries)")
    max_retries: integer(ge=0, le=1000) = Field(
        2, description="retries of one request before it fails (on_timeout: retry)")


# ----------------------------------------------------------------------------- experiment


def _kernel_profiles() -> list[str]:
    from hw.profiles import available_profiles

    return available_profiles()


class Kernels(StrictModel):
    """The kernel profile (hw/profiles) that prices each op family on every chip of the run;
    null: the family's default (cuBLAS GEMMs, the project's Triton attention and merge)."""

    gemm: registered("kernel profile", _kernel_profiles) | None = Field(
        None, description="bf16 GEMMs (default cublas)")
    gemm_fp8: registered("kernel profile", _kernel_profiles) | None = Field(
        None, description="fp8 GEMMs (default cublas-fp8)")
    decode_attention: registered("kernel profile", _kernel_profiles) | None = Field(
        None, description="per-request decode attention (default triton-moska-decode; or sdpa-decode)")
    shared_attention: registered("kernel profile", _kernel_profiles) | None = Field(
        None, description="batched shared attention (default triton-moska-shared; or sdpa-shared)")
    merge: registered("kernel profile", _kernel_profiles) | None = Field(
        None, description="LSE merge of partials (default triton-moska-merge)")

    @model_validator(mode="after")
    def _families_match(self) -> Kernels:
        from hw.profiles import load_profile

        issues = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            family = "gemm" if name == "gemm_fp8" else name
            if value is not None and load_profile(value).family != family:
                issues.append((name, (f"expected a {family} kernel profile, got {value!r} "
                                      f"(a {load_profile(value).family} profile)")))
        if issues:
            raise cross_fail(issues)
        return self

    def as_chip_overrides(self) -> dict[str, str]:
        """``ChipSpec.kernel_profiles``: op family -> profile, for the families named."""
        return {("gemm-fp8" if k == "gemm_fp8" else k): v
                for k, v in ((k, getattr(self, k)) for k in type(self).model_fields)
                if v is not None}


class ExperimentConfig(StrictModel):
    """One experiment, fully resolved. Build it with ``sim.config.load_config``."""

    name: pattern(r"[A-Za-z0-9._-]{1,200}",
                  "a name of 1 to 200 letters, digits, '.', '_' or '-'") = Field(
        description="names the results folder")
    model: registered("model", _models) = Field("llama-3.1-8b", description="model preset")
    precision: choice("fp8", "bf16") = Field("fp8", description="KV cache and compute dtype")
    system: registered("system", _systems) = Field(
        "moska", description="how attention over the shared context runs "
                             "(workloads/systems: vanilla | prefix_cache | shared_gemm | moska | moska_colocated)")
    cluster: Cluster = Field(description="nodes and fabric")
    workload: Workload = Field(description="requests")
    batching: Batching = Field(Batching(), description="batching policy")
    run: Run = Field(description="length, seed, fidelity")
    kernels: Kernels = Field(Kernels(), description="which kernel prices each op family")
    analysis: Analysis = Field(Analysis(), description="closed-form sweep settings")
    faults: Annotated[tuple[Fault, ...], BeforeValidator(_as_tuple)] = Field(
        (), max_length=MAX_FAULTS,
        description="faults injected during the run (empty: none)")
    faults_policy: FaultsPolicy = Field(FaultsPolicy(), description="timeouts and retries under faults")

    @model_validator(mode="after")
    def _system_needs(self) -> ExperimentConfig:
        from workloads.systems import get_system

        issues = []
        for i, f in enumerate(self.faults):
            m = re.fullmatch(r"(shared|unique)([0-9]+)", f.target)
            if m is None:
                continue
            limit = (self.cluster.shared.nodes if m.group(1) == "shared"
                     else self.cluster.unique.nodes // self.cluster.unique.tp)
            if int(m.group(2)) >= limit:
                issues.append((f"faults.{i}.target", (f"expected {m.group(1)}0 .. "
                                                      f"{m.group(1)}{limit - 1}, got {f.target!r}")))
        if self.workload.shared.replicas > max(1, self.cluster.shared.nodes):
            issues.append(("workload.shared.replicas", (
                f"expected an integer <= cluster.shared.nodes ({self.cluster.shared.nodes}), "
                f"got {self.workload.shared.replicas}")))
        disaggregated = get_system(self.system).disaggregated
        if disaggregated and self.cluster.shared.nodes < 1:
            issues.append(("cluster.shared.nodes", ("expected an integer >= 1 for system "
                                                   f"{self.system!r}, got "
                                                   f"{self.cluster.shared.nodes}")))
        trace = self.workload.arrivals.kind == "trace"
        if not trace:  # a trace brings its own sizes and has an end
            for name in ("unique_tokens", "output_tokens"):
                if getattr(self.workload, name) is None:
                    issues.append((f"workload.{name}", ("missing; required unless "
                                                        "workload.arrivals is a trace")))
            if self.run.requests is None and self.run.duration_s is None:
                issues.append(("run.requests", "missing; set requests, duration_s or both"))
        if self.batching.prefill_placement == "dedicated" and self.cluster.prefill.nodes < 1:
            issues.append(("cluster.prefill.nodes", ("expected an integer >= 1 with "
                                                     "batching.prefill_placement: dedicated, "
                                                     f"got {self.cluster.prefill.nodes}")))
        if self.batching.microbatches > 1 and self.faults:
            issues.append(("batching.microbatches", (
                f"expected 1 when faults are injected (micro-batches under faults are not "
                f"modelled), got {self.batching.microbatches}")))
        if issues:
            raise cross_fail(issues)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (lists, not tuples); it validates back to ``self``.
        The fault fields are left out while they hold their defaults (no faults, one copy of
        each chunk), so a config without faults reads as it did before they existed; so is
        ``workload.shared.source`` while it is ``config`` (and ``tokens`` and ``corpora``
        where the source is ``trace`` or ``none``, which take none)."""
        data = self.model_dump(mode="json")
        if not data["faults"]:
            del data["faults"]
            if data["faults_policy"] == FaultsPolicy().model_dump(mode="json"):
                del data["faults_policy"]
        shared = data["workload"]["shared"]
        if shared.get("replicas") == 1:
            del shared["replicas"]
        if shared.get("source") == "config":  # the default without a Mooncake trace
            del shared["source"]
        for name in ("tokens", "corpora"):  # not used with source trace or none
            if shared.get(name) is None:
                shared.pop(name, None)
        return data

    def to_yaml(self) -> str:
        """The resolved config as YAML text that ``load_config`` reads back to ``self``."""
        return dump_yaml(self.to_dict())

    def to_json(self) -> str:
        """The resolved config as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)


__all__ = [
    "Analysis",
    "Batching",
    "ClosedLoopArrivals",
    "Cluster",
    "ExperimentConfig",
    "ExponentialDist",
    "Fabric",
    "Fault",
    "FaultsPolicy",
    "FixedDist",
    "GammaArrivals",
    "Link",
    "LognormalDist",
    "NodeGroup",
    "NormalDist",
    "PoissonArrivals",
    "Run",
    "SharedContext",
    "TraceArrivals",
    "UniformDist",
    "UniqueNodeGroup",
    "Workload",
    "Zipf",
]
