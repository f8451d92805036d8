"""Study cache and resume: a run's key follows its config, inputs and code; a study killed
with SIGKILL midway and rerun does not redo its finished runs and writes the same report,
byte for byte, as a study never interrupted; a rerun with more variants runs only those."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.cli.compare import compare_main
from sim.config import load_config
from sim.studies import cache as cache_mod
from sim.studies.backends import LocalBackend
from sim.studies.cache import RunCache, run_key, source_hash
from sim.studies.runner import is_study_folder, run_compare
from sim.studies.variants import load_inputs
from tests.study_helpers import (
    CONFIGS,
    PINNED_MAIN,
    assert_same_study,
    pinned_code_version,
    write_configs,
)

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["--load-sweep", "1", "--sweep-requests", "12"]


def entries(study: Path) -> dict[str, Path]:
    """The finished entries of a study's cache, by key."""
    cache = study / "cache"
    if not cache.is_dir():
        return {}
    return {p.name: p for p in cache.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / "outcome.json").is_file()}


def fingerprint(entry: Path) -> dict[str, tuple[int, bytes]]:
    """mtime and bytes of every file of a cache entry (run_info.json holds the run's wall
    time: a run made again would not reproduce it)."""
    return {p.relative_to(entry).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(entry.rglob("*")) if p.is_file()}


# -- keys ---------------------------------------------------------------------------------
def test_key_follows_config_folder_inputs_and_code(tmp_path: Path) -> None:
    path = write_configs(tmp_path, ["tiny-moska"])[0]
    cfg = load_config(path)
    key = run_key(cfg, True, "v1")
    assert key == run_key(load_config(path), True, "v1")  # same config: same key
    assert len(key) == cache_mod.KEY_CHARS and int(key, 16) >= 0
    assert run_key(cfg, False, "v1") != key  # summary only vs results folder
    assert run_key(cfg, True, "v2") != key  # other code
    assert run_key(load_config(path, {"run.seed": 4}), True, "v1") != key
    assert run_key(load_config(path, {"run.requests": 25}), True, "v1") != key

    # a file the config names by path: its contents are part of the key
    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2023-11-16 18:15:46.6805900,374,44\n"
                     "2023-11-16 18:15:50.9951690,396,109\n")
    arrivals = {"kind": "trace", "path": str(trace), "format": "azure"}
    with_trace = load_config(path, {"workload.arrivals": arrivals, "run.requests": 2})
    before = run_key(with_trace, True, "v1")
    trace.write_text(trace.read_text().replace("374", "375"))
    os.utime(trace, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert run_key(with_trace, True, "v1") != before


def test_key_is_the_same_in_another_process(tmp_path: Path) -> None:
    path = write_configs(tmp_path, ["tiny-h100"])[0]
    code = ("import sys\nfrom sim.config import load_config\nfrom sim.studies.cache import "
            "run_key\nprint(run_key(load_config(sys.argv[1]), True, 'v1'))\n")
    other = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                           text=True, check=True, cwd=ROOT,
                           env={**os.environ, "PYTHONHASHSEED": "123"}).stdout.strip()
    assert other == run_key(load_config(path), True, "v1")


def test_source_hash_follows_source_files_only(tmp_path: Path) -> None:
    pkg = tmp_path / "sim"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "engine" / "a.py").write_text("x = 1\n")
    (tmp_path / "hw" / "presets").mkdir(parents=True)
    (tmp_path / "hw" / "presets" / "c.yaml").write_text("peak: 1\n")
    first = source_hash(tmp_path)
    (pkg / "engine" / "__pycache__").mkdir()
    (pkg / "engine" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (pkg / "notes.txt").write_text("not code")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.yaml").write_text("outside the packages")
    source_hash.cache_clear()
    assert source_hash(tmp_path) == first
    (tmp_path / "hw" / "presets" / "c.yaml").write_text("peak: 2\n")  # a preset is code
    source_hash.cache_clear()
    second = source_hash(tmp_path)
    assert second != first
    (pkg / "engine" / "a.py").write_text("x = 2\n")
    source_hash.cache_clear()
    assert source_hash(tmp_path) not in (first, second)
    source_hash.cache_clear()


def test_code_version_names_the_package_version_and_the_sources() -> None:
    from sim.run.results import package_version

    cache_mod.code_version.cache_clear()
    version = cache_mod.code_version()
    assert version.startswith(package_version() + "+")
    assert len(version.split("+")[1]) == 12


# -- resume -------------------------------------------------------------------------------
def test_more_variants_run_only_the_new_ones(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write_configs(tmp_path)
    with pinned_code_version(monkeypatch):
        study = tmp_path / "study"
        first = run_compare(load_inputs(paths[:2]), study, progress=False)
        assert (first.ran, first.cached) == (2, 0)
        before = {k: fingerprint(p) for k, p in entries(study).items()}
        again = run_compare(load_inputs(paths[:2]), study, progress=False)
        assert (again.ran, again.cached) == (0, 2)
        more = run_compare(load_inputs(paths[:3]), study, progress=False)
        assert (more.ran, more.cached) == (1, 2)
        after = entries(study)
        assert len(after) == 3
        for key, fp in before.items():  # the first two runs were not made again
            assert fingerprint(after[key]) == fp
        fresh = run_compare(load_inputs(paths[:3]), tmp_path / "fresh", progress=False)
        assert (fresh.ran, fresh.cached) == (3, 0)
    assert_same_study(study, tmp_path / "fresh")
    record = json.loads((study / "compare.json").read_text())
    assert [r["config"] for r in record["rows"]] == list(CONFIGS)[:3]


def test_only_a_study_folder_is_resumed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_configs(tmp_path, ["tiny-moska"])[0]
    out = tmp_path / "out"
    (out / "cache").mkdir(parents=True)  # a 'cache' folder without the tag is not a study's
    assert compare_main([str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--out:" in err and "not a study folder" in err
    assert sorted(p.name for p in out.iterdir()) == ["cache"]
    assert not is_study_folder(out)


def test_kill_midway_then_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A study in a subprocess is killed with SIGKILL once some of its runs are cached; the
    same command run again makes only the missing runs, leaves the finished entries as they
    were (same bytes, same mtimes, including run_info.json's wall time), and writes the
    report an uninterrupted study writes, byte for byte."""
    paths = write_configs(tmp_path, requests=60)
    args = [*map(str, paths), *SWEEP]
    study = tmp_path / "killed"
    cmd = [sys.executable, "-c", PINNED_MAIN, "compare", *args, "--out", str(study),
           "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    # a main run, one load-sweep point and the point at the main run's own load, per config
    total = 3 * len(paths)
    deadline = time.monotonic() + 240
    try:
        while len(entries(study)) < 2:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the study made no progress"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the study's own process group
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_with = {k: fingerprint(p) for k, p in entries(study).items()}
    assert 2 <= len(killed_with) < total, "killed too late to test resuming"
    assert not (study / "compare.json").exists()  # no report: the study did not finish
    assert is_study_folder(study)

    with pinned_code_version(monkeypatch):
        resumed = run_compare(load_inputs(paths), study,
                              settings=_settings(), progress=False, backend=LocalBackend(1))
        assert resumed.cached == len(killed_with)
        assert resumed.ran == total - len(killed_with)
        for key, fp in killed_with.items():  # finished runs were not made again
            assert fingerprint(study / "cache" / key) == fp
        assert len(entries(study)) == total
        assert not list((study / "cache").glob(".tmp-*"))
        rc = compare_main([*args, "--out", str(tmp_path / "whole"), "--no-progress"])
    assert rc == 0
    assert_same_study(study, tmp_path / "whole")


def _settings():
    from sim.studies.sweep import SweepSettings

    return SweepSettings.from_mapping({}, "", points=1, requests=12)


def test_a_half_built_entry_is_removed_and_made_again(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_configs(tmp_path, ["tiny-prefix"])[0]
    with pinned_code_version(monkeypatch):
        study = tmp_path / "s"
        run_compare(load_inputs([path]), study, progress=False)
        (key,) = entries(study)
        cache = RunCache(study)
        # what a kill during a run leaves: a temporary folder, and no entry
        stage = cache.stage(key)
        (stage / "outcome.json").write_text("{")
        os.replace(study / "cache" / key, study / "cache" / f".tmp-{key}-old")
        again = run_compare(load_inputs([path]), study, progress=False)
        assert (again.ran, again.cached) == (1, 0)
        assert list(entries(study)) == [key]
        assert not list((study / "cache").glob(".tmp-*"))
        json.loads((study / "cache" / key / "outcome.json").read_text())
