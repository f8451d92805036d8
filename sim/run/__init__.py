"""One experiment end to end: ``simulate(experiment, router=None)`` (used by run, replay,
compare and sweep alike), the summary, the results folder, and trace replay."""

from sim.run.simulate import RunResult, request_rows, run_simulation, simulate

__all__ = ["RunResult", "request_rows", "run_simulation", "simulate"]
