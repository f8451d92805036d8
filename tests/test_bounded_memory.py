"""Bounded memory (issue 13 part 2): the run's records take O(1) or a few numeric bytes per
request, never a Python object per request or per decode step, and the files and summary
they give are the same as from the whole in-memory columns."""

from __future__ import annotations

import csv
import io
import os
import tracemalloc

import numpy as np
import pytest
from small_config import small_config

from sim.config import config_from_dict, resolve
from sim.engine import records, request_archive
from sim.engine.records import Sampler, TokenLog
from sim.engine.request_archive import RequestArchive
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


# -- memory per request ---------------------------------------------------------------------
def _traced_peak(n: int, rate_per_s: float) -> int:
    """Peak bytes traced while simulating ``n`` requests and writing their requests.csv."""
    cfg = config_from_dict(small_config(**{
        "run.requests": n, "workload.arrivals.rate_per_s": rate_per_s,
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


def test_memory_per_simulated_request_is_the_plan_and_the_final_pass(monkeypatch):
    """With the request archive on file, the peak of what a run allocates grows by what
    the plan holds (32 B a request here) and the summary's exact pass over the archived
    columns (float64 temporaries of a few columns), measured ~90 B a request: not by the
    request log, whose slots follow the requests in flight (a dozen here, however many are
    simulated). The whole log in memory took ~520 B on this test; Python rows and objects
    per request ~1 KB before that."""
    monkeypatch.setattr(request_archive, "IN_MEMORY_MAX", 0)
    # the blocks (CSV rows, plan rows) smaller than both runs: their fixed size cancels
    monkeypatch.setattr(request_records, "BLOCK", 256)
    monkeypatch.setattr(records, "PLAN_BLOCK", 256)
    _traced_peak(300, 20.0)  # warm caches (imports, price tables) before measuring
    small, large = _traced_peak(1500, 20.0), _traced_peak(7500, 20.0)
    per_request = (large - small) / 6000
    assert per_request < 160, f"{per_request:.0f} B per simulated request"


# -- the request log's slots and the archive ---------------------------------------------------
def _plan(a: int, b: int) -> dict[str, np.ndarray]:
    ids = np.arange(a, b, dtype=np.int64)
    return {"unique_tokens": 100 + ids, "prefill_tokens": 50 + ids, "output_tokens": 1 + ids % 5,
            "corpus": ids % 3, "shared_tokens": 1000 + ids, "kv_bytes": 10 * ids}


@pytest.mark.parametrize("in_memory", [True, False])
def test_request_log_slots_follow_requests_in_the_system(monkeypatch, in_memory):
    monkeypatch.setattr(request_archive, "FLUSH_ROWS", 3)  # buffers fill and flush often
    monkeypatch.setattr(records, "PLAN_BLOCK", 4)  # plan blocks turn over
    n = 11
    log = records.RequestLog(n, _plan, RequestArchive(n, in_memory=in_memory), slots=2)
    a, b = log.open(0), log.open(1)
    assert {a, b} == {0, 1} and log.slots == 2
    c = log.open(2)  # no free slot: the columns double
    assert log.slots == 4 and c not in (a, b)
    assert log.rid[c] == 2 and log.unique_tokens[c] == 102 and log.kv_bytes[c] == 20
    assert list(log.rows[c]) == [c, 1, 3, 102, 1002, 2, 20]  # the row a unique node joins
    with pytest.raises(ValueError, match="requests arrive in id order: expected 3, got 5"):
        log.open(5)
    log.arrival_ns[a], log.status[a], log.done_ns[a] = 7, log.COMPLETED, 9
    log.close(np.array([a]))
    assert log.rid[a] == -1
    for rid in range(3, 9):  # one in, one out: the slots stay put
        s = log.open(rid)
        # a slot taken again holds only its new request's plan and fill values
        assert (log.arrival_ns[s], log.done_ns[s], log.status[s]) == (-1, -1, log.PLANNED)
        assert log.unique_tokens[s] == 100 + rid and log.rows[s, 0] == s
        log.arrival_ns[s], log.status[s] = 10 * rid, log.RUNNING
        if rid % 2:
            log.status[s] = log.REJECTED
            log.close(s)
    assert log.slots == 8 and log.max_slots_used <= 6
    log.finish()  # 1, 2, 4, 6, 8 still in the system; 9 and 10 never arrived
    assert len(log.status) == n and log.n == n
    assert log.arrival_ns[0] == 7 and log.done_ns[0] == 9 and log.status[0] == log.COMPLETED
    assert list(log.status) == [3, 0, 0, 4, 2, 4, 2, 4, 2, 0, 0]
    assert list(log.arrival_ns[3:]) == [30, 40, 50, 60, 70, 80, -1, -1]
    for name, column in _plan(0, n).items():  # every row keeps its plan, arrived or not
        assert list(getattr(log, name)) == list(column), name
    assert log.count(log.REJECTED) == 3 and log.arrived == 7
    with pytest.raises(RuntimeError, match="finished"):
        log.open(11)


def test_request_archive_refuses_a_table_with_rows_missing():
    archive = RequestArchive(4, in_memory=False)
    archive.put(np.arange(3), np.zeros((3, len(request_archive.FIELDS)), dtype=np.int64))
    with pytest.raises(RuntimeError, match="3 rows written of 4 planned"):
        archive.columns()


@pytest.mark.parametrize("over", [
    {"run.requests": 150, "workload.arrivals.rate_per_s": 400},  # queues: many slots
    {"run.duration_s": 0.5, "run.requests": 300},  # some in flight, some never arrive
    {"faults": [{"kind": "fail", "target": "unique1", "at_s": 0.15, "duration_s": 0.2},
                {"kind": "fail", "target": "shared1", "at_s": 0.1, "duration_s": 0.3}],
     "faults_policy": {"query_timeout_ms": 20, "on_timeout": "retry", "max_retries": 1},
     "run.requests": 120, "workload.arrivals.rate_per_s": 150},  # re-admitted and failed
])
def test_archive_on_file_gives_the_run_the_memory_one_gives(tmp_path, monkeypatch, over):
    """The same run with its finished rows in memory and on a temporary file, flushed in
    odd buffers: summary.json and requests.csv are the same bytes."""
    def run(path, **patches):
        with monkeypatch.context() as m:
            for name, value in patches.items():
                m.setattr(request_archive, name, value)
            return run_simulation(config_from_dict(small_config(**over)), path, progress=False)

    mem = run(tmp_path / "memory")
    disk = run(tmp_path / "disk", IN_MEMORY_MAX=0, FLUSH_ROWS=7)
    assert mem.cluster.log.archive.in_memory and not disk.cluster.log.archive.in_memory
    for name in ("summary.json", "requests.csv"):
        assert (tmp_path / "memory" / name).read_bytes() == (tmp_path / "disk" / name).read_bytes()
    s = mem.summary
    log = mem.cluster.log
    # the slots followed the requests in the system (+1: a rejected one passes through)
    assert log.max_slots_used <= s["max_in_system"] + 1
    assert log.slots <= max(records.INITIAL_SLOTS, 2 * log.max_slots_used)
    if "faults" in over:
        assert s["fault_counters"]["readmitted"] > 0


def test_a_full_temporary_disk_is_an_error_before_the_run(tmp_path, monkeypatch, capsys):
    """The archive's file is allocated on disk up front: with no room (ENOSPC) the run
    stops before it starts, with a line saying where, and leaves no results folder (a map
    written past a full disk would kill the process with SIGBUS instead)."""
    import errno

    from sim.cli import main as cli_main

    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(request_archive, "IN_MEMORY_MAX", 0)
    monkeypatch.setattr(request_archive.os, "posix_fallocate", no_room)
    cfg = tmp_path / "c.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(small_config()))
    assert cli_main(["run", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "request archive: cannot reserve" in err and "set TMPDIR" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_archive_file_without_posix_fallocate_writes_its_zeros(monkeypatch):
    """Where the OS has no posix_fallocate (macOS) the file is allocated by writing zeros:
    the same size, and rows written and read back the same."""
    monkeypatch.delattr(request_archive.os, "posix_fallocate", raising=False)
    n = 5
    archive = RequestArchive(n, in_memory=False)
    assert os.fstat(archive._file.fileno()).st_size == archive.nbytes == n * request_archive.ROW_BYTES
    rows = np.arange(n * len(request_archive.FIELDS), dtype=np.int64).reshape(n, -1) % 100
    archive.put(np.array([4, 0, 3, 1, 2]), rows)
    columns = archive.columns()
    for k, name in enumerate(request_archive.FIELD_NAMES):
        assert list(columns[name][[4, 0, 3, 1, 2]]) == list(rows[:, k]), name


def test_price_caches_are_bounded_and_emptying_them_changes_nothing(tmp_path, monkeypatch):
    """A price cache holds at most PRICE_CACHE_MAX shapes (emptied when full): with a cap
    of 3 shapes the run re-prices constantly and its files are the same bytes."""
    from sim.engine.nodes import pricing

    over = {"run.requests": 60, "run.granularity": "layer"}
    free = run_simulation(config_from_dict(small_config(**over)), tmp_path / "free",
                          progress=False)
    monkeypatch.setattr(pricing, "PRICE_CACHE_MAX", 3)
    capped = run_simulation(config_from_dict(small_config(**over)), tmp_path / "capped",
                            progress=False)
    sizes = capped.run_info["price_cache_shapes"]
    assert sizes["clears"] > 10 and free.run_info["price_cache_shapes"]["clears"] == 0
    assert max(sizes["decode"], sizes["prefill"], sizes["grouped"]) <= 3
    for name in ("summary.json", "requests.csv", "timeseries.csv"):
        assert (tmp_path / "free" / name).read_bytes() == (tmp_path / "capped" / name).read_bytes()
