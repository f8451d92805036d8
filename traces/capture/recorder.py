"""Collects one StepRecord per (decode step, layer) while the decoder runs.

Device tensors are kept until the end of the step, then copied to the host in one go (after one
synchronize that also resolves the CUDA events), so recording adds no syncs inside a layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from traces.capture.moska import MoskaResult
from traces.capture.timing import LayerTiming
from traces.schema import StepRecord


@dataclass
class _Pending:
    layer: int
    selected: torch.Tensor
    chunk_batch: torch.Tensor
    timing: LayerTiming


@dataclass
class TraceRecorder:
    """Turns the decoder's per-layer MoskaResults into StepRecords (see traces.schema)."""

    request_ids: np.ndarray
    records: list[StepRecord] = field(default_factory=list)
    timed_layers: int = 0
    gap_free_layers: int = 0
    host_enqueue_ns: list[float] = field(default_factory=list)
    _step: int | None = None
    _unique_tokens: np.ndarray | None = None
    _pending: list[_Pending] = field(default_factory=list)

    def begin_step(self, step: int, unique_tokens: torch.Tensor) -> None:
        """Start a step; unique_tokens[b] = unique KV tokens request b attends to in this step."""
        self._step = step
        self._unique_tokens = unique_tokens.detach().cpu().numpy().astype(np.int64)
        self._pending = []

    def on_layer(self, layer: int, result: MoskaResult, timing: LayerTiming) -> None:
        """Hook for LlamaForCausalLM.decode_step(on_layer=...)."""
        self._pending.append(_Pending(layer, result.selected, result.chunk_batch, timing))

    def end_step(self) -> None:
        """Synchronise once, resolve timings and append this step's records."""
        if self._step is None or self._unique_tokens is None:
            raise RuntimeError("end_step() without begin_step()")
        if self._pending and self._pending[0].selected.device.type == "cuda":
            torch.cuda.synchronize()
        for p in self._pending:
            kernel_ns = p.timing.resolve()
            if kernel_ns:
                self.timed_layers += 1
                self.gap_free_layers += int(p.timing.gap_free)
                self.host_enqueue_ns.append(p.timing.host_ns)
            self.records.append(
                StepRecord(
                    step=self._step,
                    layer=p.layer,
                    request_ids=self.request_ids.astype(np.int64),
                    unique_tokens=self._unique_tokens.copy(),
                    selected_chunks=p.selected.cpu().numpy().astype(np.int32),
                    chunk_batch=p.chunk_batch.cpu().numpy().astype(np.int32),
                    kernel_ns=kernel_ns,
                )
            )
        self._pending = []
        self._step = None
