"""The verdict: what a run (or a comparison) says, in a few plain sentences.

Why: a report's tables hold every number, but an architect first needs the answer: how
fast, how slow at p50/p99, which resource limits the run and on what it spends its time,
and whether the load is past saturation (so its latencies describe a growing queue, not the
hardware). This module reads only a run's summary dict (``summary.json``) and, where given,
its ``requests.csv``; it imports no model code, like the rest of :mod:`sim.report`.

Entry points:
- :func:`run_verdict` / :func:`verdict_lines` for one run (top of ``report.*``; the CLI
  prints :func:`verdict_lines`),
- :func:`compare_verdict` / :func:`compare_verdict_lines` for ``moska-sim compare``:
  the winner per metric (throughput, p99 TPOT, $/M tokens) and why, from the breakdown.

How saturation is judged (each rule is stated in the verdict when it fires):
- *backlog growing* (open-loop arrivals): over the second half of the arrival window,
  fewer than 90% as many requests complete as arrive and the number in the system grows
  by more than Poisson noise (3 sqrt(arrivals)); the run is then past saturation and its
  latencies grow with its length.
- *admission wait dominates*: requests spend more than half their end-to-end time
  waiting to be admitted to a unique node.
- *closed loop past the knee*: with a fixed concurrency, more than half of request time is
  waiting (queueing, prefill stalls, admission) rather than being served, or the bottleneck
  is at least 90% busy (throughput capped) and more than a fifth is waiting. By Little's
  law the concurrency that would give the same throughput without that waiting is about
  concurrency x (1 - waiting share): the knee, an upper estimate (prefill time counts as
  service although part of it is waiting for other prefills).
- otherwise *at capacity* when the busiest resource is at least 90% busy or more than half
  of request time is waiting (a stable queue near the knee), else *below saturation*.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.report.data import as_float, read_numeric_csv, resource_kind
from sim.report.tables import format_number

BUSY_THRESHOLD = 0.9  # a resource this busy is at capacity
BACKLOG_COMPLETION_RATIO = 0.9  # completions below this share of arrivals: backlog grows
ADMISSION_DOMINANT_SHARE = 0.5  # admission wait above this share of e2e
WAITING_SHARE = 0.5  # waiting above this share of request time: at or past the knee
CAPPED_WAITING_SHARE = 0.2  # closed loop with a capped bottleneck: past the knee above this
MIN_BACKLOG_ARRIVALS = 20  # fewer arrivals in the window: too few to tell
PREFILL_DOMINANT_SHARE = 0.5  # shared nodes mostly prefilling: say why analyze differs

PAST = "past saturation"
AT_CAPACITY = "at capacity"
BELOW = "below saturation"
UNKNOWN = "unknown"

KIND_NAMES = {"unique": "unique nodes", "shared": "shared nodes", "link": "links"}
WAITING_PHASES = ("queueing", "prefill_stall")
PHASE_WORDS = {
    "unique_attention": "attention over its own KV on the unique node",
    "shared_attention": "shared-corpus attention",
    "router": "routing (scoring chunks)",
    "merge": "merging partial attention results",
    "fabric": "fabric transfers",
    "queueing": "queueing at the shared nodes",
    "other_layers": "the rest of the decoder (projections, FFN)",
    "prefill_stall": "stalls while its unique node prefills new requests",
    "prefill": "its own prefill",
    "collective": "tensor-parallel collectives on its node's internal link",
}


# --------------------------------------------------------------------------- helpers


def _fmt(value: float | None, unit: str = "") -> str:
    """A number as the tables show it, with its unit; '—' when missing."""
    if value is None:
        return "—"
    return f"{format_number(value)}{unit}"


def _pct(stats: Any, key: str) -> float | None:
    return as_float(stats.get(key)) if isinstance(stats, Mapping) else None


def _get(mapping: Any, path: str) -> Any:
    """``mapping['a']['b']`` for 'a.b'; None where a level is missing."""
    node = mapping
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def per_token_breakdown(summary: Mapping[str, Any]) -> dict[str, float]:
    """ms per decode token by phase (``time_breakdown_per_token_ms``), positive values only."""
    raw = summary.get("time_breakdown_per_token_ms")
    if not isinstance(raw, Mapping):
        return {}
    out = {str(k): as_float(v) for k, v in raw.items()}
    return {k: v for k, v in out.items() if v is not None and v > 0}


def top_phases(breakdown: Mapping[str, float], n: int = 3) -> list[tuple[str, float, float]]:
    """The ``n`` largest phases as (phase, ms, share of the total), largest first; ties
    broken by name so the text is deterministic."""
    total = sum(breakdown.values())
    if total <= 0:
        return []
    items = sorted(breakdown.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(p, v, v / total) for p, v in items[:n]]


def _phase_list(items: Sequence[tuple[str, float, float]]) -> str:
    return ", ".join(f"{p} {_fmt(v, ' ms')} ({s:.0%})" for p, v, s in items)


def arrivals_kind(summary: Mapping[str, Any]) -> str | None:
    """``workload.arrivals.kind`` from the summary's resolved config, if it has one."""
    kind = _get(summary.get("config"), "workload.arrivals.kind")
    return str(kind) if kind is not None else None


# --------------------------------------------------------------------------- bottleneck


@dataclass(frozen=True)
class Bottleneck:
    """The busiest resource kind of a run and what its busiest member does."""

    kind: str  # 'unique', 'shared' or 'link'
    resource: str  # the busiest resource of that kind
    utilization: float  # its fraction of simulated time busy
    mean_utilization: float  # mean over the kind's resources
    count: int  # resources of that kind
    activity: str  # what it spends its busy time on, one sentence fragment
    others: dict[str, float] = field(default_factory=dict)  # max utilization of other kinds

    @property
    def label(self) -> str:
        """'shared nodes', 'unique nodes' or 'links'."""
        return KIND_NAMES.get(self.kind, self.kind)


def _busiest(utilization: Mapping[str, Any]) -> dict[str, tuple[str, float, float, int]]:
    """Per kind: (busiest resource, its utilization, the kind's mean, count)."""
    groups: dict[str, list[tuple[str, float]]] = {}
    for name, value in utilization.items():
        v = as_float(value)
        kind = resource_kind(str(name))
        if v is None or kind not in KIND_NAMES:
            continue
        groups.setdefault(kind, []).append((str(name), v))
    out = {}
    for kind, items in groups.items():
        name, top = max(items, key=lambda t: (t[1], t[0]))
        out[kind] = (name, top, float(np.mean([v for _n, v in items])), len(items))
    return out


def _activity(kind: str, resource: str, summary: Mapping[str, Any]) -> str:
    """What the busiest resource of ``kind`` spends its busy time on, from busy_s, the
    shared nodes' prefill seconds, bytes per link and the per-token breakdown."""
    busy = as_float(_get(summary.get("busy_s"), resource))
    tok = per_token_breakdown(summary)
    if kind == "shared":
        prefill = as_float(_get(summary.get("shared_nodes"), f"{resource}.prefill_busy_s"))
        if busy and prefill is not None:
            attn = max(busy - prefill, 0.0)
            text = (f"of its {_fmt(busy, ' s')} busy, {_fmt(prefill, ' s')} "
                    f"({prefill / busy:.0%}) are prefill jobs for newly admitted requests and "
                    f"{_fmt(attn, ' s')} ({attn / busy:.0%}) batched shared-attention kernels")
            if prefill > PREFILL_DOMINANT_SHARE * busy:
                # the surprising number explained where it appears
                text += (" (prompts attend to the whole shared corpus in prefill; moska-sim "
                         "analyze models decode only, so it predicts far more tokens/s: "
                         "docs/paper.md)")
            return text
        if tok.get("shared_attention"):
            return (f"shared attention takes {_fmt(tok['shared_attention'], ' ms')} of each "
                    "decode token")
        return "shared-attention kernels"
    if kind == "unique":
        parts = [(p, tok[p]) for p in ("other_layers", "unique_attention", "shared_attention",
                                       "router", "merge") if tok.get(p)]
        parts.sort(key=lambda kv: (-kv[1], kv[0]))
        text = "per decode token it runs " + ", ".join(
            f"{p} {_fmt(v, ' ms')}" for p, v in parts) if parts else "decode steps"
        stall = tok.get("prefill_stall")
        if stall:
            text += f"; requests also wait {_fmt(stall, ' ms')} per token while it prefills"
        if busy:
            text = f"busy {_fmt(busy, ' s')}: " + text
        return text
    if kind == "link":
        moved = as_float(_get(summary.get("bytes"), f"per_link.{resource}"))
        text = f"carries {_fmt(moved / 1e9, ' GB')}" if moved is not None else "carries transfers"
        if tok.get("fabric"):
            text += f"; transfers cost each decode token {_fmt(tok['fabric'], ' ms')}"
        return text
    return "work"


def find_bottleneck(summary: Mapping[str, Any]) -> Bottleneck | None:
    """The resource kind whose busiest member has the highest utilization (ties: unique,
    then shared, then links), or None when the summary has no utilization."""
    util = summary.get("utilization")
    if not isinstance(util, Mapping):
        return None
    per_kind = _busiest(util)
    if not per_kind:
        return None
    order = {"unique": 0, "shared": 1, "link": 2}
    kind = max(per_kind, key=lambda k: (per_kind[k][1], -order[k]))
    name, top, mean, count = per_kind[kind]
    others = {k: v[1] for k, v in per_kind.items() if k != kind}
    return Bottleneck(kind, name, top, mean, count, _activity(kind, name, summary), others)


# --------------------------------------------------------------------------- saturation


@dataclass(frozen=True)
class Backlog:
    """Arrivals against completions over the second half of the arrival window."""

    window_s: float
    arrivals: int
    completions: int
    in_system_start: int
    in_system_end: int

    @property
    def offered_per_s(self) -> float:
        return self.arrivals / self.window_s

    @property
    def completed_per_s(self) -> float:
        return self.completions / self.window_s

    @property
    def growing(self) -> bool:
        """Completions fall short of arrivals by more than 10% and Poisson noise."""
        growth = self.in_system_end - self.in_system_start
        return (self.completions < BACKLOG_COMPLETION_RATIO * self.arrivals
                and growth > 3 * math.sqrt(max(self.arrivals, 1)))


def backlog_from_requests(requests_csv: Path | None) -> Backlog | None:
    """:class:`Backlog` from requests.csv (arrival_ms, completion_ms), or None when the
    file is missing or the window holds fewer than MIN_BACKLOG_ARRIVALS arrivals."""
    cols = read_numeric_csv(requests_csv, ("arrival_ms", "completion_ms"))
    arr = cols.get("arrival_ms")
    if arr is None:
        return None
    comp = cols.get("completion_ms", np.full(arr.shape, np.nan))
    arr = np.sort(arr[np.isfinite(arr)])
    comp = np.sort(comp[np.isfinite(comp)])
    if arr.size < 2:
        return None
    t0, t1 = float(arr[0]), float(arr[-1])
    tm = (t0 + t1) / 2
    if t1 <= tm:
        return None

    def count(a: np.ndarray, t: float) -> int:
        return int(np.searchsorted(a, t, side="right"))

    arrivals = count(arr, t1) - count(arr, tm)
    if arrivals < MIN_BACKLOG_ARRIVALS:
        return None
    completions = count(comp, t1) - count(comp, tm)
    return Backlog(
        window_s=(t1 - tm) / 1000.0,
        arrivals=arrivals,
        completions=completions,
        in_system_start=count(arr, tm) - count(comp, tm),
        in_system_end=count(arr, t1) - count(comp, t1),
    )


def waiting_share(summary: Mapping[str, Any]) -> float | None:
    """Share of all request time (admission wait + every breakdown phase, prefill
    included) spent waiting: admission wait, queueing and prefill stalls."""
    phases = summary.get("time_breakdown_ms")
    if not isinstance(phases, Mapping):
        return None
    vals = {str(k): as_float(v) or 0.0 for k, v in phases.items()}
    adm = summary.get("admission_wait_ms")
    adm_total = (_pct(adm, "mean") or 0.0) * (_pct(adm, "count") or 0.0)
    total = sum(v for v in vals.values() if v > 0) + adm_total
    if total <= 0:
        return None
    waiting = sum(vals.get(p, 0.0) for p in WAITING_PHASES) + adm_total
    return waiting / total


@dataclass(frozen=True)
class Saturation:
    """Whether a run is past saturation, and the evidence, one sentence per reason."""

    state: str  # PAST, AT_CAPACITY, BELOW or UNKNOWN
    reasons: tuple[str, ...]

    @property
    def past(self) -> bool:
        return self.state == PAST


def judge_saturation(summary: Mapping[str, Any], requests_csv: Path | None = None,
                     bottleneck: Bottleneck | None = None) -> Saturation:
    """Apply the rules of the module docstring to one run."""
    reasons: list[str] = []
    past = False
    kind = arrivals_kind(summary)
    closed = kind == "closed_loop"
    if not closed:
        backlog = backlog_from_requests(requests_csv)
        if backlog is not None and backlog.growing:
            past = True
            reasons.append(
                f"arrivals outpace completions: over the second half of the arrivals "
                f"({_fmt(backlog.window_s, ' s')}) {_fmt(backlog.offered_per_s)} requests/s "
                f"arrived and {_fmt(backlog.completed_per_s)} requests/s completed; requests "
                f"in the "
                f"system grew from {backlog.in_system_start:,} to {backlog.in_system_end:,}, "
                f"so latency grows with the run's length")
    adm = _pct(summary.get("admission_wait_ms"), "mean")
    e2e = _pct(summary.get("e2e_ms"), "mean")
    if adm is not None and e2e and adm > ADMISSION_DOMINANT_SHARE * e2e:
        past = True
        reasons.append(f"admission wait dominates: requests wait {_fmt(adm, ' ms')} on average "
                       f"to be admitted, {adm / e2e:.0%} of their {_fmt(e2e, ' ms')} "
                       "end-to-end time")
    busy = bottleneck.utilization if bottleneck else None
    share = waiting_share(summary)
    waiting = share is not None and share > WAITING_SHARE
    capped = busy is not None and busy >= BUSY_THRESHOLD
    if closed and share is not None and (waiting or (capped and share > CAPPED_WAITING_SHARE)):
        past = True
        conc = as_float(_get(summary.get("config"), "workload.arrivals.concurrency"))
        knee = f"; the knee is near concurrency ≈ {_fmt(conc * (1 - share))}" if conc else ""
        busy_text = (f" while the {bottleneck.label} are {busy:.0%} busy" if bottleneck
                     else "")
        reasons.append(
            f"closed loop past the knee: {share:.0%} of request time is waiting (queueing, "
            f"prefill stalls, admission){busy_text}, so more concurrency adds only "
            f"latency{knee}")
    if past:
        return Saturation(PAST, tuple(reasons))
    if busy is None and share is None:
        return Saturation(UNKNOWN, ("no utilization or time breakdown in the summary",))
    share_text = f"{share:.0%} of request time is waiting" if share is not None else ""
    if (busy is not None and busy >= BUSY_THRESHOLD) or waiting:
        parts = []
        if busy is not None and busy >= BUSY_THRESHOLD:
            parts.append(f"the busiest resource ({bottleneck.resource}) is {busy:.0%} busy")
        if share_text:
            parts.append(share_text)
        return Saturation(AT_CAPACITY, (
            " and ".join(parts) + ": the queue is stable but throughput is near its ceiling "
            "and more load mostly adds latency",))
    busy_text = (f"the busiest resource ({bottleneck.resource}) is {busy:.0%} busy"
                 if bottleneck else "no utilization in the summary")
    return Saturation(BELOW, (
        busy_text + (f" and {share_text}" if share_text else "")
        + ", so there is headroom for more load",))


# --------------------------------------------------------------------------- run verdict


@dataclass(frozen=True)
class RunVerdict:
    """The verdict of one run: a headline and supporting sentences."""

    headline: str
    lines: tuple[str, ...]
    saturation: Saturation
    bottleneck: Bottleneck | None


def run_verdict(summary: Mapping[str, Any], requests_csv: Path | None = None) -> RunVerdict:
    """Read the verdict off ``summary`` (and ``requests.csv`` for the backlog test)."""
    summary = summary or {}
    thr = as_float(summary.get("throughput_tokens_per_s"))
    req = as_float(summary.get("throughput_requests_per_s"))
    ttft, tpot = summary.get("ttft_ms"), summary.get("tpot_ms")
    lines: list[str] = []
    lat = (f"TTFT p50 {_fmt(_pct(ttft, 'p50'), ' ms')} / p99 {_fmt(_pct(ttft, 'p99'), ' ms')}; "
           f"TPOT p50 {_fmt(_pct(tpot, 'p50'), ' ms')} / p99 {_fmt(_pct(tpot, 'p99'), ' ms')}")
    lines.append(f"Throughput {_fmt(thr, ' tokens/s')}"
                 + (f" ({_fmt(req, ' requests/s')})" if req is not None else "") + f"; {lat}.")
    bottleneck = find_bottleneck(summary)
    if bottleneck is not None:
        others = ", ".join(f"{KIND_NAMES[k]} {v:.0%}" for k, v in sorted(bottleneck.others.items()))
        lines.append(
            f"Bottleneck: {bottleneck.label} (busiest {bottleneck.resource} "
            f"{bottleneck.utilization:.1%} busy, the {bottleneck.count} on average "
            f"{bottleneck.mean_utilization:.1%}"
            + (f"; busiest of the others: {others}" if others else "")
            + f"); {bottleneck.activity}.")
    tok = per_token_breakdown(summary)
    if tok:
        lines.append(f"A decode token takes {_fmt(sum(tok.values()), ' ms')} on average: "
                     f"{_phase_list(top_phases(tok))}.")
    saturation = judge_saturation(summary, requests_csv, bottleneck)
    lines.append(f"Load: {saturation.state}: " + "; ".join(saturation.reasons) + ".")
    rejected = summary.get("requests_rejected")
    if isinstance(rejected, int) and rejected > 0:
        lines.append(f"{rejected:,} request(s) rejected (reject_reasons in summary.json).")
    name = summary.get("name") or "run"
    system = summary.get("system")
    headline = (f"{name}" + (f" ({system})" if system else "") + f": {_fmt(thr, ' tokens/s')}, "
                f"p99 TPOT {_fmt(_pct(tpot, 'p99'), ' ms')}, "
                + (f"limited by {bottleneck.label}, " if bottleneck else "")
                + saturation.state)
    return RunVerdict(headline, tuple(lines), saturation, bottleneck)


def verdict_lines(summary: Mapping[str, Any], requests_csv: Path | None = None) -> list[str]:
    """The run verdict as plain text lines (headline first), for a terminal or a log."""
    v = run_verdict(summary, requests_csv)
    return [f"Verdict: {v.headline}", *(f"  {line}" for line in v.lines)]


# --------------------------------------------------------------------------- compare verdict


@dataclass(frozen=True)
class Winner:
    """The best config on one metric and by how much it beats the runner-up."""

    metric: str
    label: str
    value: float
    runner_up: str | None
    runner_up_value: float | None
    higher_is_better: bool
    unit: str

    def sentence(self) -> str:
        text = f"{self.metric}: {self.label} ({_fmt(self.value, self.unit)})"
        if self.runner_up is not None and self.runner_up_value:
            ratio = (self.value / self.runner_up_value if self.higher_is_better
                     else self.runner_up_value / self.value if self.value else math.inf)
            text += (f", {_fmt(ratio)}x better than {self.runner_up} "
                     f"({_fmt(self.runner_up_value, self.unit)})")
        return text


@dataclass(frozen=True)
class CompareVerdict:
    """Winners per metric, why (one paragraph), and the runs past saturation."""

    winners: tuple[Winner, ...]
    why: str
    states: dict[str, str]
    failed: dict[str, str]
    lines: tuple[str, ...]


def _metric(run: Mapping[str, Any], metric: str) -> float | None:
    s = run.get("summary") or {}
    if metric == "throughput":
        return as_float(s.get("throughput_tokens_per_s"))
    if metric == "p99_tpot":
        return _pct(s.get("tpot_ms"), "p99")
    if metric == "cost":
        return as_float(run.get("cost_per_million_tokens"))
    raise ValueError(metric)


def _winner(runs: Sequence[Mapping[str, Any]], metric: str, title: str, unit: str,
            higher: bool) -> Winner | None:
    vals = [(str(r.get("label", "?")), _metric(r, metric)) for r in runs]
    vals = [(lab, v) for lab, v in vals if v is not None and (v > 0 or higher)]
    if not vals:
        return None
    ranked = sorted(vals, key=lambda t: (-t[1] if higher else t[1], t[0]))
    best = ranked[0]
    second = ranked[1] if len(ranked) > 1 else (None, None)
    return Winner(title, best[0], best[1], second[0], second[1], higher, unit)


def _why(runs: Sequence[Mapping[str, Any]], winner: Winner | None) -> str:
    """One paragraph: why the throughput winner wins, from bottlenecks and breakdowns."""
    if winner is None or winner.runner_up is None:
        return ""
    tie = bool(winner.runner_up_value) and winner.value < 1.05 * winner.runner_up_value
    by_label = {str(r.get("label", "?")): r.get("summary") or {} for r in runs}
    a, b = by_label[winner.label], by_label[winner.runner_up]
    ba, bb = find_bottleneck(a), find_bottleneck(b)
    ta, tb = per_token_breakdown(a), per_token_breakdown(b)
    parts = []
    if ba is not None:
        parts.append(f"{winner.label} is limited by its {ba.label} "
                     f"({ba.utilization:.0%} busy: {ba.activity})")
    if bb is not None:
        parts.append(f"{winner.runner_up} by its {bb.label} ({bb.utilization:.0%} busy: "
                     f"{bb.activity})")
    text = "; ".join(parts) + "." if parts else ""
    if ta and tb:
        sa, sb = sum(ta.values()), sum(tb.values())
        diffs = sorted(((p, tb.get(p, 0.0) - ta.get(p, 0.0)) for p in set(ta) | set(tb)),
                       key=lambda kv: (-abs(kv[1]), kv[0]))
        big = [(p, d) for p, d in diffs if abs(d) > 0.05 * max(sa, sb)][:3]
        text += (f" A decode token takes {_fmt(sa, ' ms')} in {winner.label} against "
                 f"{_fmt(sb, ' ms')} in {winner.runner_up}")
        if big:
            text += "; the difference is mostly " + ", ".join(
                f"{p} ({_fmt(abs(d), ' ms')} {'less' if d > 0 else 'more'} in {winner.label})"
                for p, d in big)
        text += "."
        if sa > sb and not tie:
            # Little's law: mean requests decoding at once = tokens/s x s per token
            text += (" Its tokens are slower, but it keeps more requests decoding at once "
                     f"(tokens/s x ms per token: {_fmt(winner.value * sa / 1000)} against "
                     f"{_fmt((winner.runner_up_value or 0) * sb / 1000)}), so more tokens "
                     "come out per second.")
    if tie:
        text = (f"{winner.label} and {winner.runner_up} are within 5% on throughput, "
                "effectively a tie. " + text)
    return text.strip()


def compare_verdict(runs: Sequence[Mapping[str, Any]],
                    reasons: Mapping[str, str | None] | None = None) -> CompareVerdict:
    """Winners on throughput, p99 TPOT and $/M tokens; runs past saturation; failures.

    ``runs`` are the entries :func:`sim.report.write_compare_report` takes (label, summary,
    requests_csv, cost_per_million_tokens, optionally error); ``reasons`` maps a label to
    why it failed, where the caller knows more than ``run['error']``."""
    reasons = reasons or {}
    ok = [r for r in runs if not r.get("error") and (r.get("summary") or {}).get(
        "throughput_tokens_per_s") is not None]
    failed = {str(r.get("label", "?")): str(r.get("error") or reasons.get(
        str(r.get("label", "?"))) or "no results") for r in runs if r not in ok}
    winners = [w for w in (
        _winner(ok, "throughput", "Highest throughput", " tokens/s", True),
        _winner(ok, "p99_tpot", "Lowest p99 TPOT", " ms", False),
        _winner(ok, "cost", "Lowest cost", " $/M tokens", False),
    ) if w is not None]
    states = {}
    for r in ok:
        s = r.get("summary") or {}
        sat = judge_saturation(s, r.get("requests_csv"), find_bottleneck(s))
        states[str(r.get("label", "?"))] = sat.state
    why = _why(ok, next((w for w in winners if w.metric == "Highest throughput"), None))
    lines = [w.sentence() + "." for w in winners]
    if why:
        lines.append("Why: " + why)
    past = [lab for lab, st in states.items() if st == PAST]
    if past and len(past) == len(states) and len(states) > 1:
        lines.append("Every config is past saturation: the throughput comparison holds (each "
                     "runs at its ceiling), but latencies compare queues, not hardware; compare "
                     "latency nearer the knee (the load sweep, and each run's Load line).")
    elif past:
        lines.append(f"Past saturation (their latencies are mostly waiting in queues, not the "
                     f"hardware's speed; see each run's Load line): {', '.join(past)}.")
    if failed:
        lines.append("Failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()) + ".")
    if not lines:
        lines.append("No run produced results to compare.")
    return CompareVerdict(tuple(winners), why, states, failed, tuple(lines))


def compare_verdict_lines(runs: Sequence[Mapping[str, Any]],
                          reasons: Mapping[str, str | None] | None = None) -> list[str]:
    """The comparison verdict as plain text lines, for a terminal or a log."""
    return ["Verdict:", *(f"  {line}" for line in compare_verdict(runs, reasons).lines)]


__all__ = [
    "AT_CAPACITY",
    "BELOW",
    "PAST",
    "UNKNOWN",
    "Backlog",
    "Bottleneck",
    "CompareVerdict",
    "RunVerdict",
    "Saturation",
    "Winner",
    "backlog_from_requests",
    "compare_verdict",
    "compare_verdict_lines",
    "find_bottleneck",
    "judge_saturation",
    "per_token_breakdown",
    "run_verdict",
    "top_phases",
    "verdict_lines",
    "waiting_share",
]
