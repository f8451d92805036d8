"""Routing counts: exact per-query draws and the binomial shortcut agree in mean; chunks
are striped over shared nodes; the grouped-launch histogram reduction keeps chunk counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.engine.nodes.pricing import bucket, reduce_histogram
from sim.engine.routing import QueryRouter
from workloads.sharing import ChunkRouter, SharedCorpusSpec

N_TOKENS, CHUNK = 256 * 2048, 2048  # 256 chunks


def router(popularity, S: int, exact_max: int, seed: int = 0) -> QueryRouter:
    spec = SharedCorpusSpec(tokens=N_TOKENS, chunk_tokens=CHUNK, keep_fraction=0.25,
                            popularity=popularity, corpora=1)
    rng = np.random.default_rng(seed)
    return QueryRouter(ChunkRouter(spec, rng), 256, 64, S, rng,
                       uniform=popularity == "uniform", exact_max_queries=exact_max)


@pytest.mark.parametrize("popularity", ["uniform", {"zipf": 1.1}])
@pytest.mark.parametrize("n", [6, 40, 200])  # binomial below and above the normal switch
def test_exact_and_binomial_counts_agree_in_mean(popularity, n):
    draws = 300
    exact = router(popularity, 2, exact_max=10**9, seed=1)
    approx = router(popularity, 2, exact_max=0, seed=2)
    ce = np.mean([exact.counts(n)[0] for _ in range(draws)], axis=0)
    ca = np.mean([approx.counts(n)[0] for _ in range(draws)], axis=0)
    assert exact.binomial_draws == 0 and approx.exact_draws == 0
    # total pairs per batch: n * k in both
    assert ce.sum() == pytest.approx(n * 64, rel=1e-12)
    assert ca.sum() == pytest.approx(n * 64, rel=0.01)
    # per chunk, within a few standard errors of each other
    sd = np.sqrt(np.maximum(ce, 1.0) / draws) * 2
    assert np.mean(np.abs(ce - ca) <= 4 * sd) > 0.97
    # requests reaching each node agree in mean too
    re = np.mean([exact.counts(n)[1] for _ in range(draws)], axis=0)
    ra = np.mean([approx.counts(n)[1] for _ in range(draws)], axis=0)
    assert ra == pytest.approx(re, rel=0.03)


def test_uniform_inclusion_is_k_over_n_and_zipf_favours_head_chunks():
    u = router("uniform", 1, exact_max=10**9)
    counts = np.sum([u.counts(64)[0] for _ in range(200)], axis=0)
    assert counts.mean() == pytest.approx(64 * 64 * 200 / 256)
    z = router({"zipf": 1.1}, 1, exact_max=0)
    p, _ = z._probabilities()
    assert p.sum() == pytest.approx(64)
    assert p[0] > p[-1]


def test_chunks_are_striped_over_shared_nodes():
    r = router("uniform", 3, exact_max=10**9)
    per_chunk, reqs = r.counts(5)
    loads = QueryRouter.route(r, 5)  # a fresh draw; check the layout with a fixed vector
    assert sum(ld.pairs for ld in loads) == 5 * 64
    g = np.arange(256)
    for s in range(3):
        assert np.array_equal(r.by_node[s], g[g % 3 == s])
        assert np.array_equal(r.slot_by_node[s], g[g % 3 == s] // 3)
    assert all(0 < x <= 5 for x in reqs)


def test_histogram_reduction_keeps_chunks_and_is_exact_when_small():
    rng = np.random.default_rng(0)
    for _ in range(200):
        b = rng.integers(1, 60, size=rng.integers(1, 300))
        h = reduce_histogram(b, 4)
        assert sum(n for _, n in h) == len(b)
        if len(np.unique(b)) <= 4:
            v, c = np.unique(b, return_counts=True)
            assert h == tuple(zip(v.tolist(), c.tolist()))
        else:
            assert len(h) <= 4
            assert sum(q * n for q, n in h) >= b.sum()  # rounded up, never below


def test_bucket_is_exact_small_and_within_0_8_percent():
    assert [bucket(x) for x in (1, 17, 256)] == [1, 17, 256]
    for x in range(257, 200_000, 37):
        assert abs(bucket(x) - x) / x <= 1 / 128
    assert bucket(4096) == 4096


@pytest.mark.parametrize("popularity", ["uniform", {"zipf": 1.1}])
@pytest.mark.parametrize("n,S", [(1, 2), (1, 1), (1, 4), (1, 3), (6, 2), (40, 4), (200, 2),
                                 (7, 1)])
def test_a_step_of_layers_drawn_at_once_equals_layer_by_layer(popularity, n, S):
    """route_layers draws every layer of a step in one call; from the same stream state it
    must give what that many route calls give, layer for layer (counts, requests, pairs,
    maxima), whichever path (exact, inverted CDF, rounded normal, Zipf) draws them."""
    layers = 5
    at_once_router = router(popularity, S, exact_max=1, seed=7)
    at_once = at_once_router.route_layers(n, layers)
    one_by_one = router(popularity, S, exact_max=1, seed=7)
    for layer, loads in enumerate(at_once):
        ref = one_by_one.route(n, layer)
        assert len(loads) == len(ref) == S
        for a, b in zip(loads, ref):
            assert np.array_equal(a.counts, b.counts)
            assert (a.requests, a.pairs, a.max_count) == (b.requests, b.pairs, b.max_count)
            assert a.pairs == int(a.counts.sum()) and a.max_count == int(a.counts.max())
    assert (at_once_router.exact_draws, at_once_router.binomial_draws) == (
        one_by_one.exact_draws, one_by_one.binomial_draws)


@pytest.mark.parametrize("n_per_corpus", [(1, 0, 2), (3, 1, 0), (40, 5, 1)])
@pytest.mark.parametrize("S", [1, 3])
def test_several_corpora_drawn_for_a_step_at_once_equal_layer_by_layer(n_per_corpus, S):
    """ShardRouter.route_layers over several corpora (each with its own stream here, so the
    order of draws between corpora cannot matter) equals route called layer by layer: the
    same counts on every node's slots, requests, pairs and maxima."""
    from sim.engine.routing import ShardRouter

    sizes = (48, 1, 32)  # chunks per corpus (a corpus of one chunk: kept whole, no draws)

    def shard(seed: int) -> ShardRouter:
        routers, offset = [], 0
        for c, n in enumerate(sizes):
            spec = SharedCorpusSpec(tokens=n * CHUNK, chunk_tokens=CHUNK, keep_fraction=0.25,
                                    popularity="uniform", corpora=1)
            rng = np.random.default_rng([seed, c])
            routers.append(QueryRouter(ChunkRouter(spec, rng), n, max(1, n // 4), S, rng,
                                       uniform=True, offset=offset, exact_max_queries=2))
            offset += n
        return ShardRouter(routers, sizes, S, single_corpus=False)

    corpus_ids = np.repeat(np.arange(3), n_per_corpus)
    layers = 4
    at_once = shard(5).route_layers(corpus_ids, len(corpus_ids), layers)
    one_by_one = shard(5)
    for layer in range(layers):
        ref = one_by_one.route(corpus_ids, len(corpus_ids), layer)
        for a, b in zip(at_once[layer], ref):
            assert np.array_equal(a.counts, b.counts)
            assert (a.requests, a.pairs, a.max_count) == (b.requests, b.pairs, b.max_count)


@pytest.mark.parametrize("n,p", [(1, 0.25), (8, 0.25), (47, 0.25), (150, 0.0625), (3, 0.5)])
def test_binomial_lookup_table_inverts_the_cdf_exactly(n, p):
    """The lookup-table inversion gives, for every uniform, the number of CDF points at or
    below it (what searching the CDF gives), including uniforms exactly on a CDF point or a
    slice edge; and its draws follow Binomial(n, p) (pmf written out here)."""
    r = router("uniform", 2, exact_max=0)
    cdf = r._binomial_cdf(n, p)
    rng = np.random.default_rng(7)
    u = np.concatenate([rng.random(200_000), cdf, np.nextafter(cdf, 0.0),
                        np.arange(4096) / 4096, np.nextafter(np.arange(1, 4097) / 4096, 0.0),
                        [0.0, np.nextafter(1.0, 0.0)]])
    u = u[(u >= 0.0) & (u < 1.0)].reshape(1, -1)
    got = r._binomial_quantiles(n, p, u)
    assert got.dtype == np.int64 and got.shape == u.shape
    assert np.array_equal(got, cdf.searchsorted(u, side="right"))
    # the draws' distribution: P(k) = C(n, k) p^k (1-p)^(n-k)
    draws = got[0, :200_000]
    ks = np.arange(min(n, 12) + 1)
    pmf = np.array([math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in ks])
    freq = np.array([(draws == k).mean() for k in ks])
    sd = np.sqrt(pmf * (1 - pmf) / len(draws))
    assert np.all(np.abs(freq - pmf) <= 5 * sd + 1e-12)
