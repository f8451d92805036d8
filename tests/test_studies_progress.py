"""Study progress on stderr: runs done / running / failed / queued and the time left, one
line per change (rate-limited) when stderr is not a terminal, one line rewritten in place
on a terminal; failures always on a line of their own; a final line always."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sim.cli.compare import compare_main
from sim.studies.progress import StudyProgress, format_duration
from tests.study_helpers import pinned_code_version, write_configs


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make(total: int = 6, cached: int = 0, slots: int = 2, tty: bool = False,
         interval: float = 5.0) -> tuple[StudyProgress, io.StringIO, Clock]:
    clock, out = Clock(), io.StringIO()
    p = StudyProgress(total, cached, slots, stream=out, clock=clock, tty=tty,
                      min_interval_s=interval, name="s")
    return p, out, clock


def test_durations_read_as_people_write_them() -> None:
    assert [format_duration(x) for x in (0, 42.4, 185, 7620, -3)] == [
        "0s", "42s", "3m05s", "2h07m", "0s"]


def test_counts_and_time_left_by_hand() -> None:
    p, _out, clock = make(total=6, cached=1, slots=2)
    p.submitted(["a", "b", "c", "d", "e"])
    assert (p.running, p.queued, p.done, p.failed) == (2, 3, 0, 0)
    assert p.seconds_left(clock()) is None  # nothing finished yet: no estimate
    clock.t += 10
    p.finished("a", "A: main run", 10.0)
    # b started at t=100 (10 s ago), c just now; mean 10 s; 2 queued (d, e)
    # left = (2 x 10 + max(10 - 10, 0) + max(10 - 0, 0)) / min(2, 4) = 15
    assert (p.running, p.queued, p.done) == (2, 2, 1)
    assert p.seconds_left(clock()) == pytest.approx(15.0)
    clock.t += 4
    p.finished("b", "B: main run", 14.0, error="too big")
    assert p.failed == 1
    # mean 12; c running 4 s, d just started; e queued: (12 + 8 + 12) / 2 = 16
    assert p.seconds_left(clock()) == pytest.approx(16.0)
    line = p.state_line(clock())
    assert line.startswith("s: 3/6 runs done (1 from cache), 2 running, 1 failed, 1 queued; "
                           "14s elapsed, ~16s left")


def test_log_lines_one_per_change_rate_limited() -> None:
    p, out, clock = make(total=4, slots=1, interval=5.0)
    p.submitted(["a", "b", "c", "d"])
    clock.t += 1
    p.finished("a", "A: main run", 1.0)  # within 5 s of the first line: folded
    clock.t += 1
    p.finished("b", "B: main run", 1.0)
    lines = out.getvalue().splitlines()
    first = "s: 0/4 runs done, 1 running, 0 failed, 3 queued; 0s elapsed, time left unknown"
    assert lines == [first]
    clock.t += 2
    p.tick()  # 4 s after the first line: still folded
    assert len(out.getvalue().splitlines()) == 1
    clock.t += 1
    p.tick()  # 5 s: the folded changes come out, on one line
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("s: 2/4 runs done, 1 running")
    assert "last: B: main run 1.0s" in lines[1]
    clock.t += 10
    p.tick()  # nothing changed: no line
    assert len(out.getvalue().splitlines()) == 2
    p.finished("c", "C: sweep 1/1 (2 req/s)", 3.0, error="no fit")  # failure: its own line
    lines = out.getvalue().splitlines()
    assert "s: FAILED C: sweep 1/1 (2 req/s): no fit" in lines
    assert lines[-1].startswith("s: 3/4 runs done, 1 running, 1 failed")
    assert "\r" not in out.getvalue()  # not a terminal: plain lines
    clock.t += 1
    p.finished("d", "D: main run", 1.0)
    p.close()  # the final state, always
    assert out.getvalue().splitlines()[-1].startswith(
        "s: 4/4 runs done, 0 running, 1 failed, 0 queued; 16s elapsed; last: D")


def test_terminal_rewrites_one_line() -> None:
    p, out, clock = make(total=2, slots=1, tty=True)
    p.submitted(["a", "b"])
    clock.t += 1
    p.finished("a", "A: main run", 1.0)
    text = out.getvalue()
    assert text.startswith("\rs: 0/2 runs done") and "\n" not in text
    assert "\rs: 1/2 runs done" in text  # 1 s later: past the terminal's 0.5 s interval
    p.finished("b", "B: main run", 1.0)
    p.close()
    assert out.getvalue().endswith("\n")
    assert out.getvalue().count("\n") == 1
    assert out.getvalue().rsplit("\r", 1)[1].startswith("s: 2/2 runs done")


def test_disabled_prints_nothing() -> None:
    clock, out = Clock(), io.StringIO()
    p = StudyProgress(2, 0, 1, enabled=False, stream=out, clock=clock, tty=False)
    p.submitted(["a"])
    p.finished("a", "A", 1.0, error="x")
    p.close()
    assert out.getvalue() == ""


def test_compare_reports_progress_and_the_cache(tmp_path: Path,
                                                capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write_configs(tmp_path, ["tiny-moska", "tiny-prefix"], requests=12)
    out = tmp_path / "out"
    with pinned_code_version(monkeypatch):
        assert compare_main([str(paths[0]), "--out", str(out)]) == 0
        first = capsys.readouterr().err.splitlines()
        assert compare_main([*map(str, paths), "--out", str(out)]) == 0
        second = capsys.readouterr().err.splitlines()
    assert first[0].startswith("tiny-moska: 0/1 runs done, 1 running, 0 failed, 0 queued")
    assert first[-1].startswith("tiny-moska: 1/1 runs done, 0 running, 0 failed, 0 queued")
    assert second[0].startswith("compare: 1/2 runs done (1 from cache), 1 running")
    assert any(line.startswith("compare: 2/2 runs done (1 from cache), 0 running")
               for line in second)
    assert second[-1] == f"1 of 2 runs read from {out / 'cache'} (finished before), 1 made now"
    assert compare_main([*map(str, paths), "--out", str(tmp_path / "quiet"),
                         "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
