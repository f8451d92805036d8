"""Bounded memory (issue 13 part 2): the run's records take O(1) or a few numeric bytes per
request, never a Python object per request or per decode step, and the files and summary
they give are the same as from the whole in-memory columns."""

from __future__ import annotations

import csv
import io
import tracemalloc

import numpy as np
import pytest
from small_config import small_config

from sim.config import config_from_dict, resolve
from sim.engine import records
from sim.engine.records import Sampler, TokenLog
from sim.run import request_records, run_simulation
from sim.run.request_records import RequestRecords
from sim.run.summary import PERCENTILES, latencies, throughput_series, token_throughput
from workloads.request import RequestSpec, RequestTable


def _run(**over):
    return run_simulation(config_from_dict(small_config(**over)), write=False, progress=False)


def _rows_at_once(result) -> str:
    """requests.csv as the simulator wrote it before it was made in blocks: every row built
    from the whole columns at once, one csv.writer over all of them."""
    log = result.cluster.log
    lat = latencies(log)
    arrived = np.nonzero(log.arrival_ns >= 0)[0]

    def ms(a):
        return ["" if v < 0 else f"{v / 1e6:.6f}" for v in a.tolist()]

    def fl(a):
        return ["" if not np.isfinite(v) else f"{v:.6f}" for v in a.tolist()]

    names = [u.name for u in result.cluster.unique]
    cols = [arrived.tolist(),
            ["" if n < 0 else names[n] for n in log.node[arrived].tolist()],
            [log.STATUS_NAMES[s] for s in log.status[arrived].tolist()],
            ms(log.arrival_ns[arrived]), ms(log.admit_ns[arrived]), ms(log.first_ns[arrived]),
            ms(log.done_ns[arrived]),
            log.unique_tokens[arrived].tolist(), log.shared_tokens[arrived].tolist(),
            log.output_tokens[arrived].tolist(), log.generated[arrived].tolist(),
            fl(lat.ttft_ms[arrived]), fl(lat.tpot_ms[arrived]), fl(lat.e2e_ms[arrived])]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RequestRecords.header)
    w.writerows(list(r) for r in zip(*cols))
    return buf.getvalue()


# -- requests.csv in blocks ----------------------------------------------------------------
@pytest.mark.parametrize("over", [
    {},  # drains: every request completes
    {"run.duration_s": 0.4, "run.requests": None},  # stops with requests in flight (blanks)
])
def test_requests_csv_in_blocks_is_the_csv_made_at_once(tmp_path, over):
    r = _run(**over)
    want = _rows_at_once(r)
    assert r.summary["requests_arrived"] > 10
    if over:
        assert r.summary["requests_in_flight"] > 0 and ",," in want  # blanks are exercised
    for block in (1, 7, 64, 1 << 16):  # one row, odd blocks, one block for all
        assert RequestRecords(r.cluster.log, [u.name for u in r.cluster.unique],
                              block=block).csv_text() == want
    # the file the results folder gets, and the compatibility list of rows
    path = tmp_path / "requests.csv"
    r.requests.write_csv(path)
    assert path.read_text(encoding="utf-8") == want
    assert [[str(v) for v in row] for row in r.requests_rows] == \
        list(csv.reader(io.StringIO(want)))[1:]
    assert len(r.requests) == r.summary["requests_arrived"]


def test_results_folder_requests_csv_is_the_blocked_text(tmp_path, monkeypatch):
    monkeypatch.setattr(request_records, "BLOCK", 5)
    r = run_simulation(config_from_dict(small_config()), tmp_path / "out", progress=False)
    want = _rows_at_once(r)
    assert (tmp_path / "out" / "requests.csv").read_text(encoding="utf-8") == want


def test_request_records_rejects_a_bad_block():
    r = _run(**{"run.requests": 3})
    with pytest.raises(ValueError, match="block: expected an integer >= 1"):
        RequestRecords(r.cluster.log, ["u0", "u1"], block=0)


# -- percentiles ---------------------------------------------------------------------------
def test_summary_percentiles_are_exact_numpy_percentiles_of_the_whole_columns():
    r = _run(**{"run.requests": 120, "workload.arrivals.rate_per_s": 80})
    log = r.cluster.log
    lat = latencies(log)
    done = (log.arrival_ns >= 0) & (log.status == log.COMPLETED)
    first = (log.arrival_ns >= 0) & (log.first_ns >= 0)
    for key, values in (("ttft_ms", lat.ttft_ms[first]), ("tpot_ms", lat.tpot_ms[done]),
                        ("e2e_ms", lat.e2e_ms[done])):
        v = values[np.isfinite(values)]
        got = r.summary[key]
        assert got["count"] == len(v) > 50
        assert got["mean"] == float(v.mean())
        for name, q in PERCENTILES:
            assert got[name] == float(np.percentile(v, q)), (key, name)


# -- the token log -------------------------------------------------------------------------
def _sampler_grid(t_end: int, dt0: int, max_samples: int) -> np.ndarray:
    """The times a Sampler samples a run ending at ``t_end`` (its grid halves as it goes)."""
    s = Sampler(list, [], dt0, max_samples=max_samples)
    t = 0
    while t < t_end:
        s.sample(t)
        t = (t // s.dt + 1) * s.dt
    if not s.times or s.times[-1] < t_end:
        s.sample(t_end)
    return np.asarray(s.times, dtype=np.int64), s.dt


@pytest.mark.parametrize("seed", range(4))
def test_token_bins_give_the_per_step_throughput_exactly(seed):
    rng = np.random.default_rng(seed)
    dt0, max_samples = int(rng.integers(1, 50)), int(rng.integers(4, 40))
    steps = int(rng.integers(1, 3000))
    times = np.sort(rng.integers(0, 5000 * dt0, size=steps))
    times[: int(rng.integers(0, 3))] = 0  # tokens at t = 0 have their own slot
    counts = rng.integers(1, 300, size=steps)
    t_end = int(times[-1]) + int(rng.integers(0, 3 * dt0))
    grid, dt_s = _sampler_grid(t_end, dt0, max_samples)
    log = TokenLog(max_bins=2 * max_samples + 2, raw_steps=10)
    warm = int(rng.integers(0, t_end + 1))
    log.use_grid(dt0, warmup_ns=warm)
    for t, n in zip(times.tolist(), counts.tolist()):
        log.add(t, n)
    assert log.times is None  # past raw_steps: only the bins are kept
    assert len(log.bins) <= 2 * max_samples + 2 and dt_s % log.dt == 0
    want = throughput_series(times, counts, grid)
    assert np.array_equal(token_throughput(log, grid), want, equal_nan=True)
    assert log.total == counts.sum()
    assert log.made_since(warm) == counts[times >= warm].sum()
    assert log.made_since(t_end) == counts[times >= t_end].sum()
    with pytest.raises(RuntimeError, match="more than 10 steps"):
        log.arrays()


def test_token_log_refuses_what_its_bins_cannot_answer():
    log = TokenLog(max_bins=8)
    log.use_grid(10, warmup_ns=15)
    for t in (0, 5, 12, 30, 31):
        log.add(t, 1)
    assert log.made_until(10) == 2 and log.made_until(31) == 5 and log.made_until(-1) == 0
    assert log.made_since(15) == 2 and log.made_since(31) == 1 and log.made_since(32) == 0
    with pytest.raises(RuntimeError, match="not a multiple of the bin width"):
        log.made_until(13)
    with pytest.raises(RuntimeError, match="not known exactly"):
        log.made_since(20)
    with pytest.raises(RuntimeError, match="tokens were made already"):
        log.use_grid(10)


def test_a_long_drain_coarsens_the_token_bins_and_the_time_series_stays_exact(monkeypatch):
    """Arrivals over ~0.1 s, a drain of many seconds: the bins (here at most 2,048) double
    several times, the sampler's grid halves, and timeseries.csv's throughput is the same as
    from every step's (time, tokens)."""
    monkeypatch.setattr(records, "TOKEN_BINS", 2048)
    r = _run(**{"run.requests": 120, "workload.arrivals.rate_per_s": 2000,
                "workload.output_tokens": {"dist": "uniform", "min": 100, "max": 300}})
    tok = r.cluster.records.tokens
    times, counts = tok.arrays()
    grid = np.rint(r.timeseries_rows[:, 0] * 1e9).astype(np.int64)
    dt0 = max(1000, int(r.cluster.log.arrival_ns.max()) // records.MAX_SAMPLES)  # the first
    assert tok.dt >= 4 * dt0  # coarsened at least twice
    assert np.array_equal(r.timeseries_rows[:, 1], throughput_series(times, counts, grid),
                          equal_nan=True)
    assert r.summary["tokens_generated"] == counts.sum()


# -- the arrival plan as columns -----------------------------------------------------------
def test_request_table_is_the_sequence_of_request_specs():
    specs = [RequestSpec(0, 5, 10, 3), RequestSpec(1, 7, 11, 4, 2, None, 5),
             RequestSpec(2, 9, 12, 1, 0, 100), RequestSpec(3, 9, 13, 2, 1, 0, 0)]
    t = RequestTable.of(specs)
    assert list(t) == specs and t == specs and specs == t and tuple(specs) == t
    assert len(t) == 4 and t[-1] == specs[-1] and t[1:3] == specs[1:3] and t[::2] == specs[::2]
    assert [r.id for r in t[2:]] == [2, 3]
    assert hash(t) == hash(RequestTable.of(specs)) and t != specs[:3] and t != specs[::-1]
    assert RequestTable.of(t) is t and RequestTable.of([]) == [] and not RequestTable.empty()
    with pytest.raises(IndexError):
        t[4]
    with pytest.raises(ValueError):
        t.arrival_ns[0] = 1  # read-only: plans are shared by runs
    with pytest.raises(ValueError, match="expected integers"):
        RequestTable([0.5], [1], [1])
    with pytest.raises(ValueError, match="has 2 values"):
        RequestTable([0], [1, 2], [1])
    # a caller's arrays are copied, not frozen
    a = np.array([0, 1])
    RequestTable(a, a, a)
    a[0] = 3


def test_plans_hold_columns_not_objects():
    exp = resolve(config_from_dict(small_config(**{"run.requests": 5000})))
    plan = exp.workload.requests
    assert isinstance(plan, RequestTable) and len(plan) == 5000
    assert plan.nbytes <= 48 * 5000  # ~32-48 B a request, not a ~190 B object


# -- memory per request --------------------------------------------------------------------
def _traced_peak(n: int) -> int:
    """Peak bytes traced while simulating ``n`` requests and writing their requests.csv."""
    cfg = config_from_dict(small_config(**{
        "run.requests": n, "workload.arrivals.rate_per_s": 400,
        "workload.output_tokens": 2}))
    tracemalloc.start()
    try:
        r = run_simulation(cfg, write=False, progress=False)
        sink = io.StringIO()
        for chunk in r.requests.csv_chunks():
            sink.write(chunk)
            sink.seek(0)
            sink.truncate()
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def test_memory_per_simulated_request_is_a_few_hundred_bytes(monkeypatch):
    """The peak of what a run allocates grows by ~170 B per simulated request (measured: the
    request log's numeric columns and the plan's), not by the ~1 KB it took when
    requests.csv's rows were Python lists, the plan RequestSpec objects and the token log
    an entry per step (1,040 B on this test before)."""
    monkeypatch.setattr(request_records, "BLOCK", 256)  # the CSV's block, not the run's size
    small, large = _traced_peak(1500), _traced_peak(7500)
    per_request = (large - small) / 6000
    assert per_request < 400, f"{per_request:.0f} B per simulated request"
