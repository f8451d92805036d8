"""Token-count laws (a request's unique prompt tokens, its output tokens) read from config.

A config value is a plain count (every request gets it) or a mapping
``{dist: fixed|uniform|exponential|lognormal|normal, mean, cv, min, max}``; draws are
rounded to whole tokens and clipped to ``[max(min, 1), max]`` so every count is >= 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from workloads.errors import WorkloadError

KINDS = ("fixed", "uniform", "exponential", "lognormal", "normal")
_FIELDS = ("dist", "mean", "cv", "min", "max")
_EXPECTED = ("an integer >= 1 or a mapping {dist: fixed|uniform|exponential|lognormal|normal, "
             "mean, cv, min, max}")


@dataclass(frozen=True)
class TokenDistribution:
    """A law over token counts: ``dist`` with configured mean ``value`` and coefficient of
    variation ``cv``; samples are rounded and clipped to ``[min, max]`` (``max`` None: no cap).

    ``value`` is the configured mean (the fixed count for ``fixed``); ``mean()`` is the
    law's analytic mean before rounding and clipping. ``min`` may be 0 as configured; draws
    are still clipped to >= 1.
    """

    dist: str
    value: float
    cv: float = 0.0
    min: int = 1
    max: int | None = None

    def __post_init__(self) -> None:
        if self.dist not in KINDS:
            raise WorkloadError(f"dist: expected one of {', '.join(KINDS)}, got {self.dist!r}")
        if self.min < 0 or (self.max is not None and self.max < max(self.min, 1)):
            raise WorkloadError(f"{self.dist}: expected 0 <= min <= max and max >= 1, "
                                f"got [{self.min}, {self.max}]")

    # -- construction --------------------------------------------------------------------
    @classmethod
    def fixed(cls, count: int) -> TokenDistribution:
        """Every request gets ``count`` tokens."""
        return cls("fixed", float(count), 0.0, int(count), int(count))

    @classmethod
    def from_config(cls, value: Any, field: str) -> TokenDistribution:
        """From a plain count, a mapping, or a resolved config model (anything with the
        mapping's fields as attributes); a bad value raises ``WorkloadError`` naming ``field``."""
        if _is_int(value):
            if value < 1:
                raise WorkloadError(f"{field}: expected an integer >= 1, got {value!r}")
            return cls.fixed(int(value))
        data = _as_mapping(value)
        if data is None:
            raise WorkloadError(f"{field}: expected {_EXPECTED}, got {value!r}")
        data = {k: v for k, v in data.items() if v is not None}
        for key in data:
            if key not in _FIELDS:
                raise WorkloadError(f"{field}.{key}: unknown field; expected one of "
                                    f"{', '.join(_FIELDS)}")
        kind = data.get("dist")
        if kind not in KINDS:
            raise WorkloadError(f"{field}.dist: expected one of {', '.join(KINDS)}, got {kind!r}")
        lo = _count(data.get("min", 1), f"{field}.min", least=0)
        hi = _count(data["max"], f"{field}.max", least=1) if "max" in data else None
        if hi is not None and hi < lo:
            raise WorkloadError(f"{field}.max: expected an integer >= min ({lo}), got {hi}")
        if kind == "uniform":
            if hi is None:
                raise WorkloadError(f"{field}.max: expected an integer >= min ({lo}) for dist "
                                    "uniform, got nothing")
            for key in ("mean", "cv"):
                if key in data:
                    raise WorkloadError(f"{field}.{key}: not used by dist uniform (it takes min "
                                        "and max)")
            return cls("uniform", (lo + hi) / 2, _uniform_cv(lo, hi), lo, hi)
        if kind == "fixed":
            count = _count(data.get("mean"), f"{field}.mean", least=1)
            return cls.fixed(count)
        mean = _number(data.get("mean"), f"{field}.mean")
        if kind == "exponential":
            if "cv" in data and float(data["cv"]) != 1.0:
                raise WorkloadError(f"{field}.cv: dist exponential has cv 1, got {data['cv']!r}")
            cv = 1.0
        elif kind == "lognormal":
            cv = _number(data.get("cv", 1.0), f"{field}.cv")
        else:
            cv = _number(data.get("cv"), f"{field}.cv")
        if mean < lo or (hi is not None and mean > hi):
            raise WorkloadError(f"{field}.mean: expected a number within [min, max] = "
                                f"[{lo}, {hi if hi is not None else 'inf'}], got {mean}")
        return cls(kind, mean, cv, lo, hi)

    # -- the law -------------------------------------------------------------------------
    def mean(self) -> float:
        """The analytic mean of the law before rounding and clipping."""
        return self.value

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` token counts (int64, each in ``[max(min, 1), max]``)."""
        lo = max(self.min, 1)
        if self.dist == "fixed":
            return np.full(n, int(self.value), dtype=np.int64)
        if self.dist == "uniform":
            assert self.max is not None
            return np.maximum(rng.integers(self.min, self.max + 1, size=n, dtype=np.int64), lo)
        if self.dist == "exponential":
            x = rng.exponential(self.value, size=n)
        elif self.dist == "lognormal":
            sigma2 = math.log1p(self.cv**2)
            x = rng.lognormal(math.log(self.value) - sigma2 / 2, math.sqrt(sigma2), size=n)
        else:
            x = rng.normal(self.value, self.cv * self.value, size=n)
        hi = float(self.max) if self.max is not None else np.inf
        return np.clip(np.rint(x), lo, hi).astype(np.int64)


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    """A mapping's items, a config model's fields (``model_dump``), or None."""
    if isinstance(value, Mapping):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if hasattr(value, "dist"):
        return {k: getattr(value, k) for k in _FIELDS if hasattr(value, k)}
    return None


def _count(value: Any, field: str, least: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value) or value < least:
        raise WorkloadError(f"{field}: expected an integer >= {least}, got {value!r}")
    return int(value)


def _number(value: Any, field: str) -> float:
    if (not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value)
            or value <= 0):
        raise WorkloadError(f"{field}: expected a number > 0, got {value!r}")
    return float(value)


def _uniform_cv(lo: int, hi: int) -> float:
    """cv of the discrete uniform law on {lo..hi} (sd sqrt(((hi-lo+1)^2 - 1) / 12))."""
    mean = (lo + hi) / 2
    return math.sqrt(((hi - lo + 1) ** 2 - 1) / 12) / mean if mean > 0 else 0.0
