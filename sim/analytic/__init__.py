"""Closed forms: the steady state of each system (the paper's kind of model, no queueing),
and the sweeps of ``moska-sim analyze``."""

from sim.analytic.steady_state import (
    FABRIC_HOPS,
    Scenario,
    SystemPoint,
    baseline_state_bytes,
    best_point,
    evaluate,
    op_time_ns,
    scenario,
    step_from_ops,
    step_latency_ns,
    systems,
)

__all__ = [
    "FABRIC_HOPS",
    "Scenario",
    "SystemPoint",
    "baseline_state_bytes",
    "best_point",
    "evaluate",
    "op_time_ns",
    "scenario",
    "step_from_ops",
    "step_latency_ns",
    "systems",
]
