"""What every node shares: its identity and host on the fabric, busy-time bookkeeping, the
timeline hook, and ``stats()`` (each node reports its own part of the summary)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from simpy import Interrupt
from simpy.events import Event

from sim.engine.kernel import Engine


@dataclass
class NodeStats:
    """A node's contribution to the summary: its busy time and its own counters."""

    name: str
    busy_ns: int
    detail: dict[str, Any] = field(default_factory=dict)


class Node:
    """Identity (``<kind><index>``), host index on the fabric (-1: none), busy time, and
    the up/failed state of its process (subclasses fill ``_serve``)."""

    kind: ClassVar[str] = "node"

    def __init__(self, index: int, host: int, engine: Engine) -> None:
        self.index = index
        self.name = f"{self.kind}{index}"
        self.host = host
        self.engine = engine
        self.env = engine.env
        self.busy_ns = 0
        self.busy_until = 0
        self.tl: Any = None  # the timeline recorder (sim.engine.timeline), when one is attached
        self.up = True  # False while failed (faults)
        self._recovered: Event | None = None

    def run(self):  # noqa: ANN201 - a SimPy process
        """Serve while up; a failure interrupts the work and the node waits for recovery."""
        while True:
            try:
                if self.up:
                    yield from self._serve()
                else:  # failed: wait for recovery
                    self._recovered = self.env.event()
                    yield self._recovered
            except Interrupt:
                pass

    def _serve(self):  # noqa: ANN202 - the node's work loop (a SimPy process body)
        raise NotImplementedError

    def recover(self) -> None:
        """Back up after a failure: the waiting process resumes serving."""
        self.up = True
        ev = self._recovered
        if ev is not None and not ev.triggered:
            self._recovered = None
            ev.succeed()

    def _busy(self, ns: int) -> None:
        """The node works for ``ns`` from now."""
        self.busy_ns += ns
        self.busy_until = self.env.now + ns

    def busy_within(self, t_end: int) -> int:
        """Busy ns inside [0, t_end] (the op running at t_end counts up to t_end only)."""
        return self.busy_ns - max(0, self.busy_until - t_end)

    def stats(self, t_end: int) -> NodeStats:
        """This node's part of the summary at ``t_end``."""
        raise NotImplementedError


__all__ = ["Node", "NodeStats"]
