"""Same config and seed -> byte-identical summary.json: in one process, across processes
with different hash seeds, and through the whole config -> results-folder path."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from sim.engine.experiment import make_experiment
from sim.run import simulate
from sim.run.results import summary_json
from workloads.request import RequestSpec

SCRIPT = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    from sim.engine.experiment import make_experiment
    from sim.run.results import summary_json
    from sim.run import simulate
    from workloads.request import RequestSpec

    def run():
        rng = np.random.default_rng(5)
        t = np.cumsum(rng.exponential(2e6, 80)).astype(np.int64)
        reqs = [RequestSpec(i, int(t[i]), int(rng.integers(200, 3000)),
                            int(rng.integers(2, 40))) for i in range(80)]
        spec = make_experiment(requests=80, unique_nodes=3, shared_nodes=2, max_batch=16,
                         window_ns=30_000, granularity="layer", seed=11)
        return summary_json(simulate(spec.with_requests(reqs)).summary)

    if __name__ == "__main__":
        sys.stdout.write(hashlib.sha256(run().encode()).hexdigest())
""")


def _digest_in_subprocess(tmp_path: Path, hash_seed: str) -> str:
    script = tmp_path / "det.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, check=True, cwd=tmp_path)
    return out.stdout.strip()


def test_same_seed_same_summary_in_process():
    ns: dict = {}
    exec(SCRIPT.replace('if __name__ == "__main__":', "if False:"), ns)
    a, b = ns["run"](), ns["run"]()
    assert a == b
    assert json.loads(a)["requests_completed"] == 80


def test_same_seed_same_summary_across_processes_and_hash_seeds(tmp_path):
    ns: dict = {}
    exec(SCRIPT.replace('if __name__ == "__main__":', "if False:"), ns)
    here = hashlib.sha256(ns["run"]().encode()).hexdigest()
    assert _digest_in_subprocess(tmp_path, "1") == here
    assert _digest_in_subprocess(tmp_path, "12345") == here


def test_a_different_seed_changes_the_run():
    reqs = [RequestSpec(i, i * 1_000_000, 1000, 30) for i in range(30)]
    a = simulate(make_experiment(requests=30, seed=1, shared_nodes=2).with_requests(reqs)).summary
    b = simulate(make_experiment(requests=30, seed=2, shared_nodes=2).with_requests(reqs)).summary
    assert summary_json(a) != summary_json(b)  # routing draws differ


def test_summary_has_no_wall_clock_values():
    reqs = [RequestSpec(i, i * 1_000_000, 1000, 5) for i in range(5)]
    s = simulate(make_experiment(requests=5).with_requests(reqs)).summary
    text = summary_json(s)
    for word in ("wall", "events_per_s", "timestamp"):
        assert word not in text
