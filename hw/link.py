"""Transfers over a link: latency plus serialisation at the link's bandwidth."""

from __future__ import annotations

import math

from hw.cost import Cost
from hw.ops import Transfer
from hw.specs import LinkSpec

LINK_CLOCK_GHZ = 1.0  # links are counted in 1 GHz cycles, i.e. nanoseconds


def serialization_ns(nbytes: float, link: LinkSpec) -> float:
    return nbytes / link.bytes_per_ns


def transfer_cost(op: Transfer, link: LinkSpec) -> Cost:
    """Time for ``op.nbytes`` to cross ``link``: one-way latency + bytes / bandwidth."""
    ser = serialization_ns(op.nbytes, link)
    ns = math.ceil(link.latency_ns + ser)
    return Cost(
        op="transfer",
        device=link.name,
        cycles=math.ceil(ns * LINK_CLOCK_GHZ),
        time_ns=ns,
        bytes=float(op.nbytes),
        flops=0.0,
        bound="bandwidth" if ser >= link.latency_ns else "latency",
        roofline_ns=link.latency_ns + ser,
        detail={"serialization_ns": ser, "latency_ns": link.latency_ns},
    )
