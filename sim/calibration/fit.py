"""Fit a few ChipSpec factors so hw's predictions match measured kernel times (numpy only).

The objective is the mean over (trace, kernel kind) groups of the group's mean (or median)
|log(pred / meas)|, so a kind or a trace with few samples counts as much as a common one, plus a weak pull of every factor
towards its preset value (log-space ridge) so a factor the trace does not constrain stays put
instead of drifting. The search is deterministic: a coordinate scan over each factor's whole range
(so a factor that is flat near the preset, e.g. mma_efficiency while everything is memory-bound,
still finds the region where it matters), then a bounded Nelder-Mead in log-space with restarts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hw.specs import ChipSpec
from sim.calibration.kernels import KernelModel, MeasuredKernel

RIDGE = 1e-3  # weight of sum (log(p / p0))^2: ~0.05% error per factor off by 2x
CONSTRAINED_MIN = 0.005  # objective rise (0.5% mean log error) at x1.25 for a factor to count as fitted


@dataclass(frozen=True)
class Factor:
    """A fittable ChipSpec field and its valid range (bounds may depend on the chip)."""

    name: str
    bounds: Callable[[ChipSpec], tuple[float, float]]
    start: Callable[[ChipSpec], float]


def _field(name: str) -> Callable[[ChipSpec], float]:
    return lambda chip: float(getattr(chip, name))


def _sm_bw_start(chip: ChipSpec) -> float:
    return chip.sm_max_bandwidth_GBps or 2.5 * chip.hbm_bandwidth_GBps / chip.sm_count


FACTORS: dict[str, Factor] = {
    "mma_efficiency": Factor("mma_efficiency", lambda c: (0.02, 1.0), _field("mma_efficiency")),
    "mem_efficiency": Factor("mem_efficiency", lambda c: (0.02, 1.0), _field("mem_efficiency")),
    "launch_overhead_ns": Factor("launch_overhead_ns", lambda c: (10.0, 50_000.0),
                                 lambda c: max(10.0, c.launch_overhead_ns)),
    "mem_latency_ns": Factor("mem_latency_ns", lambda c: (10.0, 20_000.0),
                             lambda c: max(10.0, c.mem_latency_ns)),
    "sm_max_bandwidth_GBps": Factor(
        "sm_max_bandwidth_GBps",
        lambda c: (0.25 * c.hbm_bandwidth_GBps / c.sm_count, c.hbm_bandwidth_GBps),
        _sm_bw_start,
    ),
}
DEFAULT_FACTORS = ("mma_efficiency", "mem_efficiency", "launch_overhead_ns", "mem_latency_ns")
OBJECTIVES = ("mean", "median")


@dataclass(frozen=True)
class FitResult:
    """Fitted values, the chip they make, and how well the trace pins each one down."""

    chip: ChipSpec
    base: dict[str, float]
    fitted: dict[str, float]
    constrained: dict[str, bool]
    objective_before: float
    objective_after: float
    evaluations: int


class Problem:
    """The measured kernels to fit, with identical models priced once per candidate chip."""

    def __init__(self, kernels: Sequence[MeasuredKernel], objective: str = "mean") -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {', '.join(OBJECTIVES)}, got {objective!r}")
        index: dict[KernelModel, int] = {}
        self.slot = np.array([index.setdefault(k.model, len(index)) for k in kernels], dtype=np.int64)
        self.models = list(index)
        self.meas = np.array([k.measured_ns for k in kernels], dtype=np.float64)
        labels = [(k.source, k.kind) for k in kernels]
        self.groups = [np.flatnonzero([lab == key for lab in labels]) for key in dict.fromkeys(labels)]
        self.reduce = np.mean if objective == "mean" else np.median

    def predict(self, chip: ChipSpec) -> np.ndarray:
        per_model = np.array([m.predict_ns(chip) for m in self.models], dtype=np.float64)
        return per_model[self.slot]

    def loss(self, chip: ChipSpec) -> float:
        """Mean over (trace, kind) groups of the group's mean/median |log(pred / meas)|."""
        err = np.abs(np.log(np.maximum(self.predict(chip), 1.0) / self.meas))
        return float(np.mean([self.reduce(err[g]) for g in self.groups]))


def with_factors(chip: ChipSpec, values: dict[str, float]) -> ChipSpec:
    """``chip`` with the given fields replaced."""
    return dataclasses.replace(chip, **values)


def nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                step: float = 0.25, max_evals: int = 400, tol: float = 1e-6) -> tuple[np.ndarray, float, int]:
    """Minimise ``f`` over the box [lo, hi] from ``x0`` (points are clipped into the box)."""
    n = len(x0)
    clip = lambda x: np.minimum(np.maximum(x, lo), hi)
    pts = [clip(x0.astype(float))]
    for i in range(n):
        p = pts[0].copy()
        p[i] = p[i] + step if p[i] + step <= hi[i] else p[i] - step
        pts.append(clip(p))
    vals = [f(p) for p in pts]
    evals = len(pts)
    while evals < max_evals:
        order = np.argsort(vals, kind="stable")
        pts = [pts[i] for i in order]
        vals = [vals[i] for i in order]
        size = max(float(np.max(np.abs(p - pts[0]))) for p in pts[1:])
        if vals[-1] - vals[0] <= tol and size <= 1e-4:
            break
        centroid = np.mean(pts[:-1], axis=0)
        refl = clip(centroid + (centroid - pts[-1]))
        fr = f(refl)
        evals += 1
        if fr < vals[0]:
            exp = clip(centroid + 2.0 * (centroid - pts[-1]))
            fe = f(exp)
            evals += 1
            pts[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
            continue
        if fr < vals[-2]:
            pts[-1], vals[-1] = refl, fr
            continue
        inside = fr >= vals[-1]
        con = clip(centroid + 0.5 * ((pts[-1] if inside else refl) - centroid))
        fc = f(con)
        evals += 1
        if fc < min(fr, vals[-1]):
            pts[-1], vals[-1] = con, fc
            continue
        for i in range(1, n + 1):  # shrink towards the best point
            pts[i] = clip(pts[0] + 0.5 * (pts[i] - pts[0]))
            vals[i] = f(pts[i])
        evals += n
    best = int(np.argmin(vals))
    return pts[best], float(vals[best]), evals


def coordinate_scan(f: Callable[[np.ndarray], float], z: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    points: int = 9, sweeps: int = 2) -> tuple[np.ndarray, float, int]:
    """Set each coordinate in turn to the best of ``points`` evenly spaced values over its range."""
    z = z.copy()
    best = f(z)
    evals = 1
    for _ in range(sweeps):
        for i in range(len(z)):
            for v in np.linspace(lo[i], hi[i], points):
                trial = z.copy()
                trial[i] = v
                val = f(trial)
                evals += 1
                if val < best - 1e-12:
                    z, best = trial, val
    return z, best, evals


def fit(kernels: Sequence[MeasuredKernel], chip: ChipSpec, factors: Sequence[str] = DEFAULT_FACTORS,
        objective: str = "mean", restarts: int = 3, max_evals: int = 400) -> FitResult:
    """Fit ``factors`` of ``chip`` to ``kernels`` (none: evaluate only); deterministic for equal input."""
    unknown = [f for f in factors if f not in FACTORS]
    if unknown:
        raise ValueError(f"--fit: unknown factor {unknown[0]!r}; choose from {', '.join(FACTORS)}")
    if not kernels:
        raise ValueError("no measured kernels to fit")
    problem = Problem(kernels, objective)
    if not factors:  # evaluate only: the chip as it is
        loss = problem.loss(chip)
        return FitResult(chip, {}, {}, {}, loss, loss, 1)
    specs = [FACTORS[f] for f in factors]
    bounds = np.log(np.array([s.bounds(chip) for s in specs], dtype=np.float64))
    start = np.array([min(max(s.start(chip), math.exp(b[0])), math.exp(b[1])) for s, b in zip(specs, bounds)])
    z0 = np.log(start)

    def chip_at(z: np.ndarray) -> ChipSpec:
        return with_factors(chip, {s.name: float(math.exp(v)) for s, v in zip(specs, z)})

    def f(z: np.ndarray) -> float:
        return problem.loss(chip_at(z)) + RIDGE * float(np.sum((z - z0) ** 2))

    z, best, evals = coordinate_scan(f, z0, bounds[:, 0], bounds[:, 1])
    for _ in range(restarts):
        z_new, val, used = nelder_mead(f, z, bounds[:, 0], bounds[:, 1], max_evals=max_evals)
        evals += used
        if val >= best - 1e-9:
            if val < best:
                z, best = z_new, val
            break
        z, best = z_new, val
    fitted_chip = chip_at(z)
    after = problem.loss(fitted_chip)
    constrained = {}
    for i, s in enumerate(specs):
        rises = []
        for d in (math.log(1.25), -math.log(1.25)):
            zz = z.copy()
            zz[i] = min(max(zz[i] + d, bounds[i, 0]), bounds[i, 1])
            rises.append(problem.loss(chip_at(zz)) - after)
        constrained[s.name] = max(rises) >= CONSTRAINED_MIN
    return FitResult(
        chip=fitted_chip,
        base={s.name: float(getattr(chip, s.name)) for s in specs},
        fitted={s.name: float(getattr(fitted_chip, s.name)) for s in specs},
        constrained=constrained,
        objective_before=problem.loss(chip),
        objective_after=after,
        evaluations=evals,
    )
