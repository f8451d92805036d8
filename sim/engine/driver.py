"""The request driver: requests arrive (open loop, at their planned times) or are issued
(closed loop: the next one whenever one completes), are rejected when they can never fit,
or are queued on the least-loaded unique node (fewest running + waiting; ties: lowest id);
with dedicated prefill nodes a request with new prompt tokens goes to the least-loaded
prefill node first and, once prefilled, to the least-loaded unique node.
It also says when the run is done: every planned request has finished or been rejected.

Every part past the driver names a request by its *slot* in the request log (see
``RequestLog``): the driver opens the slot when the request arrives and closes it when the
request leaves the system (completed, rejected, failed), which sends its row to the
archive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sim.engine.fabric import Fabric
from sim.engine.kernel import Engine
from sim.engine.nodes.unique import UniqueNode
from sim.engine.records import RunRecords
from workloads.request import RequestTable

ARRIVAL_BLOCK = 4096  # planned arrival times turned into Python ints at a time


def least_loaded(nodes: Sequence[UniqueNode]) -> UniqueNode:
    """The node with the fewest requests running plus waiting (ties: the lowest index)."""
    best = nodes[0]
    best_load = best.load
    for node in nodes[1:]:
        load = node.load
        if load < best_load:
            best, best_load = node, load
    return best


class RequestDriver:
    """Feeds ``requests`` into ``nodes``; ``done`` fires when all have finished."""

    def __init__(self, engine: Engine, requests: RequestTable, records: RunRecords,
                 nodes: list[UniqueNode], kv_capacity_bytes: int,
                 closed_loop_concurrency: int | None = None, *,
                 prefill_nodes: Sequence[UniqueNode] = (), prefill_capacity_bytes: int = 0,
                 fabric: Fabric | None = None) -> None:
        self.env = engine.env
        self.requests = requests
        self.log = records.log
        self.occupancy = records.occupancy
        self.nodes = nodes
        self.kv_capacity_bytes = kv_capacity_bytes
        self.prefill_nodes = list(prefill_nodes)  # dedicated prefill: prompts go there first
        self.prefill_capacity_bytes = prefill_capacity_bytes
        self.fabric = fabric
        self.closed_loop_concurrency = closed_loop_concurrency
        self.done = self.env.event()
        self.expected = len(requests)
        self.finished = 0
        self._next = 0
        self.parked: list[int] = []  # faults: requests waiting for a live replica
        self.nodes_recover: bool | None = None  # faults: False once none can come back

    def _reject(self, rid: int, reason: str) -> None:
        """Request ``rid`` cannot be served: its KV fits no node of the kind it needs."""
        log = self.log
        log.status[rid] = log.REJECTED
        log.reject_reasons[reason] = log.reject_reasons.get(reason, 0) + 1
        log.close(rid)
        self._finish(1)

    def dispatch(self, request_id: int) -> None:
        """Request ``request_id`` arrives now: reject it, or queue it on the least-loaded
        replica."""
        now = self.env.now
        log = self.log
        rid = log.open(request_id)  # its slot, from here on
        log.arrival_ns[rid] = now
        if int(log.kv_bytes[rid]) > self.kv_capacity_bytes:
            self._reject(rid, "kv_exceeds_replica_hbm")
            return
        prefill = self.prefill_nodes
        if prefill and int(log.prefill_tokens[rid]) > 0:
            if int(log.kv_bytes[rid]) > self.prefill_capacity_bytes:
                self._reject(rid, "kv_exceeds_prefill_hbm")
                return
            log.status[rid] = log.WAITING
            self.occupancy.change(now, +1)
            least_loaded(prefill).submit(rid)
            return
        self.occupancy.change(now, +1)
        self._place(rid)

    def _live_least_loaded(self) -> UniqueNode | None:
        """The least-loaded live replica (ties: the lowest index), None when none is up."""
        best = None
        best_load = 0
        for node in self.nodes:
            if not node.up:
                continue
            load = node.load
            if best is None or load < best_load:
                best, best_load = node, load
        return best

    def _place(self, rid: int) -> None:
        """Queue ``rid`` on the least-loaded live replica (none live: it waits for one)."""
        log = self.log
        best = self._live_least_loaded()
        if best is None:
            log.status[rid] = log.WAITING
            if self.nodes_recover is False:
                self.fail(rid, "no_unique_node", int(log.resume_done[rid]))
            else:
                self.parked.append(rid)
            return
        log.node[rid] = best.index
        log.status[rid] = log.WAITING
        best.submit(rid)

    def hand_over(self, rid: int, source: Any, nbytes: int) -> None:
        """A prefill node finished request ``rid``'s prompt: its ``nbytes`` of new KV go over
        the fabric to the least-loaded live unique node, which then admits it (context
        resident, first token made); with none live it waits like any placement."""
        log = self.log
        log.prefill_node[rid] = source.index
        best = self._live_least_loaded()
        if best is None or self.fabric is None or nbytes <= 0:
            self._place(rid)
            return
        log.node[rid] = best.index
        self.fabric.send(source.host, best.host, nbytes,
                         on_delivery=lambda _e, n=best, r=rid: n.submit(r))

    # -- faults ---------------------------------------------------------------------------
    def requeue(self, rid: int) -> None:
        """A request in the system goes back to admission on a live replica."""
        self._place(rid)

    def fail(self, rid: int, reason: str, generated: int = 0) -> None:
        """A request in the system ends without completing, for ``reason``."""
        log = self.log
        log.status[rid] = log.FAILED
        log.done_ns[rid] = self.env.now  # when it left the system (it did not complete)
        log.generated[rid] = generated
        log.fail_reasons[reason] = log.fail_reasons.get(reason, 0) + 1
        log.close(rid)
        self.occupancy.change(self.env.now, -1)
        self._finish(1)

    def node_down(self) -> None:
        """A replica failed: with none live and none coming back, the parked fail."""
        if any(n.up for n in self.nodes):
            return
        if self.nodes_recover is False:
            parked, self.parked = self.parked, []
            for rid in parked:
                self.fail(rid, "no_unique_node", int(self.log.resume_done[rid]))

    def node_up(self) -> None:
        parked, self.parked = self.parked, []
        for rid in parked:
            self._place(rid)

    def on_completed(self, ids: np.ndarray) -> None:
        """Requests finished (a unique node calls this)."""
        n = len(ids)
        self.log.close(ids)
        self.occupancy.change(self.env.now, -n)
        self._finish(n)

    def _finish(self, n: int) -> None:
        self.finished += n
        if self.closed_loop_concurrency:
            for _ in range(n):
                self._issue_next()
        if self.finished >= self.expected and not self.done.triggered:
            self.done.succeed()

    def _issue_next(self) -> None:
        if self._next < len(self.requests):
            rid = self._next
            self._next += 1
            self.dispatch(rid)

    def open_loop(self):
        """Requests arrive at their planned times (read off the plan's column a block at a
        time, so no Python object per planned request is made up front)."""
        env = self.env
        arrival = self.requests.arrival_ns
        for start in range(0, len(arrival), ARRIVAL_BLOCK):
            for rid, t in enumerate(arrival[start:start + ARRIVAL_BLOCK].tolist(), start):
                delay = t - env.now
                if delay > 0:
                    yield env.timeout(delay)
                self._next = rid + 1
                self.dispatch(rid)

    def start(self) -> None:
        """Start issuing requests."""
        if self.closed_loop_concurrency:
            for _ in range(min(self.closed_loop_concurrency, len(self.requests))):
                self._issue_next()
        else:
            self.env.process(self.open_loop())
        if not len(self.requests) and not self.done.triggered:
            self.done.succeed()


__all__ = ["RequestDriver"]
