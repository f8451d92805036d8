"""``shared_gemm``: the corpus is held once and every request's queries attend to it in
one batched GEMM (Hydragen / cascade style), on the same node as the unique attention."""

from __future__ import annotations

from hw.ops import DecodeAttention, LseMerge, SharedAttention
from workloads.models import ModelSpec
from workloads.systems.base import ServingSystem
from workloads.systems.ops import StepOp, attention_kwargs, split_ways
from workloads.systems.vanilla import dense_corpus_prefill


class SharedGemm(ServingSystem):
    """Per-request unique attention, one batched shared-attention GEMM, an LSE merge."""

    name = "shared_gemm"
    description = "shared KV once per replica, read by one batched GEMM for all requests"

    def attention_ops(self, model: ModelSpec, precision: str, batch: int, unique_tokens: int,
                      shared_tokens: int, *, keep_fraction: float, chunk_tokens: int,
                      shared_queries: int, shared_nodes: int, tp: int) -> list[StepOp]:
        akw = attention_kwargs(model, precision)
        ops = [StepOp("unique_attention", "unique_attention", "unique",
                      DecodeAttention(**akw, batch=batch, kv_tokens=split_ways(unique_tokens, tp)))]
        if shared_tokens > 0:
            ops.append(StepOp("shared_attention", "shared_attention", "unique",
                              SharedAttention(**akw, batch=batch,
                                              kv_tokens=split_ways(shared_tokens, tp))))
            ops.append(StepOp("merge", "merge", "unique",
                              LseMerge(batch, split_ways(model.q_heads, tp), model.head_dim, partials=2)))
        return ops

    def corpus_prefill_ops(self, model: ModelSpec, precision: str, tokens: int,
                           shared_tokens: int, *, keep_fraction: float, tp: int) -> list[StepOp]:
        return dense_corpus_prefill(model, precision, tokens, shared_tokens, tp)

    def resident_shared_bytes(self, model: ModelSpec, precision: str, corpus_tokens: int,
                              chunks: int) -> float:
        return corpus_tokens * model.kv_bytes_per_token(precision)


__all__ = ["SharedGemm"]
