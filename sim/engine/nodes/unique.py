"""A unique node (or, for the non-disaggregated systems, one serving replica): admission
bounded by HBM, continuous batching, prefill, and decode steps.

Iteration policy (one loop turn): admit waiting requests FIFO while their KV reservation
fits and ``max_running`` allows (head-of-line: the first that does not fit blocks the
rest); prefill the newly admitted ones together (each priced by ``prefill_ops``, costs
summed; each gets its first token when the group's prefill ends); then run ONE decode
step of every running request, which makes one token each.

A decode step runs the op list in its order: unique-side ops before the shared round trip,
the round trip (moska: queries to each shared node holding a routed chunk, batched there,
partials back), then the merge and the rest. At ``granularity: layer`` that is repeated
per layer; at ``step`` it is done once with every cost (and the bytes and latency of the
round trip) multiplied by the number of layers. The node computes nothing while it waits
for partials (no micro-batch pipelining), as in the closed form it must agree with.
Per-request state is held in numpy arrays; a step never loops over requests in Python.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
from simpy.events import Event

from sim.engine.fabric import Fabric
from sim.engine.kernel import Engine, ceil_ns
from sim.engine.nodes.base import Node, NodeStats
from sim.engine.nodes.messages import PrefillJob, QueryMessage
from sim.engine.nodes.pricing import PHASE_INDEX, Pricer, bucket
from sim.engine.nodes.shared import SharedNode
from sim.engine.records import COLUMNS, RunRecords
from sim.engine.routing import NodeLoad

I64 = np.int64
ID, DONE, OUT, UCTX, SCTX, CORPUS, KV = (COLUMNS.index(c) for c in
                                         ("id", "done", "out", "uctx", "sctx", "corpus", "kv"))
_FABRIC, _QUEUE, _SHARED, _PREFILL, _STALL = (
    PHASE_INDEX[p] for p in ("fabric", "queueing", "shared_attention", "prefill", "prefill_stall"))


class UniqueNode(Node):
    """Continuous batching on one unique node (or one tensor-parallel replica).

    Collaborators: ``records`` (request log, tokens, breakdown), ``pricer``, the ``fabric``
    and the ``shared_nodes`` it sends queries to, ``route`` (a batch's routed queries per
    shared node) and ``on_completed`` (finished request ids), both set by whoever wires
    the run, and ``service_scale`` (None: deterministic service)."""

    kind = "unique"

    def __init__(
        self,
        index: int,
        host: int,
        engine: Engine,
        pricer: Pricer,
        records: RunRecords,
        *,
        fabric: Fabric | None,
        shared_nodes: list[SharedNode],
        service_scale: Callable[[], float] | None,
        step_mode: bool,
        remote: bool,
        capacity_bytes: int,
        max_running: int,
        tp: int = 1,
    ) -> None:
        super().__init__(index, host, engine)
        self.log = records.log
        self.tokens = records.tokens
        self.breakdown = records.breakdown
        self.fabric = fabric
        self.shared_nodes = shared_nodes
        self.service_scale = service_scale
        self.route: Callable[[np.ndarray, int, int], list[NodeLoad]] | None = None
        self.on_completed: Callable[[np.ndarray], None] = lambda _ids: None
        self.pricer = pricer
        self.capacity_bytes = capacity_bytes
        self.max_running = max_running
        self.tp = tp
        self.layers = pricer.layers
        self.step_mode = step_mode
        self.remote = remote
        self.waiting: deque[int] = deque()
        self.kv_used = 0
        self.max_kv_used = 0
        # running requests: one row each, columns COLUMNS (see RequestLog.rows)
        self.R = np.empty((0, len(COLUMNS)), I64)
        # NOTE: for performance: running totals and a countdown, so a step needs no numpy
        # reduction: sum of (unique + generated) tokens, sum of shared tokens, and the
        # steps until the next request finishes.
        self._ctx_sum = 0
        self._sctx_sum = 0
        self._to_next_finish = 0
        self._wake: Event | None = None
        # accounting
        self.steps = 0
        self.prefills = 0
        self.max_batch_seen = 0
        self.link_busy_ns = 0  # tp > 1: collectives on the replica's internal link
        self.process = self.env.process(self.run())

    # -- load and arrivals ----------------------------------------------------------------
    @property
    def running(self) -> int:
        return len(self.R)

    @property
    def load(self) -> int:
        """Requests on this node: running plus waiting (the dispatcher's measure)."""
        return len(self.R) + len(self.waiting)

    def submit(self, rid: int) -> None:
        """Queue request ``rid`` for admission here."""
        self.waiting.append(rid)
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.succeed()

    # -- the node's process ---------------------------------------------------------------
    def run(self):
        while True:
            if not len(self.R) and not self.waiting:
                self._wake = self.env.event()
                yield self._wake
                continue
            new = self._admit()
            if len(new):
                yield from self._prefill(new)
            if len(self.R):
                yield from self._decode_step()

    def _admit(self) -> np.ndarray:
        """Admit from the head of the queue while memory and ``max_running`` allow."""
        log = self.log
        room = self.max_running - len(self.R)
        taken: list[int] = []
        while self.waiting and room > 0:
            rid = self.waiting[0]
            need = int(log.kv_bytes[rid])
            if self.kv_used + need > self.capacity_bytes:
                break
            self.waiting.popleft()
            self.kv_used += need
            taken.append(rid)
            room -= 1
        self.max_kv_used = max(self.max_kv_used, self.kv_used)
        ids = np.asarray(taken, dtype=I64)
        if len(taken) == 1:  # NOTE: for performance: scalar stores beat fancy indexing
            log.admit_ns[taken[0]] = self.env.now
            log.status[taken[0]] = log.RUNNING
        elif taken:
            log.admit_ns[ids] = self.env.now
            log.status[ids] = log.RUNNING
        return ids

    # -- prefill --------------------------------------------------------------------------
    def _prefill(self, ids: np.ndarray):
        env = self.env
        log = self.log
        pricer = self.pricer
        t0 = env.now
        tl = self.tl
        if tl is not None:
            tl.begin(self.index, "prefill", t0)
        rows = log.rows[ids]
        pre = post = shared = qb = pb = 0
        ctx = sctx = 0
        first_out = 1 << 62
        for row in rows.tolist():
            u, sh, out = row[UCTX], row[SCTX], row[OUT]
            c = pricer.prefill(bucket(u), sh)
            pre += c.pre_ns
            post += c.post_ns
            shared += c.shared_ns
            qb += c.query_bytes
            pb += c.partial_bytes
            self.link_busy_ns += c.link_ns
            ctx += u + 1
            sctx += sh
            first_out = min(first_out, out)
        self.prefills += 1
        if self.service_scale is not None:
            k = self.service_scale()
            pre, post, shared = ceil_ns(pre * k), ceil_ns(post * k), ceil_ns(shared * k)
        if shared and self.remote:
            if pre:
                self._busy(pre)
                yield env.timeout(pre)
            yield from self._prefill_remote(shared, qb, pb)
            pre = 0
        if pre + post:
            self._busy(pre + post)
            yield env.timeout(pre + post)
        now = env.now
        n = len(ids)
        if n == 1:
            log.first_ns[int(ids[0])] = now
        else:
            log.first_ns[ids] = now
        self.breakdown[_PREFILL] += (now - t0) * n
        self.breakdown[_STALL] += (now - t0) * len(self.R)  # running ones waited
        self.tokens.add(now, n)
        empty = not len(self.R)
        self.R = rows if empty else np.concatenate((self.R, rows))
        self._ctx_sum += ctx
        self._sctx_sum += sctx
        left = first_out - 1
        if empty or left < self._to_next_finish:
            self._to_next_finish = left
        if tl is not None:
            tl.end(self.index, now, {"requests": n, "prompt_tokens": ctx - n,
                                     "shared_tokens": sctx})
        if left <= 0:
            self._retire(now)

    def _prefill_remote(self, shared_ns: int, qbytes: int, pbytes: int):
        """Send the prompts' corpus attention to every shared node; wait for the partials."""
        env = self.env
        fabric = self.fabric
        replies = []
        for node in self.shared_nodes:
            job = PrefillJob(self.host, shared_ns, pbytes, self.layers, Event(env), env.now)
            replies.append(job.reply)
            fabric.send(self.host, node.host, qbytes, rounds=self.layers,
                        on_delivery=lambda _e, n=node, j=job: n.receive_job(j))
        tl = self.tl
        if tl is not None:
            tl.round_trip_begin(self.index, env.now, len(replies))
        yield replies[0] if len(replies) == 1 else env.all_of(replies)
        if tl is not None:
            tl.round_trip_end(self.index, env.now)

    # -- decode ---------------------------------------------------------------------------
    def _decode_step(self):
        env = self.env
        B = len(self.R)
        tl = self.tl
        if tl is not None:
            tl.begin(self.index, "decode", env.now)
        self.max_batch_seen = max(self.max_batch_seen, B)
        uctx = bucket((2 * self._ctx_sum + B) // (2 * B))  # the mean, rounded
        sctx = bucket((2 * self._sctx_sum + B) // (2 * B)) if self._sctx_sum else 0
        cost = self.pricer.decode(B, uctx, sctx)
        self.link_busy_ns += cost.link_ns
        L = self.layers
        bd = self.breakdown
        bd += cost.phase_ns * B
        if not (self.remote and sctx):
            t = cost.local_ns(L)
            if self.service_scale is not None:
                t = ceil_ns(t * self.service_scale())
            self._busy(t)
            yield env.timeout(t)
        elif self.step_mode:
            self._busy(cost.pre_ns * L)
            yield env.timeout(cost.pre_ns * L)
            yield from self._round_trip(B, 0, L)
            t = cost.post_ns * L + cost.step_ns
            self._busy(t)
            yield env.timeout(t)
        else:
            for layer in range(L):
                self._busy(cost.pre_ns)
                yield env.timeout(cost.pre_ns)
                yield from self._round_trip(B, layer, 1)
                self._busy(cost.post_ns)
                yield env.timeout(cost.post_ns)
            if cost.step_ns:
                self._busy(cost.step_ns)
                yield env.timeout(cost.step_ns)
        now = env.now
        self.steps += 1
        self.R[:, DONE] += 1
        self._ctx_sum += B
        self.tokens.add(now, B)
        self._to_next_finish -= 1
        if tl is not None:
            tl.end(self.index, now, {"batch": B, "tokens": B, "context_tokens": uctx,
                                     "shared_tokens": sctx})
        if self._to_next_finish <= 0:
            self._retire(now)

    def _round_trip(self, B: int, layer: int, rounds: int):
        """Queries out to the shared nodes, batched there, partials back."""
        env = self.env
        fabric = self.fabric
        now = env.now
        msgs: list[QueryMessage] = []
        for node, load in zip(self.shared_nodes, self.route(self.R[:, CORPUS], B, layer)):
            reqs = load.requests
            if reqs <= 0:
                continue
            msg = QueryMessage(self.host, layer, load.counts, reqs, rounds, Event(env), now,
                               load.max_count, load.pairs)
            msgs.append(msg)
            fabric.send(self.host, node.host, self.pricer.query_bytes(reqs) * rounds,
                        rounds=rounds, on_delivery=lambda _e, n=node, m=msg: n.receive(m))
        if not msgs:
            return
        tl = self.tl
        if tl is not None:
            tl.round_trip_begin(self.index, now, len(msgs))
        yield msgs[0].reply if len(msgs) == 1 else env.all_of([m.reply for m in msgs])
        if tl is not None:
            tl.round_trip_end(self.index, env.now)
        crit = max(msgs, key=lambda m: m.t_back)
        rt = crit.t_back - crit.t_sent
        wait = crit.t_done - crit.t_arrive - crit.compute_ns
        bd = self.breakdown
        bd[_SHARED] += crit.compute_ns * B
        bd[_QUEUE] += wait * B
        bd[_FABRIC] += (rt - crit.compute_ns - wait) * B

    def _retire(self, now: int) -> None:
        """Remove the requests that have made all their tokens (vectorised)."""
        R = self.R
        log = self.log
        if len(R) == 1:  # NOTE: for performance: one request, scalar stores
            rid, out, kv = int(R[0, ID]), int(R[0, OUT]), int(R[0, KV])
            log.done_ns[rid] = now
            log.generated[rid] = out
            log.status[rid] = log.COMPLETED
            self.kv_used -= kv
            self.R = R[:0]
            self._ctx_sum = self._sctx_sum = self._to_next_finish = 0
            self.on_completed(R[:, ID])
            return
        fin = R[:, DONE] >= R[:, OUT]
        done = R[fin]
        ids = done[:, ID]
        log.done_ns[ids] = now
        log.generated[ids] = done[:, OUT]
        log.status[ids] = log.COMPLETED
        self.kv_used -= int(done[:, KV].sum())
        R = R[~fin]
        self.R = R
        if len(R):
            self._ctx_sum = int(R[:, UCTX].sum() + R[:, DONE].sum())
            self._sctx_sum = int(R[:, SCTX].sum())
            self._to_next_finish = int((R[:, OUT] - R[:, DONE]).min())
        else:
            self._ctx_sum = self._sctx_sum = self._to_next_finish = 0
        self.on_completed(ids)

    # -- accounting -----------------------------------------------------------------------
    def stats(self, t_end: int) -> NodeStats:
        return NodeStats(self.name, self.busy_within(t_end), {
            "steps": self.steps, "prefill_groups": self.prefills,
            "max_running": self.max_batch_seen, "peak_kv_gib": self.max_kv_used / 2**30,
            "requests": int((self.log.node == self.index).sum()),
            "node_link_busy_s": self.link_busy_ns / 1e9})

    def flush_generated(self) -> None:
        """Write the running requests' token counts into the log (at the end of a run)."""
        self.log.generated[self.R[:, ID]] = self.R[:, DONE]


__all__ = ["UniqueNode"]
