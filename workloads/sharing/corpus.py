"""Shared corpora: synthetic ones (size, chunking, chunk routing, popularity) and the real
sharing read off the Mooncake trace's prefix blocks, with the statistics of either.

Synthetic routing. A corpus of ``tokens`` tokens is cut into ``n_chunks`` chunks of
``chunk_tokens``; each query keeps ``k = max(1, round(keep_fraction * n_chunks))`` distinct
chunks, drawn without replacement with probability proportional to the chunk's weight:
uniform, or Zipf (the chunk of popularity rank r weighs r^-s). Ranks are laid over chunk
ids by a permutation fixed by the chunk count alone, so hot chunks are spread over the
corpus (and over the shared nodes that hold chunk ``c`` at ``c % S``) and every router of
the same corpus agrees on where they are. Draws use the exponential race (the Gumbel-top-k
trick in another form): the k smallest ``E_c / w_c``, ``E_c ~ Exp(1)``, are exactly a
weighted sample without replacement. Requests pick one of ``corpora`` corpora by
``corpus_popularity`` (uniform or Zipf over corpus ids; id 0 is the most popular).

Mooncake corpora. The trace gives each prompt's 512-token prefix blocks as hash ids; equal
ids are the same prefix KV, so a block is *shared* when more than one request of the replay
has it. Hashes are prefix hashes, so a request's shared blocks are its leading blocks; we
count its shared prefix as the leading run of shared blocks (any shared block after its
first unique one would count as unique; none occur in the real file). The *trunk* is the
longest prefix every request has (in the real file one block, a 512-token system prompt).
A *corpus* is the prefix tree of shared blocks under one first block below the trunk,
together with the trunk: the requests of one conversation family, reading its history.
Requests whose shared prefix is exactly the trunk read the trunk corpus (the trunk alone);
requests that share nothing read no corpus (corpus 0 with 0 shared tokens). A corpus's size
is the tokens of its distinct blocks (a prompt's last block may be partial; a block counts
its largest extent); a request's shared tokens are those of its shared prefix (at most its
prompt less one token, so unique tokens are >= 1) and its unique tokens the rest, so
shared + unique == input_length. Corpora are numbered by descending popularity (requests),
ties by size then first appearance; the trunk is counted in every corpus's size, and
``distinct_shared_tokens`` counts it once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from workloads.errors import WorkloadError

PLACEMENT_SEED = 0x5EED  # hot-chunk placement depends on the chunk count only, not the run seed
EXACT_INCLUSION_MAX = 1 << 17  # n_chunks * k up to this: inclusion probabilities by quadrature


# -- popularity laws ----------------------------------------------------------------------
def zipf_exponent(popularity: Any, field: str = "workload.shared.popularity") -> float:
    """The Zipf exponent of a popularity setting: 0 for 'uniform', s for a number s,
    ``{zipf: s}`` or an object with ``.zipf`` (the config model); s must be >= 0."""
    if popularity is None or popularity == "uniform":
        return 0.0
    if isinstance(popularity, dict):
        s = popularity.get("zipf") if set(popularity) == {"zipf"} else None
    elif isinstance(popularity, (int, float)) and not isinstance(popularity, bool):
        s = popularity
    else:
        s = getattr(popularity, "zipf", None)
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
        raise WorkloadError(f"{field}: expected 'uniform' or a Zipf exponent {{zipf: s}} with "
                            f"s >= 0, got {popularity!r}")
    return float(s)


def zipf_weights(n: int, s: float) -> np.ndarray:
    """Weights of ranks 1..n under Zipf(s), summing to 1 (uniform when s is 0)."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -s
    return w / w.sum()


# -- a synthetic corpus -------------------------------------------------------------------
@dataclass(frozen=True)
class SharedCorpusSpec:
    """``corpora`` shared corpora of ``tokens`` tokens each, in chunks of ``chunk_tokens``.

    ``popularity`` (how a query's chunk picks spread over a corpus) and
    ``corpus_popularity`` (how requests spread over corpora) are 'uniform' or a Zipf
    exponent; both are normalised to 'uniform' or a float s > 0.
    """

    tokens: int
    chunk_tokens: int
    keep_fraction: float = 1.0
    popularity: Any = "uniform"
    corpora: int = 1
    corpus_popularity: Any = "uniform"

    def __post_init__(self) -> None:
        for name, least in (("tokens", 1), ("chunk_tokens", 1), ("corpora", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
                raise WorkloadError(f"workload.shared.{name}: expected an integer >= {least}, "
                                    f"got {v!r}")
        if self.chunk_tokens > self.tokens:
            raise WorkloadError(f"workload.shared.chunk_tokens: expected an integer <= tokens "
                                f"({self.tokens}), got {self.chunk_tokens}")
        kf = self.keep_fraction
        if isinstance(kf, bool) or not isinstance(kf, (int, float)) or not 0 < kf <= 1:
            raise WorkloadError(f"workload.shared.keep_fraction: expected a number in (0, 1], "
                                f"got {kf!r}")
        for name in ("popularity", "corpus_popularity"):
            s = zipf_exponent(getattr(self, name), f"workload.shared.{name}")
            object.__setattr__(self, name, "uniform" if s == 0 else s)

    @property
    def n_chunks(self) -> int:
        return -(-self.tokens // self.chunk_tokens)

    @property
    def chunks_selected_per_query(self) -> int:
        """k: the chunks a query keeps, ``max(1, round(keep_fraction * n_chunks))``."""
        return max(1, min(self.n_chunks, round(self.keep_fraction * self.n_chunks)))

    @property
    def zipf_s(self) -> float:
        return 0.0 if self.popularity == "uniform" else float(self.popularity)

    def chunk_weights(self) -> np.ndarray:
        """Each chunk id's share of the popularity law (sums to 1)."""
        return _chunk_weights(self.n_chunks, self.zipf_s).copy()

    def inclusion_probabilities(self) -> np.ndarray:
        """P(a query keeps chunk c), summing to k: k/N when uniform; under Zipf the exact
        inclusion probabilities of weighted sampling without replacement (see
        ``_inclusion_probabilities``)."""
        return _inclusion(self.n_chunks, self.chunks_selected_per_query, self.zipf_s).copy()

    def expected_chunk_batch(self, batch: int) -> np.ndarray:
        """Expected number of a batch of ``batch`` queries that keep each chunk."""
        return batch * self.inclusion_probabilities()

    def corpus_weights(self) -> np.ndarray:
        """Each corpus id's share of requests (id 0 the most popular)."""
        s = 0.0 if self.corpus_popularity == "uniform" else float(self.corpus_popularity)
        return zipf_weights(self.corpora, s)


def expected_chunk_batch(spec: SharedCorpusSpec, batch: int) -> np.ndarray:
    """Expected number of a batch's queries that keep each chunk of ``spec``'s corpus."""
    return spec.expected_chunk_batch(batch)


@lru_cache(maxsize=64)
def _chunk_weights(n: int, s: float) -> np.ndarray:
    if s == 0:
        return np.full(n, 1.0 / n)
    weights = np.empty(n)
    weights[np.random.default_rng([PLACEMENT_SEED, n]).permutation(n)] = zipf_weights(n, s)
    return weights


class ChunkRouter:
    """Draws each query's k distinct chunks from the corpus's popularity law."""

    MAX_BLOCK_KEYS = 1 << 21  # random keys per vectorised block (bounds memory at 16 MiB)

    def __init__(self, spec: SharedCorpusSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.rng = rng
        self.k = spec.chunks_selected_per_query
        self.uniform = spec.popularity == "uniform"
        self._inv_w = None if self.uniform else 1.0 / spec.chunk_weights()

    def select(self, n_queries: int) -> np.ndarray:
        """int32 ``(n_queries, k)``: each row k distinct chunk ids, ascending."""
        n, k = self.spec.n_chunks, self.k
        if k == n:  # every chunk; no draws
            return np.broadcast_to(np.arange(n, dtype=np.int32), (n_queries, k)).copy()
        out = np.empty((n_queries, k), dtype=np.int32)
        rows = max(1, self.MAX_BLOCK_KEYS // n)
        for start in range(0, n_queries, rows):
            m = min(rows, n_queries - start)
            keys = self.rng.standard_exponential((m, n))
            if self._inv_w is not None:
                keys *= self._inv_w  # E / w: the k smallest are a weighted sample w/o replacement
            top = np.argpartition(keys, k - 1, axis=1)[:, :k]
            top.sort(axis=1)
            out[start:start + m] = top
        return out

    def inclusion_probabilities(self) -> np.ndarray:
        """P(a query keeps chunk c) for each chunk (sums to k)."""
        return self.spec.inclusion_probabilities()

    def expected_chunk_batch(self, batch: int) -> np.ndarray:
        """Expected queries per chunk for a batch of ``batch`` queries."""
        return self.spec.expected_chunk_batch(batch)


def assign_corpora(spec: SharedCorpusSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    """Each of ``n`` requests' corpus id (int64), drawn from ``corpus_weights``; no draws
    when there is one corpus."""
    if spec.corpora == 1:
        return np.zeros(n, dtype=np.int64)
    return rng.choice(spec.corpora, size=n, p=spec.corpus_weights()).astype(np.int64)


# -- inclusion probabilities of weighted sampling without replacement ---------------------
@lru_cache(maxsize=64)
def _inclusion(n: int, k: int, s: float) -> np.ndarray:
    if s == 0 or k >= n:
        return np.full(n, k / n)
    w = _chunk_weights(n, s)
    ranked = np.sort(w)[::-1]
    p = _inclusion_probabilities(ranked, k)
    out = np.empty(n)
    out[np.argsort(w)[::-1]] = p
    return out


def _inclusion_probabilities(w: np.ndarray, k: int, nodes: int = 96) -> np.ndarray:
    """P(item i is among the k smallest of ``X_j = E_j / w_j``), ``E_j ~ Exp(1)``.

    Exactly ``pi_i = int_0^inf w_i e^{-w_i x} P(#{j != i: X_j < x} <= k - 1) dx``, where the
    count is Poisson-binomial with ``q_j = 1 - e^{-w_j x}``. The probability is computed from
    prefix and suffix products of the items' generating polynomials (truncated at degree
    k - 1: nonnegative sums, no cancellation) and integrated by Gauss-Legendre in log x
    over the range where it is neither ~1 nor ~0 (Chernoff bounds below 1e-12 outside);
    below the range the integrand is the item's own density. Above ``EXACT_INCLUSION_MAX``
    (n * k), Rosen's approximation ``1 - exp(-w_i t)``, ``sum = k``, is used (error O(1/n)).
    """
    n = len(w)
    if n * k > EXACT_INCLUSION_MAX:
        return _rosen(w, k)
    x_a = _x_at_mean(w, _chernoff_mu(k, lower=True)) if k > 1 else 0.0
    x_b = min(_x_at_mean(w, _chernoff_mu(k, lower=False)), 60.0 / w.min())
    x_a = x_a if x_a > 0 else 1e-12 / w.max()
    g, gw = np.polynomial.legendre.leggauss(nodes)
    lo, hi = math.log(x_a), math.log(x_b)
    xs = np.exp((hi - lo) / 2 * g + (hi + lo) / 2)
    wts = gw * (hi - lo) / 2 * xs  # dx = x d(log x)
    pi = -np.expm1(-w * x_a)  # below x_a fewer than k others have arrived (to 1e-12)
    chunk = max(1, (1 << 22) // (n * k))  # prefix table of at most 32 MiB
    for s in range(0, nodes, chunk):
        x = xs[s:s + chunk]
        q = -np.expm1(-np.outer(x, w))  # (m, n)
        below = _leave_one_out_cdf(q, k)  # P(others <= k - 1), (m, n)
        dens = w * np.exp(-np.outer(x, w))
        pi += (wts[s:s + chunk, None] * dens * below).sum(axis=0)
    return np.clip(pi, 0.0, 1.0)


def _leave_one_out_cdf(q: np.ndarray, k: int) -> np.ndarray:
    """``P(sum_{j != i} Bernoulli(q_j) <= k - 1)`` for each row of ``q`` and each i."""
    m, n = q.shape
    pre = np.empty((n, m, k))
    poly = np.zeros((m, k))
    poly[:, 0] = 1.0
    for i in range(n):
        pre[i] = poly
        qi = q[:, i:i + 1]
        poly = poly * (1.0 - qi)
        poly[:, 1:] += pre[i][:, :-1] * qi
    out = np.empty((m, n))
    suf = np.zeros((m, k))
    suf[:, 0] = 1.0
    for i in range(n - 1, -1, -1):
        # P(prefix + suffix <= k-1) = sum_a pre[a] * P(suffix <= k-1-a)
        out[:, i] = np.einsum("ma,ma->m", pre[i], np.cumsum(suf, axis=1)[:, ::-1])
        qi = q[:, i:i + 1]
        nxt = suf * (1.0 - qi)
        nxt[:, 1:] += suf[:, :-1] * qi
        suf = nxt
    return out


def _chernoff_mu(k: int, lower: bool, log_eps: float = math.log(1e-12)) -> float:
    """A mean count mu at which P(count >= k) (lower) or P(count - 1 <= k - 1) (upper) of a
    Poisson-binomial with mean mu is below eps (Chernoff: e^{-mu} (e mu / c)^c)."""
    def log_bound(mu: float, c: float) -> float:
        return -mu + (c * (1 + math.log(mu / c)) if c > 0 else 0.0)

    if lower:  # largest mu < k with bound(mu, k) <= eps
        a, b = 1e-300, float(k)
        for _ in range(200):
            mid = (a + b) / 2
            a, b = (mid, b) if log_bound(mid, k) <= log_eps else (a, mid)
        return a
    c = k - 1  # smallest mu' > c with bound <= eps, mu = mu' + 1 (leaving one item out)
    a, b = float(c) + 1e-9, float(c) + 60.0 + 10.0 * math.sqrt(c + 1)
    for _ in range(200):
        mid = (a + b) / 2
        a, b = (a, mid) if log_bound(mid, c) <= log_eps else (mid, b)
    return b + 1.0


def _x_at_mean(w: np.ndarray, mu: float) -> float:
    """The x at which ``sum_j (1 - e^{-w_j x}) = mu`` (inf when mu >= n)."""
    if mu >= len(w):
        return math.inf
    lo, hi = 0.0, 1.0
    while np.sum(-np.expm1(-w * hi)) < mu:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.sum(-np.expm1(-w * mid)) < mu else (lo, mid)
    return hi


def _rosen(w: np.ndarray, k: int) -> np.ndarray:
    """Rosen's approximation of successive sampling's inclusion probabilities."""
    t = _x_at_mean(w, k)
    return -np.expm1(-w * t)


__all__ = [
    "EXACT_INCLUSION_MAX",
    "PLACEMENT_SEED",
    "ChunkRouter",
    "SharedCorpusSpec",
    "assign_corpora",
    "expected_chunk_batch",
    "zipf_exponent",
    "zipf_weights",
]
