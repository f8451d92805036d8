"""The serving loop: requests arrive (closed loop at concurrency C, or Poisson open loop), are admitted
into free KV slots between decode steps (FIFO, up to ``max_batch`` running), every running request
makes one token per step, and a request leaves when it has made its ``output_tokens``. Every step's
wall time and every request's arrival, admission, first token and completion are recorded.

Decode-only serving: a request arrives with its prompt KV ready (as from a prefill node); admission
puts it into a slot (EngineConfig.context) and the request's tokens are all decode steps. Its first
token comes out of its first decode step, so TTFT = queueing + one step, and
TPOT = (done - first token) / (output_tokens - 1), the simulator's definitions.

Closed loop follows the simulator's closed-loop driver: ``requests`` requests in all, the first
``concurrency`` issued at time 0, and one more issued whenever one completes (at that step's end,
admitted at the next step), until all were issued; the run ends when all have completed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from traces.serving.engine import DecodeEngine, StepRows

LOADS = ("closed_loop", "poisson")


@dataclass(frozen=True)
class LoadSpec:
    """Which requests arrive when (token counts inclusive ranges, drawn uniformly per request)."""

    kind: str
    requests: int
    unique_min: int
    unique_max: int
    output_min: int
    output_max: int
    concurrency: int | None = None  # closed_loop
    rate_per_s: float | None = None  # poisson
    seed: int = 0

    def check(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.kind not in LOADS:
            raise ValueError(f"load kind: expected one of {LOADS}, got {self.kind!r}")
        if self.requests < 1:
            raise ValueError(f"requests: must be >= 1, got {self.requests}")
        if not 1 <= self.unique_min <= self.unique_max:
            raise ValueError(f"unique tokens: need 1 <= min <= max, got {self.unique_min}..{self.unique_max}")
        if not 1 <= self.output_min <= self.output_max:
            raise ValueError(f"output tokens: need 1 <= min <= max, got {self.output_min}..{self.output_max}")
        if self.kind == "closed_loop" and (self.concurrency is None or self.concurrency < 1):
            raise ValueError(f"closed_loop needs concurrency >= 1, got {self.concurrency}")
        if self.kind == "poisson" and (self.rate_per_s is None or not self.rate_per_s > 0):
            raise ValueError(f"poisson needs rate_per_s > 0, got {self.rate_per_s}")

    def draw(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unique tokens, output tokens, Poisson arrival seconds or zeros) per request, from ``seed``."""
        rng = np.random.default_rng(self.seed)
        uniq = rng.integers(self.unique_min, self.unique_max + 1, self.requests)
        out = rng.integers(self.output_min, self.output_max + 1, self.requests)
        if self.kind == "poisson":
            assert self.rate_per_s is not None
            arrivals = np.cumsum(rng.exponential(1.0 / self.rate_per_s, self.requests))
        else:
            arrivals = np.zeros(self.requests)
        return uniq, out, arrivals


@dataclass
class RequestRecord:
    """One request's life, times in seconds from the run's start (NaN where it did not happen)."""

    id: int
    unique_tokens: int
    output_tokens: int
    arrival_s: float = float("nan")
    admit_s: float = float("nan")
    first_token_s: float = float("nan")
    done_s: float = float("nan")
    generated: int = 0
    tokens: list[int] = field(default_factory=list)


@dataclass
class RunRecord:
    """Everything one run measured."""

    load: LoadSpec
    step_start_s: list[float] = field(default_factory=list)
    step_end_s: list[float] = field(default_factory=list)
    step_batch: list[int] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    idle_s: float = 0.0  # time with no request running (open loop between arrivals)


def request_seed(load: LoadSpec, request_id: int) -> int:
    """The seed of a request's prompt (traces.serving.engine.prompt_tokens)."""
    return load.seed * 1_000_003 + request_id


class _Clock:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0


def run_load(engine: DecodeEngine, load: LoadSpec, keep_tokens: bool = False,
             on_step: Callable[[int, float], None] | None = None,
             clock: Callable[[], float] | None = None,
             max_running: int | None = None) -> RunRecord:
    """Serve ``load`` on ``engine``; returns the record. ``keep_tokens`` stores every generated token
    per request (tests). ``on_step(step_index, end_s)`` is called after each step (progress).
    ``max_running``: most requests decoding at once (default and upper bound: the engine's
    ``max_batch``)."""
    load.check()
    cap = engine.cfg.max_batch if max_running is None else max_running
    if not 1 <= cap <= engine.cfg.max_batch:
        raise ValueError(f"max_running={max_running}: must be in [1, {engine.cfg.max_batch}]")
    if load.unique_max > engine.cfg.unique_max or load.output_max > engine.cfg.output_max:
        raise ValueError(f"load needs prompts up to {load.unique_max} and outputs up to "
                         f"{load.output_max} tokens; the engine was sized for "
                         f"{engine.cfg.unique_max} and {engine.cfg.output_max}")
    uniq, outs, arrivals = load.draw()
    reqs = [RequestRecord(i, int(u), int(o)) for i, (u, o) in enumerate(zip(uniq, outs))]
    rec = RunRecord(load=load, requests=reqs)
    now = clock or _Clock().now
    closed = load.kind == "closed_loop"
    pending: deque[int] = deque()  # issued (closed) or not yet arrived (poisson), in order
    waiting: deque[int] = deque()
    if closed:
        assert load.concurrency is not None
        issued = min(load.concurrency, load.requests)
        for i in range(issued):
            reqs[i].arrival_s = 0.0
            waiting.append(i)
    else:
        issued = load.requests
        pending.extend(range(load.requests))
        for i in range(load.requests):
            reqs[i].arrival_s = float(arrivals[i])
    free_slots = list(range(engine.n_slots - 1, -1, -1))
    running: list[int] = []  # request ids, in batch-row order
    slot_of: dict[int, int] = {}
    next_token: dict[int, int] = {}
    completed = 0
    while completed < load.requests:
        t = now()
        while pending and reqs[pending[0]].arrival_s <= t:
            waiting.append(pending.popleft())
        while waiting and free_slots and len(running) < cap:
            rid = waiting.popleft()
            slot = free_slots.pop()
            r = reqs[rid]
            next_token[rid] = engine.load_context(slot, r.unique_tokens, request_seed(load, rid))
            slot_of[rid] = slot
            r.admit_s = now()
            running.append(rid)
        if not running:
            if not pending:
                raise RuntimeError("serving loop: nothing running, waiting or pending, yet "
                                   f"{load.requests - completed} requests incomplete")
            wait = reqs[pending[0]].arrival_s - now()
            if wait > 0:
                time.sleep(wait)
                rec.idle_s += wait
            continue
        rows = StepRows(
            slots=[slot_of[r] for r in running],
            tokens=[next_token[r] for r in running],
            lens=[reqs[r].unique_tokens + reqs[r].generated for r in running],
        )
        t_start = now()
        out = engine.step(rows)
        t_end = now()
        rec.step_start_s.append(t_start)
        rec.step_end_s.append(t_end)
        rec.step_batch.append(len(running))
        still: list[int] = []
        for rid, tok in zip(running, out):
            r = reqs[rid]
            r.generated += 1
            if keep_tokens:
                r.tokens.append(int(tok))
            if r.generated == 1:
                r.first_token_s = t_end
            next_token[rid] = int(tok)
            if r.generated == r.output_tokens:
                r.done_s = t_end
                completed += 1
                free_slots.append(slot_of.pop(rid))
                del next_token[rid]
                if closed and issued < load.requests:
                    reqs[issued].arrival_s = t_end
                    waiting.append(issued)
                    issued += 1
            else:
                still.append(rid)
        running = still
        if on_step is not None:
            on_step(len(rec.step_end_s) - 1, t_end)
    return rec


def summarize(rec: RunRecord) -> dict:
    """Throughput and latency percentiles with the simulator's definitions: throughput = tokens made
    / (last completion - 0); TTFT = first token - arrival; TPOT = (done - first) / (output - 1) over
    requests with >= 2 tokens; percentiles by numpy's linear interpolation, in ms."""
    reqs = rec.requests
    done = np.array([r.done_s for r in reqs], dtype=float)
    first = np.array([r.first_token_s for r in reqs], dtype=float)
    arr = np.array([r.arrival_s for r in reqs], dtype=float)
    out = np.array([r.output_tokens for r in reqs], dtype=float)
    t_end = float(np.nanmax(done)) if len(done) else 0.0
    tokens = int(sum(r.generated for r in reqs))
    gaps = out - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(gaps > 0, (done - first) / np.maximum(gaps, 1) * 1e3, np.nan)
    ttft = (first - arr) * 1e3
    e2e = (done - arr) * 1e3
    steps = np.array(rec.step_end_s) - np.array(rec.step_start_s)
    batch = np.array(rec.step_batch, dtype=float)

    def stats(v: np.ndarray) -> dict:
        v = v[np.isfinite(v)]
        if v.size == 0:
            return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None}
        p50, p90, p99 = np.percentile(v, [50, 90, 99])
        return {"count": int(v.size), "mean": float(v.mean()), "p50": float(p50),
                "p90": float(p90), "p99": float(p99)}

    return {
        "requests_completed": int(np.isfinite(done).sum()),
        "tokens_generated": tokens,
        "duration_s": t_end,
        "throughput_tokens_per_s": tokens / t_end if t_end > 0 else None,
        "ttft_ms": stats(ttft),
        "tpot_ms": stats(tpot),
        "e2e_ms": stats(e2e),
        "step_ms": stats(steps * 1e3),
        "steps": int(steps.size),
        "mean_batch": float(batch.mean()) if batch.size else None,
        "token_weighted_step_ms": (float((steps * batch).sum() / batch.sum() * 1e3)
                                   if batch.size else None),
        "idle_s": rec.idle_s,
    }
