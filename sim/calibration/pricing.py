"""Price hw ops the way the reference kernels run them: hw's tile model, minus phases they do not launch.

``hw.compute.kernel_cost`` prices a flash-decoding or grouped shared-attention op with its own
split-combine launch; the reference Triton kernels leave every split's partial to the merge kernel
instead, so calibration prices only the phases that were timed. Everything else (waves, fills,
bandwidth, launch overhead) is hw's model unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

from hw.compute import _phases, _schedule  # the tile model's own phase list and wave scheduler
from hw.ops import ComputeOp
from hw.specs import ChipSpec

COMBINE_PHASE = "split combine"  # hw.compute's separate combine launch after split KV
FP32_LANES_PER_SM = 128  # FP32 FMA lanes per SM, Volta through Blackwell (CUDA programming guide)


def simt_fp32_tflops(chip: ChipSpec) -> float:
    """Dense FP32 (non-tensor-core) peak: lanes x 2 FLOP per FMA x SMs x clock, in TFLOP/s."""
    return FP32_LANES_PER_SM * 2 * chip.sm_count * chip.clock_ghz / 1e3


def pricing_chip(chip: ChipSpec) -> ChipSpec:
    """``chip`` with an fp32 peak when its preset has none (the router's fp32 scores, fp32 traces).

    Presets list tensor-core peaks only; the reference runs fp32 dots on the FMA pipes (cuBLAS
    ``ffma`` GEMMs, Triton ``input_precision='ieee'``), so fp32 gets the SIMT peak. The added
    entry is for pricing only and never written to a calibrated preset.
    """
    if "fp32" in chip.peak_tflops:
        return chip
    return dataclasses.replace(chip, peak_tflops={**chip.peak_tflops, "fp32": simt_fp32_tflops(chip)})


@lru_cache(maxsize=1 << 16)
def op_ns(op: ComputeOp, chip: ChipSpec, skip_combine: bool = False) -> float:
    """Modelled time of ``op`` on ``chip`` in ns; ``skip_combine`` drops hw's split-combine launch.

    Same arithmetic as ``hw.compute.kernel_cost`` (phase cycles plus one launch overhead per
    launching phase, rounded up to whole cycles and ns), over the phases kept.
    """
    phases, dtype = _phases(op, chip)
    if skip_combine:
        phases = [p for p in phases if p.name != COMBINE_PHASE]
    cycles = 0.0
    launches = 0
    for phase in phases:
        cycles += _schedule(phase, chip, dtype).cycles
        launches += int(phase.new_launch)
    cycles += launches * chip.launch_overhead_ns * chip.clock_ghz
    return float(math.ceil(math.ceil(cycles) / chip.clock_ghz))


def glue_ns(chip: ChipSpec) -> float:
    """One tiny torch launch (cast, fill, index, small sort pass): what hw charges a kernel that moves
    almost nothing, one launch overhead plus one memory pipeline fill."""
    return chip.launch_overhead_ns + chip.mem_latency_ns
