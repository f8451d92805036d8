"""Progress of a study on stderr: runs done / running / failed / queued, and an estimate of
the time left.

On a terminal the state is one line rewritten in place (at most :data:`TTY_INTERVAL_S`
apart). Anywhere else (a log file, CI) it is one line per change of state, at most one
every ``min_interval_s`` (changes in between are folded into the next line), and always a
last line when the study ends. A failed run is always reported on a line of its own, with
its error.

*Running* is the runs holding a worker: the pools take runs in the order they were
submitted, one per worker slot, so the first ``slots`` runs not yet finished are the ones
running. The estimate of the time left is::

    left = (queued x mean + sum over running runs of max(mean - their time so far, 0))
           / min(slots, queued + running)

with ``mean`` the mean wall time of the runs finished so far in this session (runs read
from the cache take no time and do not count). Before the first run finishes there is no
estimate. Load-sweep points are usually shorter than main runs, so early estimates lean
long.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from sim.units import format_duration

TTY_INTERVAL_S = 0.5
LOG_INTERVAL_S = 5.0


class StudyProgress:
    """Counts a study's runs as they are submitted and finish, and says so on ``stream``.

    ``total``: runs in the study; ``cached``: of which already finished (read from the
    cache); ``slots``: runs that can execute at once (pool processes, Dask worker
    threads). ``clock`` and ``tty`` are for tests.
    """

    def __init__(self, total: int, cached: int, slots: int, *, enabled: bool = True,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 tty: bool | None = None, min_interval_s: float = LOG_INTERVAL_S,
                 name: str = "study") -> None:
        self.total = total
        self.cached = cached
        self.slots = max(1, slots)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.tty = self._isatty() if tty is None else tty
        self.min_interval_s = TTY_INTERVAL_S if self.tty else min_interval_s
        self.name = name
        self.t0 = clock()
        self.done = 0  # finished in this session (ok or failed)
        self.failed = 0
        self.walls: list[float] = []
        self.outstanding: list[str] = []  # submitted, not finished, in submission order
        self.started_at: dict[str, float] = {}
        self.last: str = ""
        self._last_line_t: float | None = None
        self._shown: tuple[int, int, int] | None = None
        self._dirty = False
        self._width = 0

    def _isatty(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    # -- events -----------------------------------------------------------------------
    def set_slots(self, slots: int) -> None:
        """The number of runs that can execute at once changed (Dask workers came or went)."""
        self.slots = max(1, slots)
        self._mark_running(self.clock())

    def submitted(self, job_ids: list[str]) -> None:
        """These runs were handed to the pool, in this order."""
        self.outstanding.extend(job_ids)
        self._mark_running(self.clock())
        self._changed()

    def finished(self, job_id: str, description: str, wall_s: float,
                 error: str | None = None) -> None:
        now = self.clock()
        if job_id in self.outstanding:
            self.outstanding.remove(job_id)
        self.started_at.pop(job_id, None)
        self._mark_running(now)
        self.done += 1
        self.walls.append(wall_s)
        if error is not None:
            self.failed += 1
            self._print_line(f"{self.name}: FAILED {description}: {error}", permanent=True)
        self.last = f"{description} {wall_s:.1f}s" + (" (failed)" if error else "")
        self._changed()

    def tick(self) -> None:
        """Called while waiting: prints a folded change once its interval has passed, and
        on a terminal keeps the estimate moving."""
        now = self.clock()
        if self._dirty or (self.tty and self._due(now)):
            self._maybe_print(now)

    def close(self) -> None:
        """The last line: the final state, always."""
        if not self.enabled:
            return
        self._print_line(self.state_line(self.clock()), permanent=True)

    # -- state ------------------------------------------------------------------------
    @property
    def running(self) -> int:
        return min(len(self.outstanding), self.slots)

    @property
    def queued(self) -> int:
        return self.total - self.cached - self.done - self.running

    def _mark_running(self, now: float) -> None:
        for job_id in self.outstanding[: self.slots]:
            self.started_at.setdefault(job_id, now)

    def seconds_left(self, now: float) -> float | None:
        """The estimate of the time left (see the module's doc), or None before any run of
        this session has finished."""
        if not self.walls:
            return None
        mean = sum(self.walls) / len(self.walls)
        running_left = sum(max(mean - (now - self.started_at.get(j, now)), 0.0)
                           for j in self.outstanding[: self.slots])
        queued = max(self.queued, 0)
        busy = min(self.slots, queued + self.running)
        if busy == 0:
            return 0.0
        return (queued * mean + running_left) / busy

    def state_line(self, now: float) -> str:
        finished = self.cached + self.done
        parts = [f"{finished}/{self.total} runs done"]
        if self.cached:
            parts[0] += f" ({self.cached} from cache)"
        parts.append(f"{self.running} running")
        parts.append(f"{self.failed} failed")
        parts.append(f"{max(self.queued, 0)} queued")
        text = f"{self.name}: " + ", ".join(parts) + f"; {format_duration(now - self.t0)} elapsed"
        left = self.seconds_left(now)
        if finished < self.total:
            text += ", time left unknown" if left is None else f", ~{format_duration(left)} left"
        if self.last:
            text += f"; last: {self.last}"
        return text

    # -- printing ---------------------------------------------------------------------
    def _due(self, now: float) -> bool:
        return self._last_line_t is None or now - self._last_line_t >= self.min_interval_s

    def _changed(self) -> None:
        self._dirty = True
        self._maybe_print(self.clock())

    def _maybe_print(self, now: float) -> None:
        if not self.enabled or not self._due(now):
            return
        counts = (self.done, self.running, self.failed)
        if not self.tty and counts == self._shown:
            self._dirty = False
            return
        self._shown = counts
        self._dirty = False
        self._last_line_t = now
        self._print_line(self.state_line(now), permanent=False)

    def _print_line(self, text: str, permanent: bool) -> None:
        if not self.enabled:
            return
        if self.tty:
            pad = " " * max(self._width - len(text), 0)
            end = "\n" if permanent else ""
            self.stream.write(f"\r{text}{pad}{end}")
            self._width = 0 if permanent else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


__all__ = ["LOG_INTERVAL_S", "StudyProgress", "format_duration"]
