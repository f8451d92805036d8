"""GPU benchmark: MoSKA's grouped shared-attention Triton kernel vs torch SDPA over the batched queries
and vs one SDPA call per request, over batch size and shared-KV length, beside the chip's roofline.

Every request attends to the whole shared KV (keep_fraction 1), so all three compute the same thing:
one layer's attention of B requests x q_heads queries over L shared tokens (Llama 3.1 8B shapes by
default). Bytes = K and V read once (2 * kv_heads * L * head_dim * elem); FLOPs = 4 * B * q_heads * L * head_dim.

    python bench/bench_shared_attention.py                     # full sweep, bf16
    python bench/bench_shared_attention.py --dtype fp8 --kv-tokens 1Mi
    python bench/bench_shared_attention.py --sweep-configs     # tile-shape search at a few shapes
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
import triton

from traces.capture import kernels
from traces.capture.cli import size
from traces.capture.router import build_dispatch
from traces.capture.shared_kv import SharedKV

DTYPES = {"bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}
SWEEP_CONFIGS = [
    kernels.KernelConfig(16, 128, 4, 3),
    kernels.KernelConfig(16, 128, 4, 4),
    kernels.KernelConfig(16, 64, 4, 4),
    kernels.KernelConfig(32, 128, 4, 4),
    kernels.KernelConfig(64, 64, 4, 3),
    kernels.KernelConfig(64, 128, 4, 3),
    kernels.KernelConfig(64, 128, 8, 3),
    kernels.KernelConfig(128, 64, 8, 3),
    kernels.KernelConfig(128, 128, 8, 2),
    kernels.KernelConfig(128, 128, 8, 3),
    kernels.KernelConfig(128, 64, 4, 3),
    kernels.KernelConfig(128, 64, 8, 4),
    kernels.KernelConfig(64, 64, 4, 2),
    kernels.KernelConfig(64, 128, 4, 2),
    kernels.KernelConfig(16, 64, 4, 3),
    kernels.KernelConfig(32, 64, 4, 3),
    kernels.KernelConfig(16, 128, 4, 2),
    kernels.KernelConfig(128, 128, 8, 4),
]


def bench_ms(fn, rep_ms: int = 200) -> float:
    """Median milliseconds of fn (CUDA events, L2 cleared between runs by do_bench)."""
    return float(triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median"))


def measured_ceilings() -> dict[str, float]:
    """Device-to-device copy bandwidth (read + write) and a large bf16 GEMM rate, measured here."""
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    t = bench_ms(lambda: b.copy_(a))
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    tg = bench_ms(lambda: x @ y)
    return {"copy_TBps": 2 * n / t / 1e9, "gemm_bf16_TFLOPs": 2 * 8192**3 / tg / 1e9}


class Case:
    """One (batch, shared length) problem with its inputs, dispatch and launch plan."""

    def __init__(
        self,
        shared: SharedKV,
        k_full: torch.Tensor,
        v_full: torch.Tensor,
        batch: int,
        q_heads: int,
        config: kernels.KernelConfig | None,
        n_splits: int | None,
    ) -> None:
        d = shared.k.shape[2]
        self.shared, self.batch = shared, batch
        self.hk = shared.kv_heads
        self.g = q_heads // self.hk
        self.q = torch.randn(batch, q_heads, d, device="cuda", dtype=torch.bfloat16)
        self.plan = kernels.plan_shared(
            self.q, shared, shared.n_chunks, config=config, n_splits=n_splits
        )
        sel = (
            torch.arange(shared.n_chunks, device="cuda", dtype=torch.int32)
            .expand(batch, self.hk, -1)
            .contiguous()
        )
        self.dispatch = build_dispatch(sel, shared.n_chunks, self.plan.config.block_m // self.g)
        self.k4, self.v4 = k_full[None], v_full[None]  # [1, Hkv, L, d] for SDPA (bf16)

    def moska(self):
        return kernels.shared_attention_triton(self.q, self.shared, self.dispatch, self.plan)

    def batched_q(self) -> torch.Tensor:
        d = self.q.shape[2]
        return (
            self.q.view(self.batch, self.hk, self.g, d)
            .permute(1, 0, 2, 3)
            .reshape(1, self.hk, -1, d)
        )

    def sdpa_batched(self):
        return F.scaled_dot_product_attention(self.batched_q(), self.k4, self.v4)

    def sdpa_loop(self, n: int):
        d = self.q.shape[2]
        for i in range(n):
            F.scaled_dot_product_attention(self.q[i].view(1, self.hk, self.g, d), self.k4, self.v4)

    def max_err_vs_sdpa(self) -> float:
        o, lse = self.moska()
        d = self.q.shape[2]
        o_u = torch.zeros(self.batch, self.hk, 1, self.g, d, device="cuda")
        l_u = torch.full((self.batch, self.hk, 1, self.g), -math.inf, device="cuda")
        out = kernels.merge_triton(o, lse, o_u, l_u, torch.float32)
        ref = self.sdpa_batched().float().view(self.hk, self.batch, self.g, d).permute(1, 0, 2, 3)
        return float((out.view(self.batch, self.hk, self.g, d) - ref).abs().max())


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batches", default="1,2,4,8,16,32,64,128,256,512")
    p.add_argument("--kv-tokens", default="64Ki,256Ki,1Mi", help="shared KV lengths (tokens)")
    p.add_argument(
        "--dtype", choices=tuple(DTYPES), default="bf16", help="KV dtype (fp8 = e4m3 KV, bf16 math)"
    )
    p.add_argument("--chunk-tokens", type=size, default=4096)
    p.add_argument("--q-heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument(
        "--peak-tbps", type=float, default=3.35, help="roofline memory bandwidth (H100 SXM 3.35)"
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="roofline dense bf16 TFLOP/s (H100 SXM 989)",
    )
    p.add_argument(
        "--per-request-max",
        type=int,
        default=8,
        help="time at most this many per-request SDPA calls and scale linearly to the batch",
    )
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument(
        "--sweep-configs", action="store_true", help="search tile shapes at a few (batch, L) shapes"
    )
    p.add_argument("--json", type=Path, help="also write all rows as JSON")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: this benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    batches = [int(b) for b in args.batches.split(",")]
    lengths = [size(x) for x in args.kv_tokens.split(",")]
    kv_dtype = DTYPES[args.dtype]
    elem = torch.empty((), dtype=kv_dtype).element_size()
    dev_name = torch.cuda.get_device_name()
    ceil = measured_ceilings()
    print(
        f"device: {dev_name}; torch {torch.__version__}, triton {triton.__version__}; "
        f"roofline {args.peak_tbps} TB/s, {args.peak_tflops} TFLOP/s; measured here: copy "
        f"{ceil['copy_TBps']:.2f} TB/s, bf16 GEMM 8192^3 {ceil['gemm_bf16_TFLOPs']:.0f} TFLOP/s",
        flush=True,
    )
    rows: list[dict] = []
    torch.manual_seed(0)
    for length in lengths:
        k = torch.randn(args.kv_heads, length, args.head_dim, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        shared = SharedKV.build(k.to(kv_dtype), v.to(kv_dtype), args.chunk_tokens)
        if kv_dtype != torch.bfloat16:  # baselines see the same (dequantised) values
            k, v = shared.k.to(torch.bfloat16), shared.v.to(torch.bfloat16)
        bytes_ = 2 * args.kv_heads * length * args.head_dim * elem
        if args.sweep_configs:
            for b in batches:
                results = []
                for cfg in SWEEP_CONFIGS:
                    if cfg.block_m % (args.q_heads // args.kv_heads):
                        continue
                    base = Case(shared, k, v, b, args.q_heads, cfg, None).plan.n_splits
                    for ns in sorted({max(1, base // 4), max(1, base // 2), base, base * 2}):
                        try:
                            case = Case(shared, k, v, b, args.q_heads, cfg, ns)
                            t = bench_ms(case.moska, rep_ms=100)
                        except Exception as exc:  # noqa: BLE001 - compiler may reject a config
                            print(f"  skip {cfg} splits {ns}: {type(exc).__name__}", flush=True)
                            continue
                        results.append((t, cfg, ns))
                results.sort(key=lambda r: r[0])
                flops = 4 * b * args.q_heads * length * args.head_dim
                for t, cfg, ns in results[:3]:
                    print(
                        f"sweep L={length} B={b}: {t * 1e3:9.1f} us  {bytes_ / t / 1e9:6.2f} TB/s "
                        f"{flops / t / 1e9:6.0f} TFLOP/s  {cfg} splits={ns}",
                        flush=True,
                    )
                rows.append(
                    {
                        "sweep": True,
                        "kv_tokens": length,
                        "batch": b,
                        "best": [
                            {"us": t * 1e3, "config": cfg.__dict__, "splits": ns}
                            for t, cfg, ns in results[:5]
                        ],
                    }
                )
            continue
        print(
            f"\n## shared KV {length} tokens ({bytes_ / 2**30:.2f} GiB {args.dtype}), chunk {args.chunk_tokens}",
            flush=True,
        )
        print(
            "| batch | kernel us | TB/s | TFLOP/s | % roofline | bound | SDPA batched us | % roofline | "
            "SDPA per-request us | speedup vs per-request | max err vs SDPA | tile (m,n,w,s) x splits |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for b in batches:
            case = Case(shared, k, v, b, args.q_heads, None, None)
            flops = 4 * b * args.q_heads * length * args.head_dim
            t_roof = (
                max(bytes_ / (args.peak_tbps * 1e12), flops / (args.peak_tflops * 1e12)) * 1e3
            )  # ms
            bound = (
                "memory"
                if bytes_ / (args.peak_tbps * 1e12) >= flops / (args.peak_tflops * 1e12)
                else "compute"
            )
            t = bench_ms(case.moska)
            err = case.max_err_vs_sdpa()
            row = {
                "kv_tokens": length,
                "batch": b,
                "dtype": args.dtype,
                "chunk_tokens": args.chunk_tokens,
                "kernel_us": t * 1e3,
                "TBps": bytes_ / t / 1e9,
                "TFLOPs": flops / t / 1e9,
                "roofline_pct": 100 * t_roof / t,
                "bound": bound,
                "max_err_vs_sdpa": err,
                "config": case.plan.config.__dict__,
                "splits": case.plan.n_splits,
            }
            if not args.no_baselines:
                row["sdpa_batched_us"] = bench_ms(case.sdpa_batched) * 1e3
                row["sdpa_batched_roofline_pct"] = 100 * t_roof * 1e3 / row["sdpa_batched_us"]
                n = min(b, args.per_request_max)
                row["sdpa_per_request_us"] = (
                    bench_ms(lambda case=case, n=n: case.sdpa_loop(n)) * 1e3 * b / n
                )
                row["per_request_extrapolated"] = n < b
            rows.append(row)
            c = case.plan.config
            print(
                f"| {b} | {row['kernel_us']:.1f} | {row['TBps']:.2f} | {row['TFLOPs']:.0f} | "
                f"{row['roofline_pct']:.0f}% | {bound} | {row.get('sdpa_batched_us', float('nan')):.1f} | "
                f"{row.get('sdpa_batched_roofline_pct', float('nan')):.0f}% | "
                f"{row.get('sdpa_per_request_us', float('nan')):.0f}{'*' if row.get('per_request_extrapolated') else ''} | "
                f"{row.get('sdpa_per_request_us', float('nan')) / row['kernel_us']:.1f}x | {err:.1e} | "
                f"({c.block_m},{c.block_n},{c.num_warps},{c.num_stages}) x {case.plan.n_splits} |",
                flush=True,
            )
            del case
        del k, v, shared
        torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": dev_name,
                    "torch": torch.__version__,
                    "triton": triton.__version__,
                    "ceilings": ceil,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "rows": rows,
                },
                indent=1,
            )
        )
    print(
        "\n(* per-request time measured on the first --per-request-max requests and scaled linearly)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
