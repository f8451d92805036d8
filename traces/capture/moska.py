"""MoSKA attention for one decode step of one layer: route, shared attention, unique attention, merge.

Two backends with the same maths: "triton" (one grouped shared launch, flash-decoding, merge kernel;
CUDA, or CPU under TRITON_INTERPRET=1) and "torch" (plain PyTorch, any device).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from traces.capture.reference import (
    merge_states_torch,
    shared_attention_torch,
    unique_attention_torch,
)
from traces.capture.router import build_dispatch, chunk_counts, route
from traces.capture.shared_kv import SharedKV
from traces.capture.timing import CudaEventTimer, NullTimer
from traces.schema import top_k_for

BACKENDS = ("torch", "triton")


@dataclass(frozen=True)
class MoskaOptions:
    """Routing and kernel choices of MoSKA attention."""

    keep_fraction: float = 0.25
    group_reduce: str = "max"
    backend: str = "torch"

    def __post_init__(self) -> None:
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")


@dataclass(frozen=True)
class MoskaResult:
    """Attention output [B, q_heads, d] plus what the trace records: selection and per-chunk batch."""

    out: torch.Tensor
    selected: torch.Tensor  # int32 [B, kv_heads, top_k], ascending
    chunk_batch: torch.Tensor  # int32 [kv_heads, n_chunks]


def moska_attention(
    q: torch.Tensor,
    shared: SharedKV,
    k_unique: torch.Tensor,
    v_unique: torch.Tensor,
    unique_lens: torch.Tensor,
    options: MoskaOptions,
    timer: NullTimer | CudaEventTimer | None = None,
) -> MoskaResult:
    """Exact attention of q [B, q_heads, d] over each request's top-k shared chunks and its unique KV.

    k_unique/v_unique: [B, kv_heads, L_max, d]; unique_lens[b] tokens of row b are valid (0 allowed).
    The timer brackets the 'router', 'shared_attention', 'unique_attention' and 'merge' regions.
    """
    timer = timer or NullTimer()
    b, hq, d = q.shape
    hk = shared.kv_heads
    if hq % hk or k_unique.shape[:2] != (b, hk) or k_unique.shape[3] != d or shared.k.shape[2] != d:
        raise ValueError(
            f"shape mismatch: q {tuple(q.shape)}, shared k {tuple(shared.k.shape)}, "
            f"unique k {tuple(k_unique.shape)}"
        )
    top_k = top_k_for(shared.n_chunks, options.keep_fraction)
    timer.begin_layer()
    if options.backend == "triton":
        from traces.capture import kernels

        g = hq // hk
        plan = kernels.plan_shared(q, shared, top_k)
        with timer.region("router"):
            sel = route(q, shared, top_k, options.group_reduce)
            dispatch = build_dispatch(sel, shared.n_chunks, plan.config.block_m // g)
        with timer.region("shared_attention"):
            o_s, l_s = kernels.shared_attention_triton(q, shared, dispatch, plan)
        with timer.region("unique_attention"):
            o_u, l_u = kernels.unique_attention_triton(q, k_unique, v_unique, unique_lens)
        with timer.region("merge"):
            out = kernels.merge_triton(o_s, l_s, o_u, l_u, q.dtype)
        counts = dispatch.counts
    else:
        with timer.region("router"):
            sel = route(q, shared, top_k, options.group_reduce)
        with timer.region("shared_attention"):
            o_s, l_s = shared_attention_torch(q, shared, sel)
        with timer.region("unique_attention"):
            o_u, l_u = unique_attention_torch(q, k_unique, v_unique, unique_lens)
        with timer.region("merge"):
            out = merge_states_torch(o_s, l_s, o_u, l_u, q.dtype)
        counts = chunk_counts(sel, shared.n_chunks)
    return MoskaResult(out=out, selected=sel, chunk_batch=counts)
