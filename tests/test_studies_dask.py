"""Studies on a real Dask cluster (``distributed.LocalCluster`` with two worker processes):
the report is byte for byte the local pool's, the runs are spread over both workers, a
study resumes from its cache on the cluster, and a cluster that cannot run the study is a
one-line error naming ``--dask``."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from sim.cli import main as cli_main
from sim.studies import backends
from sim.studies.backends import BackendError, DaskBackend, LocalBackend
from sim.studies.runner import run_compare
from sim.studies.sweep import SweepSettings
from sim.studies.variants import load_inputs
from tests.study_helpers import (
    CONFIGS,
    PINNED_SOURCE_HASH,
    assert_same_study,
    pinned_code_version,
    write_configs,
)

SETTINGS = SweepSettings.from_mapping({}, "", points=1, requests=12)


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """Two worker processes of one thread each, as ``dask worker --nthreads 1`` would run."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as c:
        yield c


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch, cluster: distributed.LocalCluster) -> Iterator[str]:
    """The same pinned code version here and on the workers: others may edit the checkout
    while the tests run, and each worker process hashes the sources itself."""
    with pinned_code_version(monkeypatch) as version:
        with distributed.Client(cluster, set_as_default=False) as client:
            assert set(client.run(_pin_worker, PINNED_SOURCE_HASH).values()) == {version}
        yield version


@pytest.fixture
def dask_backend(cluster: distributed.LocalCluster, pinned: str) -> Iterator[DaskBackend]:
    with distributed.Client(cluster, set_as_default=False) as client:
        yield DaskBackend(client)


def _pin_worker(digest: str) -> str:
    """On a worker: pin the source hash as pinned_code_version does here."""
    import sim.studies.cache as c

    c.source_hash = lambda root=None: digest
    c.code_version.cache_clear()
    return c.code_version()


def test_dask_gives_the_local_pools_report_byte_for_byte(tmp_path: Path,
                                                         dask_backend: DaskBackend) -> None:
    paths = write_configs(tmp_path, list(CONFIGS)[:3])
    inputs = load_inputs(paths)
    with distributed.get_task_stream(dask_backend.client) as stream:
        on_dask = run_compare(inputs, tmp_path / "dask", SETTINGS, progress=False,
                              backend=dask_backend)
    # per config: the main run, one sweep point and the point at the main run's own load
    assert (on_dask.ran, on_dask.cached) == (9, 0)
    workers = {t["worker"] for t in stream.data if str(t["key"]).startswith("moska-sim-")}
    assert len(workers) == 2, "the runs should be spread over both worker processes"
    local = run_compare(inputs, tmp_path / "local", SETTINGS, progress=False,
                        backend=LocalBackend(1))
    assert_same_study(tmp_path / "dask", tmp_path / "local")
    assert on_dask.rows == local.rows and not on_dask.failures
    # every run came back from the workers into the study folder, with its results folder
    for name in list(CONFIGS)[:3]:
        assert (tmp_path / "dask" / "runs" / name / "summary.json").is_file()


def test_resume_on_dask_runs_only_what_is_missing(tmp_path: Path,
                                                   dask_backend: DaskBackend) -> None:
    paths = write_configs(tmp_path, list(CONFIGS)[:3])
    study = tmp_path / "study"
    first = run_compare(load_inputs(paths[:1]), study, progress=False, backend=dask_backend)
    assert (first.ran, first.cached) == (1, 0)
    more = run_compare(load_inputs(paths), study, progress=False, backend=dask_backend)
    assert (more.ran, more.cached) == (2, 1)
    run_compare(load_inputs(paths), tmp_path / "fresh", progress=False,
                backend=LocalBackend(2))
    assert_same_study(study, tmp_path / "fresh")


def test_a_failed_run_is_a_result_on_dask_too(tmp_path: Path,
                                              dask_backend: DaskBackend) -> None:
    path = write_configs(tmp_path, ["tiny-moska"])[0]
    v = tmp_path / "v.yaml"
    v.write_text(f"base: {path.name}\noverrides: {{run.requests: 8}}\nvariants:\n"
                 "  - label: ok\n  - label: too-big\n"
                 "    overrides: {workload.shared.tokens: 16Mi}\n")
    result = run_compare(load_inputs([v]), tmp_path / "out", progress=False,
                         backend=dask_backend)
    assert list(result.failures) == ["too-big"]
    assert "shared" in (tmp_path / "out" / "runs" / "too-big" / "error.txt").read_text()
    again = run_compare(load_inputs([v]), tmp_path / "out", progress=False,
                        backend=dask_backend)
    assert (again.ran, again.cached) == (0, 2)  # a deterministic failure is cached too


def test_workers_running_other_code_are_refused(cluster: distributed.LocalCluster,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "code_version", lambda: "0.0.0+not-the-workers")
    with distributed.Client(cluster, set_as_default=False) as client, \
            pytest.raises(BackendError, match=r"--dask: worker tcp://.* runs moska-sim"):
        DaskBackend(client)


def test_command_line_dask_address(tmp_path: Path, cluster: distributed.LocalCluster,
                                   pinned: str) -> None:
    """``moska-sim sweep ... --dask ADDRESS`` end to end."""
    path = write_configs(tmp_path, ["tiny-moska"])[0]
    out = tmp_path / "sweep"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(["sweep", str(path), "--param", "batching.window_us=0,200",
                       "--out", str(out), "--no-progress", "--dask", cluster.scheduler_address])
    assert rc == 0
    record = json.loads((out / "compare.json").read_text())
    assert [r["config"] for r in record["rows"]] == ["window_us=0", "window_us=200"]
    assert "window_us=200" in buf.getvalue()


def test_unreachable_scheduler_is_one_line(capsys: pytest.CaptureFixture,
                                           tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"^--dask: cannot reach a Dask scheduler at "
                                           r"tcp://127\.0\.0\.1:9"):
        DaskBackend("tcp://127.0.0.1:9", timeout_s=1.0)
    path = write_configs(tmp_path, ["tiny-moska"])[0]
    assert cli_main(["compare", str(path), "--jobs", "2", "--dask", "tcp://127.0.0.1:9",
                     "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("moska-sim compare: error: --jobs and --dask exclude each other (the "
                   "cluster's workers set the parallelism)")
    assert not (tmp_path / "o").exists()
