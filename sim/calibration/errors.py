"""Relative-error summaries of predicted vs measured kernel times, per kernel kind and overall."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALL = "all"


@dataclass(frozen=True)
class ErrorStats:
    """Median and p90 of |pred - meas| / meas over ``n`` kernels, plus the median signed ratio."""

    n: int
    median: float
    p90: float
    median_ratio: float  # median of pred / meas: > 1 means the model is slow, < 1 fast

    def to_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "median": self.median, "p90": self.p90, "median_ratio": self.median_ratio}


def relative_errors(pred: np.ndarray, meas: np.ndarray) -> np.ndarray:
    """|pred - meas| / meas, elementwise."""
    return np.abs(pred - meas) / meas


def stats(pred: np.ndarray, meas: np.ndarray) -> ErrorStats:
    """ErrorStats of one group of kernels (NaNs when empty)."""
    if len(meas) == 0:
        return ErrorStats(0, float("nan"), float("nan"), float("nan"))
    rel = relative_errors(pred, meas)
    return ErrorStats(
        n=len(meas),
        median=float(np.median(rel)),
        p90=float(np.percentile(rel, 90)),
        median_ratio=float(np.median(pred / meas)),
    )


def stats_by_kind(kinds: Sequence[str], pred: np.ndarray, meas: np.ndarray) -> dict[str, ErrorStats]:
    """ErrorStats per kind (in first-seen order) and for all kernels together under ``ALL``."""
    labels = np.asarray(kinds)
    out = {k: stats(pred[labels == k], meas[labels == k]) for k in dict.fromkeys(kinds)}
    out[ALL] = stats(pred, meas)
    return out
