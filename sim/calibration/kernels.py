"""Map each measured kernel of a moska GPU trace to the hw op (and kernel profile) that prices it.

One StepRecord times four regions of the reference Triton path (traces/capture/moska.py):

* ``shared_attention``: one grouped launch of the project's shared kernel, one tile per <= block_m/g
  pairs of a (kv head, chunk) -> GroupedSharedAttention with kv_heads=1, q_heads=g, one histogram
  "chunk" per (kv head, chunk) with a nonzero count, requests = R*kv_heads, priced with the
  ``triton-moska-shared`` profile at the trace's own row tile (``capture.shared_kernel.block_m``).
* ``unique_attention``: an int64->int32 cast of the lengths + one flash-decoding launch over
  (request, kv head, split) -> DecodeAttention at the mean unique length (the programs of all
  requests share the SMs, so total KV bytes, not the longest request, set the time), profile
  ``triton-moska-decode``, + 1 glue launch.
* ``merge``: one launch, one program per (request, kv head), looping over top_k*kv_splits shared
  and S_u unique fp32 partials -> LseMerge(partials = P, fp32), profile ``triton-moska-merge``.
* ``router``: the fp32 score einsum plus 61-78 small torch launches. It is not one hw op (the
  simulated system's router is a Gemm), so it is not priced here.

A glue launch (cast, fill) is priced as the smallest kernel there is: the ``torch-copy`` profile's
fixed cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hw.ops import DecodeAttention, GroupedSharedAttention, LseMerge
from sim.calibration.datasets import TEST, TRAIN, Sample
from traces.schema import StepRecord, Trace, TraceHeader

UNIQUE_GLUE = 1  # lens.to(int32) before the flash-decoding launch
UNIQUE_BLOCK_N = 128  # traces.capture.kernels.unique_config: KV tokens per inner step
ATTN_DTYPE = {"bf16": "bf16", "fp8": "fp8", "fp32": "fp32"}  # trace KV dtype -> hw op dtype
PRICED = ("shared_attention", "unique_attention", "merge")


@dataclass(frozen=True)
class Launch:
    """What the reference kernels were launched with, read from the trace header."""

    shared_block_m: int | None  # rows per shared tile (None: the profile's choice)
    shared_splits: int  # KV splits per chunk
    unique_capacity: int  # L_max of the unique cache: sizes the flash-decoding splits

    @classmethod
    def from_trace(cls, trace: Trace) -> Launch:
        shared = trace.header.capture.get("shared_kernel") or {}
        capacity = max((int(np.max(r.unique_tokens)) for r in trace.records), default=1)
        return cls(shared_block_m=_int_or_none(shared.get("block_m")),
                   shared_splits=int(shared.get("kv_splits") or 1), unique_capacity=max(1, capacity))


def _int_or_none(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and v >= 1 else None


def unique_splits(capacity: int, batch_heads: int, sms: int, block_n: int = UNIQUE_BLOCK_N) -> int:
    """The reference flash-decoding split count (traces.capture.kernels.unique_splits)."""
    splits = 1
    while batch_heads * splits < 4 * sms and capacity // (splits * 2) >= 2 * block_n:
        splits *= 2
    return splits


def chunk_histogram(chunk_batch: np.ndarray) -> tuple[tuple[int, int], ...]:
    """(queries, groups) pairs: how many (kv head, chunk) groups were selected by each count."""
    counts = np.asarray(chunk_batch).ravel()
    values, groups = np.unique(counts[counts > 0], return_counts=True)
    return tuple((int(v), int(n)) for v, n in zip(values, groups))


def record_ops(header: TraceHeader, rec: StepRecord, launch: Launch, sms: int) -> dict[str, tuple]:
    """kind -> (op, profile, tile_m override, glue launches) for one record's priced regions."""
    r, hk, g, d = rec.batch_size, header.kv_heads, header.group_size, header.head_dim
    dtype = ATTN_DTYPE[header.dtype]
    out: dict[str, tuple] = {
        "unique_attention": (DecodeAttention(q_heads=header.q_heads, kv_heads=hk, head_dim=d, dtype=dtype, batch=r,
                                             kv_tokens=max(1, round(float(np.mean(rec.unique_tokens))))),
                             "triton-moska-decode", 0, UNIQUE_GLUE),
    }
    hist = chunk_histogram(rec.chunk_batch)
    if hist:
        out["shared_attention"] = (
            GroupedSharedAttention(q_heads=g, kv_heads=1, head_dim=d, dtype=dtype, chunk_batches=hist,
                                   chunk_tokens=header.chunk_tokens, requests=r * hk),
            "triton-moska-shared", launch.shared_block_m or 0, 0)
    partials = header.top_k * launch.shared_splits + unique_splits(launch.unique_capacity, r * hk, sms)
    out["merge"] = (LseMerge(r, header.q_heads, d, partials, "fp32"), "triton-moska-merge", 0, 0)
    return out


def trace_samples(trace: Trace, source: str, chip: str, sms: int, held_out: bool) -> list[Sample]:
    """Every priced kernel time of ``trace`` as samples on ``chip``, all train or all held out."""
    launch = Launch.from_trace(trace)
    out: list[Sample] = []
    for rec in trace.records:
        if not rec.kernel_ns:
            continue
        ops = record_ops(trace.header, rec, launch, sms)
        for kind in PRICED:
            t = rec.kernel_ns.get(kind)
            if t is None or kind not in ops or not t > 0:
                continue
            op, profile, tile, glue = ops[kind]
            out.append(Sample(source, chip, kind, profile, op, "burst", float(t), TEST if held_out else TRAIN,
                              f"step={rec.step} layer={rec.layer} batch={rec.batch_size}", tile, glue))
    return out


__all__ = ["Launch", "chunk_histogram", "record_ops", "trace_samples", "unique_splits"]
