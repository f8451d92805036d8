"""sim.report.verdict and sim.report.memory: the verdict names the right bottleneck and
what it does, judges saturation by the stated rules (checked on hand-made inputs at the
edges of each rule and on real runs below and past saturation), picks the right winners in
a comparison, and sits at the top of both reports; HBM per node class adds up."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from small_config import small_config

from sim.config import ExperimentConfig
from sim.report import write_compare_report, write_run_report
from sim.report.memory import memory_rows, shared_kv_fit
from sim.report.verdict import (
    AT_CAPACITY,
    BELOW,
    PAST,
    backlog_from_requests,
    compare_verdict,
    compare_verdict_lines,
    find_bottleneck,
    judge_saturation,
    run_verdict,
    top_phases,
    verdict_lines,
    waiting_share,
)
from sim.run import run_simulation

# ----------------------------------------------------------------------------- inputs


def _summary(**over) -> dict:
    """A MoSKA summary shaped like sim.metrics.summarize's, shared nodes the bottleneck."""
    s = {
        "name": "unit",
        "system": "moska",
        "throughput_tokens_per_s": 1500.0,
        "throughput_requests_per_s": 7.5,
        "ttft_ms": {"count": 100, "mean": 200.0, "p50": 180.0, "p99": 800.0},
        "tpot_ms": {"count": 100, "mean": 28.0, "p50": 27.5, "p99": 56.5},
        "e2e_ms": {"count": 100, "mean": 5000.0, "p50": 4900.0, "p99": 18000.0},
        "admission_wait_ms": {"count": 100, "mean": 80.0, "p50": 40.0, "p99": 400.0},
        "utilization": {"unique0": 0.13, "unique1": 0.12, "shared0": 0.97, "shared1": 0.95,
                        "link:sw->shared0": 0.01},
        "busy_s": {"unique0": 13.0, "unique1": 12.0, "shared0": 97.0, "shared1": 95.0,
                   "link:sw->shared0": 1.0},
        "shared_nodes": {"shared0": {"prefill_busy_s": 58.2}, "shared1": {"prefill_busy_s": 57.0}},
        "bytes": {"per_link": {"link:sw->shared0": 4.0e11}},
        # request-ms over the run (admission wait is 80 ms x 100 = 8,000 on top)
        "time_breakdown_ms": {"unique_attention": 10_000.0, "shared_attention": 100_000.0,
                              "queueing": 250_000.0, "other_layers": 30_000.0,
                              "prefill": 20_000.0, "prefill_stall": 82_000.0},
        "time_breakdown_per_token_ms": {"unique_attention": 0.45, "shared_attention": 5.5,
                                        "queueing": 14.0, "other_layers": 1.6,
                                        "prefill_stall": 6.3},
        "memory": {"replica_hbm_gib": 268.2, "weights_gib": 7.5, "resident_shared_gib": 0.03,
                   "kv_capacity_gib": 260.67, "shared_kv_per_shared_node_gib": 32.0,
                   "peak_kv_gib": 4.3},
        "unique_nodes": {"unique0": {}, "unique1": {}},
        "config": {"workload": {"arrivals": {"kind": "poisson", "rate_per_s": 8}}},
    }
    s.update(over)
    return s


def _requests_csv(path: Path, arrivals_ms: list[float], completions_ms: list[float | None]
                  ) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "status", "arrival_ms", "completion_ms"])
        for i, (a, c) in enumerate(zip(arrivals_ms, completions_ms)):
            w.writerow([i, "completed" if c is not None else "waiting", a,
                        "" if c is None else c])
    return path


# ----------------------------------------------------------------------------- bottleneck


def test_bottleneck_is_the_busiest_kind_and_says_what_it_does():
    b = find_bottleneck(_summary())
    assert (b.kind, b.resource, b.label, b.count) == ("shared", "shared0", "shared nodes", 2)
    assert b.utilization == 0.97 and b.mean_utilization == pytest.approx(0.96)
    # 58.2 of 97 s are prefill jobs (60%), the rest (38.8 s, 40%) attention kernels
    assert "of its 97.0 s busy, 58.2 s (60%) are prefill jobs" in b.activity
    assert "38.8 s (40%) batched shared-attention kernels" in b.activity
    # mostly prefill: the verdict says why moska-sim analyze (decode only) predicts more
    assert "moska-sim analyze models decode only" in b.activity
    s = _summary(shared_nodes={"shared0": {"prefill_busy_s": 9.7}})
    assert "analyze" not in find_bottleneck(s).activity
    assert b.others == {"unique": 0.13, "link": 0.01}


def test_unique_and_link_bottlenecks_describe_their_work():
    s = _summary(utilization={"unique0": 0.99, "shared0": 0.2, "link:sw->shared0": 0.1})
    b = find_bottleneck(s)
    assert b.kind == "unique"
    assert "busy 13.0 s: per decode token it runs shared_attention 5.50 ms, other_layers " \
           "1.60 ms, unique_attention 0.450 ms" in b.activity
    assert "wait 6.30 ms per token while it prefills" in b.activity
    s = _summary(utilization={"unique0": 0.1, "shared0": 0.2, "link:sw->shared0": 0.8},
                 time_breakdown_per_token_ms={"fabric": 3.0})
    b = find_bottleneck(s)
    assert (b.kind, b.resource) == ("link", "link:sw->shared0")
    assert b.activity == "carries 400 GB; transfers cost each decode token 3.00 ms"
    assert find_bottleneck({}) is None


def test_top_phases_are_largest_first_with_shares():
    assert top_phases({"a": 1.0, "b": 3.0, "c": 1.0, "d": 5.0}, 3) == [
        ("d", 5.0, 0.5), ("b", 3.0, 0.3), ("a", 1.0, 0.1)]  # tie a/c broken by name
    assert top_phases({}) == []


# ----------------------------------------------------------------------------- saturation


def test_waiting_share_counts_admission_queueing_and_stalls():
    # waiting = 250,000 + 82,000 + 8,000 admission; total = 492,000 + 8,000
    assert waiting_share(_summary()) == pytest.approx(340_000 / 500_000)
    assert waiting_share({}) is None


def test_backlog_growth_is_past_saturation(tmp_path):
    # 200 arrivals at 100/s, completions at 40/s: the backlog doubles over the second half
    arrivals = [10.0 * i for i in range(200)]
    completions = [25.0 * i + 5 for i in range(200)]
    csv_path = _requests_csv(tmp_path / "requests.csv", arrivals, completions)
    backlog = backlog_from_requests(csv_path)
    assert (backlog.arrivals, backlog.completions) == (100, 40) and backlog.growing
    assert backlog.offered_per_s == pytest.approx(100, rel=0.02)
    assert backlog.completed_per_s == pytest.approx(40, rel=0.05)
    sat = judge_saturation(_summary(), csv_path, find_bottleneck(_summary()))
    assert sat.state == PAST and "arrivals outpace completions" in sat.reasons[0]
    assert "grew from 60 to 120" in sat.reasons[0]


def test_a_stable_queue_is_not_a_backlog(tmp_path):
    arrivals = [10.0 * i for i in range(200)]
    completions = [a + 300.0 for a in arrivals]  # each request takes 300 ms: stable
    csv_path = _requests_csv(tmp_path / "requests.csv", arrivals, completions)
    assert not backlog_from_requests(csv_path).growing
    s = _summary(utilization={"shared0": 0.5, "unique0": 0.2}, admission_wait_ms={},
                 time_breakdown_ms={"shared_attention": 1.0, "queueing": 0.2})
    sat = judge_saturation(s, csv_path, find_bottleneck(s))
    assert sat.state == BELOW and "headroom" in sat.reasons[0]


def test_too_few_arrivals_or_no_file_skip_the_backlog_test(tmp_path):
    few = _requests_csv(tmp_path / "few.csv", [1.0 * i for i in range(30)], [None] * 30)
    assert backlog_from_requests(few) is None  # 14 arrivals in the window: too few
    assert backlog_from_requests(tmp_path / "missing.csv") is None
    assert backlog_from_requests(None) is None


def test_admission_wait_dominating_is_past_saturation():
    s = _summary(admission_wait_ms={"count": 100, "mean": 3000.0})
    sat = judge_saturation(s, None, find_bottleneck(s))
    assert sat.state == PAST
    assert "admission wait dominates: requests wait 3,000 ms on average to be admitted, 60% " \
           "of their 5,000 ms end-to-end time" in sat.reasons[0]


def test_busy_bottleneck_with_stable_queue_is_at_capacity():
    sat = judge_saturation(_summary(), None, find_bottleneck(_summary()))
    assert sat.state == AT_CAPACITY
    assert sat.reasons[0].startswith("the busiest resource (shared0) is 97% busy and 68% of "
                                     "request time is waiting")


def test_closed_loop_past_the_knee_estimates_the_knee():
    cfg = {"workload": {"arrivals": {"kind": "closed_loop", "concurrency": 32}}}
    s = _summary(config=cfg)
    sat = judge_saturation(s, None, find_bottleneck(s))
    assert sat.state == PAST
    # Little's law: the knee is near 32 x (1 - 0.68) = 10.2
    assert "the knee is near concurrency ≈ 10.2" in sat.reasons[0]
    # a capped bottleneck with a fifth waiting is past the knee too; light load is not
    light = _summary(config=cfg, admission_wait_ms={},
                     time_breakdown_ms={"shared_attention": 70.0, "queueing": 30.0})
    assert judge_saturation(light, None, find_bottleneck(light)).state == PAST
    light["utilization"] = {"shared0": 0.5}
    assert judge_saturation(light, None, find_bottleneck(light)).state == BELOW


def test_run_verdict_text():
    v = run_verdict(_summary())
    assert v.headline == ("unit (moska): 1,500 tokens/s, p99 TPOT 56.5 ms, limited by shared "
                          "nodes, at capacity")
    assert v.lines[0] == ("Throughput 1,500 tokens/s (7.50 requests/s); TTFT p50 180 ms / p99 "
                          "800 ms; TPOT p50 27.5 ms / p99 56.5 ms.")
    assert v.lines[1].startswith("Bottleneck: shared nodes (busiest shared0 97.0% busy, the 2 "
                                 "on average 96.0%; busiest of the others: links 1%, unique "
                                 "nodes 13%); of its 97.0 s busy")
    assert v.lines[2] == ("A decode token takes 27.9 ms on average: queueing 14.0 ms (50%), "
                          "prefill_stall 6.30 ms (23%), shared_attention 5.50 ms (20%).")
    assert v.lines[3].startswith("Load: at capacity: ")
    lines = verdict_lines(_summary())
    assert lines[0] == f"Verdict: {v.headline}" and lines[1:] == [f"  {x}" for x in v.lines]
    # an empty summary still gives a verdict, with dashes
    assert verdict_lines({})[0] == "Verdict: run: —, p99 TPOT —, unknown"


# ----------------------------------------------------------------------------- compare


def _run(label: str, thr: float, p99: float, cost: float | None, **over) -> dict:
    s = _summary(name=label, throughput_tokens_per_s=thr,
                 tpot_ms={"count": 10, "mean": p99 / 2, "p50": p99 / 2, "p99": p99}, **over)
    return {"label": label, "summary": s, "cost_per_million_tokens": cost}


def test_compare_verdict_names_the_winner_per_metric():
    runs = [_run("a", 1000.0, 50.0, 3.0), _run("b", 2000.0, 80.0, 2.0),
            _run("c", 500.0, 20.0, None), {"label": "d", "summary": {"system": "moska"}}]
    v = compare_verdict(runs, {"d": "ValueError: does not fit"})
    w = {x.metric: x for x in v.winners}
    assert (w["Highest throughput"].label, w["Highest throughput"].runner_up) == ("b", "a")
    assert (w["Lowest p99 TPOT"].label, w["Lowest p99 TPOT"].runner_up) == ("c", "a")
    assert (w["Lowest cost"].label, w["Lowest cost"].runner_up) == ("b", "a")
    assert v.lines[0] == ("Highest throughput: b (2,000 tokens/s), 2.00x better than a "
                          "(1,000 tokens/s).")
    assert v.lines[1] == "Lowest p99 TPOT: c (20.0 ms), 2.50x better than a (50.0 ms)."
    assert v.lines[2] == ("Lowest cost: b (2.00 $/M tokens), 1.50x better than a "
                          "(3.00 $/M tokens).")
    assert v.failed == {"d": "ValueError: does not fit"}
    assert v.lines[-1] == "Failed: d: ValueError: does not fit."
    assert set(v.states) == {"a", "b", "c"}
    assert compare_verdict_lines(runs)[0] == "Verdict:"


def test_compare_why_draws_on_the_breakdown_and_flags_ties():
    slow = {"queueing": 30.0, "shared_attention": 5.0}
    fast = {"queueing": 10.0, "shared_attention": 5.0}
    runs = [_run("x", 2000.0, 50.0, None, time_breakdown_per_token_ms=fast),
            _run("y", 1000.0, 60.0, None, time_breakdown_per_token_ms=slow)]
    why = compare_verdict(runs).why
    assert "x is limited by its shared nodes (97% busy" in why
    assert "A decode token takes 15.0 ms in x against 35.0 ms in y" in why
    assert "the difference is mostly queueing (20.0 ms less in x)" in why
    tie = [_run("x", 1020.0, 50.0, None), _run("y", 1000.0, 60.0, None)]
    assert compare_verdict(tie).why.startswith("x and y are within 5% on throughput")


def test_compare_verdict_lists_runs_past_saturation():
    runs = [_run("ok", 1000.0, 50.0, None),
            _run("queued", 900.0, 50.0, None, admission_wait_ms={"count": 10, "mean": 4000.0})]
    v = compare_verdict(runs)
    assert v.states == {"ok": AT_CAPACITY, "queued": PAST}
    assert any(line.startswith("Past saturation") and line.endswith(": queued.")
               for line in v.lines)


# ----------------------------------------------------------------------------- memory


def test_memory_rows_add_up_per_node_class():
    s = _summary()
    s["memory"]["shared_node_hbm_gib"] = 96.0
    s["shared_nodes"] = {"shared0": {}, "shared1": {}}
    unique, shared = memory_rows(s)
    assert unique["node class"].startswith("unique") and unique["nodes"] == 2
    assert unique["used at peak"] == pytest.approx(7.5 + 0.03 + 4.3)
    assert unique["headroom"] == pytest.approx(268.2 - 11.83)
    assert unique["used"] == "4%"
    assert (shared["nodes"], shared["HBM (GiB)"], shared["used at peak"]) == (2, 96.0, 32.0)
    assert shared["headroom"] == 64.0 and shared["used"] == "33%"
    assert shared_kv_fit(s).startswith("The shared KV fits: 32.0 GiB on each of the 2 shared "
                                       "nodes, 33% of its 96.0 GiB HBM (64.0 GiB free)")


def test_memory_without_shared_capacity_or_for_baselines():
    s = _summary()
    assert memory_rows(s)[1]["HBM (GiB)"] is None
    assert "capacity is not in summary.json" in shared_kv_fit(s)
    base = _summary(system="prefix_cache")
    base["memory"] = {**base["memory"], "resident_shared_gib": 16.0,
                      "shared_kv_per_shared_node_gib": 0.0}
    assert len(memory_rows(base)) == 1
    assert shared_kv_fit(base).startswith("The shared KV (16.0 GiB) is resident on every "
                                          "unique replica and fits")
    # no copy anywhere: read off the figures, not the system's name
    copies = _summary(system="a_new_system", sharing={"shared_prompt_tokens": 10**9})
    copies["memory"] = {**copies["memory"], "resident_shared_gib": 0.0,
                        "shared_kv_per_shared_node_gib": 0.0}
    assert "each request holds its own copy" in shared_kv_fit(copies)
    copies["sharing"] = {"shared_prompt_tokens": 0}
    assert shared_kv_fit(copies).startswith("No shared corpus")
    assert memory_rows({}) == [] and shared_kv_fit({}) is None


# ----------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory) -> dict[str, object]:
    """The small config below saturation, and far past it (8x the arrival rate)."""
    base = tmp_path_factory.mktemp("verdict")
    out = {}
    for label, over in (("light", {"workload.arrivals.rate_per_s": 5}),
                        ("flooded", {"workload.arrivals.rate_per_s": 400, "run.requests": 300})):
        cfg = ExperimentConfig.model_validate(small_config(label, **over))
        out[label] = run_simulation(cfg, base / label, progress=False)
    return out


def test_real_runs_below_and_past_saturation(real_runs):
    light, flooded = real_runs["light"], real_runs["flooded"]
    v = run_verdict(light.summary, light.out_dir / "requests.csv")
    assert v.saturation.state == BELOW
    v = run_verdict(flooded.summary, flooded.out_dir / "requests.csv")
    assert v.saturation.state == PAST
    assert "arrivals outpace completions" in v.saturation.reasons[0]
    assert v.bottleneck is not None and v.bottleneck.utilization > 0
    # the verdict is about the files, so it is the same every time (determinism)
    again = run_verdict(json.loads((flooded.out_dir / "summary.json").read_text()),
                        flooded.out_dir / "requests.csv")
    assert again == v


def test_verdict_and_hbm_sit_in_the_run_report(real_runs):
    run = real_runs["flooded"]
    md = (run.out_dir / "report.md").read_text()
    html = (run.out_dir / "report.html").read_text()
    # the verdict is the first section, before the overview, in both renderings
    assert md.index("## Verdict") < md.index("## Overview")
    headline = run_verdict(run.summary, run.out_dir / "requests.csv").headline
    assert f"- {headline}" in md
    assert html.index('<ul class="verdict">') < html.index("<h2>Overview</h2>")
    assert "past saturation" in headline
    assert "## HBM per node class" in md and "unique nodes (per replica)" in md
    assert "The shared KV fits" in md


def test_verdict_and_links_sit_in_the_compare_report(real_runs, tmp_path):
    # the comparison's own folder holds the runs, as moska-sim compare lays it out
    runs = []
    for label, run in real_runs.items():
        dest = tmp_path / "runs" / label
        dest.mkdir(parents=True)
        for f in run.out_dir.iterdir():
            dest.joinpath(f.name).write_bytes(f.read_bytes())
        runs.append({"label": label, "summary": run.summary,
                     "requests_csv": dest / "requests.csv"})
    write_compare_report(tmp_path, runs, None)
    md = (tmp_path / "compare.md").read_text()
    assert md.index("## Verdict") < md.index("## Summary")
    best = max(real_runs, key=lambda k: real_runs[k].summary["throughput_tokens_per_s"])
    assert f"- Highest throughput: {best} (" in md
    assert "[light](runs/light/report.html)" in md
    assert "[flooded](runs/flooded/report.html)" in md
    assert "| past saturation |" in md and "| below saturation |" in md
    html = (tmp_path / "compare.html").read_text()
    assert '<a href="runs/light/report.html">light</a>' in html


def test_run_report_is_byte_identical_for_the_same_inputs(real_runs, tmp_path):
    run = real_runs["flooded"]
    for d in ("a", "b"):
        write_run_report(tmp_path / d, run.summary, run.out_dir / "requests.csv",
                         run.out_dir / "timeseries.csv")
    for name in ("report.md", "report.html", "timeseries.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not math.isnan(run.summary["throughput_tokens_per_s"])
