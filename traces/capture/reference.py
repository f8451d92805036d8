"""Plain-PyTorch MoSKA attention (same maths as the Triton kernels) and the dense float64 oracle.

Attention states: every partial is (O, LSE) with O normalised and LSE = log sum exp(scale * q.k) in
natural log. Partial layouts match the Triton launchers so the two paths are interchangeable:
shared  o [P, S, g, d], lse [P, S, g]  with pair p = (b * kv_heads + h) * top_k + j, S KV splits;
unique  o [B, kv_heads, S, g, d], lse [B, kv_heads, S, g].
"""

from __future__ import annotations

import math

import torch

from traces.capture.shared_kv import SharedKV


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of rows q [M, d] over k, v [N, d]: (O [M, d], LSE [M]); N == 0 gives (0, -inf)."""
    if k.shape[0] == 0:
        return q.new_zeros(q.shape), q.new_full(q.shape[:1], -math.inf)
    s = (q @ k.to(q.dtype).T) * scale
    lse = torch.logsumexp(s, dim=-1)
    return torch.softmax(s, dim=-1) @ v.to(q.dtype), lse


def shared_attention_torch(
    q: torch.Tensor, shared: SharedKV, sel: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk-major shared attention: per (kv head, chunk), gather the queries of all requests that
    selected it into one matrix and attend once. Returns o [P, 1, g, d], lse [P, 1, g]."""
    b, hq, d = q.shape
    hk, k = sel.shape[1], sel.shape[2]
    g = hq // hk
    cd = _compute_dtype(q)
    qg = q.to(cd).view(b, hk, g, d)
    scale = 1.0 / math.sqrt(d)
    o = q.new_zeros((b * hk * k, 1, g, d), dtype=cd)
    lse = q.new_full((b * hk * k, 1, g), -math.inf, dtype=cd)
    sel_l = sel.long()
    for h in range(hk):
        for c in torch.unique(sel_l[:, h, :]).tolist():
            rb, rj = torch.nonzero(sel_l[:, h, :] == c, as_tuple=True)
            lo, hi = shared.chunk_range(c)
            rows = qg[rb, h].reshape(-1, d)  # [n * g, d]: the GEMM-shaped batch of this chunk
            oc, lc = _attend(rows, shared.k[h, lo:hi], shared.v[h, lo:hi], scale)
            pairs = (rb * hk + h) * k + rj
            o[pairs, 0] = oc.view(-1, g, d)
            lse[pairs, 0] = lc.view(-1, g)
    return o, lse


def unique_attention_torch(
    q: torch.Tensor, k_u: torch.Tensor, v_u: torch.Tensor, lens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-request attention over its own first lens[b] unique tokens ([B, kv_heads, L_max, d] caches).
    Returns o [B, kv_heads, 1, g, d], lse [B, kv_heads, 1, g]."""
    b, hq, d = q.shape
    hk = k_u.shape[1]
    g = hq // hk
    cd = _compute_dtype(q)
    qg = q.to(cd).view(b, hk, g, d)
    scale = 1.0 / math.sqrt(d)
    o = q.new_zeros((b, hk, 1, g, d), dtype=cd)
    lse = q.new_full((b, hk, 1, g), -math.inf, dtype=cd)
    for i, n in enumerate(lens.tolist()):
        for h in range(hk):
            o[i, h, 0], lse[i, h, 0] = _attend(qg[i, h], k_u[i, h, :n], v_u[i, h, :n], scale)
    return o, lse


def merge_states_torch(
    o_shared: torch.Tensor,
    lse_shared: torch.Tensor,
    o_unique: torch.Tensor,
    lse_unique: torch.Tensor,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Exact log-sum-exp merge of all partials of each (request, kv head) -> out [B, q_heads, d].
    Empty partials (LSE = -inf) weigh 0; a row with no keys at all yields 0, never NaN."""
    b, hk, _, g, d = o_unique.shape
    os_ = o_shared.reshape(b, hk, -1, g, d).to(o_unique.dtype)
    ls_ = lse_shared.reshape(b, hk, -1, g).to(lse_unique.dtype)
    o_all = torch.cat([os_, o_unique], dim=2)
    l_all = torch.cat([ls_, lse_unique], dim=2)
    m = l_all.amax(dim=2, keepdim=True)
    m = torch.where(torch.isinf(m) & (m < 0), torch.zeros_like(m), m)
    w = torch.exp(l_all - m)
    denom = w.sum(dim=2)
    out = (w.unsqueeze(-1) * o_all).sum(dim=2) / torch.where(
        denom > 0, denom, torch.ones_like(denom)
    ).unsqueeze(-1)
    return out.reshape(b, hk * g, d).to(out_dtype)


def dense_oracle(
    q: torch.Tensor,
    shared: SharedKV,
    sel: torch.Tensor,
    k_u: torch.Tensor,
    v_u: torch.Tensor,
    lens: torch.Tensor,
) -> torch.Tensor:
    """float64 dense softmax attention of each (request, kv head group) over [its selected shared chunks
    (original positions) ; its own unique tokens] -> [B, q_heads, d] float64."""
    b, hq, d = q.shape
    hk = shared.kv_heads
    g = hq // hk
    out = torch.zeros((b, hq, d), dtype=torch.float64, device=q.device)
    scale = 1.0 / math.sqrt(d)
    for i in range(b):
        n = int(lens[i])
        for h in range(hk):
            idx = torch.cat(
                [
                    torch.arange(*shared.chunk_range(int(c)), device=q.device)
                    for c in sel[i, h].tolist()
                ]
            )
            keys = torch.cat([shared.k[h, idx].double(), k_u[i, h, :n].double()])
            vals = torch.cat([shared.v[h, idx].double(), v_u[i, h, :n].double()])
            s = (q[i, h * g : (h + 1) * g].double() @ keys.T) * scale
            out[i, h * g : (h + 1) * g] = torch.softmax(s, dim=-1) @ vals
    return out
