"""One run of a study as a unit of work: what it is, and how a worker turns it into a cache
entry (:mod:`sim.studies.cache`).

Every run takes its seed from its own config, so what a job produces does not depend on
where or in which order it runs. A run that fails with a ValueError (a deployment that
does not fit, a workload the engine refuses) is a result like any other: its error is
recorded in the entry and the other runs go on. Any other exception is a bug and
propagates.

Two ways to execute a job, with the same entry as the result:

- :func:`run_to_cache`: in this process or a local worker process, writing the entry
  straight into the study's cache folder;
- :func:`run_packed`: on a Dask worker, perhaps on another machine without the study
  folder: the entry is built in a local temporary folder and sent back as bytes, which
  :meth:`sim.studies.cache.RunCache.unpack` writes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.studies.cache import RUN_DIR, RunCache, code_version, pack_folder, write_outcome


@dataclass(frozen=True)
class Job:
    """One simulation: what it is (for messages), its config, whether it keeps a results
    folder (main runs) or only its summary (load-sweep points), and its cache key."""

    label: str
    what: str  # e.g. 'main run' or 'sweep 2/4 (1.5 req/s)'
    config: Any  # ExperimentConfig (picklable)
    keeps_folder: bool
    key: str


@dataclass(frozen=True)
class Done:
    """What a worker reports back about one job (the results themselves are in the cache)."""

    key: str
    ok: bool
    error: str | None
    wall_s: float
    code_version: str
    files: dict[str, bytes] | None = None  # the packed entry (run_packed only)


def build_entry(job: Job, stage: Path) -> Done:
    """Run ``job`` and write its entry (``outcome.json``, and ``run/`` for a main run)
    into the empty folder ``stage``."""
    from sim.run import run_simulation

    version = code_version()
    t0 = time.perf_counter()
    try:
        result = run_simulation(job.config, stage / RUN_DIR if job.keeps_folder else None,
                                progress=False, write=job.keeps_folder)
    except ValueError as exc:
        wall = time.perf_counter() - t0
        shutil.rmtree(stage / RUN_DIR, ignore_errors=True)
        write_outcome(stage, key=job.key, label=job.label, what=job.what, summary=None,
                      error=str(exc), wall_s=wall, version=version)
        return Done(job.key, False, str(exc), wall, version)
    wall = time.perf_counter() - t0
    # the summary as summary.json holds it (plain JSON), so that a run read back from the
    # cache and a run just made give the same report, byte for byte
    import json

    from sim.run.results import summary_json

    summary = json.loads(summary_json(result.summary))
    write_outcome(stage, key=job.key, label=job.label, what=job.what, summary=summary,
                  error=None, wall_s=wall, version=version)
    return Done(job.key, True, None, wall, version)


def run_to_cache(job: Job, study_dir: Path) -> Done:
    """Run ``job`` and commit its entry into ``study_dir``'s cache (same machine)."""
    cache = RunCache(study_dir)
    stage = cache.stage(job.key)
    try:
        done = build_entry(job, stage)
        cache.commit(job.key, stage)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return done


def run_packed(job: Job) -> Done:
    """Run ``job`` in a temporary folder of this (worker) machine and return its entry's
    files with the report (for :meth:`RunCache.unpack` on the machine holding the study)."""
    stage = Path(tempfile.mkdtemp(prefix=f"moska-sim-{job.key}-"))
    try:
        done = build_entry(job, stage)
        files = pack_folder(stage)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Done(done.key, done.ok, done.error, done.wall_s, done.code_version, files)


__all__ = ["Done", "Job", "build_entry", "run_packed", "run_to_cache"]
