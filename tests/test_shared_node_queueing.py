"""A shared node's queue and batching against queueing theory, driven directly: a small
harness builds one ``SharedNode`` (no fabric: partials "return" the moment a launch ends)
and feeds it single-query messages at Poisson times from a seeded stream, every message
selecting the node's one chunk in layer 0.

1. No batching (``max_batch: 1``): the node is a FIFO single server whose service is the
   price of one chunk at batch 1 (deterministic), so the mean wait before a launch is
   Pollaczek-Khinchine's M/D/1 ``Wq = rho D / (2 (1 - rho))``.
2. Batching (``max_batch`` unbounded, ``batching.window_us`` w): a launch takes every
   pending query. Derived here for a service of constant length D (a stub pricer: the
   real price grows with the batch, which is the cost model's business, not the queue's):
   let A be the time from a launch's start to the first arrival after it (Exp(lambda),
   memoryless). The next launch starts when the node is free AND that arrival has waited
   w: at ``max(D, A + w)``. So launch starts are a renewal process with cycle
   ``Y = max(D, A + w)``; a cycle's queries are the one at A plus Poisson(lambda Z) more,
   ``Z = Y - A = max(D - A, w)``, each waiting until the cycle ends. Hence

       mean batch      = 1 + lambda E[Z]                     (= lambda E[Y])
       mean wait (Wq)  = (E[Z] + lambda E[Z^2] / 2) / (1 + lambda E[Z])

   with, for c = D - w > 0 and e = exp(-lambda c),
       E[Z]   = D (1 - e) - I1 + w e,        I1 = (1 - e (1 + lambda c)) / lambda
       E[Z^2] = D^2 (1 - e) - 2 D I1 + I2 + w^2 e,
                                             I2 = 2 (1 - e (1 + lambda c + (lambda c)^2 / 2)) / lambda^2
   and Z = w when w >= D. At w = 0: mean batch = lambda D + exp(-lambda D).
   The same renewal rule holds launch by launch, exactly, for any arrival sequence
   (``test_launches_follow_the_renewal_rule_exactly``).

Statistics: each case is one seeded run (the first 1 % of messages dropped as warm-up) and
asserts the closed form within a fixed tolerance that is at least 3 standard errors of the
mean (SE by 20 batch means, asserted too); the SEs and the errors measured are in the
comments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from simpy.events import Event

from hw.specs import load_chip
from sim.engine.kernel import Engine
from sim.engine.nodes.messages import QueryMessage
from sim.engine.nodes.pricing import Pricer
from sim.engine.nodes.shared import SharedNode
from workloads.models import get_model
from workloads.systems import get_system

UNBOUNDED_BATCH = 1 << 20
BATCHES = 20  # batch means for the standard error


def real_pricer() -> Pricer:
    """MoSKA on Llama 3.1 8B fp8, one moska-shared node, 2048-token chunks."""
    return Pricer(get_model("llama-3.1-8b"), get_system("moska"), "fp8", load_chip("moska-unique"),
                  load_chip("moska-shared"), shared_nodes=1, keep_fraction=0.25, chunk_tokens=2048)


class ConstantPricer:
    """Every launch takes ``d_ns`` whatever its batch (deterministic, batch-independent)."""

    def __init__(self, d_ns: int) -> None:
        self.d_ns = d_ns

    def grouped(self, per_chunk, requests, pairs, biggest):
        return self.d_ns, sum(int(np.count_nonzero(a)) for a in per_chunk)

    def partial_bytes(self, requests: int) -> int:
        return 0


def service_ns(pricer) -> int:
    """The node's price of one launch of one query on one chunk."""
    return pricer.grouped([np.ones(1, np.int64)], 1, 1, 1)[0]


def drive(pricer, arrivals_ns: np.ndarray, *, max_batch: int, window_ns: int, seed: int = 0):
    """Feed one SharedNode single-query messages at ``arrivals_ns``; returns (messages, node)."""
    engine = Engine(seed)
    env = engine.env
    node = SharedNode(0, -1, engine, None, pricer, local_chunks=1, max_batch=max_batch,
                      window_ns=window_ns)
    msgs: list[QueryMessage] = []

    def source():
        for t in arrivals_ns.tolist():
            if t > env.now:
                yield env.timeout(t - env.now)
            msg = QueryMessage(0, 0, np.ones(1, np.int64), 1, 1, Event(env), env.now, 1, 1)
            msgs.append(msg)
            node.receive(msg)

    env.process(source())
    env.run()
    assert all(m.t_done >= 0 for m in msgs)
    return msgs, node


def poisson_times(rate_per_ns: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(np.cumsum(rng.exponential(1.0 / rate_per_ns, n))).astype(np.int64)


def measured(pricer, rate_per_ns: float, *, max_batch: int, window_ns: int, n: int, seed: int):
    """One seeded run of ``n`` messages, the first 1 % dropped as warm-up: (mean wait before
    launch, its standard error by 20 batch means, mean queries per launch, arrivals, waits)."""
    t = poisson_times(rate_per_ns, n, seed)
    msgs, node = drive(pricer, t, max_batch=max_batch, window_ns=window_ns)
    waits = np.array([m.t_first_launch - m.t_arrive for m in msgs])
    kept = waits[n // 100:]
    means = kept[: len(kept) // BATCHES * BATCHES].reshape(BATCHES, -1).mean(axis=1)
    se = means.std(ddof=1) / math.sqrt(BATCHES)
    return kept.mean(), se, node.launch_pairs / node.launches, t, waits


# ---------------------------------------------------------------- 1. M/D/1, no batching


@pytest.mark.parametrize("rho,n", [(0.5, 120_000), (0.7, 200_000)])
def test_unbatched_shared_node_is_md1(rho, n):
    """max_batch 1, every query on one chunk: one query per launch, FIFO, deterministic
    service D (the real pricer's price of one chunk at batch 1). Each query's wait is
    Lindley's recursion W_i = max(0, W_(i-1) + D - (t_i - t_(i-1))) to the nanosecond, and the
    mean wait is Pollaczek-Khinchine's rho D / (2 (1 - rho)) within 5 %.

    The 5 % is >= 3.9 standard errors: the sample mean of n Lindley waits has a relative SD
    of 1.05 % (rho 0.5, n 120k) and 1.27 % (rho 0.7, n 200k), measured over 200 seeds of
    the recursion in numpy (the waits here ARE the recursion's, asserted below); the batch-
    means SE of this run agrees. Measured error of these seeds: rho 0.5 -0.3 %, rho 0.7 +0.5 %."""
    pricer = real_pricer()
    D = service_ns(pricer)
    assert D > 10_000  # a chunk's KV streamed plus the launch: over ten microseconds
    expected = rho * D / (2 * (1 - rho))
    mean, se, batch, t, waits = measured(pricer, rho / D, max_batch=1, window_ns=0, n=n, seed=100)
    assert batch == 1.0
    x = np.concatenate([[0], np.cumsum(D - np.diff(t))])  # Lindley: W_i = X_i - min_(k<=i) X_k
    assert (waits == x - np.minimum.accumulate(x)).all()
    tol = 0.05 * expected
    assert tol >= 3 * se, (se, tol)  # the tolerance is statistically meaningful
    assert abs(mean - expected) <= tol, (mean, expected, se)


# ---------------------------------------------------------------- 2. take-all batching


def renewal_closed_form(lam: float, D: float, w: float) -> tuple[float, float]:
    """(mean wait before launch, mean queries per launch) of take-all batching with window w
    and constant service D, Poisson arrivals of rate lam (see the module docstring)."""
    c = D - w
    if c <= 0:
        ez, ez2 = w, w * w
    else:
        e = math.exp(-lam * c)
        i1 = (1 - e * (1 + lam * c)) / lam
        i2 = 2 * (1 - e * (1 + lam * c + (lam * c) ** 2 / 2)) / lam**2
        ez = D * (1 - e) - i1 + w * e
        ez2 = D * D * (1 - e) - 2 * D * i1 + i2 + w * w * e
    return (ez + lam * ez2 / 2) / (1 + lam * ez), 1 + lam * ez


def test_renewal_closed_form_at_window_zero():
    """w = 0: mean batch lambda D + exp(-lambda D) (a cycle is a busy period of e^(lambda D)
    services and an idle Exp(lambda)), mean wait (utilisation) x D / 2 (an arrival finding the
    node busy waits out the rest of one service, uniform over it)."""
    D = 50_000.0
    for x in (0.1, 0.5, 1.0, 3.0):
        lam = x / D
        wq, batch = renewal_closed_form(lam, D, 0.0)
        assert batch == pytest.approx(x + math.exp(-x), rel=1e-12)
        util = x * math.exp(x) / (1 + x * math.exp(x))
        assert wq == pytest.approx(util * D / 2, rel=1e-12)
    # light traffic: a query waits its own window; heavy: half a cycle of D
    assert renewal_closed_form(1e-12, D, 20_000.0)[0] == pytest.approx(20_000.0, rel=1e-6)
    assert renewal_closed_form(1e3 / D, D, 0.0)[0] == pytest.approx(D / 2, rel=1e-2)


@pytest.mark.parametrize("load,window_over_D", [(0.5, 0.0), (2.0, 0.0), (1.0, 0.5), (1.0, 2.0)])
def test_take_all_batching_matches_the_renewal_closed_form(load, window_over_D):
    """Unbounded max_batch, window w, constant service D: mean wait and mean batch as
    derived. ``load`` = lambda D (offered queries per service time; above 1 only batching
    keeps the node stable). Measured (50k messages each): SE of the mean wait 0.2-0.8 %
    (the 3 % tolerance is >= 3.7 SE), errors -0.5 % .. +0.6 %; mean batch within 0.5 %."""
    D = 50_000
    w = int(window_over_D * D)
    lam = load / D
    expected_wait, expected_batch = renewal_closed_form(lam, D, w)
    mean, se, batch, _, _ = measured(ConstantPricer(D), lam, max_batch=UNBOUNDED_BATCH,
                                     window_ns=w, n=50_000, seed=200)
    tol = 0.03 * expected_wait
    assert tol >= 3 * se, (se, tol)
    assert abs(mean - expected_wait) <= tol, (mean, expected_wait, se)
    assert batch == pytest.approx(expected_batch, rel=0.02)


@pytest.mark.parametrize("window_over_D", [0.0, 0.3, 1.7])
def test_launches_follow_the_renewal_rule_exactly(window_over_D):
    """For any arrival sequence (here a seeded Poisson one), launch n+1 starts at
    max(launch n start + D, first arrival after launch n start + w) and takes every query
    that arrived before it: to the nanosecond."""
    D = 40_000
    w = int(window_over_D * D)
    t = poisson_times(1.3 / D, 3000, 11)
    msgs, node = drive(ConstantPricer(D), t, max_batch=UNBOUNDED_BATCH, window_ns=w)
    launch = np.array([m.t_first_launch for m in msgs])
    starts = np.unique(launch)
    assert len(starts) == node.launches
    s = t[0] + w  # the first launch: the first query after waiting the window
    expected = []
    i = 0
    while i < len(t):
        expected.append(s)
        while i < len(t) and t[i] <= s:  # every query there by then goes in this launch
            i += 1
        if i < len(t):
            s = max(s + D, t[i] + w)
    assert starts.tolist() == expected
    # a query is launched at the first launch start at or after its arrival
    idx = np.searchsorted(starts, t, side="left")
    assert (launch == starts[idx]).all()


# ---------------------------------------------------------------- 3. a full chunk launches at once

@pytest.mark.parametrize("same_chunk", [True, False])
def test_a_chunk_reaching_max_batch_launches_before_the_window(same_chunk):
    """max_batch 4, a 1 ms window, an idle node: two messages of 2 queries arrive at t = 0
    and t = 10 us. On the same chunk that chunk holds 4 = max_batch queries at 10 us, so
    the launch starts then (the batching rule: a full chunk does not wait). On different
    chunks no chunk holds more than 2 (though the messages' maxima add up to 4), so the
    launch waits for the window: 1 ms after the first arrival."""
    D, window, t2 = 5_000, 1_000_000, 10_000
    engine = Engine(0)
    env = engine.env
    node = SharedNode(0, -1, engine, None, ConstantPricer(D), local_chunks=2, max_batch=4,
                      window_ns=window)
    first = np.array([2, 0], np.int64)
    second = first if same_chunk else np.array([0, 2], np.int64)
    msgs = [QueryMessage(0, 0, c.copy(), 2, 1, Event(env), 0, 2, 2) for c in (first, second)]

    def source():
        node.receive(msgs[0])
        yield env.timeout(t2)
        node.receive(msgs[1])

    env.process(source())
    env.run()
    start = t2 if same_chunk else window
    assert [m.t_first_launch for m in msgs] == [start, start]
    assert [m.t_done for m in msgs] == [start + D, start + D]
    assert node.launches == 1 and node.max_chunk_batch == (4 if same_chunk else 2)
