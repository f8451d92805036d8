"""Command line of trace capture: ``python -m traces.capture`` and ``moska-sim capture`` call main(argv).

Parses arguments, runs traces.capture.session.run_capture and writes the trace atomically. Errors
print one line (``error: ...``) and return a non-zero code instead of a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

_SIZE = re.compile(r"^\s*(\d+)\s*(k|ki|m|mi)?\s*$", re.IGNORECASE)
_MULT = {None: 1, "k": 1000, "ki": 1024, "m": 1000**2, "mi": 1024**2}


def size(text: str) -> int:
    """Integer with an optional K/Ki/M/Mi suffix (64Ki = 65536)."""
    m = _SIZE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"expected an integer like 4096, 64Ki or 1Mi, got {text!r}"
        )
    suffix = m.group(2).lower() if m.group(2) else None
    return int(m.group(1)) * _MULT[suffix]


def token_range(text: str) -> tuple[int, int]:
    """MIN:MAX (or N for MIN = MAX = N) unique-prefix tokens per request."""
    parts = text.split(":")
    if len(parts) > 2:
        raise argparse.ArgumentTypeError(f"expected N or MIN:MAX, got {text!r}")
    lo = size(parts[0])
    hi = size(parts[1]) if len(parts) == 2 else lo
    return lo, hi


def fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="moska-sim capture",
        description="Run the reference MoSKA decoder (PyTorch + Triton) and record a trace: per decode step "
        "and layer, each (request, kv head)'s selected chunks, per-chunk batch sizes, unique token "
        "counts and, on a GPU, each kernel's time. Format: docs/traces.md.",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="trace file to write (e.g. run.trace.npz)"
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--preset",
        default="tiny",
        help="model shape when no checkpoint: tiny, small, llama-3.1-8b (default tiny)",
    )
    m.add_argument(
        "--checkpoint",
        type=Path,
        help="local Hugging Face Llama folder (config.json + safetensors); never downloads",
    )
    m.add_argument("--layers", type=int, help="keep only the first N layers")
    m.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "fp8"),
        help="fp32, bf16, or fp8 (fp8-e4m3 KV, bf16 compute); default fp32 on CPU, bf16 on CUDA",
    )
    r = p.add_argument_group("MoSKA")
    r.add_argument(
        "--shared-tokens", type=size, default=512, help="shared corpus tokens (default 512)"
    )
    r.add_argument(
        "--chunk-tokens", type=size, default=64, help="tokens per shared chunk (default 64)"
    )
    r.add_argument(
        "--keep-fraction",
        type=fraction,
        default=0.25,
        help="fraction of chunks each (request, kv head) keeps (default 0.25)",
    )
    r.add_argument(
        "--group-reduce",
        choices=("max", "mean"),
        default="max",
        help="how the g query heads of a kv head combine chunk scores (default max)",
    )
    r.add_argument(
        "--backend",
        choices=("torch", "triton"),
        help="attention kernels; default triton on CUDA, torch on CPU",
    )
    w = p.add_argument_group("workload")
    w.add_argument("--batch", type=int, default=4, help="requests decoded together (default 4)")
    w.add_argument(
        "--unique-tokens",
        type=token_range,
        default=(8, 32),
        help="unique prefix tokens per request, N or MIN:MAX drawn uniformly (default 8:32)",
    )
    w.add_argument("--steps", type=int, default=4, help="decode steps to record (default 4)")
    w.add_argument(
        "--seed", type=int, default=0, help="seed of weights, corpus and prompts (default 0)"
    )
    w.add_argument(
        "--first-request-id", type=int, default=0, help="request ids are consecutive from this"
    )
    d = p.add_argument_group("device and header")
    d.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto = cuda when available (default)",
    )
    d.add_argument("--no-timing", action="store_true", help="do not measure kernel times on CUDA")
    d.add_argument(
        "--sleep-cycles",
        type=int,
        default=4_000_000,
        help="GPU sleep queued before each timed layer so events bracket GPU time only",
    )
    d.add_argument(
        "--chip-hint", help="hw preset name for the device (default: guessed from the CUDA name)"
    )
    d.add_argument(
        "--created-at", help="header created_at (default: now, UTC); pass '' for reproducible bytes"
    )
    d.add_argument("--notes", default="", help="free text stored in the header")
    d.add_argument("-q", "--quiet", action="store_true", help="print only the final line")
    return p


def main(argv: list[str]) -> int:
    """Entry point: returns 0 on success, 1 on a capture/validation error, 2 on bad usage."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage and the error
        return int(exc.code or 0)
    try:
        import torch

        from traces.capture.session import CaptureOptions, run_capture
    except ImportError as exc:
        print(
            f"error: trace capture needs the reference extra (torch, triton, safetensors): "
            f"pip install 'moska-sim[reference]' ({exc})",
            file=sys.stderr,
        )
        return 2
    from traces.io import write_trace
    from traces.schema import TraceError

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    backend = args.backend or ("triton" if device == "cuda" else "torch")
    dtype = args.dtype or ("bf16" if device == "cuda" else "fp32")
    try:
        opts = CaptureOptions(
            out=args.out,
            preset=args.preset,
            checkpoint=args.checkpoint,
            layers=args.layers,
            device=device,
            dtype=dtype,
            backend=backend,
            shared_tokens=args.shared_tokens,
            chunk_tokens=args.chunk_tokens,
            keep_fraction=args.keep_fraction,
            group_reduce=args.group_reduce,
            batch=args.batch,
            unique_min=args.unique_tokens[0],
            unique_max=args.unique_tokens[1],
            steps=args.steps,
            seed=args.seed,
            timing=(device == "cuda" and not args.no_timing),
            sleep_cycles=args.sleep_cycles,
            created_at=args.created_at,
            notes=args.notes,
            chip_hint=args.chip_hint,
            first_request_id=args.first_request_id,
        )
        log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr))
        trace = run_capture(opts, log=log)
        write_trace(args.out, trace)
    except TraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError) as exc:
        print(
            f"error: {type(exc).__name__}: {exc}"
            if not isinstance(exc, ValueError)
            else f"error: {exc}",
            file=sys.stderr,
        )
        return 1
    h = trace.header
    timed = sum(1 for r in trace.records if r.kernel_ns)
    gap_free = h.capture.get("timed_layers_gap_free", timed)
    if timed and gap_free < timed:
        print(
            f"warning: on {timed - gap_free} of {timed} timed layers the GPU finished the queued sleep before "
            f"all launches were queued; raise --sleep-cycles for gap-free kernel times",
            file=sys.stderr,
        )
    print(
        f"wrote {args.out}: {trace.n_records} records ({len(trace.steps())} steps x {h.layers} layers), "
        f"batch {opts.batch}, {h.n_chunks} chunks of {h.chunk_tokens} tokens, top_k {h.top_k}, {h.dtype}, "
        f"{h.device}, {timed} records with kernel times"
    )
    return 0
