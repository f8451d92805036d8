"""Signals during a run (issue 14), in real subprocesses of ``moska-sim run``:

- SIGTERM (like SIGINT) during the simulation or while the results are being written:
  exit 143 (130) with one line, no results folder, no staging folder;
- SIGKILL at the same moments: no results folder under the final name; a staging folder
  a kill leaves behind is removed by the next run writing beside it, which completes.

"While writing" is caught by watching for the run's staging folder (``.tmp-<name>-p<pid>-``)
to appear beside the target; "during the simulation" by a run of some 20 s of CPU time,
signalled once the process has used 2 s of CPU (start-up and config take about 1 s) and
has no staging folder yet, so a loaded or a fast machine signals it at the same stage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

from tests.test_fuzz_cli import base_config, write_config

ROOT = Path(__file__).resolve().parents[1]


def _start(cfg: Path, out: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "sim.cli", "run", str(cfg), "--no-progress",
                             "--out", str(out)], cwd=out.parent, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_staging(parent: Path, proc: subprocess.Popen[str], timeout: float = 120) -> Path:
    """The staging folder of ``proc`` once it exists (the run is writing its results)."""
    deadline = time.monotonic() + timeout
    pattern = f"*-p{proc.pid}-*"
    while time.monotonic() < deadline:
        found = [p for p in parent.glob(f".tmp-{pattern}") if p.is_dir()]
        if found:
            return found[0]
        if proc.poll() is not None:
            pytest.fail(f"the run ended before writing: {proc.communicate()}")
        time.sleep(0.002)
    pytest.fail("the run never started writing")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_until_simulating(proc: subprocess.Popen[str], parent: Path) -> None:
    """Return once ``proc`` has used 2 s of CPU without starting to write."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it was signalled: {proc.communicate()}")
        if _cpu_seconds(proc.pid) >= 2.0:
            assert not list(parent.glob(".tmp-*")), "the run was already writing"
            return
        time.sleep(0.05)
    pytest.fail("the run never got 2 s of CPU")


def _long_config(tmp: Path, requests: int, granularity: str = "step") -> Path:
    """A busier run than the fuzz base: ``requests`` at 200/s; ``layer`` granularity is
    some 30 times the events of ``step`` (40 000 requests: about 20 s of CPU)."""
    data = base_config(**{"run.requests": requests, "workload.arrivals.rate_per_s": 200,
                          "run.granularity": granularity})
    return write_config(tmp, data)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _entries(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name != "exp.yaml")


@pytest.mark.parametrize("signum, code, word", [(signal.SIGTERM, 143, "SIGTERM"),
                                                (signal.SIGINT, 130, "interrupted")])
def test_signal_during_simulation_exits_cleanly(tmp_path: Path, signum: int, code: int,
                                                word: str) -> None:
    cfg = _long_config(tmp_path, 40_000, "layer")
    proc = _start(cfg, tmp_path / "out")
    _wait_until_simulating(proc, tmp_path)
    proc.send_signal(signum)
    rc, err = _finish(proc)
    assert rc == code, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and word in lines[0] and "Traceback" not in err, err
    assert _entries(tmp_path) == []


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_while_writing_leaves_nothing(tmp_path: Path, signum: int, code: int) -> None:
    cfg = _long_config(tmp_path, 300)
    proc = _start(cfg, tmp_path / "out")
    _wait_for_staging(tmp_path, proc)
    proc.send_signal(signum)
    rc, err = _finish(proc)
    if rc == 0:  # the write finished between the poll and the signal: complete, by design
        assert (tmp_path / "out" / "run_info.json").is_file()
        return
    assert rc == code, err
    assert "Traceback" not in err
    assert _entries(tmp_path) == []


def test_sigkill_during_simulation_leaves_nothing(tmp_path: Path) -> None:
    cfg = _long_config(tmp_path, 40_000, "layer")
    proc = _start(cfg, tmp_path / "out")
    _wait_until_simulating(proc, tmp_path)
    proc.kill()
    proc.wait()
    assert _entries(tmp_path) == []


def test_sigkill_while_writing_is_cleaned_by_the_next_run(tmp_path: Path) -> None:
    """The killed run's staging folder stays (nothing can remove it) and no folder has the
    final name; the next run into the same --out removes it and completes."""
    cfg = _long_config(tmp_path, 300)
    proc = _start(cfg, tmp_path / "out")
    staging = _wait_for_staging(tmp_path, proc)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "out").exists() or proc.returncode == 0
    if (tmp_path / "out").exists():  # killed after the rename: the folder is complete
        assert (tmp_path / "out" / "run_info.json").is_file()
        return
    assert staging.exists()
    again = _start(cfg, tmp_path / "out")
    rc, err = _finish(again)
    assert rc == 0, err
    assert not staging.exists()
    assert _entries(tmp_path) == ["out"]
    assert (tmp_path / "out" / "report.html").is_file()
