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
    "ChipSpec",
    "Cost",
    "DecodeAttention",
    "Gemm",
    "GroupedSharedAttention",
    "HardwareError",
    "LinkSpec",
    "LseMerge",
    "SharedAttention",
    "Transfer",
    "available_chips",
    "kernel_cost",
    "load_chip",
    "load_link",
    "transfer_cost",
]
