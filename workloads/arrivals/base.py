"""What every arrival process shares: the ``ArrivalPlan`` it produces, the
``ArrivalContext`` it draws from (size laws, shared corpus, random streams, the run's
bounds), its declared parameters, and the size-drawing and argument-check helpers.

Sizes come from the ``TokenDistribution`` laws (traces: from the file; output clipped to
>= 1). With a synthetic ``SharedCorpusSpec`` each request picks a corpus by its
``corpus_popularity`` and reads it whole (``shared_tokens`` None). Draws are made in fixed
blocks, so with the same streams a shorter run is a prefix of a longer one. Streams:
``rng_arrivals`` gaps, ``rng_sizes`` sizes, ``rng_routing`` corpus picks (default: a child
spawned from ``rng_sizes``, so sizes do not depend on the corpus count).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from workloads.distributions import TokenDistribution
from workloads.errors import WorkloadError
from workloads.request import RequestTable
from workloads.sharing import SharedCorpusSpec, SharingStats, assign_corpora, synthetic_sharing

BLOCK = 4096  # draws per block (fixed: shorter runs are prefixes of longer ones)
REQUIRED: Any = ...  # a Param without a default


@dataclass(frozen=True)
class ArrivalPlan:
    """A run's requests, sorted by ``arrival_ns`` with ids 0..n-1 in arrival order (as
    columns: a ``RequestTable`` is a sequence of ``RequestSpec``).

    ``closed_loop_concurrency``: set for closed loop (arrival times are placeholders).
    ``sharing``: the workload's sharing statistics (None without a shared corpus).
    ``corpus_tokens``: each corpus's size when the trace defines the corpora (Mooncake).
    ``notes``: what the plan had to adjust (unsorted rows, clipped sizes, defaults).
    """

    requests: RequestTable
    closed_loop_concurrency: int | None = None
    sharing: SharingStats | None = None
    corpus_tokens: tuple[int, ...] | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArrivalContext:
    """What an arrival process draws from besides its own parameters."""

    unique_tokens: TokenDistribution
    output_tokens: TokenDistribution
    rng_arrivals: np.random.Generator
    rng_sizes: np.random.Generator
    shared: SharedCorpusSpec | None = None
    rng_routing: np.random.Generator | None = None
    max_requests: int | None = None
    duration_ns: int | None = None
    #: whether a trace that defines its own corpora (Mooncake) shares them; False: each of
    #: its prompts is wholly its request's own context (``workload.shared.source: none``)
    trace_corpora: bool = True

    @property
    def corpus_rng(self) -> np.random.Generator | None:
        return routing_rng(self.shared, self.rng_routing, self.rng_sizes)


@dataclass(frozen=True)
class Param:
    """One parameter of an arrival process, as the config declares it: ``kind`` is
    'number' (a float, bounded by ``gt``/``ge``), 'integer' (``ge``), 'file' (an existing
    file, relative to the YAML) or 'choice' (one of ``options``)."""

    name: str
    kind: Literal["number", "integer", "file", "choice"]
    description: str
    default: Any = REQUIRED
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    options: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


class ArrivalProcess:
    """When requests arrive and how big they are. A subclass names its ``kind``, declares
    its ``params`` (the config section is generated from them) and builds the plan."""

    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()

    def plan(self, values: Mapping[str, Any], ctx: ArrivalContext) -> ArrivalPlan:
        """The run's requests for parameter ``values`` (every declared param present)."""
        raise NotImplementedError

    def defines_corpora(self, values: Mapping[str, Any]) -> bool:
        """Whether the process with parameter ``values`` brings its own shared corpora (a
        Mooncake trace: its prompts' shared blocks), so the config gives none
        (``workload.shared.source: trace``). None of the synthetic processes does."""
        return False

    def with_defaults(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` with every declared default filled in (a missing required one is None,
        for the process's own check to report); unknown names are an error."""
        names = {p.name for p in self.params}
        unknown = sorted(set(values) - names)
        if unknown:
            raise WorkloadError(f"workload.arrivals: kind {self.kind!r} takes no "
                                f"{', '.join(unknown)}; its fields: {', '.join(sorted(names))}")
        out = {}
        for p in self.params:
            if p.name in values and values[p.name] is not None:
                out[p.name] = values[p.name]
            elif p.required:
                out[p.name] = None  # the process's own check names the field
            else:
                out[p.name] = p.default
        return out


# -- renewal processes and sizes -------------------------------------------------------------
def renewal_times(gaps_s: Callable[[int], np.ndarray], max_requests: int | None,
             duration_ns: int | None) -> np.ndarray:
    """Cumulative gaps, drawn in blocks, until the count or the duration is reached."""
    check_bounds(max_requests, duration_ns)
    parts: list[np.ndarray] = []
    count, t_ns = 0, 0.0
    while (max_requests is None or count < max_requests) and (
            duration_ns is None or t_ns < duration_ns):
        t = t_ns + np.cumsum(gaps_s(BLOCK) * 1e9)
        parts.append(t)
        count, t_ns = count + BLOCK, float(t[-1])
    times = np.rint(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
    if max_requests is not None:
        times = times[:max_requests]
    if duration_ns is not None:
        times = times[times < duration_ns]
    return times



def size_blocks(unique: TokenDistribution, output: TokenDistribution,
                 rng_sizes: np.random.Generator, shared: SharedCorpusSpec | None,
                 rng_corpora: np.random.Generator | None,
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Endless blocks of ``BLOCK`` (unique tokens, output tokens, corpus id) draws."""
    while True:
        u, o = unique.sample(rng_sizes, BLOCK), output.sample(rng_sizes, BLOCK)
        if shared is None or rng_corpora is None:
            c = np.zeros(BLOCK, dtype=np.int64)
        else:
            c = assign_corpora(shared, rng_corpora, BLOCK)
        yield u, o, c


def draw_sizes(n: int, blocks: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]],
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n`` draws of ``blocks`` as three arrays."""
    drawn = [next(blocks) for _ in range(-(-n // BLOCK))]
    if not drawn:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(3))  # type: ignore[return-value]
    u, o, c = (np.concatenate([d[j] for d in drawn])[:n] for j in range(3))
    return u, o, c


def routing_rng(shared: SharedCorpusSpec | None, rng_routing: np.random.Generator | None,
                 rng_sizes: np.random.Generator) -> np.random.Generator | None:
    """The stream corpus picks come from: ``rng_routing``, else a child of ``rng_sizes``
    (spawned, so the size draws stay as they are); None when there is nothing to pick."""
    if shared is None or shared.corpora == 1:
        return None
    if rng_routing is not None:
        return rng_routing
    try:
        return rng_sizes.spawn(1)[0]
    except (TypeError, ValueError):  # a generator without a seed sequence
        return np.random.default_rng(int(rng_sizes.bit_generator.random_raw()))


def synthetic_plan(times: np.ndarray, unique: TokenDistribution, output: TokenDistribution,
               rng_sizes: np.random.Generator, shared: SharedCorpusSpec | None,
               rng_corpora: np.random.Generator | None) -> ArrivalPlan:
    """Requests at ``times`` with drawn sizes (and corpus picks, with their stats)."""
    u, o, c = draw_sizes(len(times), size_blocks(unique, output, rng_sizes, shared, rng_corpora))
    return ArrivalPlan(RequestTable(times, u, o, c),
                       sharing=synthetic_sharing(shared, c, u) if shared else None)


# -- argument checks --------------------------------------------------------------------------
def positive(value: Any, name: str) -> float:
    if (value is None or isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise WorkloadError(f"workload.arrivals.{name}: expected a number > 0, got {value!r}")
    return float(value)


def nonnegative(value: Any, name: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value < 0):
        raise WorkloadError(f"workload.arrivals.{name}: expected a number >= 0, got {value!r}")
    return float(value)


def count_arg(value: Any, name: str, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        where = ("run.requests (max_requests)" if name == "max_requests"
                 else f"workload.arrivals.{name}")
        raise WorkloadError(f"{where}: expected an integer >= {least}, got {value!r}")
    return int(value)


def check_bounds(max_requests: int | None, duration_ns: int | None, *,
                 required: bool = True) -> None:
    """The run's bounds are well formed; with ``required`` at least one is given (a trace
    has an end of its own, so it needs neither)."""
    if required and max_requests is None and duration_ns is None:
        raise WorkloadError("run: expected a bound: run.requests (max_requests) and/or "
                            "run.duration_s (duration_ns), got neither")
    if max_requests is not None:
        count_arg(max_requests, "max_requests", least=0)
    if duration_ns is not None and (isinstance(duration_ns, bool)
                                    or not isinstance(duration_ns, (int, np.integer))
                                    or duration_ns <= 0):
        raise WorkloadError(f"run.duration_s (duration_ns): expected an integer number of ns "
                            f"> 0, got {duration_ns!r}")


__all__ = [
    "BLOCK",
    "ArrivalContext",
    "ArrivalPlan",
    "ArrivalProcess",
    "Param",
    "check_bounds",
    "count_arg",
    "draw_sizes",
    "nonnegative",
    "positive",
    "renewal_times",
    "routing_rng",
    "size_blocks",
    "synthetic_plan",
]
