"""Node processes: unique nodes (continuous batching), shared nodes (chunk batching), and
the prices of their work."""

from sim.engine.nodes.pricing import Pricer
from sim.engine.nodes.shared import SharedNode
from sim.engine.nodes.unique import UniqueNode

__all__ = ["Pricer", "SharedNode", "UniqueNode"]
