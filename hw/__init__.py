"""hw: cost of an operation on a piece of hardware: chip presets (datasheet numbers), kernel profiles
(what each kernel achieves of them), the cost model, links. No simulation clock, no SimPy."""

from hw.compute import kernel_cost
from hw.cost import Cost
from hw.errors import HardwareError
from hw.link import transfer_cost
from hw.ops import (
    Copy,
    DecodeAttention,
    Gemm,
    GroupedSharedAttention,
    LseMerge,
    SharedAttention,
    Transfer,
)
from hw.profiles import KernelProfile, available_profiles, load_profile
from hw.specs import ChipSpec, LinkSpec, available_chips, load_chip, load_link

__all__ = [
    "ChipSpec",
    "Copy",
    "Cost",
    "DecodeAttention",
    "Gemm",
    "GroupedSharedAttention",
    "HardwareError",
    "KernelProfile",
    "LinkSpec",
    "LseMerge",
    "SharedAttention",
    "Transfer",
    "available_chips",
    "available_profiles",
    "kernel_cost",
    "load_chip",
    "load_link",
    "load_profile",
    "transfer_cost",
]
