"""Transformer shapes as data, and the operations of one decode step for each system.

The op lists here are the single description of the work: ``sim.analytic`` sums their
prices in closed form and the event simulation runs them with queueing, so the two agree
by construction wherever there is no queueing, batching or contention.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Literal

from hw.ops import (
    ACT_BYTES,
    STAT_BYTES,
    DecodeAttention,
    Gemm,
    GroupedSharedAttention,
    LseMerge,
    Op,
    SharedAttention,
    Transfer,
)
from hw.specs import dtype_bytes
from workloads.errors import WorkloadError

SYSTEMS = ("vanilla", "prefix_cache", "shared_gemm", "moska")
System = Literal["vanilla", "prefix_cache", "shared_gemm", "moska"]
Where = Literal["unique", "shared", "fabric"]


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer's shapes (Llama layout: GQA attention, SwiGLU FFN)."""

    name: str
    layers: int
    hidden: int
    q_heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    tied_embeddings: bool = False
    source: str = ""

    @property
    def group(self) -> int:
        return self.q_heads // self.kv_heads

    def kv_bytes_per_token_per_layer(self, precision: str) -> float:
        """K and V of one token in one layer: 2 x kv_heads x head_dim x bytes."""
        return 2 * self.kv_heads * self.head_dim * dtype_bytes(precision)

    def kv_bytes_per_token(self, precision: str) -> float:
        return self.layers * self.kv_bytes_per_token_per_layer(precision)

    @property
    def params_per_layer(self) -> int:
        attn = self.hidden * self.head_dim * (2 * self.q_heads + 2 * self.kv_heads)
        return attn + 3 * self.hidden * self.ffn + 2 * self.hidden

    @property
    def params(self) -> int:
        embed = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * self.params_per_layer + embed + self.hidden

    def weight_bytes(self, precision: str) -> float:
        return self.params * dtype_bytes(precision)


MODELS: dict[str, ModelSpec] = {
    "llama-3.1-8b": ModelSpec(
        "llama-3.1-8b", layers=32, hidden=4096, q_heads=32, kv_heads=8, head_dim=128,
        ffn=14336, vocab=128256, source="meta-llama/Llama-3.1-8B config.json",
    ),
    "llama-3.1-70b": ModelSpec(
        "llama-3.1-70b", layers=80, hidden=8192, q_heads=64, kv_heads=8, head_dim=128,
        ffn=28672, vocab=128256, source="meta-llama/Llama-3.1-70B config.json",
    ),
}


def available_models() -> list[str]:
    return sorted(MODELS)


def get_model(name: str) -> ModelSpec:
    if name not in MODELS:
        near = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise WorkloadError(f"model: unknown model {name!r}{hint}; known: {', '.join(MODELS)}")
    return MODELS[name]


@dataclass(frozen=True)
class StepOp:
    """One operation of a decode step: what, where it runs, and which time bucket it fills.

    ``phase`` is the breakdown bucket: other_layers | unique_attention | shared_attention |
    router | merge | fabric. ``per`` is 'layer' (repeated for every layer) or 'step'.
    """

    name: str
    phase: str
    where: Where
    op: Op
    per: Literal["layer", "step"] = "layer"


def dense_layer_ops(model: ModelSpec, batch: int, precision: str, tp: int = 1) -> list[StepOp]:
    """Projections and FFN of one layer for ``batch`` tokens, split ``tp`` ways (tensor parallel)."""
    qkv = (model.q_heads + 2 * model.kv_heads) * model.head_dim
    return [
        StepOp("qkv_proj", "other_layers", "unique", Gemm(batch, _split(qkv, tp), model.hidden, precision)),
        StepOp("o_proj", "other_layers", "unique",
               Gemm(batch, _split(model.hidden, tp), model.q_heads * model.head_dim, precision)),
        StepOp("ffn_gate_up", "other_layers", "unique",
               Gemm(batch, _split(2 * model.ffn, tp), model.hidden, precision)),
        StepOp("ffn_down", "other_layers", "unique",
               Gemm(batch, _split(model.hidden, tp), model.ffn, precision)),
    ]


def lm_head_op(model: ModelSpec, batch: int, precision: str, tp: int = 1) -> StepOp:
    return StepOp("lm_head", "other_layers", "unique",
                  Gemm(batch, _split(model.vocab, tp), model.hidden, precision), per="step")


def _split(n: int, ways: int) -> int:
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
    queries: int, n_chunks: int, keep_fraction: float
) -> tuple[tuple[int, int], ...]:
    """Expected per-chunk batch histogram when ``queries`` queries each keep ``keep_fraction``
    of ``n_chunks`` chunks uniformly at random: the active chunks and their mean batch.

    A chunk is active with probability 1 - (1 - f)^Q; active chunks share Q*f*N query
    slots. The mean is rounded up to whole queries (a kernel pads rows anyway).
    """
    k = max(1, round(keep_fraction * n_chunks))
    f = k / n_chunks
    p_active = 1.0 - (1.0 - f) ** queries
    active = max(1, round(n_chunks * p_active))
    per_chunk = max(1, math.ceil(queries * k / active - 1e-9))
    return ((per_chunk, active),)


def decode_step_ops(
    model: ModelSpec,
    system: System,
    precision: str,
    batch: int,
    unique_tokens: int,
    shared_tokens: int,
    *,
    keep_fraction: float = 1.0,
    chunk_tokens: int | None = None,
    shared_queries: int | None = None,
    shared_nodes: int = 1,
    tp: int = 1,
) -> list[StepOp]:
    """The ops of one decode step of one layer (plus per-step ops) for ``batch`` requests.

    For ``vanilla``/``prefix_cache``/``shared_gemm`` every op runs on the serving node; with
    ``tp`` > 1 that node is one of ``tp`` that split each op evenly (ideal tensor and
    sequence parallelism). For ``moska`` the unique node runs projections, FFN, router,
    unique attention and merge for its ``batch``; each of ``shared_nodes`` shared nodes holds
    1/shared_nodes of the chunks and runs one grouped launch for ``shared_queries`` queries
    (all unique nodes' requests; default ``batch``); queries and partials cross the fabric.
    """
    if system not in SYSTEMS:
        raise WorkloadError(f"system: expected one of {', '.join(SYSTEMS)}, got {system!r}")
    akw = attention_kwargs(model, precision)
    ops = dense_layer_ops(model, batch, precision, tp)
    if system in ("vanilla", "prefix_cache"):
        ctx = _split(shared_tokens + unique_tokens, tp)
        ops.insert(1, StepOp("attention", "unique_attention", "unique",
                             DecodeAttention(**akw, batch=batch, kv_tokens=ctx)))
    elif system == "shared_gemm":
        att = [StepOp("unique_attention", "unique_attention", "unique",
                      DecodeAttention(**akw, batch=batch, kv_tokens=_split(unique_tokens, tp)))]
        if shared_tokens > 0:
            att.append(StepOp("shared_attention", "shared_attention", "unique",
                              SharedAttention(**akw, batch=batch, kv_tokens=_split(shared_tokens, tp))))
            att.append(StepOp("merge", "merge", "unique",
                              LseMerge(batch, model.q_heads, model.head_dim, partials=2)))
        ops[1:1] = att
    else:
        ops[1:1] = moska_attention_ops(
            model, precision, batch, unique_tokens, shared_tokens, keep_fraction,
            chunk_tokens or shared_tokens, shared_queries or batch, shared_nodes)
    ops.append(lm_head_op(model, batch, precision, tp))
    return ops


def n_chunks(shared_tokens: int, chunk_tokens: int) -> int:
    return max(1, math.ceil(shared_tokens / chunk_tokens))


def moska_attention_ops(
    model: ModelSpec, precision: str, batch: int, unique_tokens: int, shared_tokens: int,
    keep_fraction: float, chunk_tokens: int, shared_queries: int, shared_nodes: int,
) -> list[StepOp]:
    """MoSKA's attention for one layer: route, ship queries, grouped shared GEMM, merge."""
    akw = attention_kwargs(model, precision)
    chunks = n_chunks(shared_tokens, chunk_tokens)
    ops = [
        # router: every query row scores every chunk's mean key of its KV head
        StepOp("router", "router", "unique",
               Gemm(batch * model.group, chunks * model.kv_heads, model.head_dim, precision)),
        StepOp("unique_attention", "unique_attention", "unique",
               DecodeAttention(**akw, batch=batch, kv_tokens=unique_tokens)),
    ]
    if shared_tokens <= 0:
        return ops
    per_node = max(1, chunks // shared_nodes)
    histogram = expected_chunk_batches(shared_queries, per_node, keep_fraction)
    ops += [
        StepOp("send_query", "fabric", "fabric", Transfer(query_bytes(model, batch))),
        StepOp("shared_attention", "shared_attention", "shared",
               GroupedSharedAttention(**akw, chunk_batches=histogram, chunk_tokens=chunk_tokens,
                                      requests=shared_queries)),
        StepOp("return_partial", "fabric", "fabric", Transfer(partial_bytes(model, batch))),
        StepOp("merge", "merge", "unique",
               LseMerge(batch, model.q_heads, model.head_dim, partials=1 + shared_nodes)),
    ]
    return ops


def prefill_ops(
    model: ModelSpec,
    system: System,
    precision: str,
    tokens: int,
    shared_tokens: int,
    *,
    keep_fraction: float = 1.0,
    tp: int = 1,
) -> list[StepOp]:
    """The ops of one layer of prefilling ``tokens`` unique prompt tokens of one request.

    Projections and FFN are GEMMs with m = tokens; causal self-attention over the unique
    prompt is priced as a shared-attention GEMM over half the prompt (the causal average);
    the prompt's attention to the shared corpus reads ``keep_fraction`` of it (all of it
    for the dense systems) as one batched GEMM. The shared corpus's own KV is precomputed
    (the paper's premise), so it is never prefilled here. In MoSKA the shared part runs on
    the shared nodes.
    """
    if system not in SYSTEMS:
        raise WorkloadError(f"system: expected one of {', '.join(SYSTEMS)}, got {system!r}")
    akw = attention_kwargs(model, precision)
    ops = dense_layer_ops(model, tokens, precision, tp)
    causal = max(1, _split(tokens // 2, tp))
    ops.insert(1, StepOp("prefill_unique_attention", "unique_attention", "unique",
                         SharedAttention(**akw, batch=tokens, kv_tokens=causal)))
    if shared_tokens > 0:
        kept = shared_tokens if system != "moska" else max(1, round(keep_fraction * shared_tokens))
        where: Where = "shared" if system == "moska" else "unique"
        ops.insert(2, StepOp("prefill_shared_attention", "shared_attention", where,
                             SharedAttention(**akw, batch=tokens, kv_tokens=_split(kept, tp))))
        if system == "moska":
            ops.insert(2, StepOp("send_prompt_queries", "fabric", "fabric",
                                 Transfer(query_bytes(model, tokens))))
            ops.insert(4, StepOp("return_prompt_partials", "fabric", "fabric",
                                 Transfer(partial_bytes(model, tokens))))
        ops.insert(len(ops) - 3, StepOp("prefill_merge", "merge", "unique",
                                        LseMerge(tokens, model.q_heads, model.head_dim, 2)))
    return ops
