"""Which shared chunks a batch of queries routes to, counted per chunk and per shared node.

MoSKA's router keeps ``k`` of a corpus's ``N`` chunks per query. A message from a unique
node to a shared node carries, for each chunk that node holds (chunk ``c`` lives on node
``c % S``), how many of the batch's queries selected it.

Two ways to draw the counts:
- *exact* (small batches, ``n_queries <= exact_max_queries``): draw each query's k distinct
  chunks with the workload's ``ChunkRouter`` and ``bincount`` them;
- *binomial* (large batches): draw each chunk's count independently from
  ``Binomial(n_queries, p_c)``, ``p_c`` the chunk's inclusion probability (``k/N`` under
  uniform popularity; under Zipf, ``ChunkRouter.inclusion_probabilities``). Each chunk's
  marginal is right; what is lost is the weak negative correlation between chunks (the
  total is ``n*k`` only in mean, SD ``sqrt(sum p(1-p) n)``). Where every chunk's
  ``n p (1-p) >= 9`` the binomial is drawn as a rounded normal (same mean and variance). The number of requests a node
  serves is then taken as its expected value, ``n * P(query has >= 1 chunk there)``,
  capped by the node's query-chunk pairs.
Both agree in mean (tests/test_engine_routing.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import numpy as np

EXACT_MAX_QUERIES = 1  # exact per-query draws up to this batch (ChunkRouter costs ~50 us a query)
PROBE_QUERIES = 16384  # ChunkRouter draws used to estimate inclusion probabilities
PROBE_SEED = 0x0DE5  # fixed: probabilities do not depend on the run's seed
_LUT_SLICES = 4096  # slices of [0, 1) in the binomial lookup tables (a power of two)
NORMAL_MIN_VAR = 9.0  # binomials with n p (1-p) at least this are drawn as rounded normals


class SelectsChunks(Protocol):
    """The workload's router: ``select(n)`` -> int[n, k], k distinct chunk ids per row."""

    def select(self, n_queries: int) -> np.ndarray: ...


class NodeLoad(NamedTuple):
    """One shared node's share of a routed batch: per local chunk counts, and requests.

    NOTE: for performance: a NamedTuple (one is built per shared node per round trip;
    a frozen dataclass costs ~4x more to construct)."""

    counts: np.ndarray  # int64[chunks held by the node]: queries per local chunk
    requests: int  # distinct requests with at least one chunk on this node
    pairs: int  # counts.sum(): (query, chunk) pairs
    max_count: int  # counts.max()


class QueryRouter:
    """Counts a batch's routed (query, chunk) pairs per chunk, split over shared nodes."""

    def __init__(
        self,
        router: SelectsChunks,
        n_chunks: int,
        k: int,
        shared_nodes: int,
        rng: np.random.Generator,
        *,
        uniform: bool,
        offset: int = 0,
        exact_max_queries: int = EXACT_MAX_QUERIES,
    ) -> None:
        if not 1 <= k <= n_chunks:
            raise ValueError(f"routing: need 1 <= k <= chunks, got k={k}, chunks={n_chunks}")
        if shared_nodes < 1:
            raise ValueError("routing: need at least one shared node")
        self.router = router
        self.n_chunks = n_chunks
        self.k = k
        self.S = shared_nodes
        self.rng = rng
        self.uniform = uniform
        self.exact_max_queries = exact_max_queries
        # global chunk id = offset + local id; chunk g lives on node g % S at slot g // S
        g = offset + np.arange(n_chunks)
        self.node_of = g % shared_nodes
        self.by_node = [np.nonzero(self.node_of == s)[0] for s in range(shared_nodes)]
        self.slot_by_node = [g[idx] // shared_nodes for idx in self.by_node]
        self._regular = offset % shared_nodes == 0 and n_chunks % shared_nodes == 0
        self._pmin: float | None = None
        self._cdfs: dict[int, np.ndarray] = {}
        self._luts: dict[int, np.ndarray] = {}
        self._expect: dict[int, list[int]] = {}
        self._p: np.ndarray | None = None
        self._p_touch: np.ndarray | None = None
        self.exact_draws = 0
        self.binomial_draws = 0

    # -- the probabilities the binomial path needs (computed on first use) --------------
    def _probabilities(self) -> tuple[np.ndarray, np.ndarray]:
        """(inclusion probability per chunk, P(a query touches node s) per node)."""
        if self._p is None:
            N, k, S = self.n_chunks, self.k, self.S
            if self.uniform:
                p = np.full(N, k / N)
                held = np.bincount(self.node_of, minlength=S)
                # P(no chunk on s) = C(N - held_s, k) / C(N, k), as a running product
                touch = np.empty(S)
                for s in range(S):
                    j = np.arange(k)
                    miss = float(np.prod(np.clip((N - held[s] - j) / (N - j), 0.0, None)))
                    touch[s] = 1.0 - miss
            else:
                probe = self._probe_router()
                sel = probe.select(PROBE_QUERIES)
                if hasattr(self.router, "inclusion_probabilities"):
                    p = np.asarray(self.router.inclusion_probabilities(), dtype=float)
                else:
                    p = np.bincount(sel.ravel(), minlength=N) / PROBE_QUERIES
                p = p * (k / p.sum())  # keep the mean pairs per query exactly k
                hit = np.zeros((PROBE_QUERIES, S), dtype=bool)
                hit[np.arange(PROBE_QUERIES)[:, None], self.node_of[sel]] = True
                touch = hit.mean(axis=0)
            self._p, self._p_touch = np.clip(p, 0.0, 1.0), touch
        assert self._p_touch is not None
        return self._p, self._p_touch

    def _probe_router(self) -> SelectsChunks:
        """A router of the same corpus on its own fixed-seed stream, for estimating
        probabilities without consuming the run's routing draws."""
        spec = getattr(self.router, "spec", None)
        if spec is None:
            return self.router
        return type(self.router)(spec, np.random.default_rng(PROBE_SEED))  # type: ignore[call-arg]

    def _min_var_ok(self, n: int) -> bool:
        """Whether every chunk's binomial variance ``n p (1-p)`` is >= NORMAL_MIN_VAR."""
        if self._pmin is None:
            p = self._probabilities()[0]
            self._pmin = float(np.min(p * (1.0 - p)))
        return n * self._pmin >= NORMAL_MIN_VAR

    def _binomial_cdf(self, n: int, p: float) -> np.ndarray:
        """CDF of Binomial(n, p) at 0..n-1 (the last point, 1, is implied)."""
        cdf = self._cdfs.get(n)
        if cdf is None:
            j = np.arange(n + 1)
            logc = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                             for i in range(n + 1)])
            with np.errstate(divide="ignore"):
                pmf = np.exp(logc + j * np.log(p) + (n - j) * np.log1p(-p))
            cdf = np.cumsum(pmf)[:-1]
            self._cdfs[n] = cdf
        return cdf

    def _binomial_quantiles(self, n: int, p: float, u: np.ndarray) -> np.ndarray:
        """Binomial(n, p) draws from uniforms ``u`` by inverting the CDF (int64, ``u``'s
        shape): the number of CDF points <= u, as ``cdf.searchsorted(u, "right")``.

        NOTE: for performance: a lookup table over 4096 equal slices of [0, 1) answers every
        u whose slice holds no CDF point (u * 4096 is exact: a power of two); only the few
        u in a slice that holds one are searched (~8x faster than searching all of them,
        the same numbers)."""
        cdf = self._binomial_cdf(n, p)
        lut = self._luts.get(n)
        if lut is None:
            if n >= 2**15:  # past int16: search every u
                return cdf.searchsorted(u, side="right").astype(np.int64, copy=False)
            edges = np.arange(_LUT_SLICES + 1) / _LUT_SLICES
            lo = cdf.searchsorted(edges[:-1], side="right")
            hi = cdf.searchsorted(np.nextafter(edges[1:], 0.0), side="right")
            lut = np.where(lo == hi, lo, -1).astype(np.int16)  # -1: a CDF point inside
            self._luts[n] = lut
        got = lut.take((u * _LUT_SLICES).astype(np.int16))
        amb = np.flatnonzero(got < 0)
        if len(amb):
            got.flat[amb] = cdf.searchsorted(u.ravel()[amb], side="right")
        return got.astype(np.int64)

    # -- routing ------------------------------------------------------------------------
    def counts(self, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
        """(int64[N] queries per chunk, int64[S] requests per node) for ``n_queries``."""
        per_chunk, _, reqs = self._draw(n_queries)
        return per_chunk, np.array(reqs, dtype=np.int64)

    def _draw(self, n_queries: int) -> tuple[np.ndarray, list[int], list[int]]:
        """(queries per chunk, pairs per node, requests per node)."""
        S = self.S
        if self.k == self.n_chunks and self.uniform:  # every query keeps every chunk
            per_chunk = np.full(self.n_chunks, n_queries, dtype=np.int64)
            pairs = self._pairs(per_chunk)
            return per_chunk, pairs, [n_queries if q else 0 for q in pairs]
        if n_queries <= self.exact_max_queries:
            self.exact_draws += 1
            sel = np.asarray(self.router.select(n_queries))
            if n_queries == 1:  # NOTE: for performance: k distinct ids, no counting needed
                per_chunk = np.zeros(self.n_chunks, dtype=np.int64)
                per_chunk[sel.ravel()] = 1
            else:
                per_chunk = np.bincount(sel.ravel(), minlength=self.n_chunks).astype(np.int64)
            pairs = self._pairs(per_chunk)
            if S == 1:
                return per_chunk, pairs, [n_queries]
            if n_queries == 1:  # the one query reaches exactly the nodes it has pairs on
                return per_chunk, pairs, [1 if q else 0 for q in pairs]
            hit = np.zeros((n_queries, S), dtype=bool)
            hit[np.arange(n_queries)[:, None], self.node_of[sel]] = True
            return per_chunk, pairs, hit.sum(axis=0).tolist()
        self.binomial_draws += 1
        p, touch = self._probabilities()
        if self._min_var_ok(n_queries):
            # NOTE: for performance: the normal approximation of each binomial, rounded and
            # clipped to [0, n] (numpy's exact binomial costs ~15x more per chunk).
            mean = n_queries * p
            sd = np.sqrt(mean * (1.0 - p))
            z = self.rng.standard_normal(self.n_chunks)
            per_chunk = np.clip(np.rint(mean + sd * z), 0, n_queries).astype(np.int64)
        elif self.uniform and self.k == self.n_chunks:
            per_chunk = np.full(self.n_chunks, n_queries, dtype=np.int64)  # every chunk kept
        elif self.uniform:
            # NOTE: for performance: exact binomial draws by inverting its (cached) CDF
            u = self.rng.random(self.n_chunks)
            per_chunk = self._binomial_quantiles(n_queries, float(p[0]), u)
        else:
            per_chunk = self.rng.binomial(n_queries, p).astype(np.int64)
        pairs = self._pairs(per_chunk)
        return per_chunk, pairs, self._requests(n_queries, pairs, touch)

    def draw_counts_layers(self, n_queries: int, layers: int) -> tuple[np.ndarray, list[list[int]]]:
        """``draw_counts`` for ``layers`` consecutive layers at once: (int64[layers, N]
        queries per chunk, requests per shared node of each layer).

        NOTE: for performance: one draw for every layer (the exact path selects the chunks
        of ``n_queries x layers`` queries in one call, the same numbers as layer by layer;
        the binomial paths draw a (layers, N) matrix)."""
        N, S = self.n_chunks, self.S
        if self.k == N and self.uniform:  # every query keeps every chunk: no draws
            per_chunk = np.full((layers, N), n_queries, dtype=np.int64)
            reqs = [n_queries if q else 0 for q in self._pairs(per_chunk[0])]
            return per_chunk, [reqs] * layers
        if n_queries <= self.exact_max_queries:
            self.exact_draws += layers
            sel = np.asarray(self.router.select(n_queries * layers)).reshape(
                layers, n_queries, -1)
            flat = sel + (np.arange(layers) * N)[:, None, None]
            per_chunk = np.bincount(flat.ravel(), minlength=layers * N).reshape(layers, N)
            if S == 1:
                return per_chunk, [[n_queries] for _ in range(layers)]
            hit = np.zeros((layers, n_queries, S), dtype=bool)
            hit[np.arange(layers)[:, None, None], np.arange(n_queries)[None, :, None],
                self.node_of[sel]] = True
            return per_chunk, hit.sum(axis=1).tolist()
        self.binomial_draws += layers
        p, touch = self._probabilities()
        if self._min_var_ok(n_queries):
            mean = n_queries * p
            sd = np.sqrt(mean * (1.0 - p))
            z = self.rng.standard_normal((layers, N))
            per_chunk = np.clip(np.rint(mean + sd * z), 0, n_queries).astype(np.int64)
        elif self.uniform:
            u = self.rng.random((layers, N))
            per_chunk = self._binomial_quantiles(n_queries, float(p[0]), u)
        else:
            per_chunk = self.rng.binomial(n_queries, p, size=(layers, N)).astype(np.int64)
        if S == 1:
            pairs = per_chunk.sum(axis=1, keepdims=True).tolist()
        else:
            pairs = [np.bincount(self.node_of, weights=row, minlength=S).astype(int).tolist()
                     for row in per_chunk]
        return per_chunk, [self._requests(n_queries, lp, touch) for lp in pairs]

    def draw_counts(self, n_queries: int, layer: int = 0) -> tuple[np.ndarray, list[int]]:
        """(int64[N] queries per chunk of this corpus, requests per shared node); ``layer``
        is the decode layer (unused here; trace-driven routers read their own layer's)."""
        per_chunk, _, reqs = self._draw(n_queries)
        return per_chunk, reqs

    def _pairs(self, per_chunk: np.ndarray) -> list[int]:
        S = self.S
        if S == 1:
            return [int(per_chunk.sum())]
        if self._regular:
            # NOTE: for performance: reducing a contiguous (S, N/S) copy along its rows is
            # ~3x faster than reducing the (N/S, S) view along its columns
            return np.add.reduce(per_chunk.reshape(-1, S).T.copy(), axis=1).tolist()
        return np.bincount(self.node_of, weights=per_chunk, minlength=S).astype(int).tolist()

    def _requests(self, n: int, pairs: list[int], touch: np.ndarray) -> list[int]:
        """Requests reaching each node: n x P(touch), at least 1 if it got any pair, at
        most its pairs."""
        expect = self._expect.get(n)
        if expect is None:
            expect = [int(x) for x in np.rint(n * touch).tolist()]
            self._expect[n] = expect
        return [min(p, max(e, 1)) if p else 0 for p, e in zip(pairs, expect)]

    def route(self, n_queries: int, layer: int = 0) -> list[NodeLoad]:
        """The batch's load on each shared node, counts indexed by the node's local slot
        minus this corpus's first slot there (one corpus: chunk ``c`` is slot ``c // S``
        of node ``c % S``). ``layer`` is unused here (a trace replay's router reads it)."""
        per_chunk, pairs, reqs = self._draw(n_queries)
        S = self.S
        if self._regular:
            # NOTE: for performance: node s's chunks are column s of an (N/S, S) view, row s
            # of its contiguous transpose (fast to reduce here and to add on the node)
            mat = per_chunk.reshape(-1, S).T.copy()
            maxs = np.maximum.reduce(mat, axis=1).tolist()
            return [NodeLoad(mat[s], reqs[s], pairs[s], maxs[s]) for s in range(S)]
        out = []
        for s, idx in enumerate(self.by_node):
            c = per_chunk[idx]
            out.append(NodeLoad(c, reqs[s], pairs[s], int(c.max()) if len(c) else 0))
        return out

    def route_layers(self, n_queries: int, layers: int) -> list[list[NodeLoad]]:
        """``route`` for ``layers`` consecutive layers of one step, drawn at once.

        NOTE: for performance: the binomial draws of every layer are one numpy call, and
        so are a one-query batch's exact draws (the same numbers, in the same order, as
        ``layers`` calls of ``route``); larger exact batches and the Zipf binomial path
        draw layer by layer."""
        S = self.S
        if (n_queries == 1 and layers > 1 and self._regular and self.k < self.n_chunks
                and self.exact_max_queries >= 1):
            return self._route_one_query_layers(layers)
        if (layers == 1 or n_queries <= self.exact_max_queries or not self._regular
                or not self.uniform or self.k == self.n_chunks):
            return [self.route(n_queries, layer) for layer in range(layers)]
        self.binomial_draws += layers
        p, touch = self._probabilities()
        N = self.n_chunks
        if self._min_var_ok(n_queries):
            mean = n_queries * p
            sd = np.sqrt(mean * (1.0 - p))
            z = self.rng.standard_normal((layers, N))
            per_chunk = np.clip(np.rint(mean + sd * z), 0, n_queries).astype(np.int64)
        else:
            u = self.rng.random((layers, N))
            per_chunk = self._binomial_quantiles(n_queries, float(p[0]), u)
        mat = per_chunk.reshape(layers, -1, S).transpose(0, 2, 1).copy()  # (layer, node, slot)
        pairs = np.add.reduce(mat, axis=2).tolist()
        maxs = np.maximum.reduce(mat, axis=2).tolist()
        out = []
        for layer in range(layers):
            lp, lm, m = pairs[layer], maxs[layer], mat[layer]
            reqs = self._requests(n_queries, lp, touch)
            out.append([NodeLoad(m[s], reqs[s], lp[s], lm[s]) for s in range(S)])
        return out

    def _route_one_query_layers(self, layers: int) -> list[list[NodeLoad]]:
        """``route_layers`` for a batch of one query (the exact path): its k chunks of
        every layer from one ``select`` (the same numbers as ``layers`` calls of
        ``route``), each node's requests 1 where it holds one of them.

        NOTE: for performance: a decode step of one request is common in short runs
        (``--output-tokens 2``) and costs ``layers`` selects and counts otherwise."""
        S, N = self.S, self.n_chunks
        self.exact_draws += layers
        sel = np.asarray(self.router.select(layers))
        per_chunk = np.zeros((layers, N), dtype=np.int64)
        per_chunk[np.arange(layers)[:, None], sel] = 1
        mat = per_chunk.reshape(layers, -1, S).transpose(0, 2, 1).copy()  # (layer, node, slot)
        pairs = np.add.reduce(mat, axis=2).tolist()
        maxs = np.maximum.reduce(mat, axis=2).tolist()
        return [[NodeLoad(mat[layer, s], 1 if pairs[layer][s] else 0, pairs[layer][s],
                          maxs[layer][s]) for s in range(S)] for layer in range(layers)]


class ShardRouter:
    """Splits a batch's routed queries over the shared nodes, across every corpus: global
    chunk ``g`` (corpus offsets in ``corpus_chunk_counts`` order) lives on node ``g % S``."""

    def __init__(self, routers: list[QueryRouter], corpus_chunk_counts: tuple[int, ...],
                 shared_nodes: int, single_corpus: bool) -> None:
        self.routers = routers
        self.shared_nodes = shared_nodes
        self.single_corpus = single_corpus
        total = sum(corpus_chunk_counts)
        S = max(1, shared_nodes)
        self._offsets = [0, *np.cumsum(corpus_chunk_counts).tolist()]
        self._padded_chunks = -(-total // S) * S
        self._local_chunks = [len(range(s, total, S)) for s in range(S)]

    def route(self, corpus_ids: np.ndarray, batch: int, layer: int = 0) -> list[NodeLoad]:
        """Each shared node's share of this batch's routed queries (``layer``: the decode
        layer of the round trip, 0 at granularity step)."""
        routers = self.routers
        if len(routers) == 1 and self.single_corpus:
            return routers[0].route(batch, layer)
        per_corpus = np.bincount(corpus_ids[corpus_ids >= 0], minlength=len(routers))
        S = self.shared_nodes
        offsets = self._offsets
        # NOTE: for performance: one vector over every global chunk; global chunk g is
        # slot g // S of node g % S, so node s's counts are the stride-S slice from s.
        # (padded to a multiple of S, so the stride-S slices are the rows of one transpose)
        glob = np.zeros(self._padded_chunks, dtype=np.int64)
        reqs = [0] * S
        for corpus in np.flatnonzero(per_corpus).tolist():
            per_chunk, r = routers[corpus].draw_counts(int(per_corpus[corpus]), layer)
            o = offsets[corpus]
            glob[o:o + len(per_chunk)] += per_chunk
            for s in range(S):
                reqs[s] += r[s]
        mat = glob.reshape(-1, S).T.copy()
        pairs = np.add.reduce(mat, axis=1).tolist()
        maxs = np.maximum.reduce(mat, axis=1).tolist() if mat.shape[1] else [0] * S
        local = self._local_chunks
        return [NodeLoad(mat[s, :local[s]], reqs[s], pairs[s], maxs[s]) for s in range(S)]

    def route_layers(self, corpus_ids: np.ndarray, batch: int,
                     layers: int) -> list[list[NodeLoad]]:
        """``route`` for ``layers`` consecutive layers of one step (layer 0 first), drawn
        at once where the routers can."""
        routers = self.routers
        if len(routers) == 1 and self.single_corpus:
            return routers[0].route_layers(batch, layers)
        if layers == 1:
            return [self.route(corpus_ids, batch, 0)]
        per_corpus = np.bincount(corpus_ids[corpus_ids >= 0], minlength=len(routers))
        S = self.shared_nodes
        offsets = self._offsets
        glob = np.zeros((layers, self._padded_chunks), dtype=np.int64)
        reqs = np.zeros((layers, S), dtype=np.int64)
        for corpus in np.flatnonzero(per_corpus).tolist():
            per_chunk, r = routers[corpus].draw_counts_layers(int(per_corpus[corpus]), layers)
            o = offsets[corpus]
            glob[:, o:o + per_chunk.shape[1]] += per_chunk
            reqs += np.asarray(r, dtype=np.int64)
        mat = glob.reshape(layers, -1, S).transpose(0, 2, 1).copy()  # (layer, node, slot)
        pairs = np.add.reduce(mat, axis=2).tolist()
        maxs = (np.maximum.reduce(mat, axis=2).tolist() if mat.shape[2]
                else [[0] * S] * layers)
        reqs_l = reqs.tolist()
        local = self._local_chunks
        return [[NodeLoad(mat[layer, s, :local[s]], reqs_l[layer][s], pairs[layer][s],
                          maxs[layer][s]) for s in range(S)] for layer in range(layers)]

    @property
    def exact_draws(self) -> int:
        return sum(r.exact_draws for r in self.routers)

    @property
    def binomial_draws(self) -> int:
        return sum(r.binomial_draws for r in self.routers)


__all__ = ["EXACT_MAX_QUERIES", "NodeLoad", "QueryRouter", "SelectsChunks", "ShardRouter"]
