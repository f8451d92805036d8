"""Cost of one kernel on one chip: the chip's datasheet numbers times what the kernel achieves.

Every kernel pays its profile's ``fixed_ns`` once (launch ramp, the first loads' latency, the
tail: one pipeline fill per kernel, not per wave), then its work:

* **GEMM** (cuBLAS-class): ``smax(compute, memory)`` where compute is the FLOPs, rows padded to
  the kernel's tile, at the achieved fraction of the tensor peak, and memory the bytes (weights
  once, activations in and out) at the achieved streaming bandwidth. ``smax`` is the
  ``overlap_p``-norm: how much a real kernel's compute and loads overlap near the ridge point.
  No split-K phase: cuBLAS's own split/stream-K is inside the achieved numbers, and a separate
  reduce launch made the old model's time fall as m grew.
* **Attention** (decode, shared, grouped shared): tiles of (KV stream, row tile, KV split),
  dealt to the SMs in waves. A wave takes ``smax(compute of one tile, bytes of the wave /
  bandwidth)``, the bandwidth being the chip's achieved HBM rate or, for a wave of few blocks,
  what that many blocks can pull (``cta_bandwidth_GBps`` each). Rows are padded to the
  kernel's tile (SDPA's FlashAttention pads a handful of decode queries to 128 rows).
* **Merge**: a loop over ``partials`` dependent loads per program: ``smax(partials x
  serial_latency, bytes / bandwidth)``.
* **Copy**: bytes read and written at the achieved bandwidth.

``chip.clock == "sustained"`` scales compute (tensor and special-function throughput) by the
kernel profile's measured ``sustained_ratio``, or the chip's ``sustained_compute_ratio`` when the
kernel has none: under continuous load the SM clock falls (by how much depends on the kernel's
power), HBM does not. Every term is at least the roofline's share of the work (fractions <= 1, padding >= 0,
smax >= max), so the model never beats the roofline, and every term grows with every
dimension, so time never falls as m, n, k, batch or tokens grow (tests/test_hw_monotonic.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

from hw.cost import Cost
from hw.errors import HardwareError
from hw.ops import (
    ACT_BYTES,
    STAT_BYTES,
    ComputeOp,
    Copy,
    DecodeAttention,
    Gemm,
    GroupedSharedAttention,
    LseMerge,
    SharedAttention,
)
from hw.profiles import KernelProfile, ProfileParams, default_profile_name, load_profile
from hw.specs import ChipSpec, dtype_bytes

FP32_LANES_PER_SM = 128  # FP32 FMA lanes per SM, Volta through Blackwell (CUDA programming guide)


@dataclass(frozen=True)
class TileClass:
    """``count`` identical tiles: per-tile tensor work, exp work and HBM bytes."""

    count: int
    mma_flops: float  # rows padded to the kernel's tile
    exp_ops: float
    hbm_bytes: float  # after L2 reuse between row tiles of one KV stream
    loaders: float = 1.0  # independent HBM streams per tile: 1 / (row tiles sharing one KV read)


@dataclass(frozen=True)
class PhaseTiming:
    """One phase's modelled time (ns) and what it was made of."""

    ns: float
    mem_ns: float
    compute_ns: float
    waves: int


def smax(a: float, b: float, p: float) -> float:
    """(a^p + b^p)^(1/p): between max(a, b) (p -> inf) and a + b (p = 1); grows with a and b."""
    hi = max(a, b)
    if hi <= 0:
        return 0.0
    return hi * ((a / hi) ** p + (b / hi) ** p) ** (1.0 / p)


def choose_splits(blocks: int, max_split: int, sms: int) -> int:
    """FlashAttention-2's ``num_splits_heuristic``: the fewest KV splits whose waves are >= 85%
    as full as the best (no split once ``blocks`` fill 80% of the SMs)."""
    if blocks >= 0.8 * sms:
        return 1
    limit = max(1, min(max_split, 128, sms))
    effs = []
    for s in range(1, limit + 1):
        waves = blocks * s / sms
        effs.append(waves / math.ceil(waves))
    best = max(effs)
    return next(s for s, e in enumerate(effs, start=1) if e >= 0.85 * best)


def program_splits(blocks: int, tokens: int, per_sm: float, min_tokens: int, sms: int) -> int:
    """The project's Triton split rule: double the KV splits while the launch has fewer than
    ``per_sm`` blocks per SM and each half would still hold ``min_tokens`` tokens."""
    splits = 1
    while blocks * splits < per_sm * sms and tokens // (splits * 2) >= min_tokens:
        splits *= 2
    return splits


def clock_factor(chip: ChipSpec, p: ProfileParams | None = None) -> float:
    """Compute throughput relative to the burst clock: when sustained, the kernel's own measured
    ratio if its profile has one, else the chip's."""
    if chip.clock != "sustained":
        return 1.0
    return (p.sustained_ratio if p is not None and p.sustained_ratio > 0 else None) or chip.sustained_compute_ratio


def peak_flops(chip: ChipSpec, dtype: str) -> float:
    """Dense peak FLOP/s for ``dtype``; fp32 without a tensor peak runs on the FMA lanes."""
    if dtype == "fp32" and "fp32" not in chip.peak_tflops:
        return FP32_LANES_PER_SM * 2 * chip.sm_count * chip.clock_hz
    return chip.peak_flops(dtype)


def writeback_ns(read_bytes: float, chip: ChipSpec, p: ProfileParams) -> float:
    """Time to write back the dirty L2 lines the kernel's reads evict (profile ``l2_writeback``)."""
    if p.l2_writeback <= 0:
        return 0.0
    return p.l2_writeback * min(read_bytes, chip.l2_MiB * 2**20) / (chip.hbm_bytes_per_s * p.mem_fraction) * 1e9


def _pad(x: float, to: int) -> float:
    return math.ceil(x / to) * to


def _schedule(tiles: tuple[TileClass, ...], chip: ChipSpec, dtype: str, p: ProfileParams) -> PhaseTiming:
    """A launch of tiles on the SMs: compute is the tiles' work spread over the SMs, but never less
    than one tile's (a tile runs on one SM); memory is all their bytes at the achieved bandwidth
    (or what the launch's independent KV streams can pull, ``cta_bandwidth_GBps`` each);
    the launch takes smax(compute, memory). Every term grows with every tile added or enlarged."""
    sms = chip.sm_count
    f = clock_factor(chip, p)
    mma_rate = peak_flops(chip, dtype) / sms * p.mma_fraction * f / 1e9  # FLOP/ns per SM
    exp_rate = chip.sfu_ops_per_cycle_per_sm * chip.clock_ghz * f  # exp/ns per SM
    hbm = chip.hbm_bytes_per_s * p.mem_fraction / 1e9  # B/ns
    per_tile = [max(t.mma_flops / mma_rate, t.exp_ops / exp_rate) for t in tiles]
    compute = max(sum(t.count * c for t, c in zip(tiles, per_tile)) / sms, max(per_tile))
    nbytes = sum(t.count * t.hbm_bytes for t in tiles)
    loaders = sum(t.count * t.loaders for t in tiles)
    bw = min(hbm, loaders * p.cta_bandwidth_GBps) if p.cta_bandwidth_GBps > 0 else hbm
    memory = nbytes / bw
    blocks = sum(t.count for t in tiles)
    return PhaseTiming(smax(compute, memory, p.overlap_p), memory, compute, math.ceil(blocks / sms))


def _gemm(op: Gemm, chip: ChipSpec, prof: KernelProfile, p: ProfileParams) -> tuple[float, float, float, int]:
    rows = _pad(op.m, prof.pick_tile(op.m))
    compute = 2.0 * rows * op.n * op.k / (peak_flops(chip, op.dtype) * p.mma_fraction * clock_factor(chip, p)) * 1e9
    a_bytes = dtype_bytes(op.dtype) if op.dtype == "fp8" else ACT_BYTES  # fp8 GEMMs take fp8 operands
    nbytes = op.k * op.n * dtype_bytes(op.dtype) + op.m * op.k * a_bytes + op.m * op.n * ACT_BYTES
    memory = nbytes / (chip.hbm_bytes_per_s * p.mem_fraction) * 1e9 + writeback_ns(nbytes, chip, p)
    return smax(compute, memory, p.overlap_p), memory, compute, 1


def _attention(op: DecodeAttention | SharedAttention | GroupedSharedAttention, chip: ChipSpec,
               prof: KernelProfile, p: ProfileParams) -> tuple[float, float, float, int, int, float]:
    """(ns, memory ns, compute ns, waves, launches, bytes) of an attention op."""
    d, g = op.head_dim, op.group
    if isinstance(op, DecodeAttention):
        groups = [(g, op.batch * op.kv_heads, op.kv_tokens)]  # (rows, streams, tokens)
        requests = op.batch
    elif isinstance(op, SharedAttention):
        groups = [(op.batch * g, op.kv_heads, op.kv_tokens)]
        requests = op.batch
    else:
        groups = [(b * g, n * op.kv_heads, op.chunk_tokens) for b, n in op.chunk_batches]
        requests = op.requests
    tile = prof.pick_tile(max(r for r, _, _ in groups))
    shapes = []
    blocks = 0
    for rows_total, streams, tokens in groups:
        row_tiles = math.ceil(rows_total / tile)
        shapes.append((rows_total / row_tiles, row_tiles, streams, tokens))
        blocks += streams * row_tiles
    max_tokens = max(t for *_, t in shapes)
    if prof.split == "fa2":
        split = choose_splits(blocks, math.ceil(max_tokens / 128), chip.sm_count)
    elif prof.split == "programs":
        split = program_splits(blocks, max_tokens, prof.split_programs_per_sm, prof.split_min_tokens,
                               chip.sm_count)
    else:
        split = 1
    floor_ns = 0.0
    if prof.split == "programs" and split > 1 and max_tokens // split < 2 * prof.split_min_tokens:
        # The tokens bound the split (it doubled when tokens reached split x min_tokens): splitting
        # more makes this op faster than the largest op with one split fewer. Time must not fall as
        # tokens grow, so it is at least that op's time (its own floor applied the same way).
        fewer = split * prof.split_min_tokens - 1
        floor_ns = kernel_cost(_with_tokens(op, fewer), chip, prof).time_ns - p.fixed_ns
    kvb = dtype_bytes(op.dtype)
    out_b = STAT_BYTES if split > 1 else ACT_BYTES
    tiles = []
    partial_rows = 0.0
    for rows, row_tiles, streams, tokens in shapes:
        per_split = tokens / split
        reuse = max(1.0, min(row_tiles, chip.sm_count, p.kv_reuse))  # row tiles sharing one KV read (L2)
        tiles.append(TileClass(
            count=streams * row_tiles * split,
            mma_flops=4.0 * tile * per_split * d,
            exp_ops=tile * per_split,  # a tile's softmax runs over all its rows, padding included
            hbm_bytes=per_split * d * 2 * kvb / reuse + rows * d * ACT_BYTES + rows * (d * out_b + STAT_BYTES),
            loaders=1.0 / reuse,
        ))
        partial_rows += streams * row_tiles * split * rows
    dtype = op.dtype if op.dtype != "fp32" else "fp32"
    t = _schedule(tuple(tiles), chip, dtype, p)
    nbytes = sum(c.count * c.hbm_bytes for c in tiles)
    wb = writeback_ns(nbytes, chip, p)
    ns, mem, comp, waves, launches = t.ns + wb, t.mem_ns + wb, t.compute_ns, t.waves, 1
    ns = max(ns, floor_ns)
    if prof.combine and split > 1:
        combine = partial_rows * (d + 1) * STAT_BYTES + requests * op.q_heads * (d * ACT_BYTES + STAT_BYTES)
        c_ns = combine / (chip.hbm_bytes_per_s * p.mem_fraction) * 1e9
        ns += p.fixed_ns + c_ns
        mem += c_ns
        launches += 1
        nbytes += combine
    return ns, mem, comp, waves, launches, nbytes


def _with_tokens(op: DecodeAttention | SharedAttention | GroupedSharedAttention, tokens: int):
    """``op`` with each KV stream ``tokens`` long (the chunk length of a grouped op)."""
    if isinstance(op, GroupedSharedAttention):
        return dataclasses.replace(op, chunk_tokens=tokens)
    return dataclasses.replace(op, kv_tokens=tokens)


def resolve_profile(op: ComputeOp, profile: KernelProfile | str | None,
                    chip_profiles: dict[str, str] | None = None) -> KernelProfile:
    """The profile that prices ``op``: the one given (object or name), else the one the
    chip names for its family (``ChipSpec.kernel_profiles``), else the family's default."""
    family = {Gemm: "gemm", DecodeAttention: "decode_attention", SharedAttention: "shared_attention",
              GroupedSharedAttention: "shared_attention", LseMerge: "merge", Copy: "copy"}.get(type(op))
    if family is None:
        raise HardwareError(f"no cost model for op {type(op).__name__}")
    if profile is None:
        profile = default_profile_name(family, getattr(op, "dtype", ""))
        if chip_profiles:
            key = "gemm-fp8" if family == "gemm" and getattr(op, "dtype", "") == "fp8" else family
            profile = chip_profiles.get(key, profile)
    prof = load_profile(profile) if isinstance(profile, str) else profile
    if prof.family != family:
        raise HardwareError(f"kernel profile {prof.name!r} prices {prof.family} kernels, not {op.kind}")
    return prof


def roofline_ns(op: ComputeOp, chip: ChipSpec, dtype: str) -> float:
    """The roofline lower bound: max(work at peak FLOP/s, bytes at peak bandwidth)."""
    flops = op.flops / peak_flops(chip, dtype) if op.flops else 0.0
    return max(flops, op.min_bytes / chip.hbm_bytes_per_s) * 1e9


@lru_cache(maxsize=65536)
def kernel_cost(op: ComputeOp, chip: ChipSpec, profile: KernelProfile | str | None = None) -> Cost:
    """Price ``op`` on ``chip`` as ``profile``'s kernel (default: the family's default profile)."""
    prof = resolve_profile(op, profile, chip.kernel_profiles)
    p = prof.params(chip.name, chip.profile_key)
    launches, waves = 1, 1
    if isinstance(op, Gemm):
        work, mem, comp, waves = _gemm(op, chip, prof, p)
        nbytes, dtype = op.min_bytes, op.dtype
    elif isinstance(op, (DecodeAttention, SharedAttention, GroupedSharedAttention)):
        work, mem, comp, waves, launches, nbytes = _attention(op, chip, prof, p)
        dtype = op.dtype
    elif isinstance(op, LseMerge):
        nbytes, dtype = op.min_bytes, "bf16"
        mem = nbytes / (chip.hbm_bytes_per_s * p.mem_fraction) * 1e9 + writeback_ns(nbytes, chip, p)
        comp = op.partials * p.serial_latency_ns  # the loop's dependent loads, one after another
        work = smax(comp, mem, p.overlap_p)
    else:  # Copy
        nbytes, dtype = op.min_bytes, "bf16"
        mem = nbytes / (chip.hbm_bytes_per_s * p.mem_fraction) * 1e9 + writeback_ns(op.nbytes, chip, p)
        comp, work = 0.0, mem
    ns = p.fixed_ns + work
    cycles = math.ceil(ns * chip.clock_ghz)  # whole cycles of the quoted clock, then whole ns
    time_ns = math.ceil(cycles / chip.clock_ghz)
    return Cost(
        op=op.kind,
        device=chip.name,
        cycles=cycles,
        time_ns=time_ns,
        bytes=float(nbytes),
        flops=op.flops,
        bound="memory" if mem >= comp else "compute",
        roofline_ns=roofline_ns(op, chip, dtype),
        detail={
            "profile": prof.name,
            "clock": chip.clock,
            "fixed_ns": round(p.fixed_ns, 1),
            "waves": waves,
            "launches": launches,
            "memory_ns": round(mem, 1),
            "compute_ns": round(comp, 1),
        },
    )


__all__ = ["choose_splits", "clock_factor", "kernel_cost", "peak_flops", "program_splits", "resolve_profile",
           "roofline_ns", "smax"]
