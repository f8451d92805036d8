"""The shared corpus KV of one layer, cut into chunks, with each chunk's mean-pooled key summary."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from traces.schema import n_chunks_for


@dataclass(frozen=True)
class SharedKV:
    """K and V of the shared corpus for one layer ([kv_heads, tokens, head_dim], original RoPE positions
    0..tokens-1) plus summaries [kv_heads, n_chunks, head_dim] fp32 = mean of each chunk's keys."""

    k: torch.Tensor
    v: torch.Tensor
    summaries: torch.Tensor
    chunk_tokens: int

    @property
    def tokens(self) -> int:
        return int(self.k.shape[1])

    @property
    def n_chunks(self) -> int:
        return int(self.summaries.shape[1])

    @property
    def kv_heads(self) -> int:
        return int(self.k.shape[0])

    def chunk_range(self, c: int) -> tuple[int, int]:
        """Token range [start, end) of chunk c (the last chunk may be short)."""
        return c * self.chunk_tokens, min((c + 1) * self.chunk_tokens, self.tokens)

    @classmethod
    def build(cls, k: torch.Tensor, v: torch.Tensor, chunk_tokens: int) -> SharedKV:
        """Chunk k, v ([kv_heads, tokens, head_dim]) and mean-pool each chunk's keys in fp32."""
        if k.shape != v.shape or k.dim() != 3:
            raise ValueError(
                f"shared k and v must both be [kv_heads, tokens, head_dim], got {tuple(k.shape)} "
                f"and {tuple(v.shape)}"
            )
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
        hk, length, d = k.shape
        n = n_chunks_for(length, chunk_tokens)
        pad = n * chunk_tokens - length
        kf = k.float()
        if pad:
            kf = torch.cat([kf, kf.new_zeros(hk, pad, d)], dim=1)
        sums = kf.view(hk, n, chunk_tokens, d).sum(dim=2)
        sizes = torch.full((n,), float(chunk_tokens), device=k.device)
        sizes[-1] = float(length - (n - 1) * chunk_tokens)
        return cls(
            k=k.contiguous(),
            v=v.contiguous(),
            summaries=(sums / sizes[None, :, None]).contiguous(),
            chunk_tokens=int(chunk_tokens),
        )
