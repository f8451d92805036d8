"""The HBM plan of a deployment: what a serving replica holds (weights, resident shared
KV) and what is left for per-request KV; the shared KV each shared node must hold.

HBM budget of a replica: ``tp * usable * HBM - weights - resident shared KV``, where
``usable`` (``cluster.unique.hbm_usable_fraction``, default 0.9, as serving engines reserve
the rest for activations, workspace and the CUDA context) is the fraction of each chip's
HBM that may hold weights and KV (the system says what it keeps resident: the corpus
once, the router's chunk means, or nothing); a shared node may fill ``usable * HBM``
(``cluster.shared.hbm_usable_fraction``) with the corpus's KV. Each request
reserves ``ServingSystem.request_kv_tokens`` x KV bytes per token at admission. If nothing
can ever fit, the error names the fields to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hw.specs import ChipSpec
from workloads.models import ModelSpec
from workloads.systems import ServingSystem

GIB = 2**30


@dataclass(frozen=True)
class MemoryPlan:
    """A replica's HBM budget: capacity for per-request KV and what each request needs."""

    replica_hbm_bytes: int  # usable HBM of a replica (tp chips x usable fraction)
    weights_bytes: int
    resident_shared_bytes: int
    kv_capacity_bytes: int
    kv_bytes_per_token: float
    shared_kv_per_shared_node_bytes: int
    carries_shared: bool  # each request holds its own copy of its shared tokens
    unique_usable_fraction: float = 1.0
    shared_usable_fraction: float = 1.0
    shared_node_hbm_bytes: int = 0  # usable HBM of one shared node (0: none in the plan)

    def request_bytes(self, unique: np.ndarray, output: np.ndarray,
                      shared: np.ndarray) -> np.ndarray:
        """KV bytes each request reserves at admission."""
        tokens = unique + output + (shared if self.carries_shared else 0)
        return np.ceil(tokens * self.kv_bytes_per_token).astype(np.int64)

    def to_dict(self) -> dict[str, float]:
        return {
            "replica_hbm_gib": self.replica_hbm_bytes / GIB,
            "weights_gib": self.weights_bytes / GIB,
            "resident_shared_gib": self.resident_shared_bytes / GIB,
            "kv_capacity_gib": self.kv_capacity_bytes / GIB,
            "shared_kv_per_shared_node_gib": self.shared_kv_per_shared_node_bytes / GIB,
            "unique_hbm_usable_fraction": self.unique_usable_fraction,
            "shared_hbm_usable_fraction": self.shared_usable_fraction,
            "shared_node_hbm_gib": self.shared_node_hbm_bytes / GIB,
        }


def memory_plan(model: ModelSpec, precision: str, system: ServingSystem, unique_chip: ChipSpec,
                tp: int, shared_chip: ChipSpec, shared_nodes: int, corpus_tokens: int,
                chunks: int, chunk_tokens: int, corpus_words: str, *,
                unique_usable: float = 1.0, shared_usable: float = 1.0,
                replicas: int = 1) -> MemoryPlan:
    """HBM accounting per replica; a clear error naming the fields when nothing fits.
    ``corpus_words`` says where the corpus size came from (for the errors);
    ``unique_usable`` / ``shared_usable``: the fraction of each chip's HBM usable;
    ``replicas``: copies of each chunk over the shared nodes (each holds that many
    stripes)."""
    kvb = model.kv_bytes_per_token(precision)
    weights = int(math.ceil(model.weight_bytes(precision)))
    hbm = int(tp * unique_usable * unique_chip.hbm_capacity_bytes)
    shared_hbm = int(shared_usable * shared_chip.hbm_capacity_bytes)
    shared_per_node = 0
    resident = int(math.ceil(system.resident_shared_bytes(model, precision, corpus_tokens,
                                                          chunks)))
    if system.disaggregated and corpus_tokens:
        if shared_nodes < 1:
            raise ValueError(f"cluster.shared.nodes: {system.name} with a shared corpus needs "
                             ">= 1 shared node")
        per_node_chunks = -(-chunks * replicas // shared_nodes)
        shared_per_node = int(math.ceil(per_node_chunks * chunk_tokens * kvb))
        if shared_per_node > shared_hbm:
            raise ValueError(
                f"cluster.shared: each of {shared_nodes} shared node(s) must hold "
                f"{shared_per_node / GIB:.1f} GiB of shared KV ({corpus_words}"
                f"{f', {replicas} copies: workload.shared.replicas' if replicas > 1 else ''}), "
                f"more than the "
                f"{shared_hbm / GIB:.1f} GiB usable of the {shared_chip.name}'s "
                f"{shared_chip.hbm_capacity_GiB} GiB (cluster.shared.hbm_usable_fraction "
                f"{shared_usable:g}); add shared nodes or use a larger cluster.shared.chip")
    cap = hbm - weights - resident
    if cap <= 0:
        raise ValueError(
            f"cluster.unique: a replica of {tp} x {unique_chip.name} "
            f"({hbm / GIB:.1f} GiB usable HBM; cluster.unique.chip, cluster.unique.tp, "
            f"cluster.unique.hbm_usable_fraction) cannot hold "
            f"the {model.name} {precision} weights ({weights / GIB:.1f} GiB; model, precision) "
            f"plus resident shared KV ({resident / GIB:.1f} GiB; workload.shared.tokens)")
    return MemoryPlan(hbm, weights, resident, cap, kvb, shared_per_node,
                      carries_shared=system.carries_shared_kv,
                      unique_usable_fraction=unique_usable, shared_usable_fraction=shared_usable,
                      shared_node_hbm_bytes=int(shared_usable * shared_chip.hbm_capacity_bytes)
                      if system.disaggregated and shared_nodes > 0 else 0)


__all__ = ["GIB", "MemoryPlan", "memory_plan"]
