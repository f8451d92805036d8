"""Calibration of hw against measured GPU kernel and link times.

datasets: probe files, Vidur's H100 profiles and moska traces as samples tagged train / held out;
profile_fit: fit kernel profiles and links on the training samples, report held-out error, refuse a
fit that is worse held out than the uncalibrated model; kernels: what each traced kernel is priced
as; fit: the bounded Nelder-Mead; errors: error summaries; preset / cli: writing and the command.
Submodules are imported where used (``from sim.calibration.calibrate import run_calibration``).
"""
