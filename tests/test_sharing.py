"""Shared corpora: chunk routing against its laws, exact inclusion probabilities, corpus
picks, the Mooncake corpus definition on small trees, and the statistics."""

from __future__ import annotations

import itertools
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from workloads.errors import WorkloadError
from workloads.sharing import (
    ChunkRouter,
    SharedCorpusSpec,
    assign_corpora,
    expected_chunk_batch,
    split_mooncake,
    zipf_weights,
)
from workloads.sharing.corpus import _inclusion_probabilities, _rosen

Z = 5.0  # bounds at 5 standard errors


def spec(s: float = 0.0, n_chunks: int = 64, keep: float = 0.25, **kw) -> SharedCorpusSpec:
    pop = "uniform" if s == 0 else {"zipf": s}
    return SharedCorpusSpec(tokens=n_chunks * 128, chunk_tokens=128, keep_fraction=keep,
                            popularity=pop, **kw)


def counts(router: ChunkRouter, queries: int) -> np.ndarray:
    return np.bincount(router.select(queries).ravel(), minlength=router.spec.n_chunks)


# -- the spec -----------------------------------------------------------------------------
def test_chunk_count_and_k():
    s = SharedCorpusSpec(tokens=1000, chunk_tokens=128, keep_fraction=0.3)
    assert s.n_chunks == 8  # ceil(1000 / 128): the last chunk is partial
    assert s.chunks_selected_per_query == round(0.3 * 8) == 2
    assert SharedCorpusSpec(1000, 128, 0.01).chunks_selected_per_query == 1  # at least one
    assert SharedCorpusSpec(2**20, 2048, 0.25).chunks_selected_per_query == 128


@pytest.mark.parametrize("pop,normal", [
    ("uniform", "uniform"), (None, "uniform"), ({"zipf": 0}, "uniform"), ({"zipf": 1.1}, 1.1),
    (0.8, 0.8), (SimpleNamespace(zipf=2), 2.0),
])
def test_popularity_forms_are_normalised(pop, normal):
    s = SharedCorpusSpec(1024, 128, 0.5, popularity=pop)
    assert s.popularity == normal


@pytest.mark.parametrize("kw,message", [
    ({"keep_fraction": 0.0}, "workload.shared.keep_fraction: expected a number in (0, 1], got 0.0"),
    ({"keep_fraction": 1.5}, "workload.shared.keep_fraction: expected a number in (0, 1]"),
    ({"tokens": 0}, "workload.shared.tokens: expected an integer >= 1, got 0"),
    ({"chunk_tokens": 5000}, "workload.shared.chunk_tokens: expected an integer <= tokens (4096)"),
    ({"corpora": 0}, "workload.shared.corpora: expected an integer >= 1, got 0"),
    ({"popularity": {"zipf": -1}}, "workload.shared.popularity: expected 'uniform' or a Zipf"),
    ({"popularity": "hot"}, "workload.shared.popularity: expected 'uniform' or a Zipf"),
    ({"corpus_popularity": {"zeta": 1}}, "workload.shared.corpus_popularity: expected 'uniform'"),
])
def test_bad_spec_names_the_field(kw, message):
    args = {"tokens": 4096, "chunk_tokens": 128, "keep_fraction": 0.25, **kw}
    with pytest.raises(WorkloadError) as err:
        SharedCorpusSpec(**args)
    assert str(err.value).startswith(message)


# -- routing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("s", [0.0, 1.0, 2.5])
def test_selections_are_k_distinct_ascending_chunks(s):
    sel = ChunkRouter(spec(s), np.random.default_rng(0)).select(3000)
    assert sel.shape == (3000, 16) and sel.dtype == np.int32
    assert (np.diff(sel, axis=1) > 0).all()  # distinct, ascending
    assert sel.min() >= 0 and sel.max() < 64


def test_keep_everything_takes_every_chunk_without_draws():
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    sel = ChunkRouter(spec(1.0, n_chunks=8, keep=1.0), rng).select(4)
    assert (sel == np.arange(8)).all() and rng.bit_generator.state == state


def test_large_batches_are_drawn_in_blocks_with_the_same_law():
    r = ChunkRouter(spec(0.0, n_chunks=4096, keep=0.01), np.random.default_rng(0))
    sel = r.select(1500)  # more rows than one block of keys holds (2^21 / 4096 = 512)
    assert sel.shape == (1500, 41) and (np.diff(sel, axis=1) > 0).all()


def test_uniform_counts_match_batch_k_over_n():
    s = spec(0.0)
    q = 20_000
    c = counts(ChunkRouter(s, np.random.default_rng(1)), q)
    p = 16 / 64
    assert c.sum() == q * 16
    assert np.all(np.abs(c - q * p) < Z * math.sqrt(q * p * (1 - p)))  # each ~ Binomial(q, k/N)
    assert expected_chunk_batch(s, 64) == pytest.approx(np.full(64, 64 * 16 / 64), abs=0)
    assert ChunkRouter(s, np.random.default_rng(0)).expected_chunk_batch(10) == pytest.approx(
        np.full(64, 2.5))


def test_zipf_single_pick_follows_the_law():
    # k = 1: a pick proportional to weight is exactly the Zipf law over popularity ranks
    s = spec(1.2, n_chunks=32, keep=1 / 32)
    q = 50_000
    f = counts(ChunkRouter(s, np.random.default_rng(2)), q)
    w = s.chunk_weights()
    assert np.all(np.abs(f - q * w) < Z * np.sqrt(q * w * (1 - w)))
    ranked = np.sort(w)[::-1]
    assert ranked == pytest.approx(zipf_weights(32, 1.2))
    assert ranked[0] / ranked[1] == pytest.approx(2**1.2)
    hot = int(np.argmax(w))
    assert abs(f[hot] / q - ranked[0]) < Z * math.sqrt(ranked[0] * (1 - ranked[0]) / q)


@pytest.mark.parametrize("s,keep", [(1.0, 0.25), (2.0, 0.25), (0.7, 0.5)])
def test_zipf_counts_match_the_exact_expected_batch(s, keep):
    sp = spec(s, keep=keep)
    q = 20_000
    c = counts(ChunkRouter(sp, np.random.default_rng(3)), q)
    pi = sp.inclusion_probabilities()
    assert pi.sum() == pytest.approx(sp.chunks_selected_per_query, abs=1e-9)
    assert expected_chunk_batch(sp, q) == pytest.approx(q * pi)
    sd = np.sqrt(q * pi * (1 - pi))
    assert np.all(np.abs(c - q * pi) <= Z * sd + 1e-9)  # each ~ Binomial(q, pi_c)
    # heavier chunks are kept more often; the hot ones are not simply ids 0, 1, ...
    w = sp.chunk_weights()
    assert (np.diff(pi[np.argsort(w)]) >= -1e-12).all()
    assert set(np.argsort(w)[::-1][:8].tolist()) != set(range(8))


def test_inclusion_probabilities_equal_brute_force_enumeration():
    """Successive sampling: P(ordered draw i1..ik) = prod w_ij / (1 - sum of earlier)."""
    w = zipf_weights(6, 1.3)
    for k in (1, 2, 3, 5):
        pi = np.zeros(6)
        for seq in itertools.permutations(range(6), k):
            p, left = 1.0, 1.0
            for i in seq:
                p *= w[i] / left
                left -= w[i]
            pi[list(seq)] += p
        assert _inclusion_probabilities(w, k) == pytest.approx(pi, abs=1e-9)
        assert _rosen(w, k).sum() == pytest.approx(k)  # the large-corpus fallback keeps sum k


def test_same_seed_same_picks():
    a = ChunkRouter(spec(1.5), np.random.default_rng(3)).select(50)
    assert (a == ChunkRouter(spec(1.5), np.random.default_rng(3)).select(50)).all()
    assert (a != ChunkRouter(spec(1.5), np.random.default_rng(4)).select(50)).any()
    # placement depends on the corpus, not the run: two routers agree on the hot chunks
    assert (spec(1.5).chunk_weights() == spec(1.5).chunk_weights()).all()


def test_corpus_picks_follow_corpus_popularity():
    sp = spec(corpora=5, corpus_popularity={"zipf": 1.0})
    n = 50_000
    c = np.bincount(assign_corpora(sp, np.random.default_rng(0), n), minlength=5)
    w = zipf_weights(5, 1.0)
    assert (sp.corpus_weights() == w).all() and w[0] == w.max()  # id 0 most popular
    assert np.all(np.abs(c - n * w) < Z * np.sqrt(n * w * (1 - w)))
    one = assign_corpora(spec(), np.random.default_rng(0), 10)
    assert (one == 0).all()


# -- Mooncake corpora on small trees ----------------------------------------------------------
def test_mooncake_split_trunk_branches_and_unique_tails():
    # block 0 in every request (the trunk); 1 under it shared by requests 0 and 1; 4 by 2 and 3
    hashes = [[0, 1, 2], [0, 1, 3], [0, 4, 7], [0, 4], [0, 9]]
    lengths = [1500, 1200, 1100, 900, 600]
    s = split_mooncake(hashes, lengths)
    assert s.trunk_blocks == 1
    assert list(s.shared_tokens) == [1024, 1024, 1024, 899, 512]  # a fully shared prompt keeps 1
    assert list(s.unique_tokens) == [476, 176, 76, 1, 88]
    assert list(s.shared_tokens + s.unique_tokens) == lengths
    # three corpora: {0,1} and {0,4} (2 requests, 1024 tokens each), the trunk alone (1)
    assert list(s.corpus) == [0, 0, 1, 1, 2]  # ties by size then first appearance
    assert list(s.corpus_tokens) == [1024, 1024, 512]
    st = s.stats
    assert st.corpora == 3 and st.distinct_shared_tokens == 1536 and st.corpus_tokens_total == 2560
    assert st.shared_fraction == pytest.approx(sum(s.shared_tokens) / sum(lengths))
    assert st.requests_per_corpus_top == (2, 2, 1)
    assert json.loads(json.dumps(st.to_dict()))["requests_per_corpus_top"] == [2, 2, 1]


def test_mooncake_split_without_a_trunk_and_with_unshared_requests():
    hashes = [[5, 6, 7], [5, 6, 8], [5, 9], [1, 2], [3]]
    s = split_mooncake(hashes, [1300, 1400, 700, 800, 100])
    assert s.trunk_blocks == 0
    assert list(s.corpus) == [0, 0, 0, -1, -1]  # one tree rooted at block 5; two share nothing
    assert list(s.shared_tokens) == [1024, 1024, 512, 0, 0]
    assert list(s.corpus_tokens) == [1024]
    assert s.stats.requests_sharing == 3


def test_mooncake_partial_last_block_counts_its_extent():
    # block 3 is the last, partial block of both prompts: 1124 - 1024 = 100 tokens
    s = split_mooncake([[0, 2, 3], [0, 2, 3], [0, 5]], [1124, 1124, 600])
    assert list(s.shared_tokens) == [1123, 1123, 512]
    assert s.corpus_tokens[0] == 512 + 512 + 100


def test_mooncake_corpora_numbered_by_popularity():
    hashes = [[0, 1, 10], [0, 2, 11], [0, 2, 12], [0, 2, 13], [0, 1, 14], [0, 3, 15], [0, 2, 16]]
    s = split_mooncake(hashes, [1500] * 7)
    per = np.bincount(s.corpus[s.corpus >= 0])
    assert list(per) == sorted(per, reverse=True) and s.corpus[1] == 0  # block 2: 4 requests
