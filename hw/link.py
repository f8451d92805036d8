"""Transfers over a link, priced as a collective library achieves them.

One message of ``nbytes`` costs the library's fixed per-message cost, the link's one-way latency
and the bytes at the achieved bandwidth: ``fixed_ns + latency_ns + nbytes / bandwidth``
(Hockney's model). The fixed cost and the achieved bandwidth are fitted to NCCL send/recv
timings (hw/presets/links.yaml says which); the time grows with the message size.
"""

from __future__ import annotations

import math

from hw.cost import Cost
from hw.ops import Transfer
from hw.specs import LinkSpec

LINK_CLOCK_GHZ = 1.0  # links are counted in 1 GHz cycles, i.e. nanoseconds


def serialization_ns(nbytes: float, link: LinkSpec) -> float:
    """Time for ``nbytes`` at the link's achieved bandwidth (ns)."""
    return nbytes / link.bytes_per_ns


def transfer_cost(op: Transfer, link: LinkSpec) -> Cost:
    """Time for ``op.nbytes`` to cross ``link``: fixed cost + one-way latency + bytes / bandwidth."""
    ser = serialization_ns(op.nbytes, link)
    fixed = link.fixed_ns + link.latency_ns
    ns = math.ceil(fixed + ser)
    return Cost(
        op="transfer",
        device=link.name,
        cycles=math.ceil(ns * LINK_CLOCK_GHZ),
        time_ns=ns,
        bytes=float(op.nbytes),
        flops=0.0,
        bound="bandwidth" if ser >= fixed else "latency",
        roofline_ns=link.latency_ns + (op.nbytes / link.spec_bandwidth_GBps if link.spec_bandwidth_GBps else ser),
        detail={"serialization_ns": ser, "latency_ns": link.latency_ns, "fixed_ns": link.fixed_ns},
    )
