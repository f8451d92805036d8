"""Measured kernel and link times as hw ops, each tagged train or held out.

Three sources:

* a probe file (``moska-sim probe``; traces/probe_format.py): copies, GEMMs, decode and shared
  attention, merges, on the GPU it ran on, burst and sustained;
* Vidur's H100 GEMM profile (hw/measurements/vidur-h100/mlp_Llama-2-7b-hf.csv: Llama-2-7B's four
  projections at tensor parallelism 1, m = 1 .. 4096 tokens, fp16, GPU kernel time);
* Vidur's H100 NCCL send/recv profile (send_recv_h100_dgx.csv: 2 KiB .. 64 MiB over NVLink in
  one DGX, and over InfiniBand between two).

The split holds out whole shape families, never single points of a family that trained:
GEMMs by projection shape (the model never saw those (n, k)), decode attention by context
length, shared attention by batch size, merges by batch size, copies by size; links by message
size (every other size). SPLIT_RULES says which, and docs/fidelity.md repeats it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hw.ops import (
    ComputeOp,
    Copy,
    DecodeAttention,
    Gemm,
    GroupedSharedAttention,
    LseMerge,
    SharedAttention,
)
from traces.probe_format import ProbeFile, ProbeRecord, read_probe

VIDUR_DIR = Path(__file__).resolve().parents[2] / "hw" / "measurements" / "vidur-h100"
VIDUR_MLP = "mlp_Llama-2-7b-hf.csv"
VIDUR_SEND_RECV = "send_recv_h100_dgx.csv"
TRAIN, TEST = "train", "test"
MiB, Ki = 1 << 20, 1024

# probe kernel name -> hw kernel profile
PROBE_PROFILES = {
    ("copy", "torch-copy"): "torch-copy",
    ("gemm", "cublas"): "cublas",
    ("gemm", "cublas-fp8"): "cublas-fp8",
    ("decode_attention", "triton-moska"): "triton-moska-decode",
    ("decode_attention", "sdpa"): "sdpa-decode",
    ("shared_attention", "triton-moska"): "triton-moska-shared",
    ("shared_attention", "sdpa"): "sdpa-shared",
    ("merge", "triton-moska"): "triton-moska-merge",
}
# Held-out shape families of the probe grid (everything else trains).
HELD_OUT_GEMM_NK = {(4096, 4096), (4096, 14336), (4096, 1024)}  # o_proj, down_proj, the split-K shape
HELD_OUT_DECODE_TOKENS = {4 * Ki, 64 * Ki}
HELD_OUT_SHARED_BATCH = {2, 8, 32, 128, 512}
HELD_OUT_MERGE_BATCH = {8, 128}
HELD_OUT_COPY_BYTES = {4 * MiB, 64 * MiB, 1024 * MiB}
# Vidur: Llama-2-7B projections at TP 1 -> (n, k); o_proj and the fused gate+up are held out.
VIDUR_OPS = {"attn_pre_proj": (12288, 4096), "attn_post_proj": (4096, 4096),
             "mlp_up_proj": (22016, 4096), "mlp_down_proj": (4096, 11008)}
VIDUR_HELD_OUT = {"attn_post_proj", "mlp_up_proj"}
LINKS = {2: "nvlink4", 1: "ib-ndr"}  # devices_per_node -> link preset (2: one DGX, NVLink; 1: two nodes)
SPLIT_RULES = {
    "gemm": "held out: o_proj (4096x4096), down_proj (4096x14336) and 4096x1024 on the probe; "
            "attn_post_proj and mlp_up_proj on Vidur",
    "decode_attention": "held out: contexts 4Ki and 64Ki tokens (trained on 1Ki and 16Ki)",
    "shared_attention": "held out: batches 2, 8, 32, 128, 512 (trained on 1, 4, 16, 64, 256)",
    "merge": "held out: batches 8 and 128 (trained on 1, 32, 512)",
    "copy": "held out: 4, 64 and 1024 MiB (trained on 1, 16, 256 MiB and 4 GiB)",
    "send_recv": "held out: every other message size (odd positions in size order)",
    "validation": "a probe of the validation grid (other models' shapes) is held out whole",
}


class DatasetError(ValueError):
    """A measurement file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Sample:
    """One measured kernel: the hw op that prices it, under which profile and clock, and its split."""

    source: str  # the file it came from
    chip: str  # hw chip preset
    kind: str  # what the error tables group by: gemm-bf16, gemm-fp8, decode_attention, ...
    profile: str  # hw kernel profile
    op: ComputeOp
    clock: str  # burst | sustained
    measured_ns: float
    split: str  # train | test
    label: str = ""
    tile_m: int = 0  # the row tile the kernel was launched with (0: the profile's own choice)
    glue: int = 0  # small extra launches timed with it (priced at torch-copy's fixed cost each)


@dataclass(frozen=True)
class LinkSample:
    """One NCCL send/recv time: message bytes over one link preset."""

    source: str
    link: str
    nbytes: int
    measured_ns: float
    split: str


def _probe_op(r: ProbeRecord) -> ComputeOp | None:
    s = r.shape
    if r.family == "copy":
        return Copy(s["bytes"])
    if r.family == "gemm":
        return Gemm(s["m"], s["n"], s["k"], r.dtype)
    heads = {"q_heads": s.get("q_heads", 1), "kv_heads": s.get("kv_heads", 1), "head_dim": s.get("head_dim", 1)}
    if r.family == "decode_attention":
        return DecodeAttention(**heads, dtype=r.dtype, batch=s["batch"], kv_tokens=s["kv_tokens"])
    if r.family == "shared_attention":
        if r.kernel == "sdpa":
            return SharedAttention(**heads, dtype=r.dtype, batch=s["batch"], kv_tokens=s["kv_tokens"])
        n_chunks = -(-s["kv_tokens"] // s["chunk_tokens"])
        return GroupedSharedAttention(**heads, dtype=r.dtype,
                                      chunk_batches=expected_histogram(s["batch"], s["top_k"], n_chunks),
                                      chunk_tokens=s["chunk_tokens"], requests=s["batch"])
    if r.family == "merge":
        return LseMerge(s["batch"], s["q_heads"], s["head_dim"], s["shared_parts"] + s["unique_parts"], "fp32")
    return None  # router: the reference's torch region, not one hw op


def expected_histogram(batch: int, top_k: int, n_chunks: int) -> tuple[tuple[int, int], ...]:
    """(queries, chunks) pairs a uniform router gives in expectation: each chunk is picked by each of
    ``batch`` requests with probability top_k / n_chunks, so its count is Binomial(batch, top_k / n_chunks).
    Every chunk when top_k == n_chunks."""
    if top_k >= n_chunks:
        return ((batch, n_chunks),)
    q = top_k / n_chunks
    pairs = []
    for c in range(1, batch + 1):
        n = round(n_chunks * math.comb(batch, c) * q**c * (1 - q) ** (batch - c))
        if n:
            pairs.append((c, n))
    return tuple(pairs) or ((max(1, round(batch * q)), n_chunks),)


def probe_split(r: ProbeRecord) -> str:
    """train or test for one probe record (SPLIT_RULES)."""
    s = r.shape
    held = {
        "copy": lambda: s["bytes"] in HELD_OUT_COPY_BYTES,
        "gemm": lambda: (s["n"], s["k"]) in HELD_OUT_GEMM_NK,
        "decode_attention": lambda: s["kv_tokens"] in HELD_OUT_DECODE_TOKENS,
        "shared_attention": lambda: s["batch"] in HELD_OUT_SHARED_BATCH,
        "merge": lambda: s["batch"] in HELD_OUT_MERGE_BATCH,
    }.get(r.family, lambda: False)()
    return TEST if held else TRAIN


def probe_kind(r: ProbeRecord) -> str:
    """The error-table group of a probe record: GEMMs by dtype, attention by kernel."""
    if r.family == "gemm":
        return f"gemm-{r.dtype}" if r.clock == "burst" else f"gemm-{r.dtype} (sustained)"
    kind = f"{r.family}/{r.kernel}" if r.family in ("decode_attention", "shared_attention") else r.family
    return kind if r.clock == "burst" else f"{kind} (sustained)"


def probe_samples(path: str | Path, chip: str | None = None) -> list[Sample]:
    """Every probe record hw can price, as samples (router records are skipped). A probe of the
    ``validation`` grid (shapes the standard grid never times) is held out whole."""
    probe: ProbeFile = read_probe(path)
    chip = chip or probe.device.get("chip_hint") or ""
    if not chip:
        raise DatasetError(f"{path}: field 'device.chip_hint' is empty; pass --chip NAME")
    independent = probe.method.get("grid") == "validation"  # a grid of other shapes: all of it held out
    out = []
    for r in probe.records:
        prof = PROBE_PROFILES.get((r.family, r.kernel))
        op = _probe_op(r)
        if prof is None or op is None:
            continue
        label = " ".join(f"{k}={v}" for k, v in r.shape.items() if k not in ("q_heads", "kv_heads", "head_dim"))
        split = TEST if independent else probe_split(r)
        out.append(Sample(str(path), chip, probe_kind(r), prof, op, r.clock, r.median_ns, split, label))
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _float(path: Path, i: int, row: dict[str, str], key: str) -> float:
    try:
        v = float(row[key])
    except (KeyError, ValueError):
        raise DatasetError(f"{path}: row {i + 2}: field {key!r}: expected a number, got {row.get(key)!r}") from None
    if not math.isfinite(v):
        raise DatasetError(f"{path}: row {i + 2}: field {key!r}: expected a finite number, got {v}")
    return v


def vidur_gemm_samples(folder: str | Path = VIDUR_DIR, chip: str = "h100-sxm") -> list[Sample]:
    """Vidur's Llama-2-7B GEMMs at TP 1 (median of 20, ms -> ns); a repeated (tokens, TP) keeps its first row."""
    path = Path(folder) / VIDUR_MLP
    seen: set[int] = set()
    out = []
    for i, row in enumerate(_rows(path)):
        if row.get("num_tensor_parallel_workers") != "1":
            continue
        m = int(_float(path, i, row, "num_tokens"))
        if m in seen:
            continue
        seen.add(m)
        for op_name, (n, k) in VIDUR_OPS.items():
            ms = _float(path, i, row, f"time_stats.{op_name}.median")
            out.append(Sample(str(path), chip, "gemm-fp16", "cublas", Gemm(m, n, k, "fp16"), "burst", ms * 1e6,
                              TEST if op_name in VIDUR_HELD_OUT else TRAIN, f"{op_name} m={m}"))
    return out


def send_recv_samples(folder: str | Path = VIDUR_DIR) -> list[LinkSample]:
    """Vidur's NCCL send/recv medians per link; every other size (in size order) is held out."""
    path = Path(folder) / VIDUR_SEND_RECV
    per_link: dict[str, list[tuple[int, float]]] = {}
    for i, row in enumerate(_rows(path)):
        dpn = int(_float(path, i, row, "devices_per_node"))
        if dpn not in LINKS:
            raise DatasetError(f"{path}: row {i + 2}: field 'devices_per_node': expected 1 or 2, got {dpn}")
        per_link.setdefault(LINKS[dpn], []).append(
            (int(_float(path, i, row, "size")), _float(path, i, row, "time_stats.send_recv.median") * 1e6))
    out = []
    for link, pts in per_link.items():
        for j, (nbytes, ns) in enumerate(sorted(pts)):
            out.append(LinkSample(str(path), link, nbytes, ns, TEST if j % 2 else TRAIN))
    return out


def select(samples: list[Sample], pred: Callable[[Sample], bool]) -> list[Sample]:
    return [s for s in samples if pred(s)]


__all__ = ["SPLIT_RULES", "TEST", "TRAIN", "VIDUR_DIR", "DatasetError", "LinkSample", "Sample", "probe_samples",
           "send_recv_samples", "vidur_gemm_samples"]
