"""Fault injection: shared nodes, unique nodes and fabric cables that fail (and recover), or
cables that degrade, at configured times; and what the run does about it.

- A **shared node** that fails loses its queue and the launch it was running; every query
  message and prefill job it held (and every one sent to it while it is down) goes to a
  live replica of the failed node's chunks (``workload.shared.replicas``: chunk ``g`` also
  lives on nodes ``(g+1) % S`` .. ``(g+R-1) % S``; node ``s``'s chunks are therefore all
  held by nodes ``s+1 .. s+R-1``), re-sent from its unique node over the fabric. With no
  live replica the work is *parked* until the node recovers, or until
  ``faults_policy.query_timeout_ms`` (a fault that never recovers times out at once);
  a timed-out message's requests (the first ``requests`` rows of its decode batch, or
  the step's prompts for a prefill job) are failed with a reason or retried
  (``on_timeout``). On the replica the failed node's chunks batch apart from its own
  (they are different KV): its messages are grouped under their own key.
- A **unique node** that fails drops its decode batch, its prompts and its queue; every
  one of those requests is re-admitted on the least-loaded live unique node, where it
  re-prefills its whole context (its unique tokens plus the tokens it had generated,
  priced by the normal chunked-prefill path) and then decodes on from where it was; its
  first-token time is kept. With no live unique node they wait for one (none ever:
  failed, ``no_unique_node``).
- A **fabric cable** that fails takes both directions down: routes are recomputed
  avoiding it (ECMP over the live spines of a fat tree; shortest live path otherwise).
  Messages already serialising finish. A message with no route waits for one (or times
  out); one that can never have a route again is lost at once, and its requests are
  timed out as above. A host cut off for good is failed like its node.
- A **degraded** cable serialises messages issued while it is degraded at ``fraction``
  of its bandwidth (a path runs at its slowest link).

Every arrived request ends completed, failed (with a reason), rejected or in flight; the
schedule is deterministic (faults at fixed times; re-admissions in request order).
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

from sim.engine.experiment import FaultPlan, FaultSpec
from sim.engine.kernel import LOST

# the wiring passes the nodes, the fabric and the driver in (typed loosely: they import
# this module's neighbours, and faults.py holds no pointer to the cluster)
RequestDriver = Fabric = SharedNode = UniqueNode = Any
FOREIGN = 1 << 24  # a failed-over message's batching key: layer + FOREIGN * (owner + 1)


class FaultManager:
    """Schedules the faults and handles what they strand."""

    def __init__(self, engine: Any, plan: FaultPlan, *, unique: list[UniqueNode],
                 shared: list[SharedNode], fabric: Fabric | None, driver: RequestDriver,
                 replicas: int) -> None:
        self.engine = engine
        self.env = engine.env
        self.plan = plan
        self.unique = unique
        self.shared = shared
        self.fabric = fabric
        self.driver = driver
        self.S = len(shared)
        self.replicas = max(1, min(replicas, max(1, self.S)))
        self.shared_up = [True] * self.S
        self.shared_recovers: list[int | None] = [0] * self.S  # when a down node comes back
        self.parked: list[deque] = [deque() for _ in range(self.S)]
        self.log = driver.log
        self.counters = {"failovers": 0, "parked": 0, "timeouts": 0, "lost_messages": 0,
                         "readmitted": 0, "retried": 0}
        self.windows: list[dict] = []
        self._active: dict[tuple[str, str], list[FaultSpec]] = {}
        for u in unique:
            u.faults = self
        if fabric is not None:
            fabric.faults = self
        for f in plan.faults:
            self._check_target(f)

    # -- the schedule ----------------------------------------------------------------------
    def _check_target(self, f: FaultSpec) -> None:
        m = re.fullmatch(r"(shared|unique)([0-9]+)", f.target)
        if m:
            n = self.S if m.group(1) == "shared" else len(self.unique)
            if int(m.group(2)) >= n:
                raise ValueError(f"faults: target {f.target!r}: the run has {n} "
                                 f"{m.group(1)} node(s)")
            return
        if self.fabric is None:
            raise ValueError(f"faults: target {f.target!r}: this run has no fabric (a cable "
                             f"needs a disaggregated system with a shared corpus)")
        self.fabric.cable(f.target)  # raises with the fabric's cables named

    def start(self) -> None:
        for i, f in enumerate(self.plan.faults):
            self.windows.append({"index": i, "kind": f.kind, "target": f.target,
                                 "start_s": f.at_ns / 1e9,
                                 "end_s": None if f.end_ns is None else f.end_ns / 1e9,
                                 "fraction": f.fraction if f.kind == "degrade" else None})
            self.engine.call_after(f.at_ns, self._begin, f)
            if f.end_ns is not None:
                self.engine.call_after(f.end_ns, self._end, f)

    def _begin(self, f: FaultSpec) -> None:
        # faults on one target may overlap: the target is down (or degraded) while any
        # of them lasts, and comes back when the last one ends
        active = self._active.setdefault((f.kind, f.target), [])
        active.append(f)
        self._apply(f.kind, f.target)

    def _end(self, f: FaultSpec) -> None:
        active = self._active[(f.kind, f.target)]
        active.remove(f)
        self._apply(f.kind, f.target)

    def _apply(self, kind: str, target: str) -> None:
        """Bring ``target`` to the state its active faults say."""
        active = self._active.get((kind, target), [])
        m = re.fullmatch(r"(shared|unique)([0-9]+)", target)
        if kind == "degrade":
            assert self.fabric is not None
            self.fabric.degrade(target, min((f.fraction for f in active), default=1.0))
            return
        ends = [f.end_ns for f in active]
        recovers = None if None in ends else max(ends, default=0)
        if m and m.group(1) == "shared":
            s = int(m.group(2))
            if active:
                self.shared_recovers[s] = recovers
                self.fail_shared(s, recovers)
                if recovers is None and self.plan.timeout_ns is None:
                    # it never comes back: work parked for it waits in vain
                    parked, self.parked[s] = self.parked[s], deque()
                    for _kind, item in parked:
                        self._lose(item, "shared_node_down")
            else:
                self.recover_shared(s)
        elif m:
            i = int(m.group(2))
            if active:
                self.unique[i].recovers = recovers
                self.fail_unique(i, recovers)
            else:
                self.recover_unique(i)
        else:
            assert self.fabric is not None
            if active:
                self.fabric.fail_cable(target, recovers)
                self._isolated_for_good()
            else:
                self.fabric.recover_cable(target)

    def _isolated_for_good(self) -> None:
        """Nodes whose host no permanent route reaches any more fail for good."""
        fab = self.fabric
        assert fab is not None
        for s in self.shared:
            if self.shared_up[s.index] and fab.cut_off_for_good(s.host):
                self.fail_shared(s.index, None)
        for u in self.unique:
            if u.up and fab.cut_off_for_good(u.host):
                self.fail_unique(u.index, None)

    # -- shared nodes ----------------------------------------------------------------------
    def live_for(self, s: int) -> int | None:
        """The node that serves shared node ``s``'s chunks now: itself, or its first live
        replica; None when none is up."""
        for j in range(self.replicas):
            t = (s + j) % self.S
            if self.shared_up[t]:
                return t
        return None

    def fail_shared(self, s: int, recovers_ns: int | None) -> None:
        if not self.shared_up[s]:
            return
        self.shared_up[s] = False
        self.shared_recovers[s] = recovers_ns
        node = self.shared[s]
        msgs, jobs = node.fail()
        for m in msgs:
            self._dispatch_query(m.owner if m.owner >= 0 else s, m)
        for j in jobs:
            self._dispatch_job(j.owner if j.owner >= 0 else s, j)

    def recover_shared(self, s: int) -> None:
        if self.shared_up[s]:
            return
        self.shared_up[s] = True
        self.shared_recovers[s] = 0
        self.shared[s].recover()
        for t in range(self.S):  # parked work whose owner now has a live copy
            if self.live_for(t) is None:
                continue
            parked, self.parked[t] = self.parked[t], deque()
            for kind, item in parked:
                if item.reply.triggered:
                    continue  # timed out meanwhile
                if kind == "q":
                    self._dispatch_query(t, item)
                else:
                    self._dispatch_job(t, item)

    def send_query(self, src: UniqueNode, s: int, msg: Any) -> None:
        """A unique node's query message for shared node ``s``'s chunks."""
        msg.owner = s
        self._dispatch_query(s, msg)

    def send_job(self, src: UniqueNode, s: int, job: Any) -> None:
        job.owner = s
        self._dispatch_job(s, job)

    def _dispatch_query(self, s: int, msg: Any) -> None:
        t = self.live_for(s)
        if t is None:
            self._park(s, "q", msg)
            return
        if t != s:
            self.counters["failovers"] += 1
            msg.layer = msg.layer % FOREIGN + FOREIGN * (s + 1)
        node = self.shared[t]
        nbytes = node.pricer.query_bytes(msg.requests) * msg.rounds
        self.fabric.send(msg.src_host, node.host, nbytes, rounds=msg.rounds,  # type: ignore[union-attr]
                         on_delivery=lambda _e, n=node, m=msg: self._arrive_query(n, m),
                         on_lost=lambda m=msg: self._lose(m, "no_route"))

    def _arrive_query(self, node: SharedNode, msg: Any) -> None:
        if self.shared_up[node.index]:
            node.receive(msg)
        else:  # it failed while the message was on its way: the sender re-routes it
            self._dispatch_query(msg.owner, msg)

    def _dispatch_job(self, s: int, job: Any) -> None:
        t = self.live_for(s)
        if t is None:
            self._park(s, "j", job)
            return
        if t != s:
            self.counters["failovers"] += 1
        node = self.shared[t]
        self.fabric.send(job.src_host, node.host, job.query_bytes, rounds=job.rounds,  # type: ignore[union-attr]
                         on_delivery=lambda _e, n=node, j=job: self._arrive_job(n, j),
                         on_lost=lambda j=job: self._lose(j, "no_route"))

    def _arrive_job(self, node: SharedNode, job: Any) -> None:
        if self.shared_up[node.index]:
            node.receive_job(job)
        else:
            self._dispatch_job(job.owner, job)

    def _park(self, s: int, kind: str, item: Any) -> None:
        """No live copy of node ``s``'s chunks: wait for recovery, or time out."""
        self.counters["parked"] += 1
        timeout = self.plan.timeout_ns
        if self.shared_recovers[s] is None and timeout is None:
            self._lose(item, "shared_node_down")  # it will never come back
            return
        self.parked[s].append((kind, item))
        if timeout is not None:
            self.engine.call_after(timeout, self._timeout, s, item, "shared_node_timeout")

    def _timeout(self, s: int, item: Any, reason: str) -> None:
        parked = self.parked[s]
        for i, (_kind, it) in enumerate(parked):
            if it is item:
                del parked[i]
                break
        else:
            return  # no longer parked: re-sent when its node recovered
        if item.reply.triggered:
            return
        self.counters["timeouts"] += 1
        self._lose(item, reason)

    def _lose(self, item: Any, reason: str) -> None:
        """The message's work cannot be done: its sender treats its requests as timed out."""
        if item.reply.triggered:
            return
        self.counters["lost_messages"] += 1
        item.lost = reason
        item.reply.succeed(LOST)

    # -- unique nodes and requests -------------------------------------------------------
    def fail_unique(self, i: int, recovers_ns: int | None) -> None:
        node = self.unique[i]
        node.recovers = recovers_ns
        self.driver.nodes_recover = any(u.recovers is not None for u in self.unique)
        if not node.up:
            self.driver.node_down()
            return
        stranded = node.fail(recovers_ns)
        for rid, done in stranded:
            self.readmit(rid, done)
        self.driver.node_down()

    def recover_unique(self, i: int) -> None:
        node = self.unique[i]
        if node.up:
            return
        node.recovers = 0
        node.recover()
        self.driver.nodes_recover = True
        self.driver.node_up()

    def readmit(self, rid: int, done: int) -> None:
        """Re-admit a request that lost its KV: it re-prefills its context elsewhere."""
        log = self.log
        self.counters["readmitted"] += 1
        if log.admit_ns[rid] >= 0:  # it had KV: all of it is prefilled again
            log.redo_prefill[rid] = int(log.unique_tokens[rid]) + int(done)
            log.resume_done[rid] = int(done)
        self.driver.requeue(rid)

    def strand(self, rids: list[tuple[int, int]], reason: str) -> None:
        """Requests whose step timed out: retry them (re-admitted) or fail them."""
        log = self.log
        for rid, done in rids:
            if self.plan.on_timeout == "retry" and log.retries[rid] < self.plan.max_retries:
                log.retries[rid] += 1
                self.counters["retried"] += 1
                self.readmit(rid, done)
            else:
                self.driver.fail(rid, reason, done)

    # -- summary ---------------------------------------------------------------------------
    def stats(self) -> dict:
        return {"windows": self.windows, **self.counters}


__all__ = ["FOREIGN", "LOST", "FaultManager"]
