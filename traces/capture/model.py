"""A small Llama-architecture decoder in plain PyTorch (RMSNorm, RoPE, GQA, SwiGLU) whose decode
attention is MoSKA. Module names mirror Hugging Face's LlamaForCausalLM so its state_dict keys are the
HF checkpoint keys (traces.capture.weights loads them). Random-initialised unless weights are loaded.

Prefill (the shared corpus once, then each request's unique prefix after it) is dense and exact;
decode steps use moska_attention over [top-k shared chunks ; own unique KV].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from traces.capture.moska import MoskaOptions, MoskaResult, moska_attention
from traces.capture.shared_kv import SharedKV
from traces.capture.timing import CudaEventTimer, LayerTiming, NullTimer


@dataclass(frozen=True)
class LlamaConfig:
    """Model shape (names follow the Hugging Face config.json fields they are read from)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    q_heads: int
    kv_heads: int
    head_dim: int
    rope_theta: float = 500_000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    rope_scaling: dict[str, Any] | None = field(default=None, hash=False)
    name: str = "custom"

    def __post_init__(self) -> None:
        for f in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "q_heads",
            "kv_heads",
            "head_dim",
        ):
            if getattr(self, f) < 1:
                raise ValueError(f"model config: {f} must be >= 1, got {getattr(self, f)}")
        if self.q_heads % self.kv_heads:
            raise ValueError(
                f"model config: q_heads={self.q_heads} is not a multiple of kv_heads={self.kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"model config: head_dim must be even for RoPE, got {self.head_dim}")

    def with_layers(self, n: int) -> LlamaConfig:
        return replace(self, num_layers=n)


PRESETS: dict[str, LlamaConfig] = {
    "tiny": LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        q_heads=4,
        kv_heads=2,
        head_dim=16,
        rope_theta=10_000.0,
        name="tiny",
    ),
    "small": LlamaConfig(
        vocab_size=1024,
        hidden_size=512,
        intermediate_size=1024,
        num_layers=4,
        q_heads=8,
        kv_heads=2,
        head_dim=64,
        rope_theta=500_000.0,
        name="small",
    ),
    # Llama 3.1 8B shapes (hidden 4096, 32 layers, GQA 32/8, head_dim 128, SwiGLU 14336, llama3 RoPE).
    "llama-3.1-8b": LlamaConfig(
        vocab_size=128_256,
        hidden_size=4096,
        intermediate_size=14_336,
        num_layers=32,
        q_heads=32,
        kv_heads=8,
        head_dim=128,
        rope_theta=500_000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        name="llama-3.1-8b",
    ),
}


def rope_inv_freq(cfg: LlamaConfig) -> torch.Tensor:
    """RoPE inverse frequencies (float64), with Llama 3 frequency scaling when configured."""
    d = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64, device="cpu") / d))
    rs = cfg.rope_scaling or {}
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return inv
    if kind != "llama3":
        raise ValueError(
            f"model config: rope_scaling type {kind!r} is not supported (default, llama3)"
        )
    factor, lo_f, hi_f = (
        float(rs["factor"]),
        float(rs["low_freq_factor"]),
        float(rs["high_freq_factor"]),
    )
    old_len = float(rs["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv
    inv_l = torch.where(wavelen > old_len / lo_f, inv / factor, inv)
    smooth = (old_len / wavelen - lo_f) / (hi_f - lo_f)
    smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
    medium = (wavelen >= old_len / hi_f) & (wavelen <= old_len / lo_f)
    return torch.where(medium, smoothed, inv_l)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., T, heads, d] at integer positions [..., T] (HF rotate_half convention)."""
    ang = positions.to(torch.float64)[..., None] * inv_freq  # [..., T, d/2]
    cos = torch.cat([ang.cos(), ang.cos()], dim=-1).unsqueeze(-2)
    sin = torch.cat([ang.sin(), ang.sin()], dim=-1).unsqueeze(-2)
    xf = x.to(torch.float64) if x.dtype == torch.float64 else x.float()
    half = x.shape[-1] // 2
    rot = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * cos.to(xf.dtype) + rot * sin.to(xf.dtype)).to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class LlamaAttention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.q_proj = nn.Linear(h, cfg.q_heads * d, bias=False)
        self.k_proj = nn.Linear(h, cfg.kv_heads * d, bias=False)
        self.v_proj = nn.Linear(h, cfg.kv_heads * d, bias=False)
        self.o_proj = nn.Linear(cfg.q_heads * d, h, bias=False)


class LlamaMLP(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(cfg)
        self.mlp = LlamaMLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaModel(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([LlamaDecoderLayer(cfg) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


@dataclass
class UniqueCache:
    """Per-layer unique KV of a batch: k, v [B, kv_heads, capacity, d] and valid lengths [B]."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    lens: torch.Tensor  # int64 [B], on the model's device


LayerHook = Callable[[int, MoskaResult, LayerTiming], None]


class LlamaForCausalLM(nn.Module):
    """Llama decoder with dense prefill and MoSKA decode attention."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # Not a buffer: it must stay float64 when the model is cast to bf16 and stay out of state_dict.
        self._inv_freq_cpu = rope_inv_freq(cfg)
        self._inv_freq_by_device: dict[torch.device, torch.Tensor] = {}

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        """RoPE inverse frequencies (float64) on ``device``, cached."""
        if device not in self._inv_freq_by_device:
            self._inv_freq_by_device[device] = self._inv_freq_cpu.to(device)
        return self._inv_freq_by_device[device]

    @classmethod
    def build(
        cls, cfg: LlamaConfig, dtype: torch.dtype, device: torch.device | str
    ) -> LlamaForCausalLM:
        """Allocate the model directly on ``device`` in ``dtype`` with uninitialised weights."""
        with torch.device("meta"):
            model = cls(cfg)
        model = model.to(dtype=dtype).to_empty(device=device)
        if cfg.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        return model.eval()

    @torch.no_grad()
    def init_random(self, generator: torch.Generator, std: float = 0.02) -> None:
        """Deterministic random init (normal(0, std) matrices, unit norms), never a download.
        ``generator`` must live on the parameters' device."""
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.fill_(1.0)
            else:
                p.copy_(
                    torch.randn(p.shape, generator=generator, dtype=torch.float32, device=p.device)
                    * std
                )

    # -- shared pieces ---------------------------------------------------------------------------
    def _qkv(self, layer: LlamaDecoderLayer, x: torch.Tensor, positions: torch.Tensor):
        cfg = self.config
        h = layer.input_layernorm(x)
        lead = x.shape[:-1]
        q = layer.self_attn.q_proj(h).view(*lead, cfg.q_heads, cfg.head_dim)
        k = layer.self_attn.k_proj(h).view(*lead, cfg.kv_heads, cfg.head_dim)
        v = layer.self_attn.v_proj(h).view(*lead, cfg.kv_heads, cfg.head_dim)
        inv = self.inv_freq(x.device)
        return apply_rope(q, positions, inv), apply_rope(k, positions, inv), v

    def _finish_layer(
        self, layer: LlamaDecoderLayer, x: torch.Tensor, attn: torch.Tensor
    ) -> torch.Tensor:
        x = x + layer.self_attn.o_proj(attn.reshape(*x.shape[:-1], -1))
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model.norm(x)).float()

    # -- dense prefill ----------------------------------------------------------------------------
    def _dense_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int
    ) -> torch.Tensor:
        """q [T, Hq, d] at positions past..past+T-1 over k, v [past+T, Hkv, d], causal."""
        g = self.config.q_heads // self.config.kv_heads
        qh = q.transpose(0, 1).unsqueeze(0)
        kh = k.repeat_interleave(g, dim=1).transpose(0, 1).unsqueeze(0)
        vh = v.repeat_interleave(g, dim=1).transpose(0, 1).unsqueeze(0)
        t, s = q.shape[0], k.shape[0]
        if past == 0:
            out = F.scaled_dot_product_attention(qh, kh.to(q.dtype), vh.to(q.dtype), is_causal=True)
        else:
            mask = (
                torch.arange(s, device=q.device)[None, :]
                <= (past + torch.arange(t, device=q.device))[:, None]
            )
            out = F.scaled_dot_product_attention(qh, kh.to(q.dtype), vh.to(q.dtype), attn_mask=mask)
        return out.squeeze(0).transpose(0, 1)

    @torch.no_grad()
    def prefill_shared(
        self, tokens: torch.Tensor, chunk_tokens: int, kv_dtype: torch.dtype
    ) -> list[SharedKV]:
        """Run the shared corpus (positions 0..L-1) once; return each layer's chunked SharedKV."""
        pos = torch.arange(tokens.shape[0], device=tokens.device)
        x = self.model.embed_tokens(tokens)
        out: list[SharedKV] = []
        for layer in self.model.layers:
            q, k, v = self._qkv(layer, x, pos)
            kq, vq = k.to(kv_dtype), v.to(kv_dtype)
            attn = self._dense_attention(q, kq, vq, past=0)
            out.append(SharedKV.build(kq.transpose(0, 1), vq.transpose(0, 1), chunk_tokens))
            x = self._finish_layer(layer, x, attn)
        return out

    @torch.no_grad()
    def prefill_unique(
        self, tokens: torch.Tensor, shared: list[SharedKV]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Run one request's unique prefix after the whole shared corpus (dense, exact).
        Returns per-layer k, v [kv_heads, T, d] and the last position's logits."""
        past = shared[0].tokens
        pos = past + torch.arange(tokens.shape[0], device=tokens.device)
        x = self.model.embed_tokens(tokens)
        ks, vs = [], []
        for layer, sh in zip(self.model.layers, shared):
            q, k, v = self._qkv(layer, x, pos)
            kq, vq = k.to(sh.k.dtype), v.to(sh.v.dtype)
            keys = torch.cat([sh.k.transpose(0, 1), kq])
            vals = torch.cat([sh.v.transpose(0, 1), vq])
            attn = self._dense_attention(q, keys, vals, past=past)
            ks.append(kq.transpose(0, 1))
            vs.append(vq.transpose(0, 1))
            x = self._finish_layer(layer, x, attn)
        return ks, vs, self.logits(x[-1])

    # -- MoSKA decode -----------------------------------------------------------------------------
    @torch.no_grad()
    def decode_step(
        self,
        tokens: torch.Tensor,
        shared: list[SharedKV],
        cache: UniqueCache,
        options: MoskaOptions,
        timer: NullTimer | CudaEventTimer | None = None,
        on_layer: LayerHook | None = None,
    ) -> torch.Tensor:
        """One decode step for a batch: tokens [B] at positions shared_tokens + cache.lens; appends each
        token's K/V to its unique cache, attends with MoSKA, returns logits [B, vocab] (fp32)."""
        timer = timer or NullTimer()
        b = tokens.shape[0]
        if int(cache.lens.max()) >= cache.k[0].shape[2]:
            raise ValueError("unique cache is full: raise its capacity")
        pos = shared[0].tokens + cache.lens
        rows = torch.arange(b, device=tokens.device)
        new_lens = cache.lens + 1
        x = self.model.embed_tokens(tokens)
        for i, (layer, sh) in enumerate(zip(self.model.layers, shared)):
            q, k, v = self._qkv(layer, x, pos)
            cache.k[i][rows, :, cache.lens] = k.to(cache.k[i].dtype)
            cache.v[i][rows, :, cache.lens] = v.to(cache.v[i].dtype)
            res = moska_attention(q, sh, cache.k[i], cache.v[i], new_lens, options, timer)
            timing = timer.end_layer()
            if on_layer is not None:
                on_layer(i, res, timing)
            x = self._finish_layer(layer, x, res.out)
        cache.lens = new_lens
        return self.logits(x)
