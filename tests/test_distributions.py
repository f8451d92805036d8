"""Token-count distributions."""

import numpy as np
import pytest

from workloads.distributions import TokenDistribution
from workloads.errors import WorkloadError


@pytest.mark.parametrize("cfg,mean,cv", [
    ({"dist": "lognormal", "mean": 256, "cv": 1.0}, 256, 1.0),
    ({"dist": "exponential", "mean": 100}, 100, 1.0),
    ({"dist": "normal", "mean": 1000, "cv": 0.1}, 1000, 0.1),
    ({"dist": "uniform", "min": 10, "max": 30}, 20, None),
])
def test_sample_moments(cfg, mean, cv):
    d = TokenDistribution.from_config(cfg, "f")
    x = d.sample(np.random.default_rng(0), 400_000).astype(float)
    assert x.min() >= 1
    assert x.mean() == pytest.approx(mean, rel=0.02)
    if cv is not None:
        assert x.std() / x.mean() == pytest.approx(cv, rel=0.05)


def test_fixed_and_clipping():
    assert (TokenDistribution.from_config(64, "f").sample(np.random.default_rng(0), 5) == 64).all()
    d = TokenDistribution.from_config({"dist": "lognormal", "mean": 100, "cv": 2, "min": 50,
                                       "max": 120}, "f")
    x = d.sample(np.random.default_rng(1), 10_000)
    assert x.min() >= 50 and x.max() <= 120


@pytest.mark.parametrize("bad,field", [
    (0, "f"), ({"dist": "zeta", "mean": 3}, "f.dist"), ({"dist": "lognormal", "mean": -1}, "f.mean"),
    ({"dist": "uniform", "min": 5, "max": 2}, "f.max"), ("many", "f"),
])
def test_bad_config_names_field(bad, field):
    with pytest.raises(WorkloadError, match=field.replace(".", r"\.")):
        TokenDistribution.from_config(bad, "f")
