"""Model shapes as data: ``ModelSpec`` and the presets (Llama 3.1 8B and 70B).

A model is one entry of ``MODELS``; adding a model is one more entry (with its source).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from hw.specs import dtype_bytes
from workloads.errors import WorkloadError


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer's shapes (Llama layout: GQA attention, SwiGLU FFN)."""

    name: str
    layers: int
    hidden: int
    q_heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    tied_embeddings: bool = False
    source: str = ""

    @property
    def group(self) -> int:
        return self.q_heads // self.kv_heads

    def kv_bytes_per_token_per_layer(self, precision: str) -> float:
        """K and V of one token in one layer: 2 x kv_heads x head_dim x bytes."""
        return 2 * self.kv_heads * self.head_dim * dtype_bytes(precision)

    def kv_bytes_per_token(self, precision: str) -> float:
        return self.layers * self.kv_bytes_per_token_per_layer(precision)

    @property
    def params_per_layer(self) -> int:
        attn = self.hidden * self.head_dim * (2 * self.q_heads + 2 * self.kv_heads)
        return attn + 3 * self.hidden * self.ffn + 2 * self.hidden

    @property
    def params(self) -> int:
        embed = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * self.params_per_layer + embed + self.hidden

    def weight_bytes(self, precision: str) -> float:
        return self.params * dtype_bytes(precision)


MODELS: dict[str, ModelSpec] = {
    "llama-3.1-8b": ModelSpec(
        "llama-3.1-8b", layers=32, hidden=4096, q_heads=32, kv_heads=8, head_dim=128,
        ffn=14336, vocab=128256, source="meta-llama/Llama-3.1-8B config.json",
    ),
    "llama-3.1-70b": ModelSpec(
        "llama-3.1-70b", layers=80, hidden=8192, q_heads=64, kv_heads=8, head_dim=128,
        ffn=28672, vocab=128256, source="meta-llama/Llama-3.1-70B config.json",
    ),
}


def available_models() -> list[str]:
    return sorted(MODELS)


def get_model(name: str) -> ModelSpec:
    if name not in MODELS:
        near = difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise WorkloadError(f"model: unknown model {name!r}{hint}; known: {', '.join(MODELS)}")
    return MODELS[name]


__all__ = ["MODELS", "ModelSpec", "available_models", "get_model"]
