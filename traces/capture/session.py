"""One capture run: build (or load) the decoder, prefill a shared corpus and each request's unique
prefix, decode a batch with MoSKA attention, and return the recorded Trace."""

from __future__ import annotations

import datetime as _dt
import platform
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from traces.capture.model import PRESETS, LlamaConfig, LlamaForCausalLM, UniqueCache
from traces.capture.moska import BACKENDS, MoskaOptions, moska_attention
from traces.capture.recorder import TraceRecorder
from traces.capture.router import GROUP_REDUCES
from traces.capture.timing import CudaEventTimer, NullTimer
from traces.schema import DTYPES, Trace, TraceHeader, n_chunks_for, top_k_for

MODEL_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp8": torch.bfloat16}
KV_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}

ROUTER_NOTE = (
    "chunk summary = mean of the chunk's keys (fp32); score = {reduce} over the g query heads "
    "of q . summary; top_k highest per (request, kv head); ties -> lower chunk id; per step and layer"
)


@dataclass(frozen=True)
class CaptureOptions:
    """Everything one capture run needs (the CLI fills it; see docs/traces.md)."""

    out: Path
    preset: str = "tiny"
    checkpoint: Path | None = None
    layers: int | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    backend: str = "torch"
    shared_tokens: int = 512
    chunk_tokens: int = 64
    keep_fraction: float = 0.25
    group_reduce: str = "max"
    batch: int = 4
    unique_min: int = 8
    unique_max: int = 32
    steps: int = 4
    seed: int = 0
    timing: bool = False
    sleep_cycles: int = 4_000_000
    created_at: str | None = None
    notes: str = ""
    chip_hint: str | None = None
    first_request_id: int = 0

    def check(self) -> None:
        """Raise ValueError naming the first bad option."""
        if self.checkpoint is None and self.preset not in PRESETS:
            raise ValueError(
                f"--preset: unknown {self.preset!r} (choose from {', '.join(PRESETS)})"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype: expected one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.backend not in BACKENDS:
            raise ValueError(
                f"--backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.group_reduce not in GROUP_REDUCES:
            raise ValueError(f"--group-reduce: expected one of {', '.join(GROUP_REDUCES)}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device: expected cpu or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                "--device cuda: no CUDA device is available (torch.cuda.is_available() is False)"
            )
        if self.timing and self.device != "cuda":
            raise ValueError("--timing needs --device cuda (kernel times come from CUDA events)")
        for name in ("shared_tokens", "chunk_tokens", "batch", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}"
                )
        if self.chunk_tokens > self.shared_tokens:
            raise ValueError(
                f"--chunk-tokens {self.chunk_tokens} is larger than --shared-tokens {self.shared_tokens}"
            )
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"--keep-fraction: must be in (0, 1], got {self.keep_fraction}")
        if not 1 <= self.unique_min <= self.unique_max:
            raise ValueError(
                f"--unique-tokens: need 1 <= min <= max, got {self.unique_min}:{self.unique_max}"
            )
        if self.layers is not None and self.layers < 1:
            raise ValueError(f"--layers: must be >= 1, got {self.layers}")
        if self.first_request_id < 0:
            raise ValueError("--first-request-id: must be >= 0")


def chip_hint_for(device_name: str) -> str | None:
    """hw preset name for a CUDA device name, when it is one the simulator has (else None)."""
    name = device_name.upper()
    if "H100" in name and ("SXM" in name or "HBM3" in name):
        return "h100-sxm"
    if "H200" in name:
        return "h200"
    if "B200" in name:
        return "b200"
    return None


def software_versions(device: torch.device) -> dict[str, str]:
    """Versions of what produced the trace (python, numpy, torch, triton, CUDA, moska-sim)."""
    out = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__}
    for pkg in ("triton", "safetensors", "moska-sim"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    if device.type == "cuda":
        out["cuda"] = str(torch.version.cuda)
        major, minor = torch.cuda.get_device_capability(device)
        out["compute_capability"] = f"{major}.{minor}"
    return out


def _build_model(opts: CaptureOptions, device: torch.device) -> LlamaForCausalLM:
    dtype = MODEL_DTYPE[opts.dtype]
    if opts.checkpoint is not None:
        from traces.capture.weights import load_llama

        return load_llama(opts.checkpoint, dtype, device, num_layers=opts.layers)
    cfg: LlamaConfig = PRESETS[opts.preset]
    if opts.layers is not None:
        cfg = cfg.with_layers(opts.layers)
    model = LlamaForCausalLM.build(cfg, dtype, device)
    model.init_random(torch.Generator(device=device).manual_seed(opts.seed))
    return model


def run_capture(opts: CaptureOptions, log=None) -> Trace:
    """Run the decoder as ``opts`` says and return the recorded trace (not yet written)."""
    opts.check()
    say = log or (lambda msg: None)
    device = torch.device(opts.device)
    torch.manual_seed(opts.seed)
    model = _build_model(opts, device)
    cfg = model.config
    if opts.backend == "triton" and (cfg.head_dim < 16 or cfg.head_dim & (cfg.head_dim - 1)):
        raise ValueError(
            f"--backend triton needs head_dim a power of two >= 16, the model has {cfg.head_dim}"
        )
    kv_dtype = KV_DTYPE[opts.dtype]
    gen = torch.Generator(device="cpu").manual_seed(opts.seed + 1)

    say(f"prefill shared corpus: {opts.shared_tokens} tokens x {cfg.num_layers} layers")
    corpus = torch.randint(cfg.vocab_size, (opts.shared_tokens,), generator=gen).to(device)
    shared = model.prefill_shared(corpus, opts.chunk_tokens, kv_dtype)

    b = opts.batch
    lens = torch.randint(opts.unique_min, opts.unique_max + 1, (b,), generator=gen)
    capacity = int(lens.max()) + opts.steps
    shape = (b, cfg.kv_heads, capacity, cfg.head_dim)
    cache = UniqueCache(
        k=[torch.zeros(shape, dtype=kv_dtype, device=device) for _ in range(cfg.num_layers)],
        v=[torch.zeros(shape, dtype=kv_dtype, device=device) for _ in range(cfg.num_layers)],
        lens=lens.to(device),
    )
    say(f"prefill {b} unique prefixes of {opts.unique_min}..{opts.unique_max} tokens")
    first = []
    for i, n in enumerate(lens.tolist()):
        prompt = torch.randint(cfg.vocab_size, (n,), generator=gen).to(device)
        ks, vs, logits = model.prefill_unique(prompt, shared)
        for layer in range(cfg.num_layers):
            cache.k[layer][i, :, :n] = ks[layer]
            cache.v[layer][i, :, :n] = vs[layer]
        first.append(int(torch.argmax(logits)))
    tokens = torch.tensor(first, device=device)

    options = MoskaOptions(
        keep_fraction=opts.keep_fraction, group_reduce=opts.group_reduce, backend=opts.backend
    )
    timer: NullTimer | CudaEventTimer = (
        CudaEventTimer(opts.sleep_cycles) if opts.timing else NullTimer()
    )
    sync_warnings: list[str] = []
    host_calibration_s = 0.0
    if device.type == "cuda":
        # Warm-up: compile the kernels (and warm torch's) outside the recorded steps, and check that
        # one layer's MoSKA attention queues its work without a host synchronisation.
        q = torch.randn(b, cfg.q_heads, cfg.head_dim, device=device).to(MODEL_DTYPE[opts.dtype])

        def one_layer() -> None:
            moska_attention(q, shared[0], cache.k[0], cache.v[0], cache.lens, options)

        one_layer()
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                one_layer()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        sync_warnings = sorted(
            {
                str(w.message).splitlines()[0]
                for w in caught
                if "debug mode is a prototype" not in str(w.message)
            }
        )
        for msg in sync_warnings:
            say(f"warning: host synchronisation inside MoSKA attention: {msg}")
        if isinstance(timer, CudaEventTimer):
            host_calibration_s = timer.calibrate(one_layer)
            say(
                f"timing: host queues one layer in {host_calibration_s * 1e6:.0f} us; "
                f"GPU sleep before each layer = {timer.sleep_cycles} cycles"
            )

    request_ids = np.arange(opts.first_request_id, opts.first_request_id + b, dtype=np.int64)
    recorder = TraceRecorder(request_ids=request_ids)
    for step in range(opts.steps):
        recorder.begin_step(step, cache.lens + 1)
        logits = model.decode_step(
            tokens, shared, cache, options, timer, on_layer=recorder.on_layer
        )
        recorder.end_step()
        tokens = torch.argmax(logits, dim=-1)
        say(f"decode step {step + 1}/{opts.steps}")

    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.machine()})"
    )
    created = opts.created_at
    if created is None:
        created = (
            _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        )
    capture = {
        "model": cfg.name,
        "checkpoint": str(opts.checkpoint) if opts.checkpoint else None,
        "weights": "checkpoint" if opts.checkpoint else "random (normal 0.02, seeded)",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size,
        "rope_theta": cfg.rope_theta,
        "kv_dtype": str(kv_dtype).removeprefix("torch."),
        "compute_dtype": str(MODEL_DTYPE[opts.dtype]).removeprefix("torch."),
        "partial_dtype": "float32",
        "batch": b,
        "steps": opts.steps,
        "seed": opts.seed,
        "unique_prefix_tokens": [opts.unique_min, opts.unique_max],
        "backend": opts.backend,
        "router": ROUTER_NOTE.format(reduce=opts.group_reduce),
        "group_reduce": opts.group_reduce,
        "timing": "cuda_events" if opts.timing else "none",
        "sleep_cycles_before_layer": timer.sleep_cycles if isinstance(timer, CudaEventTimer) else 0,
        "host_enqueue_us_max": round(max(recorder.host_enqueue_ns, default=0.0) / 1e3, 1),
        "host_syncs_in_attention": sync_warnings,
        "timed_layers": recorder.timed_layers,
        "timed_layers_gap_free": recorder.gap_free_layers,
    }
    if opts.backend == "triton":
        from traces.capture import kernels

        q_meta = torch.empty(
            b, cfg.q_heads, cfg.head_dim, dtype=MODEL_DTYPE[opts.dtype], device=device
        )
        plan = kernels.plan_shared(
            q_meta, shared[0], top_k_for(shared[0].n_chunks, opts.keep_fraction)
        )
        capture["shared_kernel"] = {
            "block_m": plan.config.block_m,
            "block_n": plan.config.block_n,
            "num_warps": plan.config.num_warps,
            "num_stages": plan.config.num_stages,
            "kv_splits": plan.n_splits,
            "split_tokens": plan.split_tokens,
        }
    header = TraceHeader(
        layers=cfg.num_layers,
        q_heads=cfg.q_heads,
        kv_heads=cfg.kv_heads,
        head_dim=cfg.head_dim,
        dtype=opts.dtype,
        shared_tokens=opts.shared_tokens,
        chunk_tokens=opts.chunk_tokens,
        n_chunks=n_chunks_for(opts.shared_tokens, opts.chunk_tokens),
        keep_fraction=float(opts.keep_fraction),
        device=device_name,
        chip_hint=opts.chip_hint
        if opts.chip_hint is not None
        else (chip_hint_for(device_name) if device.type == "cuda" else None),
        software=software_versions(device),
        created_at=created,
        notes=opts.notes,
        capture=capture,
    )
    return Trace(header=header, records=recorder.records)
