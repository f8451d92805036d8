"""sim.report: every promised file exists, HTML is self-contained, tables are right,
identical inputs give identical bytes, and missing inputs give notes instead of errors."""

from __future__ import annotations

import csv
import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest

from sim.report import (
    compare_rows,
    format_number,
    format_table_text,
    html_table,
    markdown_table,
    plot_analysis,
    write_analysis_report,
    write_compare_report,
    write_run_report,
)
from sim.report.plots import saturation_index

RUN_FILES = {
    "latency_cdf.png",
    "timeseries.png",
    "utilization.png",
    "time_breakdown.png",
    "report.md",
    "report.html",
}
COMPARE_FILES = {
    "compare_latency_cdf.png",
    "compare_load.png",
    "compare_utilization.png",
    "compare_time_breakdown.png",
    "compare.md",
    "compare.html",
}


# ----------------------------------------------------------------------------- fixtures


def _lat(m: float) -> dict:
    return {"mean": 1.1 * m, "p50": m, "p90": 2 * m, "p99": 4 * m, "p999": 6 * m}


def _summary(name: str = "tiny", system: str = "moska", scale: float = 1.0) -> dict:
    return {
        "name": name,
        "system": system,
        "requests_arrived": 200,
        "requests_completed": 190,
        "requests_in_flight": 8,
        "requests_rejected": 2,
        "sim_time_s": 2.0,
        "throughput_tokens_per_s": 12345.678 * scale,
        "ttft_ms": _lat(40.0 / scale),
        "tpot_ms": _lat(8.0 / scale),
        "e2e_ms": _lat(900.0 / scale),
        "utilization": {
            "unique0": 0.71,
            "unique1": 0.65,
            "unique10": 0.4,
            "shared0": 0.93 * scale / 2,
            "shared1": 0.88 * scale / 2,
            "link0": 0.12,
            "link1": 0.33,
            "memory.unique0": 0.5,
        },
        "time_breakdown_ms": {
            "unique_attention": 1.2,
            "shared_attention": 2.4 / scale,
            "router": 0.1,
            "merge": 0.05,
            "fabric": 0.6,
            "queueing": 0.9,
            "other_layers": 3.1,
            "prefill": 0.4,
        },
        "bytes": {"hbm_read": 3.2e12, "fabric": {"query": 1.5e9, "partials": 2.5e9}},
        "sharing": {"corpora": 2, "chunk_hit_rate": 0.42},
        "notes": ["2 shared node(s) unused"],
        "config": {
            "model": "llama-3.1-8b",
            "run": {"seed": 7, "duration_s": 2},
            "workload": {"arrivals": {"path": "https://example.com/trace.csv"}},
        },
    }


def _requests_csv(path: Path, seed: int = 0, scale: float = 1.0) -> Path:
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "id",
                "arrival_s",
                "first_token_s",
                "completion_s",
                "unique_tokens",
                "output_tokens",
                "corpus",
                "node",
                "ttft_ms",
                "tpot_ms",
                "e2e_ms",
            ]
        )
        for i in range(200):
            arrival = i * 0.01
            ttft = float(rng.lognormal(math.log(40 / scale), 0.8))
            tpot = float(rng.lognormal(math.log(8 / scale), 0.3))
            out = int(rng.integers(1, 200))
            e2e = ttft + tpot * (out - 1)
            done = i < 190
            w.writerow(
                [
                    i,
                    arrival,
                    arrival + ttft / 1e3,
                    arrival + e2e / 1e3 if done else "",
                    4096,
                    out,
                    i % 2,
                    f"unique{i % 3}",
                    ttft,
                    tpot if out > 1 else "",
                    e2e if done else "",
                ]
            )
    return path


def _timeseries_csv(path: Path) -> Path:
    t = np.linspace(0, 2, 41)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "time_s",
                "throughput_tokens_per_s",
                "running",
                "queue.unique0",
                "queue.unique1",
                "queue.shared0",
                "queue.link0",
                "kv_gib",
            ]
        )
        for x in t:
            w.writerow(
                [
                    x,
                    12000 + 2000 * math.sin(3 * x),
                    50 + 10 * x,
                    int(5 * x),
                    int(3 * x),
                    round(2 + math.cos(x), 3),
                    0,
                    1.5,
                ]
            )
    return path


def _analysis() -> dict:
    batch = [1, 4, 16, 64, 256]
    shared = [2**20, 2**22, 2**24]
    return {
        "name": "paper-16m",
        "batch_sweep": {
            "batch": batch,
            "systems": {
                "vanilla": {
                    "throughput_tokens_per_s": [50.0, 150.0, None, 0, 0],
                    "step_latency_ms": [20.0, 26.0, None, None, None],
                },
                "shared_gemm": {
                    "throughput_tokens_per_s": [60.0, 230.0, 900.0, 3000.0, 9000.0],
                    "step_latency_ms": [16.0, 17.0, 18.0, 21.0, 28.0],
                },
                "moska": {
                    "throughput_tokens_per_s": [70.0, 280.0, 1100.0, 4300.0, 16000.0],
                    "step_latency_ms": [14.0, 14.3, 14.5, 15.0, 16.0],
                },
            },
        },
        "shared_sweep": {
            "shared_tokens": shared,
            "systems": {
                "vanilla": {"throughput_tokens_per_s": [120.0, 0.0, 0.0]},
                "moska": {"throughput_tokens_per_s": [16000.0, 12000.0, float("nan")]},
            },
        },
        "table": [
            {
                "system": "vanilla",
                "feasible": False,
                "max_batch": 8,
                "throughput_tokens_per_s": 0.0,
                "step_latency_ms": None,
            },
            {
                "system": "moska",
                "feasible": True,
                "max_batch": 4096,
                "throughput_tokens_per_s": 16000.0,
                "step_latency_ms": 16.0,
            },
        ],
    }


def _runs(tmp: Path) -> list[dict]:
    runs = []
    for i, (label, system, scale) in enumerate(
        [("vanilla-8n", "vanilla", 0.5), ("moska-4u4s", "moska", 1.0), ("moska-8u4s", "moska", 1.6)]
    ):
        s = _summary(label, system, scale)
        if i == 1:
            s["memory_gib"] = {"unique": 60.5, "shared": 80.0}
        elif i == 2:
            s["memory_gib"] = 120.0
        runs.append(
            {
                "label": label,
                "summary": s,
                "requests_csv": _requests_csv(tmp / f"req{i}.csv", seed=i, scale=scale),
                "price_per_hour": {"unique": 4.5, "shared": 3.0},
                "cost_per_million_tokens": 1.23 * (i + 1) if i else None,
            }
        )
    return runs


def _load_sweep() -> dict:
    rates = [1, 2, 4, 8, 16, 32]
    return {
        "vanilla-8n": {
            "offered_rate_per_s": rates,
            "throughput_tokens_per_s": [256, 512, 900, 1000, 1010, 1000],
            "p99_tpot_ms": [10, 11, 20, 80, 400, 900],
        },
        "moska-4u4s": {
            "offered_rate_per_s": rates,
            "throughput_tokens_per_s": [256, 512, 1024, 2048, 4096, 8100],
            "p99_tpot_ms": [8, 8, 8.5, 9, 10, 12],
        },
    }


def _assert_self_contained(html: str) -> None:
    assert "http://" not in html and "https://" not in html
    srcs = re.findall(r'src="([^"]*)"', html)
    assert srcs, "expected embedded images"
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in html and "<script" not in html


def _read_all(paths: list[Path]) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths}


# ----------------------------------------------------------------------------- tables


def test_format_number() -> None:
    assert format_number(1234567.0) == "1,230,000"
    assert format_number(12.3456) == "12.3"
    assert format_number(0.012345) == "0.0123"
    assert format_number(999.6) == "1,000"
    assert format_number(0.0) == "0"
    assert format_number(1.5e-6) == "1.50e-06"
    assert format_number(float("nan")) == "—"


def test_table_renderers() -> None:
    rows = [{"name": "a|b", "n": 1234, "x": 0.5}, {"name": "c", "x": None}]
    md = markdown_table(rows).splitlines()
    assert md[0] == "| name | n | x |"
    assert md[1] == "|:---|---:|---:|"
    assert md[2] == "| a\\|b | 1,234 | 0.500 |"
    assert md[3] == "| c | — | — |"
    html = html_table(rows, caption="cap")
    assert '<td class="num">1,234</td>' in html and "<caption>cap</caption>" in html
    text = format_table_text(rows)
    assert "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines[:2]}) == 1
    assert format_table_text([]) == "(no rows)"


def test_saturation_index() -> None:
    sweep = _load_sweep()
    assert (
        saturation_index(
            sweep["vanilla-8n"]["offered_rate_per_s"],
            sweep["vanilla-8n"]["throughput_tokens_per_s"],
        )
        == 2
    )
    assert (
        saturation_index(
            sweep["moska-4u4s"]["offered_rate_per_s"],
            sweep["moska-4u4s"]["throughput_tokens_per_s"],
        )
        is None
    )


# ----------------------------------------------------------------------------- run report


def test_run_report_files_and_content(tmp_path: Path) -> None:
    req = _requests_csv(tmp_path / "requests.csv")
    ts = _timeseries_csv(tmp_path / "timeseries.csv")
    out = tmp_path / "out"
    paths = write_run_report(out, _summary(), req, ts)
    assert {p.name for p in paths} == RUN_FILES
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert not list(out.glob(".*.tmp")), "temp files left behind"
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert b"Software" not in p.read_bytes()
    md = (out / "report.md").read_text()
    for png in ("latency_cdf.png", "timeseries.png", "utilization.png", "time_breakdown.png"):
        assert f"]({png})" in md
    assert "12,300" in md  # throughput, 3 significant digits with separator
    assert "> **Note:** 2 shared node(s) unused" in md
    html = (out / "report.html").read_text()
    _assert_self_contained(html)
    assert html.count("<img ") == 4
    assert "example.com" in html  # config text is kept, its URL merely defused


def test_run_report_deterministic(tmp_path: Path) -> None:
    req = _requests_csv(tmp_path / "requests.csv")
    ts = _timeseries_csv(tmp_path / "timeseries.csv")
    a = _read_all(write_run_report(tmp_path / "a", _summary(), req, ts))
    b = _read_all(write_run_report(tmp_path / "b", _summary(), req, ts))
    assert a == b


def test_run_report_missing_inputs(tmp_path: Path) -> None:
    summary = {"name": "bare", "system": "vanilla", "throughput_tokens_per_s": 10.0}
    paths = write_run_report(tmp_path, summary, tmp_path / "nope.csv", tmp_path / "nope2.csv")
    assert {p.name for p in paths} == {"report.md", "report.html"}
    md = (tmp_path / "report.md").read_text()
    assert md.count("**Note:**") >= 5
    html = (tmp_path / "report.html").read_text()
    assert "http://" not in html and "https://" not in html


def test_run_report_empty_timeseries_and_huge_cluster(tmp_path: Path) -> None:
    (tmp_path / "ts.csv").write_text("time_s,other\n")
    summary = _summary()
    summary["utilization"] = {f"unique{i}": (i % 10) / 9 for i in range(100)}
    summary["utilization"]["link0"] = 1.2  # out of range: bar clipped, value still shown
    paths = write_run_report(
        tmp_path, summary, _requests_csv(tmp_path / "r.csv"), tmp_path / "ts.csv"
    )
    names = {p.name for p in paths}
    assert "timeseries.png" not in names and "utilization.png" in names


def test_run_report_tolerates_odd_values(tmp_path: Path) -> None:
    summary = {
        "name": "odd",
        "ttft_ms": {"p50": None, "p99": "n/a"},
        "tpot_ms": "not a dict",
        "utilization": {"unique0": "busy", "shared0": float("nan"), "link0": -0.1},
        "time_breakdown_ms": {"fabric": -1.0, "router": None, "extra_phase": 2.0},
        "bytes": {"weird": "x"},
        "sharing": {},
        "config": {"path": Path("/x"), "tags": ("a", "b")},
    }
    paths = write_run_report(tmp_path, summary, str(tmp_path / "missing.csv"), None)
    assert {"report.md", "report.html", "time_breakdown.png"} <= {p.name for p in paths}


# ----------------------------------------------------------------------------- analysis


def test_analysis_report(tmp_path: Path) -> None:
    paths = write_analysis_report(tmp_path / "a", _analysis())
    assert {p.name for p in paths} == {"analysis.png", "analysis.md", "analysis.html"}
    md = (tmp_path / "a" / "analysis.md").read_text()
    assert "](analysis.png)" in md
    assert "infeasible" in md
    summary_table = md.split("## Summary table")[1].split("##")[0]
    assert summary_table.count("\n| vanilla") == 1 and summary_table.count("infeasible") == 2
    again = write_analysis_report(tmp_path / "b", _analysis())
    assert _read_all(paths) == _read_all(again)
    p = plot_analysis(_analysis(), tmp_path / "alone.png")
    assert p.read_bytes() == (tmp_path / "a" / "analysis.png").read_bytes()


def test_analysis_all_infeasible(tmp_path: Path) -> None:
    analysis = {
        "name": "x",
        "batch_sweep": {
            "batch": [1, 2],
            "systems": {"vanilla": {"throughput_tokens_per_s": [None, 0]}},
        },
    }
    paths = write_analysis_report(tmp_path, analysis)
    assert (tmp_path / "analysis.png").is_file() and len(paths) == 3


# ----------------------------------------------------------------------------- compare


def test_compare_report(tmp_path: Path) -> None:
    runs = _runs(tmp_path)
    out = tmp_path / "cmp"
    paths = write_compare_report(out, runs, _load_sweep())
    assert {p.name for p in paths} == COMPARE_FILES
    md = (out / "compare.md").read_text()
    summary = md.split("## Summary")[1].split("\n\n")[1]
    body = [line for line in summary.splitlines() if line.startswith("| ")][1:]
    assert len(body) == len(runs)
    assert [line.split("|")[1].strip() for line in body] == [r["label"] for r in runs]
    html = (out / "compare.html").read_text()
    _assert_self_contained(html)
    assert html.count("<img ") == 4
    again = write_compare_report(tmp_path / "cmp2", _runs(tmp_path), _load_sweep())
    assert _read_all(paths) == _read_all(again)


def test_compare_rows() -> None:
    runs = [{"label": "a", "summary": _summary()}, {"label": "b", "summary": {}}]
    rows = compare_rows(runs)
    assert [r["config"] for r in rows] == ["a", "b"]
    assert "cost ($/M tokens)" not in rows[0] and "HBM free, unique (GiB)" not in rows[0]
    with_memory = _summary()
    with_memory["memory"] = {"replica_hbm_gib": 80.0, "weights_gib": 16.0,
                             "resident_shared_gib": 0.5, "peak_kv_gib": 31.5}
    (row,) = compare_rows([{"label": "h100", "summary": with_memory}])
    assert row["HBM free, unique (GiB)"] == pytest.approx(32.0)
    assert rows[0]["util unique"] == pytest.approx((0.71 + 0.65 + 0.4) / 3)
    assert rows[1]["util links"] is None


def test_compare_without_sweep_or_csvs(tmp_path: Path) -> None:
    runs = [{"label": "only", "summary": {"name": "only"}, "requests_csv": tmp_path / "x.csv"}]
    paths = write_compare_report(tmp_path, runs, None)
    assert {p.name for p in paths} == {"compare.md", "compare.html"}
    assert "No load sweep" in (tmp_path / "compare.md").read_text()


# ----------------------------------------------------------------------------- polish (issue 15)


def _captured_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Figures the plot functions render, kept for inspection (PNG bytes as usual)."""
    from sim.report import plots

    figures: list = []
    original = plots.figure_png

    def keep(fig):  # type: ignore[no-untyped-def]
        figures.append(fig)
        return original(fig)

    monkeypatch.setattr(plots, "figure_png", keep)
    return figures


def test_sharing_table_never_shows_p50_above_max_and_says_corpus() -> None:
    from sim.report.run_report import sharing_tables

    sharing = {
        "source": "synthetic",
        "definition": "1 synthetic corpora of 1048576 tokens, requests spread by ...",
        "corpora": 1,
        "corpus_tokens_p50": 1048576.0,  # a float percentile of an int: 3 sig. digits gave
        "corpus_tokens_p90": 1048576.0,  # 1,050,000 beside a max of 1,048,576
        "corpus_tokens_max": 1048576,
        "requests_per_corpus_p50": 1999.5,
        "requests_per_corpus_max": 2000,
        "shared_fraction": 0.998,
        "requests_per_corpus_top": [2000],
        "mean_shared_tokens": 1048576.0,
    }
    scalars, dists = sharing_tables(sharing)
    md = markdown_table(scalars) + "\n" + markdown_table(dists)
    assert "1 synthetic corpus of" in md and "corpora of" not in md
    assert "| corpus size (tokens) | 1,048,576 | 1,048,576 | 1,048,576 |" in md
    assert "| requests per corpus | 2,000 | — | 2,000 |" in md
    assert "| shared fraction of prompt tokens | 99.8% |" in md
    assert "| mean shared tokens per request | 1,048,576 |" in md
    assert "| requests of the most-read corpora | 2,000 |" in md
    for row in dists:
        vals = [row[q] for q in ("p50", "p90", "max") if row[q] is not None]
        assert vals == sorted(vals)


def test_timeseries_figure_is_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.report import plots
    from sim.report.data import read_timeseries

    figures = _captured_figures(monkeypatch)
    plots.plot_timeseries(read_timeseries(_timeseries_csv(tmp_path / "ts.csv")), 12000.0)
    (fig,) = figures
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == [
        "Token throughput over time",
        "Requests in the system: running + waiting for admission (stacked)",
        "Queues at shared nodes and links (sum per kind)",
    ]
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in axes]
    flat = " ".join(" ".join(lg) for lg in legends)
    assert "throughput_tokens_per_s" not in flat and "queue." not in flat
    assert legends[0][0].startswith("throughput (tokens/s)")
    assert legends[0][1] == "run mean = 12,000 tokens/s"
    assert legends[1] == ["running (decoding or prefilling)"]
    # one line per resource kind, not one per queue: shared nodes and links
    assert legends[2] == ["shared nodes: queries and prefill jobs waiting (1 nodes)",
                          "links: messages waiting (1 links)"]


def test_moving_average_and_series_labels() -> None:
    from sim.report.plots import moving_average, series_label

    v = np.array([0.0, 3.0, np.nan, 3.0, 0.0])
    assert np.allclose(moving_average(v, 3), [1.5, 1.5, 3.0, 1.5, 1.5])
    assert np.array_equal(moving_average(v, 1), v, equal_nan=True)
    assert series_label("throughput_tokens_per_s") == "throughput (tokens/s)"
    assert series_label("queue.waiting") == "waiting for admission"
    assert series_label("queue.link:sw->shared0") == "link:sw->shared0"
    assert series_label("kv_gib") == "kv gib"


def test_log_axis_tick_labels_do_not_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log axis over ~1.5 decades: matplotlib used to label its minor ticks too
    ('2x10^1 3x10^1 ...') on top of the major labels."""
    from sim.report import plots
    from sim.report.data import Latencies

    rng = np.random.default_rng(0)

    def lat(scale: float) -> Latencies:
        return Latencies(np.sort(rng.uniform(40 * scale, 60 * scale, 300)),
                         np.sort(rng.uniform(12 * scale, 18 * scale, 300)),
                         np.sort(rng.uniform(3000 * scale, 4000 * scale, 300)))

    figures = _captured_figures(monkeypatch)
    plots.plot_latency_cdfs_overlay([("a", lat(1)), ("b", lat(2)), ("c", lat(25))])
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    checked = 0
    for ax in fig.get_axes():
        if ax.get_xscale() != "log":
            continue
        checked += 1
        assert all(not t.get_text() for t in ax.xaxis.get_minorticklabels())
        lo, hi = ax.get_xlim()
        labels = [t for t, v in zip(ax.xaxis.get_majorticklabels(), ax.xaxis.get_majorticklocs())
                  if t.get_text() and lo <= v <= hi]
        assert len(labels) >= 2
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
        for left, right in itertools.pairwise(boxes):
            assert left.x1 <= right.x0, [t.get_text() for t in labels]
    assert checked == 3


def test_compare_report_gives_failure_reasons_and_links(tmp_path: Path) -> None:
    ok = tmp_path / "runs" / "ok"
    ok.mkdir(parents=True)
    (ok / "report.html").write_text("<html></html>")
    csv_path = _requests_csv(ok / "requests.csv")
    bad = tmp_path / "runs" / "bad"
    bad.mkdir(parents=True)
    (bad / "error.txt").write_text("Traceback (most recent call last):\n  ...\n"
                                   "ValueError: cluster.shared: 70 GiB per node does not fit\n")
    cfg = tmp_path / "runs" / "cfg"
    cfg.mkdir(parents=True)
    (cfg / "error.txt").write_text("workload.arrivals.rate_per_s: expected a number > 0\n"
                                   "  (from variant cfg)\n")
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir()
    (outside / "report.html").write_text("<html></html>")
    runs = [
        {"label": "ok", "summary": _summary("ok"), "requests_csv": csv_path},
        {"label": "bad", "summary": {"system": "moska"}},
        {"label": "cfg", "summary": {"system": "moska"}},
        {"label": "far", "summary": _summary("far"), "out_dir": outside},
    ]
    write_compare_report(tmp_path, runs, None)
    md = (tmp_path / "compare.md").read_text()
    assert "- [ok](runs/ok/report.html)" in md
    assert "- [bad (failed: error.txt)](runs/bad/error.txt)" in md
    assert "elsewhere" not in md  # a report never links out of its folder
    row = next(line for line in md.splitlines() if line.startswith("| bad |"))
    assert "| failed | ValueError: cluster.shared: 70 GiB per node does not fit |" in row
    assert "- Failed: bad: ValueError: cluster.shared: 70 GiB per node does not fit; cfg: " \
           "workload.arrivals.rate_per_s: expected a number > 0." in md


def test_load_sweep_table_names_its_axis_and_counts_points_past_saturation() -> None:
    from sim.report.compare_report import saturation_rows

    sweep = {
        "closed (x = concurrency)": {"axis": "concurrency",
                                     "offered_rate_per_s": [1, 2, 4, 8, 16, 32],
                                     "throughput_tokens_per_s": [20, 40, 78, 90, 92, None],
                                     "main_run_x": 32},
        "open": {"axis": "rate", "offered_rate_per_s": [1.0, 2.0, 4.5],
                 "throughput_tokens_per_s": [200, 400, 900]},
    }
    closed, open_ = saturation_rows(sweep)
    assert closed == {"config": "closed (x = concurrency)",
                      "load axis": "concurrency (closed loop)", "points": 6,
                      "peak throughput (tok/s)": 92.0, "at load": 16, "saturates at": 8,
                      "past saturation": "3 of 6 points; 1 without result", "main run at": 32}
    assert open_["load axis"] == "requests/s" and open_["saturates at"] == "not in range"
    assert open_["past saturation"] == "none" and open_["at load"] == 4.5
    text = format_table_text([closed, open_])
    assert "saturates at (req/s)" not in text  # the unit is the row's load axis


def test_load_sweep_figure_keeps_points_past_saturation(monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.report import plots

    figures = _captured_figures(monkeypatch)
    plots.plot_load_sweep({"c": {"axis": "concurrency",
                                 "offered_rate_per_s": [1, 2, 4, 8, 16, 32],
                                 "throughput_tokens_per_s": [20, 40, 78, 80, 82, None],
                                 "p99_tpot_ms": [5, 6, 9, 20, 45, None], "main_run_x": 32}})
    (fig,) = figures
    ax_t = fig.get_axes()[0]
    hollow = [(x, y) for ln in ax_t.get_lines() if ln.get_markerfacecolor() == "white"
              for x, y in zip(ln.get_xdata(), ln.get_ydata()) if np.isfinite(y)]
    assert hollow == [(16.0, 82.0)]  # past the knee at 8: drawn hollow, not hidden
    crosses = [ln for ln in ax_t.get_lines() if ln.get_marker() == "x"]
    assert [list(ln.get_xdata()) for ln in crosses] == [[32.0]]  # no result: marked, not a gap
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"past saturation", "no result", "main run's load"} <= set(legend)


def test_terminal_table_wraps_column_names_to_fit() -> None:
    rows = [{"config": "moska-paper-nodes", "peak throughput (tok/s)": 93.0,
             "TTFT p99 (ms)": 71000.0, "util shared": 0.946, "past saturation": "3 of 4 points"},
            {"config": "shared_gemm", "peak throughput (tok/s)": 36.5,
             "TTFT p99 (ms)": 277000.0, "util shared": None, "past saturation": "none"}]
    plain = format_table_text(rows)
    assert len(plain.splitlines()[0]) > 80
    narrow = format_table_text(rows, max_width=80)
    lines = narrow.splitlines()
    assert max(len(line) for line in lines) <= 80 < max(len(line) for line in plain.splitlines())
    rule = next(i for i, line in enumerate(lines) if set(line.replace(" ", "")) == {"-"})
    assert rule == 3  # 'peak / throughput / (tok/s)' on three header lines
    header_words = " ".join(lines[:rule]).split()
    for name in rows[0]:
        assert all(word in header_words for word in name.split())
    # the data lines are the same cells, only columns narrower
    assert lines[rule + 1].split() == plain.splitlines()[2].split()
    assert format_table_text(rows, max_width=500) == plain  # fits: unchanged
