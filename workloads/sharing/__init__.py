"""Shared corpora: synthetic ones (size, chunking, chunk routing, popularity), the real
sharing of the Mooncake trace, and the statistics of either."""

from workloads.sharing.corpus import (
    EXACT_INCLUSION_MAX,
    PLACEMENT_SEED,
    ChunkRouter,
    SharedCorpusSpec,
    assign_corpora,
    expected_chunk_batch,
    zipf_exponent,
    zipf_weights,
)
from workloads.sharing.mooncake import MOONCAKE_BLOCK_TOKENS, MooncakeSplit, split_mooncake
from workloads.sharing.stats import (
    MOONCAKE_DEFINITION,
    TOP_CORPORA,
    SharingStats,
    sharing_stats,
    synthetic_sharing,
)

__all__ = [
    "EXACT_INCLUSION_MAX",
    "MOONCAKE_BLOCK_TOKENS",
    "MOONCAKE_DEFINITION",
    "PLACEMENT_SEED",
    "TOP_CORPORA",
    "ChunkRouter",
    "MooncakeSplit",
    "SharedCorpusSpec",
    "SharingStats",
    "assign_corpora",
    "expected_chunk_batch",
    "sharing_stats",
    "split_mooncake",
    "synthetic_sharing",
    "zipf_exponent",
    "zipf_weights",
]
