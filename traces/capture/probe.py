"""`moska-sim probe`: time a standard grid of kernels on this GPU and write a probe file.

What is timed (Llama-3.1-8B attention heads: 32 query / 8 KV heads, head_dim 128):

* ``copy``: device-to-device copies, 1 MiB .. 4 GiB (``torch-copy``).
* ``gemm``: the model's projection and FFN shapes at m = 1 .. 8192 (decode and prefill), bf16
  (``cublas``: ``x @ w.T`` as nn.Linear does) and fp8 e4m3 (``cublas-fp8``: ``torch._scaled_mm``);
  plus 8192^3 for the peak.
* ``decode_attention``: the project's flash-decoding kernel (``triton-moska``) and PyTorch SDPA
  (``sdpa``) over B requests x N private tokens.
* ``shared_attention``: B requests' queries over one shared KV of N tokens, the project's grouped
  kernel (``triton-moska``, every chunk selected, or routed top 25%) and SDPA over the batched
  queries (``sdpa``), B = 1 .. 512.
* ``merge``: the project's log-sum-exp merge kernel; ``router``: its router + dispatch region.

How: inputs are random (never zeros), built once per shape; before every timed call the L2 is
flushed by writing a buffer larger than it, then (on CUDA) a short GPU sleep is queued so the
host has queued the call before the GPU reaches it; the time is GPU time between CUDA events;
``--repeats`` calls, median / p10 / p90 kept. A background thread samples the SM clock and board
power through NVML, so every record carries what the GPU ran at. The ``sustained`` pass runs
after a heat phase of continuous large GEMMs and keeps the load up between records: what a
serving node sees, against the ``burst`` pass of a GPU idle before the grid.

``--device cpu`` (with TRITON_INTERPRET=1) runs the same code path with a host timer, for tests.
Format: traces/probe_format.py and docs/fidelity.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import math
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traces.probe_format import ProbeFile, ProbeRecord, write_probe

Q_HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128  # Llama-3.1-8B attention
LLAMA8B_LINEAR = {  # (n, k) of each projection: fused QKV, o_proj, fused gate+up, down_proj
    "qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336),
}
GRIDS = ("standard", "validation", "quick", "tiny")
# The validation grid: shapes none of the standard grid's, for an independent check of profiles fitted
# on it (other models' projections, other m, contexts, batches, chunk lengths and partial counts).
VALIDATION_LINEAR = {  # (n, k): Llama-3.1-70B at TP 8 (qkv, o, gate_up, down) and Qwen-7B-like
    "70b-qkv": (1280, 8192), "70b-o": (8192, 1024), "70b-gate_up": (7168, 8192), "70b-down": (8192, 3584),
    "qwen-gate_up": (37888, 3584),
}


@dataclass(frozen=True)
class Case:
    """One grid point: what it is (the record's identity) and how to build its callable."""

    family: str
    kernel: str
    dtype: str
    shape: dict[str, int]
    build: Callable[[Any], Callable[[], object]]  # device -> the call to time
    sleep_us: float = 0.0  # extra GPU sleep before the call (many-launch regions)


# ---------------------------------------------------------------- builders (torch imported lazily)

def _torch():
    import torch

    return torch


def _randn(shape, dtype, device, scale: float = 1.0):
    torch = _torch()
    return (torch.randn(shape, device=device, dtype=torch.float32) * scale).to(dtype)


def _copy(nbytes: int):
    def build(device):
        torch = _torch()
        n = nbytes // 2
        src = _randn((n,), torch.bfloat16, device)
        dst = torch.empty_like(src)
        return lambda: dst.copy_(src)
    return build


def _gemm(m: int, n: int, k: int, dtype: str):
    def build(device):
        torch = _torch()
        if dtype == "bf16":
            a = _randn((m, k), torch.bfloat16, device)
            w = _randn((n, k), torch.bfloat16, device, 0.02)
            return lambda: a @ w.t()
        f8 = torch.float8_e4m3fn
        a = _randn((m, k), f8, device)
        w = _randn((n, k), f8, device)
        one = torch.ones((), device=device, dtype=torch.float32)
        b = w.t()  # column-major k x n, as cuBLASLt's fp8 path wants
        fn = lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        fn()  # raise here (unsupported shape) rather than inside the timer
        return fn
    return build


def _decode(batch: int, tokens: int, kernel: str):
    def build(device):
        torch = _torch()
        from traces.capture import kernels

        dt = torch.bfloat16 if device.type == "cuda" else torch.float32
        q = _randn((batch, Q_HEADS, HEAD_DIM), dt, device)
        k = _randn((batch, KV_HEADS, tokens, HEAD_DIM), dt, device)
        v = _randn((batch, KV_HEADS, tokens, HEAD_DIM), dt, device)
        if kernel == "sdpa":
            import torch.nn.functional as F

            q4 = q.view(batch, Q_HEADS, 1, HEAD_DIM)
            return lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=True)
        lens = torch.full((batch,), tokens, dtype=torch.int32, device=device)
        return lambda: kernels.unique_attention_triton(q, k, v, lens)
    return build


def _shared_kv(tokens: int, chunk_tokens: int, device):
    torch = _torch()
    from traces.capture.shared_kv import SharedKV

    dt = torch.bfloat16 if device.type == "cuda" else torch.float32
    k = _randn((KV_HEADS, tokens, HEAD_DIM), dt, device)
    v = _randn((KV_HEADS, tokens, HEAD_DIM), dt, device)
    n_chunks = -(-tokens // chunk_tokens)
    summaries = _randn((KV_HEADS, n_chunks, HEAD_DIM), torch.float32, device)
    return SharedKV(k=k, v=v, summaries=summaries, chunk_tokens=chunk_tokens), dt


def _shared(batch: int, tokens: int, chunk_tokens: int, top_k: int, kernel: str):
    def build(device):
        from traces.capture import kernels
        from traces.capture.router import build_dispatch, route

        shared, dt = _shared_kv(tokens, chunk_tokens, device)
        q = _randn((batch, Q_HEADS, HEAD_DIM), dt, device)
        if kernel == "sdpa":
            import torch.nn.functional as F

            g = Q_HEADS // KV_HEADS
            # every request's g heads of one KV head become rows of one query matrix per KV head
            qb = q.view(batch, KV_HEADS, g, HEAD_DIM).permute(1, 0, 2, 3).reshape(1, KV_HEADS, batch * g, HEAD_DIM)
            kk, vv = shared.k.unsqueeze(0), shared.v.unsqueeze(0)
            return lambda: F.scaled_dot_product_attention(qb, kk, vv)
        plan = kernels.plan_shared(q, shared, top_k)
        sel = route(q, shared, top_k)
        dispatch = build_dispatch(sel, shared.n_chunks, plan.config.block_m // (Q_HEADS // KV_HEADS))
        return lambda: kernels.shared_attention_triton(q, shared, dispatch, plan)
    return build


def _merge(batch: int, shared_parts: int, unique_parts: int):
    def build(device):
        torch = _torch()
        from traces.capture import kernels

        g = Q_HEADS // KV_HEADS
        o_s = _randn((batch * KV_HEADS * shared_parts, 1, g, HEAD_DIM), torch.float32, device)
        l_s = _randn((batch * KV_HEADS * shared_parts, 1, g), torch.float32, device)
        o_u = _randn((batch, KV_HEADS, unique_parts, g, HEAD_DIM), torch.float32, device)
        l_u = _randn((batch, KV_HEADS, unique_parts, g), torch.float32, device)
        out_dt = torch.bfloat16 if device.type == "cuda" else torch.float32
        return lambda: kernels.merge_triton(o_s, l_s, o_u, l_u, out_dt)
    return build


def _router(batch: int, n_chunks: int, top_k: int):
    def build(device):
        from traces.capture import kernels
        from traces.capture.router import build_dispatch, route

        shared, dt = _shared_kv(n_chunks * 16, 16, device)
        q = _randn((batch, Q_HEADS, HEAD_DIM), dt, device)
        g = Q_HEADS // KV_HEADS
        cfg = kernels.shared_config(max(1, round(batch * top_k / n_chunks)) * g)

        def call():
            sel = route(q, shared, top_k)
            return build_dispatch(sel, n_chunks, cfg.block_m // g)
        return call
    return build


# ---------------------------------------------------------------- the grids

def _pow2(lo: int, hi: int) -> list[int]:
    out, x = [], lo
    while x <= hi:
        out.append(x)
        x *= 2
    return out


def grid(name: str) -> list[Case]:
    """The cases of grid ``name`` (standard: the shipped probe; quick: a subset; tiny: CPU tests)."""
    if name not in GRIDS:
        raise ValueError(f"--grid: expected one of {', '.join(GRIDS)}, got {name!r}")
    if name == "validation":
        return validation_grid()
    Ki, Mi = 1024, 1024 * 1024
    tiny = name == "tiny"
    quick = name == "quick"
    cases: list[Case] = []
    copy_sizes = [64 * Ki, 256 * Ki] if tiny else [Mi * s for s in (1, 4, 16, 64, 256, 1024, 4096)]
    for nbytes in copy_sizes:
        cases.append(Case("copy", "torch-copy", "bf16", {"bytes": nbytes}, _copy(nbytes)))
    if tiny:
        gemm_shapes = {"small": (64, 32)}
        ms = [1, 16]
    else:
        gemm_shapes = dict(LLAMA8B_LINEAR)
        ms = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
        if quick:
            ms = [1, 16, 64, 256, 1024, 8192]
    for dtype in (("bf16",) if tiny else ("bf16", "fp8")):
        kernel = "cublas" if dtype == "bf16" else "cublas-fp8"
        for n, k in gemm_shapes.values():
            for m in ms:
                cases.append(Case("gemm", kernel, dtype, {"m": m, "n": n, "k": k}, _gemm(m, n, k, dtype)))
        if not tiny:
            for m in (128, 256, 512, 1024):  # the shape where split-K made the old model fall as m grew
                cases.append(Case("gemm", kernel, dtype, {"m": m, "n": 4096, "k": 1024}, _gemm(m, 4096, 1024, dtype)))
            cases.append(Case("gemm", kernel, dtype, {"m": 8192, "n": 8192, "k": 8192}, _gemm(8192, 8192, 8192, dtype)))
    heads = {"q_heads": Q_HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM}
    dt_attn = "fp32" if tiny else "bf16"
    if tiny:
        decode = [(1, 256), (2, 512)]
    else:
        decode = [(b, n) for b in (1, 4, 16, 64, 256) for n in (1 * Ki, 4 * Ki, 16 * Ki, 64 * Ki)
                  if b * n <= 4 * Mi]
        if quick:
            decode = decode[::2]
    for kernel in (("triton-moska",) if tiny else ("triton-moska", "sdpa")):
        for b, n in decode:
            cases.append(Case("decode_attention", kernel, dt_attn, {"batch": b, "kv_tokens": n, **heads},
                              _decode(b, n, kernel)))
    chunk = 64 if tiny else 4096
    shared_n = [512] if tiny else [256 * Ki, 1 * Mi]
    batches = [1, 4] if tiny else [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    if quick:
        batches = [1, 8, 64, 512]
    for kernel in (("triton-moska",) if tiny else ("triton-moska", "sdpa")):
        for n in shared_n:
            for b in batches:
                all_chunks = -(-n // chunk)
                cases.append(Case("shared_attention", kernel, dt_attn,
                                  {"batch": b, "kv_tokens": n, "chunk_tokens": chunk, "top_k": all_chunks, **heads},
                                  _shared(b, n, chunk, all_chunks, kernel)))
    if not tiny:  # MoSKA's routed case: each (request, kv head) keeps a quarter of 256 chunks
        for b in ([16, 64, 256] if not quick else [64]):
            n = 1 * Mi
            cases.append(Case("shared_attention", "triton-moska", "bf16",
                              {"batch": b, "kv_tokens": n, "chunk_tokens": chunk, "top_k": n // chunk // 4, **heads},
                              _shared(b, n, chunk, n // chunk // 4, "triton-moska")))
    merge = [(1, 2, 1), (4, 8, 2)] if tiny else [(b, sp, su) for b in (1, 8, 32, 128, 512)
                                                 for sp, su in ((8, 1), (32, 4), (64, 16))]
    for b, sp, su in merge:
        cases.append(Case("merge", "triton-moska", "fp32",
                          {"batch": b, "shared_parts": sp, "unique_parts": su, **heads}, _merge(b, sp, su)))
    router = [(1, 8, 2), (4, 8, 2)] if tiny else [(b, 256, 64) for b in (1, 8, 32, 128, 512)]
    for b, nc, tk in router:
        cases.append(Case("router", "torch-router", "fp32",
                          {"batch": b, "n_chunks": nc, "top_k": tk, **heads}, _router(b, nc, tk), sleep_us=2000))
    return cases


def validation_grid() -> list[Case]:
    """Shapes the standard grid never times (see VALIDATION_LINEAR), every family but the router."""
    Ki, Mi = 1024, 1024 * 1024
    cases: list[Case] = []
    for nbytes in (2 * Mi, 32 * Mi, 512 * Mi, 2048 * Mi):
        cases.append(Case("copy", "torch-copy", "bf16", {"bytes": nbytes}, _copy(nbytes)))
    for dtype in ("bf16", "fp8"):
        kernel = "cublas" if dtype == "bf16" else "cublas-fp8"
        for n, k in VALIDATION_LINEAR.values():
            for m in (3, 24, 96, 384, 1536, 6144):
                cases.append(Case("gemm", kernel, dtype, {"m": m, "n": n, "k": k}, _gemm(m, n, k, dtype)))
    heads = {"q_heads": Q_HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM}
    for kernel in ("triton-moska", "sdpa"):
        for b, n in ((2, 2 * Ki), (8, 32 * Ki), (32, 8 * Ki), (128, 2 * Ki), (128, 24 * Ki), (512, 2 * Ki)):
            cases.append(Case("decode_attention", kernel, "bf16", {"batch": b, "kv_tokens": n, **heads},
                              _decode(b, n, kernel)))
    for kernel in ("triton-moska", "sdpa"):
        for n, chunk in ((512 * Ki, 2048), (2 * Mi, 4096)):
            for b in (3, 24, 96, 384):
                all_chunks = n // chunk
                cases.append(Case("shared_attention", kernel, "bf16",
                                  {"batch": b, "kv_tokens": n, "chunk_tokens": chunk, "top_k": all_chunks, **heads},
                                  _shared(b, n, chunk, all_chunks, kernel)))
    for b in (24, 384):  # routed: a quarter of 256 chunks of 2048 tokens
        cases.append(Case("shared_attention", "triton-moska", "bf16",
                          {"batch": b, "kv_tokens": 512 * Ki, "chunk_tokens": 2048, "top_k": 64, **heads},
                          _shared(b, 512 * Ki, 2048, 64, "triton-moska")))
    for b, sp, su in ((4, 16, 2), (64, 16, 8), (256, 48, 4), (1024, 8, 1)):
        cases.append(Case("merge", "triton-moska", "fp32",
                          {"batch": b, "shared_parts": sp, "unique_parts": su, **heads}, _merge(b, sp, su)))
    return cases


def sustained_subset(cases: list[Case]) -> list[Case]:
    """The cases re-timed under sustained load: the compute-bound ones (where clocks matter) and a
    few memory-bound controls (where they should not)."""
    out = []
    for c in cases:
        s = c.shape
        if c.family == "gemm" and (s["m"] >= 2048 or s == {"m": 8192, "n": 8192, "k": 8192}):
            if s["m"] == 8192 or (s["n"], s["k"]) == LLAMA8B_LINEAR["gate_up"]:
                out.append(c)
        elif c.family == "shared_attention" and s["batch"] >= 32 and s["top_k"] * s["chunk_tokens"] >= s["kv_tokens"] or c.family == "copy" and s["bytes"] >= 256 * 1024 * 1024 or c.family == "gemm" and s["m"] in (1, 16) and (s["n"], s["k"]) == LLAMA8B_LINEAR["gate_up"] or c.family == "gemm" and (s["n"], s["k"]) in VALIDATION_LINEAR.values() and s["m"] in (3, 1536, 6144):
            out.append(c)
    return out


# ---------------------------------------------------------------- timing

class PowerSampler:
    """Samples SM clock (MHz) and board power (W) through NVML every ``period_s`` in a thread."""

    def __init__(self, period_s: float = 0.01) -> None:
        self.period_s = period_s
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error = ""
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception as exc:  # noqa: BLE001 - NVML missing (CPU, no driver) in any form: records carry None
            self._nvml = None
            self.error = f"{type(exc).__name__}: {exc}"

    def read(self) -> tuple[float, float] | None:
        if self._nvml is None:
            return None
        n = self._nvml
        return (float(n.nvmlDeviceGetClockInfo(self._handle, n.NVML_CLOCK_SM)),
                n.nvmlDeviceGetPowerUsage(self._handle) / 1000.0)

    def __enter__(self) -> PowerSampler:  # noqa: PYI034
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            r = self.read()
            if r:
                self.samples.append((time.perf_counter(), *r))
            time.sleep(self.period_s)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def window(self, t0: float, t1: float) -> tuple[float | None, float | None]:
        """Median clock and power of the samples in [t0, t1] (None without NVML or samples)."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if not inside:
            r = self.read()
            return (r[0], r[1]) if r else (None, None)
        return (statistics.median(s[1] for s in inside), statistics.median(s[2] for s in inside))


class Timer:
    """Times one callable: L2 flush, GPU sleep, CUDA events (host perf_counter on CPU)."""

    def __init__(self, device, flush_bytes: int, repeats: int, warmup: int) -> None:
        torch = _torch()
        self.device = device
        self.cuda = device.type == "cuda"
        self.repeats, self.warmup = repeats, warmup
        self.flush = torch.empty(flush_bytes // 4, dtype=torch.float32, device=device)
        self.cycles_per_us = 0.0
        if self.cuda:
            from traces.capture.timing import sleep_cycles_per_ns

            self.cycles_per_us = sleep_cycles_per_ns() * 1e3

    def time(self, fn: Callable[[], object], sleep_us: float = 0.0) -> list[float]:
        """``repeats`` times of ``fn`` in ns (after ``warmup`` untimed calls)."""
        torch = _torch()
        for _ in range(self.warmup):
            fn()
        if not self.cuda:
            out = []
            for _ in range(self.repeats):
                self.flush.zero_()
                t0 = time.perf_counter_ns()
                fn()
                out.append(float(time.perf_counter_ns() - t0))
            return out
        torch.cuda.synchronize()
        pairs = []
        sleep = int((20.0 + sleep_us) * self.cycles_per_us)  # covers the host's launch of fn
        for _ in range(self.repeats):
            self.flush.add_(1.0)  # read + write > L2: nothing of fn's inputs stays cached
            torch.cuda._sleep(sleep)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize()
        return [s.elapsed_time(e) * 1e6 for s, e in pairs]


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def heat(device, seconds: float) -> None:
    """Keep the GPU busy with large bf16 GEMMs for ``seconds`` (no-op on CPU)."""
    if device.type != "cuda" or seconds <= 0:
        return
    torch = _torch()
    a = _randn((8192, 8192), torch.bfloat16, device)
    b = _randn((8192, 8192), torch.bfloat16, device)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()


def run_cases(cases: list[Case], timer: Timer, sampler: PowerSampler, clock: str,
              log: Callable[[str], None], reheat_s: float = 0.0) -> Iterator[ProbeRecord]:
    """Time every case; yield one record each (a case the device cannot run is logged and skipped)."""
    torch = _torch()
    for case in cases:
        heat(timer.device, reheat_s)
        try:
            fn = case.build(timer.device)
            t0 = time.perf_counter()
            times = timer.time(fn, case.sleep_us)
            t1 = time.perf_counter()
        except (RuntimeError, ValueError, NotImplementedError) as exc:
            log(f"skip {case.family} {case.kernel} {case.dtype} {case.shape}: {str(exc).splitlines()[0][:160]}")
            continue
        finally:
            fn = None
            if timer.cuda:  # free the case's inputs (gc under the Triton interpreter breaks its rewrite cache)
                gc.collect()
                torch.cuda.empty_cache()
        clk, pw = sampler.window(t0, t1)
        rec = ProbeRecord(
            family=case.family, kernel=case.kernel, clock=clock, dtype=case.dtype, shape=dict(case.shape),
            median_ns=round(statistics.median(times), 1), p10_ns=round(_quantile(times, 0.1), 1),
            p90_ns=round(_quantile(times, 0.9), 1), n=len(times),
            sm_clock_mhz=None if clk is None else round(clk), power_w=None if pw is None else round(pw, 1),
        )
        log(f"{clock:9s} {case.family:16s} {case.kernel:13s} {case.dtype:5s} "
            f"{' '.join(f'{k}={v}' for k, v in case.shape.items() if k not in ('q_heads', 'kv_heads', 'head_dim'))}"
            f"  {rec.median_ns / 1e3:10.2f} us  {rec.sm_clock_mhz} MHz {rec.power_w} W")
        yield rec


def device_info(device) -> dict[str, Any]:
    """What the probe ran on (name, SMs, L2, memory, driver)."""
    torch = _torch()
    if device.type != "cuda":
        return {"name": f"cpu ({platform.processor() or platform.machine()})", "chip_hint": "",
                "sm_count": 0, "l2_bytes": 0, "memory_bytes": 0}
    p = torch.cuda.get_device_properties(device)
    name = p.name
    hint = "h200" if "H200" in name else "h100-sxm" if "H100" in name else ""
    info: dict[str, Any] = {"name": name, "chip_hint": hint, "sm_count": p.multi_processor_count,
                            "l2_bytes": int(getattr(p, "L2_cache_size", 0)), "memory_bytes": int(p.total_memory),
                            "capability": f"{p.major}.{p.minor}"}
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        info["max_sm_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)
        info["max_mem_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM)
        info["power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0
    except Exception as exc:  # noqa: BLE001 - NVML missing in any form: the probe still runs
        info["nvml"] = f"unavailable: {type(exc).__name__}"
    return info


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moska-sim probe",
        description="Time a standard grid of copies, GEMMs, attention, merge and router kernels on this "
                    "GPU (L2 flushed, GPU time, clocks and power recorded) and write a probe file "
                    "(traces/probe_format.py; docs/fidelity.md). Needs the reference extra and a CUDA GPU.",
    )
    p.add_argument("--out", required=True, type=Path, help="probe file to write (e.g. traces/probes/h200.probe.json)")
    p.add_argument("--grid", choices=GRIDS, default="standard",
                   help="standard (the shipped probe, what profiles are fitted on), validation (other shapes, "
                        "an independent check), quick, or tiny (CPU tests); default standard")
    p.add_argument("--families", default="", help="comma-separated subset of families (default all)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per case (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    p.add_argument("--sustained-s", type=float, default=45.0,
                   help="seconds of continuous GEMMs before the sustained pass; 0 skips it (default 45)")
    p.add_argument("--reheat-s", type=float, default=0.4,
                   help="seconds of GEMMs before each sustained record, to keep the load up (default 0.4)")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (TRITON_INTERPRET=1; for tests)")
    p.add_argument("--flush-mib", type=int, default=256, help="L2 flush buffer in MiB (default 256)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``moska-sim probe``: 0 on success, 2 on a user error (one line on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        import torch
    except ModuleNotFoundError:
        print("error: moska-sim probe needs the reference extra: pip install 'moska-sim[reference]'", file=sys.stderr)
        return 2
    if args.repeats < 1 or args.warmup < 0:
        print("error: --repeats: expected >= 1 (and --warmup >= 0)", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA GPU visible (use --device cpu with TRITON_INTERPRET=1 for a dry run)",
              file=sys.stderr)
        return 2
    cases = grid(args.grid)
    if args.families:
        wanted = {f.strip() for f in args.families.split(",") if f.strip()}
        cases = [c for c in cases if c.family in wanted]
    torch.manual_seed(0)
    log = lambda s: print(s, flush=True)
    timer = Timer(device, args.flush_mib * 2**20 if device.type == "cuda" else 2**20, args.repeats, args.warmup)
    import triton

    probe = ProbeFile(
        device=device_info(device),
        env={"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda or "",
             "python": platform.python_version(),
             "created_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "command": "moska-sim probe " + " ".join(argv if argv is not None else sys.argv[1:])},
        method={"grid": args.grid, "repeats": args.repeats, "warmup": args.warmup,
                "l2_flush_bytes": timer.flush.numel() * 4,
                "timer": "cuda-events" if timer.cuda else "host-perf-counter",
                "sustained_heat_s": args.sustained_s, "reheat_s": args.reheat_s,
                "inputs": "random normal (never zeros); Llama-3.1-8B heads 32/8, head_dim 128"},
    )
    with PowerSampler() as sampler:
        if sampler.error:
            probe.method["nvml"] = sampler.error
        for rec in run_cases(cases, timer, sampler, "burst", log):
            probe.records.append(rec)
            if len(probe.records) % 25 == 0:
                write_probe(probe, args.out)  # a partial file survives a time-out
        write_probe(probe, args.out)
        if args.sustained_s > 0 and device.type == "cuda":
            log(f"heating for {args.sustained_s:.0f} s ...")
            heat(device, args.sustained_s)
            log(f"after heat: {sampler.read()}")
            for rec in run_cases(sustained_subset(cases), timer, sampler, "sustained", log, args.reheat_s):
                probe.records.append(rec)
    path = write_probe(probe, args.out)
    log(f"wrote {path}: {len(probe.records)} records")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
