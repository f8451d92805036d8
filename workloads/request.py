"""The unit of work the simulator serves: one request, as the workload describes it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request: when it arrives and how much context and output it has.

    ``corpus`` names the shared corpus the request reads (0 when the workload has one);
    ``shared_tokens`` is how many of that corpus's tokens it reads, or None for the whole
    corpus as configured. Of its ``unique_tokens`` (its own context), ``prefill_tokens``
    are new prompt tokens to prefill and the rest is already resident (cached history or
    system prompt); None: the workload's ``prefill_tokens`` law decides (default: all new).
    Times are integer nanoseconds from the start of the run.
    """

    id: int
    arrival_ns: int
    unique_tokens: int
    output_tokens: int
    corpus: int = 0
    shared_tokens: int | None = None
    prefill_tokens: int | None = None
