"""``python -m traces.serving``: serve a grid of loads with the real MoSKA serving loop and write one
measurement file per run (``<system>-closed<C>.serving.json``, ``<system>-poisson<rate>.serving.json``).

Example (the shipped H200 measurements; docs/validation.md):

    python -m traces.serving --device cuda --preset llama-3.1-8b --dtype bf16 \
        --systems moska,shared_gemm --shared-tokens 256Ki --chunk-tokens 2048 --keep-fraction 0.25 \
        --unique-tokens 512:1536 --output-tokens 64:64 --closed 1:6,8:32,32:96,128:256 \
        --poisson 16:200 --out traces/validation/h200-colocated

On CPU (tiny shapes) it runs under TRITON_INTERPRET=1 or with ``--backend torch``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from traces.capture.session import chip_hint_for, software_versions
from traces.capture.timing import CudaEventTimer
from traces.serving.engine import DecodeEngine, EngineConfig, GraphCaptureFailed, StepRows
from traces.serving.loop import LoadSpec, run_load, summarize
from traces.serving.records import to_document, write_measurement


def _size(text: str) -> int:
    """Token counts: 65536, 64Ki, 1Mi."""
    t = text.strip()
    for suf, mul in (("Ki", 1024), ("Mi", 1024**2)):
        if t.endswith(suf):
            return int(t[: -len(suf)]) * mul
    return int(t)


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(":")
    return _size(lo), _size(hi or lo)


def _pairs(text: str, second: type = int) -> list[tuple]:
    out = []
    for item in filter(None, text.split(",")):
        a, _, b = item.partition(":")
        if not b:
            raise argparse.ArgumentTypeError(f"expected VALUE:REQUESTS, got {item!r}")
        out.append((second(a) if second is float else int(a), int(b)))
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m traces.serving", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for the measurement files")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--preset", default="tiny")
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--backend", default="triton", choices=("triton", "torch"))
    p.add_argument("--systems", default="moska,shared_gemm")
    p.add_argument("--shared-tokens", type=_size, default=512)
    p.add_argument("--chunk-tokens", type=_size, default=64)
    p.add_argument("--keep-fraction", type=float, default=0.25)
    p.add_argument("--unique-tokens", type=_range, default=(8, 32), help="MIN:MAX prompt tokens")
    p.add_argument("--output-tokens", type=_range, default=(4, 8), help="MIN:MAX output tokens")
    p.add_argument("--closed", type=_pairs, default=[(2, 4)],
                   help="closed-loop points CONCURRENCY:REQUESTS,...")
    p.add_argument("--poisson", type=lambda s: _pairs(s, float), default=[],
                   help="open-loop points RATE_PER_S:REQUESTS,...")
    p.add_argument("--poisson-max-batch", type=int, default=64,
                   help="most requests running at once under Poisson load")
    p.add_argument("--context", default=None, choices=("prefill", "projected"),
                   help="default: prefill on CPU, projected on CUDA")
    p.add_argument("--no-cuda-graphs", action="store_true")
    p.add_argument("--glue", default="fused", choices=("fused", "torch"),
                   help="non-attention parts: fused kernels (production-like) or the reference "
                        "model's torch modules")
    p.add_argument("--breakdown-steps", type=int, default=1,
                   help="eager CUDA-event-timed steps per closed-loop point (0: none)")
    p.add_argument("--bundle", type=Path, default=None,
                   help="also keep a .tar.gz of every file written so far (rewritten after each run)")
    p.add_argument("--remote-shared", action="store_true",
                   help="disaggregated: run as one of two torch.distributed ranks (start with "
                        "`torchrun --nproc-per-node 2 -m traces.serving ...`): rank 0 serves "
                        "(router, unique attention, merge, the rest; writes the files), rank 1 "
                        "holds the corpus and runs the shared attention; NCCL on CUDA, gloo on CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--notes", default="")
    return p.parse_args(argv)


def _device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return {"name": name, "chip_hint": chip_hint_for(name),
                "sms": torch.cuda.get_device_properties(device).multi_processor_count}
    import platform

    return {"name": f"cpu ({platform.machine()})", "chip_hint": None}


def _graph_step_ms(engine: DecodeEngine, batch: int, repeats: int = 20) -> float | None:
    """Mean GPU ms of one replay of the captured step (no host work between replays)."""
    g = engine._graphs.get(batch)
    if g is None:
        return None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    g.graph.replay()
    start.record()
    for _ in range(repeats):
        g.graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def _breakdown(engine: DecodeEngine, load: LoadSpec, steps: int) -> dict | None:
    """GPU ms per region of an eager step at the load's batch (rows on the scratch slot, with the
    load's mean prompt length), CUDA events with the capture's sleep trick; mean over ``steps``."""
    if steps < 1 or engine.k_pool.device.type != "cuda":
        return None
    b = load.concurrency or 1
    mid = (load.unique_min + load.unique_max) // 2
    vocab = engine.model.config.vocab_size
    # distinct tokens give distinct queries, so MoSKA's routing spreads as in a real batch
    rows = StepRows([engine.scratch_slot] * b, [(7919 * i + 1) % vocab for i in range(b)],
                    [mid] * b)
    timer = CudaEventTimer(sleep_cycles=20_000_000)
    engine.timed_step(rows, timer)  # warm
    acc: dict[str, float] = {}
    for _ in range(steps):
        for k, v in engine.timed_step(rows, timer).items():
            acc[k] = acc.get(k, 0.0) + v / steps
    return acc


def _init_ranks(device: torch.device) -> int:
    """Join the two-rank process group from torchrun's environment; returns this rank."""
    import os

    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.get_world_size() != 2:
        raise ValueError(f"--remote-shared needs exactly 2 ranks, got {dist.get_world_size()}")
    return dist.get_rank()


def _serve_shared_rank(cfg: EngineConfig) -> int:
    """Rank 1: make the same model and corpus from the seed, keep the corpus, serve rank 0's layer
    requests until it says stop; returns the layer requests served."""
    from traces.capture.model import LlamaForCausalLM
    from traces.serving.config import DTYPES
    from traces.serving.engine import make_shared_kv
    from traces.serving.shared_side import serve_shared

    cfg.check()
    dev = torch.device(cfg.device)
    model = LlamaForCausalLM.build(cfg.model_config, DTYPES[cfg.dtype], dev)
    model.init_random(torch.Generator(device=dev).manual_seed(cfg.seed))
    shared = make_shared_kv(model, cfg)
    del model
    served = serve_shared(shared, cfg, peer=0, q_dtype=DTYPES[cfg.dtype])
    del shared
    gc.collect()
    return served


def _bundle(folder: Path, target: Path) -> None:
    """Atomically (re)write ``target`` as a .tar.gz of the measurement files in ``folder``."""
    import tarfile

    tmp = target.with_name(target.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for f in sorted(folder.glob("*.serving.json")):
            tar.add(f, arcname=f.name)
    tmp.replace(target)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    device = torch.device(args.device)
    context = args.context or ("projected" if device.type == "cuda" else "prefill")
    systems = [s for s in args.systems.split(",") if s]
    max_closed = max((c for c, _ in args.closed), default=1)
    max_batch = max(max_closed, args.poisson_max_batch if args.poisson else 1)
    umin, umax = args.unique_tokens
    omin, omax = args.output_tokens
    sw = software_versions(device)
    dev_info = _device_info(device)
    rank = _init_ranks(device) if args.remote_shared else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for system in systems:
        cfg = EngineConfig(
            system=system, preset=args.preset, layers=args.layers, dtype=args.dtype,
            device=args.device, backend=args.backend, shared_tokens=args.shared_tokens,
            chunk_tokens=args.chunk_tokens, keep_fraction=args.keep_fraction, unique_max=umax,
            output_max=omax, max_batch=max_batch, context=context,
            cuda_graphs=not args.no_cuda_graphs, glue=args.glue, seed=args.seed)
        t0 = time.perf_counter()
        side = None
        if args.remote_shared and rank == 1:
            served = _serve_shared_rank(cfg)
            print(f"[{system}] shared rank served {served} layer requests", flush=True)
            continue
        if args.remote_shared:
            from traces.serving.shared_side import RemoteSharedSide

            def side_for(meta, cfg=cfg):
                return RemoteSharedSide(meta, cfg, peer=1, shared_device=device)

            engine = DecodeEngine.build(cfg, hold_shared=cfg.context == "prefill",
                                        side_for=side_for)
            side = engine.side
        else:
            engine = DecodeEngine.build(cfg)
        if device.type == "cuda":
            torch.cuda.synchronize()
        print(f"[{system}] built in {time.perf_counter() - t0:.1f} s "
              f"({cfg.n_chunks} chunks, top_k {cfg.top_k})", flush=True)
        points = [("closed_loop", c, n) for c, n in args.closed]
        points += [("poisson", r, n) for r, n in args.poisson]
        for kind, value, n_req in points:
            closed = kind == "closed_loop"
            load = LoadSpec(kind=kind, requests=n_req, unique_min=umin, unique_max=umax,
                            output_min=omin, output_max=omax,
                            concurrency=int(value) if closed else None,
                            rate_per_s=None if closed else float(value), seed=args.seed)
            t0 = time.perf_counter()
            if engine._use_graphs:
                top = int(value) if closed else args.poisson_max_batch
                for b in (range(1, top + 1) if not closed else [top]):
                    try:
                        engine.capture(b)
                    except GraphCaptureFailed:
                        break
            if device.type == "cuda":
                torch.cuda.synchronize()
            t_capture = time.perf_counter() - t0
            sent0 = getattr(side, "bytes_sent", 0)
            recv0 = getattr(side, "bytes_received", 0)
            rec = run_load(engine, load,
                           max_running=int(value) if closed else args.poisson_max_batch)
            summ = summarize(rec)
            if side is not None:
                layers = engine.model.config.num_layers
                summ["bytes_sent_per_step"] = (side.bytes_sent - sent0) / summ["steps"]
                summ["bytes_received_per_step"] = (side.bytes_received - recv0) / summ["steps"]
                summ["round_trips_per_step"] = layers
            summ["graph_capture_s"] = t_capture
            if closed and engine._use_graphs:
                summ["graph_step_gpu_ms"] = _graph_step_ms(engine, int(value))
            breakdown = _breakdown(engine, load, args.breakdown_steps) if closed else None
            name = (f"{system}-closed{int(value)}" if closed
                    else f"{system}-poisson{value:g}")
            deployment = {"kind": "disaggregated" if side is not None else "colocated",
                          "gpus": 2 if side is not None and device.type == "cuda" else 1,
                          "system": system, "glue": args.glue,
                          "shared_attention": "remote" if side is not None else "local",
                          "cuda_graphs": engine._use_graphs,
                          "cuda_graph_error": engine.graph_error, "decode_only": True}
            doc = to_document(
                deployment=deployment,
                engine={**asdict(cfg), "n_chunks": cfg.n_chunks, "top_k": cfg.top_k,
                        "max_batch_run": load.concurrency or args.poisson_max_batch},
                load=asdict(load), device=dev_info, software=sw, summary=summ,
                steps=(rec.step_start_s, rec.step_end_s, rec.step_batch),
                requests=rec.requests, notes=args.notes)
            if breakdown is not None:
                doc["gpu_breakdown_ms_per_step"] = breakdown
            write_measurement(args.out / f"{name}.serving.json", doc)
            if args.bundle is not None:
                _bundle(args.out, args.bundle)
            tp, tpot = summ["throughput_tokens_per_s"], summ["tpot_ms"]["p50"]
            print(f"[{name}] {summ['steps']} steps, {summ['tokens_generated']} tokens in "
                  f"{summ['duration_s']:.2f} s: {tp:.1f} tok/s, TPOT p50 {tpot:.2f} ms, "
                  f"step GPU {summ.get('graph_step_gpu_ms')}, breakdown {breakdown}", flush=True)
        if side is not None:
            side.stop(engine.k_pool.device)
        del engine, side
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0

