"""``moska``: MoSKA. A router keeps the top chunks of the corpus per query; unique nodes
run projections, FFN, router, unique attention and the merge; shared nodes hold the
corpus's chunks and run one grouped shared-attention GEMM for every request's routed
queries; queries and partials cross the fabric.

A unique replica of ``tp`` GPUs (one multi-GPU node) splits heads ``tp`` ways: each GPU
routes, attends and merges its own heads. The replica is one endpoint of the fabric: its
GPUs' queries are gathered to the GPU facing the network before they are sent, and the
partials that come back are scattered to the GPUs that own their heads, which then merge
them (the cross-rank part of the LSE merge), both over the node's internal link."""

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
    gather_ops,
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
        ``shared_queries`` queries (every unique node's requests). With ``tp`` > 1 each GPU
        routes, attends and merges its heads; queries are gathered to the replica's network
        GPU and partials scattered back over the node's internal link."""
        akw = attention_kwargs(model, precision)
        chunks = n_chunks(shared_tokens, chunk_tokens)
        ops = [
            # router: every query row scores every chunk's mean key of its KV head
            StepOp("router", "router", "unique",
                   Gemm(batch * model.group, chunks * split_ways(model.kv_heads, tp),
                        model.head_dim, precision)),
            StepOp("unique_attention", "unique_attention", "unique",
                   DecodeAttention(**akw, batch=batch, kv_tokens=split_ways(unique_tokens, tp))),
        ]
        if shared_tokens <= 0:
            return ops
        per_node = max(1, chunks // shared_nodes)
        histogram = expected_chunk_batches(shared_queries, per_node, keep_fraction)
        ops += [
            *gather_ops("gather_queries", query_bytes(model, batch), tp),
            StepOp("send_query", "fabric", "fabric", Transfer(query_bytes(model, batch))),
            StepOp("shared_attention", "shared_attention", "shared",
                   GroupedSharedAttention(**akw, chunk_batches=histogram,
                                          chunk_tokens=chunk_tokens, requests=shared_queries)),
            StepOp("return_partial", "fabric", "fabric", Transfer(partial_bytes(model, batch))),
            *gather_ops("scatter_partials", partial_bytes(model, batch), tp),
            StepOp("merge", "merge", "unique",
                   LseMerge(batch, split_ways(model.q_heads, tp), model.head_dim,
                            partials=1 + shared_nodes)),
        ]
        return ops

    def corpus_prefill_ops(self, model: ModelSpec, precision: str, tokens: int,
                           shared_tokens: int, *, keep_fraction: float, tp: int) -> list[StepOp]:
        """The prompt's queries go to the shared nodes, attend to the kept fraction of the
        corpus there, and come back as partials to merge (gathered from and scattered to
        the replica's GPUs as in a decode step; the shared nodes' work does not depend on
        the unique replica's ``tp``)."""
        kept = max(1, round(keep_fraction * shared_tokens))
        return [
            *gather_ops("gather_prompt_queries", query_bytes(model, tokens), tp),
            StepOp("send_prompt_queries", "fabric", "fabric", Transfer(query_bytes(model, tokens))),
            StepOp("prefill_shared_attention", "shared_attention", "shared",
                   SharedAttention(**attention_kwargs(model, precision), batch=tokens,
                                   kv_tokens=kept)),
            StepOp("return_prompt_partials", "fabric", "fabric",
                   Transfer(partial_bytes(model, tokens))),
            *gather_ops("scatter_prompt_partials", partial_bytes(model, tokens), tp),
            StepOp("prefill_merge", "merge", "unique",
                   LseMerge(tokens, split_ways(model.q_heads, tp), model.head_dim, 2)),
        ]

    def resident_shared_bytes(self, model: ModelSpec, precision: str, corpus_tokens: int,
                              chunks: int) -> float:
        """The router's chunk means: one key per (chunk, KV head, layer)."""
        return chunks * model.kv_heads * model.head_dim * model.layers * CHUNK_MEAN_BYTES


__all__ = ["Moska"]
