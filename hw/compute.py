"""Tile-level cycle model of GEMM and attention kernels on one chip.

Each kernel is cut into thread-block *tiles*; tiles are dealt to the SMs in *waves*. A wave
lasts as long as its slowest resource: the tensor cores (or the exp units) of one SM, or HBM
(bounded both by the chip's bandwidth and by how fast the active SMs can pull), plus the
pipeline fill of its first load. Every term is at least the roofline's share of the work, so
the model can never beat the roofline; it approaches it (divided by the sustained
efficiencies) as shapes grow and waves fill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from hw.cost import Cost
from hw.errors import HardwareError
from hw.ops import (
    ACT_BYTES,
    STAT_BYTES,
    ComputeOp,
    DecodeAttention,
    Gemm,
    GroupedSharedAttention,
    LseMerge,
    SharedAttention,
)
from hw.specs import ChipSpec, dtype_bytes

STREAM_TILE_BYTES = 32 * 1024  # bytes one block moves in an elementwise/reduction phase


@dataclass(frozen=True)
class TileClass:
    """``count`` identical tiles: per-tile tensor work, exp work and attributable HBM bytes."""

    count: int
    mma_flops: float  # padded to the tensor-core instruction shape
    exp_ops: float
    hbm_bytes: float  # after L2 reuse between tiles of the same wave


@dataclass(frozen=True)
class Phase:
    """A group of tiles that run to completion before the next phase starts."""

    name: str
    tiles: tuple[TileClass, ...]
    new_launch: bool = True


@dataclass(frozen=True)
class PhaseTiming:
    cycles: float
    mem_cycles: float
    compute_cycles: float
    waves: int


def choose_splits(blocks: int, max_split: int, sms: int) -> int:
    """Flash-decoding's split heuristic: the fewest KV splits whose waves are >= 85% full.

    ``blocks`` thread blocks exist before splitting; splitting the KV ``s`` ways gives
    ``blocks * s`` blocks. Mirrors FlashAttention-2's ``num_splits_heuristic``.
    """
    if blocks >= 0.8 * sms:
        return 1
    limit = max(1, min(max_split, 128, sms))
    effs = []
    for s in range(1, limit + 1):
        waves = blocks * s / sms
        effs.append(waves / math.ceil(waves))
    best = max(effs)
    return next(s for s, e in enumerate(effs, start=1) if e >= 0.85 * best)


def _pad(x: float, to: int) -> float:
    return math.ceil(x / to) * to


def _schedule(phase: Phase, chip: ChipSpec, dtype: str) -> PhaseTiming:
    """Deal the phase's tiles to SMs in waves; sum each wave's limiting time."""
    sms = chip.sm_count
    mma_rate = chip.flops_per_cycle_per_sm(dtype) * chip.mma_efficiency
    hbm_rate = chip.hbm_bytes_per_cycle * chip.mem_efficiency
    sm_rate = min(chip.sm_bytes_per_cycle, hbm_rate)
    fill = chip.mem_latency_ns * chip.clock_ghz

    total = mem_total = comp_total = 0.0
    waves = 0

    def wave(n_active: int, per_tile: TileClass, extra: list[tuple[int, TileClass]]) -> None:
        nonlocal total, mem_total, comp_total, waves
        members = [(n_active, per_tile), *extra]
        compute = max(max(t.mma_flops / mma_rate, t.exp_ops / chip.sfu_ops_per_cycle_per_sm)
                      for _, t in members)
        active = sum(n for n, _ in members)
        nbytes = sum(n * t.hbm_bytes for n, t in members)
        memory = nbytes / min(hbm_rate, active * sm_rate)
        total += fill + max(compute, memory)
        mem_total += memory
        comp_total += compute
        waves += 1

    partial: list[tuple[int, TileClass]] = []  # tiles of a not yet full wave
    for cls in phase.tiles:
        left = cls.count
        if partial:
            room = sms - sum(n for n, _ in partial)
            take = min(room, left)
            partial.append((take, cls))
            left -= take
            if sum(n for n, _ in partial) == sms:
                first, *rest = partial
                wave(first[0], first[1], rest)
                partial = []
        if left <= 0:
            continue
        full, rem = divmod(left, sms)
        if full:
            before = (total, mem_total, comp_total, waves)
            wave(sms, cls, [])
            one = (total - before[0], mem_total - before[1], comp_total - before[2])
            total += one[0] * (full - 1)
            mem_total += one[1] * (full - 1)
            comp_total += one[2] * (full - 1)
            waves += full - 1
        if rem:
            partial = [(rem, cls)]
    if partial:
        first, *rest = partial
        wave(first[0], first[1], rest)
    return PhaseTiming(total, mem_total, comp_total, waves)


def _stream_phase(name: str, nbytes: float, chip: ChipSpec, new_launch: bool) -> Phase:
    """An elementwise / reduction phase: pure streaming of ``nbytes`` through HBM."""
    tiles = max(1, math.ceil(nbytes / STREAM_TILE_BYTES))
    return Phase(name, (TileClass(tiles, 0.0, 0.0, nbytes / tiles),), new_launch)


def _gemm_phases(op: Gemm, chip: ChipSpec) -> list[Phase]:
    wb = dtype_bytes(op.dtype)
    tiles_m = math.ceil(op.m / chip.gemm_tile_m)
    tiles_n = math.ceil(op.n / chip.gemm_tile_n)
    tiles = tiles_m * tiles_n
    # split-K so a skinny GEMM still uses every SM's bandwidth
    split = choose_splits(tiles, math.ceil(op.k / 256), chip.sm_count)
    k_per = op.k / split
    rows, cols = op.m / tiles_m, op.n / tiles_n
    mma = 2.0 * _pad(rows, chip.mma_min_m) * _pad(cols, 8) * k_per
    # L2 reuse inside a wave: its tiles form an r x c block sharing A rows and B columns.
    w = min(chip.sm_count, tiles * split)
    r = min(tiles_m, math.ceil(math.sqrt(w)))
    c = min(tiles_n, math.ceil(w / r))
    out_b = STAT_BYTES if split > 1 else ACT_BYTES
    wave_bytes = (w / (r * c)) * (r * rows * k_per * ACT_BYTES + c * cols * k_per * wb)
    per_tile = wave_bytes / w + rows * cols * out_b
    phases = [Phase("gemm", (TileClass(tiles * split, mma, 0.0, per_tile),))]
    if split > 1:
        reduce_bytes = op.m * op.n * (split * STAT_BYTES + ACT_BYTES)
        phases.append(_stream_phase("split-k reduce", reduce_bytes, chip, new_launch=False))
    return phases


def _attention_phases(
    op: DecodeAttention | SharedAttention | GroupedSharedAttention, chip: ChipSpec
) -> list[Phase]:
    """Flash-attention tiling: (KV stream, row tile, KV split) blocks, then a split combine.

    A *stream* is one KV head's keys and values that a set of query rows attends to: one
    request's private KV (decode), the one shared KV (shared), or one routed chunk
    (grouped). Row tiles of one stream read its KV once through L2.
    """
    d = op.head_dim
    g = op.group
    if isinstance(op, DecodeAttention):
        groups = [(g, op.batch * op.kv_heads, op.kv_tokens)]  # (rows, streams, tokens)
        requests = op.batch
    elif isinstance(op, SharedAttention):
        groups = [(op.batch * g, op.kv_heads, op.kv_tokens)]
        requests = op.batch
    else:
        groups = [(b * g, n * op.kv_heads, op.chunk_tokens) for b, n in op.chunk_batches]
        requests = op.requests
    shapes = []
    blocks = 0
    for rows_total, streams, tokens in groups:
        row_tiles = math.ceil(rows_total / chip.attn_tile_m)
        shapes.append((rows_total / row_tiles, row_tiles, streams, tokens))
        blocks += streams * row_tiles
    max_tokens = max(t for *_, t in shapes)
    split = choose_splits(blocks, math.ceil(max_tokens / chip.attn_block_n), chip.sm_count)
    kvb = dtype_bytes(op.dtype)
    out_b = STAT_BYTES if split > 1 else ACT_BYTES
    tiles = []
    partial_rows = 0.0
    for rows, row_tiles, streams, tokens in shapes:
        per_split = tokens / split
        reuse = min(row_tiles, chip.sm_count)
        tiles.append(TileClass(
            count=streams * row_tiles * split,
            mma_flops=4.0 * _pad(rows, chip.mma_min_m) * per_split * d,
            exp_ops=rows * per_split,
            hbm_bytes=per_split * d * 2 * kvb / reuse + rows * d * ACT_BYTES
            + rows * (d * out_b + STAT_BYTES),
        ))
        partial_rows += streams * row_tiles * split * rows
    phases = [Phase("attention", tuple(tiles))]
    if split > 1 or isinstance(op, GroupedSharedAttention):
        combine = partial_rows * (d + 1) * STAT_BYTES + requests * op.q_heads * (
            d * ACT_BYTES + STAT_BYTES
        )
        phases.append(_stream_phase("split combine", combine, chip, new_launch=True))
    return phases


def _merge_phases(op: LseMerge, chip: ChipSpec) -> list[Phase]:
    return [_stream_phase("merge", op.min_bytes, chip, new_launch=True)]


def _phases(op: ComputeOp, chip: ChipSpec) -> tuple[list[Phase], str]:
    if isinstance(op, Gemm):
        return _gemm_phases(op, chip), op.dtype
    if isinstance(op, (DecodeAttention, SharedAttention, GroupedSharedAttention)):
        return _attention_phases(op, chip), op.dtype
    if isinstance(op, LseMerge):
        return _merge_phases(op, chip), "bf16"
    raise HardwareError(f"no cycle model for op {type(op).__name__}")


def roofline_ns(op: ComputeOp, chip: ChipSpec, dtype: str) -> float:
    """The roofline lower bound: max(work at peak FLOP/s, bytes at peak bandwidth)."""
    return max(op.flops / chip.peak_flops(dtype), op.min_bytes / chip.hbm_bytes_per_s) * 1e9


@lru_cache(maxsize=65536)
def kernel_cost(op: ComputeOp, chip: ChipSpec) -> Cost:
    """Price ``op`` on ``chip`` with the tile model. Cached per (shape, chip)."""
    phases, dtype = _phases(op, chip)
    cycles = mem = comp = 0.0
    waves = launches = 0
    moved = 0.0
    for ph in phases:
        t = _schedule(ph, chip, dtype)
        cycles += t.cycles
        mem += t.mem_cycles
        comp += t.compute_cycles
        waves += t.waves
        moved += sum(c.count * c.hbm_bytes for c in ph.tiles)
        if ph.new_launch:
            launches += 1
    cycles += launches * chip.launch_overhead_ns * chip.clock_ghz
    n_cycles = math.ceil(cycles)
    return Cost(
        op=op.kind,
        device=chip.name,
        cycles=n_cycles,
        time_ns=math.ceil(n_cycles / chip.clock_ghz),
        bytes=moved,
        flops=op.flops,
        bound="memory" if mem >= comp else "compute",
        roofline_ns=roofline_ns(op, chip, dtype),
        detail={
            "waves": waves,
            "launches": launches,
            "memory_cycles": round(mem, 1),
            "compute_cycles": round(comp, 1),
            "phases": [p.name for p in phases],
            "tiles": sum(c.count for p in phases for c in p.tiles),
        },
    )
