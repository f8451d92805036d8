"""Token-count distributions: how many unique prompt tokens or output tokens a request has."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from workloads.errors import WorkloadError

KINDS = ("fixed", "uniform", "exponential", "lognormal", "normal")


@dataclass(frozen=True)
class TokenDistribution:
    """A law over whole token counts >= 1, sampled then rounded and clipped to [min, max]."""

    dist: str = "fixed"
    mean: float = 1.0
    cv: float = 0.0
    min: int = 1
    max: int | None = None

    @classmethod
    def from_config(cls, value: Any, field: str) -> TokenDistribution:
        """From a plain count, a mapping, or a resolved config model (``sim.config``)."""
        if isinstance(value, bool):
            raise WorkloadError(f"{field}: expected a size >= 1 or a distribution, got {value!r}")
        if isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer()):
            if value < 1:
                raise WorkloadError(f"{field}: expected a size >= 1, got {value}")
            return cls("fixed", float(value), 0.0, int(value), int(value))
        data = value if isinstance(value, dict) else getattr(value, "__dict__", None)
        if not isinstance(data, dict) or "dist" not in data:
            raise WorkloadError(f"{field}: expected a size >= 1 or a mapping {{dist: ...}}, "
                                f"got {value!r}")
        kind = data["dist"]
        if kind not in KINDS:
            raise WorkloadError(f"{field}.dist: expected one of {', '.join(KINDS)}, got {kind!r}")
        lo = int(data.get("min") if data.get("min") is not None else 1)
        hi = data.get("max")
        hi = int(hi) if hi is not None else None
        if kind == "uniform":
            if hi is None or hi < lo:
                raise WorkloadError(f"{field}.max: expected a size >= min ({lo}), got {hi}")
            return cls("uniform", (lo + hi) / 2, 0.0, max(lo, 1), hi)
        mean = data.get("mean")
        if mean is None or mean <= 0:
            raise WorkloadError(f"{field}.mean: expected a number > 0, got {mean!r}")
        cv = {"fixed": 0.0, "exponential": 1.0}.get(kind, data.get("cv"))
        if cv is None or cv < 0:
            raise WorkloadError(f"{field}.cv: expected a number > 0, got {cv!r}")
        if kind == "fixed":
            return cls("fixed", float(mean), 0.0, int(mean), int(mean))
        return cls(kind, float(mean), float(cv), max(lo, 1), hi)

    def mean_value(self) -> float:
        """The law's mean before rounding and clipping."""
        return self.mean

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` counts (int64, each in [max(min, 1), max])."""
        if self.dist == "fixed":
            x = np.full(n, self.mean)
        elif self.dist == "uniform":
            x = rng.integers(self.min, self.max + 1, size=n).astype(float)
        elif self.dist == "exponential":
            x = rng.exponential(self.mean, size=n)
        elif self.dist == "lognormal":
            sigma2 = math.log1p(self.cv**2)
            mu = math.log(self.mean) - sigma2 / 2
            x = rng.lognormal(mu, math.sqrt(sigma2), size=n)
        else:
            x = rng.normal(self.mean, self.cv * self.mean, size=n)
        hi = self.max if self.max is not None else np.inf
        return np.clip(np.rint(x), max(self.min, 1), hi).astype(np.int64)
