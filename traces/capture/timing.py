"""CUDA-event timing of the MoSKA kernels of one layer-step, without host synchronisation in between.

Before a layer's first kernel the timer queues a GPU sleep (torch.cuda._sleep) so that the launches
that follow are already queued when the GPU reaches them: the events then bracket GPU execution
only, not Python launch overhead. calibrate() sizes the sleep from the measured host enqueue time;
each layer also checks (Event.query, non-blocking) that the GPU was still asleep when the host had
queued its last launch. Times are resolved after the step (one synchronize).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


@dataclass
class LayerTiming:
    """The event pairs of one layer-step; resolve() after torch.cuda.synchronize()."""

    events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = field(default_factory=list)
    # False when the GPU finished the queued sleep before the host had queued every launch of the
    # layer: the GPU may then have idled inside a region, inflating its time.
    gap_free: bool = True
    host_ns: float = 0.0  # host time from queuing the sleep to queuing the last event

    def resolve(self) -> dict[str, float]:
        """{region name: GPU nanoseconds between its start and end events}."""
        out: dict[str, float] = {}
        for name, start, end in self.events:
            out[name] = out.get(name, 0.0) + start.elapsed_time(end) * 1e6
        return out


class NullTimer:
    """Timer that measures nothing (CPU runs, or timing off)."""

    def begin_layer(self) -> None:
        return None

    @contextmanager
    def region(self, name: str) -> Iterator[None]:
        yield

    def end_layer(self) -> LayerTiming:
        return LayerTiming()


def sleep_cycles_per_ns(cycles: int = 1_000_000) -> float:
    """GPU clock cycles that torch.cuda._sleep spins per nanosecond (measured with events)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    torch.cuda._sleep(cycles // 10)  # wake the clocks up
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    torch.cuda.synchronize()
    return cycles / max(1.0, start.elapsed_time(end) * 1e6)


class CudaEventTimer:
    """Brackets each named region with CUDA events on the current stream."""

    def __init__(self, sleep_cycles: int = 4_000_000) -> None:
        self.sleep_cycles = int(sleep_cycles)
        self._current = LayerTiming()
        self._after_sleep: torch.cuda.Event | None = None
        self._t0 = 0.0

    def calibrate(
        self, layer_call: Callable[[], object], safety: float = 4.0, repeats: int = 3
    ) -> float:
        """Time the host side of ``layer_call`` (one layer's MoSKA attention, kernels already compiled)
        and raise sleep_cycles to ``safety`` times that; returns the measured host seconds (max)."""
        host = 0.0
        for _ in range(repeats):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            layer_call()
            host = max(host, time.perf_counter() - t0)
        torch.cuda.synchronize()
        need = int(safety * host * 1e9 * sleep_cycles_per_ns())
        self.sleep_cycles = max(self.sleep_cycles, need)
        return host

    def begin_layer(self) -> None:
        """Queue GPU busy-work so this layer's launches are queued before the GPU starts them."""
        self._current = LayerTiming()
        self._after_sleep = None
        self._t0 = time.perf_counter()
        if self.sleep_cycles > 0:
            torch.cuda._sleep(self.sleep_cycles)
            self._after_sleep = torch.cuda.Event()
            self._after_sleep.record()

    @contextmanager
    def region(self, name: str) -> Iterator[None]:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self._current.events.append((name, start, end))

    def end_layer(self) -> LayerTiming:
        """Close the layer; checks without blocking whether the GPU already left the sleep."""
        done, self._current = self._current, LayerTiming()
        done.host_ns = (time.perf_counter() - self._t0) * 1e9
        done.gap_free = self._after_sleep is not None and not self._after_sleep.query()
        return done
