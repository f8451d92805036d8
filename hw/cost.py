"""The cost record every hardware model returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cost:
    """Modeled cost of one op on one chip (or link).

    ``bound`` says which resource dominated the busy time: 'memory' or 'compute' for kernels,
    'bandwidth' or 'latency' for transfers. ``roofline_ns`` is the lower bound the model
    never beats.
    """

    op: str
    device: str
    cycles: int
    time_ns: int
    bytes: float
    flops: float
    bound: str
    roofline_ns: float
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
