"""Output folders (issue 14): ``--out`` of run, replay and analyze is checked before any
work, a full disk or a refused write while writing leaves nothing, staging folders of
killed runs are removed by the next run, and a second run into the same folder is refused
before it simulates.

The generated cases (hypothesis, derandomized) are bad output paths; each must end in exit
2 with one stderr line naming ``--out``, quickly (nothing was simulated: stdout is empty),
with the file system as it was.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.atomic import OWNER_FILE, remove_stale_staging, staged_folder
from sim.cli.common import MIN_FREE_ENV, check_out_path
from tests.test_fuzz_cli import base_config, call, fuzz, workdir, write_config

SAMPLE = Path(__file__).resolve().parents[1] / "traces" / "samples" / "cpu-tiny.trace.npz"


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def _argv(command: str, cfg: Path, out: str) -> list[str]:
    if command == "run":
        return ["run", str(cfg), "--no-progress", "--out", out]
    if command == "replay":
        return ["replay", str(SAMPLE), "--config", str(cfg), "--no-progress", "--out", out]
    return ["analyze", str(cfg), "--out", out]


@st.composite
def bad_out(draw: st.DrawFn, tmp: Path) -> str:
    """An output path that cannot take a results folder, made real under ``tmp``."""
    how = draw(st.sampled_from(["file", "non-empty", "under-file", "long-name", "long-path",
                                "proc", "sys", "empty", "broken-link", "deep-under-file"]))
    if how == "file":
        (tmp / "taken").write_text("x")
        return str(tmp / "taken")
    if how == "non-empty":
        folder = tmp / "full"
        folder.mkdir()
        (folder / draw(st.sampled_from(["summary.json", ".hidden", "x"]))).write_text("x")
        return str(folder)
    if how in ("under-file", "deep-under-file"):
        (tmp / "afile").write_text("x")
        tail = draw(st.lists(st.text(alphabet="abc", min_size=1, max_size=4), min_size=1,
                             max_size=4 if how == "deep-under-file" else 1))
        return str(tmp.joinpath("afile", *tail))
    if how == "long-name":
        char = draw(st.sampled_from(["n", "é", "€", "𝄞"]))
        count = 256 // len(char.encode()) + draw(st.integers(1, 50))
        return str(tmp / (char * count))
    if how == "long-path":
        part = "d" * 200
        return str(tmp.joinpath(*[part] * draw(st.integers(21, 40))))
    if how == "proc":
        return "/proc/self/" + draw(st.sampled_from(["nope/out", "out"]))
    if how == "sys":
        return "/sys/" + draw(st.text(alphabet="abc", min_size=1, max_size=5))
    if how == "empty":
        return ""
    link = tmp / "dangling"
    link.symlink_to(tmp / "nowhere" / "at-all")
    return str(link)


@fuzz(90)
@given(st.sampled_from(["run", "replay", "analyze"]), st.data())
def test_bad_out_is_refused_before_any_work(command: str, data: st.DataObject) -> None:
    """90 bad ``--out`` paths for run, replay and analyze: refused at once, one line."""
    with workdir() as tmp:
        cfg = write_config(tmp, base_config())
        out = data.draw(bad_out(tmp))
        before = _snapshot(tmp)
        start = time.perf_counter()
        outcome = call(_argv(command, cfg, out), tmp)
        assert outcome.crash is None, outcome.crash
        assert outcome.code == 2, (out, outcome.err)
        lines = outcome.lines()
        assert len(lines) == 1 and "--out" in lines[0], lines
        assert outcome.out == ""  # nothing simulated, nothing reported
        assert time.perf_counter() - start < 10
        assert _snapshot(tmp) == before


def test_nearly_full_disk_is_refused_before_simulating(tmp_path: Path, monkeypatch) -> None:
    """Less free space than the minimum (here: the minimum raised past the disk's size)."""
    cfg = write_config(tmp_path, base_config())
    monkeypatch.setenv(MIN_FREE_ENV, str(2**40))
    for command in ("run", "replay", "analyze"):
        outcome = call(_argv(command, cfg, str(tmp_path / "out")), tmp_path)
        assert outcome.code == 2 and "MiB free" in outcome.err and MIN_FREE_ENV in outcome.err
        assert not (tmp_path / "out").exists()
    monkeypatch.setenv(MIN_FREE_ENV, "lots")
    outcome = call(_argv("run", cfg, str(tmp_path / "out")), tmp_path)
    assert outcome.code == 2 and MIN_FREE_ENV in outcome.err


def test_default_results_folder_is_checked_too(tmp_path: Path) -> None:
    """Without --out, ``results/`` under the current folder is checked: a file there
    stops the run before it simulates."""
    cfg = write_config(tmp_path, base_config())
    (tmp_path / "results").write_text("not a folder")
    outcome = call(["run", str(cfg), "--no-progress"], tmp_path)
    assert outcome.code == 2 and "results" in outcome.err and "is a file" in outcome.err


class _FillingFile:
    """A file being written when the disk fills: its second write fails."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.writes = fh, 0

    def write(self, text: str) -> int:
        self.writes += 1
        if self.writes > 1:
            raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it
        return self.fh.write(text)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()


@pytest.mark.parametrize("where", ["data", "requests", "report"])
def test_disk_full_while_writing_leaves_nothing(tmp_path: Path, monkeypatch,
                                                where: str) -> None:
    """ENOSPC while writing a data file (written whole; requests.csv, written a block at a
    time, part-way through) or the report: exit 2, one line naming the file (as it would
    have been, not the staging folder), no results folder, no staging folder (the run used
    to exit 0 without its report)."""
    import sim.report
    import sim.run.request_records

    real_write_text = Path.write_text
    real_open = Path.open

    def full_disk(self: Path, *args: object, **kwargs: object) -> int:
        if self.name == "timeseries.csv":
            raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it
        return real_write_text(self, *args, **kwargs)

    def filling_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        fh = real_open(self, *args, **kwargs)
        writing = "w" in str(args[0] if args else kwargs.get("mode", "r"))
        return _FillingFile(fh) if self.name == "requests.csv" and writing else fh

    def full_report(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "data":
        monkeypatch.setattr(Path, "write_text", full_disk)
        named = tmp_path / "out" / "timeseries.csv"
    elif where == "requests":
        monkeypatch.setattr(Path, "open", filling_open)
        monkeypatch.setattr(sim.run.request_records, "BLOCK", 3)  # several blocks to write
        named = tmp_path / "out" / "requests.csv"
    else:
        monkeypatch.setattr(sim.report, "write_run_report", full_report)
        named = tmp_path / "out"
    cfg = write_config(tmp_path, base_config())
    outcome = call(["run", str(cfg), "--no-progress", "--out", str(tmp_path / "out")], tmp_path)
    assert outcome.crash is None and outcome.code == 2, outcome.err
    assert outcome.lines() == [f"moska-sim run: error: {named}: No space left on device"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


def test_analyze_writes_its_folder_whole_or_not_at_all(tmp_path: Path, monkeypatch) -> None:
    """A write refused while analyze writes: no folder at all; then a whole one."""
    import sim.report

    cfg = write_config(tmp_path, base_config())

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "analysis.png")

    monkeypatch.setattr(sim.report, "plot_analysis", full)
    outcome = call(["analyze", str(cfg), "--out", str(tmp_path / "an")], tmp_path)
    assert outcome.code == 2 and "No space left" in outcome.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]
    monkeypatch.undo()
    outcome = call(["analyze", str(cfg), "--out", str(tmp_path / "an")], tmp_path)
    assert outcome.code == 0, outcome.err
    assert {"analysis.json", "analysis.md"} <= {p.name for p in (tmp_path / "an").iterdir()}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _staging(parent: Path, name: str, pid: int, owner: bool = True) -> Path:
    folder = parent / f".tmp-{name}-p{pid}-abc123"
    folder.mkdir()
    (folder / "summary.json").write_text("{}")
    if owner:
        import socket

        (folder / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": pid}))
    return folder


def test_next_run_removes_staging_of_killed_runs_only(tmp_path: Path) -> None:
    """A dead run's staging folder (with or without its owner file) is removed by the next
    run writing beside it; a live run's, another host's and other hidden folders stay."""
    dead, dead2 = _dead_pid(), _dead_pid()
    stale = _staging(tmp_path, "old", dead)
    stale_no_owner = _staging(tmp_path, "older", dead2, owner=False)
    live = _staging(tmp_path, "busy", os.getppid())
    other_host = tmp_path / f".tmp-far-p{dead}-xyz"
    other_host.mkdir()
    (other_host / OWNER_FILE).write_text(json.dumps({"host": "elsewhere", "pid": dead}))
    cache_like = tmp_path / ".tmp-report-abc"
    cache_like.mkdir()
    cfg = write_config(tmp_path, base_config())
    outcome = call(["run", str(cfg), "--no-progress", "--out", str(tmp_path / "new")], tmp_path)
    assert outcome.code == 0, outcome.err
    assert not stale.exists() and not stale_no_owner.exists()
    assert live.exists() and other_host.exists() and cache_like.exists()
    assert (tmp_path / "new" / "summary.json").is_file()
    assert not (tmp_path / "new" / OWNER_FILE).exists()


def test_live_writer_of_the_same_folder_is_refused(tmp_path: Path) -> None:
    """Another live run staging the same --out: refused before simulating, naming it."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _staging(tmp_path, "out", sleeper.pid)
        with pytest.raises(ValueError, match=f"another run \\(pid {sleeper.pid}\\)"):
            check_out_path(tmp_path / "out")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert check_out_path(tmp_path / "out") == tmp_path / "out"
    assert not list(tmp_path.glob(".tmp-*"))


def test_second_run_into_the_same_out_is_refused_before_simulating(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, base_config())
    argv = ["run", str(cfg), "--no-progress", "--out", str(tmp_path / "out")]
    assert call(argv, tmp_path).code == 0
    before = _snapshot(tmp_path)
    second = call(argv, tmp_path)
    assert second.code == 2 and "not empty" in second.err and second.out == ""
    assert _snapshot(tmp_path) == before


def test_target_appearing_meanwhile_is_a_clean_error(tmp_path: Path) -> None:
    """A folder another run wrote while this one worked: this one's staging is removed and
    the other's folder is left as it was."""
    target = tmp_path / "out"
    with pytest.raises(ValueError, match="appeared while this run was working"), \
            staged_folder(target) as tmp:
        (tmp / "mine.txt").write_text("mine")
        target.mkdir()
        (target / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]
    assert remove_stale_staging(tmp_path) == []


def test_empty_existing_out_folder_is_accepted(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, base_config())
    (tmp_path / "out").mkdir()
    outcome = call(["run", str(cfg), "--no-progress", "--out", str(tmp_path / "out")], tmp_path)
    assert outcome.code == 0, outcome.err
    assert (tmp_path / "out" / "report.html").is_file()
