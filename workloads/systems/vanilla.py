"""``vanilla``: every request attends to its own copy of the shared context (no sharing)."""

from __future__ import annotations

from hw.ops import DecodeAttention, LseMerge, SharedAttention
from workloads.models import ModelSpec
from workloads.systems.base import ServingSystem
from workloads.systems.ops import StepOp, attention_kwargs, split_ways


class Vanilla(ServingSystem):
    """Per-request decode attention over shared + unique tokens; KV carried per request."""

    name = "vanilla"
    description = "each request keeps and reads its own copy of the shared context"
    carries_shared_kv = True

    def attention_ops(self, model: ModelSpec, precision: str, batch: int, unique_tokens: int,
                      shared_tokens: int, *, keep_fraction: float, chunk_tokens: int,
                      shared_queries: int, shared_nodes: int, tp: int) -> list[StepOp]:
        ctx = split_ways(shared_tokens + unique_tokens, tp)
        return [StepOp("attention", "unique_attention", "unique",
                       DecodeAttention(**attention_kwargs(model, precision), batch=batch,
                                       kv_tokens=ctx))]

    def corpus_prefill_ops(self, model: ModelSpec, precision: str, tokens: int,
                           shared_tokens: int, *, keep_fraction: float, tp: int) -> list[StepOp]:
        return dense_corpus_prefill(model, precision, tokens, shared_tokens, tp)

    def resident_shared_bytes(self, model: ModelSpec, precision: str, corpus_tokens: int,
                              chunks: int) -> float:
        return 0.0


def dense_corpus_prefill(model: ModelSpec, precision: str, tokens: int, shared_tokens: int,
                         tp: int) -> list[StepOp]:
    """The prompt attends to all of the corpus on its own node, then merges with its own
    attention (every non-disaggregated system prefills this way)."""
    return [
        StepOp("prefill_shared_attention", "shared_attention", "unique",
               SharedAttention(**attention_kwargs(model, precision), batch=tokens,
                               kv_tokens=split_ways(shared_tokens, tp))),
        StepOp("prefill_merge", "merge", "unique",
               LseMerge(tokens, split_ways(model.q_heads, tp), model.head_dim, 2)),
    ]


__all__ = ["Vanilla", "dense_corpus_prefill"]
