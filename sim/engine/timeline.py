"""Timeline export: a Chrome trace / Perfetto JSON of one run (``--timeline``).

What is recorded (complete ``"X"`` events; ``ts``/``dur`` in microseconds, exact
decimals of the integer-ns clock):

- pid 1 ``unique nodes``, one track per unique node (replica): ``prefill`` slices (a
  group of prompts) and ``decode`` slices (one step of the whole running batch), each
  with a nested ``shared round trip`` child while the node waits for partials from the
  shared nodes. The node computes during a slice except inside its round-trip children.
- pid 2 ``shared nodes``, one track per shared node: ``grouped_shared_attention`` kernel
  launches and ``prefill_attention`` jobs. Every slice is busy time.
- pid 3 ``fabric links``, one track per directed link: each message's serialisation on
  that link (a message holds every link of its path for the same interval).
- pid 4 ``requests``: request lifetimes on fixed *slot* tracks (a slot holds one request
  at a time; lowest free slot first, in arrival order): a ``req <id>`` slice from arrival
  to completion (or the end of the run) with ``queued`` / ``prefill`` / ``decode``
  children; rejected requests are instant events on the ``rejected`` track.

Size bound. Only events that overlap the window ``[start, end)`` (simulated seconds) are
kept, and of those only the first ``max_events`` in the output order (time, then track):
the trace is complete up to ``complete_until_s``. Everything else is counted, per group,
in ``otherData.dropped``. Memory stays O(max_events) during the run: once the buffer holds
more than ``max_events`` events it is cut back, and later events that sort after the cut
are only counted.

Cost when off: nodes and the fabric hold ``tl = None`` and test it with one ``if``.
Determinism: the output depends only on the simulated events (same config + seed -> same
bytes).
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.atomic import atomic_write_text

if TYPE_CHECKING:
    from sim.engine.cluster import Cluster

# ~250 bytes per event on disk: the default keeps timeline.json near 50 MB at most.
DEFAULT_MAX_EVENTS = 200_000
UNIQUE, SHARED, LINKS, REQUESTS, FAULTS = 1, 2, 3, 4, 5
GROUPS = {UNIQUE: "unique nodes", SHARED: "shared nodes", LINKS: "fabric links",
          REQUESTS: "requests", FAULTS: "faults"}
CATEGORIES = {UNIQUE: "unique", SHARED: "shared", LINKS: "link", REQUESTS: "request",
              FAULTS: "fault"}
REJECTED_TID = 1 << 20  # requests' "rejected" track (listed first); slots are tids 1, 2, ...
_INF = math.inf


@dataclass(frozen=True)
class TimelineOptions:
    """What to record: the window ``[start_s, end_s)`` (``end_s`` None: to the end of the
    run) and the most events to keep."""

    start_s: float = 0.0
    end_s: float | None = None
    max_events: int = DEFAULT_MAX_EVENTS

    def __post_init__(self) -> None:
        if not (self.start_s >= 0 and math.isfinite(self.start_s)):
            raise ValueError(f"--timeline-window: start must be >= 0 s, got {self.start_s}")
        if self.end_s is not None and not self.end_s > self.start_s:
            raise ValueError(f"--timeline-window: end ({self.end_s}) must be after start "
                             f"({self.start_s})")
        if int(self.max_events) < 1:
            raise ValueError(f"--timeline-max-events: expected >= 1, got {self.max_events}")


def parse_window(text: str) -> tuple[float, float | None]:
    """``'START:END'`` in seconds; either side may be empty (``'2:'``, ``':5'``)."""
    if ":" not in text:
        raise ValueError(f"--timeline-window: expected START:END in seconds, got {text!r}")
    a, b = text.split(":", 1)
    try:
        start = float(a) if a.strip() else 0.0
        end = float(b) if b.strip() else None
    except ValueError:
        raise ValueError(f"--timeline-window: expected START:END in seconds, got {text!r}") \
            from None
    return start, end


class Timeline:
    """The recorder. Nodes and the fabric call it only when attached (``tl`` not None).

    An event is kept as the tuple ``(ts, pid, tid, -dur, seq, name, dur, args, ph)``
    (ints in ns): its first five fields are its sort key (time, track, longest first so a
    parent precedes the children that start with it, then recording order).
    """

    def __init__(self, options: TimelineOptions | None = None) -> None:
        self.options = options or TimelineOptions()
        self.w_start = round(self.options.start_s * 1e9)
        self.w_end = _INF if self.options.end_s is None else round(self.options.end_s * 1e9)
        self.max_events = int(self.options.max_events)
        self._slack = max(1024, self.max_events // 4)
        self.events: list[tuple] = []
        self._seq = 0
        self._bound: tuple | None = None  # events sorting after this are dropped
        self.cut_ns: int | None = None  # ts of the earliest event dropped by the cap
        # the fault category is listed only in a run with faults
        self.dropped_window = {c: 0 for p, c in CATEGORIES.items() if p != FAULTS}
        self.dropped_cap = {c: 0 for p, c in CATEGORIES.items() if p != FAULTS}
        self._open: dict[int, list] = {}  # unique node -> [t0, name, rt_t0, rt_shared]
        self.unique_names: list[str] = []
        self.shared_names: list[str] = []
        self.link_names: list[str] = []
        self.hosts: list[str] = []
        self.meta: dict[str, Any] = {}
        self.finished = False
        self.request_slots = 0

    # -- wiring ---------------------------------------------------------------------------
    def attach(self, cluster: Cluster) -> Timeline:
        """Hook the recorder into ``cluster``'s nodes and fabric (before the run)."""
        for u in cluster.unique:
            u.tl = self
        for s in cluster.shared:
            s.tl = self
        if cluster.fabric is not None:
            cluster.fabric.tl = self
            self.link_names = [n.removeprefix("link:")
                               for n in cluster.fabric.link_names]
            self.hosts = list(cluster.fabric.hosts)
        self.unique_names = [u.name for u in cluster.unique]
        self.shared_names = [s.name for s in cluster.shared]
        exp = cluster.experiment
        self.meta = {"name": exp.name, "seed": exp.seed, "system": exp.system.name,
                     "granularity": exp.run.granularity}
        return self

    # -- recording ------------------------------------------------------------------------
    def _add(self, pid: int, tid: int, name: str, ts: int, dur: int, args: dict | None,
             ph: str = "X") -> None:
        if ts >= self.w_end or (ts + dur <= self.w_start and (dur or ts < self.w_start)):
            c = CATEGORIES[pid]
            self.dropped_window[c] = self.dropped_window.get(c, 0) + 1
            return
        seq = self._seq
        self._seq = seq + 1
        ev = (ts, pid, tid, -dur, seq, name, dur, args, ph)
        bound = self._bound
        if bound is not None and ev > bound:
            self._drop_cap(ev)
            return
        events = self.events
        events.append(ev)
        if len(events) > self.max_events + self._slack:
            self._cut()

    def _drop_cap(self, ev: tuple) -> None:
        c = CATEGORIES[ev[1]]
        self.dropped_cap[c] = self.dropped_cap.get(c, 0) + 1
        if self.cut_ns is None or ev[0] < self.cut_ns:
            self.cut_ns = ev[0]

    def _cut(self) -> None:
        """Keep the first ``max_events`` by sort key; count the rest as dropped."""
        events = self.events
        if len(events) <= self.max_events:
            return
        events.sort()
        for ev in events[self.max_events:]:
            self._drop_cap(ev)
        del events[self.max_events:]
        self._bound = events[-1]

    # unique nodes: a step/prefill slice is opened at its start and closed at its end, so
    # one still running when the run stops is kept (cut at the end time, "unfinished").
    def begin(self, node: int, name: str, t: int) -> None:
        self._open[node] = [t, name, -1, 0]

    def round_trip_begin(self, node: int, t: int, shared_nodes: int) -> None:
        o = self._open[node]
        o[2], o[3] = t, shared_nodes

    def round_trip_end(self, node: int, t: int) -> None:
        o = self._open[node]
        self._add(UNIQUE, node + 1, "shared round trip", o[2], t - o[2],
                  {"shared_nodes": o[3]})
        o[2] = -1

    def end(self, node: int, t: int, args: dict) -> None:
        t0, name, _, _ = self._open.pop(node)
        self._add(UNIQUE, node + 1, name, t0, t - t0, args)

    def abort(self, node: int, t: int) -> None:
        """A unique node failed mid-step: its open slice ends now, marked failed."""
        o = self._open.pop(node, None)
        if o is not None:
            self._add(UNIQUE, node + 1, o[1], o[0], t - o[0], {"failed": True})

    def faults(self, windows: list[dict], t_end: int) -> None:
        """Each fault as a slice on a 'faults' track (an instant event when it starts)."""
        for w in windows:
            t0 = int(round(w["start_s"] * 1e9))
            if t0 > t_end:
                continue
            t1 = t_end if w["end_s"] is None else min(t_end, int(round(w["end_s"] * 1e9)))
            name = f"{w['kind']} {w['target']}"
            args = {"kind": w["kind"], "target": w["target"], "start_s": w["start_s"],
                    "end_s": w["end_s"], "fraction": w["fraction"]}
            self._add(FAULTS, 1, name, t0, max(0, t1 - t0), args)
            self._add(FAULTS, 1, name, t0, 0, args, ph="i")

    def kernel(self, node: int, name: str, t: int, dur: int, args: dict) -> None:
        """A shared node's launch or prefill job, ``dur`` ns from ``t``."""
        self._add(SHARED, node + 1, name, t, dur, args)

    def host_name(self, host: int) -> str | int:
        return self.hosts[host] if 0 <= host < len(self.hosts) else host

    def transfer(self, links: Sequence[int], start: int, dur: int, nbytes: int, src: int,
                 dst: int, rounds: int) -> None:
        """A message serialising on each of ``links`` over ``[start, start + dur)``."""
        args = {"bytes": nbytes, "src": self.host_name(src), "dst": self.host_name(dst),
                "rounds": rounds}
        for li in links:
            self._add(LINKS, li + 1, "xfer", start, dur, args)

    # -- the end of the run ---------------------------------------------------------------
    def finish(self, cluster: Cluster, t_end: int) -> None:
        """Close open slices and add the request tracks (after the run, once)."""
        if self.finished:
            return
        self.finished = True
        for node in sorted(self._open):
            t0, name, rt0, rt_n = self._open[node]
            if rt0 >= 0:
                self._add(UNIQUE, node + 1, "shared round trip", rt0, t_end - rt0,
                          {"shared_nodes": rt_n, "unfinished": True})
            self._add(UNIQUE, node + 1, name, t0, t_end - t0, {"unfinished": True})
        self._open.clear()
        manager = getattr(cluster, "faults", None)
        if manager is not None:
            for d in (self.dropped_window, self.dropped_cap):
                d.setdefault("fault", 0)
            self.faults(manager.windows, t_end)
        self._requests(cluster, t_end)
        self._cut()
        self.events.sort()
        self.meta["sim_time_s"] = t_end / 1e9

    def _requests(self, cluster: Cluster, t_end: int) -> None:
        log = cluster.log
        import numpy as np

        arrived = np.nonzero(log.arrival_ns >= 0)[0]
        if not len(arrived):
            return
        arr = log.arrival_ns[arrived]
        order = np.lexsort((arrived, arr))  # arrival time, then id
        ids = arrived[order].tolist()
        a_ns = arr[order].tolist()
        admit = log.admit_ns[arrived][order].tolist()
        first = log.first_ns[arrived][order].tolist()
        done = log.done_ns[arrived][order].tolist()
        status = log.status[arrived][order].tolist()
        node = log.node[arrived][order].tolist()
        uniq = log.unique_tokens[arrived][order].tolist()
        shared = log.shared_tokens[arrived][order].tolist()
        out = log.output_tokens[arrived][order].tolist()
        gen = log.generated[arrived][order].tolist()
        names = [u.name for u in cluster.unique]
        w0, w1 = self.w_start, self.w_end
        free: list[int] = []  # free slots (min-heap)
        busy: list[tuple[int, int]] = []  # (end, slot) of occupied slots
        slots = 0
        for i, rid in enumerate(ids):
            a = a_ns[i]
            st = status[i]
            if st == log.REJECTED:
                self._add(REQUESTS, REJECTED_TID, f"req {rid} rejected", a, 0,
                          {"id": rid}, "i")
                continue
            e = done[i] if done[i] >= 0 else t_end
            adm, fst = admit[i], first[i]
            # its phases (zero-length ones left out)
            phases = []
            end_q = adm if adm >= 0 else e
            if end_q > a:
                phases.append(("queued", a, end_q - a))
            if adm >= 0:
                end_p = fst if fst >= 0 else e
                if end_p > adm:
                    phases.append(("prefill", adm, end_p - adm))
            if 0 <= fst < e:
                phases.append(("decode", fst, e - fst))
            if a >= w1 or (e <= w0 and (e > a or a < w0)):
                self.dropped_window["request"] += 1 + len(phases)
                continue
            while busy and busy[0][0] <= a:
                heapq.heappush(free, heapq.heappop(busy)[1])
            if free:
                slot = heapq.heappop(free)
            else:
                slots += 1
                slot = slots
            heapq.heappush(busy, (e, slot))
            args = {"id": rid, "node": names[node[i]] if node[i] >= 0 else None,
                    "status": log.STATUS_NAMES[st], "unique_tokens": uniq[i],
                    "shared_tokens": shared[i], "output_tokens": out[i],
                    "generated": gen[i]}
            if fst >= 0:
                args["ttft_ms"] = (fst - a) / 1e6
            if done[i] >= 0:
                args["e2e_ms"] = (done[i] - a) / 1e6
            self._add(REQUESTS, slot, f"req {rid}", a, e - a, args)
            for name, t, d in phases:
                self._add(REQUESTS, slot, name, t, d, None)
        self.request_slots = slots

    # -- output ---------------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        return sum(self.dropped_window.values()) + sum(self.dropped_cap.values())

    def note(self) -> str | None:
        """One line for the console when the size bound dropped events, else None."""
        over = sum(self.dropped_cap.values())
        if not over:
            return None
        until = f"{self.cut_ns / 1e9:.6g} s" if self.cut_ns is not None else "?"
        return (f"timeline: kept the first {len(self.events):,} events (complete until "
                f"{until}); {over:,} more dropped by --timeline-max-events "
                f"{self.max_events:,}; use --timeline-window START:END to look elsewhere")

    def _metadata(self) -> list[dict]:
        out: list[dict] = []
        used = {(ev[1], ev[2]) for ev in self.events}
        tracks = {
            UNIQUE: [(i + 1, n) for i, n in enumerate(self.unique_names)],
            SHARED: [(i + 1, n) for i, n in enumerate(self.shared_names)],
            LINKS: [(i + 1, n) for i, n in enumerate(self.link_names)],
            REQUESTS: sorted({(tid, "rejected" if tid == REJECTED_TID else f"slot {tid - 1}")
                              for pid, tid in used if pid == REQUESTS}),
            FAULTS: [(1, "faults")] if any(pid == FAULTS for pid, _ in used) else [],
        }
        for pid, label in GROUPS.items():
            if not tracks[pid]:
                continue
            out.append({"ph": "M", "pid": pid, "tid": 0, "ts": 0, "name": "process_name",
                        "args": {"name": label}})
            out.append({"ph": "M", "pid": pid, "tid": 0, "ts": 0,
                        "name": "process_sort_index", "args": {"sort_index": pid}})
            for tid, name in tracks[pid]:
                rank = 0 if (pid == REQUESTS and tid == REJECTED_TID) else tid
                out.append({"ph": "M", "pid": pid, "tid": tid, "ts": 0, "name": "thread_name",
                            "args": {"name": name}})
                out.append({"ph": "M", "pid": pid, "tid": tid, "ts": 0,
                            "name": "thread_sort_index", "args": {"sort_index": rank}})
        return out

    def other_data(self) -> dict[str, Any]:
        o = self.options
        return {
            "generator": "moska-sim timeline",
            **self.meta,
            "clock": "integer ns; ts and dur in microseconds",
            "window_s": [o.start_s, o.end_s],
            "max_events": self.max_events,
            "events": len(self.events),
            "complete_until_s": None if self.cut_ns is None else self.cut_ns / 1e9,
            "dropped": {"outside_window": dict(self.dropped_window),
                        "over_max_events": dict(self.dropped_cap)},
            "tracks": {"unique_nodes": len(self.unique_names),
                       "shared_nodes": len(self.shared_names),
                       "links": len(self.link_names), "request_slots": self.request_slots},
        }

    def to_json(self) -> str:
        """The trace as JSON text: metadata first, then events by time; one per line."""
        if not self.finished:
            raise RuntimeError("Timeline.to_json before finish()")
        lines = [json.dumps(m, separators=(",", ":")) for m in self._metadata()]
        cat = CATEGORIES
        for ts, pid, tid, _, _, name, dur, args, ph in self.events:
            ev: dict[str, Any] = {"name": name, "cat": cat[pid], "ph": ph, "ts": ts / 1000,
                                  "pid": pid, "tid": tid}
            if ph == "X":
                ev["dur"] = dur / 1000
            else:
                ev["s"] = "t"
            if args:
                ev["args"] = args
            lines.append(json.dumps(ev, separators=(",", ":"), default=_plain))
        other = json.dumps(self.other_data(), separators=(",", ":"), default=_plain)
        return ('{"displayTimeUnit":"ns","otherData":' + other + ',\n"traceEvents":[\n'
                + ",\n".join(lines) + "\n]}\n")

    def write(self, path: Path | str) -> Path:
        """Write ``timeline.json`` atomically; returns the path."""
        path = Path(path)
        atomic_write_text(path, self.to_json())
        return path

    def summary(self) -> dict[str, Any]:
        """A few figures for ``run_info.json``."""
        return {"events": len(self.events), "dropped": self.dropped,
                "complete_until_s": None if self.cut_ns is None else self.cut_ns / 1e9}


def _plain(x: Any) -> Any:
    """numpy scalars to Python (json's ``default``)."""
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


__all__ = [
    "DEFAULT_MAX_EVENTS",
    "Timeline",
    "TimelineOptions",
    "parse_window",
]
