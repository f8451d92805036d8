"""``moska-sim calibrate``: the command's entry point (implementation in sim.calibration)."""

from sim.calibration.cli import calibrate_main

__all__ = ["calibrate_main"]
