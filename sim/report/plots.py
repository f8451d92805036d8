"""Figures for the reports, drawn with matplotlib's Agg canvas and returned as PNG bytes.

Determinism: figures are built on a private ``Figure`` + ``FigureCanvasAgg`` (no pyplot
global state, no display), under matplotlib's default style with fixed sizes and dpi,
and saved without the Software/CreationDate metadata, so identical data gives identical
bytes. Every function tolerates empty inputs and draws a "no data" panel instead.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.colors as mcolors
import matplotlib.style as mstyle
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from sim.report.data import LATENCY_COLUMNS, Latencies, TimeSeries, as_float, resource_kind
from sim.report.files import atomic_write_bytes
from sim.report.tables import format_number

DPI = 110
PNG_METADATA: dict[str, Any] = {"Software": None, "CreationDate": None}
_RC: dict[str, Any] = {
    "svg.hashsalt": "moska-sim",  # deterministic ids should anyone save SVG
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8.5,
    "legend.framealpha": 0.9,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "path.simplify": True,
    "axes.axisbelow": True,  # grid behind bars
}

METRIC_TITLES = {"ttft_ms": "TTFT", "tpot_ms": "TPOT", "e2e_ms": "End-to-end latency"}
PHASE_ORDER = (
    "unique_attention",
    "shared_attention",
    "router",
    "merge",
    "fabric",
    "queueing",
    "other_layers",
    "prefill",
    "prefill_stall",
    "collective",
)
PHASE_COLORS = {
    "unique_attention": "#1f77b4",
    "shared_attention": "#ff7f0e",
    "router": "#9467bd",
    "merge": "#e377c2",
    "fabric": "#d62728",
    "queueing": "#7f7f7f",
    "other_layers": "#2ca02c",
    "prefill": "#bcbd22",
    "prefill_stall": "#8c564b",
    "collective": "#17becf",
}
EXTRA_COLORS = ("#dbdb8d", "#8c564b", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5")
KIND_COLORS = {"unique": "#1f77b4", "shared": "#ff7f0e", "link": "#2ca02c", "other": "#7f7f7f"}
KIND_LABELS = {
    "unique": "unique nodes",
    "shared": "shared nodes",
    "link": "links",
    "other": "other",
}
SYSTEM_COLORS = {
    "vanilla": "#7f7f7f",
    "prefix_cache": "#1f77b4",
    "shared_gemm": "#2ca02c",
    "moska": "#d62728",
}
MAX_CDF_POINTS = 2000  # quantiles drawn per curve; keeps big runs fast and files small
MAX_LABELLED_SERIES = 10
MAX_UTIL_BARS = 48


# --------------------------------------------------------------------------- helpers


@contextmanager
def _style() -> Iterator[None]:
    """matplotlib defaults + our overrides, whatever the user's matplotlibrc says."""
    with mstyle.context("default"), mpl.rc_context(_RC):
        yield


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, without the metadata that would make bytes differ."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=PNG_METADATA, facecolor="white")
    return buf.getvalue()


def palette(n: int) -> list[str]:
    """``n`` distinct colours, stable for a given ``n`` (tab10, then tab20)."""
    cmap = mpl.colormaps["tab10" if n <= 10 else "tab20"]
    return [mcolors.to_hex(cmap(i % cmap.N)) for i in range(n)]


def phase_colors(phases: Sequence[str]) -> dict[str, str]:
    """Fixed colours for the known phases; extras get the next unused colours in order."""
    out: dict[str, str] = {}
    extra = 0
    for p in phases:
        if p in PHASE_COLORS:
            out[p] = PHASE_COLORS[p]
        else:
            out[p] = EXTRA_COLORS[extra % len(EXTRA_COLORS)]
            extra += 1
    return out


def order_phases(names: Sequence[str]) -> list[str]:
    """The standard phases in their fixed order, then any others in the order given."""
    known = [p for p in PHASE_ORDER if p in names]
    return known + [p for p in names if p not in PHASE_ORDER]


def natural_key(name: str) -> list[Any]:
    """Sort key so 'unique2' < 'unique10'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def shorten(label: str, width: int = 32) -> str:
    """Trim long labels for ticks and legends, keeping both ends (configs often differ only
    at the end: '...-100GBps' vs '...-400GBps'); the tables keep the full text."""
    if len(label) <= width:
        return label
    head = (width - 1) // 2
    tail = width - 1 - head
    return f"{label[:head]}…{label[-tail:]}"


def _legend_ncols(labels: Sequence[str], line_chars: int = 150) -> int:
    """Columns for a figure-wide legend so that it fits the figure's width."""
    longest = max((len(x) for x in labels), default=1)
    return max(1, min(len(labels), line_chars // (longest + 8)))


def _no_data(ax: Axes, text: str = "no data", clear_ticks: bool = True) -> None:
    """Say so in an empty panel (ticks kept when the x axis is shared with another panel)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#57606a")
    if clear_ticks:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.grid(False)


def _cdf_points(sorted_samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF (x, F(x)) of sorted samples, thinned to at most MAX_CDF_POINTS."""
    n = sorted_samples.size
    y = np.arange(1, n + 1) / n
    if n > MAX_CDF_POINTS:
        idx = np.unique(np.linspace(0, n - 1, MAX_CDF_POINTS).round().astype(int))
        return sorted_samples[idx], y[idx]
    return sorted_samples, y


def _wants_log(samples: Sequence[np.ndarray]) -> bool:
    """Log x when all samples are positive and they span more than ~1.5 decades."""
    arrs = [a for a in samples if a.size]
    if not arrs:
        return False
    lo = min(float(a.min()) for a in arrs)
    hi = max(float(a.max()) for a in arrs)
    return lo > 0 and hi / lo > 30


def format_tick(v: float) -> str:
    """Compact tick label: 5, 12.5, 0.25, 1,000 (no padded zeros like '10.0')."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else ""
    if abs(v) >= 1 and abs(v - round(v)) < 1e-9 * abs(v):
        return f"{round(v):,}"
    return f"{v:.3g}"


def format_count(v: float) -> str:
    """Token/batch counts: binary suffixes for powers-of-two multiples (16Mi), else 1.5M."""
    if v <= 0 or not math.isfinite(v):
        return format_tick(v)
    for suffix, unit in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if v >= unit and float(v / unit).is_integer():
            return f"{int(v / unit):,}{suffix}"
    for suffix, unit in (("G", 1e9), ("M", 1e6)):
        if v >= unit:
            return f"{v / unit:.3g}{suffix}"
    return format_tick(v)


def log_ticks(axis: Any, samples: Sequence[np.ndarray]) -> None:
    """Readable ticks on a log axis: labels at 1-2-5 steps over up to 1.3 decades, 1-3 steps
    up to 2.6 decades, else powers of ten only; unlabelled minor ticks. Without this, matplotlib labels the minor
    ticks of a narrow log range ('2x10^1 3x10^1 ...') and they overlap the major labels."""
    arrs = [a[np.isfinite(a) & (a > 0)] for a in samples if a.size]
    arrs = [a for a in arrs if a.size]
    decades = (math.log10(max(float(a.max()) for a in arrs) / min(float(a.min()) for a in arrs))
               if arrs else 0.0)
    subs = (1.0, 2.0, 5.0) if decades <= 1.3 else (1.0, 3.0) if decades <= 2.6 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(_ms_formatter())
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(float(k) for k in range(2, 10))))
    axis.set_minor_formatter(NullFormatter())


def _ms_formatter() -> FuncFormatter:
    return FuncFormatter(lambda v, _pos: format_tick(v))


def _percentile(samples: np.ndarray, q: float, given: Any = None) -> float | None:
    """The summary's percentile when it has one (so plot and table agree), else computed."""
    v = as_float(given)
    if v is not None:
        return v
    return float(np.percentile(samples, q)) if samples.size else None


# --------------------------------------------------------------------------- run plots


def plot_latency_cdfs(lat: Latencies, summary: Mapping[str, Any] | None = None) -> bytes:
    """TTFT, TPOT and e2e CDFs side by side, p50 and p99 marked (from the summary if set)."""
    summary = summary or {}
    with _style():
        fig = _figure(13.0, 3.9)
        axes = fig.subplots(1, 3)
        for ax, metric in zip(axes, LATENCY_COLUMNS):
            samples = lat.get(metric)
            ax.set_title(METRIC_TITLES[metric])
            if not samples.size:
                _no_data(ax, "no completed samples")
                continue
            x, y = _cdf_points(samples)
            ax.plot(x, y, drawstyle="steps-post", color="#1f77b4", lw=1.6, label="CDF")
            stats = summary.get(metric) if isinstance(summary.get(metric), Mapping) else {}
            for q, key, color in ((50, "p50", "#2ca02c"), (99, "p99", "#d62728")):
                v = _percentile(samples, q, stats.get(key))
                if v is None:
                    continue
                ax.axvline(v, color=color, ls="--", lw=1.1, label=f"{key} = {format_number(v)} ms")
                ax.plot([v], [q / 100], "o", color=color, ms=4.5)
            if _wants_log([samples]):
                ax.set_xscale("log")
                log_ticks(ax.xaxis, [samples])
            else:
                ax.xaxis.set_major_formatter(_ms_formatter())
            ax.set_xlabel("ms" + (" (log scale)" if ax.get_xscale() == "log" else ""))
            ax.set_ylim(0, 1.02)
            ax.set_ylabel("fraction of requests")
            ax.legend(loc="lower right")
            ax.text(
                0.02,
                0.97,
                f"n = {samples.size:,}",
                transform=ax.transAxes,
                va="top",
                fontsize=8,
                color="#57606a",
            )
        return figure_png(fig)


SERIES_LABELS = {
    "throughput_tokens_per_s": "throughput (tokens/s)",
    "running": "running (decoding or prefilling)",
    "queue.waiting": "waiting for admission",
    "in_system": "in the system",
}
QUEUE_KIND_UNITS = {
    "unique": "unique nodes: requests waiting for admission",
    "shared": "shared nodes: queries and prefill jobs waiting",
    "link": "links: messages waiting",
    "other": "other queues",
}


KIND_UNIT_NOUNS = {"unique": "nodes", "shared": "nodes", "link": "links", "other": "queues"}


def _headroom_for_legend(ax: Axes, factor: float = 1.35) -> None:
    """Raise the y limit so a legend in the top corner sits above the data."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, lo + (hi - lo) * factor)


def series_label(name: str) -> str:
    """A readable legend label for a timeseries.csv column (never the raw snake_case)."""
    if name in SERIES_LABELS:
        return SERIES_LABELS[name]
    return name.removeprefix("queue.").replace("_per_s", "/s").replace("_", " ")


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` samples, NaN samples ignored (NaN where a
    window holds none); the ends average over the samples they have."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size == 0:
        return v.copy()
    ok = np.isfinite(v)
    kernel = np.ones(window)
    sums = np.convolve(np.where(ok, v, 0.0), kernel, mode="same")
    counts = np.convolve(ok.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _smoothing_window(n: int) -> int:
    """About 2% of the samples (odd, at least 1): enough to read a trend through the
    batching cycles that make the raw samples jump."""
    w = max(1, round(n * 0.02))
    return w if w % 2 else w + 1


def _split_series(ts: TimeSeries) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(throughput series, request-count and queue series) of a time series."""
    thr = {k: v for k, v in ts.series.items() if "throughput" in k}
    queues = {k: v for k, v in ts.series.items()
              if k.startswith("queue.") or k in ("running", "in_system")}
    return thr, queues


def has_timeseries_content(ts: TimeSeries) -> bool:
    """True when the time series has something the timeseries figure would draw."""
    thr, queues = _split_series(ts)
    return bool(ts) and bool(thr or queues)


def _queue_totals(queues: Mapping[str, np.ndarray]) -> dict[str, tuple[int, np.ndarray]]:
    """Per resource kind (shared nodes, links, ...): (resources, summed queue length).
    Unique nodes' queues are left out: their sum is ``queue.waiting``, drawn with the
    request counts."""
    out: dict[str, tuple[int, np.ndarray]] = {}
    for name, values in queues.items():
        if not name.startswith("queue.") or name == "queue.waiting":
            continue
        kind = resource_kind(name.removeprefix("queue."))
        if kind == "unique":
            continue
        n, total = out.get(kind, (0, np.zeros(values.shape)))
        out[kind] = (n + 1, total + np.nan_to_num(values))
    return out


def _mark_faults(axes: Sequence[Axes], faults: Sequence[tuple[float, float | None, str]],
                 t_end: float) -> None:
    """Shade each fault's window (red) on every panel; label it on the first."""
    for i, (start, end, label) in enumerate(faults):
        stop = t_end if end is None else end
        for k, ax in enumerate(axes):
            ax.axvspan(start, max(stop, start), color="#cf222e", alpha=0.10, lw=0,
                       label=(f"fault: {label}" if k == 0 and i < 4 else None))
            ax.axvline(start, color="#cf222e", lw=1.0, ls="--")


def plot_timeseries(ts: TimeSeries, mean_throughput: float | None = None,
                    faults: Sequence[tuple[float, float | None, str]] = ()) -> bytes:
    """Three panels over simulated time: token throughput (raw and moving average),
    requests running / waiting for admission (stacked: their sum is the requests in the
    system, so a backlog that grows is plain to see), and the queues at the shared nodes
    and links summed per kind (moving average over the raw samples, which jump with every
    batch)."""
    thr, queues = _split_series(ts)
    totals = _queue_totals(queues)
    window = _smoothing_window(ts.time_s.size)
    smooth_note = f"line: moving average over {window} samples" if window > 1 else ""
    with _style():
        fig = _figure(11.0, 8.2)
        ax_thr, ax_req, ax_q = fig.subplots(3, 1, sharex=True)
        if faults:
            t_end = float(ts.time_s.max()) if ts.time_s.size else 0.0
            _mark_faults((ax_thr, ax_req, ax_q), faults, t_end)
        ax_thr.set_title("Token throughput over time")
        if thr:
            colors = palette(len(thr))
            for (name, values), color in zip(thr.items(), colors):
                label = series_label(name)
                if window > 1:
                    ax_thr.plot(ts.time_s, values, lw=0.6, color=color, alpha=0.3)
                    label += f" ({smooth_note})"
                ax_thr.plot(ts.time_s, moving_average(values, window), lw=1.6, color=color,
                            label=label)
            if mean_throughput is not None:
                ax_thr.axhline(mean_throughput, color="#57606a", ls=":", lw=1.1,
                               label=f"run mean = {format_number(mean_throughput)} tokens/s")
            ax_thr.set_ylabel("tokens/s")
            ax_thr.set_ylim(bottom=0)
            ax_thr.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: format_tick(v)))
            _headroom_for_legend(ax_thr)
            ax_thr.legend(loc="upper left", ncols=2)
        else:
            _no_data(ax_thr, "no throughput series in timeseries.csv", clear_ticks=False)

        ax_req.set_title("Requests in the system: running + waiting for admission (stacked)")
        running, waiting = queues.get("running"), queues.get("queue.waiting")
        if running is not None or waiting is not None:
            layers = [(v, series_label(k), c) for k, v, c in (
                ("running", running, "#1f77b4"), ("queue.waiting", waiting, "#ff7f0e"))
                if v is not None]
            ax_req.stackplot(ts.time_s, *[np.nan_to_num(v) for v, _l, _c in layers],
                             labels=[lab for _v, lab, _c in layers],
                             colors=[c for _v, _l, c in layers], alpha=0.75, lw=0)
            ax_req.set_ylabel("requests")
            ax_req.set_ylim(bottom=0)
            ax_req.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: format_tick(v)))
            _headroom_for_legend(ax_req)
            ax_req.legend(loc="upper left", ncols=2)
        elif "in_system" in queues:
            ax_req.plot(ts.time_s, queues["in_system"], color="black", lw=1.4,
                        label=series_label("in_system"))
            ax_req.set_ylabel("requests")
            ax_req.set_ylim(bottom=0)
            _headroom_for_legend(ax_req)
            ax_req.legend(loc="upper left")
        else:
            _no_data(ax_req, "no running or queue.waiting series in timeseries.csv",
                     clear_ticks=False)

        ax_q.set_title("Queues at shared nodes and links (sum per kind)")
        if totals:
            for kind in ("shared", "link", "other"):
                if kind not in totals:
                    continue
                n, total = totals[kind]
                color = KIND_COLORS[kind]
                if window > 1:
                    ax_q.plot(ts.time_s, total, lw=0.5, color=color, alpha=0.25)
                ax_q.plot(ts.time_s, moving_average(total, window), lw=1.6, color=color,
                          label=f"{QUEUE_KIND_UNITS[kind]} ({n} {KIND_UNIT_NOUNS[kind]})")
            ax_q.set_ylabel("items waiting")
            ax_q.set_ylim(bottom=0)
            ax_q.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: format_tick(v)))
            _headroom_for_legend(ax_q)
            ax_q.legend(loc="upper left", ncols=2, title=smooth_note or None, title_fontsize=8,
                        alignment="left")
        else:
            _no_data(ax_q, "no shared-node or link queue series in timeseries.csv",
                     clear_ticks=False)
        ax_q.set_xlabel("simulated time (s)")
        return figure_png(fig)


def _util_items(utilization: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """(kind, name, value) for finite utilizations, grouped by kind, natural order."""
    rank = {"unique": 0, "shared": 1, "link": 2, "other": 3}
    items = []
    for name, value in utilization.items():
        v = as_float(value)
        if v is not None:
            items.append((resource_kind(str(name)), str(name), v))
    items.sort(key=lambda t: (rank[t[0]], natural_key(t[1])))
    return items


def _util_label(v: float) -> str:
    shown = f"{v:.1%}"
    return shown if 0.0 <= v <= 1.0 else f"{shown} (clipped)"


def plot_utilization(utilization: Mapping[str, Any]) -> bytes:
    """Horizontal bars per resource in [0, 1], coloured by kind, value printed.

    Beyond MAX_UTIL_BARS resources one bar per kind shows the mean, with the min-max
    range as an error bar, so the figure stays readable for large clusters.
    """
    items = _util_items(utilization)
    aggregate = len(items) > MAX_UTIL_BARS
    if aggregate:
        by_kind: dict[str, list[float]] = {}
        for kind, _name, v in items:
            by_kind.setdefault(kind, []).append(v)
        rows = [
            (
                kind,
                f"{KIND_LABELS[kind]} (n={len(vs)}, mean)",
                float(np.mean(vs)),
                float(min(vs)),
                float(max(vs)),
            )
            for kind, vs in by_kind.items()
        ]
    else:
        rows = [(k, n, v, v, v) for k, n, v in items]
    n = max(len(rows), 1)
    with _style():
        fig = _figure(9.0, 1.3 + 0.3 * n)
        ax = fig.subplots()
        ax.set_title("Utilization per resource" + (" (aggregated by kind)" if aggregate else ""))
        if not rows:
            _no_data(ax)
            return figure_png(fig)
        ypos = np.arange(len(rows))[::-1]
        vals = [min(max(r[2], 0.0), 1.0) for r in rows]
        colors = [KIND_COLORS[r[0]] for r in rows]
        ax.barh(ypos, vals, color=colors, height=0.7)
        if aggregate:
            lo = [min(max(r[3], 0.0), 1.0) for r in rows]
            hi = [min(max(r[4], 0.0), 1.0) for r in rows]
            err = np.array([[v - a for v, a in zip(vals, lo)], [b - v for v, b in zip(vals, hi)]])
            ax.errorbar(vals, ypos, xerr=err, fmt="none", ecolor="black", capsize=3, lw=1)
        for y, r, v in zip(ypos, rows, vals):
            if aggregate:  # label past the whisker so the two do not overlap
                x = min(max(r[4], 0.0), 1.0) + 0.015
                text = f"mean {_util_label(r[2])}, range {r[3]:.0%}–{r[4]:.0%}"
            else:
                x, text = v + 0.01, _util_label(r[2])
            ax.text(x, y, text, va="center", fontsize=8.5)
        ax.set_yticks(ypos, [shorten(r[1]) for r in rows])
        ax.set_xlim(0, 1.45 if aggregate else 1.16)
        ax.set_xticks(np.linspace(0, 1, 6))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0%}"))
        ax.axvline(1.0, color="#57606a", lw=0.8)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("fraction of simulated time busy")
        kinds = list(dict.fromkeys(r[0] for r in rows))
        fig.legend(  # below the axes: inside it would cover a bar near 100%
            [Patch(color=KIND_COLORS[k]) for k in kinds],
            [KIND_LABELS[k] for k in kinds],
            loc="outside lower center",
            ncols=len(kinds),
            frameon=False,
        )
        return figure_png(fig)


def _breakdown_items(breakdown: Mapping[str, Any]) -> list[tuple[str, float]]:
    vals = {str(k): as_float(v) for k, v in breakdown.items()}
    return [(p, vals[p]) for p in order_phases(list(vals)) if vals[p] is not None and vals[p] > 0]


def plot_time_breakdown(breakdown: Mapping[str, Any],
                        xlabel: str = "ms summed over requests") -> bytes:
    """One stacked horizontal bar: where a decode step's time goes, ms and share labelled."""
    items = _breakdown_items(breakdown)
    with _style():
        fig = _figure(11.0, 2.6)
        ax = fig.subplots()
        ax.set_title("Decode step time breakdown")
        if not items:
            _no_data(ax)
            return figure_png(fig)
        total = sum(v for _p, v in items)
        colors = phase_colors([p for p, _v in items])
        left = 0.0
        for phase, v in items:
            ax.barh(
                [0],
                [v],
                left=left,
                color=colors[phase],
                height=0.55,
                label=f"{phase}: {format_number(v)} ms ({v / total:.0%})",
            )
            if v / total >= 0.07:
                ax.text(
                    left + v / 2,
                    0,
                    f"{format_number(v)}\n{v / total:.0%}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white",
                    fontweight="bold",
                )
            left += v
        ax.set_xlim(0, total * 1.001)
        ax.set_yticks([])
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(f"{xlabel} (total {format_number(total)} ms)")
        fig.legend(loc="outside lower center", ncols=min(4, len(items)), frameon=False)
        return figure_png(fig)


# --------------------------------------------------------------------------- compare plots


def plot_latency_cdfs_overlay(latencies: Sequence[tuple[str, Latencies]]) -> bytes:
    """TTFT, TPOT and e2e CDFs with one line per config; dots mark each line's p99."""
    colors = palette(len(latencies))
    with _style():
        fig = _figure(13.0, 4.3)
        axes = fig.subplots(1, 3)
        for ax, metric in zip(axes, LATENCY_COLUMNS):
            ax.set_title(METRIC_TITLES[metric])
            samples = [lat.get(metric) for _label, lat in latencies]
            if not any(s.size for s in samples):
                _no_data(ax, "no completed samples")
                continue
            for (label, _lat), s, color in zip(latencies, samples, colors):
                if not s.size:
                    continue
                x, y = _cdf_points(s)
                ax.plot(x, y, drawstyle="steps-post", color=color, lw=1.5)
                p99 = float(np.percentile(s, 99))
                ax.plot([p99], [0.99], "o", color=color, ms=4.5)
            ax.axhline(0.99, color="#57606a", ls=":", lw=0.8)
            if _wants_log(samples):
                ax.set_xscale("log")
                log_ticks(ax.xaxis, samples)
            else:
                ax.xaxis.set_major_formatter(_ms_formatter())
            ax.set_xlabel("ms" + (" (log scale)" if ax.get_xscale() == "log" else ""))
            ax.set_ylim(0, 1.02)
            ax.set_ylabel("fraction of requests")
        handles = [Line2D([], [], color=c, lw=2) for c in colors]
        handles.append(Line2D([], [], color="#57606a", marker="o", ls=":", lw=0.8))
        labels = [shorten(label, 40) for label, _ in latencies] + ["p99"]
        fig.legend(
            handles, labels, loc="outside lower center", ncols=_legend_ncols(labels), frameon=False
        )
        return figure_png(fig)


def saturation_index(
    offered: Sequence[float], throughput: Sequence[float], tolerance: float = 0.1
) -> int | None:
    """First sweep point where throughput falls ``tolerance`` below linear scaling.

    Unsaturated, throughput = offered rate x tokens per request, so throughput/offered is
    flat; we take its best value over the points so far and flag the first point more
    than ``tolerance`` below it. None when the sweep never saturates.
    """
    best = 0.0
    for i, (o, t) in enumerate(zip(offered, throughput)):
        o_f, t_f = as_float(o), as_float(t)
        if o_f is None or t_f is None or o_f <= 0:
            continue
        eff = t_f / o_f
        if best > 0 and eff < (1 - tolerance) * best:
            return i
        best = max(best, eff)
    return None


def _floats(values: Sequence[Any] | None) -> np.ndarray:
    """Sequence -> float array with None/NaN/non-positive as NaN (gaps in log plots)."""
    out = []
    for v in values or []:
        f = as_float(v)
        out.append(f if f is not None and f > 0 else math.nan)
    return np.asarray(out, dtype=float)


def plot_load_sweep(load_sweep: Mapping[str, Mapping[str, Sequence[Any]]]) -> bytes:
    """Throughput and p99 TPOT vs offered load, one line per config, saturation marked."""
    labels = list(load_sweep)
    colors = palette(len(labels))
    with _style():
        fig = _figure(12.0, 5.0)
        ax_t, ax_p = fig.subplots(1, 2, sharex=True)  # the same loads side by side
        ax_p.xaxis.set_tick_params(labelbottom=True)
        ax_t.set_title("Throughput vs offered load")
        ax_p.set_title("p99 TPOT vs offered load")
        any_p99 = any_lost = False
        p99_all: list[np.ndarray] = []
        axes = {str(load_sweep[label].get("axis", "rate")) for label in labels}
        if axes == {"concurrency"}:
            xlabel = "offered load (concurrent requests, closed loop)"
        elif "concurrency" in axes:
            xlabel = "offered load (requests/s; closed-loop configs: concurrency)"
        else:
            xlabel = "offered load (requests/s)"
        for label, color in zip(labels, colors):
            sweep = load_sweep[label]
            sat_unit = " concurrent" if sweep.get("axis") == "concurrency" else "/s"
            x = _floats(sweep.get("offered_rate_per_s"))
            t = _floats(sweep.get("throughput_tokens_per_s"))
            n = min(x.size, t.size)
            x, t = x[:n], t[:n]
            sat = saturation_index(x.tolist(), t.tolist())
            name = shorten(label, 36)
            if sat is not None:
                name += f" (saturates ≈ {format_tick(x[sat])}{sat_unit})"
            ax_t.plot(x, t, "o-", color=color, lw=1.5, ms=4, label=name)
            if sat is not None:
                ax_t.axvline(x[sat], color=color, ls=":", lw=1.1)
                # points past saturation stay, drawn hollow: they show the plateau
                ax_t.plot(x[sat + 1:], t[sat + 1:], "o", ms=6, mfc="white", mec=color, mew=1.3)
                ax_t.plot([x[sat]], [t[sat]], "*", color=color, ms=13, mec="black", mew=0.6)
            lost = np.isfinite(x) & ~np.isfinite(t)
            if lost.any():  # a point without a result: an x on the axis, not a silent gap
                any_lost = True
                ax_t.plot(x[lost], np.zeros(int(lost.sum())), "x", color=color, ms=8, mew=1.6,
                          clip_on=False)
            main_x = as_float(sweep.get("main_run_x"))
            if main_x is not None:
                ax_t.axvline(main_x, color=color, ls="--", lw=1.0, alpha=0.8)
                ax_t.annotate("main run", (main_x, 1.0), xycoords=("data", "axes fraction"),
                              rotation=90, va="top", ha="right", fontsize=7.5, color=color)
            p = _floats(sweep.get("p99_tpot_ms"))
            m = min(x.size, p.size)
            if m and np.isfinite(p[:m]).any():
                any_p99 = True
                p99_all.append(p[:m][np.isfinite(p[:m])])
                ax_p.plot(x[:m], p[:m], "o-", color=color, lw=1.5, ms=4)
                if sat is not None and sat < m:
                    ax_p.axvline(x[sat], color=color, ls=":", lw=1.1)
                    ax_p.plot(x[sat + 1:m], p[sat + 1:m], "o", ms=6, mfc="white", mec=color,
                              mew=1.3)
        ax_t.set_xlabel(xlabel)
        ax_t.set_ylabel("throughput (tokens/s)")
        ax_t.set_ylim(bottom=0)
        ax_t.set_xlim(left=0)
        ax_t.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: format_tick(v)))
        if labels:
            # below the axes (inside, the box hid the highest line), with a key to the marks
            handles, names = ax_t.get_legend_handles_labels()
            key = [(Line2D([], [], color="#57606a", marker="*", ms=11, mec="black", mew=0.6,
                           ls=":", lw=1.1), "saturation: first point ≥10% below linear scaling"),
                   (Line2D([], [], color="#57606a", marker="o", ms=6, mfc="white", ls="none"),
                    "past saturation")]
            if any_lost:
                key.append((Line2D([], [], color="#57606a", marker="x", ms=8, mew=1.6,
                                   ls="none"), "no result"))
            if any(as_float(load_sweep[lab].get("main_run_x")) is not None for lab in labels):
                key.append((Line2D([], [], color="#57606a", ls="--", lw=1.0), "main run's load"))
            fig.legend([*handles, *(h for h, _n in key)], [*names, *(n for _h, n in key)],
                       loc="outside lower center", ncols=2, fontsize=8, frameon=False)
        else:
            _no_data(ax_t)
        if any_p99:
            ax_p.set_xlabel(xlabel)
            ax_p.set_ylabel("p99 TPOT (ms)")
            ax_p.set_xlim(left=0)
            if _wants_log(p99_all):
                ax_p.set_yscale("log")
                log_ticks(ax_p.yaxis, p99_all)
            else:
                ax_p.yaxis.set_major_formatter(_ms_formatter())
        else:
            _no_data(ax_p, "no p99_tpot_ms in load sweep")
        return figure_png(fig)


def plot_utilization_grouped(rows: Sequence[tuple[str, Mapping[str, float | None]]]) -> bytes:
    """Mean utilization of unique nodes / shared nodes / links, grouped per config."""
    kinds = ("unique", "shared", "link")
    n = len(rows)
    with _style():
        fig = _figure(max(7.0, min(16.0, 2.0 + 1.5 * n)), 4.4)
        ax = fig.subplots()
        ax.set_title("Mean utilization per config")
        if not n:
            _no_data(ax)
            return figure_png(fig)
        width = 0.26
        centers = np.arange(n)
        for j, kind in enumerate(kinds):
            xs = centers + (j - 1) * width
            for x, (_label, util) in zip(xs, rows):
                v = util.get(kind)
                if v is None:
                    ax.text(
                        x,
                        0.01,
                        "n/a",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        rotation=90,
                        color="#57606a",
                    )
                    continue
                shown = min(max(v, 0.0), 1.0)
                ax.bar([x], [shown], width=width * 0.95, color=KIND_COLORS[kind])
                ax.text(
                    x,
                    shown + 0.015,
                    f"{v:.0%}",
                    ha="center",
                    va="bottom",
                    fontsize=7.5,
                    rotation=90 if n > 6 else 0,
                )
        ax.set_xticks(
            centers,
            [shorten(label, 22) for label, _u in rows],
            rotation=20 if n > 3 else 0,
            ha="right" if n > 3 else "center",
        )
        ax.set_ylim(0, 1.15)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0%}"))
        ax.axhline(1.0, color="#57606a", lw=0.8)
        ax.grid(axis="x", visible=False)
        ax.set_ylabel("mean fraction busy")
        fig.legend(
            [Patch(color=KIND_COLORS[k]) for k in kinds],
            [KIND_LABELS[k] for k in kinds],
            loc="outside right upper",
            frameon=False,
        )
        return figure_png(fig)


def plot_time_breakdown_stacked(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> bytes:
    """One stacked horizontal bar per config: decode-step time per phase (ms)."""
    per_config = [(label, dict(_breakdown_items(b or {}))) for label, b in rows]
    phases = order_phases(list(dict.fromkeys(p for _l, b in per_config for p in b)))
    colors = phase_colors(phases)
    n = len(per_config)
    with _style():
        fig = _figure(11.0, 1.6 + 0.5 * max(n, 1))
        ax = fig.subplots()
        ax.set_title("Decode step time breakdown per config")
        if not phases:
            _no_data(ax)
            return figure_png(fig)
        ypos = np.arange(n)[::-1]
        totals = []
        for y, (_label, b) in zip(ypos, per_config):
            left = 0.0
            for phase in phases:
                v = b.get(phase, 0.0)
                if v > 0:
                    ax.barh([y], [v], left=left, color=colors[phase], height=0.6)
                left += v
            totals.append(left)
        top = max(totals) if totals else 1.0
        for y, total in zip(ypos, totals):
            if total > 0:
                ax.text(
                    total + top * 0.01, y, f"{format_number(total)} ms", va="center", fontsize=8
                )
            else:
                ax.text(top * 0.01, y, "no data", va="center", fontsize=8, color="#57606a")
        ax.set_xlim(0, top * 1.13)
        ax.set_yticks(ypos, [shorten(label) for label, _b in per_config])
        ax.grid(axis="y", visible=False)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: format_tick(v)))
        ax.set_xlabel("ms per decode step")
        fig.legend(
            [Patch(color=colors[p]) for p in phases],
            phases,
            loc="outside right upper",
            frameon=False,
        )
        return figure_png(fig)


# --------------------------------------------------------------------------- analysis


def _system_colors(systems: Sequence[str]) -> dict[str, str]:
    """Known systems keep their colour in every figure; others take palette colours."""
    spare = [c for c in palette(10) if c not in SYSTEM_COLORS.values()]
    out, i = {}, 0
    for s in systems:
        if s in SYSTEM_COLORS:
            out[s] = SYSTEM_COLORS[s]
        else:
            out[s] = spare[i % len(spare)]
            i += 1
    return out


def _sweep_panel(
    ax: Axes,
    sweep: Mapping[str, Any] | None,
    x_key: str,
    title: str,
    xlabel: str,
    colors: Mapping[str, str],
) -> None:
    """One log-log panel: throughput vs ``x_key``, one line per system, NaN = gap."""
    ax.set_title(title)
    systems = (sweep or {}).get("systems") or {}
    x = _floats((sweep or {}).get(x_key))
    drawn = any_infeasible = False
    for rank, (system, series) in enumerate(systems.items()):
        y = _floats((series or {}).get("throughput_tokens_per_s"))
        n = min(x.size, y.size)
        feasible = int(np.isfinite(y[:n]).sum()) if n else 0
        label = system if feasible else f"{system} (infeasible)"
        ax.plot(x[:n], y[:n], "o-", color=colors[system], lw=1.6, ms=4, label=label)
        bad = np.isfinite(x[:n]) & ~np.isfinite(y[:n])
        if bad.any():  # an x near the bottom edge per infeasible point, one row per system
            any_infeasible = True
            ax.plot(
                x[:n][bad],
                np.full(int(bad.sum()), 0.03 + 0.035 * rank),
                "x",
                color=colors[system],
                ms=6,
                mew=1.5,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
            )
        drawn = drawn or feasible > 0
    if not drawn:
        _no_data(ax, "no feasible points")
        return
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.25)
    ticks = np.unique(x[np.isfinite(x)])
    if 0 < ticks.size <= 12:  # label the sweep points themselves (1, 4, 16 ... / 1Mi, 4Mi)
        ax.set_xticks(ticks, [format_count(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: format_count(v)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: format_tick(v)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("throughput (tokens/s)")
    handles, labels = ax.get_legend_handles_labels()
    if any_infeasible:
        handles.append(Line2D([], [], color="#57606a", marker="x", ls="none", mew=1.5))
        labels.append("infeasible (memory)")
    ax.legend(handles, labels, loc="best")


def render_analysis_png(analysis: Mapping[str, Any]) -> bytes:
    """The analysis figure: throughput vs batch size and vs shared tokens (log-log)."""
    batch = analysis.get("batch_sweep") or {}
    shared = analysis.get("shared_sweep") or {}
    systems = list(dict.fromkeys([*(batch.get("systems") or {}), *(shared.get("systems") or {})]))
    colors = _system_colors(systems)
    with _style():
        fig = _figure(12.0, 4.6)
        ax_b, ax_s = fig.subplots(1, 2)
        _sweep_panel(
            ax_b, batch, "batch", "Throughput vs batch size", "batch size (requests)", colors
        )
        _sweep_panel(
            ax_s, shared, "shared_tokens", "Throughput vs shared context", "shared tokens", colors
        )
        name = analysis.get("name")
        fig.suptitle(f"Analytic model{f': {name}' if name else ''}", fontweight="bold")
        return figure_png(fig)


def plot_analysis(analysis: Mapping[str, Any], path: Path) -> Path:
    """Write the analysis figure (see :func:`render_analysis_png`) to ``path`` atomically."""
    return atomic_write_bytes(Path(path), render_analysis_png(analysis))
