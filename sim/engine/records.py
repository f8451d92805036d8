"""What a run records as it goes: per-request records, tokens over time, the number in
system (for Little's law), the time breakdown by phase, and sampled queue lengths.

Recording is cheap and bounded: the requests in the system live in numpy columns, one slot
each (:class:`RequestLog`); a request's row leaves for the :mod:`request archive
<sim.engine.request_archive>` (a temporary file on long runs) as it leaves the system, so
memory grows with the requests in flight, not with those simulated; tokens are counted per time
bin, at most ``TOKEN_BINS`` of them, merged pairwise as the run grows (O(1), not a record
per decode step); queue lengths are sampled on a regular grid that halves itself whenever
it would exceed ``MAX_SAMPLES`` points (so any run has at most that many).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

import numpy as np

from sim.engine.request_archive import FIELD_NAMES, FIELDS, PLAN_FIELDS, RequestArchive

MAX_SAMPLES = 2000


# The per-request row a unique node keeps while a request runs (RequestLog.rows):
# its slot in the log, tokens generated so far (1 after prefill), output tokens, unique
# tokens, shared tokens, corpus, KV bytes reserved.
COLUMNS: tuple[str, ...] = ("id", "done", "out", "uctx", "sctx", "corpus", "kv")

PLAN_BLOCK = 4096  # planned requests whose plan fields are derived at a time
INITIAL_SLOTS = 64  # the log's first capacity (it doubles when more are in flight)

# a request's plan fields for requests [a, b): the callable the cluster passes in
PlanBlock = Callable[[int, int], "dict[str, np.ndarray]"]


class RequestLog:
    """The requests in the system, one *slot* each, as numpy columns (``FIELD_NAMES`` of
    :mod:`sim.engine.request_archive`; -1 marks a time not reached).

    While the run goes, the engine indexes every column by slot, never by request id: a
    request takes a slot when it arrives (:meth:`open`, in id order), and gives it back
    when it leaves the system (:meth:`close`), its row going to the ``archive``. So memory
    grows with the requests in flight (the slots double when full), not with the requests
    simulated. ``rid[slot]`` is the request id a slot holds. The columns are views of one
    int64 matrix ``table`` (a slot's row is one copy in and one copy out). :meth:`finish`
    (at the end of the run) archives the rest and rebinds every column to the archive's:
    from then on the columns hold the whole run, indexed by request id, ``n`` long."""

    PLANNED, WAITING, RUNNING, COMPLETED, REJECTED, FAILED = 0, 1, 2, 3, 4, 5
    STATUS_NAMES = ("planned", "waiting", "running", "completed", "rejected", "failed")

    def __init__(self, n: int, plan: PlanBlock | None = None,
                 archive: RequestArchive | None = None, slots: int = INITIAL_SLOTS) -> None:
        self.n = int(n)
        self._plan = plan if plan is not None else _empty_plan
        self.archive = archive if archive is not None else RequestArchive(self.n)
        self.reject_reasons: dict[str, int] = {}
        self.fail_reasons: dict[str, int] = {}
        self.opened = 0  # requests 0 .. opened-1 have arrived
        self.finished = False
        self.max_slots_used = 0
        self._block_start = -1
        self._block_table = np.zeros((0, len(FIELDS)), dtype=np.int64)
        self._block_rows = np.zeros((0, len(COLUMNS)), dtype=np.int64)
        self.slots = 0
        self.table = np.zeros((0, len(FIELDS)), dtype=np.int64)
        self.rid = np.zeros(0, dtype=np.int64)
        self.rows = np.zeros((0, len(COLUMNS)), dtype=np.int64)
        self._free: list[int] = []
        self._grow(max(1, int(slots)))

    # -- slots -----------------------------------------------------------------------------
    def _grow(self, slots: int) -> None:
        """Room for ``slots`` requests in the system (the rows copied over)."""
        old = self.slots
        table = np.empty((slots, len(FIELDS)), dtype=np.int64)
        table[:old] = self.table
        table[old:] = FILL_ROW
        self.table = table
        for k, name in enumerate(FIELD_NAMES):
            setattr(self, name, table[:, k])
        rid = np.full(slots, -1, dtype=np.int64)
        rid[:old] = self.rid
        self.rid = rid
        rows = np.zeros((slots, len(COLUMNS)), dtype=np.int64)
        rows[:old] = self.rows
        self.rows = rows
        self._free.extend(range(slots - 1, old - 1, -1))  # the lowest slot is taken first
        self.slots = slots

    def open(self, rid: int) -> int:
        """Request ``rid`` arrives (requests arrive in id order): its slot, its row its
        plan's fields and every other field's fill value (``rows``' row too)."""
        if self.finished:
            raise RuntimeError("RequestLog.open: the run's log is finished")
        if rid != self.opened:
            raise ValueError(f"RequestLog.open: requests arrive in id order: expected "
                             f"{self.opened}, got {rid}")
        self.opened = rid + 1
        if not self._free:
            self._grow(2 * self.slots)
        slot = self._free.pop()
        used = self.slots - len(self._free)
        self.max_slots_used = max(self.max_slots_used, used)
        i = rid - self._block_start
        if self._block_start < 0 or i >= PLAN_BLOCK:
            self._load_block(rid)
            i = 0
        self.table[slot] = self._block_table[i]
        row = self._block_rows[i]
        row[0] = slot
        self.rows[slot] = row
        self.rid[slot] = rid
        return slot

    def _load_block(self, start: int) -> None:
        end = min(self.n, start + PLAN_BLOCK)
        table = _planned_rows(self._plan(start, end))
        self._block_start, self._block_table = start, table
        rows = np.zeros((end - start, len(COLUMNS)), dtype=np.int64)
        rows[:, 1] = 1
        for k, name in ((2, "output_tokens"), (3, "unique_tokens"), (4, "shared_tokens"),
                        (5, "corpus"), (6, "kv_bytes")):
            rows[:, k] = table[:, FIELD_NAMES.index(name)]
        self._block_rows = rows

    def close(self, slots: np.ndarray | int) -> None:
        """Requests in ``slots`` left the system: their rows go to the archive and their
        slots are free again (a slot's row is rewritten whole when it is next taken)."""
        s = np.asarray(slots, dtype=np.int64).reshape(-1)
        if not len(s):
            return
        self.archive.put(self.rid[s], self.table[s])
        self.rid[s] = -1
        self._free.extend(s.tolist())

    @property
    def in_system(self) -> np.ndarray:
        """The slots in use, in request-id order."""
        used = np.flatnonzero(self.rid >= 0)
        return used[np.argsort(self.rid[used], kind="stable")]

    def finish(self) -> None:
        """The run ended: archive the requests still in the system and those that never
        arrived, and make every column the whole run's, indexed by request id."""
        if self.finished:
            return
        self.close(self.in_system)
        for start in range(self.opened, self.n, PLAN_BLOCK):
            self.archive.put(np.arange(start, min(self.n, start + PLAN_BLOCK), dtype=np.int64),
                             _planned_rows(self._plan(start, min(self.n, start + PLAN_BLOCK))))
        for name, col in self.archive.columns().items():
            setattr(self, name, col)
        self.finished = True
        self.table = np.zeros((0, len(FIELDS)), dtype=np.int64)
        self.rid = np.zeros(0, dtype=np.int64)
        self.rows = np.zeros((0, len(COLUMNS)), dtype=np.int64)
        self._free = []
        self._block_table = self._block_rows = self.table

    # -- whole-run counts (after finish) ---------------------------------------------------
    def count(self, status: int) -> int:
        return int((self.status == status).sum())

    @property
    def arrived(self) -> int:
        return int((self.arrival_ns >= 0).sum())


FILL_ROW = np.array([fill for _, _, fill in FIELDS], dtype=np.int64)


def _planned_rows(plan: dict[str, np.ndarray]) -> np.ndarray:
    """The rows (``FIELDS`` order, int64) of planned requests: their plan's fields, every
    other field's fill value."""
    m = len(plan[PLAN_FIELDS[0]])
    rows = np.tile(FILL_ROW, (m, 1))
    for name in PLAN_FIELDS:
        rows[:, FIELD_NAMES.index(name)] = plan[name]
    return rows


def _empty_plan(a: int, b: int) -> dict[str, np.ndarray]:
    """The plan fields of requests nobody described: zeros."""
    return {name: np.zeros(b - a, dtype=np.int64) for name in PLAN_FIELDS}


TOKEN_BINS = 8192  # time bins of the token log (O(1) memory whatever the run's length)
RAW_STEPS = 1 << 16  # per-step (time, tokens) pairs kept for inspection, the first ones only


class TokenLog:
    """Tokens made over time, reduced as the run goes: ``total``, the tokens made at or
    after the warm-up, and counts per time bin ``(k dt, (k+1) dt]`` (``at_zero``: made at
    t = 0). There are at most ``TOKEN_BINS`` bins: when a token falls past the last one,
    pairs of bins merge and ``dt`` doubles (as the queue ``Sampler`` does with its grid),
    so memory is O(1) in the run's length, not O(decode steps).

    :meth:`use_grid` starts the bins at the ``Sampler``'s first step (both grids are then
    that step times powers of two, so every sample time is a bin edge and the tokens per
    sampling interval are exact integers; :meth:`made_until`). Until it is called (a
    cluster driven without ``simulate``), every step is kept. The first ``RAW_STEPS`` steps
    are kept as (time, tokens) pairs too (:meth:`arrays`, for tests and small runs)."""

    def __init__(self, max_bins: int | None = None, raw_steps: int | None = None) -> None:
        self.total = 0
        self.dt: int | None = None
        self.max_bins = max(2, int(TOKEN_BINS if max_bins is None else max_bins)) // 2 * 2
        self.bins: list[int] = []
        self.at_zero = 0
        self.warmup_ns = 0
        self.since_warmup = 0  # tokens made at t >= warmup_ns
        self.last_t = -1  # the latest time tokens were made, and how many then
        self.at_last_t = 0
        self.raw_steps = RAW_STEPS if raw_steps is None else int(raw_steps)
        self.times: array | None = array("q")
        self.counts: array | None = array("q")

    def use_grid(self, dt_ns: int, warmup_ns: int = 0) -> None:
        """Reduce into bins of ``dt_ns`` (doubling as needed) from now on; count the tokens
        made at or after ``warmup_ns``. Called once, before any token is made."""
        if self.total or self.times is None or len(self.times):
            raise RuntimeError("TokenLog.use_grid: tokens were made already")
        self.dt = max(1, int(dt_ns))
        self.bins = [0] * self.max_bins
        self.warmup_ns = int(warmup_ns)

    def add(self, t: int, n: int) -> None:
        self.total += n
        if t >= self.warmup_ns:
            self.since_warmup += n
        if t == self.last_t:
            self.at_last_t += n
        elif t > self.last_t:
            self.last_t, self.at_last_t = t, n
        times = self.times
        if times is not None:
            if self.dt is None or len(times) < self.raw_steps:
                times.append(t)
                self.counts.append(n)  # type: ignore[union-attr]
            else:
                self.times = self.counts = None  # past the inspection limit: bins only
        if self.dt is None:
            return
        if t <= 0:
            self.at_zero += n
            return
        k = (t - 1) // self.dt  # the bin (k dt, (k+1) dt] holding t
        while k >= self.max_bins:
            self._coarsen()
            k = (t - 1) // self.dt
        self.bins[k] += n

    def _coarsen(self) -> None:
        """Merge pairs of bins: (2j dt, (2j+2) dt] is one bin of the doubled width."""
        b = self.bins
        half = [x + y for x, y in zip(b[0::2], b[1::2])]
        self.bins = half + [0] * (self.max_bins - len(half))
        self.dt = 2 * self.dt  # type: ignore[operator]

    def made_until(self, t: int) -> int:
        """Tokens made at times <= ``t``: exact when ``t`` is 0, a bin edge (a multiple of
        ``dt``; every sample time of the Sampler whose grid this uses) or at or after the
        last token; otherwise an error (the bins cannot split)."""
        return int(self.made_until_each(np.array([t]))[0])

    def made_since(self, t: int) -> int:
        """Tokens made at times >= ``t``: exact for the warm-up time given to
        :meth:`use_grid`, for 0, and for times at or after the last token."""
        if t <= 0:
            return self.total
        if t == self.warmup_ns:
            return self.since_warmup
        if t > self.last_t:
            return 0
        if t == self.last_t:
            return self.at_last_t
        if self.dt is None:
            times, counts = self.arrays()
            return int(counts[times >= t].sum())
        raise RuntimeError(f"TokenLog: tokens made since {t} ns are not known exactly (only "
                           f"since the warm-up, {self.warmup_ns} ns)")

    def made_until_each(self, ts: np.ndarray) -> np.ndarray:
        """:meth:`made_until` of each time in ``ts`` (int64), vectorised."""
        ts = np.asarray(ts, dtype=np.int64)
        if self.dt is None:
            times, counts = self.arrays()  # in time order: the clock never goes back
            cum = np.concatenate(([0], np.cumsum(counts)))
            return cum[np.searchsorted(times, ts, side="right")]
        out = np.full(len(ts), self.total, dtype=np.int64)
        out[ts < 0] = 0
        inner = (ts >= 0) & (ts < self.last_t)
        t = ts[inner]
        off = t % self.dt
        if off.any():
            bad = int(t[np.flatnonzero(off)[0]])
            raise RuntimeError(f"TokenLog: time {bad} ns is not a multiple of the bin width "
                               f"{self.dt} ns; tokens made by then are not known exactly")
        cum = np.concatenate(([self.at_zero], self.at_zero + np.cumsum(
            np.asarray(self.bins, dtype=np.int64))))
        out[inner] = cum[t // self.dt]
        return out

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(time, tokens) of every step, for runs of up to ``raw_steps`` steps (or driven
        without ``use_grid``); an error past that (only the bins are kept)."""
        if self.times is None or self.counts is None:
            raise RuntimeError(f"TokenLog.arrays: the run made more than {self.raw_steps} "
                               "steps; only the token counts per time bin are kept")
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

    def __init__(self, n_requests: int, phases: int, plan: PlanBlock | None = None,
                 archive: RequestArchive | None = None) -> None:
        self.log = RequestLog(n_requests, plan, archive)
        self.tokens = TokenLog()
        self.occupancy = Occupancy()
        self.breakdown = np.zeros(phases, dtype=np.float64)


__all__ = ["COLUMNS", "MAX_SAMPLES", "RAW_STEPS", "TOKEN_BINS", "Occupancy", "RequestLog",
           "RunRecords", "Sampler", "TokenLog"]
