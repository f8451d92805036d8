"""Deterministic bounded minimisers (numpy only): a coordinate scan over each parameter's whole range,
then Nelder-Mead clipped to the box. The scan first, so a parameter that is flat near its start
(an efficiency while everything is memory-bound) does not strand the simplex."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


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


__all__ = ["coordinate_scan", "nelder_mead"]
