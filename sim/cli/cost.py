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
from sim.cli.common import ArgumentParser
from sim.config.fields import MAX_BANDWIDTH_GBPS, MAX_LATENCY_NS, MIN_BANDWIDTH_GBPS
from sim.units import UnitError, parse_int, parse_number, parse_size

OPS = ("gemm", "decode-attention", "shared-attention", "merge", "transfer")


MAX_SIZE = 2**40  #: largest --m/--n/--k/--batch/--kv-tokens/--bytes
MAX_HEADS = 4096  #: largest --q-heads/--kv-heads/--head-dim/--partials


def _size(text: str) -> int:
    """A size argument >= 1 (``--bytes``: >= 0): 1048576, 1Mi, 64Ki, 1M, 1e6."""
    try:
        n = parse_size(text, "argument")
    except UnitError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None
    if n > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"expected a size <= 2^40, got {text[:40]!r}")
    return n


def _count(text: str) -> int:
    """A small whole number in [1, 4096] (heads, head size, partials)."""
    try:
        n = parse_int(text, "argument")
    except UnitError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None
    if not 1 <= n <= MAX_HEADS:
        raise argparse.ArgumentTypeError(f"expected an integer in [1, {MAX_HEADS}], "
                                         f"got {text[:40]!r}")
    return n


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="moska-sim cost", description=__doc__)
    p.add_argument("--op", required=True, choices=OPS)
    p.add_argument("--chip", default="h100-sxm", help=f"chip preset ({', '.join(available_chips())})")
    p.add_argument("--dtype", default="bf16", help="bf16 | fp8 | fp16 | fp32")
    for name in ("m", "n", "k", "batch", "kv-tokens", "bytes"):
        p.add_argument(f"--{name}", type=_size, help="a size (e.g. 4096, 64Ki, 1Mi)")
    p.add_argument("--q-heads", type=_count, default=32)
    p.add_argument("--kv-heads", type=_count, default=8)
    p.add_argument("--head-dim", type=_count, default=128)
    p.add_argument("--partials", type=_count, default=2, help="merge: partials per row")
    p.add_argument("--link", help=f"preset ({', '.join(available_links())}) or BW_GBps:LATENCY_ns "
                                  f"(bandwidth in [{MIN_BANDWIDTH_GBPS:g}, {MAX_BANDWIDTH_GBPS:g}], "
                                  f"latency in [0, {MAX_LATENCY_NS:g}])")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _need(args: argparse.Namespace, *names: str) -> None:
    missing = [n for n in names if getattr(args, n.replace("-", "_")) is None]
    if missing:
        raise HardwareError(f"--op {args.op} needs {', '.join('--' + m for m in missing)}")


def _link(spec: str) -> LinkSpec:
    """A link preset, or ``BW_GBps:LATENCY_ns`` with a bandwidth in
    [MIN_BANDWIDTH_GBPS, MAX_BANDWIDTH_GBPS] GB/s and a latency in [0, MAX_LATENCY_NS] ns
    (the bounds of a config's link)."""
    if ":" not in spec:
        return load_link(spec)
    expected = (f"--link: expected a preset or BW_GBps:LATENCY_ns with a bandwidth in "
                f"[{MIN_BANDWIDTH_GBPS:g}, {MAX_BANDWIDTH_GBPS:g}] GB/s and a latency in "
                f"[0, {MAX_LATENCY_NS:g}] ns, got {spec[:60]!r}")
    bw_text, _, lat_text = spec.partition(":")
    try:
        bw, lat = float(parse_number(bw_text)), float(parse_number(lat_text))
    except UnitError:
        raise HardwareError(expected) from None
    if not (MIN_BANDWIDTH_GBPS <= bw <= MAX_BANDWIDTH_GBPS and 0 <= lat <= MAX_LATENCY_NS):
        raise HardwareError(expected)
    return LinkSpec(f"custom-{bw:g}:{lat:g}", bw, lat)


def price(args: argparse.Namespace) -> Cost:
    """Build the op the arguments describe and price it."""
    if args.op == "transfer":
        _need(args, "bytes", "link")
        return transfer_cost(Transfer(args.bytes), _link(args.link))
    chip = load_chip(args.chip)
    heads = {"q_heads": args.q_heads, "kv_heads": args.kv_heads, "head_dim": args.head_dim,
             "dtype": args.dtype}
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
    """``moska-sim cost --op OP ...``: print the modeled cost (errors: one line, exit 2)."""
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
        ("bound", cost.bound),
        ("roofline", (f"{cost.roofline_ns:,.0f} ns "
                      f"({record['roofline_fraction']:.1%} of it reached)")),
    ]
    rows += [(k, str(v)) for k, v in cost.detail.items()]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0
