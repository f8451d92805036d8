"""MoSKA router and MoE-style dispatch: top-k chunks per (request, kv head), grouped by chunk.

All device work here is plain torch ops with no host synchronisation, so the router can sit inside a
CUDA-event-timed region and the shared-attention grid can be sized from host-known bounds only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from traces.capture.shared_kv import SharedKV

GROUP_REDUCES = ("max", "mean")


def route(q: torch.Tensor, shared: SharedKV, top_k: int, group_reduce: str = "max") -> torch.Tensor:
    """Select top_k chunks per (request, kv head); returns int32 [B, kv_heads, top_k], ascending ids.

    q is [B, q_heads, head_dim]; each query head scores every chunk by q . summary (fp32), the g heads
    of a GQA group are reduced (max or mean) so the group rides together, and ties go to the lower
    chunk id (stable sort), so traces are reproducible.
    """
    if group_reduce not in GROUP_REDUCES:
        raise ValueError(f"group_reduce must be one of {GROUP_REDUCES}, got {group_reduce!r}")
    b, hq, d = q.shape
    hk, n = shared.kv_heads, shared.n_chunks
    if not 1 <= top_k <= n:
        raise ValueError(f"top_k must be in [1, {n}], got {top_k}")
    qg = q.float().view(b, hk, hq // hk, d)
    scores = torch.einsum("bhgd,hnd->bhgn", qg, shared.summaries)
    scores = scores.amax(dim=2) if group_reduce == "max" else scores.mean(dim=2)
    if top_k == n:
        sel = torch.arange(n, device=q.device).expand(b, hk, n)
    else:
        order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
        sel = torch.sort(order[..., :top_k], dim=-1).values
    return sel.to(torch.int32).contiguous()


def chunk_counts(sel: torch.Tensor, n_chunks: int) -> torch.Tensor:
    """Per (kv head, chunk): requests that selected it; int32 [kv_heads, n_chunks]. No host sync."""
    b, hk, k = sel.shape
    expert = (
        torch.arange(hk, device=sel.device, dtype=torch.int64)[None, :, None] * n_chunks
        + sel.long()
    )
    counts = torch.zeros(hk * n_chunks, dtype=torch.int32, device=sel.device)
    counts.scatter_add_(
        0, expert.reshape(-1), torch.ones(b * hk * k, dtype=torch.int32, device=sel.device)
    )
    return counts.view(hk, n_chunks)


@dataclass(frozen=True)
class Dispatch:
    """Pairs (request, kv head, slot j) grouped by expert e = kv_head * n_chunks + chunk, cut into tiles.

    pair p = (b * kv_heads + h) * top_k + j. pair_order lists pair ids sorted by expert (stable, so in
    request order inside an expert). Tile t covers pair_order[tile_first[t] : tile_first[t] + tile_count[t]]
    of expert tile_expert[t]; tile_expert is -1 for the unused tail of the worst-case-sized table.
    """

    pair_order: torch.Tensor  # int32 [P]
    tile_expert: torch.Tensor  # int32 [T_max]
    tile_first: torch.Tensor  # int32 [T_max]
    tile_count: torch.Tensor  # int32 [T_max]
    counts: torch.Tensor  # int32 [kv_heads, n_chunks] = chunk_batch
    pairs_per_tile: int
    batch: int
    kv_heads: int
    top_k: int
    n_chunks: int

    @property
    def max_tiles(self) -> int:
        return int(self.tile_expert.shape[0])


def max_tiles_for(n_pairs: int, n_experts: int, pairs_per_tile: int) -> int:
    """Upper bound on sum_e ceil(count_e / ppt) over experts with count_e >= 1 (sum count_e = n_pairs)."""
    nonempty = min(n_experts, n_pairs)
    return max(1, -(-(n_pairs + nonempty * (pairs_per_tile - 1)) // pairs_per_tile))


def build_dispatch(sel: torch.Tensor, n_chunks: int, pairs_per_tile: int) -> Dispatch:
    """Group (request, kv head, slot) pairs by chunk and tile them, with device ops only (no sync)."""
    b, hk, k = sel.shape
    dev = sel.device
    n_exp = hk * n_chunks
    n_pairs = b * hk * k
    expert = (
        torch.arange(hk, device=dev, dtype=torch.int64)[None, :, None] * n_chunks + sel.long()
    ).reshape(-1)
    counts = torch.zeros(n_exp, dtype=torch.int64, device=dev)
    counts.scatter_add_(0, expert, torch.ones(n_pairs, dtype=torch.int64, device=dev))
    order = torch.sort(expert, stable=True).indices
    seg_start = torch.cumsum(counts, 0) - counts
    tiles_per = (counts + pairs_per_tile - 1) // pairs_per_tile
    tile_end = torch.cumsum(tiles_per, 0)
    t_max = max_tiles_for(n_pairs, n_exp, pairs_per_tile)
    t = torch.arange(t_max, device=dev, dtype=torch.int64)
    e_of_t = torch.searchsorted(tile_end, t, right=True)
    valid = e_of_t < n_exp
    e_c = e_of_t.clamp(max=n_exp - 1)
    local = t - (tile_end[e_c] - tiles_per[e_c])
    first = seg_start[e_c] + local * pairs_per_tile
    cnt = (counts[e_c] - local * pairs_per_tile).clamp(min=0, max=pairs_per_tile)
    return Dispatch(
        pair_order=order.to(torch.int32),
        tile_expert=torch.where(valid, e_c, -1).to(torch.int32),
        tile_first=torch.where(valid, first, 0).to(torch.int32),
        tile_count=torch.where(valid, cnt, 0).to(torch.int32),
        counts=counts.to(torch.int32).view(hk, n_chunks),
        pairs_per_tile=int(pairs_per_tile),
        batch=b,
        kv_heads=hk,
        top_k=k,
        n_chunks=n_chunks,
    )
