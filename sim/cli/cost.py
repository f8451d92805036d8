"""`moska-sim cost`: the modeled cost of one op on one chip (or one transfer on a link)."""

from __future__ import annotations

import argparse
import json

from hw.compute import kernel_cost
from hw.cost import Cost
from hw.errors import HardwareError
from hw.link import transfer_cost
from hw.ops import DecodeAttention, Gemm, LseMerge, SharedAttention, Transfer
from hw.specs import LinkSpec, available_chips, available_links, load_chip, load_link

OPS = ("gemm", "decode-attention", "shared-attention", "merge", "transfer")


def _size(text: str) -> int:
    """A size argument: 1048576, 1Mi, 64Ki, 1M, 1e6."""
    try:
        from sim.units import parse_size
    except ImportError:  # pragma: no cover - units module ships with the package
        return int(float(text))
    return parse_size(text, "argument")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moska-sim cost", description=__doc__)
    p.add_argument("--op", required=True, choices=OPS)
    p.add_argument("--chip", default="h100-sxm", help=f"chip preset ({', '.join(available_chips())})")
    p.add_argument("--dtype", default="bf16", help="bf16 | fp8 | fp16 | fp32")
    for name in ("m", "n", "k", "batch", "kv-tokens", "bytes"):
        p.add_argument(f"--{name}", type=_size, help="a size (e.g. 4096, 64Ki, 1Mi)")
    p.add_argument("--q-heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--partials", type=int, default=2, help="merge: partials per row")
    p.add_argument("--link", help=f"preset ({', '.join(available_links())}) or BW_GBps:LATENCY_ns")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _need(args: argparse.Namespace, *names: str) -> None:
    missing = [n for n in names if getattr(args, n.replace("-", "_")) is None]
    if missing:
        raise HardwareError(f"--op {args.op} needs {', '.join('--' + m for m in missing)}")


def _link(spec: str) -> LinkSpec:
    if ":" in spec:
        bw, _, lat = spec.partition(":")
        try:
            return LinkSpec(f"custom-{spec}", float(bw), float(lat))
        except ValueError:
            raise HardwareError(f"--link: expected a preset or BW_GBps:LATENCY_ns, got {spec!r}") from None
    return load_link(spec)


def price(args: argparse.Namespace) -> Cost:
    """Build the op the arguments describe and price it."""
    if args.op == "transfer":
        _need(args, "bytes", "link")
        return transfer_cost(Transfer(args.bytes), _link(args.link))
    chip = load_chip(args.chip)
    heads = dict(q_heads=args.q_heads, kv_heads=args.kv_heads, head_dim=args.head_dim,
                 dtype=args.dtype)
    if args.op == "gemm":
        _need(args, "m", "n", "k")
        op = Gemm(args.m, args.n, args.k, args.dtype)
    elif args.op == "decode-attention":
        _need(args, "batch", "kv-tokens")
        op = DecodeAttention(**heads, batch=args.batch, kv_tokens=args.kv_tokens)
    elif args.op == "shared-attention":
        _need(args, "batch", "kv-tokens")
        op = SharedAttention(**heads, batch=args.batch, kv_tokens=args.kv_tokens)
    else:
        _need(args, "batch")
        op = LseMerge(args.batch, args.q_heads, args.head_dim, args.partials)
    return kernel_cost(op, chip)


def cost_main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    cost = price(args)
    record = cost.to_dict()
    record["roofline_fraction"] = cost.roofline_ns / cost.time_ns if cost.time_ns else 1.0
    if args.json:
        print(json.dumps(record, sort_keys=True))
        return 0
    print(f"{cost.op} on {cost.device}")
    rows = [
        ("time", f"{cost.time_ns:,} ns"), ("cycles", f"{cost.cycles:,}"),
        ("bytes", f"{cost.bytes:,.0f} B"), ("flops", f"{cost.flops:,.0f}"),
        ("bound", cost.bound), ("roofline", f"{cost.roofline_ns:,.0f} ns "
                                 f"({record['roofline_fraction']:.1%} of it reached)"),
    ]
    rows += [(k, str(v)) for k, v in cost.detail.items()]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0
