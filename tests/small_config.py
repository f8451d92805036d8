"""A small, busy experiment config as plain data, for tests that need a whole run."""

from __future__ import annotations

from typing import Any


def small_config(name: str = "tiny", **over: Any) -> dict:
    """MoSKA on 2 + 2 nodes, 256Ki shared tokens, 40 Poisson requests; ``over`` sets
    fields by dotted path (``small_config(**{"run.requests": 5})``)."""
    d = {
        "name": name,
        "model": "llama-3.1-8b",
        "precision": "fp8",
        "system": "moska",
        "cluster": {
            "unique": {"nodes": 2, "chip": "moska-unique"},
            "shared": {"nodes": 2, "chip": "moska-shared"},
            "fabric": {"topology": "switch", "link": {"bandwidth_GBps": 450, "latency_ns": 1000}},
        },
        "workload": {
            "arrivals": {"kind": "poisson", "rate_per_s": 50},
            "unique_tokens": 1024,
            "output_tokens": {"dist": "uniform", "min": 2, "max": 30},
            "shared": {"tokens": "256Ki", "chunk_tokens": 2048, "keep_fraction": 0.25},
        },
        "batching": {"max_batch": 64, "window_us": 20},
        "run": {"requests": 40, "seed": 3, "granularity": "step"},
    }
    for key, value in over.items():
        node = d
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return d
