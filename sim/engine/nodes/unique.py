"""A unique node (or, for the non-disaggregated systems, one serving replica): admission
bounded by HBM, continuous batching with chunked prefill, and decode steps.

Iteration policy (one loop turn, Sarathi-style): admit waiting requests FIFO while their
KV reservation fits and ``max_running`` allows (head-of-line: the first that does not fit
blocks the rest); a request with new prompt tokens joins the prefill queue, one whose
context is all resident (``prefill_tokens`` 0) joins the decode batch at once. Then run ONE
step: a decode token for every decoding request plus the next chunk of prefill work,
at most ``prefill_chunk_tokens`` prompt tokens taken FIFO from the prefill queue (a prompt
may span several steps; None: every queued prompt whole). Decode is never stalled
behind a whole prompt, only behind one chunk. A request whose prompt finishes gets its
first token at the end of that step and decodes from the next one; a decode-only
request's first token is its first decode step's.

A step runs the op lists in order: unique-side ops before the shared round trip, the round
trip (moska: the decode batch's routed queries and the chunk's corpus attention go to the
shared nodes, partials come back), then the merge and the rest. Ops that do not depend on
the round trip (the unique attention of the batch and of the chunk) run while it is in
flight when ``overlap`` is on. At ``granularity: layer`` that is repeated per layer; at
``step`` it is done once with every cost (and the bytes and latency of the round trip)
multiplied by the number of layers. Per-request state is held in numpy arrays; a step
never loops over decoding requests in Python.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
from simpy.events import Event

from sim.engine.fabric import Fabric
from sim.engine.kernel import LOST, Engine, ceil_ns
from sim.engine.nodes.base import Node, NodeStats
from sim.engine.nodes.messages import PrefillJob, QueryMessage, RoundTrip
from sim.engine.nodes.pricing import PHASE_INDEX, DecodeCost, Pricer, bucket
from sim.engine.nodes.shared import SharedNode
from sim.engine.records import COLUMNS, RunRecords
from sim.engine.routing import NodeLoad

I64 = np.int64
ID, DONE, OUT, UCTX, SCTX, CORPUS, KV = (COLUMNS.index(c) for c in
                                         ("id", "done", "out", "uctx", "sctx", "corpus", "kv"))
_FABRIC, _QUEUE, _SHARED, _PREFILL, _STALL = (
    PHASE_INDEX[p] for p in ("fabric", "queueing", "shared_attention", "prefill", "prefill_stall"))


class UniqueNode(Node):
    """Continuous batching with chunked prefill on one unique node (or one replica).

    Collaborators: ``records`` (request log, tokens, breakdown), ``pricer``, the ``fabric``
    and the ``shared_nodes`` it sends queries to, ``route`` (a batch's routed queries per
    shared node) and ``on_completed`` (finished request ids), both set by whoever wires
    the run, and ``service_scale`` (None: deterministic service)."""

    kind = "unique"
    # fold the work after a lone chain's round trip into its event (``_chain``); False
    # keeps the unfolded path, the reference tests compare the folded one against
    fold_round_trips = True

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
        prefill_chunk_tokens: int | None = None,
        tp: int = 1,
        microbatches: int = 1,
    ) -> None:
        super().__init__(index, host, engine)
        self.log = records.log
        self.tokens = records.tokens
        self.breakdown = records.breakdown
        self.fabric = fabric
        self.shared_nodes = shared_nodes
        self.service_scale = service_scale
        # (corpus ids, batch, layers) -> per layer, the batch's routed queries per shared node
        self.route: Callable[[np.ndarray, int, int], list[list[NodeLoad]]] | None = None
        self.on_completed: Callable[[np.ndarray], None] = lambda _ids: None
        self.pricer = pricer
        self.capacity_bytes = capacity_bytes
        self.max_running = max_running
        self.chunk_budget = prefill_chunk_tokens if prefill_chunk_tokens else 1 << 62
        self.tp = tp
        self.microbatches = microbatches
        self._compute_free_at = 0  # micro-batches: when the node's compute is next free
        self.layers = pricer.layers
        self.step_mode = step_mode
        self.remote = remote
        self.waiting: deque[int] = deque()
        # admitted requests still prefilling, FIFO: [request id, prompt tokens left,
        # context tokens already in KV]
        self.prefilling: deque[list[int]] = deque()
        self.kv_used = 0
        self.max_kv_used = 0
        # decoding requests: one row each, columns COLUMNS (see RequestLog.rows)
        self.R = np.empty((0, len(COLUMNS)), I64)
        # NOTE: for performance: running totals and a countdown, so a step needs no numpy
        # reduction: sum of (unique + generated) tokens, sum of shared tokens, rows that
        # have no token yet (decode-only requests), and the steps until the next finishes.
        self._ctx_sum = 0
        self._sctx_sum = 0
        self._fresh = 0
        self._to_next_finish = 0
        self._wake: Event | None = None
        # accounting
        self.steps = 0
        self.prefill_chunks = 0
        self.prefill_tokens_done = 0
        self.max_batch_seen = 0
        self.link_busy_ns = 0  # tp > 1: collectives on the replica's internal link
        self.faults = None  # the fault manager (sim.engine.faults), when the run has faults
        self._jobs_sent: list[PrefillJob] = []
        self._folded: RoundTrip | None = None  # the round trip a lone chain waits on
        self._folded_sent = 0  # how many shared nodes it went to
        self.recovers: int | None = 0  # faults: when a failed node comes back (None: never)
        self.process = self.env.process(self.run())

    # -- load and arrivals ----------------------------------------------------------------
    @property
    def running(self) -> int:
        """Admitted requests: decoding plus prefilling."""
        return len(self.R) + len(self.prefilling)

    @property
    def load(self) -> int:
        """Requests on this node: running plus waiting (the dispatcher's measure)."""
        return len(self.R) + len(self.prefilling) + len(self.waiting)

    def submit(self, rid: int) -> None:
        """Queue request ``rid`` for admission here."""
        self.waiting.append(rid)
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.succeed()

    # -- the node's process ---------------------------------------------------------------
    def fail(self, recovers_ns: int | None) -> list[tuple[int, int]]:
        """The node fails now: its KV is lost. Returns every request it held (decoding,
        prefilling, waiting) as (slot, tokens generated so far), in request-id order."""
        self.up = False
        now = self.env.now
        if self.busy_until > now:
            self.busy_ns -= self.busy_until - now
            self.busy_until = now
        log = self.log
        out: dict[int, int] = {}
        for rid, done in zip(self.R[:, ID].tolist(), self.R[:, DONE].tolist()):
            out[rid] = int(done)
        for rid, _left, _prior in self.prefilling:
            out[rid] = int(log.resume_done[rid])
        for rid in self.waiting:
            out[rid] = int(log.resume_done[rid])
        self.R = self.R[:0]
        self.prefilling.clear()
        self.waiting.clear()
        self._jobs_sent = []
        self.kv_used = 0
        self._ctx_sum = self._sctx_sum = self._fresh = self._to_next_finish = 0
        self._wake = None
        if self.tl is not None:
            self.tl.abort(self.index, now)
        if self.process.is_alive:
            self.process.interrupt("failed")
        request_id = log.rid
        return sorted(out.items(), key=lambda item: int(request_id[item[0]]))

    def _remove(self, rids: set[int]) -> list[tuple[int, int]]:
        """Take requests ``rids`` off this node (their KV freed); (slot, tokens made), in
        request-id order."""
        out: list[tuple[int, int]] = []
        log = self.log
        if len(self.R):
            mask = np.isin(self.R[:, ID], np.fromiter(rids, dtype=I64))
            if mask.any():
                gone = self.R[mask]
                out += [(int(r), int(d)) for r, d in zip(gone[:, ID], gone[:, DONE])]
                self.kv_used -= int(gone[:, KV].sum())
                R = self.R[~mask]
                self.R = R
                self._ctx_sum = int(R[:, UCTX].sum() + R[:, DONE].sum()) if len(R) else 0
                self._sctx_sum = int(R[:, SCTX].sum()) if len(R) else 0
                self._fresh = int((R[:, DONE] == 0).sum()) if len(R) else 0
                self._to_next_finish = int((R[:, OUT] - R[:, DONE]).min()) if len(R) else 0
        keep: deque[list[int]] = deque()
        for entry in self.prefilling:
            if entry[0] in rids:
                out.append((entry[0], int(log.resume_done[entry[0]])))
                self.kv_used -= int(log.kv_bytes[entry[0]])
            else:
                keep.append(entry)
        self.prefilling = keep
        request_id = log.rid
        return sorted(out, key=lambda item: int(request_id[item[0]]))

    def _serve(self):  # noqa: ANN202
        while True:
            if self.waiting:
                self._admit()
            if not len(self.R) and not self.prefilling:
                self._wake = self.env.event()
                yield self._wake
                continue
            yield from self._step()

    def _admit(self) -> None:
        """Admit from the head of the queue while memory and ``max_running`` allow."""
        log = self.log
        room = self.max_running - len(self.R) - len(self.prefilling)
        direct: list[int] = []
        handed: list[int] = []
        now = self.env.now
        while self.waiting and room > 0:
            rid = self.waiting[0]
            need = int(log.kv_bytes[rid])
            if self.kv_used + need > self.capacity_bytes:
                break
            self.waiting.popleft()
            self.kv_used += need
            room -= 1
            if log.prefill_node[rid] >= 0:  # prefilled on a prefill node: first token made
                handed.append(rid)
                continue
            log.admit_ns[rid] = now
            log.status[rid] = log.RUNNING
            new = int(log.prefill_tokens[rid])
            redo = int(log.redo_prefill[rid])
            if redo >= 0:  # re-admitted after its KV was lost: the whole context again
                self.prefilling.append([rid, redo, 0])
            elif new > 0:
                self.prefilling.append([rid, new, int(log.unique_tokens[rid]) - new])
            else:
                direct.append(rid)
        if self.kv_used > self.max_kv_used:
            self.max_kv_used = self.kv_used
        if handed:  # decode from the second token on
            ids = np.asarray(handed, dtype=I64)
            # the KV's trip from the prefill node and the wait here come before token 2
            self.breakdown[_QUEUE] += float((now - log.first_ns[ids]).sum())
            self._join(log.rows[ids].copy())
        if direct:  # context all resident: decode from the next step, no token yet
            rows = log.rows[np.asarray(direct, dtype=I64)].copy()
            rows[:, DONE] = 0
            self._join(rows, fresh=len(direct))

    def _join(self, rows: np.ndarray, fresh: int = 0) -> None:
        """Add ``rows`` to the decode batch."""
        empty = not len(self.R)
        self.R = rows if empty else np.concatenate((self.R, rows))
        self._ctx_sum += int(rows[:, UCTX].sum() + rows[:, DONE].sum())
        self._sctx_sum += int(rows[:, SCTX].sum())
        self._fresh += fresh
        left = int((rows[:, OUT] - rows[:, DONE]).min())
        if empty or left < self._to_next_finish:
            self._to_next_finish = left

    def _take_chunk(self) -> list[tuple[int, int, int]]:
        """The prefill pieces of the next step: (request id, new tokens, context before),
        FIFO, at most the chunk budget in all."""
        budget = self.chunk_budget
        pieces: list[tuple[int, int, int]] = []
        for entry in self.prefilling:
            if budget <= 0:
                break
            rid, left, prior = entry
            t = left if left <= budget else budget
            pieces.append((rid, t, prior))
            budget -= t
        return pieces

    # -- one step ------------------------------------------------------------------------
    def _step(self):  # noqa: ANN202
        env = self.env
        pricer = self.pricer
        L = self.layers
        t0 = env.now
        B = len(self.R)
        pieces = self._take_chunk()
        tl = self.tl
        if tl is not None:
            tl.begin(self.index, "decode" if B else "prefill", t0)
        if B > self.max_batch_seen:
            self.max_batch_seen = B
        dcost = None
        uctx = sctx = 0
        if B:
            uctx = bucket((2 * self._ctx_sum + B) // (2 * B))  # the mean, rounded
            sctx = bucket((2 * self._sctx_sum + B) // (2 * B)) if self._sctx_sum else 0
            dcost = pricer.decode(B, uctx, sctx)
            self.link_busy_ns += dcost.link_ns
        pre = overlap = post = step = 0
        pshared = pq = pp = 0
        ptok = 0
        if dcost is not None:
            pre, overlap, post, step = dcost.pre_ns, dcost.overlap_ns, dcost.post_ns, dcost.step_ns
        log = self.log
        for rid, t, prior in pieces:
            c = pricer.prefill(bucket(t), int(log.shared_tokens[rid]), bucket(prior) if prior else 0)
            pre += c.pre_ns
            overlap += c.overlap_ns
            post += c.post_ns
            pshared += c.shared_ns
            pq += c.query_bytes
            pp += c.partial_bytes
            self.link_busy_ns += c.link_ns * L
            ptok += t
        remote_decode = self.remote and B and sctx
        remote_prefill = self.remote and pshared > 0
        rt_parts = [0.0, 0.0, 0.0]  # decode's exposed round trip: shared, queueing, fabric
        halves = None  # micro-batches: each half's (size, cost, exposed round trip)
        if not (remote_decode or remote_prefill):
            t = (pre + overlap + post) * L + step
            if self.service_scale is not None:
                t = ceil_ns(t * self.service_scale())
            self._busy(t)
            yield env.timeout(t)
        else:
            rounds, reps = (L, 1) if self.step_mode else (1, L)
            if self.faults is None and self.microbatches > 1 and remote_decode and B > 1:
                halves = yield from self._ping_pong(reps, rounds, dcost, pre - dcost.pre_ns,
                                                    overlap - dcost.overlap_ns,
                                                    post - dcost.post_ns, pshared, pq, pp)
            elif self.faults is None:
                yield from self._round_trips(reps, rounds, B if remote_decode else 0,
                                             pre, overlap, post, step, pshared, pq, pp,
                                             rt_parts)
            else:
                n_before = len(self.R)
                pieces = yield from self._round_trips_faulty(
                    reps, rounds, B if remote_decode else 0, pre, overlap, post, step,
                    pshared, pq, pp, rt_parts, pieces)
                if len(self.R) != n_before:
                    B = len(self.R)
                    if not B:
                        dcost = None
        if not self.up:  # faults: failed while this step ran (its interrupt is on the way)
            return
        now = env.now
        self.steps += 1
        # a decode-only request's first step makes its first token: time to first token,
        # not a decode token's, so the breakdown (per decode token) leaves it out
        if halves is None:
            self._account(now - t0, B - self._fresh, dcost, rt_parts, len(pieces))
        else:
            for i, (b, cost, parts) in enumerate(halves):
                self._account(now - t0, b, cost, parts, len(pieces) if i == 0 else 0,
                              stalled=bool(pieces))
        made = 0
        if B:
            made += B
            if self._fresh:
                fresh = self.R[:, DONE] == 0
                log.first_ns[self.R[fresh, ID]] = now
                self._fresh = 0
            self.R[:, DONE] += 1
            self._ctx_sum += B
            self._to_next_finish -= 1
        done_rows = self._advance_prefill(pieces, now)
        made += len(done_rows)
        if made:
            self.tokens.add(now, made)
        if tl is not None:
            tl.end(self.index, now, {"batch": B, "tokens": made, "context_tokens": uctx,
                                     "shared_tokens": sctx, "prefill_tokens": ptok,
                                     "prompts": len(pieces)})
        if len(done_rows):
            self._join(done_rows)
        if len(self.R) and self._to_next_finish <= 0:
            self._retire(now)

    def _round_trips(self, reps: int, rounds: int, B: int, pre: int, overlap: int, post: int,
                     step: int, pshared: int, pq: int, pp: int, rt_parts: list[float]):  # noqa: ANN202
        """The step's ``reps`` round trips (no faults): own work before each send, the
        overlapped work while it is in flight, the wait for the replies, the work after.

        NOTE: for performance: one timeout covers a round trip's post work and the next
        one's pre work (back to back, nothing is sent between them) and is folded into the
        round trip's event, and the replies are collected by a ``RoundTrip`` that fires
        once, when the node's overlapped work is done, the last partials are back and the
        work after them is done: 1 event a round trip instead of 4 plus one per reply."""
        self._compute_free_at = self.env.now
        loads = self.route(self.R[:, CORPUS], B, reps) if B else [()] * reps
        yield from self._chain(reps, rounds, loads, pre, overlap, post, step, pshared, pq, pp,
                               rt_parts, alone=True)

    def _ping_pong(self, reps: int, rounds: int, dcost: DecodeCost, xpre: int, xoverlap: int,
                   xpost: int, pshared: int, pq: int, pp: int):  # noqa: ANN202
        """The step as two micro-batches (``batching.microbatches: 2``): the decode batch's
        first and second halves each run their own chain of round trips, and the node's
        compute serves the two chains' work first come, first served, so one half's own
        work runs while the other's round trip is in flight. The prefill chunk (``x*``:
        its unique-side ns per layer, ``pshared``: its corpus job) rides with the first
        half. Each half is priced at its own size and mean contexts. Returns each half's
        (decode tokens, cost, exposed round trip parts) for the breakdown."""
        env = self.env
        R = self.R
        B = len(R)
        cut = (B + 1) // 2
        halves = []
        self.link_busy_ns -= dcost.link_ns  # priced again, per half
        for rows in (R[:cut], R[cut:]):
            b = len(rows)
            ctx = int(rows[:, UCTX].sum() + rows[:, DONE].sum())
            sctx = int(rows[:, SCTX].sum())
            cost = self.pricer.decode(b, bucket((2 * ctx + b) // (2 * b)),
                                      bucket((2 * sctx + b) // (2 * b)) if sctx else 0)
            self.link_busy_ns += cost.link_ns
            fresh = int((rows[:, DONE] == 0).sum()) if self._fresh else 0
            halves.append((b, cost, [0.0, 0.0, 0.0], rows[:, CORPUS], fresh))
        self._compute_free_at = env.now
        chains = []
        for i, (b, cost, parts, corpus, _fresh) in enumerate(halves):
            first = i == 0
            chains.append(env.process(self._chain(
                reps, rounds, self.route(corpus, b, reps),
                cost.pre_ns + (xpre if first else 0),
                cost.overlap_ns + (xoverlap if first else 0),
                cost.post_ns + (xpost if first else 0), cost.step_ns,
                pshared if first else 0, pq, pp, parts)))
        yield env.all_of(chains)
        # each half's decode tokens (rows making their first token excluded, as in _account)
        return [(b - fresh, cost, parts) for b, cost, parts, _, fresh in halves]

    def _compute(self, ns: int) -> int:
        """Queue ``ns`` of work on the node's compute (first come, first served, shared by
        the micro-batches); returns when it is done."""
        start = max(self.env.now, self._compute_free_at)
        end = start + ns
        self._compute_free_at = end
        self.busy_ns += ns
        self.busy_until = end
        return end

    def _chain(self, reps: int, rounds: int, loads: list, pre: int, overlap: int, post: int,
               step: int, pshared: int, pq: int, pp: int, rt_parts: list[float],
               alone: bool = False):  # noqa: ANN202
        """One chain of round trips (the whole batch, or one micro-batch), its own work
        queued on the node's compute (first come, first served: with one chain, the node
        simply works). ``alone``: the step's only chain: each round trip's wait goes on
        the node's timeline track, and the work after a round trip (its post work and the
        next one's pre work, or the step's last work) is folded into the round trip's
        event (``RoundTrip.then_ns``)."""
        env = self.env
        tl = self.tl if alone else None
        fold = alone and self.fold_round_trips
        after = post * rounds  # own work due once a round trip's partials are back
        last = reps - 1
        for layer in range(reps):
            if not layer or not fold:  # folded: it was the last round trip's
                t = (after if layer else 0) + pre * rounds
                if t:
                    yield env.timeout(self._compute(t) - env.now)
            t_sent = env.now
            t_own = self._compute(overlap * rounds) if overlap else t_sent
            # NOTE: for performance: alone, the node starts its work after the round trip
            # the moment the last partials are back (nothing else is queued on its compute
            # and nothing can come between), so the round trip's event fires when that work
            # is done: one event a round trip instead of two
            then = (after + (pre * rounds if layer < last else step)) if fold else 0
            rt = RoundTrip(env, Event(env), 0, t_own, then)
            msgs = self._send(loads[layer], layer, rounds, pshared, pq, pp, rt)
            sent = rt.left
            if tl is not None and sent:  # the node waits once its own work is done
                tl.round_trip_begin(self.index, t_own, sent)
            if not sent:  # nothing was sent: only the overlapped work
                rt.left = 1
                rt.arrived(t_own)
            if fold:
                self._folded, self._folded_sent = rt, sent
            yield rt.event
            back = rt.latest  # when the partials were back (the work folded in came after)
            if then:
                self._compute_free_at = self.busy_until = env.now
                self.busy_ns += then
            self._folded = None
            if tl is not None and sent:
                tl.round_trip_end(self.index, back)
            if msgs:
                self._round_trip_parts(msgs, back - t_own, t_sent, rt_parts)
        if not fold:
            t = after + step
            if t:
                yield env.timeout(self._compute(t) - env.now)

    def busy_within(self, t_end: int) -> int:
        """Busy ns inside [0, t_end], counting the part by then of work folded into a round
        trip whose partials are back (``_chain``: it is booked when it is done)."""
        busy = super().busy_within(t_end)
        rt = self._folded
        if rt is not None and not rt.left and rt.then_ns and t_end > rt.latest:
            busy += min(t_end, rt.latest + rt.then_ns) - rt.latest
        return busy

    def close_round_trip(self, t_end: int) -> None:
        """At the end of a run: a round trip whose partials were back by ``t_end`` (the
        work folded into it under way) ends on the timeline when they came back."""
        rt = self._folded
        if self.tl is not None and rt is not None and self._folded_sent and not rt.left \
                and rt.latest <= t_end:
            self.tl.round_trip_end(self.index, rt.latest)

    def _round_trips_faulty(self, reps: int, rounds: int, B: int, pre: int, overlap: int,
                            post: int, step: int, pshared: int, pq: int, pp: int,
                            rt_parts: list[float], pieces: list[tuple[int, int, int]]):  # noqa: ANN202
        """``_round_trips`` with faults: every reply is its own event (a lost one fires
        with ``LOST``), and requests whose queries were lost leave the node afterwards.
        Returns the step's prefill pieces that still stand."""
        env = self.env
        tl = self.tl
        all_msgs: list[QueryMessage] = []
        all_replies: list[Event] = []
        loads = self.route(self.R[:, CORPUS], B, reps) if B else None
        for layer in range(reps):
            if pre:
                self._busy(pre * rounds)
                yield env.timeout(pre * rounds)
            msgs, replies = self._send_faulty(loads[layer] if B else (), layer, rounds,
                                              pshared, pq, pp)
            all_msgs += msgs
            all_replies += replies
            t_sent = env.now
            if overlap:
                self._busy(overlap * rounds)
                yield env.timeout(overlap * rounds)
            t_own = env.now
            if tl is not None and replies:  # the node now waits: its own work is done
                tl.round_trip_begin(self.index, t_own, len(replies))
            # a reply sent but not yet delivered is triggered already: wait until processed
            pending = [r for r in replies if r.callbacks is not None]
            if pending:
                yield pending[0] if len(pending) == 1 else env.all_of(pending)
            if tl is not None and replies:
                tl.round_trip_end(self.index, env.now)
            if msgs:
                self._round_trip_parts(msgs, env.now - t_own, t_sent, rt_parts)
            if post:
                self._busy(post * rounds)
                yield env.timeout(post * rounds)
        if step:
            self._busy(step)
            yield env.timeout(step)
        return self._strand_lost(all_msgs, all_replies, pieces)

    def _advance_prefill(self, pieces: list[tuple[int, int, int]], now: int) -> np.ndarray:
        """Book the step's prefill pieces; prompts that finished get their first token and
        are returned as decode rows."""
        if not pieces:
            return self.R[:0]
        self.prefill_chunks += 1
        finished: list[int] = []
        for rid, t, _prior in pieces:
            entry = self.prefilling[0] if self.prefilling[0][0] == rid else None
            if entry is None:  # pieces are taken FIFO from the head
                raise AssertionError("prefill pieces out of order")
            entry[1] -= t
            entry[2] += t
            self.prefill_tokens_done += t
            if entry[1] <= 0:
                self.prefilling.popleft()
                finished.append(rid)
            else:
                break  # a partial piece is always the last one
        if not finished:
            return self.R[:0]
        ids = np.asarray(finished, dtype=I64)
        log = self.log
        if self.faults is None:
            log.first_ns[ids] = now
            return log.rows[ids]
        resumed = log.resume_done[ids]
        rows = log.rows[ids].copy()
        rows[:, DONE] += resumed  # a re-prefilled request decodes on from where it was
        fresh = ids[log.first_ns[ids] < 0]
        log.first_ns[fresh] = now
        log.redo_prefill[ids] = -1
        log.resume_done[ids] = 0
        return rows

    def _send(self, loads: Sequence[NodeLoad], layer: int, rounds: int, prefill_ns: int,
              qbytes: int, pbytes: int, rt: RoundTrip) -> list[QueryMessage]:
        """This round trip's work for the shared nodes: the decode batch's routed queries
        (``loads``: per shared node; empty: no decode) and the prefill chunk's corpus
        attention (a job on every shared node); their replies report to ``rt``
        (``rt.left``: how many are expected)."""
        env = self.env
        fabric = self.fabric
        now = env.now
        msgs: list[QueryMessage] = []
        if loads:
            qb = self.pricer.query_bytes
            for node, load in zip(self.shared_nodes, loads):
                reqs = load.requests
                if reqs <= 0:
                    continue
                msg = QueryMessage(self.host, layer, load.counts, reqs, rounds, rt, now,
                                   load.max_count, load.pairs)
                msgs.append(msg)
                t = fabric.reserve(self.host, node.host, qb(reqs) * rounds, rounds=rounds)
                msg.seq = fabric.issued
                if not node.deliver_later(t, msg):  # it is not busy then: a delivery event
                    ev = Event(env)
                    ev.callbacks.append(lambda _e, n=node, m=msg: n.receive(m))
                    self.engine.fire_after(ev, t - now)
        n = len(msgs)
        if prefill_ns:
            for node in self.shared_nodes:
                job = PrefillJob(self.host, prefill_ns * rounds, pbytes * rounds, rounds,
                                 rt, now)
                n += 1
                t = fabric.reserve(self.host, node.host, qbytes * rounds, rounds=rounds)
                job.seq = fabric.issued
                if not node.deliver_later(t, job):  # it is not busy then: a delivery event
                    ev = Event(env)
                    ev.callbacks.append(lambda _e, n=node, j=job: n.receive_job(j))
                    self.engine.fire_after(ev, t - now)
        rt.left = n
        return msgs

    def _send_faulty(self, loads: Sequence[NodeLoad], layer: int, rounds: int, prefill_ns: int,
                     qbytes: int, pbytes: int) -> tuple[list[QueryMessage], list[Event]]:
        """``_send`` through the fault manager: each message goes to the live copy of its
        shared node's chunks, or waits for one."""
        env = self.env
        now = env.now
        faults = self.faults
        msgs: list[QueryMessage] = []
        replies: list[Event] = []
        if loads:
            for node, load in zip(self.shared_nodes, loads):
                if load.requests <= 0:
                    continue
                msg = QueryMessage(self.host, layer, load.counts, load.requests, rounds,
                                   Event(env), now, load.max_count, load.pairs)
                msgs.append(msg)
                replies.append(msg.reply)
                faults.send_query(self, node.index, msg)
        if prefill_ns:
            for node in self.shared_nodes:
                job = PrefillJob(self.host, prefill_ns * rounds, pbytes * rounds, rounds,
                                 Event(env), now, query_bytes=qbytes * rounds)
                replies.append(job.reply)
                self._jobs_sent.append(job)
                faults.send_job(self, node.index, job)
        return msgs, replies

    def _strand_lost(self, msgs: list[QueryMessage], replies: list[Event],
                     pieces: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """After a round trip with faults: requests whose queries were lost (their shared
        node's chunks had no live copy in time) leave this node, to be retried or failed.
        Decode messages: the first ``requests`` rows of the batch; a prefill job: the
        step's prompts. Returns the step's prefill pieces that still stand."""
        lost_msgs = [m for m in msgs if m.lost or m.reply._value is LOST]
        lost_jobs = [j for j in self._jobs_sent if j.lost or j.reply._value is LOST]
        self._jobs_sent = []
        if not lost_msgs and not lost_jobs:
            self._jobs_sent = []
            return pieces
        rids: set[int] = set()
        reason = "shared_node_timeout"
        if lost_msgs:
            n = min(len(self.R), max(m.requests for m in lost_msgs))
            rids.update(int(r) for r in self.R[:n, ID])
            reason = lost_msgs[0].lost or "no_route"
        if lost_jobs:
            rids.update(rid for rid, _t, _p in pieces)
            pieces = []
            if not lost_msgs:
                reason = lost_jobs[0].lost or "no_route"
        stranded = self._remove(rids)
        self.faults.strand(stranded, reason)
        return pieces

    @staticmethod
    def _round_trip_parts(msgs: list[QueryMessage], waited: int, t_sent: int,
                          parts: list[float]) -> None:
        """Add the exposed part of one round trip (``waited``: time the node waited for
        partials after its own overlapped work) to ``parts`` as shared / queueing / fabric,
        in the proportions of the decode batch's critical message."""
        crit = max(msgs, key=lambda m: m.t_back)
        rt = crit.t_back - crit.t_sent
        if rt <= 0 or waited <= 0:
            return
        exposed = min(waited, crit.t_back - t_sent)
        wait = crit.t_done - crit.t_arrive - crit.compute_ns
        k = exposed / rt
        parts[0] += crit.compute_ns * k
        parts[1] += wait * k
        parts[2] += (rt - crit.compute_ns - wait) * k

    def _account(self, step_ns: int, B: int, dcost: DecodeCost | None,
                 rt_parts: list[float], prompts: int, stalled: bool | None = None) -> None:
        """Split the step's time over breakdown phases, per decoding request; the parts sum
        to ``step_ns`` x B (what no phase explains is time the step spent on the prefill
        chunk, or waiting for the other work of the round trip, or for the other
        micro-batch). Prompts in the step spend it in ``prefill``; ``stalled`` (default:
        whether it had prompts) books the unexplained part as ``prefill_stall``."""
        bd = self.breakdown
        if prompts:
            bd[_PREFILL] += step_ns * prompts
        if not B:
            return
        own = dcost.phase_ns  # type: ignore[union-attr]
        bd += own * B
        bd[_SHARED] += rt_parts[0] * B
        bd[_QUEUE] += rt_parts[1] * B
        bd[_FABRIC] += rt_parts[2] * B
        rest = step_ns - float(own.sum()) - sum(rt_parts)
        stall = bool(prompts) if stalled is None else stalled
        bd[_STALL if stall else _QUEUE] += rest * B

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
            "steps": self.steps, "prefill_chunks": self.prefill_chunks,
            "prefill_tokens": self.prefill_tokens_done,
            "max_running": self.max_batch_seen, "peak_kv_gib": self.max_kv_used / 2**30,
            "requests": int((self.log.node == self.index).sum()),
            "node_link_busy_s": self.link_busy_ns / 1e9})

    def flush_generated(self) -> None:
        """Write the running requests' token counts into the log (at the end of a run)."""
        self.log.generated[self.R[:, ID]] = self.R[:, DONE]


__all__ = ["UniqueNode"]
