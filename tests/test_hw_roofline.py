"""The tile-level cycle model against hand-computed roofline arithmetic."""

import math

import pytest

from hw import (
    DecodeAttention,
    Gemm,
    GroupedSharedAttention,
    LseMerge,
    SharedAttention,
    kernel_cost,
    load_chip,
)
from hw.compute import roofline_ns

H100 = load_chip("h100-sxm")
HEADS = dict(q_heads=32, kv_heads=8, head_dim=128)


def test_gemm_roofline_by_hand():
    # 8192^3 bf16: 2*8192^3 flops at 989.4 TF/s = 1.1113 ms; bytes 3*8192^2*2 = 402.7 MB -> 0.12 ms
    op = Gemm(8192, 8192, 8192, "bf16")
    assert op.flops == 2 * 8192**3
    assert roofline_ns(op, H100, "bf16") == pytest.approx(2 * 8192**3 / 989.4e12 * 1e9)
    assert kernel_cost(op, H100).bound == "compute"


def test_skinny_gemm_is_memory_bound_by_hand():
    # decode projection: 64 tokens x (4096 x 4096) fp8 weights = 16 MiB -> 5.0 us at 3.35 TB/s
    op = Gemm(64, 4096, 4096, "fp8")
    expected = (4096 * 4096 * 1 + 64 * 4096 * 2 * 2) / 3350e9 * 1e9
    assert roofline_ns(op, H100, "fp8") == pytest.approx(expected)
    assert kernel_cost(op, H100).bound == "memory"


def test_decode_attention_bytes_by_hand():
    # one request, 64Ki tokens of fp8 KV: 2 x 8 heads x 128 x 1 B = 2 KiB per token per layer
    op = DecodeAttention(**HEADS, dtype="fp8", batch=1, kv_tokens=65536)
    assert op.kv_bytes_per_token == 2048
    assert op.min_bytes == pytest.approx(65536 * 2048 + 2 * 32 * 128 * 2)
    assert op.flops == 4 * 32 * 65536 * 128


def test_shared_attention_reads_kv_once_regardless_of_batch():
    a = SharedAttention(**HEADS, dtype="bf16", batch=1, kv_tokens=1 << 20)
    b = SharedAttention(**HEADS, dtype="bf16", batch=256, kv_tokens=1 << 20)
    kv = (1 << 20) * 2 * 8 * 128 * 2
    io = 32 * (2 * 128 * 2 + 4)  # per request: query in, partial + LSE out
    assert a.min_bytes == kv + io and b.min_bytes == kv + 256 * io
    assert b.flops == 256 * a.flops


ALL_OPS = [
    Gemm(1, 128, 128, "bf16"), Gemm(64, 4096, 4096, "fp8"), Gemm(4096, 14336, 4096, "bf16"),
    Gemm(8192, 8192, 8192, "fp8"), Gemm(300, 700, 900, "bf16"),
    DecodeAttention(**HEADS, dtype="bf16", batch=1, kv_tokens=1000),
    DecodeAttention(**HEADS, dtype="fp8", batch=64, kv_tokens=65536),
    DecodeAttention(**HEADS, dtype="bf16", batch=512, kv_tokens=4096),
    *[SharedAttention(**HEADS, dtype=dt, batch=b, kv_tokens=t)
      for dt in ("bf16", "fp8") for b in (1, 7, 64, 100, 1024) for t in (4096, 1 << 20)],
    GroupedSharedAttention(**HEADS, dtype="fp8", chunk_batches=((3, 40), (17, 9)),
                           chunk_tokens=2048, requests=40),
    LseMerge(1, 32, 128, 2), LseMerge(512, 32, 128, 9),
]


@pytest.mark.parametrize("chip", ["h100-sxm", "h200", "b200", "moska-unique", "moska-shared"])
@pytest.mark.parametrize("op", ALL_OPS, ids=lambda o: f"{o.kind}")
def test_model_never_beats_roofline(op, chip):
    spec = load_chip(chip)
    cost = kernel_cost(op, spec)
    dtype = getattr(op, "dtype", "bf16")
    assert cost.time_ns >= roofline_ns(op, spec, dtype)
    assert cost.bytes >= op.min_bytes * 0.999
    assert cost.time_ns == math.ceil(cost.cycles / spec.clock_ghz)


@pytest.mark.parametrize("op,eff", [
    (Gemm(16384, 16384, 16384, "bf16"), "mma_efficiency"),
    (SharedAttention(**HEADS, dtype="bf16", batch=2048, kv_tokens=1 << 20), "mma_efficiency"),
    (DecodeAttention(**HEADS, dtype="fp8", batch=256, kv_tokens=1 << 17), "mem_efficiency"),
    (SharedAttention(**HEADS, dtype="fp8", batch=1, kv_tokens=1 << 22), "mem_efficiency"),
])
def test_model_approaches_roofline_for_large_shapes(op, eff):
    """Large shapes reach the sustained fraction of peak, within a few percent."""
    cost = kernel_cost(op, H100)
    reached = cost.roofline_ns / cost.time_ns
    target = getattr(H100, eff)
    assert target * 0.9 <= reached <= target + 1e-9


def _shared(batch: int, dtype: str = "bf16") -> int:
    return kernel_cost(SharedAttention(**HEADS, dtype=dtype, batch=batch, kv_tokens=1 << 20),
                       H100).time_ns


@pytest.mark.parametrize("dtype,kv_b", [("bf16", 2), ("fp8", 1)])
def test_shared_attention_flat_then_linear_with_crossover_at_ridge(dtype, kv_b):
    # ridge batch: AI = 2 g B / b = ridge  ->  B* = ridge * b / (2 g), g = 4
    b_star = H100.ridge_point(dtype) * kv_b / (2 * 4)
    flat = [_shared(b, dtype) for b in (1, 2, 4, 8, 16, 32)]
    assert max(flat) / min(flat) < 1.05  # memory-bound: flat in batch
    big = [_shared(b, dtype) for b in (1024, 2048, 4096)]
    assert big[1] / big[0] == pytest.approx(2, rel=0.06)  # compute-bound: linear in batch
    assert big[2] / big[1] == pytest.approx(2, rel=0.06)
    bounds = {b: kernel_cost(SharedAttention(**HEADS, dtype=dtype, batch=b, kv_tokens=1 << 20),
                             H100).bound for b in range(8, 400, 4)}
    crossover = min(b for b, bound in bounds.items() if bound == "compute")
    # sustained efficiencies shift the modeled ridge by mma_eff / mem_eff (0.9x) + row padding
    assert 0.6 * b_star <= crossover <= 1.25 * b_star
    assert all(bound == "compute" for b, bound in bounds.items() if b >= 1.3 * b_star)


def test_grouped_equals_dense_when_every_chunk_has_the_whole_batch():
    dense = SharedAttention(**HEADS, dtype="fp8", batch=32, kv_tokens=1 << 20)
    grouped = GroupedSharedAttention(**HEADS, dtype="fp8", chunk_batches=((32, 512),),
                                     chunk_tokens=2048, requests=32)
    assert grouped.flops == dense.flops
    assert grouped.min_bytes == pytest.approx(dense.min_bytes)
    ratio = kernel_cost(grouped, H100).time_ns / kernel_cost(dense, H100).time_ns
    assert 0.9 < ratio < 1.5  # chunk-bounded splits and a combine cost a little more


def test_sparsity_cuts_shared_work():
    full = GroupedSharedAttention(**HEADS, dtype="fp8", chunk_batches=((64, 512),),
                                  chunk_tokens=2048, requests=64)
    quarter = GroupedSharedAttention(**HEADS, dtype="fp8", chunk_batches=((64, 128),),
                                     chunk_tokens=2048, requests=64)
    t_full, t_q = kernel_cost(full, H100).time_ns, kernel_cost(quarter, H100).time_ns
    assert 3.0 < t_full / t_q <= 4.05
