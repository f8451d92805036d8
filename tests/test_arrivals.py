"""Arrival processes: statistics against their laws, real traces, bad input."""

import math
from pathlib import Path

import numpy as np
import pytest

from workloads.arrivals import build_arrivals, load_azure
from workloads.distributions import TokenDistribution
from workloads.errors import WorkloadError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
AZURE = DATA / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
MOONCAKE = DATA / "mooncake-fast25" / "conversation_trace.jsonl"
ONE = TokenDistribution.from_config(1, "x")


def _build(kind, seed=0, **kw):
    kw.setdefault("max_requests", 200_000)
    return build_arrivals(kind, unique_tokens=ONE, output_tokens=ONE,
                          rng_arrivals=np.random.default_rng(seed),
                          rng_sizes=np.random.default_rng(seed + 1), **kw)


def _gaps(plan):
    t = np.array([r.arrival_ns for r in plan.requests], dtype=float) / 1e9
    return np.diff(t)


def test_poisson_mean_and_cv_within_clt_bounds():
    n = 200_000
    gaps = _gaps(_build("poisson", rate_per_s=50.0, max_requests=n))
    # mean of n exponential gaps: sd = mean / sqrt(n); 5 sigma
    assert abs(gaps.mean() - 0.02) < 5 * 0.02 / math.sqrt(n)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.02)


def test_poisson_counts_in_windows_are_poisson():
    plan = _build("poisson", rate_per_s=100.0, max_requests=None, duration_ns=2_000 * 10**9)
    t = np.array([r.arrival_ns for r in plan.requests]) / 1e9
    counts = np.bincount(t.astype(int), minlength=2000)[:2000]
    # mean 100, variance 100 (index of dispersion 1); se of the mean over 2000 windows = 0.22
    assert abs(counts.mean() - 100) < 5 * math.sqrt(100 / 2000)
    assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.15)
    assert t.max() < 2000


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_gamma_cv(cv):
    gaps = _gaps(_build("gamma", rate_per_s=10.0, cv=cv))
    assert gaps.mean() == pytest.approx(0.1, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_closed_loop_leaves_times_to_the_engine():
    plan = _build("closed_loop", concurrency=8, max_requests=100)
    assert plan.closed_loop_concurrency == 8 and len(plan.requests) == 100


def test_sizes_come_from_distributions_and_are_deterministic():
    dist = TokenDistribution.from_config({"dist": "lognormal", "mean": 300, "cv": 0.5}, "u")
    a = build_arrivals("poisson", rate_per_s=5, unique_tokens=dist, output_tokens=ONE,
                       rng_arrivals=np.random.default_rng(3), rng_sizes=np.random.default_rng(4),
                       max_requests=50_000)
    b = build_arrivals("poisson", rate_per_s=5, unique_tokens=dist, output_tokens=ONE,
                       rng_arrivals=np.random.default_rng(3), rng_sizes=np.random.default_rng(4),
                       max_requests=50_000)
    assert a.requests == b.requests
    u = np.array([r.unique_tokens for r in a.requests])
    assert u.mean() == pytest.approx(300, rel=0.02)


@pytest.mark.skipif(not AZURE.exists(), reason="shared/data not beside the repo")
def test_azure_trace():
    plan = _build("trace", path=AZURE, format="azure", max_requests=None, duration_ns=10**15)
    assert len(plan.requests) == 19_366
    first = plan.requests[0]
    assert (first.unique_tokens, first.output_tokens, first.arrival_ns) == (374, 44, 0)
    times = [r.arrival_ns for r in plan.requests]
    assert times == sorted(times) and [r.id for r in plan.requests] == list(range(19_366))
    half = _build("trace", path=AZURE, format="azure", time_scale=0.5, max_requests=None,
                  duration_ns=10**15)
    assert half.requests[-1].arrival_ns == pytest.approx(times[-1] / 2, abs=2)


@pytest.mark.skipif(not MOONCAKE.exists(), reason="shared/data not beside the repo")
def test_mooncake_trace_real_sharing():
    import json

    plan = _build("trace", path=MOONCAKE, format="mooncake", max_requests=None,
                  duration_ns=10**15)
    assert len(plan.requests) == 12_031
    lengths = [json.loads(line)["input_length"] for line in MOONCAKE.open()]
    by_len = sorted(lengths)
    got = sorted(r.unique_tokens + r.shared_tokens for r in plan.requests)
    assert got == by_len  # shared + unique == input_length for every request
    assert 0 < plan.sharing.shared_fraction < 1
    assert plan.sharing.corpora > 1
    top = plan.sharing.requests_per_corpus_top
    assert top == sorted(top, reverse=True)


def test_bad_azure_row_names_line_and_field(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:15:46.68,374,44\n2023-11-16 18:15:47.00,lots,4\n")
    with pytest.raises(WorkloadError, match=r"line 3: ContextTokens"):
        load_azure(f)
    f.write_text("time,a,b\n")
    with pytest.raises(WorkloadError, match="line 1"):
        load_azure(f)


def test_bad_mooncake_row(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [0]}\n{oops\n')
    with pytest.raises(WorkloadError, match="line 2"):
        _build("trace", path=f, format="mooncake")


@pytest.mark.parametrize("kw,field", [
    ({"kind": "poisson", "rate_per_s": -3}, "rate_per_s"),
    ({"kind": "gamma", "rate_per_s": 3, "cv": 0}, "cv"),
    ({"kind": "trace", "format": "azure"}, "path"),
    ({"kind": "trace", "format": "csv", "path": "x"}, "format"),
    ({"kind": "trace", "format": "azure", "path": "/nonexistent.csv"}, "/nonexistent.csv"),
    ({"kind": "closed_loop", "concurrency": 0}, "concurrency"),
])
def test_bad_arguments_name_the_field(kw, field):
    kind = kw.pop("kind")
    with pytest.raises(WorkloadError, match=field):
        _build(kind, **kw)
