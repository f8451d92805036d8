"""Cost per million generated tokens from the node prices a config gives.

cost = (sum over node groups of nodes x price_per_hour) x simulated hours
       / (tokens generated / 1e6)

Every node the config names is paid for, busy or not (a baseline leaves shared nodes idle
but the cluster still has them). No cost when a group with nodes has no price: a partial
price would understate the cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GROUPS = ("unique", "shared")


def node_prices(config: Any) -> dict[str, float] | None:
    """``{'unique': USD/node-hour, 'shared': ...}`` for groups with nodes, or None when any
    such group has no ``price_per_hour``."""
    prices: dict[str, float] = {}
    for group in GROUPS:
        spec = getattr(config.cluster, group)
        if spec.nodes == 0:
            continue
        if spec.price_per_hour is None:
            return None
        prices[group] = float(spec.price_per_hour)
    return prices or None


def cluster_price_per_hour(config: Any) -> float | None:
    """USD per hour of the whole cluster (nodes x price, summed), or None if unpriced."""
    prices = node_prices(config)
    if prices is None:
        return None
    return sum(getattr(config.cluster, g).nodes * p for g, p in prices.items())


def cost_per_million_tokens(price_per_hour: float | None, sim_time_s: float | None,
                            tokens: float | None) -> float | None:
    """USD per million tokens: price x hours / (tokens / 1e6); None without a price, time or
    tokens."""
    if price_per_hour is None or sim_time_s is None or not tokens or tokens <= 0:
        return None
    return price_per_hour * (sim_time_s / 3600.0) / (tokens / 1e6)


def run_cost(config: Any, summary: Mapping[str, Any]) -> float | None:
    """Cost per million tokens of a finished run, from its config and ``summary.json``."""
    return cost_per_million_tokens(cluster_price_per_hour(config), summary.get("sim_time_s"),
                                   summary.get("tokens_generated"))


__all__ = ["cluster_price_per_hour", "cost_per_million_tokens", "node_prices", "run_cost"]
