"""Trace replay: a recorded attention trace drives the routing (``moska-sim replay``).

The config describes the cluster, the model and the run as for ``moska-sim run``; the trace
(``traces/``, format in docs/traces.md) replaces the statistical chunk router: every
shared-node round trip routes the batch's queries with the trace's *recorded* selections,
for every batch size (no binomial approximation), and optionally the trace's requests
replace the config's arrivals.

What drives what.
- Routing. The trace's selections are read as one stream of *queries* per recorded layer,
  in recorded order (step, then request, then kv head): one (request, kv head) row of
  ``selected_chunks`` is one query. The engine routes one query per running request per
  round trip, so a round trip of a batch of B requests takes the next B rows of its
  layer's stream. ``run.granularity: layer``: simulated layer ``l`` reads recorded layer
  ``l mod (recorded layers)`` (a trace of fewer layers than the model repeats its layers;
  a note says so); ``step``: one stream of every recorded row in recorded order (step,
  layer, request, kv head), so a step's single round trip stands for all layers and a
  replay uses the whole trace before it cycles. A stream
  that runs out starts over (cycles); the run's note, stderr and ``summary.json``'s
  ``replay`` block say how often.
- Chunk ids. Trace chunk ids index the trace's corpus (``n_chunks`` in its header). When
  the config's corpus (``workload.shared.tokens / chunk_tokens``) has the same number of
  chunks, ids are used as they are. Otherwise they are mapped proportionally and a note
  says so: with more config chunks, trace chunk ``c`` stands for the block of config chunks
  ``j`` with ``floor(j * Nt / Nc) == c`` (a query keeps the whole block of each pick, about
  ``k * Nc / Nt`` chunks: the trace's keep fraction of the config's corpus); with fewer,
  trace chunk ``c`` becomes config chunk ``floor(c * Nc / Nt)`` (picks that land on the same
  config chunk count once).
- Arrivals. ``--arrivals config`` (default): the config's arrival process (any kind,
  including ``trace`` CSV/JSONL files) and token sizes. ``--arrivals trace``: the trace's
  requests in order of first appearance, each with its recorded unique prompt (its first
  ``unique_tokens`` less the token being decoded) and ``d + 1`` output tokens (``d`` decode
  steps recorded plus the prefill's token), issued closed-loop with as many in flight as
  the trace's largest batch; ``run.requests`` more than the trace holds cycles them (new
  ids, same sizes, a note). With only ``run.duration_s``, 100,000 requests are planned.
- Model. The trace's ``q_heads``, ``kv_heads`` and ``head_dim`` must equal the config
  model's (else one error naming the trace file and header field); a trace of more layers
  than the model is an error, of fewer a note. The trace's dtype and keep fraction are
  reported (kernel prices come from the config's chips and precision, not the trace's
  kernel times: use ``moska-sim calibrate`` for those).

Output: the results folder and report of ``moska-sim run``, with ``replay`` in
``summary.json`` and ``run_info.json`` (trace, queries_in_trace, queries_used, cycles, ...)
and the notes in the summary's ``notes``.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.engine.routing import QueryRouter
from sim.run.simulate import RunResult, simulate
from workloads.request import RequestTable

DURATION_ONLY_REQUESTS = 100_000  # --arrivals trace bounded by run.duration_s alone


# -- the trace's selections as query streams -----------------------------------------------
@dataclass
class ChunkMap:
    """Trace chunk ids -> config chunk ids (see the module docstring)."""

    n_trace: int
    n_config: int

    @property
    def mode(self) -> str:
        if self.n_config == self.n_trace:
            return "identity"
        return "expand" if self.n_config > self.n_trace else "collapse"

    @property
    def src(self) -> np.ndarray:
        """int64[n_config]: the trace chunk each config chunk stands for (identity/expand)."""
        return np.arange(self.n_config, dtype=np.int64) * self.n_trace // self.n_config

    @property
    def dst(self) -> np.ndarray:
        """int64[n_trace]: the config chunk of each trace chunk (identity/collapse)."""
        return np.arange(self.n_trace, dtype=np.int64) * self.n_config // self.n_trace

    def counts(self, rows: np.ndarray) -> np.ndarray:
        """int64[n_config]: queries per config chunk for trace rows (n, k) of chunk ids."""
        if self.mode == "identity":
            return np.bincount(rows.ravel(), minlength=self.n_config).astype(np.int64)
        if self.mode == "expand":
            return np.bincount(rows.ravel(), minlength=self.n_trace).astype(np.int64)[self.src]
        m = self.dst[rows]  # rows ascending and dst monotone: equal neighbours are repeats
        keep = np.ones(m.shape, dtype=bool)
        keep[:, 1:] = m[:, 1:] != m[:, :-1]
        return np.bincount(m[keep], minlength=self.n_config).astype(np.int64)

    def chunks_per_query(self, rows: np.ndarray) -> float:
        """Mean config chunks a trace row stands for after mapping."""
        if not len(rows):
            return 0.0
        if self.mode == "identity":
            return float(rows.shape[1])
        if self.mode == "expand":
            block = np.bincount(self.src, minlength=self.n_trace)
            return float(block[rows].sum(axis=1).mean())
        m = self.dst[rows]
        return float(1 + (m[:, 1:] != m[:, :-1]).sum(axis=1).mean())


@dataclass
class TraceRouting:
    """The trace's recorded selections, one query stream per recorded layer, each with a
    cursor. Shared by the routers of every corpus (so the stream is read in order)."""

    path: str
    streams: list[np.ndarray]  # per recorded layer in use: int32 (queries, k) trace chunk ids
    layers: list[int]  # the recorded layers replayed (layer: one stream each; step: one
    # stream of them all)
    chunk_map: ChunkMap
    granularity: str
    model_layers: int
    cursor: list[int] = field(default_factory=list)
    used: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cursor = [0] * len(self.streams)
        self.used = [0] * len(self.streams)

    @classmethod
    def from_trace(cls, trace: Any, path: str, n_config_chunks: int, model_layers: int,
                   granularity: str) -> TraceRouting:
        cols = trace.records.columns
        h = trace.header
        sizes = np.diff(cols.req_offsets)
        layer_of_row = np.repeat(cols.layer.astype(np.int64), sizes)
        present = np.unique(cols.layer).tolist()
        if not present:
            raise ValueError(f"{path}: the trace has no records to replay")
        sel = cols.selected_chunks
        k = h.top_k
        if granularity == "step":  # every row, in recorded order: all layers in one stream
            use = present[:model_layers]
            rows = layer_of_row < model_layers
            streams = [np.ascontiguousarray(sel[rows]).reshape(-1, k).astype(np.int64)]
        else:
            use = present[:model_layers]
            streams = [np.ascontiguousarray(sel[layer_of_row == lay]).reshape(-1, k)
                       .astype(np.int64) for lay in use]
        return cls(path, streams, use, ChunkMap(h.n_chunks, n_config_chunks), granularity,
                   model_layers)

    def stream_of(self, sim_layer: int) -> int:
        return 0 if self.granularity == "step" else sim_layer % len(self.streams)

    def take(self, n: int, sim_layer: int) -> np.ndarray:
        """The next ``n`` queries (rows of trace chunk ids) of that layer's stream, cycling."""
        i = self.stream_of(sim_layer)
        s = self.streams[i]
        q = len(s)
        lo = self.cursor[i]
        self.used[i] += n
        if lo + n <= q:
            self.cursor[i] = (lo + n) % q
            return s[lo:lo + n]
        idx = (lo + np.arange(n)) % q
        self.cursor[i] = int((lo + n) % q)
        return s[idx]

    # -- what a run consumed ---------------------------------------------------------------
    @property
    def queries_in_trace(self) -> int:
        return int(sum(len(s) for s in self.streams))

    @property
    def queries_used(self) -> int:
        return int(sum(self.used))

    @property
    def cycles(self) -> int:
        """Times the most-read stream started over."""
        return max((u - 1) // len(s) if u else 0 for u, s in zip(self.used, self.streams))


class TraceQueryRouter(QueryRouter):
    """A QueryRouter whose every draw is the trace's next recorded queries (exact counts,
    exact requests per shared node, for every batch size)."""

    def __init__(self, source: TraceRouting, n_chunks: int, shared_nodes: int,
                 rng: np.random.Generator, *, offset: int = 0) -> None:
        super().__init__(source, n_chunks, 1, shared_nodes, rng, uniform=True, offset=offset,
                         exact_max_queries=1 << 62)
        self.source = source
        self._layer = 0
        cmap = source.chunk_map
        # which shared nodes each trace chunk's mapped config chunks live on
        mask = np.zeros((cmap.n_trace, shared_nodes), dtype=bool)
        if cmap.mode == "expand":
            mask[cmap.src, self.node_of] = True
        else:
            mask[np.arange(cmap.n_trace), self.node_of[cmap.dst]] = True
        self._node_mask = mask

    def route(self, n_queries: int, layer: int = 0) -> list:  # type: ignore[override]
        self._layer = layer
        return super().route(n_queries)

    def route_layers(self, n_queries: int, layers: int) -> list[list]:  # type: ignore[override]
        """Layer by layer: each layer reads its own rows of the trace."""
        return [self.route(n_queries, layer) for layer in range(layers)]

    def draw_counts(self, n_queries: int, layer: int = 0) -> tuple[np.ndarray, list[int]]:
        self._layer = layer
        return super().draw_counts(n_queries, layer)

    def draw_counts_layers(self, n_queries: int, layers: int) -> tuple[np.ndarray, list[list[int]]]:
        """Layer by layer: each layer reads its own rows of the trace."""
        drawn = [self.draw_counts(n_queries, layer) for layer in range(layers)]
        return np.stack([c for c, _ in drawn]), [r for _, r in drawn]

    def _draw(self, n_queries: int) -> tuple[np.ndarray, list[int], list[int]]:
        self.exact_draws += 1
        rows = self.source.take(n_queries, self._layer)
        per_chunk = self.source.chunk_map.counts(rows)
        pairs = self._pairs(per_chunk)
        if self.S == 1:
            return per_chunk, pairs, [n_queries]
        reqs = self._node_mask[rows].any(axis=1).sum(axis=0)
        return per_chunk, pairs, reqs.tolist()


class _TraceRouterFactory:
    """``RouterFactory`` for ``sim.run.simulate``: every corpus routes from one source."""

    def __init__(self, source: TraceRouting) -> None:
        self.source = source

    def __call__(self, _corpus: int, _rng: np.random.Generator) -> _TraceRouterFactory:
        return self

    def query_router(self, n_chunks: int, shared_nodes: int, rng: np.random.Generator, *,
                     offset: int = 0) -> TraceQueryRouter:
        return TraceQueryRouter(self.source, n_chunks, shared_nodes, rng, offset=offset)


# -- checks and arrivals -------------------------------------------------------------------
def check_model(header: Any, exp: Any, path: str) -> list[str]:
    """Raise one line naming the trace file and header field when the trace's model shape
    differs from the config's; return notes for differences replay can live with."""
    m = exp.model
    for name, theirs in (("q_heads", m.q_heads), ("kv_heads", m.kv_heads),
                         ("head_dim", m.head_dim)):
        ours = getattr(header, name)
        if ours != theirs:
            raise ValueError(
                f"{path}: header: field {name!r}: the trace has {ours}, the config's model "
                f"{m.name} has {theirs} (model); replay needs a trace of the same model shape")
    notes = []
    if header.layers > m.layers:
        raise ValueError(
            f"{path}: header: field 'layers': the trace records {header.layers} layers, more "
            f"than the config's model {m.name} has ({m.layers}; model)")
    if header.layers < m.layers and exp.run.granularity == "layer":
        notes.append(f"replay: the trace records {header.layers} of {m.name}'s {m.layers} "
                     f"layers; simulated layer l replays recorded layer l mod {header.layers}")
    if header.dtype != exp.precision:
        notes.append(f"replay: trace dtype {header.dtype}, config precision {exp.precision}: "
                     "routing is taken from the trace, kernel prices from the config")
    return notes


def trace_requests(trace: Any, n_requests: int) -> tuple[RequestTable, int, int]:
    """(requests, closed-loop concurrency, requests in the trace) from the trace's batch
    composition (see the module docstring)."""
    cols = trace.records.columns
    sizes = np.diff(cols.req_offsets)
    row_step = np.repeat(cols.step, sizes)
    rid = cols.request_ids
    # first row of each request id (rows are in (step, layer, batch row) order)
    uniq, first = np.unique(rid, return_index=True)
    order = np.argsort(first, kind="stable")
    uniq, first = uniq[order], first[order]
    prompt = np.maximum(1, cols.unique_tokens[first] - 1)
    pairs = np.unique(np.stack([rid, row_step]), axis=1)  # distinct (request, step)
    steps_of = dict(zip(*np.unique(pairs[0], return_counts=True)))
    outputs = np.array([int(steps_of[int(r)]) + 1 for r in uniq.tolist()], dtype=np.int64)
    m = len(uniq)
    cycle = np.arange(n_requests) % m
    reqs = RequestTable(np.zeros(n_requests, dtype=np.int64), prompt[cycle], outputs[cycle])
    return reqs, int(sizes.max()), m


# -- the run -------------------------------------------------------------------------------
def replay_simulation(trace_path: Path | str, config: Any, out_dir: Path | str | None = None,
                      *, arrivals: str = "config", progress: bool = True,
                      write: bool = True, overrides: dict | None = None,
                      timeline: Any = None) -> RunResult:
    """Replay ``trace_path`` on ``config`` (an ``ExperimentConfig`` or a YAML path); write
    the results folder unless ``write`` is False. Returns a ``sim.run.RunResult``."""
    from sim.config import load_config, resolve
    from traces.io import read_trace

    if arrivals not in ("config", "trace"):
        raise ValueError(f"--arrivals: expected 'config' or 'trace', got {arrivals!r}")
    path = str(trace_path)
    trace = read_trace(trace_path)  # TraceError (a ValueError) naming the file and field
    if isinstance(config, (str, Path)):
        config = load_config(Path(config), overrides)
    exp = resolve(config, with_workload=arrivals == "config")
    spec = exp.corpus
    h = trace.header
    notes = check_model(h, exp, path)
    remote = exp.remote_shared
    if not remote:
        if arrivals == "config":
            raise ValueError(
                f"{path}: nothing to replay: the trace drives shared-node routing, but the "
                f"config has system {exp.system.name!r} and workload.shared.tokens "
                f"{spec.tokens} (replay needs system: moska with a shared corpus, or "
                "--arrivals trace)")
        notes.append(f"replay: system {exp.system.name} routes no queries; only the trace's "
                     "requests are replayed")
    n_cfg = spec.chunks_per_corpus
    source = TraceRouting.from_trace(trace, path, max(1, n_cfg), exp.model.layers,
                                     exp.run.granularity)
    cmap = source.chunk_map
    per_query = cmap.chunks_per_query(source.streams[0])
    if remote and cmap.mode != "identity":
        how = ("each trace chunk stands for a block of about "
               f"{cmap.n_config / cmap.n_trace:.3g} config chunks"
               if cmap.mode == "expand" else
               "trace chunk c becomes config chunk floor(c * "
               f"{cmap.n_config} / {cmap.n_trace})")
        notes.append(f"replay: the trace's corpus has {cmap.n_trace} chunks, the config's "
                     f"{cmap.n_config} (workload.shared.tokens / chunk_tokens): chunk ids mapped "
                     f"proportionally ({how}); a query keeps {per_query:.1f} config chunks")
    if remote and abs(per_query - spec.keep_chunks) > 0.5:
        notes.append(f"replay: trace queries keep {per_query:.1f} of {n_cfg} config chunks; "
                     f"workload.shared.keep_fraction {spec.keep_fraction} would keep "
                     f"{spec.keep_chunks}; routing follows the trace")

    trace_requests_n = None
    if arrivals == "trace":
        n_req = exp.run.requests if exp.run.requests is not None else DURATION_ONLY_REQUESTS
        requests, closed, trace_requests_n = trace_requests(trace, n_req)
        if n_req > trace_requests_n:
            print(f"note: replay: {path} holds {trace_requests_n} requests; the run plans "
                  f"{n_req}: they are cycled", file=sys.stderr)
            notes.append(f"replay: the trace holds {trace_requests_n} requests; run.requests "
                         f"{n_req} cycles them (same sizes, new ids)"
                         if exp.run.requests is not None else
                         f"replay: bounded by run.duration_s only: {n_req} requests planned "
                         f"from the trace's {trace_requests_n} (cycled)")
        notes.append(f"replay: arrivals from the trace: closed loop, {closed} in flight (its "
                     "largest batch), recorded prompt and output lengths")
        exp = exp.with_requests(requests, closed)
    else:
        notes.extend(exp.workload.notes)

    result = simulate(exp, _TraceRouterFactory(source), progress=progress, timeline=timeline)
    cycles = source.cycles if remote else 0
    if cycles:
        msg = (f"replay: {path} is shorter than the run: its {source.queries_in_trace} "
               f"recorded queries were cycled {cycles} time(s) ({source.queries_used} used)")
        notes.append(msg)
        print(f"note: {msg}", file=sys.stderr)
    info = {
        "trace": path,
        "trace_sha256": hashlib.sha256(Path(trace_path).read_bytes()).hexdigest(),
        "trace_device": h.device,
        "trace_model": h.capture.get("model") if isinstance(h.capture, dict) else None,
        "trace_dtype": h.dtype,
        "trace_layers": h.layers,
        "trace_steps": len(trace.steps()),
        "trace_records": int(trace.n_records),
        "layers_replayed": source.layers,
        "granularity": exp.run.granularity,
        "queries_in_trace": source.queries_in_trace,
        "queries_used": source.queries_used if remote else 0,
        "cycles": cycles,
        "chunk_map": {"mode": cmap.mode, "trace_chunks": cmap.n_trace,
                      "config_chunks": n_cfg, "trace_top_k": h.top_k,
                      "config_keep_chunks": spec.keep_chunks,
                      "config_chunks_per_query": per_query},
        "arrivals": arrivals,
    }
    if trace_requests_n is not None:
        info["requests_in_trace"] = trace_requests_n
        info["closed_loop_concurrency"] = closed
    for note in notes:
        if note not in result.summary["notes"]:
            result.summary["notes"].append(note)
    result.summary["replay"] = info
    result.run_info["replay"] = info
    result.config = config
    result.summary["config"] = exp.config
    if write:
        from sim.run.results import write_results

        result.out_dir = write_results(result, out_dir)
    return result


__all__ = [
    "ChunkMap",
    "TraceQueryRouter",
    "TraceRouting",
    "check_model",
    "replay_simulation",
    "trace_requests",
]
