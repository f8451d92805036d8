"""The SimPy model built from an ``Experiment``: the kernel (integer-ns clock, seeded RNG
streams), the deployment's HBM plan, cluster wiring, nodes, fabric, routing, the request
driver, records and the timeline."""

from sim.engine.experiment import Experiment, make_experiment
from sim.engine.kernel import STREAMS, Engine, RngStreams, ceil_ns

__all__ = ["STREAMS", "Engine", "Experiment", "RngStreams", "ceil_ns", "make_experiment"]
