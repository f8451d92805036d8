"""Node processes: unique nodes (continuous batching), shared nodes (chunk batching), and
the prices of their work."""

from sim.nodes.pricing import Pricer
from sim.nodes.shared import SharedNode
from sim.nodes.unique import UniqueNode

__all__ = ["Pricer", "SharedNode", "UniqueNode"]
