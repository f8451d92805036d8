"""Prices of the work the nodes do, from the serving system's op lists (``workloads.systems``).

The event simulation never invents a cost: a decode step's unique-side ops, a prefill's
ops and a shared node's grouped launch are the ops the system's ``decode_ops`` /
``prefill_ops`` list, priced by ``hw`` (``kernel_cost``). Prices are cached per shape; to keep the number
of shapes small in long runs, context lengths are rounded to :func:`bucket` (exact up to
256 tokens, then to 64 steps per octave: at most 0.8 % relative error) and a grouped launch's
per-chunk batch histogram is reduced to at most ``max_bins`` quantile bins (exact when it
has that few distinct batch sizes; within ~3 % of the full histogram's price otherwise).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from hw.compute import kernel_cost
from hw.link import transfer_cost
from hw.ops import GroupedSharedAttention, SharedAttention, Transfer
from hw.specs import ChipSpec, LinkSpec, load_link
from workloads.models import ModelSpec
from workloads.systems import ServingSystem
from workloads.systems.ops import StepOp, attention_kwargs, partial_bytes, query_bytes

PRICE_CACHE_MAX = 1 << 16  # shapes kept per price cache before it is emptied (bounded memory)
PHASES: tuple[str, ...] = (
    "unique_attention", "shared_attention", "router", "merge", "fabric", "queueing",
    "other_layers", "prefill", "prefill_stall", "collective",
)
# prefill_stall: decode tokens of running requests held up while their node prefills newly
# admitted ones (the unique node prefills, then steps: continuous batching's interference)
# collective: a tensor-parallel replica's all-reduces and gathers over its internal link
PHASE_INDEX = {p: i for i, p in enumerate(PHASES)}
MAX_HIST_BINS = 4


def bucket(x: int) -> int:
    """``x`` rounded to the nearest of 64 values per octave (exact up to 256)."""
    x = int(x)
    if x <= 256:
        return max(x, 1)
    e = x.bit_length() - 7
    return ((x + (1 << (e - 1))) >> e) << e


def reduce_histogram(batches: np.ndarray, max_bins: int = MAX_HIST_BINS) -> tuple[tuple[int, int], ...]:
    """Per-chunk batch sizes (> 0) -> a (queries, chunks) histogram of <= ``max_bins`` bins.

    Exact when there are at most ``max_bins`` distinct sizes; otherwise the chunks, in
    order of batch size, are cut into ``max_bins`` equal groups, each priced at its mean
    batch rounded up. The chunk count (the KV bytes read) is always exact.
    """
    h = np.bincount(batches)
    vals = np.flatnonzero(h)
    cnt = h[vals]
    if len(vals) <= max_bins:
        return tuple(zip(vals.tolist(), cnt.tolist()))
    # NOTE: for performance: walk the (short) histogram in Python instead of sorting chunks
    n = int(cnt.sum())
    edges = [(2 * j * n + max_bins) // (2 * max_bins) for j in range(1, max_bins + 1)]
    merged: dict[int, int] = {}
    group_sum = group_n = 0
    e = 0
    for v, c in zip(vals.tolist(), cnt.tolist()):
        while c:
            take = min(c, edges[e] - (edges[e - 1] if e else 0) - group_n)
            group_sum += v * take
            group_n += take
            c -= take
            if group_n == edges[e] - (edges[e - 1] if e else 0):
                if group_n:
                    b = -(-group_sum // group_n)
                    merged[b] = merged.get(b, 0) + group_n
                group_sum = group_n = 0
                e += 1
                if e == max_bins:
                    break
    return tuple(sorted(merged.items()))


@dataclass(frozen=True)
class DecodeCost:
    """One decode step of a batch on its unique node (or replica), per layer.

    ``pre_ns``: the unique-side ops the shared round trip waits for (projections, router);
    ``overlap_ns``: unique-side ops that do not depend on it and run while it is in flight
    (MoSKA's unique attention, when overlap is on); ``post_ns``: the ops after the partials
    are back (merge, output projection, FFN). Without a round trip everything is in
    ``pre_ns``. ``step_ns``: ops run once a step (lm_head). ``phase_ns``: the step's
    unique-side time by breakdown phase (all layers). ``link_ns``: the part of the whole
    step spent on the replica's internal link (collectives; included in the above).
    """

    pre_ns: int
    post_ns: int
    step_ns: int
    phase_ns: np.ndarray  # float64[len(PHASES)]
    overlap_ns: int = 0
    link_ns: int = 0

    def local_ns(self, layers: int) -> int:
        """The whole step when nothing leaves the node."""
        return (self.pre_ns + self.overlap_ns + self.post_ns) * layers + self.step_ns


@dataclass(frozen=True)
class PrefillCost:
    """One chunk of one request's prefill, per layer: unique-side ns before the corpus
    round trip, during it (its own causal attention, when overlap is on) and after it;
    the corpus part's ns on each shared node (it holds 1/S of the corpus; 0 if none); and
    bytes each way per shared node."""

    pre_ns: int
    post_ns: int
    shared_ns: int
    query_bytes: int
    partial_bytes: int
    overlap_ns: int = 0
    link_ns: int = 0  # per layer, on the replica's internal link (included in pre/post)

    def local_ns(self, layers: int) -> int:
        return (self.pre_ns + self.overlap_ns + self.post_ns) * layers


@dataclass
class Pricer:
    """Caches the hw prices of a system's ops on the cluster's chips; a replica's
    collectives (``where="node"`` ops) are priced on ``node_link``, its internal link."""

    model: ModelSpec
    system: ServingSystem
    precision: str
    unique_chip: ChipSpec
    shared_chip: ChipSpec
    tp: int = 1
    shared_nodes: int = 1
    keep_fraction: float = 1.0
    chunk_tokens: int = 1
    overlap: bool = True  # unique attention runs while the shared round trip is in flight
    max_bins: int = MAX_HIST_BINS
    node_link: LinkSpec | None = None  # None: the nvlink4 preset
    _decode: dict = field(default_factory=dict, repr=False)
    _prefill: dict = field(default_factory=dict, repr=False)
    _grouped: dict = field(default_factory=dict, repr=False)
    _akw: dict = field(default_factory=dict, repr=False)
    cache_clears: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self._akw = attention_kwargs(self.model, self.precision)
        self.layers = self.model.layers
        self.disaggregated = self.system.disaggregated
        if self.node_link is None:
            self.node_link = load_link("nvlink4")
        # queries per chunk whose rows (x GQA group) fit one padded tensor-core tile
        self._pad_queries = max(1, self.shared_chip.mma_min_m // self.model.group)

    # -- decode ---------------------------------------------------------------------------
    def decode_ops(self, batch: int, unique_ctx: int, shared_ctx: int) -> list[StepOp]:
        """The op list of one step (as ``sim.analytic`` sees it) for this batch."""
        kw: dict = {"tp": self.tp, "keep_fraction": self.keep_fraction,
                    "chunk_tokens": self.chunk_tokens}
        if self.disaggregated:
            kw.update(shared_queries=batch, shared_nodes=self.shared_nodes)
        return self.system.decode_ops(self.model, self.precision, batch, unique_ctx,
                                      shared_ctx, **kw)

    def decode(self, batch: int, unique_ctx: int, shared_ctx: int) -> DecodeCost:
        """Unique-side cost of a decode step (contexts are bucketed by the caller)."""
        key = (batch, unique_ctx, shared_ctx)
        c = self._decode.get(key)
        if c is None:
            c = self._price_decode(batch, unique_ctx, shared_ctx)
            self._remember(self._decode, key, c)
        return c

    def _price_decode(self, batch: int, unique_ctx: int, shared_ctx: int) -> DecodeCost:
        ops = self.decode_ops(batch, unique_ctx, shared_ctx)
        phase = [0] * len(PHASES)
        pre = overlap = post = step = link = 0
        remote = any(o.where == "shared" for o in ops)
        after = False
        for o in ops:
            if o.where == "fabric" or o.where == "shared":
                after = after or o.name == "return_partial"
                continue
            t = self._unique_side_ns(o)
            if o.where == "node":
                link += t * (self.layers if o.per == "layer" else 1)
            if o.per == "step":
                step += t
                phase[PHASE_INDEX[o.phase]] += t
                continue
            phase[PHASE_INDEX[o.phase]] += t * self.layers
            part = self._part(o, after, remote)
            if part == "post":
                post += t
            elif part == "overlap":
                overlap += t
            else:
                pre += t
        return DecodeCost(pre, post, step, np.asarray(phase, dtype=np.float64), overlap, link)

    def _part(self, o: StepOp, after: bool, remote: bool) -> str:
        """Where a unique-side op falls in its layer: 'pre' (the round trip waits for it),
        'overlap' (it runs while the round trip is in flight: attention over the node's own
        KV, when overlap is on) or 'post' (after the partials are back)."""
        if after:
            return "post"
        if remote and self.overlap and o.phase == "unique_attention":
            return "overlap"
        return "pre"

    def _unique_side_ns(self, o: StepOp) -> int:
        """An op of the unique replica: a kernel on its chip, or a transfer on its link."""
        if o.where == "node":
            assert isinstance(o.op, Transfer)
            return transfer_cost(o.op, self.node_link).time_ns
        return kernel_cost(o.op, self.unique_chip).time_ns

    # -- prefill --------------------------------------------------------------------------
    def prefill(self, tokens: int, shared_ctx: int, prior: int = 0) -> PrefillCost:
        """A chunk of ``tokens`` new prompt tokens after ``prior`` already prefilled ones
        (both bucketed by the caller), per layer."""
        key = (tokens, shared_ctx, prior)
        c = self._prefill.get(key)
        if c is None:
            c = self._price_prefill(tokens, shared_ctx, prior)
            self._remember(self._prefill, key, c)
        return c

    def _price_prefill(self, tokens: int, shared_ctx: int, prior: int) -> PrefillCost:
        ops = self.system.prefill_ops(self.model, self.precision, tokens, shared_ctx,
                                      keep_fraction=self.keep_fraction, tp=self.tp,
                                      prior_tokens=prior)
        remote = any(o.where == "shared" for o in ops)
        pre = overlap = post = shared = link = 0
        after = False
        qb = pb = 0
        for o in ops:
            if o.where == "fabric":
                assert isinstance(o.op, Transfer)
                if o.name.startswith("send"):
                    qb = o.op.nbytes
                else:
                    pb = o.op.nbytes
                    after = True
                continue
            if o.where == "shared":
                op = o.op
                assert isinstance(op, SharedAttention)
                per_node = max(1, math.ceil(op.kv_tokens / self.shared_nodes))
                shared += kernel_cost(dataclasses.replace(op, kv_tokens=per_node),
                                      self.shared_chip).time_ns
                after = True
                continue
            t = self._unique_side_ns(o)
            if o.where == "node":
                link += t
            part = self._part(o, after, remote)
            if part == "post":
                post += t
            elif part == "overlap":
                overlap += t
            else:
                pre += t
        return PrefillCost(pre, post, shared, qb, pb, overlap, link)

    # -- shared node launches -------------------------------------------------------------
    def grouped(self, per_chunk: list[np.ndarray], requests: int, pairs: int,
                biggest: int) -> tuple[int, int]:
        """(ns, chunks touched) of one layer's grouped shared-attention launch.

        ``per_chunk``: the launch's queries per chunk (one array per layer it serves; zero
        entries are chunks nobody selected). Small batches (every chunk's rows fit one
        padded tensor-core tile: batch x GQA group <= ``mma_min_m``) cost the same tile
        work whatever their split, so they are priced as one mean-field bin: every touched
        chunk at the mean batch rounded up (chunk count exact; measured 0-1.3 % above the
        full histogram's price, with far fewer shapes to price); larger ones by
        :func:`reduce_histogram`.
        """
        if biggest <= self._pad_queries:
            chunks = sum(int(np.count_nonzero(a)) for a in per_chunk)
            hist: tuple[tuple[int, int], ...] = ((-(-pairs // chunks), chunks),)
        else:
            batches = np.concatenate([a[a > 0] for a in per_chunk])
            chunks = len(batches)
            hist = reduce_histogram(batches, self.max_bins)
        key = (hist, bucket(requests))
        t = self._grouped.get(key)
        if t is None:
            op = GroupedSharedAttention(**self._akw, chunk_batches=hist,
                                        chunk_tokens=self.chunk_tokens, requests=key[1])
            t = kernel_cost(op, self.shared_chip).time_ns
            self._remember(self._grouped, key, t)
        return t, chunks

    def query_bytes(self, requests: int) -> int:
        return query_bytes(self.model, requests)

    def partial_bytes(self, requests: int) -> int:
        return partial_bytes(self.model, requests)

    def _remember(self, cache: dict, key: object, value: object) -> None:
        """Cache a price; a cache of ``PRICE_CACHE_MAX`` shapes is emptied first, so a long
        run's memory stays bounded (prices are pure functions of the shape: a shape priced
        again costs time, never a different result)."""
        if len(cache) >= PRICE_CACHE_MAX:
            cache.clear()
            self.cache_clears += 1
        cache[key] = value

    def cache_sizes(self) -> dict[str, int]:
        return {"decode": len(self._decode), "prefill": len(self._prefill),
                "grouped": len(self._grouped), "clears": self.cache_clears}


__all__ = [
    "PHASES",
    "PHASE_INDEX",
    "DecodeCost",
    "PrefillCost",
    "Pricer",
    "bucket",
    "reduce_histogram",
]
