"""``prefix_cache``: the shared context's KV is stored once, but each request still reads
it with its own decode attention (memory-bound GEMVs)."""

from __future__ import annotations

from workloads.models import ModelSpec
from workloads.systems.base import ServingSystem
from workloads.systems.ops import StepOp
from workloads.systems.vanilla import Vanilla, dense_corpus_prefill


class PrefixCache(ServingSystem):
    """Vanilla's attention over a corpus held once per replica."""

    name = "prefix_cache"
    description = "shared KV stored once per replica; each request reads it separately"

    def attention_ops(self, model: ModelSpec, precision: str, batch: int, unique_tokens: int,
                      shared_tokens: int, *, keep_fraction: float, chunk_tokens: int,
                      shared_queries: int, shared_nodes: int, tp: int) -> list[StepOp]:
        return Vanilla().attention_ops(
            model, precision, batch, unique_tokens, shared_tokens, keep_fraction=keep_fraction,
            chunk_tokens=chunk_tokens, shared_queries=shared_queries, shared_nodes=shared_nodes,
            tp=tp)

    def corpus_prefill_ops(self, model: ModelSpec, precision: str, tokens: int,
                           shared_tokens: int, *, keep_fraction: float, tp: int) -> list[StepOp]:
        return dense_corpus_prefill(model, precision, tokens, shared_tokens, tp)

    def resident_shared_bytes(self, model: ModelSpec, precision: str, corpus_tokens: int,
                              chunks: int) -> float:
        return corpus_tokens * model.kv_bytes_per_token(precision)


__all__ = ["PrefixCache"]
