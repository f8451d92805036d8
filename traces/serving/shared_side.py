"""Where the batched shared attention of a decode step runs: on the same device as everything else
(co-located), or on a peer rank that holds the shared corpus (disaggregated MoSKA).

Both sides take a layer's queries [B, q_heads, d] and return the shared partial states, the
``o [P, S, g, d]`` fp32 and ``lse [P, S, g]`` natural-log layout of traces.capture.reference with
P = B * kv_heads * top_k pairs and S KV splits. For ``moska`` the router runs on the unique side
(it needs only the chunk summaries) and its selection travels with the queries; for ``shared_gemm``
every request reads every chunk and nothing but the queries travels.

The remote protocol, per layer of every step, over torch.distributed point-to-point (NCCL on GPUs,
gloo on CPUs): unique rank -> shared rank: header int64 [4] = (batch, layer, has_selection, stop),
q [B, q_heads, d] (model dtype), and with has_selection the selection int32 [B, kv_heads, top_k];
shared rank -> unique rank: o, then lse. Both ranks derive S from the same host-only launch plan
(``kernels.plan_shared`` over :class:`SharedMeta`), so no sizes travel back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from traces.capture.reference import shared_attention_torch
from traces.capture.router import build_dispatch, route
from traces.capture.shared_kv import SharedKV
from traces.capture.timing import NullTimer
from traces.serving.config import EngineConfig


@dataclass(frozen=True)
class SharedMeta:
    """What the unique side knows of one layer's corpus: its shape and chunk summaries (the router's
    input), duck-compatible with SharedKV for ``route`` and ``kernels.plan_shared``."""

    summaries: torch.Tensor  # fp32 [kv_heads, n_chunks, d]
    tokens: int
    chunk_tokens: int

    @property
    def kv_heads(self) -> int:
        return int(self.summaries.shape[0])

    @property
    def n_chunks(self) -> int:
        return int(self.summaries.shape[1])

    @classmethod
    def of(cls, s: SharedKV) -> SharedMeta:
        return cls(s.summaries, s.tokens, s.chunk_tokens)


class SharedSide(Protocol):
    """Runs one layer's shared attention for a batch."""

    def attend(self, layer: int, q: torch.Tensor, static_selection: torch.Tensor | None,
               timer: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Partials (o, lse) of q over its selected chunks: routed here for ``moska``
        (``static_selection`` None), else ``static_selection`` [B, kv_heads, n_chunks]."""
        ...


def selection(q: torch.Tensor, meta: SharedMeta | SharedKV, cfg: EngineConfig,
              static_selection: torch.Tensor | None) -> torch.Tensor:
    """The chunk ids [B, kv_heads, top_k] each (request, kv head) reads this layer."""
    if static_selection is not None:
        return static_selection
    return route(q, meta, cfg.top_k, cfg.group_reduce)  # type: ignore[arg-type]


def shared_partials(q: torch.Tensor, shared: SharedKV, sel: torch.Tensor,
                    backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched shared attention of q over the chunks in ``sel``: one grouped Triton launch (with
    its MoE-style dispatch) or the plain-PyTorch reference."""
    if backend == "triton":
        from traces.capture import kernels

        g = q.shape[1] // shared.kv_heads
        plan = kernels.plan_shared(q, shared, sel.shape[2])
        dispatch = build_dispatch(sel, shared.n_chunks, plan.config.block_m // g)
        return kernels.shared_attention_triton(q, shared, dispatch, plan)
    return shared_attention_torch(q, shared, sel)


class LocalSharedSide:
    """Co-located: the corpus KV is on this device; route (moska), dispatch and attend here."""

    def __init__(self, shared: list[SharedKV], cfg: EngineConfig) -> None:
        self.shared = shared
        self.cfg = cfg
        self._dispatch_cache: dict[tuple[int, int], object] = {}

    def attend(self, layer: int, q: torch.Tensor, static_selection: torch.Tensor | None,
               timer: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        timer = timer or NullTimer()
        sh = self.shared[layer]
        if static_selection is None and self.cfg.backend == "triton":
            from traces.capture import kernels

            g = q.shape[1] // sh.kv_heads
            plan = kernels.plan_shared(q, sh, self.cfg.top_k)
            with timer.region("router"):
                if self.cfg.glue == "fused":
                    from traces.serving import fused

                    scores = fused.group_scores(q, sh.summaries, self.cfg.group_reduce)
                    _, slot_of = fused.route_topk(scores, self.cfg.top_k)
                    dispatch = fused.dispatch(slot_of, self.cfg.top_k, plan.config.block_m // g)
                else:
                    sel = selection(q, sh, self.cfg, None)
                    dispatch = build_dispatch(sel, sh.n_chunks, plan.config.block_m // g)
            with timer.region("shared_attention"):
                return kernels.shared_attention_triton(q, sh, dispatch, plan)
        with timer.region("router"):
            sel = selection(q, sh, self.cfg, static_selection)
        if static_selection is not None and self.cfg.backend == "triton":
            # shared_gemm: the grouping of a fixed selection is fixed too; build it once per batch
            from traces.capture import kernels

            g = q.shape[1] // sh.kv_heads
            plan = kernels.plan_shared(q, sh, sel.shape[2])
            key = (q.shape[0], sel.data_ptr())
            dispatch = self._dispatch_cache.get(key)
            if dispatch is None:
                dispatch = build_dispatch(sel, sh.n_chunks, plan.config.block_m // g)
                self._dispatch_cache[key] = dispatch
            with timer.region("shared_attention"):
                return kernels.shared_attention_triton(q, sh, dispatch, plan)  # type: ignore[arg-type]
        with timer.region("shared_attention"):
            return shared_partials(q, sh, sel, self.cfg.backend)


def _partial_shapes(q: torch.Tensor, meta: SharedMeta, top_k: int, backend: str,
                    device: torch.device) -> tuple[tuple[int, ...], tuple[int, ...]]:
    b, hq, d = q.shape
    g = hq // meta.kv_heads
    splits = 1
    if backend == "triton":
        from traces.capture import kernels

        splits = kernels.plan_shared(
            torch.empty((b, hq, d), device=device, dtype=q.dtype), meta, top_k  # type: ignore[arg-type]
        ).n_splits
    p = b * meta.kv_heads * top_k
    return (p, splits, g, d), (p, splits, g)


class RemoteSharedSide:
    """Disaggregated, unique rank: route here, ship queries (and the selection) to the shared rank,
    receive its partials. Eager (not graph-captured): the transfers are NCCL/gloo calls."""

    def __init__(self, meta: list[SharedMeta], cfg: EngineConfig, peer: int,
                 shared_device: torch.device) -> None:
        self.meta = meta
        self.cfg = cfg
        self.peer = peer
        self.shared_device = shared_device
        self.bytes_sent = 0
        self.bytes_received = 0
        self.layer_requests = 0

    def attend(self, layer: int, q: torch.Tensor, static_selection: torch.Tensor | None,
               timer: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        import torch.distributed as dist

        timer = timer or NullTimer()
        meta = self.meta[layer]
        routed = static_selection is None
        top_k = self.cfg.top_k
        sel = None
        if routed:
            with timer.region("router"):
                sel = selection(q, meta, self.cfg, None)
        o_shape, l_shape = _partial_shapes(q, meta, top_k, self.cfg.backend, self.shared_device)
        o = torch.empty(o_shape, dtype=torch.float32, device=q.device)
        lse = torch.empty(l_shape, dtype=torch.float32, device=q.device)
        with timer.region("shared_round_trip"):
            header = torch.tensor([q.shape[0], layer, int(routed), 0], dtype=torch.int64,
                                  device=q.device)
            dist.send(header, self.peer)
            qc = q.contiguous()
            dist.send(qc, self.peer)
            if sel is not None:
                dist.send(sel, self.peer)
            dist.recv(o, self.peer)
            dist.recv(lse, self.peer)
        self.bytes_sent += header.numel() * 8 + qc.numel() * qc.element_size()
        self.bytes_sent += 0 if sel is None else sel.numel() * 4
        self.bytes_received += (o.numel() + lse.numel()) * 4
        self.layer_requests += 1
        return o, lse

    def stop(self, device: torch.device) -> None:
        """Tell the shared rank that serving is over."""
        import torch.distributed as dist

        dist.send(torch.tensor([0, 0, 0, 1], dtype=torch.int64, device=device), self.peer)


def serve_shared(shared: list[SharedKV], cfg: EngineConfig, peer: int,
                 q_dtype: torch.dtype) -> int:
    """Shared rank: answer layer requests from ``peer`` until it sends stop; returns the number
    of layer requests served."""
    import torch.distributed as dist

    dev = shared[0].k.device
    mcfg = cfg.model_config
    served = 0
    while True:
        header = torch.empty(4, dtype=torch.int64, device=dev)
        dist.recv(header, peer)
        b, layer, routed, stop = (int(x) for x in header.tolist())
        if stop:
            return served
        q = torch.empty((b, mcfg.q_heads, mcfg.head_dim), dtype=q_dtype, device=dev)
        dist.recv(q, peer)
        if routed:
            sel = torch.empty((b, mcfg.kv_heads, cfg.top_k), dtype=torch.int32, device=dev)
            dist.recv(sel, peer)
        else:
            sel = (torch.arange(cfg.n_chunks, dtype=torch.int32, device=dev)
                   .expand(b, mcfg.kv_heads, cfg.n_chunks).contiguous())
        o, lse = shared_partials(q, shared[layer], sel, cfg.backend)
        dist.send(o.contiguous(), peer)
        dist.send(lse.contiguous(), peer)
        served += 1
