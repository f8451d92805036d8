"""Token-count laws: moments within CLT bounds, clipping, config forms, errors naming fields."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from workloads.distributions import TokenDistribution
from workloads.errors import WorkloadError

N = 200_000
Z = 5.0  # bounds at 5 standard errors: a false failure has probability < 1e-6


def moments_within_clt(x: np.ndarray, mean: float, var: float) -> None:
    """The sample mean and variance agree with (mean, var) within Z standard errors; the
    variance's standard error sqrt((m4 - var^2) / n) uses the sample's fourth moment."""
    n = len(x)
    assert abs(x.mean() - mean) < Z * math.sqrt(var / n)
    d2 = (x - x.mean()) ** 2
    se_var = math.sqrt(max(np.mean(d2**2) - d2.mean() ** 2, 0.0) / n)
    assert abs(x.var() - var) < Z * se_var


@pytest.mark.parametrize("cfg", [
    {"dist": "lognormal", "mean": 2048, "cv": 0.5},
    {"dist": "lognormal", "mean": 5000, "cv": 1.5},
    {"dist": "exponential", "mean": 400},
    {"dist": "normal", "mean": 1000, "cv": 0.1},
])
def test_laws_have_the_configured_mean_and_cv(cfg):
    # means large enough that rounding and the clip at 1 move nothing measurable
    d = TokenDistribution.from_config(cfg, "f")
    s = d.sample(np.random.default_rng(0), N)
    assert s.dtype == np.int64 and s.shape == (N,) and (s >= 1).all()
    x = s.astype(float)
    assert d.mean() == cfg["mean"]
    moments_within_clt(x, d.mean(), (d.cv * d.mean()) ** 2 + 1 / 12)  # + rounding's variance


def test_uniform_is_the_discrete_uniform_on_min_max():
    d = TokenDistribution.from_config({"dist": "uniform", "min": 10, "max": 30}, "f")
    x = d.sample(np.random.default_rng(1), N)
    assert x.min() == 10 and x.max() == 30
    assert d.mean() == 20
    moments_within_clt(x.astype(float), 20, (21**2 - 1) / 12)
    assert d.cv == pytest.approx(math.sqrt((21**2 - 1) / 12) / 20)


def test_fixed_from_int_and_mapping():
    rng = np.random.default_rng(0)
    for value in (64, {"dist": "fixed", "mean": 64}, np.int64(64)):
        d = TokenDistribution.from_config(value, "f")
        assert d.mean() == 64
        s = d.sample(rng, 5)
        assert s.dtype == np.int64 and (s == 64).all()


def test_samples_are_clipped_to_min_max_and_at_least_one():
    d = TokenDistribution.from_config({"dist": "lognormal", "mean": 100, "cv": 2, "min": 50,
                                       "max": 120}, "f")
    x = d.sample(np.random.default_rng(1), 20_000)
    assert x.min() == 50 and x.max() == 120
    n = TokenDistribution.from_config({"dist": "normal", "mean": 5, "cv": 2, "min": 0}, "f")
    y = n.sample(np.random.default_rng(2), 20_000)
    assert y.min() == 1  # normal draws below 1 are clipped to 1 even with min 0
    u = TokenDistribution.from_config({"dist": "uniform", "min": 0, "max": 3}, "f")
    assert set(u.sample(np.random.default_rng(3), 2000).tolist()) == {1, 2, 3}


def test_config_model_objects_are_accepted():
    """A resolved config model (attributes, ``model_dump``) reads like its mapping."""
    ns = SimpleNamespace(dist="lognormal", mean=2048.0, cv=0.5, min=128, max=16384)
    d = TokenDistribution.from_config(ns, "workload.unique_tokens")
    assert d == TokenDistribution("lognormal", 2048.0, 0.5, 128, 16384)
    sim_config = pytest.importorskip("sim.config.schema")
    model = sim_config.LognormalDist(dist="lognormal", mean=2048, cv=0.5, min=128, max=16384)
    assert TokenDistribution.from_config(model, "workload.unique_tokens") == d


def test_same_seed_same_samples():
    d = TokenDistribution.from_config({"dist": "lognormal", "mean": 300, "cv": 0.7}, "f")
    a = d.sample(np.random.default_rng(9), 1000)
    assert (a == d.sample(np.random.default_rng(9), 1000)).all()
    assert (a != d.sample(np.random.default_rng(10), 1000)).any()


@pytest.mark.parametrize("bad,message", [
    (0, "f: expected an integer >= 1, got 0"),
    (-3, "f: expected an integer >= 1, got -3"),
    (True, "f: expected an integer >= 1 or a mapping"),
    ("many", "f: expected an integer >= 1 or a mapping"),
    ({"mean": 3},
     "f.dist: expected one of fixed, uniform, exponential, lognormal, normal, got None"),
    ({"dist": "zeta", "mean": 3},
     "f.dist: expected one of fixed, uniform, exponential, lognormal, normal, got 'zeta'"),
    ({"dist": "lognormal", "mean": -1}, "f.mean: expected a number > 0, got -1"),
    ({"dist": "lognormal", "mean": 10, "cv": 0}, "f.cv: expected a number > 0, got 0"),
    ({"dist": "normal", "mean": 10}, "f.cv: expected a number > 0, got None"),
    ({"dist": "exponential", "mean": 10, "cv": 2}, "f.cv: dist exponential has cv 1, got 2"),
    ({"dist": "uniform", "min": 5, "max": 2}, "f.max: expected an integer >= min (5), got 2"),
    ({"dist": "uniform", "min": 5}, "f.max: expected an integer >= min (5) for dist uniform"),
    ({"dist": "uniform", "min": 1, "max": 4, "mean": 2}, "f.mean: not used by dist uniform"),
    ({"dist": "lognormal", "mean": 10, "min": 1.5}, "f.min: expected an integer >= 0, got 1.5"),
    ({"dist": "lognormal", "mean": 500, "max": 100},
     "f.mean: expected a number within [min, max] = [1, 100], got 500.0"),
    ({"dist": "lognormal", "mean": 10, "sigma": 1}, "f.sigma: unknown field"),
    ({"dist": "fixed", "mean": 0}, "f.mean: expected an integer >= 1, got 0"),
])
def test_bad_config_names_the_field_in_one_line(bad, message):
    with pytest.raises(WorkloadError) as err:
        TokenDistribution.from_config(bad, "f")
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text
    assert isinstance(err.value, ValueError)
