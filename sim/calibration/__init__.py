"""Calibration of hw chip factors against GPU kernel times recorded in moska traces.

kernels: measured kernel -> hw ops that price what was timed; pricing: hw's tile model without
the phases the reference does not launch; fit: bounded Nelder-Mead over ChipSpec factors;
errors: relative-error summaries; preset: write the fitted chip as a new preset; cli: the command.
"""

from sim.calibration.cli import Calibration, calibrate, calibrate_main
from sim.calibration.fit import DEFAULT_FACTORS, FACTORS, FitResult
from sim.calibration.kernels import KernelModel, MeasuredKernel, measured_kernels, predict_all

__all__ = [
    "DEFAULT_FACTORS",
    "FACTORS",
    "Calibration",
    "FitResult",
    "KernelModel",
    "MeasuredKernel",
    "calibrate",
    "calibrate_main",
    "measured_kernels",
    "predict_all",
]
