"""What the serving engine holds and how it attends: ``EngineConfig`` (sizes in tokens)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from traces.capture.model import PRESETS, LlamaConfig
from traces.capture.moska import BACKENDS
from traces.capture.router import GROUP_REDUCES
from traces.schema import n_chunks_for, top_k_for

SYSTEMS = ("moska", "shared_gemm")
GLUES = ("fused", "torch")
CONTEXTS = ("prefill", "projected")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class EngineConfig:
    """What the engine holds and how it attends (sizes in tokens).

    ``glue``: ``fused`` runs the step's non-attention parts as a production server does (fused QKV
    and gate/up projections, one-launch RMSNorm with the residual add, RoPE + KV append, SiLU*up,
    router top-k and dispatch; traces.serving.fused); ``torch`` runs the reference model's own
    modules and router (dozens of small launches per layer; the exactness reference).

    ``context``: how KV is made. ``prefill`` runs the shared corpus and each request's prompt through
    the model densely (exact; the reference the tests check against; affordable on small shapes only).
    ``projected`` makes each layer's K/V by projecting the token embeddings through that layer's
    K/V projections with RoPE at the true positions (no attention, no earlier layers): real keys of
    the real projection weights for the router to score, at a cost a 1Mi-token corpus allows. A
    request's unique KV is then copied from a bank made the same way when it is admitted, as KV
    handed over by a prefill node would land (decode-only serving).
    """

    system: str = "moska"
    preset: str = "tiny"
    layers: int | None = None
    dtype: str = "fp32"
    device: str = "cpu"
    backend: str = "triton"
    shared_tokens: int = 512
    chunk_tokens: int = 64
    keep_fraction: float = 0.25
    group_reduce: str = "max"
    unique_max: int = 32
    output_max: int = 8
    max_batch: int = 8
    context: str = "prefill"
    cuda_graphs: bool = True
    glue: str = "fused"
    seed: int = 0

    def check(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.system not in SYSTEMS:
            raise ValueError(f"system: expected one of {SYSTEMS}, got {self.system!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset: unknown {self.preset!r} (choose from {', '.join(PRESETS)})")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {tuple(DTYPES)}, got {self.dtype!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {self.backend!r}")
        if self.glue not in GLUES:
            raise ValueError(f"glue: expected one of {GLUES}, got {self.glue!r}")
        if self.glue == "fused" and self.backend != "triton":
            raise ValueError("glue 'fused' runs Triton kernels: it needs backend 'triton'")
        if self.context not in CONTEXTS:
            raise ValueError(f"context: expected one of {CONTEXTS}, got {self.context!r}")
        if self.group_reduce not in GROUP_REDUCES:
            raise ValueError(f"group_reduce: expected one of {GROUP_REDUCES}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device: expected cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device cuda: no CUDA device is available")
        if self.device == "cpu" and self.backend == "triton":
            from traces.capture.kernels import interpreting

            if not interpreting():
                raise ValueError("backend 'triton' on CPU needs TRITON_INTERPRET=1 (or use "
                                 "backend 'torch' with glue 'torch')")
        for name in ("shared_tokens", "chunk_tokens", "unique_max", "output_max", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.chunk_tokens > self.shared_tokens:
            raise ValueError(
                f"chunk_tokens={self.chunk_tokens} is larger than shared_tokens={self.shared_tokens}"
            )
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction: must be in (0, 1], got {self.keep_fraction}")

    @property
    def model_config(self) -> LlamaConfig:
        cfg = PRESETS[self.preset]
        return cfg.with_layers(self.layers) if self.layers else cfg

    @property
    def effective_keep_fraction(self) -> float:
        """``shared_gemm`` reads every chunk (no router)."""
        return 1.0 if self.system == "shared_gemm" else self.keep_fraction

    @property
    def layout_chunk_tokens(self) -> int:
        """Chunking of the corpus KV as held: ``moska`` routes ``chunk_tokens`` chunks;
        ``shared_gemm`` attends to the whole corpus as one chunk (a batched flash attention over it,
        split across programs by the kernel's KV splits), so each request gets one partial per split,
        not one per chunk."""
        return self.chunk_tokens if self.system == "moska" else self.shared_tokens

    @property
    def n_chunks(self) -> int:
        return n_chunks_for(self.shared_tokens, self.layout_chunk_tokens)

    @property
    def top_k(self) -> int:
        return top_k_for(self.n_chunks, self.effective_keep_fraction)

    @property
    def capacity_tokens(self) -> int:
        """Unique KV slots hold the longest prompt plus every decoded token."""
        return self.unique_max + self.output_max
