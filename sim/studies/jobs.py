"""Running a batch of simulations, in this process or in a pool of ``jobs`` processes.

Results come back in the order the jobs were given whatever the pool does, and every run
takes its seed from its own config, so the outcome does not depend on ``jobs``. A run that
fails with a ValueError (a deployment that does not fit, a workload the engine refuses) is
recorded as failed and the others go on; any other exception is a bug and propagates.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Job:
    """One simulation: what it is (for messages), its config, where its folder goes."""

    label: str
    what: str  # e.g. 'main run' or 'sweep 2/4 (1.5 req/s)'
    config: Any  # ExperimentConfig (picklable)
    out_dir: Path | None  # write a results folder here; None: summary only


@dataclass(frozen=True)
class Outcome:
    """What one job produced: its summary, or the error that stopped it."""

    summary: dict | None
    error: str | None
    out_dir: Path | None
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.error is None


def execute(job: Job) -> Outcome:
    """Run one job (in whichever process calls it)."""
    from sim.run import run_simulation

    t0 = time.perf_counter()
    try:
        result = run_simulation(job.config, job.out_dir, progress=False,
                                write=job.out_dir is not None)
    except ValueError as exc:
        return Outcome(None, str(exc), None, time.perf_counter() - t0)
    return Outcome(result.summary, None, result.out_dir, time.perf_counter() - t0)


def _say(enabled: bool) -> Callable[[int, int, Job, Outcome], None]:
    def report(done: int, total: int, job: Job, out: Outcome) -> None:
        if not enabled:
            return
        state = f"done in {out.wall_s:.1f} s" if out.ok else f"FAILED: {out.error}"
        print(f"[{done}/{total}] {job.label}: {job.what}: {state}", file=sys.stderr, flush=True)

    return report


def run_jobs(jobs: Sequence[Job], workers: int = 1, progress: bool = True) -> list[Outcome]:
    """Outcomes of ``jobs`` in their order; ``workers`` > 1 runs them in that many processes."""
    report = _say(progress)
    total = len(jobs)
    if workers <= 1 or total <= 1:
        outcomes = []
        for i, job in enumerate(jobs, 1):
            outcomes.append(execute(job))
            report(i, total, job, outcomes[-1])
        return outcomes
    results: list[Outcome | None] = [None] * total
    with ProcessPoolExecutor(max_workers=min(workers, total)) as pool:
        futures = {pool.submit(execute, job): i for i, job in enumerate(jobs)}
        try:
            for done, future in enumerate(as_completed(futures), 1):
                i = futures[future]
                results[i] = future.result()
                report(done, total, jobs[i], results[i])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # a bug: stop what has not started
            raise
    return [r for r in results if r is not None]


__all__ = ["Job", "Outcome", "execute", "run_jobs"]
