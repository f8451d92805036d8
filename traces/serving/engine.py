"""The decode engine of the MoSKA serving loop: one model, one shared corpus KV held once, a slot pool
of per-request unique KV, and one batched decode step (continuous batching: the batch is whatever rows
the scheduler passes in, so requests join and leave between steps).

Per layer a decode step runs: QKV projections and RoPE, the append of the new token's K/V to each
request's slot, the router (``moska``: top-k chunks per (request, kv head) over the chunk summaries;
``shared_gemm``: every chunk, no router), the batched shared attention over the routed chunks (one
grouped Triton launch for the whole batch), flash-decoding over each request's unique KV, the
log-sum-exp merge, the output projection and the MLP; then the LM head and a greedy token.

The shared attention sits behind :class:`traces.serving.shared_side.SharedSide`: in the co-located
deployment it runs on the same device (:class:`LocalSharedSide`); in the disaggregated one a peer rank
holds the corpus and the queries and partials travel per layer through torch.distributed
(:class:`RemoteSharedSide`). On CUDA the co-located step is captured once per batch size as a CUDA
graph, as production servers do for decode, so the measured step is GPU time plus the scheduler's
per-step host work, not Python launch overhead.

Needs the ``reference`` extra (torch, triton). The simulator never imports this package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from traces.capture.model import LlamaConfig, LlamaForCausalLM, apply_rope
from traces.capture.reference import merge_states_torch, unique_attention_torch
from traces.capture.shared_kv import SharedKV
from traces.capture.timing import NullTimer
from traces.serving.config import CONTEXTS, DTYPES, GLUES, SYSTEMS, EngineConfig
from traces.serving.shared_side import LocalSharedSide, SharedMeta, SharedSide

__all__ = ["CONTEXTS", "DTYPES", "GLUES", "SYSTEMS", "DecodeEngine", "EngineConfig",
           "GraphCaptureFailed", "StepRows", "make_shared_kv", "projected_kv", "prompt_tokens"]


@dataclass
class StepRows:
    """The batch of one decode step: per row, its KV slot, input token and unique length so far
    (the prompt plus the tokens decoded before this step; the step appends one more)."""

    slots: list[int]
    tokens: list[int]
    lens: list[int]

    def __len__(self) -> int:
        return len(self.slots)


class GraphCaptureFailed(RuntimeError):
    """A CUDA graph could not be captured; the engine has switched to eager steps."""


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    logits: torch.Tensor
    next_tokens: torch.Tensor


@dataclass
class DecodeEngine:
    """Holds the model, the shared KV and the slot pool; runs batched decode steps.

    Build with :meth:`build`. ``last_logits`` keeps the fp32 logits [B, vocab] of the last step (for
    tests against the dense reference)."""

    cfg: EngineConfig
    model: LlamaForCausalLM
    shared: list[SharedKV] | None
    meta: list[SharedMeta]
    side: SharedSide
    k_pool: torch.Tensor  # [layers, n_slots + 1, kv_heads, capacity, d]; the last slot is scratch
    v_pool: torch.Tensor
    bank_k: torch.Tensor | None = None  # [layers, kv_heads, unique_max, d] (projected context)
    bank_v: torch.Tensor | None = None
    last_logits: torch.Tensor | None = None
    _graphs: dict[int, _Graph] = field(default_factory=dict)
    _inputs: torch.Tensor | None = None  # int64 [3, max_batch] on the device: tokens, slots, lens
    _static_sel: dict[int, torch.Tensor] = field(default_factory=dict)
    layer_timings: list[Any] = field(default_factory=list)
    graph_error: str | None = None  # set when a capture failed; steps then run eagerly
    fused_weights: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer: Wqkv, Wgu
    rope_cos: torch.Tensor | None = None  # fp32 [positions, d/2] (fused glue)
    rope_sin: torch.Tensor | None = None

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: EngineConfig, side: SharedSide | None = None, hold_shared: bool = True,
              side_for: Callable[[list[SharedMeta]], SharedSide] | None = None) -> DecodeEngine:
        """Random-initialise the model (seeded), make the shared corpus KV and the slot pool.

        ``side``: where shared attention runs (default: on this device); or ``side_for(meta)`` makes
        it from the corpus's per-layer summaries. ``hold_shared`` False keeps only the summaries (the
        router's input) here: the corpus lives on a peer rank."""
        cfg.check()
        dev = torch.device(cfg.device)
        dtype = DTYPES[cfg.dtype]
        mcfg = cfg.model_config
        model = LlamaForCausalLM.build(mcfg, dtype, dev)
        model.init_random(torch.Generator(device=dev).manual_seed(cfg.seed))
        shared = make_shared_kv(model, cfg)
        meta = [SharedMeta.of(s) for s in shared]
        if side is None and side_for is not None:
            side = side_for(meta)
        if side is None:
            side = LocalSharedSide(shared, cfg)
        n_slots = cfg.max_batch + 1
        shape = (mcfg.num_layers, n_slots, mcfg.kv_heads, cfg.capacity_tokens, mcfg.head_dim)
        k_pool = torch.zeros(shape, dtype=dtype, device=dev)
        v_pool = torch.zeros(shape, dtype=dtype, device=dev)
        bank_k = bank_v = None
        if cfg.context == "projected":
            bank_k, bank_v = projected_kv(
                model, _corpus_tokens(cfg, mcfg, cfg.seed + 2, cfg.unique_max),
                first_position=cfg.shared_tokens, dtype=dtype)
        eng = cls(cfg=cfg, model=model, shared=shared if hold_shared else None, meta=meta,
                  side=side, k_pool=k_pool, v_pool=v_pool, bank_k=bank_k, bank_v=bank_v)
        eng._inputs = torch.zeros((3, cfg.max_batch), dtype=torch.int64, device=dev)
        if cfg.glue == "fused":
            from traces.serving import fused

            eng.fused_weights = [
                (torch.cat([ly.self_attn.q_proj.weight, ly.self_attn.k_proj.weight,
                            ly.self_attn.v_proj.weight]).contiguous(),
                 torch.cat([ly.mlp.gate_proj.weight, ly.mlp.up_proj.weight]).contiguous())
                for ly in model.model.layers]
            eng.rope_cos, eng.rope_sin = fused.rope_tables(
                model.inv_freq(torch.device("cpu")), cfg.shared_tokens + cfg.capacity_tokens, dev)
        return eng

    @property
    def n_slots(self) -> int:
        return self.cfg.max_batch

    @property
    def scratch_slot(self) -> int:
        return self.cfg.max_batch

    # -- admission --------------------------------------------------------------------------------
    @torch.no_grad()
    def load_context(self, slot: int, n_prompt: int, request_seed: int) -> int:
        """Put a request's prompt KV (``prompt_tokens`` tokens) into ``slot``; return its first decode
        input token. ``prefill``: a dense, exact prefill of random prompt tokens after the corpus
        (the token is the prefill's greedy output). ``projected``: a copy of the bank's first
        ``n_prompt`` positions (two copy launches, as KV arriving from a prefill node)."""
        cfg = self.cfg
        if not 1 <= n_prompt <= cfg.unique_max:
            raise ValueError(f"prompt of {n_prompt} tokens: must be in [1, {cfg.unique_max}]")
        if not 0 <= slot < self.n_slots:
            raise ValueError(f"slot {slot} outside [0, {self.n_slots})")
        mcfg = self.model.config
        if cfg.context == "prefill":
            if self.shared is None:
                raise ValueError("context 'prefill' needs the shared corpus on this rank")
            dev = self.k_pool.device
            prompt = prompt_tokens(mcfg.vocab_size, n_prompt, request_seed).to(dev)
            ks, vs, logits = self.model.prefill_unique(prompt, self.shared)
            for i in range(mcfg.num_layers):
                self.k_pool[i, slot, :, :n_prompt] = ks[i]
                self.v_pool[i, slot, :, :n_prompt] = vs[i]
            return int(logits.argmax())
        assert self.bank_k is not None and self.bank_v is not None
        self.k_pool[:, slot, :, :n_prompt] = self.bank_k[:, :, :n_prompt]
        self.v_pool[:, slot, :, :n_prompt] = self.bank_v[:, :, :n_prompt]
        return int(prompt_tokens(mcfg.vocab_size, 1, request_seed)[0])

    # -- the decode step --------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, rows: StepRows) -> list[int]:
        """One decode step of the batch ``rows``; returns each row's greedy next token (host ints,
        which synchronises: a server returns every token as it is made)."""
        b = len(rows)
        if not 1 <= b <= self.cfg.max_batch:
            raise ValueError(f"batch of {b} rows: must be in [1, {self.cfg.max_batch}]")
        if max(rows.lens) >= self.cfg.capacity_tokens:
            raise ValueError(f"a row's unique length reached the slot capacity "
                             f"{self.cfg.capacity_tokens}")
        assert self._inputs is not None
        host = torch.tensor([rows.tokens, rows.slots, rows.lens], dtype=torch.int64)
        self._inputs[:, :b].copy_(host, non_blocking=False)
        tok, slots, lens = self._inputs[0, :b], self._inputs[1, :b], self._inputs[2, :b]
        if self._use_graphs:
            g = self._graphs.get(b)
            if g is None:
                try:
                    g = self.capture(b)
                except GraphCaptureFailed:
                    g = None
        if self._use_graphs and g is not None:
            g.graph.replay()
            logits, nxt = g.logits, g.next_tokens
        else:
            logits, nxt = self._forward(tok, slots, lens)
        self.last_logits = logits
        return nxt.tolist()

    @property
    def _use_graphs(self) -> bool:
        return (self.cfg.cuda_graphs and self.k_pool.device.type == "cuda"
                and isinstance(self.side, LocalSharedSide) and not self.graph_error)

    @torch.no_grad()
    def capture(self, batch: int) -> _Graph:
        """Capture the decode step of ``batch`` rows as a CUDA graph (after one eager warm-up run on
        the scratch slot, which compiles the kernels); graphs share one memory pool."""
        if batch in self._graphs:
            return self._graphs[batch]
        assert self._inputs is not None
        saved = self._inputs[:, :batch].clone()
        self._inputs[0, :batch] = 0
        self._inputs[1, :batch] = self.scratch_slot
        self._inputs[2, :batch] = 0
        tok, slots, lens = self._inputs[0, :batch], self._inputs[1, :batch], self._inputs[2, :batch]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._forward(tok, slots, lens)
        torch.cuda.current_stream().wait_stream(stream)
        if not hasattr(self, "_pool"):
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self._pool):
                logits, nxt = self._forward(tok, slots, lens)
            torch.cuda.synchronize()
        except RuntimeError as e:  # say so in the records and go on eagerly
            self.graph_error = f"CUDA graph capture of batch {batch} failed: {e}"
            print(f"warning: {self.graph_error}; running eagerly", flush=True)
            self._inputs[:, :batch] = saved
            raise GraphCaptureFailed(self.graph_error) from e
        self._inputs[:, :batch] = saved
        g = _Graph(graph, logits, nxt)
        self._graphs[batch] = g
        return g

    def _static_selection(self, batch: int) -> torch.Tensor:
        """``shared_gemm``: every request reads every chunk (ids ascending), fixed per batch size."""
        sel = self._static_sel.get(batch)
        if sel is None:
            n, hk = self.cfg.n_chunks, self.model.config.kv_heads
            sel = (torch.arange(n, dtype=torch.int32, device=self.k_pool.device)
                   .expand(batch, hk, n).contiguous())
            self._static_sel[batch] = sel
        return sel

    def _forward(self, tokens: torch.Tensor, slots: torch.Tensor, lens: torch.Tensor,
                 timer: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole decode step on device tensors, with no host synchronisation (graph-capturable).
        ``timer`` (a traces.capture.timing timer) brackets each layer's regions: 'qkv' (norm,
        projections, RoPE, KV append), 'router', 'shared_attention', 'unique_attention', 'merge',
        'o_proj_mlp'; and 'lm_head' as one more layer-sized record."""
        timer = timer or NullTimer()
        if self.cfg.glue == "fused":
            return self._forward_fused(tokens, slots, lens, timer)
        model = self.model
        pos = self.cfg.shared_tokens + lens
        new_lens = lens + 1
        x = model.model.embed_tokens(tokens)
        static = None if self.cfg.system == "moska" else self._static_selection(tokens.shape[0])
        for i, layer in enumerate(model.model.layers):
            timer.begin_layer()
            with timer.region("qkv"):
                q, k, v = model._qkv(layer, x, pos)
                self.k_pool[i][slots, :, lens] = k.to(self.k_pool.dtype)
                self.v_pool[i][slots, :, lens] = v.to(self.v_pool.dtype)
            o_s, l_s = self.side.attend(i, q, static, timer)
            if self.cfg.backend == "triton":
                from traces.capture import kernels

                with timer.region("unique_attention"):
                    o_u, l_u = kernels.unique_attention_triton(
                        q, self.k_pool[i], self.v_pool[i], new_lens, slots=slots)
                with timer.region("merge"):
                    out = kernels.merge_triton(o_s, l_s, o_u, l_u, q.dtype)
            else:
                with timer.region("unique_attention"):
                    o_u, l_u = unique_attention_torch(
                        q, self.k_pool[i][slots], self.v_pool[i][slots], new_lens)
                with timer.region("merge"):
                    out = merge_states_torch(o_s, l_s, o_u, l_u, q.dtype)
            with timer.region("o_proj_mlp"):
                x = model._finish_layer(layer, x, out)
            if not isinstance(timer, NullTimer):
                self.layer_timings.append(timer.end_layer())
        timer.begin_layer()
        with timer.region("lm_head"):
            logits = model.logits(x)
            nxt = logits.argmax(dim=-1)
        if not isinstance(timer, NullTimer):
            self.layer_timings.append(timer.end_layer())
        return logits, nxt

    def _forward_fused(self, tokens: torch.Tensor, slots: torch.Tensor, lens: torch.Tensor,
                       timer: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The decode step with fused glue (same maths as _forward; regions named alike, the
        residual add and norm of the next layer counted in 'o_proj_mlp')."""
        from traces.capture import kernels
        from traces.serving import fused

        model, mcfg = self.model, self.model.config
        eps = mcfg.rms_norm_eps
        assert self.fused_weights is not None and self.rope_cos is not None
        new_lens = lens + 1
        x = model.model.embed_tokens(tokens)
        static = None if self.cfg.system == "moska" else self._static_selection(tokens.shape[0])
        resid = x
        pending: torch.Tensor | None = None  # the previous layer's MLP output, not yet added
        for i, layer in enumerate(model.model.layers):
            w_qkv, w_gu = self.fused_weights[i]
            timer.begin_layer()
            with timer.region("qkv"):
                h, resid = fused.add_rms_norm(pending if pending is not None else x,
                                              layer.input_layernorm.weight, eps,
                                              residual=resid if pending is not None else None)
                q = fused.rope_append(h @ w_qkv.T, self.rope_cos, self.rope_sin, lens, slots,
                                      self.k_pool[i], self.v_pool[i], self.cfg.shared_tokens,
                                      mcfg.q_heads, mcfg.kv_heads, mcfg.head_dim)
            o_s, l_s = self.side.attend(i, q, static, timer)
            with timer.region("unique_attention"):
                o_u, l_u = kernels.unique_attention_triton(
                    q, self.k_pool[i], self.v_pool[i], new_lens, slots=slots)
            with timer.region("merge"):
                out = kernels.merge_triton(o_s, l_s, o_u, l_u, q.dtype)
            with timer.region("o_proj_mlp"):
                o = layer.self_attn.o_proj(out.reshape(out.shape[0], -1))
                h2, resid = fused.add_rms_norm(o, layer.post_attention_layernorm.weight, eps,
                                               residual=resid)
                pending = layer.mlp.down_proj(fused.silu_mul(h2 @ w_gu.T))
            if not isinstance(timer, NullTimer):
                self.layer_timings.append(timer.end_layer())
        timer.begin_layer()
        with timer.region("lm_head"):
            assert pending is not None
            hf, _ = fused.add_rms_norm(pending, model.model.norm.weight, eps, residual=resid)
            logits = model.lm_head(hf).float()
            nxt = logits.argmax(dim=-1)
        if not isinstance(timer, NullTimer):
            self.layer_timings.append(timer.end_layer())
        return logits, nxt

    @torch.no_grad()
    def timed_step(self, rows: StepRows, timer: Any) -> dict[str, float]:
        """One eager step of ``rows`` with every region bracketed by CUDA events (``timer`` a
        CudaEventTimer); returns GPU ms per region summed over the step's layers. The KV it
        appends goes to the rows' slots like a normal step, so pass scratch rows."""
        b = len(rows)
        assert self._inputs is not None
        host = torch.tensor([rows.tokens, rows.slots, rows.lens], dtype=torch.int64)
        self._inputs[:, :b].copy_(host)
        self.layer_timings = []
        self._forward(self._inputs[0, :b], self._inputs[1, :b], self._inputs[2, :b], timer)
        torch.cuda.synchronize()
        total: dict[str, float] = {}
        gap_free = True
        for lt in self.layer_timings:
            gap_free &= lt.gap_free
            for name, ns in lt.resolve().items():
                total[name] = total.get(name, 0.0) + ns / 1e6
        self.layer_timings = []
        total["gap_free"] = float(gap_free)
        return total


# -- making KV ------------------------------------------------------------------------------------
def prompt_tokens(vocab_size: int, n: int, request_seed: int) -> torch.Tensor:
    """A request's random prompt token ids (int64 [n], CPU), reproducible from its seed."""
    gen = torch.Generator(device="cpu").manual_seed(request_seed)
    return torch.randint(vocab_size, (n,), generator=gen)


def _corpus_tokens(cfg: EngineConfig, mcfg: LlamaConfig, seed: int, n: int) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(mcfg.vocab_size, (n,), generator=gen)


@torch.no_grad()
def projected_kv(model: LlamaForCausalLM, tokens: torch.Tensor, first_position: int,
                 dtype: torch.dtype, block_tokens: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Each layer's K/V of ``tokens`` at positions first_position.. made by the layer's own input norm,
    K/V projections and RoPE applied to the token embeddings (see EngineConfig.context).
    Returns k, v [layers, kv_heads, T, d]; works in blocks so a 1Mi-token corpus fits."""
    mcfg = model.config
    dev = model.lm_head.weight.device
    t = tokens.shape[0]
    shape = (mcfg.num_layers, mcfg.kv_heads, t, mcfg.head_dim)
    k_all = torch.empty(shape, dtype=dtype, device=dev)
    v_all = torch.empty(shape, dtype=dtype, device=dev)
    inv = model.inv_freq(dev)
    for s in range(0, t, block_tokens):
        e = min(t, s + block_tokens)
        x = model.model.embed_tokens(tokens[s:e].to(dev))
        pos = first_position + torch.arange(s, e, device=dev)
        for i, layer in enumerate(model.model.layers):
            h = layer.input_layernorm(x)
            k = layer.self_attn.k_proj(h).view(e - s, mcfg.kv_heads, mcfg.head_dim)
            v = layer.self_attn.v_proj(h).view(e - s, mcfg.kv_heads, mcfg.head_dim)
            k_all[i, :, s:e] = apply_rope(k, pos, inv).transpose(0, 1).to(dtype)
            v_all[i, :, s:e] = v.transpose(0, 1).to(dtype)
    return k_all, v_all


@torch.no_grad()
def make_shared_kv(model: LlamaForCausalLM, cfg: EngineConfig) -> list[SharedKV]:
    """The shared corpus's per-layer chunked KV (random corpus tokens from ``cfg.seed + 1``)."""
    mcfg = model.config
    dtype = DTYPES[cfg.dtype]
    tokens = _corpus_tokens(cfg, mcfg, cfg.seed + 1, cfg.shared_tokens)
    if cfg.context == "prefill":
        dev = model.lm_head.weight.device
        return model.prefill_shared(tokens.to(dev), cfg.layout_chunk_tokens, dtype)
    k_all, v_all = projected_kv(model, tokens, first_position=0, dtype=dtype)
    out = [SharedKV.build(k_all[i], v_all[i], cfg.layout_chunk_tokens)
           for i in range(mcfg.num_layers)]
    return out
