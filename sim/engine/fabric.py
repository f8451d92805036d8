"""The interconnect between nodes: a networkx topology whose directed links are contended.

Model. Every directed link is a capacity-1 FIFO resource. A message holds every link of
its path at once for its serialisation time ``bytes / bandwidth`` (cut-through: the head
is already downstream while the tail leaves), then arrives one latency per hop later:
``latency_ns`` for each link plus ``switch_latency_ns`` for each vertex it passes
through (a switch, or a forwarding host on a ring), plus ``message_ns`` once: the
library's per-message cost of a link preset (its ``fixed_ns``), which delays the message
but does not hold the links.

Implementation. Links are acquired atomically, in the order messages are issued, by
*reservation*: a message starts serialising at the earliest time every link of its path
is free (``max(now, free_at[l])``) and pushes each link's ``free_at`` to its end. This is
the schedule that capacity-1 FIFO resources acquired together in one global order give
(no backfilling into idle gaps, no deadlock), computed in closed form when the message is
issued, so a message in flight costs one scheduled event (its delivery) instead of the
request/hold/release events of one ``simpy.Resource`` per link. Links' busy time, bytes
and queue length (messages reserved but not yet serialising) are recorded per link.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from math import ceil
from typing import Literal

import networkx as nx
from simpy.events import NORMAL, Event

from sim.engine.kernel import LOST, Engine, ceil_ns

Topology = Literal["switch", "ring", "fat_tree"]
TOPOLOGIES: tuple[str, ...] = ("switch", "ring", "fat_tree")
_AHEAD_PRUNE = 64  # a path keeps up to this many past reservations before dropping them
_SER_CACHE_MAX = 1 << 16  # message sizes whose serialisation time is kept


class PathAccount:
    """What the messages over one path (a set of links) reserved: serialisation ns, bytes
    and the (start, end) of its reservations not known to be over (every link of a path
    holds a message for the same span, so a path's books stand for each of its links)."""

    __slots__ = ("busy_ns", "nbytes", "spans")

    def __init__(self) -> None:
        self.busy_ns = 0
        self.nbytes = 0
        self.spans: deque[tuple[int, int]] = deque()


@dataclass(frozen=True)
class Route:
    """A path's directed links (indices into the fabric's link table), its latency and
    the account of the path's reservations."""

    links: tuple[int, ...]
    hops: int
    latency_ns: int
    account: PathAccount = field(compare=False, repr=False, default_factory=PathAccount)


def build_topology(
    kind: str, hosts: list[str], *, hosts_per_leaf: int = 8, spines: int | None = None
) -> nx.DiGraph:
    """A directed graph of ``hosts`` and switches; every cable is two directed links.

    ``switch``: a star, every host one cable to switch ``sw``. ``ring``: hosts in a ring
    in the given order. ``fat_tree``: two levels; leaves of ``hosts_per_leaf`` hosts in
    order, every leaf cabled to every spine (``spines`` defaults to ``hosts_per_leaf``: a
    non-blocking leaf-spine).
    """
    if kind not in TOPOLOGIES:
        raise ValueError(
            f"cluster.fabric.topology: expected one of {', '.join(TOPOLOGIES)}, got {kind!r}")
    if len(set(hosts)) != len(hosts):
        raise ValueError("fabric: host names must be distinct")
    g = nx.DiGraph()
    for h in hosts:
        g.add_node(h, kind="host")

    def cable(a: str, b: str) -> None:
        g.add_edge(a, b)
        g.add_edge(b, a)

    if kind == "switch":
        g.add_node("sw", kind="switch")
        for h in hosts:
            cable(h, "sw")
    elif kind == "ring":
        n = len(hosts)
        for i in range(n if n > 2 else n - 1):
            cable(hosts[i], hosts[(i + 1) % n])
    else:
        if hosts_per_leaf < 1:
            raise ValueError(f"cluster.fabric.hosts_per_leaf: expected >= 1, got {hosts_per_leaf}")
        n_spines = spines if spines is not None else hosts_per_leaf
        if n_spines < 1:
            raise ValueError(f"cluster.fabric.spines: expected >= 1, got {n_spines}")
        n_leaves = -(-len(hosts) // hosts_per_leaf)
        for s in range(n_spines):
            g.add_node(f"spine{s}", kind="switch")
        for leaf in range(n_leaves):
            name = f"leaf{leaf}"
            g.add_node(name, kind="switch")
            for s in range(n_spines):
                cable(name, f"spine{s}")
            for h in hosts[leaf * hosts_per_leaf:(leaf + 1) * hosts_per_leaf]:
                cable(h, name)
    g.graph["kind"] = kind
    g.graph["spines"] = spines if spines is not None else hosts_per_leaf
    return g


def _ecmp_path(g: nx.DiGraph, src: str, dst: str,
               down: frozenset[tuple[str, str]] = frozenset()) -> list[str] | None:
    """Shortest path; in a fat tree, the spine is chosen by hashing (src, dst) (ECMP) over
    the spines whose links of the path are up. ``down``: failed directed links (a path
    avoids them; None: no path is left)."""
    if down:
        live = nx.restricted_view(g, [], list(down))
        if g.graph.get("kind") == "fat_tree":
            leaf_a = next(v for v in g.successors(src))
            leaf_b = next(v for v in g.successors(dst))
            if (src, leaf_a) in down or (leaf_b, dst) in down:
                return None
            if leaf_a == leaf_b:
                return [src, leaf_a, dst]
            spines = sorted((v for v in g.successors(leaf_a) if v.startswith("spine")
                             and (leaf_a, v) not in down and (v, leaf_b) not in down),
                            key=lambda s: int(s[5:]))
            if not spines:
                try:
                    return nx.shortest_path(live, src, dst)
                except nx.NetworkXNoPath:
                    return None
            h = zlib.crc32(f"{src}->{dst}".encode())
            return [src, leaf_a, spines[h % len(spines)], leaf_b, dst]
        try:
            return nx.shortest_path(live, src, dst)
        except nx.NetworkXNoPath:
            return None
    if g.graph.get("kind") != "fat_tree":
        return nx.shortest_path(g, src, dst)
    leaf_a = next(v for v in g.successors(src))
    leaf_b = next(v for v in g.successors(dst))
    if leaf_a == leaf_b:
        return [src, leaf_a, dst]
    spines = sorted((v for v in g.successors(leaf_a) if v.startswith("spine")),
                    key=lambda s: int(s[5:]))
    h = zlib.crc32(f"{src}->{dst}".encode())
    return [src, leaf_a, spines[h % len(spines)], leaf_b, dst]


class _Delivered:
    """Delivery callback: counts the bytes as received (a slotted object, not a closure)."""

    __slots__ = ("dst", "nbytes", "received")

    def __init__(self, received: list[int], dst: int, nbytes: int) -> None:
        self.received, self.dst, self.nbytes = received, dst, nbytes

    def __call__(self, _event: Event) -> None:
        self.received[self.dst] += self.nbytes


class Fabric:
    """Contended directed links over a topology; messages reserve their whole path."""

    def __init__(
        self,
        engine: Engine,
        graph: nx.DiGraph,
        *,
        bandwidth_GBps: float,
        latency_ns: float,
        switch_latency_ns: float = 0.0,
        message_ns: float = 0.0,
    ) -> None:
        if bandwidth_GBps <= 0:
            raise ValueError(
                f"cluster.fabric.link.bandwidth_GBps: expected > 0, got {bandwidth_GBps}")
        if latency_ns < 0 or switch_latency_ns < 0 or message_ns < 0:
            raise ValueError("cluster.fabric: latencies must be >= 0")
        self.engine = engine
        self._env = engine.env
        self.graph = graph
        self.bytes_per_ns = float(bandwidth_GBps)  # 1 GB/s = 1 B/ns
        self.link_latency_ns = float(latency_ns)
        self.switch_latency_ns = float(switch_latency_ns)
        # the library's cost per message (a link preset's fixed_ns): paid by every message
        # (each round of a folded one) on top of the path latency, not holding the links
        self.message_ns = float(message_ns)
        self.hosts = [n for n, d in graph.nodes(data=True) if d.get("kind") == "host"]
        self.host_index = {h: i for i, h in enumerate(self.hosts)}
        edges = sorted(graph.edges())  # a global order of links (sorted names)
        self.link_names = [f"link:{a}->{b}" for a, b in edges]
        self._edge_index = {e: i for i, e in enumerate(edges)}
        n = len(edges)
        self.free_at = [0] * n
        # each link's paths' accounts (a link's queue is read from its paths' reservations)
        self._link_paths: list[list[PathAccount]] = [[] for _ in range(n)]
        # NOTE: for performance: reservations are booked once per path, not per link
        # (``busy_ns``, ``link_bytes`` and ``busy_within`` add a link's paths up); a path
        # keeps its account when a fault changes the routes
        self._paths: dict[tuple[int, ...], PathAccount] = {}
        self.bytes_sent = [0] * len(self.hosts)
        self.bytes_received = [0] * len(self.hosts)
        self._routes: dict[tuple[int, int], Route] = {}
        self._ser: dict[int, int] = {}  # message bytes -> serialisation ns (full bandwidth)
        # faults: failed directed links (edge -> when it recovers, None: never), bandwidth
        # fraction per degraded link, messages waiting for a route
        self.down: dict[tuple[str, str], int | None] = {}
        self.scale: dict[int, float] = {}
        self._stalled: list[list] = []
        self.issued = 0  # messages issued so far (their send order)
        # reserved messages (no delivery event) whose bytes are not yet counted received
        self._unheard: list[tuple[int, int, int]] = []
        self.faults = None  # the fault manager, when the run has faults
        self.tl = None  # the timeline recorder (sim.engine.timeline), when one is attached

    # -- routes ---------------------------------------------------------------------------
    def route(self, src: int, dst: int) -> Route:
        """The (cached) route between two hosts, by host index."""
        key = (src, dst)
        r = self._routes.get(key)
        if r is None:
            path = _ecmp_path(self.graph, self.hosts[src], self.hosts[dst],
                              frozenset(self.down))
            if path is None:
                return None  # type: ignore[return-value]
            links = tuple(sorted(self._edge_index[(a, b)] for a, b in zip(path, path[1:])))
            hops = len(path) - 1
            lat = ceil_ns(hops * self.link_latency_ns + (hops - 1) * self.switch_latency_ns
                          + self.message_ns)
            account = self._paths.get(links)
            if account is None:
                account = self._paths[links] = PathAccount()
                for li in links:
                    self._link_paths[li].append(account)
            r = Route(links, hops, lat, account)
            self._routes[key] = r
        return r

    def serialization_ns(self, nbytes: int) -> int:
        return ceil_ns(nbytes / self.bytes_per_ns)

    def uncontended_ns(self, src: int, dst: int, nbytes: int, rounds: int = 1) -> int:
        """Delivery time of a message on an idle fabric (for closed-form checks)."""
        return self.serialization_ns(nbytes) + rounds * self.route(src, dst).latency_ns

    # -- sending --------------------------------------------------------------------------
    def send(
        self,
        src: int,
        dst: int,
        nbytes: int,
        *,
        rounds: int = 1,
        event: Event | None = None,
        on_delivery: Callable[[Event], None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> int:
        """Issue a message now; returns its delivery time (ns).

        ``rounds`` > 1 folds that many back-to-back messages of ``nbytes / rounds`` each
        into one (step granularity): the bytes serialise together and the path latency is
        paid ``rounds`` times. ``event`` (optional) is the event to fire on delivery;
        ``on_delivery`` (optional) is called with it then.
        """
        if src == dst:
            raise ValueError(f"fabric: message from host {self.hosts[src]} to itself")
        r = self._routes.get((src, dst)) or self.route(src, dst)
        if r is None:  # faults: no live route now
            return self._stall(src, dst, nbytes, rounds, event, on_delivery, on_lost)
        env = self.engine.env
        now = env.now
        delivery = self._reserve(r, src, dst, nbytes, rounds, now)
        ev = event if event is not None else Event(env)
        ev.callbacks.insert(0, _Delivered(self.bytes_received, dst, nbytes))
        if on_delivery is not None:
            ev.callbacks.append(on_delivery)
        # NOTE: for performance: Engine.fire_after inlined (one scheduled event per message)
        ev._ok = True
        ev._value = None
        env.schedule(ev, NORMAL, delivery - now)
        return delivery

    def reserve(self, src: int, dst: int, nbytes: int, *, rounds: int = 1) -> int:
        """Issue a message now with no delivery event; returns its delivery time (ns).

        For a receiver that learns the time itself (a round trip collecting its replies);
        its bytes count as received once the clock passes the delivery time (``-1``: the
        fabric has no live route now: use ``send``, which waits for one)."""
        r = self._routes.get((src, dst)) or self.route(src, dst)
        if r is None:
            return -1
        now = self._env._now  # NOTE: for performance: SimPy's clock without its property
        delivery = self._reserve(r, src, dst, nbytes, rounds, now)
        unheard = self._unheard
        unheard.append((delivery, dst, nbytes))
        if len(unheard) > 4096:
            self._hear(now)
        return delivery

    def _reserve(self, r: Route, src: int, dst: int, nbytes: int, rounds: int, now: int) -> int:
        """Reserve the path's links for the message from ``now`` on; its delivery time."""
        links = r.links
        free_at = self.free_at
        start = now
        for li in links:
            if free_at[li] > start:
                start = free_at[li]
        if self.scale:
            bpn = self.bytes_per_ns * min(self.scale.get(li, 1.0) for li in links)
            ser = ceil(nbytes / bpn)
        else:
            # NOTE: for performance: the serialisation time of a message size is cached
            ser = self._ser.get(nbytes)
            if ser is None:
                ser = self._ser[nbytes] = ceil(nbytes / self.bytes_per_ns)
                if len(self._ser) > _SER_CACHE_MAX:
                    self._ser.clear()
        end = start + ser
        for li in links:
            free_at[li] = end
        account = r.account
        account.busy_ns += ser
        account.nbytes += nbytes
        spans = account.spans
        # NOTE: for performance: reservations over by now are dropped in batches (the
        # accounting reads only those not over by the end)
        if len(spans) >= _AHEAD_PRUNE:
            while spans and spans[0][1] <= now:
                spans.popleft()
        spans.append((start, end))
        if self.tl is not None:
            self.tl.transfer(links, start, ser, nbytes, src, dst, rounds)
        self.bytes_sent[src] += nbytes
        self.issued += 1
        return end + rounds * r.latency_ns

    def _hear(self, t: int) -> None:
        """Count the bytes of reserved messages delivered by ``t`` as received."""
        left = []
        rec = self.bytes_received
        for item in self._unheard:
            if item[0] <= t:
                rec[item[1]] += item[2]
            else:
                left.append(item)
        self._unheard = left

    # -- faults ---------------------------------------------------------------------------
    def cable(self, name: str) -> tuple[str, str]:
        """The cable 'a-b' (either order) as a directed edge; raises naming the cables."""
        a, _, b = name.partition("-")
        if self.graph.has_edge(a, b):
            return (a, b)
        cables = sorted({"-".join(sorted(e)) for e in self.graph.edges()})
        shown = ", ".join(cables[:12]) + (", ..." if len(cables) > 12 else "")
        raise ValueError(f"faults: target {name!r} is no cable of the fabric; cables: {shown}")

    def fail_cable(self, name: str, recovers_ns: int | None) -> None:
        a, b = self.cable(name)
        self.down[(a, b)] = self.down[(b, a)] = recovers_ns
        self._routes.clear()
        if recovers_ns is None:  # waiting messages that can never have a route are lost
            down = self._permanent_down()
            for item in self._stalled:
                if not item[-1] and _ecmp_path(self.graph, self.hosts[item[0]],
                                               self.hosts[item[1]], down) is None:
                    self._lose(item)
            self._stalled = [item for item in self._stalled if not item[-1]]

    def recover_cable(self, name: str) -> None:
        a, b = self.cable(name)
        self.down.pop((a, b), None)
        self.down.pop((b, a), None)
        self._routes.clear()
        stalled, self._stalled = self._stalled, []
        for item in stalled:
            if not item[-1]:  # not timed out or lost meanwhile
                item[-1] = True
                self.send(item[0], item[1], item[2], rounds=item[3], event=item[4],
                          on_delivery=item[5], on_lost=item[6])

    def degrade(self, name: str, fraction: float) -> None:
        a, b = self.cable(name)
        for e in ((a, b), (b, a)):
            li = self._edge_index[e]
            if fraction >= 1.0:
                self.scale.pop(li, None)
            else:
                self.scale[li] = fraction

    def _permanent_down(self) -> frozenset[tuple[str, str]]:
        return frozenset(e for e, t in self.down.items() if t is None)

    def cut_off_for_good(self, host: int) -> bool:
        """Whether ``host`` can never again reach any other host (cut off for good)."""
        down = self._permanent_down()
        if not down:
            return False
        name = self.hosts[host]
        return all(_ecmp_path(self.graph, name, other, down) is None
                   for other in self.hosts if other != name)

    def _stall(self, src: int, dst: int, nbytes: int, rounds: int, event: Event | None,
               on_delivery: Callable[[Event], None] | None,
               on_lost: Callable[[], None] | None) -> int:
        """A message with no live route: it waits for one, times out, or (no route can come
        back) is lost at once. Its bytes count when it is really sent."""
        item = [src, dst, nbytes, rounds, event, on_delivery, on_lost, False]
        faults = self.faults
        timeout = faults.plan.timeout_ns if faults is not None else None
        permanent = _ecmp_path(self.graph, self.hosts[src], self.hosts[dst],
                               self._permanent_down()) is None
        if permanent:
            self._lose(item)
            return -1
        self._stalled.append(item)
        if timeout is not None:
            self.engine.call_after(timeout, self._lose, item)
        return -1

    def _lose(self, item: list) -> None:
        if item[-1]:
            return
        item[-1] = True
        on_lost, event = item[6], item[4]
        if on_lost is not None:
            on_lost()
        elif event is not None and not event.triggered:
            event.succeed(LOST)

    def queue_length(self, li: int) -> int:
        """Messages waiting to start serialising on link ``li`` now.

        A path's reservations start in order (its links' free times only grow) and those
        dropped are over, so the waiting ones are each path's tail that starts after now:
        no event or queue of its own is needed."""
        now = self._env._now
        waiting = 0
        for account in self._link_paths[li]:
            for start, _end in reversed(account.spans):
                if start <= now:
                    break
                waiting += 1
        return waiting

    # -- accounting -----------------------------------------------------------------------
    def busy_within(self, t_end: int) -> list[int]:
        """Each link's busy ns inside [0, t_end]: everything reserved, less the parts of
        the reservations not over by then that lie past ``t_end`` (a path's reservation can
        start after a gap on one of its links, so the tail is summed, not assumed solid)."""
        out = [0] * len(self.link_names)
        for links, account in self._paths.items():
            past = 0
            for s, e in account.spans:
                if e > t_end:
                    past += e - max(s, t_end)
            for li in links:
                out[li] += account.busy_ns - past
        return out

    @property
    def busy_ns(self) -> list[int]:
        """Each link's reserved serialisation ns so far (reservations not yet over too)."""
        return self._per_link(lambda account: account.busy_ns)

    @property
    def link_bytes(self) -> list[int]:
        """Bytes reserved on each link so far."""
        return self._per_link(lambda account: account.nbytes)

    def _per_link(self, of_path: Callable[[PathAccount], int]) -> list[int]:
        """A path figure summed per link over the paths through it."""
        out = [0] * len(self.link_names)
        for links, account in self._paths.items():
            value = of_path(account)
            for li in links:
                out[li] += value
        return out

    def in_flight_bytes(self) -> int:
        self._hear(self.engine.env.now)
        return sum(self.bytes_sent) - sum(self.bytes_received)

    def stats(self, t_end: int) -> FabricStats:
        """The fabric's part of the summary at ``t_end``: each link's busy ns, and bytes."""
        self._hear(t_end)
        return FabricStats(dict(zip(self.link_names, self.busy_within(t_end))), {
            "sent": dict(zip(self.hosts, self.bytes_sent)),
            "received": dict(zip(self.hosts, self.bytes_received)),
            "total_sent": sum(self.bytes_sent),
            "total_received": sum(self.bytes_received),
            "in_flight_at_end": self.in_flight_bytes(),
            "per_link": dict(zip(self.link_names, self.link_bytes)),
        }, conserved=sum(self.bytes_sent) == sum(self.bytes_received) + self.in_flight_bytes(),
            in_flight=self.in_flight_bytes())


@dataclass(frozen=True)
class FabricStats:
    """Busy ns per link, the bytes record, and the conservation check's inputs."""

    link_busy_ns: dict[str, int]
    bytes: dict[str, object]
    conserved: bool
    in_flight: int


__all__ = ["TOPOLOGIES", "Fabric", "FabricStats", "Route", "build_topology"]
