"""Arrival processes against their laws (CLT bounds), the real Azure and Mooncake traces,
determinism, and bad input that names the file, line and field."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from workloads.arrivals import (
    CLOSED_LOOP_DEFAULT_REQUESTS,
    build_arrivals,
    closed_loop_requests,
    gamma_times,
    poisson_times,
    read_azure,
    read_mooncake,
)
from workloads.distributions import TokenDistribution
from workloads.errors import WorkloadError
from workloads.sharing import SharedCorpusSpec

DATA = Path(__file__).resolve().parents[1] / "data"
AZURE = DATA / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
MOONCAKE = DATA / "mooncake-fast25" / "conversation_trace.jsonl"
needs_azure = pytest.mark.skipif(not AZURE.exists(), reason=f"real trace not found at {AZURE}")
needs_mooncake = pytest.mark.skipif(not MOONCAKE.exists(),
                                    reason=f"real trace not found at {MOONCAKE}")
ONE = TokenDistribution.fixed(1)
LOGN = TokenDistribution.from_config({"dist": "lognormal", "mean": 300, "cv": 0.5}, "u")
Z = 5.0  # bounds at 5 standard errors: a false failure has probability < 1e-6
SEC = 10**9
FAR = 10**16  # a duration no trace reaches


def plan(kind, seed=0, unique=ONE, output=ONE, **kw):
    kw.setdefault("max_requests", None if "duration_ns" in kw else 1000)
    return build_arrivals(kind, unique_tokens=unique, output_tokens=output,
                          rng_arrivals=np.random.default_rng(seed),
                          rng_sizes=np.random.default_rng(seed + 1000), **kw)


def gaps_s(times_ns: np.ndarray) -> np.ndarray:
    return np.diff(np.concatenate([[0], times_ns])) / SEC


def check_mean_and_var(x: np.ndarray, mean: float, var: float, kurtosis: float) -> None:
    """Sample mean and variance within Z standard errors of (mean, var); the variance's
    standard error is var * sqrt((kurtosis - 1) / n)."""
    n = len(x)
    assert abs(x.mean() - mean) < Z * math.sqrt(var / n)
    assert abs(x.var() - var) < Z * var * math.sqrt((kurtosis - 1) / n)


# -- Poisson and gamma ------------------------------------------------------------------------
def test_poisson_gaps_are_exponential_in_mean_and_variance():
    rate, n = 50.0, 200_000
    g = gaps_s(poisson_times(rate, np.random.default_rng(0), max_requests=n))
    assert len(g) == n
    check_mean_and_var(g, 1 / rate, 1 / rate**2, kurtosis=9.0)  # exponential: cv 1, kurtosis 9


def test_poisson_counts_per_window_are_poisson():
    rate, windows = 100.0, 2000
    t = poisson_times(rate, np.random.default_rng(1), duration_ns=windows * SEC)
    assert t.max() < windows * SEC and (np.diff(t) >= 0).all()
    c = np.bincount(t // SEC, minlength=windows)
    # the total ~ Poisson(rate * T); per window mean rate and variance rate (dispersion 1)
    assert abs(len(t) - rate * windows) < Z * math.sqrt(rate * windows)
    assert abs(c.mean() - rate) < Z * math.sqrt(rate / windows)
    # var of the sample variance of Poisson counts: (2 rate^2 + rate) / windows
    assert abs(c.var(ddof=1) - rate) < Z * math.sqrt((2 * rate**2 + rate) / windows)


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_gamma_gaps_have_the_configured_mean_and_cv(cv):
    rate, n = 10.0, 200_000
    g = gaps_s(gamma_times(rate, cv, np.random.default_rng(2), max_requests=n))
    shape = 1 / cv**2
    check_mean_and_var(g, 1 / rate, (cv / rate) ** 2, kurtosis=3 + 6 / shape)


def test_bounds_count_duration_and_both():
    def rng() -> np.random.Generator:
        return np.random.default_rng(5)

    by_count = poisson_times(20.0, rng(), max_requests=500)
    by_time = poisson_times(20.0, rng(), duration_ns=10 * SEC)
    both = poisson_times(20.0, rng(), max_requests=500, duration_ns=10 * SEC)
    assert len(by_count) == 500 and by_time.max() < 10 * SEC
    assert len(both) == min(500, len(by_time))
    # one stream, drawn in fixed blocks: every bound gives a prefix of the same arrivals
    n = min(len(by_count), len(by_time))
    assert (by_count[:n] == by_time[:n]).all() and (both == by_count[:len(both)]).all()


def test_shorter_runs_are_prefixes_of_longer_ones():
    short = plan("poisson", rate_per_s=5, unique=LOGN, output=LOGN, max_requests=300)
    long = plan("poisson", rate_per_s=5, unique=LOGN, output=LOGN, max_requests=10_000)
    assert long.requests[:300] == short.requests


def test_sizes_come_from_the_distributions():
    p = plan("gamma", rate_per_s=5, cv=2.0, unique=LOGN, max_requests=100_000)
    u = np.array([r.unique_tokens for r in p.requests], dtype=float)
    assert abs(u.mean() - 300) < Z * 150 / math.sqrt(len(u))
    assert all(r.output_tokens == 1 and r.shared_tokens is None for r in p.requests)
    assert [r.id for r in p.requests] == list(range(100_000))


def test_same_seed_same_plan_other_seed_other_plan():
    kw = {"rate_per_s": 7.0, "cv": 2.0, "unique": LOGN, "output": LOGN, "max_requests": 2000,
          "shared": SharedCorpusSpec(2**20, 2048, 0.25, corpora=3)}
    a, b, c = plan("gamma", 4, **kw), plan("gamma", 4, **kw), plan("gamma", 5, **kw)
    assert a == b
    assert a.requests != c.requests


def test_corpus_picks_do_not_change_sizes_or_times():
    one = plan("poisson", rate_per_s=5, unique=LOGN, max_requests=5000,
               shared=SharedCorpusSpec(2**20, 2048, 0.25))
    many = plan("poisson", rate_per_s=5, unique=LOGN, max_requests=5000,
                shared=SharedCorpusSpec(2**20, 2048, 0.25, corpora=4,
                                        corpus_popularity={"zipf": 1.0}))
    def strip(p):
        return [(r.arrival_ns, r.unique_tokens) for r in p.requests]

    assert strip(one) == strip(many)
    corpus = np.array([r.corpus for r in many.requests])
    w = np.arange(1, 5) ** -1.0 / np.sum(np.arange(1, 5) ** -1.0)
    got = np.bincount(corpus, minlength=4)
    assert np.all(np.abs(got - 5000 * w) < Z * np.sqrt(5000 * w * (1 - w)))
    st = many.sharing
    assert st.corpora == 4 and st.requests_per_corpus_top == tuple(sorted(got, reverse=True))
    u = np.array([r.unique_tokens for r in many.requests])
    assert st.shared_fraction == pytest.approx(2**20 / (2**20 + u.mean()))


# -- closed loop ------------------------------------------------------------------------------
def test_closed_loop_leaves_times_to_the_engine():
    p = plan("closed_loop", concurrency=8, unique=LOGN, max_requests=100)
    assert p.closed_loop_concurrency == 8 and len(p.requests) == 100
    assert {r.arrival_ns for r in p.requests} == {0}
    gen = closed_loop_requests(8, unique_tokens=LOGN, output_tokens=ONE,
                               rng_sizes=np.random.default_rng(1000))  # endless
    assert tuple(itertools.islice(gen, 100)) == p.requests


def test_closed_loop_corpus_picks_match_the_generator():
    shared = SharedCorpusSpec(2**20, 2048, 0.25, corpora=3)
    p = plan("closed_loop", concurrency=4, unique=LOGN, max_requests=5000, shared=shared)
    gen = closed_loop_requests(4, unique_tokens=LOGN, output_tokens=ONE, shared=shared,
                               rng_sizes=np.random.default_rng(1000), max_requests=5000)
    assert tuple(gen) == p.requests
    assert {r.corpus for r in p.requests} == {0, 1, 2} and p.sharing.corpora == 3


def test_closed_loop_with_only_a_duration_plans_a_default_count():
    p = plan("closed_loop", concurrency=2, duration_ns=SEC)
    assert len(p.requests) == CLOSED_LOOP_DEFAULT_REQUESTS and "duration only" in p.notes[0]


# -- Azure ------------------------------------------------------------------------------------
@needs_azure
def test_azure_trace_replays_every_row():
    rows = read_azure(AZURE)
    p = plan("trace", path=AZURE, format="azure", duration_ns=FAR)
    assert len(rows) == len(p.requests) == 19_366
    first, second = p.requests[:2]
    assert (first.id, first.arrival_ns, first.unique_tokens, first.output_tokens) == (0, 0, 374, 44)
    # 18:15:50.9951690 - 18:15:46.6805900, exact to the ns (7 fractional digits)
    assert (second.arrival_ns, second.unique_tokens, second.output_tokens) == (
        4_314_579_000, 396, 109)
    t = np.array([r.arrival_ns for r in p.requests])
    assert (np.diff(t) >= 0).all() and np.count_nonzero(np.diff(t) > 0) > 19_000
    assert 3400 * SEC < t[-1] < 3600 * SEC and not p.notes
    assert [r.id for r in p.requests] == list(range(19_366))
    assert p.sharing is None and all(r.output_tokens >= 1 for r in p.requests)


@needs_azure
def test_azure_time_scale_offset_and_bounds():
    base = plan("trace", path=AZURE, format="azure", duration_ns=FAR)
    t = np.array([r.arrival_ns for r in base.requests])
    half = plan("trace", path=AZURE, format="azure", time_scale=0.5, duration_ns=FAR)
    th = np.array([r.arrival_ns for r in half.requests])
    assert np.abs(th - t / 2).max() <= 0.5 and th[-1] == pytest.approx(t[-1] / 2, abs=1)
    late = plan("trace", path=AZURE, format="azure", start_offset_s=600, duration_ns=FAR)
    skipped = int(np.searchsorted(t, 600 * SEC))
    assert len(late.requests) == 19_366 - skipped
    assert late.requests[0].arrival_ns == t[skipped] - 600 * SEC
    assert late.requests[0].unique_tokens == base.requests[skipped].unique_tokens
    window = plan("trace", path=AZURE, format="azure", duration_ns=60 * SEC)
    assert len(window.requests) == int(np.searchsorted(t, 60 * SEC))
    assert len(plan("trace", path=AZURE, format="azure", max_requests=10).requests) == 10


def test_unsorted_azure_rows_are_sorted_stably_with_a_note(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:00:01.5,10,1\n2023-11-16 18:00:00,20,2\n"
                 "2023-11-16 18:00:01.5,30,0\n")
    p = plan("trace", path=f, format="azure", duration_ns=FAR)
    assert [(r.arrival_ns, r.unique_tokens, r.output_tokens) for r in p.requests] == [
        (0, 20, 2), (1_500_000_000, 10, 1), (1_500_000_000, 30, 1)]  # output clipped to 1
    assert any("out of time order" in n and "line 3" in n for n in p.notes)


def test_azure_trace_with_synthetic_corpora(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"2023-11-16 18:00:{i:02d},{100 + i},5\n" for i in range(40)))
    p = plan("trace", path=f, format="azure", duration_ns=FAR,
             shared=SharedCorpusSpec(4096, 512, 0.5, corpora=3))
    assert {r.corpus for r in p.requests} <= {0, 1, 2}
    assert p.sharing.corpora == 3 and p.sharing.requests == 40


# -- Mooncake ---------------------------------------------------------------------------------
@needs_mooncake
def test_mooncake_trace_real_sharing():
    p = plan("trace", path=MOONCAKE, format="mooncake", duration_ns=FAR)
    rows = [json.loads(line) for line in MOONCAKE.read_text().splitlines()]
    assert len(p.requests) == len(rows) == 12_031
    # the file is in time order, so request i is line i + 1
    for r, row in zip(p.requests, rows):
        assert r.shared_tokens + r.unique_tokens == row["input_length"]
        assert r.unique_tokens >= 1 and r.output_tokens == max(1, row["output_length"])
        assert r.arrival_ns == row["timestamp"] * 1_000_000
    st = p.sharing
    assert 0 < st.shared_fraction < 1 and st.requests == 12_031
    assert st.corpora == len(p.corpus_tokens) > 1
    corpus = np.array([r.corpus for r in p.requests])
    shared = np.array([r.shared_tokens for r in p.requests])
    assert corpus.max() < st.corpora
    assert (shared <= np.array(p.corpus_tokens)[corpus]).all()  # a request reads within its corpus
    per = np.bincount(corpus[shared > 0], minlength=st.corpora)
    assert (np.diff(per) <= 0).all()  # ids by descending popularity
    assert st.requests_per_corpus_top == tuple(per[:10])
    assert st.shared_fraction == pytest.approx(shared.sum() / sum(r["input_length"] for r in rows))


@needs_mooncake
def test_mooncake_sharing_is_read_off_the_replayed_requests():
    p = plan("trace", path=MOONCAKE, format="mooncake", max_requests=2000, time_scale=0.1)
    assert len(p.requests) == 2000
    assert all(r.shared_tokens + r.unique_tokens >= 1 for r in p.requests)
    full = plan("trace", path=MOONCAKE, format="mooncake", duration_ns=FAR)
    assert p.sharing.shared_prompt_tokens < full.sharing.shared_prompt_tokens
    assert p.requests[-1].arrival_ns == pytest.approx(full.requests[1999].arrival_ns * 0.1, abs=1)


def test_mooncake_small_file_and_shared_spec_note(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"timestamp": 0, "input_length": 1100, "output_length": 5, "hash_ids": [0, 1, 2]},
        {"timestamp": 3, "input_length": 1200, "output_length": 0, "hash_ids": [0, 1, 3]},
        {"timestamp": 7, "input_length": 600, "output_length": 9, "hash_ids": [0, 4]},
    ]) + "\n")
    p = plan("trace", path=f, format="mooncake", duration_ns=FAR,
             shared=SharedCorpusSpec(4096, 512, 0.5))
    assert [(r.arrival_ns, r.shared_tokens, r.unique_tokens, r.corpus, r.output_tokens)
            for r in p.requests] == [(0, 1024, 76, 0, 5), (3_000_000, 1024, 176, 0, 1),
                                     (7_000_000, 512, 88, 1, 9)]
    assert p.corpus_tokens == (1024, 512)
    assert any("workload.shared" in n for n in p.notes)


def test_cached_fraction_with_mooncake(tmp_path):
    """Without the trace's corpora (source none) a Mooncake prompt is all unique context
    and ``cached_fraction`` of it is resident: ceil(tokens x (1 - f)) are prefilled. With
    them, its shared blocks are the corpus and the fraction has no meaning: an error."""
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"timestamp": 0, "input_length": 1100, "output_length": 5, "hash_ids": [0, 1, 2]},
        {"timestamp": 3, "input_length": 1201, "output_length": 2, "hash_ids": [0, 1, 3]},
    ]) + "\n")
    p = plan("trace", path=f, format="mooncake", duration_ns=FAR, trace_corpora=False,
             cached_fraction=0.25)
    assert [(r.unique_tokens, r.prefill_tokens) for r in p.requests] == [(1100, 825),
                                                                          (1201, 901)]
    assert any("cached_fraction" in n for n in p.notes)
    none = plan("trace", path=f, format="mooncake", duration_ns=FAR, trace_corpora=False)
    assert [r.prefill_tokens for r in none.requests] == [None, None]
    with pytest.raises(WorkloadError, match="cached_fraction: 0.25 does not apply"):
        plan("trace", path=f, format="mooncake", duration_ns=FAR, cached_fraction=0.25)


# -- bad input --------------------------------------------------------------------------------
AZ_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
AZ_OK = "2023-11-16 18:15:46.6805900,374,44\n"


@pytest.mark.parametrize("text,message", [
    (AZ_HEAD + AZ_OK + "2023-11-16 18:15:47.00,lots,4\n",
     "line 3: ContextTokens: expected an integer >= 0, got 'lots'"),
    (AZ_HEAD + AZ_OK + "2023-11-16 18:15:47.00,5,-4\n",
     "line 3: GeneratedTokens: expected an integer >= 0, got '-4'"),
    (AZ_HEAD + "16/11/2023 18:15,5,4\n",
     "line 2: TIMESTAMP: expected 'YYYY-MM-DD HH:MM:SS[.fraction]', got '16/11/2023 18:15'"),
    (AZ_HEAD + "2023-11-16 25:15:46,5,4\n", "line 2: TIMESTAMP: expected"),
    (AZ_HEAD + "2023-02-30 10:15:46,5,4\n", "line 2: TIMESTAMP: expected"),
    (AZ_HEAD + AZ_OK + "\n" + "2023-11-16 18:15:47,5\n", "line 4: expected 3 columns"),
    ("time,ContextTokens,GeneratedTokens\n" + AZ_OK,
     ("line 1: expected a header with columns TIMESTAMP, ContextTokens, GeneratedTokens; "
      "missing TIMESTAMP")),
    (AZ_HEAD, "expected at least one request row, found none"),
])
def test_bad_azure_file_names_file_line_and_field(tmp_path, text, message):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(WorkloadError) as err:
        plan("trace", path=f, format="azure", duration_ns=FAR)
    assert str(err.value).startswith(f"{f}: {message}")
    assert "\n" not in str(err.value)


MC_OK = '{"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [0]}\n'


@pytest.mark.parametrize("line,message", [
    ("{oops", "line 2: expected a JSON object, got invalid JSON"),
    ("[1, 2]", "line 2: expected a JSON object, got list"),
    ('{"input_length": 5, "output_length": 1, "hash_ids": [0]}',
     "line 2: timestamp: expected a number of ms >= 0, got None"),
    ('{"timestamp": 1, "input_length": 0, "output_length": 1, "hash_ids": [0]}',
     "line 2: input_length: expected an integer >= 1, got 0"),
    ('{"timestamp": 1, "input_length": 5, "output_length": 1.5, "hash_ids": [0]}',
     "line 2: output_length: expected an integer >= 0, got 1.5"),
    ('{"timestamp": 1, "input_length": 5, "output_length": 1, "hash_ids": ["a"]}',
     "line 2: hash_ids: expected a list of integer block ids, got ['a']"),
])
def test_bad_mooncake_file_names_file_line_and_field(tmp_path, line, message):
    f = tmp_path / "bad.jsonl"
    f.write_text(MC_OK + line + "\n")
    with pytest.raises(WorkloadError) as err:
        read_mooncake(f)
    assert str(err.value).startswith(f"{f}: {message}")


@pytest.mark.parametrize("kind,kw,message", [
    ("poisson", {"rate_per_s": -3}, "workload.arrivals.rate_per_s: expected a number > 0, got -3"),
    ("poisson", {}, "workload.arrivals.rate_per_s: expected a number > 0, got None"),
    ("gamma", {"rate_per_s": 3, "cv": 0}, "workload.arrivals.cv: expected a number > 0, got 0"),
    ("gamma", {"rate_per_s": 3, "cv": -1.0}, "workload.arrivals.cv: expected a number > 0"),
    ("closed_loop", {"concurrency": 0}, "workload.arrivals.concurrency: expected an integer >= 1"),
    ("trace", {"format": "azure"}, "workload.arrivals.path: expected a trace file, got nothing"),
    ("trace", {"format": "azure", "path": "/nonexistent/x.csv"},
     "workload.arrivals.path: cannot read /nonexistent/x.csv: No such file or directory"),
    ("trace", {"format": "csv", "path": "x"},
     "workload.arrivals.format: expected one of azure, mooncake, got 'csv'"),
    ("trace", {"format": "azure", "path": AZURE, "time_scale": 0},
     "workload.arrivals.time_scale: expected a number > 0, got 0"),
    ("trace", {"format": "azure", "path": AZURE, "start_offset_s": -1},
     "workload.arrivals.start_offset_s: expected a number >= 0, got -1"),
    ("posson", {}, "workload.arrivals.kind: expected one of poisson, gamma, closed_loop, trace"),
    ("poisson", {"rate_per_s": 1, "max_requests": None}, "run: expected a bound"),
])
def test_bad_arguments_name_the_field(kind, kw, message):
    if kind == "trace" and kw.get("path") == AZURE and not AZURE.exists():
        pytest.skip(f"real trace not found at {AZURE}")
    with pytest.raises(WorkloadError) as err:
        plan(kind, **kw)
    assert str(err.value).startswith(message)
