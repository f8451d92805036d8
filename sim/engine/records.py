"""What a run records as it goes: per-request records, tokens over time, the number in
system (for Little's law), the time breakdown by phase, and sampled queue lengths.

Recording is cheap and bounded: requests live in preallocated numpy columns; tokens are
appended once per step; queue lengths are sampled on a regular grid that halves itself
whenever it would exceed ``MAX_SAMPLES`` points (so any run has at most that many).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

import numpy as np

MAX_SAMPLES = 2000


# The per-request row a unique node keeps while a request runs (RequestLog.rows):
# id, tokens generated so far (1 after prefill), output tokens, unique tokens, shared
# tokens, corpus, KV bytes reserved.
COLUMNS: tuple[str, ...] = ("id", "done", "out", "uctx", "sctx", "corpus", "kv")


class RequestLog:
    """One row per planned request, as numpy columns; -1 marks a time not reached."""

    PLANNED, WAITING, RUNNING, COMPLETED, REJECTED, FAILED = 0, 1, 2, 3, 4, 5
    STATUS_NAMES = ("planned", "waiting", "running", "completed", "rejected", "failed")

    def __init__(self, n: int) -> None:
        self.n = n
        neg = lambda: np.full(n, -1, dtype=np.int64)
        self.arrival_ns = neg()
        self.admit_ns = neg()
        self.first_ns = neg()
        self.done_ns = neg()
        self.node = np.full(n, -1, dtype=np.int32)
        self.unique_tokens = np.zeros(n, dtype=np.int64)
        self.output_tokens = np.zeros(n, dtype=np.int64)
        self.shared_tokens = np.zeros(n, dtype=np.int64)
        self.prefill_tokens = np.zeros(n, dtype=np.int64)  # new prompt tokens of unique
        self.prefill_node = np.full(n, -1, dtype=np.int32)  # dedicated prefill node, if any
        self.corpus = np.zeros(n, dtype=np.int64)
        self.kv_bytes = np.zeros(n, dtype=np.int64)
        self.generated = np.zeros(n, dtype=np.int64)
        self.status = np.zeros(n, dtype=np.int8)
        self.reject_reasons: dict[str, int] = {}
        self.fail_reasons: dict[str, int] = {}
        # faults: a re-admitted request's context to prefill again (-1: none), the tokens
        # it had made when its KV was lost, and its retries after timeouts
        self.redo_prefill = neg()
        self.resume_done = np.zeros(n, dtype=np.int64)
        self.retries = np.zeros(n, dtype=np.int64)
        self.rows = np.zeros((n, len(COLUMNS)), dtype=np.int64)

    def freeze_rows(self) -> None:
        """Build ``rows`` (the running-state row of each request) from the columns."""
        r = self.rows
        r[:, 0] = np.arange(self.n)
        r[:, 1] = 1
        r[:, 2] = self.output_tokens
        r[:, 3] = self.unique_tokens
        r[:, 4] = self.shared_tokens
        r[:, 5] = self.corpus
        r[:, 6] = self.kv_bytes

    def count(self, status: int) -> int:
        return int((self.status == status).sum())

    @property
    def arrived(self) -> int:
        return int((self.arrival_ns >= 0).sum())


class TokenLog:
    """(time, tokens made) per step, appended as the run goes."""

    def __init__(self) -> None:
        self.times = array("q")
        self.counts = array("q")
        self.total = 0

    def add(self, t: int, n: int) -> None:
        self.times.append(t)
        self.counts.append(n)
        self.total += n

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.frombuffer(self.times, dtype=np.int64).copy(),
                np.frombuffer(self.counts, dtype=np.int64).copy())


class Occupancy:
    """The number of requests in the system and its exact time integral (Little's L)."""

    def __init__(self) -> None:
        self.n = 0
        self.max_n = 0
        self.area = 0  # request-ns
        self.last_t = 0

    def change(self, t: int, delta: int) -> None:
        self.area += self.n * (t - self.last_t)
        self.last_t = t
        self.n += delta
        self.max_n = max(self.max_n, self.n)

    def area_until(self, t: int) -> int:
        return self.area + self.n * (t - self.last_t)


class Sampler:
    """Snapshots named gauges on a regular grid, at most ``max_samples`` points.

    The grid starts at ``dt_ns``; when it would exceed ``max_samples`` points every other
    sample is dropped and the step doubles, so the samples always sit on one grid.
    """

    def __init__(self, gauges: Callable[[], list[float]], names: list[str], dt_ns: int,
                 max_samples: int = MAX_SAMPLES) -> None:
        self.gauges = gauges
        self.names = names
        self.dt = max(1, int(dt_ns))
        self.max_samples = max_samples
        self.times: list[int] = []
        self.rows: list[list[float]] = []

    def sample(self, t: int) -> None:
        self.times.append(t)
        self.rows.append(self.gauges())
        if len(self.times) >= 2 * (self.max_samples // 2) + 1:
            self.times = self.times[::2]
            self.rows = self.rows[::2]
            self.dt *= 2

    def process(self, env):
        while True:
            self.sample(env.now)
            nxt = (env.now // self.dt + 1) * self.dt  # the next point of the current grid
            yield env.timeout(nxt - env.now)


class RunRecords:
    """The records every part of the run writes to: requests, tokens, occupancy, and the
    time breakdown (ns summed over requests, one slot per phase)."""

    def __init__(self, n_requests: int, phases: int) -> None:
        self.log = RequestLog(n_requests)
        self.tokens = TokenLog()
        self.occupancy = Occupancy()
        self.breakdown = np.zeros(phases, dtype=np.float64)


__all__ = ["COLUMNS", "MAX_SAMPLES", "Occupancy", "RequestLog", "RunRecords", "Sampler",
           "TokenLog"]
