"""What a serving system is: the ops of its decode step and of a prefill, what it keeps
resident in HBM, what each request reserves, and whether it is disaggregated.

A system is one subclass of :class:`ServingSystem` in its own module, registered with
:func:`workloads.systems.register_system`; the config, the engine and the closed form ask
the registry and never compare system names.
"""

from __future__ import annotations

from typing import ClassVar

from workloads.models import ModelSpec
from workloads.systems.ops import StepOp, dense_layer_ops, lm_head_ops, prefill_dense_ops


class ServingSystem:
    """One way of serving attention over a shared corpus. Subclasses fill two hooks,
    :meth:`attention_ops` (a decode step's attention) and :meth:`corpus_prefill_ops` (a
    prompt's attention to the corpus), and say what they keep resident."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: attention over the corpus runs on shared nodes, reached over the fabric
    disaggregated: ClassVar[bool] = False
    #: each request holds its own copy of its shared tokens' KV (no sharing at all)
    carries_shared_kv: ClassVar[bool] = False

    # -- hooks --------------------------------------------------------------------------
    def attention_ops(self, model: ModelSpec, precision: str, batch: int, unique_tokens: int,
                      shared_tokens: int, *, keep_fraction: float, chunk_tokens: int,
                      shared_queries: int, shared_nodes: int, tp: int) -> list[StepOp]:
        """One layer's attention ops of a decode step for ``batch`` requests."""
        raise NotImplementedError

    def corpus_prefill_ops(self, model: ModelSpec, precision: str, tokens: int,
                           shared_tokens: int, *, keep_fraction: float, tp: int) -> list[StepOp]:
        """One layer's ops for ``tokens`` prompt tokens attending to the corpus (and the
        merge with their own attention); called only when ``shared_tokens`` > 0."""
        raise NotImplementedError

    def resident_shared_bytes(self, model: ModelSpec, precision: str, corpus_tokens: int,
                              chunks: int) -> float:
        """Bytes every serving replica keeps in HBM for the shared corpus (exact; callers
        round up)."""
        raise NotImplementedError

    # -- derived ------------------------------------------------------------------------
    def decode_ops(self, model: ModelSpec, precision: str, batch: int, unique_tokens: int,
                   shared_tokens: int, *, keep_fraction: float = 1.0,
                   chunk_tokens: int | None = None, shared_queries: int | None = None,
                   shared_nodes: int = 1, tp: int = 1) -> list[StepOp]:
        """The ops of one decode step of one layer (plus per-step ops) for ``batch``
        requests on a replica of ``tp`` GPUs: projections, this system's attention, FFN
        (with their all-reduces when ``tp`` > 1), the LM head (and its logits' gather)."""
        ops = dense_layer_ops(model, batch, precision, tp)
        ops[1:1] = self.attention_ops(
            model, precision, batch, unique_tokens, shared_tokens,
            keep_fraction=keep_fraction, chunk_tokens=chunk_tokens or shared_tokens or 1,
            shared_queries=shared_queries or batch, shared_nodes=shared_nodes, tp=tp)
        ops += lm_head_ops(model, batch, precision, tp)
        return ops

    def prefill_ops(self, model: ModelSpec, precision: str, tokens: int, shared_tokens: int,
                    *, keep_fraction: float = 1.0, tp: int = 1,
                    prior_tokens: int = 0) -> list[StepOp]:
        """The ops of one layer of prefilling ``tokens`` new prompt tokens of one request,
        after ``prior_tokens`` of its context already in KV (resident history, earlier
        chunks). The corpus's own KV is precomputed (the paper's premise), never prefilled
        here."""
        ops = prefill_dense_ops(model, precision, tokens, tp, prior_tokens)
        if shared_tokens > 0:
            ops[2:2] = self.corpus_prefill_ops(model, precision, tokens, shared_tokens,
                                               keep_fraction=keep_fraction, tp=tp)
        return ops

    def request_kv_tokens(self, unique_tokens: int, output_tokens: int,
                          shared_tokens: int) -> int:
        """Tokens of KV one request reserves on its unique node at admission."""
        return unique_tokens + output_tokens + (shared_tokens if self.carries_shared_kv else 0)

    def __repr__(self) -> str:
        return f"<system {self.name}>"


__all__ = ["ServingSystem"]
