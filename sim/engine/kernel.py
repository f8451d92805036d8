"""The simulation kernel: a SimPy environment on an integer-nanosecond clock, plus seeded,
independent random streams, one per purpose.

Time is an ``int`` count of nanoseconds everywhere (hardware prices are already whole ns);
nothing in the model ever schedules a float delay. Ordering of simultaneous events is
SimPy's (time, priority, insertion id): deterministic, FIFO among equals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import simpy
from simpy.events import NORMAL, Event

# Random streams, in a fixed order: stream i is child i of SeedSequence(seed).spawn(...).
# Append new purposes at the END so that existing streams keep their numbers.
STREAMS: tuple[str, ...] = ("arrivals", "sizes", "routing", "service", "dispatch", "prefill")


LOST = object()  # faults: the value of a reply event whose message could not be served


@dataclass
class RngStreams:
    """Named, statistically independent numpy generators derived from one seed."""

    seed: int
    _gens: dict[str, np.random.Generator] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        children = np.random.SeedSequence(self.seed).spawn(len(STREAMS))
        self._gens = {name: np.random.default_rng(ss) for name, ss in zip(STREAMS, children)}

    def __getitem__(self, name: str) -> np.random.Generator:
        try:
            return self._gens[name]
        except KeyError:
            raise KeyError(f"no random stream {name!r}; streams: {', '.join(STREAMS)}") from None

    def derived_seeds(self) -> dict[str, list[int]]:
        """The spawn key of every stream (for the record: which stream got which seed)."""
        children = np.random.SeedSequence(self.seed).spawn(len(STREAMS))
        return {name: [self.seed, *ss.spawn_key] for name, ss in zip(STREAMS, children)}


class Engine:
    """A SimPy environment with an integer clock and the run's random streams."""

    def __init__(self, seed: int) -> None:
        self.env = simpy.Environment(initial_time=0)
        self.rng = RngStreams(seed)

    @property
    def now(self) -> int:
        return self.env.now  # type: ignore[return-value]

    def fire_after(self, event: Event, delay_ns: int, value: object = None) -> Event:
        """Trigger ``event`` successfully ``delay_ns`` from now.

        NOTE: for performance: this is what ``Timeout`` does internally, applied to an
        event that someone is already waiting on, so a message in flight costs one event
        instead of a timeout plus a callback.
        """
        assert isinstance(delay_ns, int) and delay_ns >= 0, delay_ns
        event._ok = True
        event._value = value
        self.env.schedule(event, NORMAL, delay_ns)
        return event

    def call_after(self, delay_ns: int, fn, *args) -> None:
        """Run ``fn(*args)`` ``delay_ns`` from now (one scheduled event, no process)."""
        assert isinstance(delay_ns, int) and delay_ns >= 0, delay_ns
        ev = self.env.timeout(delay_ns)
        ev.callbacks.append(lambda _e: fn(*args))

    @property
    def events_scheduled(self) -> int:
        """Events scheduled so far (SimPy's insertion counter): the work the kernel did.

        NOTE: reads SimPy's private ``_eid`` counter (itertools.count); cheaper than
        counting in an overridden ``step``. Every scheduled event of a finished run was
        processed, except those still queued past the stop time.
        """
        eid = getattr(self.env, "_eid", None)
        if eid is None:
            return 0
        n = next(eid)
        return n - len(getattr(self.env, "_queue", ()))  # minus the ones still queued


def ceil_ns(x: float) -> int:
    """A non-negative duration in whole nanoseconds, rounded up (never a float delay)."""
    i = int(x)
    return i if i >= x else i + 1


__all__ = ["LOST", "STREAMS", "Engine", "RngStreams", "ceil_ns"]
