"""A shared node: holds a stripe of the shared corpus's chunks and batches the queries that
unique nodes send it into grouped shared-attention launches.

Batching rule. Query messages wait FIFO. A launch starts when the node is idle and either
some (layer, chunk) has at least ``max_batch`` pending queries or the oldest pending
message has waited ``window_ns``. A launch takes pending messages in FIFO order while every
(layer, chunk) batch stays <= ``max_batch``; a message that alone exceeds it is split over
several launches. A launch is priced as ONE ``GroupedSharedAttention`` over every
(layer, chunk) it touches (chunks of different layers are different KV: separate chunks
of the same launch). When all of a message's queries are done, its partials (output +
log-sum-exp) go back over the fabric. Prefill jobs (one chunk of prompts' attention to the
corpus, one layer or one folded step) run alone. ``decode_first`` (the default): a due
decode batch always goes before prefill work, and prefill work runs while no decode batch
is due, so a decode query waits at most one prefill chunk; otherwise (``fifo``) jobs and
decode messages go in arrival order.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from simpy.events import NORMAL, Event

from sim.engine.fabric import Fabric
from sim.engine.kernel import Engine
from sim.engine.nodes.base import Node, NodeStats
from sim.engine.nodes.messages import PrefillJob, QueryMessage, RoundTrip
from sim.engine.nodes.pricing import Pricer


_DEADLINE = NORMAL + 1  # a batching window's deadline: after the other events of its instant


def _arrival_order(item: tuple[int, int, QueryMessage | PrefillJob]) -> tuple[int, int]:
    return item[0], item[1]


class SharedNode(Node):
    """One shared node's queue, batching policy and busy-time accounting."""

    kind = "shared"
    # take a message or prefill job at send time when the node will still be busy at its
    # arrival (``deliver_later``); False: a delivery event each, the reference tests
    # compare against
    deliver_ahead = True

    def __init__(
        self,
        index: int,
        host: int,
        engine: Engine,
        fabric: Fabric | None,
        pricer: Pricer,
        *,
        local_chunks: int,
        max_batch: int,
        window_ns: int,
        decode_first: bool = True,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"batching.max_batch: expected >= 1, got {max_batch}")
        super().__init__(index, host, engine)
        self.fabric = fabric
        self.pricer = pricer
        self.local_chunks = local_chunks
        self.max_batch = max_batch
        self.window_ns = window_ns
        self.decode_first = decode_first
        self.pending: deque[QueryMessage] = deque()
        self.jobs: deque[PrefillJob] = deque()
        # per layer: the sum of its pending messages' max_count (an upper bound of a chunk's
        # pending queries, exact when one message is pending) and how many are pending
        self._layer_bound: dict[int, int] = {}
        self._layer_msgs: dict[int, int] = {}
        self.pending_pairs = 0
        self.pending_queries = 0  # requests of the pending messages (a split one until done)
        self._wake: Event | None = None
        self._wake_full_only = False
        # accounting
        self.launches = 0
        self.launch_pairs = 0
        self.launch_chunks = 0
        self.max_chunk_batch = 0
        self.max_pending_pairs = 0
        self.messages = 0
        self.split_messages = 0
        self.prefill_jobs = 0
        self.prefill_busy_ns = 0
        self._current: tuple | None = None  # the launch or job now running
        # messages and prefill jobs delivered while a launch or job runs: (delivery ns, send
        # order, message or job), taken into the queues in that order when it ends (nothing
        # can look at them before)
        self.inbox: list[tuple[int, int, QueryMessage | PrefillJob]] = []
        self.process = self.env.process(self.run())

    # -- arrivals -------------------------------------------------------------------------
    def receive(self, msg: QueryMessage) -> None:
        """A query message has arrived (called by the fabric on delivery)."""
        if self._current is not None:  # busy: it waits in the inbox until the work ends
            self.inbox.append((self.env.now, msg.seq, msg))
            return
        self._accept(msg, self.env.now)

    def deliver_later(self, t_ns: int, msg: QueryMessage | PrefillJob) -> bool:
        """Take a message or prefill job that will arrive at ``t_ns`` while this node's
        current launch or job still runs, without a delivery event; False if it will not
        be busy then (the sender schedules a delivery instead).

        NOTE: for performance: a busy node only looks at its queue when its work ends, so a
        message arriving meanwhile needs no event of its own; the inbox is taken in
        (delivery time, send order), the order SimPy would have delivered them in."""
        if self._current is None or t_ns >= self.busy_until or not self.deliver_ahead:
            return False
        self.inbox.append((t_ns, msg.seq, msg))
        return True

    def _take_inbox(self) -> None:
        """Queue the messages that arrived while the launch or job ran, in arrival order."""
        inbox = self.inbox
        self.inbox = []
        inbox.sort(key=_arrival_order)
        for t, _seq, item in inbox:
            if type(item) is PrefillJob:
                item.t_arrive = t
                self.jobs.append(item)
            else:
                self._accept(item, t)

    def _accept(self, msg: QueryMessage, t_arrive: int) -> None:
        """Queue a message that arrived at ``t_arrive``; wake the node if it waits for one."""
        msg.t_arrive = t_arrive
        self.pending.append(msg)
        self.messages += 1
        layer = msg.layer
        self._layer_msgs[layer] = self._layer_msgs.get(layer, 0) + 1
        self._layer_bound[layer] = self._layer_bound.get(layer, 0) + msg.max_count
        self.pending_pairs += msg.pairs
        self.pending_queries += msg.requests
        if self.pending_pairs > self.max_pending_pairs:
            self.max_pending_pairs = self.pending_pairs
        if self._wake is not None and (not self._wake_full_only or self._full()):
            self._wake_now()

    def receive_job(self, job: PrefillJob) -> None:
        """A prefill job has arrived."""
        if self._current is not None:  # busy: it waits in the inbox until the work ends
            self.inbox.append((self.env.now, job.seq, job))
            return
        job.t_arrive = self.env.now
        self.jobs.append(job)
        if self._wake is not None:
            self._wake_now()

    def _wake_now(self) -> None:
        """Resume the sleeping node now. A sleep with a deadline is an event already
        scheduled for it: the node's resumption moves from it to a new event for now (as
        SimPy's own interrupts do), and the deadline then fires with nobody waiting."""
        wake = self._wake
        self._wake = None
        if not wake.triggered:
            wake.succeed()
            return
        proc = self.process
        wake.callbacks.remove(proc._resume)
        now = Event(self.env)
        now.callbacks.append(proc._resume)
        proc._target = now
        now.succeed()

    def _full(self) -> bool:
        """Whether some (layer, chunk) has at least ``max_batch`` pending queries.

        NOTE: for performance: a layer's bound (the sum of its messages' maxima) settles
        it when below ``max_batch``; only otherwise are its chunks summed."""
        mb = self.max_batch
        for layer, bound in self._layer_bound.items():
            if bound >= mb and self._layer_max(layer) >= mb:
                return True
        return False

    def _layer_max(self, layer: int) -> int:
        """The most pending queries of one chunk of ``layer``."""
        msgs = [m.remaining for m in self.pending if m.layer == layer]
        return int(np.add.reduce(msgs).max()) if len(msgs) > 1 else int(msgs[0].max())

    def _sleep(self, full_only: bool, timeout_ns: int = 0) -> Event:
        """The event the node sleeps on: a wake-up by an arrival, or (``timeout_ns``) the
        batching window's deadline.

        NOTE: for performance: the deadline is one event scheduled at the lowest priority
        of its instant (after every other event of that nanosecond, as the timer-plus-
        wake-up pair it replaces resumed the node), not a timer that fires a second event."""
        ev = Event(self.env)
        self._wake = ev
        self._wake_full_only = full_only
        if timeout_ns:
            ev._ok = True
            ev._value = None
            self.env.schedule(ev, _DEADLINE, timeout_ns)
        return ev

    # -- the node's process ---------------------------------------------------------------
    def fail(self) -> tuple[list[QueryMessage], list[PrefillJob]]:
        """The node fails now: its launch stops and its queue is handed back (messages
        whose queries were not all done, and prefill jobs)."""
        cur = self._current
        self._current = None
        self._take_inbox()
        self._current = cur
        self.up = False
        if self.busy_until > self.env.now:  # the work cut short was not done
            self.busy_ns -= self.busy_until - self.env.now
            self.busy_until = self.env.now
        msgs: list[QueryMessage] = []
        jobs: list[PrefillJob] = []
        cur = self._current
        if cur is not None:
            if cur[0] == "job":
                jobs.append(cur[1])
            else:
                _, parts, whole, done = cur
                msgs.extend(done)
                for i, (msg, part) in enumerate(parts):
                    if i >= whole:  # a split part: its queries go back to the message
                        msg.remaining = msg.remaining + part
                        msg.max_count = int(msg.remaining.max())
                        msg.pairs += int(part.sum())
        msgs.extend(m for m in self.pending if m not in msgs)
        jobs.extend(self.jobs)
        self.pending.clear()
        self.jobs.clear()
        self._layer_bound.clear()
        self._layer_msgs.clear()
        self.pending_pairs = 0
        self.pending_queries = 0
        self._current = None
        self._wake = None
        if self.process.is_alive and self.process.target is not None:
            self.process.interrupt("failed")
        return msgs, jobs

    def _serve(self):
        env = self.env
        while True:
            if not self.pending and not self.jobs:
                yield self._sleep(full_only=False)
                self._wake = None
                continue
            if self.jobs and not self.pending:
                yield from self._run_job(self.jobs.popleft())
                continue
            if self.jobs and not self.decode_first and \
                    self.jobs[0].t_arrive <= self.pending[0].t_arrive:
                yield from self._run_job(self.jobs.popleft())
                continue
            if not self._full():
                wait = self.pending[0].t_arrive + self.window_ns - env.now
                if wait > 0:
                    if self.jobs:  # decode_first, but no decode batch is due yet
                        yield from self._run_job(self.jobs.popleft())
                        continue
                    yield self._sleep(full_only=True, timeout_ns=wait)
                    self._wake = None
                    continue
            yield from self._launch()

    def _run_job(self, job: PrefillJob):
        now = self.env.now
        job.t_start = now
        self._busy(job.cost_ns)
        if self.tl is not None:
            self.tl.kernel(self.index, "prefill_attention", now, job.cost_ns,
                           {"src": self.tl.host_name(job.src_host), "rounds": job.rounds})
        self.prefill_jobs += 1
        self.prefill_busy_ns += job.cost_ns
        self._current = ("job", job)
        yield self.env.timeout(job.cost_ns)
        self._current = None
        if self.inbox:
            self._take_inbox()
        job.t_done = self.env.now
        job.t_back = self._reply(job.src_host, job.partial_bytes, job.rounds, job.reply)

    def _take(self) -> tuple[list[tuple[QueryMessage, np.ndarray]], dict[int, np.ndarray], int]:
        """The messages (or the split part of one) the next launch takes, FIFO."""
        mb = self.max_batch
        take: dict[int, np.ndarray] = {}
        bound: dict[int, int] = {}  # an upper bound of take[layer].max()
        parts: list[tuple[QueryMessage, np.ndarray]] = []
        whole = 0
        for msg in self.pending:
            layer = msg.layer
            cur = take.get(layer)
            rem = msg.remaining
            if cur is None:
                fits = msg.max_count <= mb
            else:
                # NOTE: for performance: the sum of the maxima bounds every chunk's sum; the
                # elementwise check runs only when that bound is over max_batch
                fits = (bound[layer] + msg.max_count <= mb
                        or bool((rem <= mb - cur).all()))
            if fits:
                take[layer] = rem if cur is None else cur + rem
                bound[layer] = msg.max_count if cur is None else min(
                    mb, bound[layer] + msg.max_count)
                parts.append((msg, rem))
                whole += 1
                continue
            if not parts:  # the oldest message alone exceeds max_batch: split it
                part = np.minimum(rem, mb)
                take[msg.layer] = part
                parts.append((msg, part))
            break
        return parts, take, whole

    def _launch(self):
        env = self.env
        parts, take, whole = self._take()
        rounds = parts[0][0].rounds
        simple = whole == len(parts) == len(take)  # whole messages, one per layer
        # what leaves the queue: whole messages first, then (at most) a split one's part
        # NOTE: for performance: one pass books each message and sums the launch's shape
        requests = pairs = biggest = 0
        done: list[QueryMessage] = []
        pending = self.pending
        bound, layer_msgs = self._layer_bound, self._layer_msgs
        now = env.now
        for i, (msg, part) in enumerate(parts):
            assert msg.rounds == rounds, "a launch mixes layer- and step-granularity messages"
            layer = msg.layer
            if i < whole:
                n = msg.pairs
                done.append(pending.popleft())
                self.pending_queries -= msg.requests
                if msg.max_count > biggest:
                    biggest = msg.max_count
                bound[layer] -= msg.max_count
                layer_msgs[layer] -= 1
                if not layer_msgs[layer]:  # nothing of this layer is left
                    del bound[layer], layer_msgs[layer]
            else:
                n = int(part.sum())
                msg.remaining = msg.remaining - part
                new_max = int(msg.remaining.max())
                bound[layer] += new_max - msg.max_count
                msg.max_count = new_max
                msg.pairs -= n
                self.split_messages += 1
            pairs += n
            requests += min(msg.requests, n)
            if msg.t_first_launch < 0:
                msg.t_first_launch = now
            msg.launches += 1
        if not simple:
            biggest = max(int(a.max()) for a in take.values())
        assert biggest <= self.max_batch, (biggest, self.max_batch)
        if biggest > self.max_chunk_batch:
            self.max_chunk_batch = biggest
        ns, chunks = self.pricer.grouped(list(take.values()), requests, pairs, biggest)
        cost = ns * rounds
        for msg, _ in parts:
            msg.compute_ns += cost
        self.pending_pairs -= pairs
        self.launches += 1
        self.launch_pairs += pairs
        self.launch_chunks += chunks
        self._busy(cost)
        if self.tl is not None:
            self.tl.kernel(self.index, "grouped_shared_attention", now, cost,
                           {"requests": requests, "pairs": pairs, "chunks": chunks,
                            "max_chunk_batch": biggest, "messages": len(parts),
                            "layers": len(take), "rounds": rounds})
        self._current = ("launch", parts, whole, done)
        yield env.timeout(cost)
        self._current = None
        if self.inbox:
            self._take_inbox()
        now = env.now
        partial_bytes = self.pricer.partial_bytes
        for msg in done:
            msg.t_done = now
            msg.t_back = self._reply(msg.src_host, partial_bytes(msg.requests) * rounds,
                                     rounds, msg.reply)

    def _reply(self, dst_host: int, nbytes: int, rounds: int, reply: Event | RoundTrip) -> int:
        """Send partials back; returns when they arrive (ns)."""
        if type(reply) is RoundTrip:  # no event of its own: the round trip is told when
            fabric = self.fabric
            t = self.env.now if fabric is None else fabric.reserve(
                self.host, dst_host, nbytes, rounds=rounds)
            reply.arrived(t)
            return t
        if reply.triggered:  # faults: its sender gave up on it (timed out)
            return self.env.now
        if self.fabric is None:
            reply.succeed()
            return self.env.now
        return self.fabric.send(self.host, dst_host, nbytes, rounds=rounds, event=reply)

    # -- accounting -----------------------------------------------------------------------
    def stats(self, t_end: int) -> NodeStats:
        lc, ln = self.launch_chunks, self.launches
        return NodeStats(self.name, self.busy_within(t_end), {
            "launches": ln,
            "messages": self.messages,
            "split_messages": self.split_messages,
            "mean_chunk_batch": (self.launch_pairs / lc) if lc else None,
            "mean_chunks_per_launch": (lc / ln) if ln else None,
            "max_chunk_batch": self.max_chunk_batch,
            "max_pending_pairs": self.max_pending_pairs,
            "prefill_jobs": self.prefill_jobs,
            "prefill_busy_s": self.prefill_busy_ns / 1e9,
        })

    def queue_length(self) -> int:
        """Queries waiting for a launch (one per request of a pending message, the inbox's
        arrived ones too) plus pending prefill jobs."""
        now = self.env.now
        waiting = sum(1 if type(m) is PrefillJob else m.requests
                      for t, _, m in self.inbox if t <= now)
        return self.pending_queries + waiting + len(self.jobs)


__all__ = ["SharedNode"]
