"""Where a study's runs execute: this process, a local process pool (the default), or a Dask
distributed cluster (``--dask ADDRESS``).

Each backend takes the jobs not yet in the study's cache and returns when every one of
them has an entry there (:mod:`sim.studies.cache`); the study then reads all results from
the cache, so the report does not depend on the backend, the number of workers or the
order in which runs finish. A bug in a run (an exception other than ValueError) stops the
study: runs not yet started are cancelled, finished ones stay cached.

Dask: the ``distributed`` package is an optional extra (``pip install -e '.[dask]'``).
Workers need moska-sim installed with the same code (checked: every worker's
:func:`~sim.studies.cache.code_version` must equal this process's) and, for configs that
name files (traces), those files at the same absolute paths. Workers send each run's
entry back as bytes, so they need no access to the study folder. Start workers with one
thread each (``dask worker ADDRESS --nthreads 1 --nworkers N``): a simulation is pure
Python and holds the GIL.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from sim.studies.cache import RunCache, code_version
from sim.studies.jobs import Done, Job, run_packed, run_to_cache
from sim.studies.progress import StudyProgress

POLL_S = 0.5  # how often a waiting backend lets the progress line refresh
DASK_POLL_S = 0.05  # how often the Dask backend looks for finished runs


class BackendError(RuntimeError):
    """The backend cannot run the study (no scheduler at the address, workers running other
    code, distributed not installed); the message is one line naming the option."""


class Backend(Protocol):
    """Runs jobs into a study's cache."""

    def slots(self) -> int:
        """How many runs can execute at once."""
        ...

    def run(self, jobs: Sequence[Job], study_dir: Path, progress: StudyProgress) -> None:
        """Run every job; return when each has a cache entry."""
        ...

    def close(self) -> None:
        ...


def _describe(job: Job) -> str:
    return f"{job.label}: {job.what}"


class LocalBackend:
    """``jobs`` = 1: every run in this process, one after the other; more: a pool of that
    many processes on this machine."""

    def __init__(self, jobs: int = 1) -> None:
        if jobs < 1:
            raise BackendError(f"--jobs: expected an integer >= 1, got {jobs}")
        self.jobs = jobs

    def slots(self) -> int:
        return self.jobs

    def run(self, jobs: Sequence[Job], study_dir: Path, progress: StudyProgress) -> None:
        if self.jobs <= 1 or len(jobs) <= 1:
            for job in jobs:
                progress.submitted([job.key])
                done = run_to_cache(job, study_dir)
                progress.finished(job.key, _describe(job), done.wall_s, done.error)
            return
        with cf.ProcessPoolExecutor(max_workers=min(self.jobs, len(jobs))) as pool:
            futures: dict[cf.Future, Job] = {}
            for job in jobs:
                futures[pool.submit(run_to_cache, job, study_dir)] = job
            progress.submitted([job.key for job in jobs])
            pending = set(futures)
            try:
                while pending:
                    finished, pending = cf.wait(pending, timeout=POLL_S,
                                                return_when=cf.FIRST_COMPLETED)
                    for fut in sorted(finished, key=lambda f: futures[f].key):
                        job = futures[fut]
                        done = fut.result()
                        progress.finished(job.key, _describe(job), done.wall_s, done.error)
                    progress.tick()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def close(self) -> None:
        pass


class DaskBackend:
    """The runs as tasks of a Dask distributed cluster.

    ``address``: a scheduler address (``tcp://host:8786``), or for tests and scripts an
    object ``distributed.Client`` accepts (a ``LocalCluster``) or a ``Client`` itself.
    """

    def __init__(self, address: Any, timeout_s: float = 30.0) -> None:
        try:
            import distributed
        except ImportError:
            raise BackendError("--dask: the distributed package is not installed; "
                               "pip install -e '.[dask]'") from None
        self._distributed = distributed
        self._own = not isinstance(address, distributed.Client)
        self.address = address
        if self._own:
            try:
                self.client = distributed.Client(address, timeout=f"{timeout_s}s",
                                                 set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise BackendError(f"--dask: cannot reach a Dask scheduler at "
                                   f"{address}: {exc}") from None
        else:
            self.client = address
        self.check_workers()

    def slots(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def check_workers(self) -> None:
        """Every worker must run the code this process runs (same results for a key)."""
        mine = code_version()
        theirs = self.client.run(_worker_code_version)
        if not theirs:
            raise BackendError(f"--dask: the scheduler at {self.address} has no workers")
        other = {w: v for w, v in theirs.items() if v != mine}
        if other:
            w, v = min(other.items())
            raise BackendError(f"--dask: worker {w} runs moska-sim {v}, this process {mine}; "
                               "install the same code on every worker")

    def run(self, jobs: Sequence[Job], study_dir: Path, progress: StudyProgress) -> None:
        cache = RunCache(study_dir)
        mine = code_version()
        futures = {}
        for job in jobs:
            fut = self.client.submit(run_packed, job, pure=False,
                                     key=f"moska-sim-{job.key}-{id(self):x}")
            futures[fut] = job
        progress.submitted([job.key for job in jobs])
        pending = set(futures)
        try:
            while pending:
                finished = {f for f in pending if f.done()}
                if not finished:
                    time.sleep(DASK_POLL_S)
                    progress.tick()
                    continue
                pending -= finished
                for fut in sorted(finished, key=lambda f: futures[f].key):
                    job = futures[fut]
                    try:
                        done: Done = fut.result()  # a bug in the run raises here
                    except self._distributed.KilledWorker as exc:
                        raise BackendError(
                            f"--dask: {_describe(job)}: the workers running it died ({exc}); "
                            "the runs finished so far are cached: run the same command again "
                            "to resume") from None
                    if done.code_version != mine:
                        raise BackendError(f"--dask: a worker ran {job.label} with moska-sim "
                                           f"{done.code_version}, this process runs {mine}")
                    cache.unpack(job.key, done.files or {})
                    fut.release()
                    progress.finished(job.key, _describe(job), done.wall_s, done.error)
                if finished:
                    progress.set_slots(self.slots())
                progress.tick()
        except BaseException:
            self.client.cancel(list(pending))
            raise

    def close(self) -> None:
        if self._own:
            self.client.close()


def _worker_code_version() -> str:
    """On a worker: the code version it runs (see :func:`check_workers`)."""
    from sim.studies import cache

    return cache.code_version()


def make_backend(jobs: int = 1, dask: Any = None) -> Backend:
    """The backend the command line asks for: ``dask`` (an address) wins over ``jobs``."""
    if dask is not None:
        return DaskBackend(dask)
    return LocalBackend(jobs)


__all__ = ["Backend", "BackendError", "DaskBackend", "LocalBackend", "make_backend"]
