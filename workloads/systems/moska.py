"""``moska``: MoSKA. A router keeps the top chunks of the corpus per query; unique nodes
run projections, FFN, router, unique attention and the merge; shared nodes hold the
corpus's chunks and run one grouped shared-attention GEMM for every request's routed
queries; queries and partials cross the fabric."""

from __future__ import annotations

from hw.ops import (
    DecodeAttention,
    Gemm,
    GroupedSharedAttention,
    LseMerge,
    SharedAttention,
    Transfer,
)
from workloads.models import ModelSpec
from workloads.systems.base import ServingSystem
from workloads.systems.ops import (
    StepOp,
    attention_kwargs,
    expected_chunk_batches,
    n_chunks,
    partial_bytes,
    query_bytes,
    split_ways,
)

CHUNK_MEAN_BYTES = 2  # the router's chunk mean keys are kept in bf16


class Moska(ServingSystem):
    """Routed, batched, disaggregated shared attention."""

    name = "moska"
    description = "routed chunks of the shared KV on shared nodes, one grouped GEMM per launch"
    disaggregated = True

    def attention_ops(self, model: ModelSpec, precision: str, batch: int, unique_tokens: int,
                      shared_tokens: int, *, keep_fraction: float, chunk_tokens: int,
                      shared_queries: int, shared_nodes: int, tp: int) -> list[StepOp]:
        """Route, ship queries, grouped shared GEMM on each shared node, partials back, merge.
        Each of ``shared_nodes`` holds 1/shared_nodes of the chunks and runs one launch for
        ``shared_queries`` queries (every unique node's requests)."""
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
                   GroupedSharedAttention(**akw, chunk_batches=histogram,
                                          chunk_tokens=chunk_tokens, requests=shared_queries)),
            StepOp("return_partial", "fabric", "fabric", Transfer(partial_bytes(model, batch))),
            StepOp("merge", "merge", "unique",
                   LseMerge(batch, model.q_heads, model.head_dim, partials=1 + shared_nodes)),
        ]
        return ops

    def corpus_prefill_ops(self, model: ModelSpec, precision: str, tokens: int,
                           shared_tokens: int, *, keep_fraction: float, tp: int) -> list[StepOp]:
        """The prompt's queries go to the shared nodes, attend to the kept fraction of the
        corpus there, and come back as partials to merge."""
        kept = max(1, round(keep_fraction * shared_tokens))
        return [
            StepOp("send_prompt_queries", "fabric", "fabric", Transfer(query_bytes(model, tokens))),
            StepOp("prefill_shared_attention", "shared_attention", "shared",
                   SharedAttention(**attention_kwargs(model, precision), batch=tokens,
                                   kv_tokens=split_ways(kept, tp))),
            StepOp("return_prompt_partials", "fabric", "fabric",
                   Transfer(partial_bytes(model, tokens))),
            StepOp("prefill_merge", "merge", "unique",
                   LseMerge(tokens, model.q_heads, model.head_dim, 2)),
        ]

    def resident_shared_bytes(self, model: ModelSpec, precision: str, corpus_tokens: int,
                              chunks: int) -> float:
        """The router's chunk means: one key per (chunk, KV head, layer)."""
        return chunks * model.kv_heads * model.head_dim * model.layers * CHUNK_MEAN_BYTES


__all__ = ["Moska"]
