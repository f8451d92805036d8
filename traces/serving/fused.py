"""Fused Triton kernels for the parts of a decode step around attention, as a production server runs
them (vLLM-style): the reference model in traces.capture spends most of a small-batch step in dozens
of tiny element-wise launches per layer (float64 RoPE, unfused RMSNorm, a router and MoE dispatch of
~50 torch ops), which measure launch floors, not the hardware.

Kernels (each one launch; CUDA, or CPU under TRITON_INTERPRET=1):
* ``add_rms_norm``: optional residual add, then RMSNorm (same rounding steps as the model's RMSNorm).
* ``rope_append``: RoPE of q and k from a fused QKV projection (cos/sin read from a table computed in
  float64, as the model's RoPE), q written out, k and v appended to each request's KV slot.
* ``silu_mul``: SwiGLU's silu(gate) * up from a fused gate/up projection.
* ``route_topk``: MoSKA's top-k chunk selection from the group-reduced scores (ties to the lower chunk
  id, ids ascending), the router's exact rule, plus each (request, kv head)'s chunk -> slot map.
* ``dispatch``: the MoE-style grouping of (request, kv head, slot) pairs by chunk and its tile table,
  equal to traces.capture.router.build_dispatch (the same pair order and tiles; each kv head's tiles
  sit in a fixed region, unused entries -1).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from traces.capture.router import Dispatch, max_tiles_for


def _np2(n: int) -> int:
    return triton.next_power_of_2(max(1, int(n)))


# -- RMSNorm ---------------------------------------------------------------------------------------
@triton.jit
def _add_rms_norm_kernel(X, RES, W, OUT, RES_OUT, n_cols, eps, HAS_RES: tl.constexpr,
                         BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    m = offs < n_cols
    x = tl.load(X + row * n_cols + offs, mask=m, other=0.0)
    if HAS_RES:
        r = tl.load(RES + row * n_cols + offs, mask=m, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(X.dtype.element_ty, fp_downcast_rounding="rtne")
        tl.store(RES_OUT + row * n_cols + offs, x, mask=m)
    xf = x.to(tl.float32)
    var = tl.sum(xf * xf, axis=0) / n_cols
    y = (xf * (1.0 / tl.sqrt(var + eps))).to(X.dtype.element_ty, fp_downcast_rounding="rtne")
    w = tl.load(W + offs, mask=m, other=0.0)
    tl.store(OUT + row * n_cols + offs, (y.to(tl.float32) * w.to(tl.float32)).to(X.dtype.element_ty, fp_downcast_rounding="rtne"),
             mask=m)


def add_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
                 residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(norm(x + residual), x + residual) for x [rows, hidden]; without residual, (norm(x), x)."""
    x = x.contiguous()
    rows, n = x.shape
    out = torch.empty_like(x)
    res_out = torch.empty_like(x) if residual is not None else x
    _add_rms_norm_kernel[(rows,)](
        x, residual.contiguous() if residual is not None else x, weight, out, res_out, n, eps,
        HAS_RES=residual is not None, BLOCK=_np2(n), num_warps=8)
    return out, res_out


# -- RoPE + KV append ------------------------------------------------------------------------------
@triton.jit
def _rope_append_kernel(QKV, COS, SIN, LENS, SLOTS, Q, KC, VC, first_pos,
                        stride_cs, stride_ch, stride_cn,
                        HQ: tl.constexpr, HK: tl.constexpr, D: tl.constexpr):
    """One program = one (request, head) of the fused QKV row: q and k heads are rotated, v copied."""
    b = tl.program_id(0).to(tl.int64)
    hh = tl.program_id(1)
    half = tl.arange(0, D // 2)
    row = QKV + b * (HQ + 2 * HK) * D + hh * D
    x1 = tl.load(row + half).to(tl.float32)
    x2 = tl.load(row + D // 2 + half).to(tl.float32)
    length = tl.load(LENS + b)
    if hh < HQ + HK:
        pos = first_pos + length
        c = tl.load(COS + pos * (D // 2) + half)
        s = tl.load(SIN + pos * (D // 2) + half)
        o1 = x1 * c - x2 * s
        o2 = x2 * c + x1 * s
    else:
        o1 = x1
        o2 = x2
    o1 = o1.to(Q.dtype.element_ty, fp_downcast_rounding="rtne")
    o2 = o2.to(Q.dtype.element_ty, fp_downcast_rounding="rtne")
    if hh < HQ:
        dst = Q + (b * HQ + hh) * D
        tl.store(dst + half, o1)
        tl.store(dst + D // 2 + half, o2)
    else:
        slot = tl.load(SLOTS + b).to(tl.int64)
        if hh < HQ + HK:
            base = KC + slot * stride_cs + (hh - HQ) * stride_ch + length * stride_cn
        else:
            base = VC + slot * stride_cs + (hh - HQ - HK) * stride_ch + length * stride_cn
        tl.store(base + half, o1.to(KC.dtype.element_ty))
        tl.store(base + D // 2 + half, o2.to(KC.dtype.element_ty))


def rope_append(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, lens: torch.Tensor,
                slots: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                first_position: int, q_heads: int, kv_heads: int, head_dim: int) -> torch.Tensor:
    """qkv [B, (q_heads + 2 kv_heads) * d] at positions first_position + lens; returns rotated q
    [B, q_heads, d] and writes k (rotated) and v at [slots[b], :, lens[b]] of the [n_slots, kv_heads,
    capacity, d] caches. cos/sin: fp32 [positions, d/2]."""
    b = qkv.shape[0]
    q = torch.empty((b, q_heads, head_dim), dtype=qkv.dtype, device=qkv.device)
    if k_cache.stride(3) != 1 or k_cache.stride() != v_cache.stride():
        raise ValueError("k/v caches need equal strides and a contiguous head_dim")
    _rope_append_kernel[(b, q_heads + 2 * kv_heads)](
        qkv.contiguous(), cos, sin, lens, slots, q, k_cache, v_cache, first_position,
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        HQ=q_heads, HK=kv_heads, D=head_dim, num_warps=1)
    return q


def rope_tables(inv_freq_f64: torch.Tensor, positions: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin fp32 [positions, d/2] of angle position * inv_freq, computed in float64 (as the
    model's apply_rope) and rounded once."""
    ang = torch.arange(positions, dtype=torch.float64)[:, None] * inv_freq_f64.cpu()[None, :]
    return ang.cos().float().to(device), ang.sin().float().to(device)


# -- SwiGLU ----------------------------------------------------------------------------------------
@triton.jit
def _silu_mul_kernel(GU, OUT, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n_cols
    g = tl.load(GU + row * 2 * n_cols + offs, mask=m, other=0.0).to(tl.float32)
    u = tl.load(GU + row * 2 * n_cols + n_cols + offs, mask=m, other=0.0)
    s = (g / (1.0 + tl.exp(-g))).to(GU.dtype.element_ty, fp_downcast_rounding="rtne")
    out = (s.to(tl.float32) * u.to(tl.float32)).to(GU.dtype.element_ty, fp_downcast_rounding="rtne")
    tl.store(OUT + row * n_cols + offs, out, mask=m)


def silu_mul(gu: torch.Tensor) -> torch.Tensor:
    """silu(gu[:, :I]) * gu[:, I:] for gu [rows, 2I] (each op rounded to the dtype, as the model)."""
    rows, two_i = gu.shape
    n = two_i // 2
    out = torch.empty((rows, n), dtype=gu.dtype, device=gu.device)
    block = 1024
    _silu_mul_kernel[(rows, triton.cdiv(n, block))](gu.contiguous(), out, n, BLOCK=block,
                                                    num_warps=4)
    return out


# -- MoSKA router: top-k and dispatch --------------------------------------------------------------
@triton.jit
def _topk_kernel(S, SEL, SLOT, n, top_k, BLOCK_N: tl.constexpr, BLOCK_J: tl.constexpr):
    """One program = one (request, kv head) row of scores [n]: rank every chunk (higher score first,
    ties to the lower id), keep rank < top_k, write the kept ids ascending and chunk -> slot + 1."""
    row = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, BLOCK_N)
    im = i < n
    s_i = tl.load(S + row * n + i, mask=im, other=float("-inf"))
    rank = tl.zeros([BLOCK_N], tl.int32)
    for j0 in range(0, n, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        jm = j < n
        s_j = tl.load(S + row * n + j, mask=jm, other=float("-inf"))
        before = (s_j[None, :] > s_i[:, None]) | ((s_j[None, :] == s_i[:, None])
                                                   & (j[None, :] < i[:, None]))
        rank += tl.sum((before & jm[None, :]).to(tl.int32), axis=1)
    keep = (rank < top_k) & im
    pos = tl.cumsum(keep.to(tl.int32), axis=0) - 1
    tl.store(SEL + row * top_k + pos, i.to(tl.int32), mask=keep)
    tl.store(SLOT + row * n + i, tl.where(keep, pos + 1, 0), mask=im)


def route_topk(scores: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores fp32 [B, kv_heads, n] -> (sel int32 [B, kv_heads, top_k] ascending, slot_of int32
    [B, kv_heads, n]: 1 + the slot a chunk was kept in, 0 if not kept)."""
    b, hk, n = scores.shape
    if not 1 <= top_k <= n:
        raise ValueError(f"top_k must be in [1, {n}], got {top_k}")
    sel = torch.empty((b, hk, top_k), dtype=torch.int32, device=scores.device)
    slot_of = torch.empty((b, hk, n), dtype=torch.int32, device=scores.device)
    _topk_kernel[(b * hk,)](scores.contiguous(), sel, slot_of, n, top_k, BLOCK_N=_np2(n),
                            BLOCK_J=min(32, _np2(n)), num_warps=4)
    return sel, slot_of


@triton.jit
def _dispatch_kernel(SLOT, ORDER, TE, TF, TC, CNT, batch, n, top_k, n_heads, tiles_per_head,
                     ppt, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, MAX_L: tl.constexpr,
                     BLOCK_T: tl.constexpr):
    """One program = one kv head: count, order and tile the pairs of each of its chunks."""
    h = tl.program_id(0)
    bb = tl.arange(0, BLOCK_B)
    bm = bb < batch
    run_pairs = h * batch * top_k
    run_tiles = 0
    for c0 in range(0, n, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cm = c < n
        m = tl.load(SLOT + (bb[:, None] * n_heads + h) * n + c[None, :],
                    mask=bm[:, None] & cm[None, :], other=0)
        kept = m > 0
        cnt = tl.sum(kept.to(tl.int32), axis=0)
        pos = tl.cumsum(kept.to(tl.int32), axis=0) - 1
        seg = run_pairs + tl.cumsum(cnt, axis=0) - cnt
        pair = (bb[:, None] * n_heads + h) * top_k + (m - 1)
        tl.store(ORDER + seg[None, :] + pos, pair, mask=kept)
        tl.store(CNT + h * n + c, cnt, mask=cm)
        tiles = (cnt + ppt - 1) // ppt
        tbase = h * tiles_per_head + run_tiles + tl.cumsum(tiles, axis=0) - tiles
        for lt in range(MAX_L):
            tv = (lt < tiles) & cm
            tl.store(TE + tbase + lt, h * n + c, mask=tv)
            tl.store(TF + tbase + lt, seg + lt * ppt, mask=tv)
            tl.store(TC + tbase + lt, tl.minimum(cnt - lt * ppt, ppt), mask=tv)
        run_pairs += tl.sum(cnt, axis=0)
        run_tiles += tl.sum(tiles, axis=0)
    for t0 in range(0, tiles_per_head, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        tm = (t >= run_tiles) & (t < tiles_per_head)
        dst = h * tiles_per_head + t
        tl.store(TE + dst, tl.full([BLOCK_T], -1, tl.int32), mask=tm)
        tl.store(TF + dst, tl.zeros([BLOCK_T], tl.int32), mask=tm)
        tl.store(TC + dst, tl.zeros([BLOCK_T], tl.int32), mask=tm)


def dispatch(slot_of: torch.Tensor, top_k: int, pairs_per_tile: int) -> Dispatch:
    """The Dispatch of build_dispatch from route_topk's chunk -> slot map [B, kv_heads, n], in one
    launch with host-known sizes only (graph-capturable)."""
    b, hk, n = slot_of.shape
    dev = slot_of.device
    t_h = max_tiles_for(b * top_k, n, pairs_per_tile)
    order = torch.empty(b * hk * top_k, dtype=torch.int32, device=dev)
    te = torch.empty(hk * t_h, dtype=torch.int32, device=dev)
    tf = torch.empty_like(te)
    tc = torch.empty_like(te)
    counts = torch.empty((hk, n), dtype=torch.int32, device=dev)
    _dispatch_kernel[(hk,)](
        slot_of.contiguous(), order, te, tf, tc, counts, b, n, top_k, hk, t_h, pairs_per_tile,
        BLOCK_B=max(16, _np2(b)), BLOCK_C=16, MAX_L=triton.cdiv(max(16, _np2(b)), pairs_per_tile),
        BLOCK_T=128, num_warps=4)
    return Dispatch(pair_order=order, tile_expert=te, tile_first=tf, tile_count=tc, counts=counts,
                    pairs_per_tile=int(pairs_per_tile), batch=b, kv_heads=hk, top_k=top_k,
                    n_chunks=n)


def group_scores(q: torch.Tensor, summaries: torch.Tensor, group_reduce: str) -> torch.Tensor:
    """The router's fp32 scores [B, kv_heads, n]: q . summary per query head, reduced over each GQA
    group (the same torch ops as traces.capture.router.route)."""
    b, hq, d = q.shape
    hk = summaries.shape[0]
    qg = q.float().view(b, hk, hq // hk, d)
    s = torch.einsum("bhgd,hnd->bhgn", qg, summaries)
    return s.amax(dim=2) if group_reduce == "max" else s.mean(dim=2)
