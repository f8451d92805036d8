"""Sharing statistics: how much of a workload's prompts is shared, in how many corpora of
what sizes, and how popular they are (synthetic corpora and Mooncake's alike)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from workloads.sharing.corpus import SharedCorpusSpec

TOP_CORPORA = 10


@dataclass(frozen=True)
class SharingStats:
    """How much of a workload's prompts is shared, in how many corpora of what sizes, and
    how popular they are. JSON-ready through ``to_dict``."""

    source: str  # "synthetic" or the trace format
    definition: str  # what a corpus is
    requests: int
    requests_sharing: int  # requests with shared tokens > 0
    prompt_tokens: int  # shared + unique, over all requests
    shared_prompt_tokens: int
    shared_fraction: float  # shared_prompt_tokens / prompt_tokens
    corpora: int
    corpus_tokens_p50: float
    corpus_tokens_p90: float
    corpus_tokens_max: int
    corpus_tokens_total: int  # sum of corpus sizes
    distinct_shared_tokens: int  # the shared KV once (a trunk common to corpora counted once)
    requests_per_corpus_p50: float
    requests_per_corpus_p90: float
    requests_per_corpus_max: int
    requests_per_corpus_top: tuple[int, ...]  # the most popular corpora, descending
    top_corpora_request_share: float  # share of sharing requests in the top corpora
    mean_shared_tokens: float  # per request
    mean_unique_tokens: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["requests_per_corpus_top"] = list(self.requests_per_corpus_top)
        return d


def sharing_stats(source: str, definition: str, shared: np.ndarray, unique: np.ndarray,
                  corpus: np.ndarray, corpus_tokens: np.ndarray,
                  distinct_shared_tokens: int) -> SharingStats:
    """Stats of per-request ``shared``/``unique`` tokens and ``corpus`` ids (read only
    where shared > 0), for corpora of ``corpus_tokens`` (indexed by id)."""
    shared = np.asarray(shared, dtype=np.int64)
    unique = np.asarray(unique, dtype=np.int64)
    sizes = np.asarray(corpus_tokens, dtype=np.int64)
    sharing = shared > 0
    per_corpus = np.bincount(np.asarray(corpus)[sharing], minlength=len(sizes))
    prompt = int(shared.sum() + unique.sum())
    n_sharing = int(sharing.sum())
    top = np.sort(per_corpus)[::-1][:TOP_CORPORA]

    def pct(a: np.ndarray, q: float) -> float:
        return float(np.percentile(a, q)) if len(a) else 0.0

    return SharingStats(
        source=source, definition=definition, requests=len(shared), requests_sharing=n_sharing,
        prompt_tokens=prompt, shared_prompt_tokens=int(shared.sum()),
        shared_fraction=float(shared.sum() / prompt) if prompt else 0.0,
        corpora=len(sizes), corpus_tokens_p50=pct(sizes, 50), corpus_tokens_p90=pct(sizes, 90),
        corpus_tokens_max=int(sizes.max()) if len(sizes) else 0,
        corpus_tokens_total=int(sizes.sum()), distinct_shared_tokens=int(distinct_shared_tokens),
        requests_per_corpus_p50=pct(per_corpus, 50), requests_per_corpus_p90=pct(per_corpus, 90),
        requests_per_corpus_max=int(per_corpus.max()) if len(per_corpus) else 0,
        requests_per_corpus_top=tuple(int(c) for c in top),
        top_corpora_request_share=float(top.sum() / n_sharing) if n_sharing else 0.0,
        mean_shared_tokens=float(shared.mean()) if len(shared) else 0.0,
        mean_unique_tokens=float(unique.mean()) if len(unique) else 0.0,
    )


def synthetic_sharing(spec: SharedCorpusSpec, corpus: np.ndarray,
                      unique_tokens: np.ndarray) -> SharingStats:
    """Stats of a synthetic workload: every request reads its whole corpus of ``tokens``."""
    unique = np.asarray(unique_tokens, dtype=np.int64)
    shared = np.full(len(unique), spec.tokens, dtype=np.int64)
    corpora = "1 synthetic corpus" if spec.corpora == 1 else f"{spec.corpora} synthetic corpora"
    definition = (f"{corpora} of {spec.tokens} tokens, requests spread "
                  f"by corpus_popularity {spec.corpus_popularity!r}; a query keeps "
                  f"{spec.chunks_selected_per_query} of {spec.n_chunks} chunks")
    return sharing_stats("synthetic", definition, shared, unique, corpus,
                         np.full(spec.corpora, spec.tokens), spec.tokens * spec.corpora)


# -- Mooncake: corpora from prefix blocks -------------------------------------------------
MOONCAKE_DEFINITION = ("a corpus is the prefix tree of shared 512-token blocks (blocks in "
                       ">= 2 requests) under one first block below the trunk (the prefix all "
                       "requests share), plus the trunk; requests sharing only the trunk read "
                       "the trunk corpus")


__all__ = ["MOONCAKE_DEFINITION", "TOP_CORPORA", "SharingStats", "sharing_stats", "synthetic_sharing"]
