"""hw: cost of an operation on a piece of hardware, in cycles. No clock, no SimPy."""

from hw.compute import kernel_cost
from hw.cost import Cost
from hw.errors import HardwareError
from hw.link import transfer_cost
from hw.ops import (
    DecodeAttention,
    Gemm,
    GroupedSharedAttention,
    LseMerge,
    SharedAttention,
    Transfer,
)
from hw.specs import ChipSpec, LinkSpec, available_chips, load_chip, load_link

__all__ = [
    "Cost", "HardwareError", "kernel_cost", "transfer_cost", "Gemm", "DecodeAttention",
    "SharedAttention", "GroupedSharedAttention", "LseMerge", "Transfer", "ChipSpec", "LinkSpec", "available_chips",
    "load_chip", "load_link",
]
