"""Chunk routing: distinct picks, uniform and Zipf laws, expected per-chunk batch."""

import numpy as np
import pytest

from workloads.errors import WorkloadError
from workloads.sharing import ChunkRouter, SharedCorpusSpec, expected_chunk_batch, split_mooncake


def _router(s=0.0, n_chunks=64, keep=0.25, seed=0):
    pop = "uniform" if s == 0 else {"zipf": s}
    spec = SharedCorpusSpec(tokens=n_chunks * 128, chunk_tokens=128, keep_fraction=keep,
                            popularity=pop)
    return ChunkRouter(spec, np.random.default_rng(seed))


def test_selections_are_distinct_sorted_and_k_sized():
    sel = _router(1.0).select(1000)
    assert sel.shape == (1000, 16)
    assert all(len(set(row)) == 16 for row in sel)
    assert (np.diff(sel, axis=1) > 0).all()


def test_uniform_counts_match_k_over_n():
    n_q = 20_000
    counts = np.bincount(_router().select(n_q).ravel(), minlength=64)
    p = 16 / 64
    sd = np.sqrt(n_q * p * (1 - p))
    assert np.all(np.abs(counts - n_q * p) < 5 * sd)
    spec = SharedCorpusSpec(8192, 128, 0.25)
    assert expected_chunk_batch(spec, 64) == pytest.approx(np.full(64, 16.0))


def test_zipf_with_one_pick_follows_the_law():
    # k = 1: picking proportional to weight is exactly the Zipf law over ranks
    r = _router(1.2, n_chunks=32, keep=1 / 32)
    n_q = 50_000
    counts = np.bincount(r.select(n_q).ravel(), minlength=32) / n_q
    w = r.spec.chunk_weights()
    assert np.abs(counts - w).max() < 5 * np.sqrt(w.max() / n_q)
    ranked = np.sort(w)[::-1]
    assert ranked[0] / ranked[1] == pytest.approx(2**1.2)


def test_zipf_makes_hot_chunks_and_same_seed_same_picks():
    hot = np.bincount(_router(1.5).select(5000).ravel(), minlength=64)
    flat = np.bincount(_router(0).select(5000).ravel(), minlength=64)
    assert hot.max() / hot.mean() > flat.max() / flat.mean()
    assert (_router(1.5, seed=3).select(10) == _router(1.5, seed=3).select(10)).all()


def test_bad_keep_fraction():
    with pytest.raises(WorkloadError, match="keep_fraction"):
        SharedCorpusSpec(1000, 100, 0.0)


def test_mooncake_split_on_a_tiny_tree():
    # root block 0 shared by all; blocks 1 shared by requests 0 and 1; the rest unique
    hashes = [[0, 1, 2], [0, 1, 3], [0, 4], [5]]
    lengths = np.array([1500, 1200, 700, 100])
    s = split_mooncake(hashes, lengths)
    assert list(s.shared_tokens) == [1024, 1024, 512, 0]
    assert list(s.shared_tokens + s.unique_tokens) == list(lengths)
    assert s.corpus[0] == s.corpus[1] == 0 and s.corpus[2] == 1 and s.corpus[3] == -1
    assert list(s.corpus_tokens) == [1024, 512]
    assert s.stats.shared_fraction == pytest.approx(2560 / 3500)
