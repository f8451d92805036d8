"""The request driver: requests arrive (open loop, at their planned times) or are issued
(closed loop: the next one whenever one completes), are rejected when they can never fit,
or are queued on the least-loaded unique node (fewest running + waiting; ties: lowest id);
with dedicated prefill nodes a request with new prompt tokens goes to the least-loaded
prefill node first and, once prefilled, to the least-loaded unique node.
It also says when the run is done: every planned request has finished or been rejected."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sim.engine.fabric import Fabric
from sim.engine.kernel import Engine
from sim.engine.nodes.unique import UniqueNode
from sim.engine.records import RunRecords
from workloads.request import RequestSpec


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

    def __init__(self, engine: Engine, requests: Sequence[RequestSpec], records: RunRecords,
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

    def dispatch(self, rid: int) -> None:
        """A request arrives now: reject it, or queue it on the least-loaded replica."""
        now = self.env.now
        log = self.log
        log.arrival_ns[rid] = now
        if int(log.kv_bytes[rid]) > self.kv_capacity_bytes:
            log.status[rid] = log.REJECTED
            reason = "kv_exceeds_replica_hbm"
            log.reject_reasons[reason] = log.reject_reasons.get(reason, 0) + 1
            self._finish(1)
            return
        prefill = self.prefill_nodes
        if prefill and int(log.prefill_tokens[rid]) > 0:
            if int(log.kv_bytes[rid]) > self.prefill_capacity_bytes:
                log.status[rid] = log.REJECTED
                reason = "kv_exceeds_prefill_hbm"
                log.reject_reasons[reason] = log.reject_reasons.get(reason, 0) + 1
                self._finish(1)
                return
            log.status[rid] = log.WAITING
            self.occupancy.change(now, +1)
            least_loaded(prefill).submit(rid)
            return
        best = least_loaded(self.nodes)
        log.node[rid] = best.index
        log.status[rid] = log.WAITING
        self.occupancy.change(now, +1)
        best.submit(rid)

    def hand_over(self, rid: int, source: Any, nbytes: int) -> None:
        """A prefill node finished request ``rid``'s prompt: its ``nbytes`` of new KV go over
        the fabric to the least-loaded unique node, which then admits it (context resident,
        first token made)."""
        log = self.log
        log.prefill_node[rid] = source.index
        best = least_loaded(self.nodes)
        log.node[rid] = best.index
        if self.fabric is None or nbytes <= 0:
            best.submit(rid)
            return
        self.fabric.send(source.host, best.host, nbytes,
                         on_delivery=lambda _e, n=best, r=rid: n.submit(r))

    def on_completed(self, ids: np.ndarray) -> None:
        """Requests finished (a unique node calls this)."""
        n = len(ids)
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
        """Requests arrive at their planned times."""
        env = self.env
        for rid, r in enumerate(self.requests):
            delay = int(r.arrival_ns) - env.now
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
        if not self.requests and not self.done.triggered:
            self.done.succeed()


__all__ = ["RequestDriver"]
