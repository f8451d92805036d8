"""``moska_colocated``: MoSKA's routed, batched shared attention on the serving node
itself (one GPU holds weights, corpus and per-request KV; no fabric). The deployment the
one-GPU serving loop measures (docs/validation.md), and the one to compare with
``shared_gemm`` when the question is routing, not disaggregation."""

from __future__ import annotations

from hw.ops import DecodeAttention, Gemm, GroupedSharedAttention, LseMerge, SharedAttention
from workloads.models import ModelSpec
from workloads.systems.base import ServingSystem
from workloads.systems.moska import CHUNK_MEAN_BYTES
from workloads.systems.ops import (
    StepOp,
    attention_kwargs,
    expected_chunk_batches,
    n_chunks,
    split_ways,
)


class MoskaColocated(ServingSystem):
    """Router, unique attention, one grouped launch over the routed chunks and an LSE merge
    of every chunk's partial with the unique one, all on the serving node."""

    name = "moska_colocated"
    description = "MoSKA's routed grouped shared attention on the serving node (no fabric)"

    def attention_ops(self, model: ModelSpec, precision: str, batch: int, unique_tokens: int,
                      shared_tokens: int, *, keep_fraction: float, chunk_tokens: int,
                      shared_queries: int, shared_nodes: int, tp: int) -> list[StepOp]:
        akw = attention_kwargs(model, precision)
        chunks = n_chunks(shared_tokens, chunk_tokens) if shared_tokens > 0 else 1
        ops = [
            StepOp("router", "router", "unique",
                   Gemm(batch * model.group, chunks * model.kv_heads, model.head_dim, precision)),
            StepOp("unique_attention", "unique_attention", "unique",
                   DecodeAttention(**akw, batch=batch, kv_tokens=split_ways(unique_tokens, tp))),
        ]
        if shared_tokens <= 0:
            return ops
        keep = max(1, round(keep_fraction * chunks))
        histogram = expected_chunk_batches(batch, chunks, keep_fraction)
        ops += [
            StepOp("shared_attention", "shared_attention", "unique",
                   GroupedSharedAttention(**akw, chunk_batches=histogram,
                                          chunk_tokens=chunk_tokens, requests=batch)),
            # every kept chunk's partial and the unique one, per (request, head)
            StepOp("merge", "merge", "unique",
                   LseMerge(batch, model.q_heads, model.head_dim, partials=1 + keep)),
        ]
        return ops

    def corpus_prefill_ops(self, model: ModelSpec, precision: str, tokens: int,
                           shared_tokens: int, *, keep_fraction: float, tp: int) -> list[StepOp]:
        kept = max(1, round(keep_fraction * shared_tokens))
        return [
            StepOp("prefill_shared_attention", "shared_attention", "unique",
                   SharedAttention(**attention_kwargs(model, precision), batch=tokens,
                                   kv_tokens=split_ways(kept, tp))),
            StepOp("prefill_merge", "merge", "unique",
                   LseMerge(tokens, model.q_heads, model.head_dim, 2)),
        ]

    def resident_shared_bytes(self, model: ModelSpec, precision: str, corpus_tokens: int,
                              chunks: int) -> float:
        """The corpus once, and the router's chunk means."""
        means = chunks * model.kv_heads * model.head_dim * model.layers * CHUNK_MEAN_BYTES
        return corpus_tokens * model.kv_bytes_per_token(precision) + means


__all__ = ["MoskaColocated"]
