"""The searches calibration uses (kept under this name for old imports): see sim.calibration.search."""

from sim.calibration.search import coordinate_scan, nelder_mead

__all__ = ["coordinate_scan", "nelder_mead"]
