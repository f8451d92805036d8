"""Shared corpora: their size, chunking and popularity, chunk routing, and the real sharing of
the Mooncake trace.

Routing: each query keeps ``k = max(1, round(keep_fraction * n_chunks))`` distinct chunks,
drawn without replacement with probability proportional to the chunk's popularity
(uniform, or Zipf: the chunk of rank r weighs r^-s, ranks laid over chunk ids by a fixed
permutation so hot chunks are spread over the corpus and over shared nodes). Sampling uses
the Gumbel-top-k trick, which draws exactly such a without-replacement sample.

Mooncake corpora: a 512-token block seen by more than one request is shared. In the trace
sharing is always a prefix and every request starts with the same block (a system prompt),
so the prefix tree has one root. A *corpus* is the subtree under one shared second-level
block, together with the root: the requests of one conversation family. Requests whose
only shared block is the root form corpus "root only". A corpus's size is the number of
distinct shared blocks in it x 512 tokens; a request's shared tokens are its shared
blocks x 512 (capped at its prompt length less one), the rest of its prompt is unique.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workloads.errors import WorkloadError

MOONCAKE_BLOCK_TOKENS = 512
_PLACEMENT_SEED = 0x5EED  # fixed: where the hot chunks sit does not depend on the run seed


def zipf_exponent(popularity: Any) -> float:
    """0 for 'uniform', else s of {zipf: s} (a mapping or an object with ``.zipf``)."""
    if popularity is None or popularity == "uniform":
        return 0.0
    s = popularity.get("zipf") if isinstance(popularity, dict) else getattr(popularity, "zipf", None)
    if s is None or float(s) < 0:
        raise WorkloadError(f"workload.shared.popularity: expected 'uniform' or {{zipf: s >= 0}}, "
                            f"got {popularity!r}")
    return float(s)


@dataclass(frozen=True)
class SharedCorpusSpec:
    """A shared corpus of ``tokens`` tokens in chunks of ``chunk_tokens``."""

    tokens: int
    chunk_tokens: int
    keep_fraction: float = 1.0
    popularity: Any = "uniform"
    corpora: int = 1

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.chunk_tokens < 1:
            raise WorkloadError("workload.shared: tokens and chunk_tokens must be >= 1")
        if not 0 < self.keep_fraction <= 1:
            raise WorkloadError(f"workload.shared.keep_fraction: expected a number in (0, 1], "
                                f"got {self.keep_fraction}")
        zipf_exponent(self.popularity)

    @property
    def n_chunks(self) -> int:
        return -(-self.tokens // self.chunk_tokens)

    @property
    def chunks_selected_per_query(self) -> int:
        return max(1, min(self.n_chunks, round(self.keep_fraction * self.n_chunks)))

    def chunk_weights(self) -> np.ndarray:
        """Popularity of each chunk id (sums to 1)."""
        n, s = self.n_chunks, zipf_exponent(self.popularity)
        if s == 0:
            return np.full(n, 1.0 / n)
        by_rank = np.arange(1, n + 1, dtype=float) ** -s
        weights = np.empty(n)
        weights[np.random.default_rng(_PLACEMENT_SEED + n).permutation(n)] = by_rank
        return weights / weights.sum()


class ChunkRouter:
    """Draws each query's k distinct chunks from the corpus's popularity law."""

    ROWS_PER_BLOCK = 256  # bounds memory: n_chunks floats per row

    def __init__(self, spec: SharedCorpusSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self.rng = rng
        self.k = spec.chunks_selected_per_query
        self.uniform = zipf_exponent(spec.popularity) == 0
        self.log_w = np.log(spec.chunk_weights())

    def select(self, n_queries: int) -> np.ndarray:
        """int32 (n_queries, k): distinct chunk ids per query, ascending."""
        n, k = self.spec.n_chunks, self.k
        out = np.empty((n_queries, k), dtype=np.int32)
        for start in range(0, n_queries, self.ROWS_PER_BLOCK):
            rows = min(self.ROWS_PER_BLOCK, n_queries - start)
            if k == n:
                out[start:start + rows] = np.arange(n)
                continue
            keys = self.rng.gumbel(size=(rows, n))
            if not self.uniform:
                keys += self.log_w
            top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
            out[start:start + rows] = np.sort(top, axis=1)
        return out

    def inclusion_probabilities(self, draws: int = 8192) -> np.ndarray:
        """P(a query selects chunk c): exactly k/N when uniform, else estimated from draws
        with a fixed seed (deterministic)."""
        n = self.spec.n_chunks
        if self.uniform:
            return np.full(n, self.k / n)
        probe = ChunkRouter(self.spec, np.random.default_rng(_PLACEMENT_SEED))
        counts = np.bincount(probe.select(draws).ravel(), minlength=n)
        return counts / draws


def expected_chunk_batch(spec: SharedCorpusSpec, batch: int) -> np.ndarray:
    """Expected number of a batch's queries that select each chunk."""
    router = ChunkRouter(spec, np.random.default_rng(0))
    return batch * router.inclusion_probabilities()


@dataclass
class SharingStats:
    """Measured sharing of a real trace (JSON-serialisable)."""

    requests: int
    prompt_tokens: int
    shared_prompt_tokens: int
    corpora: int
    corpus_tokens_p50: float
    corpus_tokens_p90: float
    corpus_tokens_max: int
    corpus_tokens_total: int
    requests_per_corpus_top: list[int] = field(default_factory=list)
    mean_shared_tokens: float = 0.0
    mean_unique_tokens: float = 0.0
    definition: str = "subtree under a shared second-level prefix block, plus the root block"

    @property
    def shared_fraction(self) -> float:
        return self.shared_prompt_tokens / max(1, self.prompt_tokens)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shared_fraction": self.shared_fraction}


@dataclass(frozen=True)
class MooncakeSplit:
    """Per request: corpus id (0 = most popular), shared and unique tokens; plus stats."""

    corpus: np.ndarray
    shared_tokens: np.ndarray
    unique_tokens: np.ndarray
    corpus_tokens: np.ndarray  # size of each corpus in tokens, by corpus id
    stats: SharingStats


def split_mooncake(hash_ids: list[list[int]], input_lengths: np.ndarray) -> MooncakeSplit:
    """Read shared corpora off the trace's prefix blocks (see the module docstring)."""
    seen = Counter(h for ids in hash_ids for h in set(ids))
    n = len(hash_ids)
    shared_blocks = np.zeros(n, dtype=np.int64)
    family_of: list[Any] = []
    family_blocks: dict[Any, set[int]] = defaultdict(set)
    for i, ids in enumerate(hash_ids):
        count = 0
        for h in ids:  # sharing is a prefix: count the leading shared blocks
            if seen[h] > 1:
                count += 1
            else:
                break
        shared_blocks[i] = count
        family = ids[1] if count >= 2 else ("root" if count == 1 else None)
        family_of.append(family)
        if family is not None:
            family_blocks[family].update(ids[:count])
    popularity = Counter(f for f in family_of if f is not None)
    order = sorted(popularity, key=lambda f: (-popularity[f], str(f)))
    ids_of = {f: i for i, f in enumerate(order)}
    corpus = np.array([ids_of.get(f, -1) for f in family_of], dtype=np.int64)
    corpus_tokens = np.array([len(family_blocks[f]) * MOONCAKE_BLOCK_TOKENS for f in order],
                             dtype=np.int64)
    lengths = np.asarray(input_lengths, dtype=np.int64)
    shared = np.minimum(shared_blocks * MOONCAKE_BLOCK_TOKENS, np.maximum(lengths - 1, 0))
    unique = np.maximum(lengths - shared, 1)
    shared = lengths - unique
    sizes = corpus_tokens if len(corpus_tokens) else np.zeros(1)
    stats = SharingStats(
        requests=n, prompt_tokens=int(lengths.sum()), shared_prompt_tokens=int(shared.sum()),
        corpora=len(order), corpus_tokens_p50=float(np.percentile(sizes, 50)),
        corpus_tokens_p90=float(np.percentile(sizes, 90)), corpus_tokens_max=int(sizes.max()),
        corpus_tokens_total=int(len(set().union(*family_blocks.values())) * MOONCAKE_BLOCK_TOKENS
                                if family_blocks else 0),
        requests_per_corpus_top=[popularity[f] for f in order[:10]],
        mean_shared_tokens=float(shared.mean()) if n else 0.0,
        mean_unique_tokens=float(unique.mean()) if n else 0.0,
    )
    return MooncakeSplit(corpus, shared, unique, corpus_tokens, stats)


def load_mooncake_rows(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[int]]]:
    """(timestamps ms, input lengths, output lengths, hash_ids) with line-numbered errors."""
    ts, ins, outs, hashes = [], [], [], []
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read the trace: {exc.strerror}") from None
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WorkloadError(f"{path}: line {lineno}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise WorkloadError(f"{path}: line {lineno}: expected a JSON object")
            for key, kind in (("timestamp", (int, float)), ("input_length", int),
                              ("output_length", int), ("hash_ids", list)):
                v = row.get(key)
                if isinstance(v, bool) or not isinstance(v, kind):
                    raise WorkloadError(f"{path}: line {lineno}: field {key!r}: expected "
                                        f"{'a list' if kind is list else 'a number'}, got {v!r}")
            if row["timestamp"] < 0 or row["input_length"] < 1 or row["output_length"] < 0:
                raise WorkloadError(f"{path}: line {lineno}: timestamp >= 0, input_length >= 1 "
                                    f"and output_length >= 0 expected")
            ts.append(float(row["timestamp"]))
            ins.append(row["input_length"])
            outs.append(row["output_length"])
            hashes.append([int(h) for h in row["hash_ids"]])
    if not ts:
        raise WorkloadError(f"{path}: the trace has no requests")
    return np.array(ts), np.array(ins, dtype=np.int64), np.array(outs, dtype=np.int64), hashes
