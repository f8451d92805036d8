"""Triton kernels of MoSKA decode attention: grouped shared-chunk attention, flash-decoding over each
request's unique KV, and the log-sum-exp merge.

Runs on CUDA GPUs, and on CPU tensors under TRITON_INTERPRET=1 (tests). Partial layouts match
traces.capture.reference. Softmax runs in base 2 inside the kernels (qk_scale = log2(e)/sqrt(d));
every LSE leaving a kernel is natural log.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from traces.capture.router import Dispatch
from traces.capture.shared_kv import SharedKV

LOG2E = 1.4426950408889634


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _check_device(t: torch.Tensor) -> None:
    if t.device.type != "cuda" and not interpreting():
        raise RuntimeError(
            "the Triton MoSKA kernels need a CUDA tensor, or TRITON_INTERPRET=1 on CPU; "
            "use backend='torch' on CPU"
        )


@dataclass(frozen=True)
class KernelConfig:
    """Tile shape and pipelining of one attention kernel launch."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def shared_config(rows_per_group: int) -> KernelConfig:
    """Tile shape for the shared kernel from the expected rows (requests x g) per (kv head, chunk).
    Chosen from a sweep on an H100 (bench/README.md): small tiles stream KV at full bandwidth,
    128-row tiles with 8 warps do best once the GEMM is compute-bound."""
    if interpreting():
        return KernelConfig(16, 16, 4, 1)
    if rows_per_group <= 16:
        return KernelConfig(16, 128, 4, 3)
    if rows_per_group <= 32:
        return KernelConfig(32, 128, 4, 3)
    if rows_per_group <= 64:
        return KernelConfig(64, 64, 4, 3)
    if rows_per_group <= 256:
        return KernelConfig(128, 64, 8, 3)
    return KernelConfig(128, 128, 8, 3)


def unique_config() -> KernelConfig:
    """Tile shape for flash-decoding: g query rows padded to 16, 128-token KV blocks."""
    if interpreting():
        return KernelConfig(16, 16, 4, 1)
    return KernelConfig(16, 128, 4, 4)


@triton.jit
def _attend_range(
    q,
    k_base,
    v_base,
    stride_kn,
    stride_vn,
    start,
    end,
    qk_scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    D: tl.constexpr,
    LP_DTYPE: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    MASK_N: tl.constexpr,
):
    """Online-softmax attention of q [BLOCK_M, D] over tokens [start, end) -> (acc, m (log2), l)."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    if UPCAST:
        q = q.to(tl.float32)
    k_ptrs = k_base + (start + offs_n)[:, None].to(tl.int64) * stride_kn + offs_d[None, :]
    v_ptrs = v_base + (start + offs_n)[:, None].to(tl.int64) * stride_vn + offs_d[None, :]
    for n0 in range(start, end, BLOCK_N):
        if MASK_N:
            nmask = (n0 + offs_n) < end
            k = tl.load(k_ptrs, mask=nmask[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=nmask[:, None], other=0.0)
        else:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        else:
            k = k.to(LP_DTYPE)
            v = v.to(LP_DTYPE)
        qk = tl.dot(q, tl.trans(k), input_precision=PREC)
        if MASK_N:
            qk = tl.where(nmask[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(qk * qk_scale - m_new[:, None])  # one FMA per score
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        p_lp = p.to(LP_DTYPE)
        if UPCAST:
            p_lp = p_lp.to(tl.float32)
        acc = tl.dot(p_lp, v, acc, input_precision=PREC)
        m_i = m_new
        k_ptrs += BLOCK_N * stride_kn
        v_ptrs += BLOCK_N * stride_vn
    return acc, m_i, l_i


@triton.jit
def _finish(acc, m_i, l_i):
    """Normalised output and natural-log LSE of an online-softmax state; empty rows give (0, -inf)."""
    has = l_i > 0
    lse = tl.where(
        has, (m_i + tl.log2(tl.where(has, l_i, 1.0))) * 0.6931471805599453, float("-inf")
    )
    o = acc / tl.where(has, l_i, 1.0)[:, None]
    return o, lse


@triton.jit(
    do_not_specialize=[
        "shared_len",
        "n_chunks",
        "chunk_tokens",
        "split_tokens",
        "n_splits",
        "pairs_per_request",
    ]
)
def _shared_kernel(
    Q,
    K,
    V,
    O,
    LSE,
    TILE_E,
    TILE_FIRST,
    TILE_CNT,
    PAIR_ORDER,
    stride_qb,
    stride_qh,
    stride_kh,
    stride_kn,
    stride_vh,
    stride_vn,
    shared_len,
    n_chunks,
    chunk_tokens,
    split_tokens,
    n_splits,
    pairs_per_request,
    qk_scale,
    G: tl.constexpr,
    D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    MASK_N: tl.constexpr,
):
    """One program = one tile of <= BLOCK_M//G pairs of one (kv head, chunk) x one KV split of the chunk."""
    t = tl.program_id(0)
    s = tl.program_id(1)
    e = tl.load(TILE_E + t)
    if e >= 0:
        h = e // n_chunks
        c = e - h * n_chunks
        first = tl.load(TILE_FIRST + t)
        cnt = tl.load(TILE_CNT + t)
        rows = tl.arange(0, BLOCK_M)
        pr = rows // G
        j = rows - pr * G
        valid = (pr < cnt) & (pr < BLOCK_M // G)
        p = tl.load(PAIR_ORDER + first + pr, mask=valid, other=0)
        b = p // pairs_per_request
        offs_d = tl.arange(0, D)
        q_ptrs = (
            Q
            + b.to(tl.int64)[:, None] * stride_qb
            + (h * G + j)[:, None] * stride_qh
            + offs_d[None, :]
        )
        q = tl.load(q_ptrs, mask=valid[:, None], other=0.0)
        start = c * chunk_tokens + s * split_tokens
        end = tl.minimum(tl.minimum(start + split_tokens, (c + 1) * chunk_tokens), shared_len)
        k_base = K + h.to(tl.int64) * stride_kh
        v_base = V + h.to(tl.int64) * stride_vh
        acc, m_i, l_i = _attend_range(
            q,
            k_base,
            v_base,
            stride_kn,
            stride_vn,
            start,
            end,
            qk_scale,
            BLOCK_M,
            BLOCK_N,
            D,
            Q.dtype.element_ty,
            UPCAST,
            PREC,
            MASK_N,
        )
        o, lse = _finish(acc, m_i, l_i)
        dst = (p.to(tl.int64) * n_splits + s) * G + j
        tl.store(O + dst[:, None] * D + offs_d[None, :], o, mask=valid[:, None])
        tl.store(LSE + dst, lse, mask=valid)


@triton.jit(do_not_specialize=["n_kv_heads", "split_tokens", "n_splits"])
def _unique_kernel(
    Q,
    K,
    V,
    LENS,
    SLOTS,
    O,
    LSE,
    stride_qb,
    stride_qh,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    n_kv_heads,
    split_tokens,
    n_splits,
    qk_scale,
    G: tl.constexpr,
    D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr,
    PREC: tl.constexpr,
    HAS_SLOTS: tl.constexpr,
):
    """Flash-decoding: one program = one (request, kv head) x one split of its unique tokens.
    With HAS_SLOTS, batch row b reads cache row SLOTS[b] (a serving loop's slot pool)."""
    bh = tl.program_id(0)
    s = tl.program_id(1)
    b = bh // n_kv_heads
    h = bh - b * n_kv_heads
    length = tl.load(LENS + b)
    if HAS_SLOTS:
        kb = tl.load(SLOTS + b).to(tl.int64)
    else:
        kb = b.to(tl.int64)
    rows = tl.arange(0, BLOCK_M)
    valid = rows < G
    offs_d = tl.arange(0, D)
    q_ptrs = Q + b.to(tl.int64) * stride_qb + (h * G + rows)[:, None] * stride_qh + offs_d[None, :]
    q = tl.load(q_ptrs, mask=valid[:, None], other=0.0)
    start = s * split_tokens
    end = tl.minimum(start + split_tokens, length)
    k_base = K + kb * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + kb * stride_vb + h.to(tl.int64) * stride_vh
    acc, m_i, l_i = _attend_range(
        q,
        k_base,
        v_base,
        stride_kn,
        stride_vn,
        start,
        end,
        qk_scale,
        BLOCK_M,
        BLOCK_N,
        D,
        Q.dtype.element_ty,
        UPCAST,
        PREC,
        True,
    )
    o, lse = _finish(acc, m_i, l_i)
    dst = (bh.to(tl.int64) * n_splits + s) * G + rows
    tl.store(O + dst[:, None] * D + offs_d[None, :], o, mask=valid[:, None])
    tl.store(LSE + dst, lse, mask=valid)


@triton.jit
def _merge_one(m, l, acc, lse, o):
    m_new = tl.maximum(m, lse)
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp(m - m_safe)
    w = tl.exp(lse - m_safe)
    return m_new, l * alpha + w, acc * alpha[:, None] + w[:, None] * o


@triton.jit(do_not_specialize=["n_kv_heads", "n_shared_parts", "n_unique_parts"])
def _merge_kernel(
    OS,
    LSES,
    OU,
    LSEU,
    OUT,
    stride_ob,
    stride_oh,
    n_kv_heads,
    n_shared_parts,
    n_unique_parts,
    G: tl.constexpr,
    BLOCK_G: tl.constexpr,
    D: tl.constexpr,
):
    """One program = one (request, kv head): LSE-merge its top_k * S shared and S_u unique partials."""
    bh = tl.program_id(0)
    b = bh // n_kv_heads
    h = bh - b * n_kv_heads
    g = tl.arange(0, BLOCK_G)
    gmask = g < G
    offs_d = tl.arange(0, D)
    m = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, D], tl.float32)
    base = bh.to(tl.int64) * n_shared_parts
    for i in range(n_shared_parts):
        row = (base + i) * G + g
        lse = tl.load(LSES + row, mask=gmask, other=float("-inf"))
        o = tl.load(OS + row[:, None] * D + offs_d[None, :], mask=gmask[:, None], other=0.0)
        m, l, acc = _merge_one(m, l, acc, lse, o)
    base = bh.to(tl.int64) * n_unique_parts
    for i in range(n_unique_parts):
        row = (base + i) * G + g
        lse = tl.load(LSEU + row, mask=gmask, other=float("-inf"))
        o = tl.load(OU + row[:, None] * D + offs_d[None, :], mask=gmask[:, None], other=0.0)
        m, l, acc = _merge_one(m, l, acc, lse, o)
    out = acc / tl.where(l > 0, l, 1.0)[:, None]
    out_ptrs = OUT + b.to(tl.int64) * stride_ob + (h * G + g)[:, None] * stride_oh + offs_d[None, :]
    tl.store(out_ptrs, out.to(OUT.dtype.element_ty), mask=gmask[:, None])


# ---------------------------------------------------------------------------------------------
# launchers


def _prec(dtype: torch.dtype) -> str:
    """fp32 inputs use exact fp32 dots (Triton's default would be tf32); low precision uses tensor cores."""
    return "ieee" if dtype == torch.float32 else "tf32"


def _check_head_dim(d: int) -> None:
    if d < 16 or d & (d - 1):
        raise ValueError(f"the Triton kernels need head_dim a power of two >= 16, got {d}")


def shared_splits(est_tiles: int, chunk_tokens: int, block_n: int, n_sms: int) -> int:
    """KV splits per chunk so small batches still launch about one program per SM (power of two,
    whole BLOCK_N blocks). An H100 sweep (bench/README.md) found more splits slower: shorter
    programs spend more of their time filling and draining the load pipeline."""
    target = n_sms
    splits = 1
    while est_tiles * splits < target and chunk_tokens // (splits * 2) >= 2 * block_n:
        splits *= 2
    return splits


@dataclass(frozen=True)
class SharedLaunch:
    """Host-side plan of one shared-attention launch (all derived from host-known shapes)."""

    config: KernelConfig
    n_splits: int
    split_tokens: int


def plan_shared(
    q: torch.Tensor,
    shared: SharedKV,
    top_k: int,
    config: KernelConfig | None = None,
    n_splits: int | None = None,
) -> SharedLaunch:
    """Choose tile shape and KV splits from batch, top_k and chunk count (host-known; no device reads).
    Build the dispatch with pairs_per_tile = plan.config.block_m // g."""
    batch, hq = q.shape[0], q.shape[1]
    g = hq // shared.kv_heads
    n_chunks = shared.n_chunks
    expected_rows = max(1, round(batch * top_k / n_chunks)) * g
    cfg = config or shared_config(expected_rows)
    if cfg.block_m % g:
        raise ValueError(f"block_m={cfg.block_m} must be a multiple of the GQA group size {g}")
    est_tiles = (
        shared.kv_heads * min(n_chunks, batch * top_k) * max(1, -(-expected_rows // cfg.block_m))
    )
    if n_splits is None:
        n_splits = (
            1
            if interpreting()
            else shared_splits(est_tiles, shared.chunk_tokens, cfg.block_n, _sm_count(q.device))
        )
    split_tokens = -(-shared.chunk_tokens // n_splits)
    split_tokens = -(-split_tokens // cfg.block_n) * cfg.block_n
    return SharedLaunch(cfg, n_splits, split_tokens)


def shared_attention_triton(
    q: torch.Tensor, shared: SharedKV, dispatch: Dispatch, plan: SharedLaunch
) -> tuple[torch.Tensor, torch.Tensor]:
    """One grouped launch over all (kv head, chunk) tiles and KV splits -> o [P, S, g, d] fp32, lse [P, S, g]."""
    _check_device(q)
    b, hq, d = q.shape
    _check_head_dim(d)
    hk = shared.kv_heads
    g = hq // hk
    cfg = plan.config
    if dispatch.pairs_per_tile != cfg.block_m // g:
        raise ValueError(
            f"dispatch was built with {dispatch.pairs_per_tile} pairs per tile, the plan needs "
            f"{cfg.block_m // g}"
        )
    n_pairs = b * hk * dispatch.top_k
    o = torch.empty((n_pairs, plan.n_splits, g, d), dtype=torch.float32, device=q.device)
    lse = torch.empty((n_pairs, plan.n_splits, g), dtype=torch.float32, device=q.device)
    even = (
        shared.tokens % shared.chunk_tokens == 0
        and shared.chunk_tokens % plan.split_tokens == 0
        and plan.split_tokens % cfg.block_n == 0
    )
    q = q.contiguous()
    grid = (dispatch.max_tiles, plan.n_splits)
    _shared_kernel[grid](
        q,
        shared.k,
        shared.v,
        o,
        lse,
        dispatch.tile_expert,
        dispatch.tile_first,
        dispatch.tile_count,
        dispatch.pair_order,
        q.stride(0),
        q.stride(1),
        shared.k.stride(0),
        shared.k.stride(1),
        shared.v.stride(0),
        shared.v.stride(1),
        shared.tokens,
        shared.n_chunks,
        shared.chunk_tokens,
        plan.split_tokens,
        plan.n_splits,
        hk * dispatch.top_k,
        LOG2E / math.sqrt(d),
        G=g,
        D=d,
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        UPCAST=interpreting(),
        PREC=_prec(q.dtype),
        MASK_N=not even,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return o, lse


def unique_splits(max_len: int, batch_heads: int, block_n: int, n_sms: int) -> int:
    """Flash-decoding splits: enough (request, kv head, split) programs for ~4 per SM."""
    splits = 1
    while batch_heads * splits < 4 * n_sms and max_len // (splits * 2) >= 2 * block_n:
        splits *= 2
    return splits


def unique_attention_triton(
    q: torch.Tensor,
    k_u: torch.Tensor,
    v_u: torch.Tensor,
    lens: torch.Tensor,
    config: KernelConfig | None = None,
    n_splits: int | None = None,
    slots: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flash-decoding over each request's first lens[b] tokens of k_u/v_u [B, kv_heads, L_max, d]
    -> o [B, kv_heads, S, g, d] fp32, lse [B, kv_heads, S, g]. Splits are sized from L_max (fixed
    capacity), so a growing cache does not change the launch shape.

    ``slots`` (int [B], optional): batch row b reads cache row ``slots[b]`` of k_u/v_u, which are
    then a slot pool [n_slots, kv_heads, L_max, d] (continuous batching without moving KV)."""
    _check_device(q)
    b, hq, d = q.shape
    _check_head_dim(d)
    hk, l_max = k_u.shape[1], k_u.shape[2]
    if slots is None and k_u.shape[0] != b:
        raise ValueError(f"unique cache has {k_u.shape[0]} rows for a batch of {b}; pass slots")
    g = hq // hk
    cfg = config or unique_config()
    if n_splits is None:
        n_splits = (
            1 if interpreting() else unique_splits(l_max, b * hk, cfg.block_n, _sm_count(q.device))
        )
    per_split = -(-l_max // n_splits)
    split_tokens = max(cfg.block_n, -(-per_split // cfg.block_n) * cfg.block_n)
    o = torch.empty((b, hk, n_splits, g, d), dtype=torch.float32, device=q.device)
    lse = torch.empty((b, hk, n_splits, g), dtype=torch.float32, device=q.device)
    q = q.contiguous()
    if k_u.stride(3) != 1 or v_u.stride(3) != 1:
        raise ValueError("unique k/v caches need a contiguous head_dim")
    lens32 = lens.to(device=q.device, dtype=torch.int32)
    slots32 = lens32 if slots is None else slots.to(device=q.device, dtype=torch.int32)
    _unique_kernel[(b * hk, n_splits)](
        q,
        k_u,
        v_u,
        lens32,
        slots32,
        o,
        lse,
        q.stride(0),
        q.stride(1),
        k_u.stride(0),
        k_u.stride(1),
        k_u.stride(2),
        v_u.stride(0),
        v_u.stride(1),
        v_u.stride(2),
        hk,
        split_tokens,
        n_splits,
        LOG2E / math.sqrt(d),
        G=g,
        D=d,
        BLOCK_M=max(cfg.block_m, triton.next_power_of_2(g)),
        BLOCK_N=cfg.block_n,
        UPCAST=interpreting(),
        PREC=_prec(q.dtype),
        HAS_SLOTS=slots is not None,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    return o, lse


def merge_triton(
    o_shared: torch.Tensor,
    lse_shared: torch.Tensor,
    o_unique: torch.Tensor,
    lse_unique: torch.Tensor,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """LSE-merge shared partials [P, S, g, d] and unique partials [B, kv_heads, S_u, g, d] -> [B, q_heads, d]."""
    _check_device(o_unique)
    b, hk, su, g, d = o_unique.shape
    n_shared_parts = o_shared.shape[0] * o_shared.shape[1] // (b * hk)
    out = torch.empty((b, hk * g, d), dtype=out_dtype, device=o_unique.device)
    _merge_kernel[(b * hk,)](
        o_shared,
        lse_shared,
        o_unique,
        lse_unique,
        out,
        out.stride(0),
        out.stride(1),
        hk,
        n_shared_parts,
        su,
        G=g,
        BLOCK_G=triton.next_power_of_2(g),
        D=d,
        num_warps=4,
    )
    return out
