"""The building blocks every serving system's op lists share: ``StepOp`` (one op of a
step, where it runs, which time bucket it fills), the dense layer, the LM head, query and
partial sizes, and the expected chunk-batch histogram of routed queries.

The op lists built from these are the single description of the work: ``sim.analytic``
sums their prices in closed form and the event simulation runs them with queueing.

Tensor parallelism (``tp`` GPUs in one replica, joined by the node's internal link):
projections, FFN, attention heads and the LM head are split ``tp`` ways, and the replica
pays its collectives as ``where="node"`` transfers over that link (phase ``collective``):
a ring all-reduce of the layer's output after the attention block and after the FFN
(:func:`all_reduce_ops`), and a gather of the LM head's logits to rank 0 once a step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from hw.ops import ACT_BYTES, STAT_BYTES, Gemm, Op, SharedAttention, Transfer
from workloads.models import ModelSpec

Where = Literal["unique", "shared", "fabric", "node"]
# "node": a transfer over a tensor-parallel replica's internal link (NVLink) between its GPUs


@dataclass(frozen=True)
class StepOp:
    """One operation of a decode step: what, where it runs, and which time bucket it fills.

    ``phase`` is the breakdown bucket: other_layers | unique_attention | shared_attention |
    router | merge | fabric | collective. ``where`` is unique | shared (a node's chip),
    fabric (the network between nodes) or node (the replica's internal link).
    ``per`` is 'layer' (repeated for every layer) or 'step'.
    """

    name: str
    phase: str
    where: Where
    op: Op
    per: Literal["layer", "step"] = "layer"


def dense_layer_ops(model: ModelSpec, batch: int, precision: str, tp: int = 1) -> list[StepOp]:
    """Projections and FFN of one layer for ``batch`` tokens, split ``tp`` ways (tensor
    parallel: column-parallel QKV and gate/up, row-parallel O and down), each row-parallel
    GEMM followed by a ring all-reduce of its ``batch x hidden`` output (none at tp 1)."""
    qkv = (model.q_heads + 2 * model.kv_heads) * model.head_dim
    out = activation_bytes(model, batch)
    return [
        StepOp("qkv_proj", "other_layers", "unique", Gemm(batch, split_ways(qkv, tp), model.hidden, precision)),
        StepOp("o_proj", "other_layers", "unique",
               Gemm(batch, split_ways(model.hidden, tp), model.q_heads * model.head_dim, precision)),
        *all_reduce_ops("attn_all_reduce", out, tp),
        StepOp("ffn_gate_up", "other_layers", "unique",
               Gemm(batch, split_ways(2 * model.ffn, tp), model.hidden, precision)),
        StepOp("ffn_down", "other_layers", "unique",
               Gemm(batch, split_ways(model.hidden, tp), model.ffn, precision)),
        *all_reduce_ops("ffn_all_reduce", out, tp),
    ]


def lm_head_op(model: ModelSpec, batch: int, precision: str, tp: int = 1) -> StepOp:
    return StepOp("lm_head", "other_layers", "unique",
                  Gemm(batch, split_ways(model.vocab, tp), model.hidden, precision), per="step")


def lm_head_ops(model: ModelSpec, batch: int, precision: str, tp: int = 1) -> list[StepOp]:
    """The LM head (vocabulary split ``tp`` ways) and the gather of its logits to rank 0."""
    return [lm_head_op(model, batch, precision, tp),
            *gather_ops("logits_gather", int(batch * model.vocab * ACT_BYTES), tp, per="step")]


def activation_bytes(model: ModelSpec, tokens: int) -> int:
    """Bytes of one layer's ``tokens x hidden`` output (bf16): an all-reduce's message."""
    return int(tokens * model.hidden * ACT_BYTES)


def all_reduce_ops(name: str, nbytes: int, tp: int, per: Literal["layer", "step"] = "layer"
                   ) -> list[StepOp]:
    """A ring all-reduce of an ``nbytes`` tensor over ``tp`` GPUs: 2(tp - 1) steps
    (reduce-scatter, then all-gather), in each of which every GPU sends one ``nbytes/tp``
    piece to its neighbour over the node's internal link: 2(tp-1)/tp x ``nbytes`` per GPU
    and one link latency per step. No ops at tp 1."""
    if tp <= 1:
        return []
    piece = Transfer(math.ceil(nbytes / tp))
    return [StepOp(name, "collective", "node", piece, per) for _ in range(2 * (tp - 1))]


def gather_ops(name: str, nbytes: int, tp: int, per: Literal["layer", "step"] = "layer",
               phase: str = "collective") -> list[StepOp]:
    """A gather to one GPU (or its mirror, a scatter from one) of an ``nbytes`` tensor
    held ``1/tp`` by each of ``tp`` GPUs: the root's port moves the other (tp-1)/tp of it
    in one step of one link latency. No ops at tp 1."""
    if tp <= 1:
        return []
    return [StepOp(name, phase, "node", Transfer(math.ceil((tp - 1) * nbytes / tp)), per)]


def split_ways(n: int, ways: int) -> int:
    """``n`` split ``ways`` ways (tensor parallel), rounded up, at least 1."""
    return max(1, math.ceil(n / ways))


def attention_kwargs(model: ModelSpec, precision: str) -> dict:
    return {"q_heads": model.q_heads, "kv_heads": model.kv_heads, "head_dim": model.head_dim,
            "dtype": precision}


def query_bytes(model: ModelSpec, requests: int) -> int:
    """Bytes of the queries of ``requests`` requests for one layer (bf16)."""
    return int(requests * model.q_heads * model.head_dim * ACT_BYTES)


def partial_bytes(model: ModelSpec, requests: int) -> int:
    """Bytes of partial outputs + LSE returned for ``requests`` requests, one layer."""
    return int(requests * model.q_heads * (model.head_dim * ACT_BYTES + STAT_BYTES))


def expected_chunk_batches(
    queries: int, n_chunks: int, keep_fraction: float, bins: int = 4,
) -> tuple[tuple[int, int], ...]:
    """Expected per-chunk batch histogram when ``queries`` queries each keep ``keep_fraction``
    of ``n_chunks`` chunks uniformly at random, as ``bins`` quantile bins of the active
    chunks: ((batch, chunks), ...).

    A chunk's batch is Binomial(Q, f), f = k/N; it is active with probability
    1 - (1 - f)^Q. The active chunks are split into ``bins`` equal-probability bands of
    that law conditioned on >= 1, each priced at its mean batch rounded up (a kernel pads
    rows anyway) -- the same quantile-bin reduction the engine applies to the batches it
    draws, so the closed form prices the spread of the batches, not only their mean.
    """
    k = max(1, round(keep_fraction * n_chunks))
    f = k / n_chunks
    p_active = 1.0 - (1.0 - f) ** queries
    active = max(1, round(n_chunks * p_active))
    if f >= 1.0 or queries <= 1:
        return ((max(1, math.ceil(queries * k / active - 1e-9)), active),)
    counts = range(1, queries + 1)
    log_pmf = [math.lgamma(queries + 1) - math.lgamma(c + 1) - math.lgamma(queries - c + 1)
               + c * math.log(f) + (queries - c) * math.log1p(-f) for c in counts]
    top = max(log_pmf)
    weights = [math.exp(v - top) for v in log_pmf]
    total = sum(weights)
    merged: dict[int, int] = {}
    band = 0
    acc_w = acc_cw = 0.0
    edges = [(j + 1) / bins for j in range(bins)]
    cum = 0.0
    given = 0
    for c, w in zip(counts, weights):
        p = w / total
        while p > 1e-15 and band < bins:
            room = edges[band] - cum
            take = min(p, room)
            acc_w += take
            acc_cw += take * c
            cum += take
            p -= take
            if cum >= edges[band] - 1e-12:
                chunks = round(active * edges[band]) - given
                if chunks > 0 and acc_w > 0:
                    b = max(1, math.ceil(acc_cw / acc_w - 1e-9))
                    merged[b] = merged.get(b, 0) + chunks
                    given += chunks
                acc_w = acc_cw = 0.0
                band += 1
    return tuple(sorted(merged.items()))


def n_chunks(shared_tokens: int, chunk_tokens: int) -> int:
    return max(1, math.ceil(shared_tokens / chunk_tokens))


def prefill_dense_ops(model: ModelSpec, precision: str, tokens: int, tp: int = 1,
                      prior_tokens: int = 0) -> list[StepOp]:
    """One layer of prefilling ``tokens`` prompt tokens without the corpus: projections and
    FFN as GEMMs with m = tokens, and causal self-attention priced as a shared-attention
    GEMM over the ``prior_tokens`` already in KV plus half of the new ones (the causal
    average)."""
    ops = dense_layer_ops(model, tokens, precision, tp)
    causal = max(1, split_ways(prior_tokens + tokens // 2, tp))
    ops.insert(1, StepOp("prefill_unique_attention", "unique_attention", "unique",
                         SharedAttention(**attention_kwargs(model, precision), batch=tokens,
                                         kv_tokens=causal)))
    return ops


__all__ = [
    "StepOp",
    "Where",
    "activation_bytes",
    "all_reduce_ops",
    "attention_kwargs",
    "dense_layer_ops",
    "expected_chunk_batches",
    "gather_ops",
    "lm_head_op",
    "lm_head_ops",
    "n_chunks",
    "partial_bytes",
    "prefill_dense_ops",
    "query_bytes",
    "split_ways",
]
