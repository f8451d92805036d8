"""What travels between unique and shared nodes: query batches and prefill jobs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from simpy.events import NORMAL, Event


class RoundTrip:
    """The replies of one round trip, collected without an event per reply: each sender
    reports when its partials will arrive (``arrived``), and when the last has reported,
    ``event`` fires once, ``then_ns`` after the latest arrival (not before ``not_before``:
    the unique node's own overlapped work). ``then_ns``: work its waiter does as soon as
    the partials are back, before anything else can happen to it (0: none), so that
    work costs no event of its own. Runs without faults only (a lost reply needs an
    event)."""

    __slots__ = ("env", "event", "left", "latest", "not_before", "then_ns")

    def __init__(self, env, event: Event, left: int, not_before: int,  # noqa: ANN001
                 then_ns: int = 0) -> None:
        self.env = env
        self.event = event
        self.left = left
        self.latest = not_before
        self.not_before = not_before
        self.then_ns = then_ns

    # a sender that gave up on it (faults) tests this; a round trip is never given up
    triggered = False

    def arrived(self, t_ns: int) -> None:
        """One reply will be back at ``t_ns``."""
        if t_ns > self.latest:
            self.latest = t_ns
        self.left -= 1
        if not self.left:
            ev = self.event
            ev._ok = True
            ev._value = None
            self.env.schedule(ev, NORMAL, self.latest + self.then_ns - self.env.now)


@dataclass(slots=True, eq=False)
class QueryMessage:
    """One unique node's batch of queries for one layer (or one folded step) to one shared
    node: per local chunk, how many queries selected it.

    ``rounds`` is how many layers the message stands for (1 at layer granularity, the
    model's layers at step granularity: costs and bytes scale by it). ``reply`` fires when
    the partials are back at the unique node. Times are ns; -1 means not yet.
    """

    src_host: int
    layer: int
    remaining: np.ndarray  # int64[local chunks]: queries per chunk not yet computed
    requests: int
    rounds: int
    reply: Event | RoundTrip
    t_sent: int
    max_count: int = 0  # remaining.max(), kept to spare a reduction per look
    pairs: int = 0  # remaining.sum()
    t_arrive: int = -1
    t_first_launch: int = -1
    t_done: int = -1
    t_back: int = -1
    compute_ns: int = 0
    launches: int = 0
    owner: int = -1  # faults: the shared node whose chunks these are (-1: the receiver)
    lost: str | None = None  # faults: why it could not be served
    seq: int = 0  # send order on the fabric (ties of arrival time go in this order)


@dataclass(slots=True, eq=False)
class PrefillJob:
    """The shared-corpus part of a group of prompts' prefill, for one shared node."""

    src_host: int
    cost_ns: int
    partial_bytes: int
    rounds: int
    reply: Event | RoundTrip
    t_sent: int
    t_arrive: int = -1
    t_start: int = -1
    t_done: int = -1
    t_back: int = -1
    query_bytes: int = 0  # faults: what a re-send carries
    owner: int = -1
    lost: str | None = None
    seq: int = 0  # send order on the fabric (ties of arrival time go in this order)


__all__ = ["PrefillJob", "QueryMessage", "RoundTrip"]
