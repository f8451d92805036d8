"""Map each measured kernel of a GPU trace to the hw ops that price exactly what was timed.

One StepRecord times four regions of the reference Triton path (traces/capture/moska.py):

* ``router``: the fp32 score einsum plus ~60-80 small torch launches (group max, two sorts, the
  dispatch's scatter/sort/cumsum/searchsorted/index ops) -> one fp32 Gemm + glue launches.
* ``shared_attention``: one grouped launch, one tile per <= block_m/g pairs of a (kv head, chunk),
  each chunk cut in kv_splits -> GroupedSharedAttention with kv_heads=1, q_heads=g, one histogram
  "chunk" per (kv head, chunk) with a nonzero count, requests = R*kv_heads; no combine launch.
* ``unique_attention``: an int64->int32 cast of the lengths + one flash-decoding launch over
  (request, kv head, split) -> DecodeAttention at the mean unique length (the programs of all
  requests share the SMs, so total KV bytes, not the longest request, set the time) + 1 glue.
* ``merge``: one launch, one program per (request, kv head), looping over top_k*kv_splits shared
  and S_u unique fp32 partials -> LseMerge with the partial count scaled to fp32 bytes, and at
  least one launch plus one memory latency per partial (the loop's loads are serial).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hw.ops import (
    ACT_BYTES,
    STAT_BYTES,
    ComputeOp,
    DecodeAttention,
    Gemm,
    GroupedSharedAttention,
    LseMerge,
)
from hw.specs import ChipSpec
from sim.calibration.pricing import glue_ns, op_ns, pricing_chip
from traces.schema import KERNEL_NAMES, StepRecord, Trace, TraceHeader

# Launches in the router region, counted with torch.profiler on the H100 (torch 2.11, cu130):
# 61 while the dispatch's 1-D stable sort of R*kv_heads*top_k pairs fits torch's in-place sort
# (<= 4096 elements), 78 once it falls back to cub's radix sort (8 onesweep passes + memsets).
ROUTER_LAUNCHES = 61
ROUTER_LAUNCHES_CUB_SORT = 78
INPLACE_SORT_MAX = 4096
UNIQUE_GLUE = 1  # lens.to(int32) before the flash-decoding launch
UNIQUE_BLOCK_N = 128  # traces.capture.kernels.unique_config: KV tokens per inner step
ATTN_DTYPE = {"bf16": "bf16", "fp8": "fp8", "fp32": "fp32"}  # trace KV dtype -> hw op dtype


@dataclass(frozen=True)
class Launch:
    """What the reference kernels were launched with, read from the trace header."""

    shared_block_m: int | None  # rows per shared tile (None: hw's default tile)
    shared_block_n: int | None
    shared_splits: int  # KV splits per chunk
    unique_capacity: int  # L_max of the unique cache: sizes the flash-decoding splits

    @classmethod
    def from_trace(cls, trace: Trace) -> Launch:
        shared = trace.header.capture.get("shared_kernel") or {}
        capacity = max((int(np.max(r.unique_tokens)) for r in trace.records), default=1)
        return cls(
            shared_block_m=_int_or_none(shared.get("block_m")),
            shared_block_n=_int_or_none(shared.get("block_n")),
            shared_splits=int(shared.get("kv_splits") or 1),
            unique_capacity=max(1, capacity),
        )


def _int_or_none(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and v >= 1 else None


@dataclass(frozen=True)
class KernelModel:
    """The priced form of one measured kernel: hw ops (split combine dropped) plus glue launches."""

    ops: tuple[ComputeOp, ...]
    glue: int = 0
    tile_m: int | None = None  # attention tile overrides for these ops (the reference's launch)
    block_n: int | None = None
    serial_loads: int = 0  # dependent loads each program issues one after another (merge loop)

    def predict_ns(self, chip: ChipSpec) -> float:
        """Modelled time on ``chip`` (ns): hw's price of the ops, at least the serial-load floor.

        hw's tile model prices throughput plus one pipeline fill per wave; a program that loops
        over ``serial_loads`` partials, each iteration waiting on its loads, cannot finish before
        one launch plus that many memory latencies, however few bytes it moves.
        """
        base = pricing_chip(chip)
        if self.tile_m or self.block_n:
            base = dataclasses.replace(
                base,
                attn_tile_m=self.tile_m or base.attn_tile_m,
                attn_block_n=self.block_n or base.attn_block_n,
            )
        priced = sum(op_ns(op, base, skip_combine=True) for op in self.ops)
        floor = chip.launch_overhead_ns + self.serial_loads * chip.mem_latency_ns if self.serial_loads else 0.0
        return max(priced, floor) + self.glue * glue_ns(chip)


@dataclass(frozen=True)
class MeasuredKernel:
    """One kernel time of one record and the model that prices it."""

    kind: str  # one of traces.schema.KERNEL_NAMES
    record: int
    step: int
    layer: int
    measured_ns: float
    model: KernelModel
    source: str = ""  # the trace it came from (the fit weighs every trace equally)


def unique_splits(capacity: int, batch_heads: int, sms: int, block_n: int = UNIQUE_BLOCK_N) -> int:
    """The reference flash-decoding split count (traces.capture.kernels.unique_splits)."""
    splits = 1
    while batch_heads * splits < 4 * sms and capacity // (splits * 2) >= 2 * block_n:
        splits *= 2
    return splits


def router_launches(header: TraceHeader, batch: int) -> int:
    """Launches of the router region for ``batch`` requests (see ROUTER_LAUNCHES)."""
    pairs = batch * header.kv_heads * header.top_k
    n = ROUTER_LAUNCHES_CUB_SORT if pairs > INPLACE_SORT_MAX else ROUTER_LAUNCHES
    return n - (1 if header.dtype == "fp32" else 0)  # no q.float() copy when q is already fp32


def chunk_histogram(chunk_batch: np.ndarray) -> tuple[tuple[int, int], ...]:
    """(queries, groups) pairs: how many (kv head, chunk) groups were selected by each count."""
    counts = np.asarray(chunk_batch).ravel()
    values, groups = np.unique(counts[counts > 0], return_counts=True)
    return tuple((int(v), int(n)) for v, n in zip(values, groups))


def record_models(header: TraceHeader, rec: StepRecord, launch: Launch, chip: ChipSpec) -> dict[str, KernelModel]:
    """The KernelModel of each of the four regions of one record."""
    r, hk, g, d = rec.batch_size, header.kv_heads, header.group_size, header.head_dim
    dtype = ATTN_DTYPE[header.dtype]
    models = {
        "router": KernelModel(
            ops=(Gemm(r * g, header.n_chunks * hk, d, "fp32"),),
            glue=router_launches(header, r) - 1,
        ),
        "unique_attention": KernelModel(
            ops=(DecodeAttention(q_heads=header.q_heads, kv_heads=hk, head_dim=d, dtype=dtype, batch=r,
                                 kv_tokens=max(1, round(float(np.mean(rec.unique_tokens))))),),
            glue=UNIQUE_GLUE,
        ),
    }
    hist = chunk_histogram(rec.chunk_batch)
    if hist:
        models["shared_attention"] = KernelModel(
            ops=(GroupedSharedAttention(q_heads=g, kv_heads=1, head_dim=d, dtype=dtype, chunk_batches=hist,
                                        chunk_tokens=header.chunk_tokens, requests=r * hk),),
            tile_m=launch.shared_block_m,
            block_n=launch.shared_block_n,
        )
    partials = header.top_k * launch.shared_splits + unique_splits(launch.unique_capacity, r * hk, chip.sm_count)
    # LseMerge prices bf16 partials; the reference's are fp32: scale the count to the same bytes.
    fp32_scale = (d * 4 + STAT_BYTES) / (d * ACT_BYTES + STAT_BYTES)
    models["merge"] = KernelModel(
        ops=(LseMerge(batch=r, q_heads=header.q_heads, head_dim=d, partials=math.ceil(partials * fp32_scale)),),
        serial_loads=partials,
    )
    return models


def measured_kernels(trace: Trace, chip: ChipSpec, kinds: Iterable[str] = KERNEL_NAMES,
                     source: str = "") -> list[MeasuredKernel]:
    """Every measured kernel time of ``trace`` with its model, in record order then KERNEL_NAMES order."""
    wanted = [k for k in KERNEL_NAMES if k in set(kinds)]
    launch = Launch.from_trace(trace)
    out: list[MeasuredKernel] = []
    for i, rec in enumerate(trace.records):
        if not rec.kernel_ns:
            continue
        models = record_models(trace.header, rec, launch, chip)
        for kind in wanted:
            t = rec.kernel_ns.get(kind)
            if t is None or kind not in models or not t > 0:
                continue
            out.append(MeasuredKernel(kind, i, rec.step, rec.layer, float(t), models[kind], source))
    return out


def predict_all(kernels: Iterable[MeasuredKernel], chip: ChipSpec) -> np.ndarray:
    """Modelled ns of each kernel on ``chip`` (identical models are priced once)."""
    cache: dict[KernelModel, float] = {}
    out = []
    for k in kernels:
        if k.model not in cache:
            cache[k.model] = k.model.predict_ns(chip)
        out.append(cache[k.model])
    return np.asarray(out, dtype=np.float64)
