"""Mooncake corpora: the real sharing read off the Mooncake trace's 512-token prefix-block
hash ids (see ``workloads.sharing.corpus``'s module docstring for the definition)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from workloads.errors import WorkloadError
from workloads.sharing.stats import MOONCAKE_DEFINITION, SharingStats, sharing_stats

MOONCAKE_BLOCK_TOKENS = 512


@dataclass(frozen=True)
class MooncakeSplit:
    """Per request: corpus id (0 = most popular; -1: shares nothing), shared and unique
    tokens; the size of each corpus; the stats."""

    corpus: np.ndarray  # int64 per request
    shared_tokens: np.ndarray  # int64 per request
    unique_tokens: np.ndarray  # int64 per request, >= 1
    corpus_tokens: np.ndarray  # int64 per corpus id
    trunk_blocks: int
    stats: SharingStats


def split_mooncake(hash_ids: list[list[int]], input_lengths: Any,
                   block_tokens: int = MOONCAKE_BLOCK_TOKENS) -> MooncakeSplit:
    """Read shared corpora off prefix-block hash ids (the module docstring defines them)."""
    lengths = np.asarray(input_lengths, dtype=np.int64)
    n = len(hash_ids)
    if len(lengths) != n:
        raise WorkloadError(f"split_mooncake: {n} hash_ids lists for {len(lengths)} lengths")
    # one row per (request, block position): request, position, block (as an index 0..U-1)
    lens = np.fromiter((len(ids) for ids in hash_ids), dtype=np.int64, count=n)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64) if n else lens
    flat = np.fromiter(chain.from_iterable(hash_ids), dtype=np.int64, count=int(lens.sum()))
    req = np.repeat(np.arange(n, dtype=np.int64), lens)
    pos = np.arange(len(flat), dtype=np.int64) - np.repeat(starts, lens)
    block = _dense_ids(flat)
    n_blocks = int(block.max()) + 1 if len(block) else 0

    # a block is shared when at least two distinct requests have it
    pair = _distinct(block * max(n, 1) + req)
    users = np.bincount(pair // max(n, 1), minlength=n_blocks)
    shared_row = users[block] >= 2
    # a request's shared prefix: its leading run of shared blocks
    first_unique = np.where(shared_row, np.repeat(lens, lens), pos)
    prefix = np.zeros(n, dtype=np.int64)
    nonempty = lens > 0
    if nonempty.any():
        prefix[nonempty] = np.minimum.reduceat(first_unique, starts[nonempty])
    in_prefix = pos < prefix[req]
    trunk = _common_prefix(flat, starts, lens, int(prefix.min()) if n else 0)

    # corpus key per request: the block below the trunk, the trunk (n_blocks), or none (-1)
    key = np.full(n, -1, dtype=np.int64)
    key[prefix > 0] = n_blocks
    branch = prefix > trunk
    key[branch] = block[starts[branch] + trunk]
    has = key >= 0
    members = np.bincount(key[has], minlength=n_blocks + 1)
    first_req = np.full(n_blocks + 1, n, dtype=np.int64)
    np.minimum.at(first_req, key[has], np.nonzero(has)[0])

    # a block's tokens: its largest extent (a prompt's last block may be partial)
    tokens = np.clip(lengths[req] - block_tokens * pos, 0, block_tokens)
    extent = np.zeros(n_blocks, dtype=np.int64)
    np.maximum.at(extent, block[in_prefix], tokens[in_prefix])
    cb = _distinct(key[req[in_prefix]] * max(n_blocks, 1) + block[in_prefix])
    size = np.bincount(cb // max(n_blocks, 1), weights=extent[cb % max(n_blocks, 1)],
                       minlength=n_blocks + 1).astype(np.int64)

    keys = np.nonzero(members)[0]
    order = keys[np.lexsort((first_req[keys], -size[keys], -members[keys]))]
    id_of = np.full(n_blocks + 1, -1, dtype=np.int64)
    id_of[order] = np.arange(len(order))
    corpus = np.where(has, id_of[np.maximum(key, 0)], -1)

    shared = np.minimum(prefix * block_tokens, lengths)
    shared = np.maximum(np.where(shared >= lengths, lengths - 1, shared), 0)  # unique >= 1
    unique = lengths - shared
    corpus_tokens = size[order]
    stats = sharing_stats("mooncake", MOONCAKE_DEFINITION, shared, unique, corpus,
                          corpus_tokens, int(extent.sum()))
    return MooncakeSplit(corpus, shared, unique, corpus_tokens, trunk, stats)


def _dense_ids(a: np.ndarray) -> np.ndarray:
    """Each value's rank among the distinct values of ``a`` (0..distinct-1), by sorting."""
    order = np.argsort(a, kind="stable")
    s = a[order]
    ids = np.empty(len(a), dtype=np.int64)
    if len(a):
        ids[order] = np.cumsum(np.concatenate([[False], s[1:] != s[:-1]]))
    return ids


def _distinct(a: np.ndarray) -> np.ndarray:
    """The distinct values of ``a``, ascending (a sort; faster here than ``np.unique``)."""
    s = np.sort(a)
    return s[np.concatenate([[True], s[1:] != s[:-1]])] if len(s) else s


def _common_prefix(flat: np.ndarray, starts: np.ndarray, lens: np.ndarray, limit: int) -> int:
    """Length of the prefix every request's block list shares, at most ``limit``."""
    t = 0
    while t < limit and (lens > t).all() and (flat[starts + t] == flat[starts[0] + t]).all():
        t += 1
    return t


__all__ = ["MOONCAKE_BLOCK_TOKENS", "MooncakeSplit", "split_mooncake"]
