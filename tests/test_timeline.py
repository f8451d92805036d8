"""The timeline export (``--timeline``): valid Chrome trace JSON, every kind of track, the
size bound, determinism, and busy time that agrees with the engine's own accounting."""

from __future__ import annotations

import argparse
import json
from collections import Counter

import pytest
from small_config import small_config

from sim.cli.common import add_timeline_arguments, options_from_args
from sim.cli.run import run_main
from sim.config import config_from_dict
from sim.engine.timeline import (
    DEFAULT_MAX_EVENTS,
    LINKS,
    REQUESTS,
    SHARED,
    UNIQUE,
    TimelineOptions,
    parse_window,
)
from sim.run import run_simulation


def config(**over) -> dict:
    return small_config("tl", **over)


def trace(cfg: dict | None = None, **opts) -> tuple[dict, dict, str]:
    """(parsed timeline, summary, JSON text) of one in-memory run."""
    r = run_simulation(config_from_dict(cfg or config()), progress=False, write=False,
                       timeline=TimelineOptions(**opts))
    text = r.timeline.to_json()
    return json.loads(text), r.summary, text


def body(tr: dict) -> list[dict]:
    return [e for e in tr["traceEvents"] if e["ph"] != "M"]


def ns(x: float) -> int:
    return round(x * 1000)


def track_names(tr: dict) -> dict[tuple[int, int], str]:
    return {(e["pid"], e["tid"]): e["args"]["name"] for e in tr["traceEvents"]
            if e["ph"] == "M" and e["name"] == "thread_name"}


def check_valid(tr: dict) -> None:
    """Chrome trace structure: fields, metadata first, sorted, slices nested per track."""
    assert tr["displayTimeUnit"] == "ns"
    evs = tr["traceEvents"]
    assert evs, "empty trace"
    seen_body = False
    for e in evs:
        for key in ("ph", "pid", "tid", "ts", "name"):
            assert key in e, (key, e)
        assert e["ph"] in ("M", "X", "i"), e
        if e["ph"] == "M":
            assert not seen_body, "metadata after events"
            continue
        seen_body = True
        assert e["ts"] >= 0
        if e["ph"] == "X":
            assert e["dur"] >= 0, e
    ts = [e["ts"] for e in body(tr)]
    assert ts == sorted(ts)
    # slices on one track are disjoint or nested (what Perfetto needs to stack them)
    stacks: dict[tuple[int, int], list[int]] = {}
    for e in body(tr):
        if e["ph"] != "X":
            continue
        a, b = ns(e["ts"]), ns(e["ts"]) + ns(e["dur"])
        st = stacks.setdefault((e["pid"], e["tid"]), [])
        while st and st[-1] <= a:
            st.pop()
        assert not st or b <= st[-1], ("overlapping slices", e)
        st.append(b)
    names = track_names(tr)
    for e in body(tr):
        assert (e["pid"], e["tid"]) in names, ("event on an unnamed track", e)


def test_cli_writes_a_valid_trace_with_every_kind_of_track(tmp_path):
    import yaml

    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(config()))
    out = tmp_path / "res"
    assert run_main([str(cfg_path), "--out", str(out), "--no-progress", "--timeline"]) == 0
    tr = json.loads((out / "timeline.json").read_text())
    check_valid(tr)
    procs = {e["pid"]: e["args"]["name"] for e in tr["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_name"}
    assert procs == {UNIQUE: "unique nodes", SHARED: "shared nodes", LINKS: "fabric links",
                     REQUESTS: "requests"}
    names = track_names(tr)
    assert {names[(UNIQUE, 1)], names[(UNIQUE, 2)]} == {"unique0", "unique1"}
    assert {names[(SHARED, 1)], names[(SHARED, 2)]} == {"shared0", "shared1"}
    assert "unique0->sw" in {n for (p, _), n in names.items() if p == LINKS}
    kinds = Counter((e["pid"], e["name"]) for e in body(tr))
    for key in [(UNIQUE, "prefill"), (UNIQUE, "decode"), (UNIQUE, "shared round trip"),
                (SHARED, "grouped_shared_attention"), (SHARED, "prefill_attention"),
                (LINKS, "xfer"), (REQUESTS, "queued"), (REQUESTS, "prefill"),
                (REQUESTS, "decode")]:
        assert kinds[key] > 0, key
    lifetimes = [e for e in body(tr) if e["pid"] == REQUESTS and e["name"].startswith("req ")]
    assert len(lifetimes) == 40  # every request, once, on a slot track
    assert all(e["args"]["status"] == "completed" for e in lifetimes)
    dec = next(e for e in body(tr) if e["name"] == "decode" and e["pid"] == UNIQUE)
    assert dec["args"]["batch"] >= 1 and dec["args"]["tokens"] == dec["args"]["batch"]
    launch = next(e for e in body(tr) if e["name"] == "grouped_shared_attention")
    assert launch["args"]["requests"] >= 1 and launch["args"]["max_chunk_batch"] <= 64
    xfer = next(e for e in body(tr) if e["name"] == "xfer")
    assert xfer["args"]["bytes"] > 0 and xfer["args"]["src"] != xfer["args"]["dst"]
    other = tr["otherData"]
    assert other["name"] == "tl" and other["seed"] == 3
    assert other["events"] == len(body(tr))
    assert sum(other["dropped"]["over_max_events"].values()) == 0
    info = json.loads((out / "run_info.json").read_text())
    assert info["timeline"]["events"] == other["events"]
    if (out / "report.md").exists():
        assert "timeline.json" in (out / "report.md").read_text()


def test_no_timeline_without_the_flag(tmp_path):
    import yaml

    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(config()))
    out = tmp_path / "res"
    assert run_main([str(cfg_path), "--out", str(out), "--no-progress"]) == 0
    assert not (out / "timeline.json").exists()
    if (out / "report.md").exists():
        assert "timeline.json" not in (out / "report.md").read_text()
    r = run_simulation(config_from_dict(config()), progress=False, write=False)
    assert r.timeline is None


def _busy_from_trace(tr: dict, t0: int, t1: int) -> dict[str, int]:
    """Busy ns per resource inside [t0, t1] from the trace: shared-node and link slices
    are busy; a unique node is busy in its slices except inside their round trips."""
    names = track_names(tr)
    busy: dict[str, int] = {}
    for e in body(tr):
        if e["ph"] != "X" or e["pid"] == REQUESTS:
            continue
        a = ns(e["ts"])
        ov = max(0, min(a + ns(e["dur"]), t1) - max(a, t0))
        name = names[(e["pid"], e["tid"])]
        if e["pid"] == LINKS:
            name = "link:" + name
        sign = -1 if e["name"] == "shared round trip" else 1
        busy[name] = busy.get(name, 0) + sign * ov
    return busy


@pytest.mark.parametrize("over", [
    {},                                     # drained: every slice finished
    {"run.duration_s": 0.3},                # stopped mid-run: slices cut at the end
    {"run.granularity": "layer", "run.requests": 12},
])
def test_busy_time_matches_the_engine(over):
    tr, summary, _ = trace(config(**over))
    check_valid(tr)
    t_end = round(summary["sim_time_s"] * 1e9)
    busy = _busy_from_trace(tr, 0, t_end)
    engine = {k: round(v * 1e9) for k, v in summary["busy_s"].items()}
    shared = [k for k in engine if k.startswith("shared")]
    assert shared and all(engine[k] > 0 for k in shared)
    for k in shared:  # the kernels in the timeline are exactly the shared node's busy time
        assert busy.get(k, 0) == engine[k], k
    for k, v in engine.items():  # and the same holds for unique nodes and links
        assert busy.get(k, 0) == v, k


def test_window_keeps_exactly_the_overlapping_events_and_counts_the_rest():
    full, summary, _ = trace()
    t_end = summary["sim_time_s"]
    a, b = 0.3 * t_end, 0.6 * t_end
    win, _, _ = trace(start_s=a, end_s=b)
    check_valid(win)
    a_ns, b_ns = round(a * 1e9), round(b * 1e9)

    def overlaps(e: dict) -> bool:
        s = ns(e["ts"])
        d = ns(e.get("dur", 0))
        return s < b_ns and (s + d > a_ns or s >= a_ns)

    assert all(overlaps(e) for e in body(win))
    key = lambda e: (e["pid"], e["name"], e["ts"], e.get("dur"))
    nonreq = lambda evs: [e for e in evs if e["pid"] != REQUESTS]
    # nodes and links: the same events; requests: the same slices (slots renumbered)
    assert nonreq(body(win)) == [e for e in nonreq(body(full)) if overlaps(e)]
    assert (sorted(key(e) for e in body(win) if e["pid"] == REQUESTS)
            == sorted(key(e) for e in body(full) if e["pid"] == REQUESTS and overlaps(e)))
    other = win["otherData"]
    assert other["window_s"] == [a, b]
    dropped = sum(other["dropped"]["outside_window"].values())
    assert dropped > 0
    assert dropped + len(body(win)) == len(body(full))
    assert sum(other["dropped"]["over_max_events"].values()) == 0


def test_max_events_keeps_the_earliest_events_and_counts_the_drops():
    full, _, _ = trace()
    n = len(body(full))
    k = 500
    assert n > 2 * k
    capped, _, _ = trace(max_events=k)
    check_valid(capped)
    other = capped["otherData"]
    assert len(body(capped)) == other["events"] == k
    dropped = other["dropped"]["over_max_events"]
    assert sum(dropped.values()) == n - k
    assert dropped["link"] > 0
    assert body(capped) == body(full)[:k]  # a prefix in time: complete until the cut
    assert round(other["complete_until_s"] * 1e9) == ns(body(full)[k]["ts"])
    # a tiny cap still gives a valid trace
    tiny, _, _ = trace(max_events=1)
    check_valid(tiny)
    assert len(body(tiny)) == 1


def test_same_config_and_seed_give_identical_bytes(tmp_path):
    import yaml

    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(config()))
    outs = []
    for i in range(2):
        out = tmp_path / f"res{i}"
        assert run_main([str(cfg_path), "--out", str(out), "--no-progress",
                         "--timeline-window", "0:0.5", "--timeline-max-events", "2000"]) == 0
        outs.append((out / "timeline.json").read_bytes())
    assert outs[0] == outs[1]
    _, _, other_seed = trace(config(**{"run.seed": 4}))
    _, _, same = trace()
    assert other_seed != same


def test_non_disaggregated_run_has_node_and_request_tracks_only():
    tr, _, _ = trace(config(system="vanilla", **{"run.requests": 10}))
    check_valid(tr)
    pids = {e["pid"] for e in body(tr)}
    assert pids == {UNIQUE, REQUESTS}


def test_rejected_requests_are_instant_events_on_their_own_track():
    big = {"dist": "uniform", "min": 1024, "max": 8 * 2**20}  # some exceed a replica's HBM
    tr, summary, _ = trace(config(**{"workload.unique_tokens": big, "run.requests": 20}))
    check_valid(tr)
    assert summary["requests_rejected"] > 0
    rejected = [e for e in body(tr) if e["ph"] == "i"]
    assert len(rejected) == summary["requests_rejected"]
    assert {track_names(tr)[(e["pid"], e["tid"])] for e in rejected} == {"rejected"}
    lifetimes = [e for e in body(tr) if e["pid"] == REQUESTS and e["ph"] == "X"
                 and e["name"].startswith("req ")]
    assert len(lifetimes) == summary["requests_arrived"] - summary["requests_rejected"]


def test_flags_and_window_parsing():
    p = argparse.ArgumentParser()
    add_timeline_arguments(p)
    assert options_from_args(p.parse_args([])) is None
    assert options_from_args(p.parse_args(["--timeline"])) == TimelineOptions()
    assert TimelineOptions().max_events == DEFAULT_MAX_EVENTS
    o = options_from_args(p.parse_args(["--timeline-window", "1.5:2"]))
    assert (o.start_s, o.end_s) == (1.5, 2.0)
    o = options_from_args(p.parse_args(["--timeline-max-events", "10"]))
    assert o.max_events == 10 and o.end_s is None
    assert parse_window("2:") == (2.0, None)
    assert parse_window(":3") == (0.0, 3.0)
    for bad in ("3", "a:b"):
        with pytest.raises(ValueError):
            parse_window(bad)
    with pytest.raises(ValueError):
        TimelineOptions(2.0, 1.0)
    with pytest.raises(ValueError):
        TimelineOptions(max_events=0)


def test_bad_flag_is_a_user_error(tmp_path, capsys):
    import yaml

    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(config()))
    assert run_main([str(cfg_path), "--out", str(tmp_path / "r"), "--no-progress",
                     "--timeline-window", "5:1"]) == 2
    assert "--timeline-window" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
