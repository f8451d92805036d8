"""The cost model against hand-computed roofline arithmetic and closed forms written from the profiles."""

import dataclasses
import math

import pytest

from hw import (
    DecodeAttention,
    Gemm,
    GroupedSharedAttention,
    LseMerge,
    SharedAttention,
    Transfer,
    kernel_cost,
    load_chip,
    load_link,
    transfer_cost,
)
from hw.compute import roofline_ns
from hw.ops import Copy
from hw.profiles import load_profile

H100 = load_chip("h100-sxm")
HEADS = {"q_heads": 32, "kv_heads": 8, "head_dim": 128}


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
    LseMerge(1, 32, 128, 2), LseMerge(512, 32, 128, 9), Copy(1 << 20),
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


def _burst(name: str):
    return dataclasses.replace(load_chip(name), clock="burst")


def test_gemm_closed_form_from_the_profile():
    """A GEMM costs fixed + ((2 m_pad n k / (peak x mma))^p + (bytes / (HBM x mem))^p)^(1/p), by hand."""
    chip = _burst("h200")
    prof = load_profile("cublas").params("h200")
    m, n, k = 200, 4096, 4096
    m_pad = 256  # rows padded to the 64-row tensor-core tile
    compute = 2 * m_pad * n * k / (989.4e12 * prof.mma_fraction) * 1e9
    nbytes = k * n * 2 + m * k * 2 + m * n * 2
    memory = nbytes / (4800e9 * prof.mem_fraction) * 1e9 + prof.l2_writeback * min(nbytes, 60 * 2**20) / (
        4800e9 * prof.mem_fraction) * 1e9
    p = prof.overlap_p
    expected = prof.fixed_ns + (compute**p + memory**p) ** (1 / p)
    assert kernel_cost(Gemm(m, n, k, "bf16"), chip).time_ns == pytest.approx(expected, abs=2)


def test_sustained_clock_scales_compute_only():
    """Sustained pricing divides compute by the chip's measured ratio; a copy (memory) is unchanged."""
    burst, sustained = _burst("h200"), load_chip("h200")
    assert sustained.clock == "sustained"
    big = Gemm(8192, 8192, 8192, "bf16")
    ratio = kernel_cost(big, burst).time_ns / kernel_cost(big, sustained).time_ns
    assert ratio == pytest.approx(sustained.sustained_compute_ratio, rel=0.01)
    copy = Copy(1 << 30)
    assert kernel_cost(copy, burst).time_ns == kernel_cost(copy, sustained).time_ns


def test_copy_and_merge_closed_forms():
    chip = _burst("h200")
    cp = load_profile("torch-copy").params("h200")
    nbytes = 1 << 30
    bw = 4800e9 * cp.mem_fraction / 1e9
    expected = cp.fixed_ns + 2 * nbytes / bw + cp.l2_writeback * 60 * 2**20 / bw
    assert kernel_cost(Copy(nbytes), chip).time_ns == pytest.approx(expected, abs=2)
    mp = load_profile("triton-moska-merge").params("h200")
    op = LseMerge(1, 32, 128, 80, "fp32")
    bw = 4800e9 * mp.mem_fraction / 1e9
    memory = op.min_bytes / bw + mp.l2_writeback * min(op.min_bytes, 60 * 2**20) / bw
    chain = 80 * mp.serial_latency_ns  # one dependent load per partial
    p = mp.overlap_p
    expected = mp.fixed_ns + (chain**p + memory**p) ** (1 / p)
    assert kernel_cost(op, chip).time_ns == pytest.approx(expected, abs=2)


def test_transfer_is_fixed_plus_latency_plus_bytes_over_achieved_bandwidth():
    link = load_link("nvlink4")
    assert link.bandwidth_GBps < link.spec_bandwidth_GBps  # NCCL reaches less than the datasheet
    nbytes = 64 << 20
    expected = link.fixed_ns + link.latency_ns + nbytes / link.bandwidth_GBps
    assert transfer_cost(Transfer(nbytes), link).time_ns == math.ceil(expected)


def test_skinny_gemm_no_longer_gets_cheaper_as_m_grows():
    """The old model split K below a tile threshold and priced n 4096, k 1024 at m 256 above m 512."""
    chip = load_chip("h200")
    times = [kernel_cost(Gemm(m, 4096, 1024), chip).time_ns for m in (64, 128, 256, 512, 1024)]
    assert times == sorted(times)


def test_sdpa_over_batched_queries_is_bound_by_its_few_blocks():
    """SDPA's FlashAttention forward gives each KV head ceil(4B / 128) blocks of 128 padded rows and no KV
    split: 8 blocks from B = 1 to 32, so the time is one block's compute over the whole KV, flat in B."""
    chip = _burst("h200")
    prof = load_profile("sdpa-shared")
    p = prof.params("h200")
    tokens = 1 << 18
    one_block = 4 * 128 * tokens * 128 / (989.4e12 / 132 * p.mma_fraction) * 1e9
    times = [kernel_cost(SharedAttention(**HEADS, dtype="bf16", batch=b, kv_tokens=tokens), chip, prof).time_ns
             for b in (1, 8, 32)]
    assert max(times) - min(times) < 0.01 * min(times)
    assert times[0] >= p.fixed_ns + one_block * 0.99


def test_kernel_profiles_price_the_same_op_differently():
    chip = _burst("h200")
    op = SharedAttention(**HEADS, dtype="bf16", batch=512, kv_tokens=1 << 20)
    triton, sdpa = (kernel_cost(op, chip, name).time_ns for name in ("triton-moska-shared", "sdpa-shared"))
    assert triton != sdpa
    assert kernel_cost(op, chip).detail["profile"] == "triton-moska-shared"  # the default


def test_grouped_equals_dense_when_every_chunk_has_the_whole_batch():
    dense = SharedAttention(**HEADS, dtype="fp8", batch=32, kv_tokens=1 << 20)
    grouped = GroupedSharedAttention(**HEADS, dtype="fp8", chunk_batches=((32, 512),),
                                     chunk_tokens=2048, requests=32)
    assert grouped.flops == dense.flops
    assert grouped.min_bytes == pytest.approx(dense.min_bytes)
    ratio = kernel_cost(grouped, H100).time_ns / kernel_cost(dense, H100).time_ns
    assert 0.9 < ratio < 1.5


def test_sparsity_cuts_shared_work():
    full = GroupedSharedAttention(**HEADS, dtype="fp8", chunk_batches=((64, 512),),
                                  chunk_tokens=2048, requests=64)
    quarter = GroupedSharedAttention(**HEADS, dtype="fp8", chunk_batches=((64, 128),),
                                     chunk_tokens=2048, requests=64)
    t_full, t_q = kernel_cost(full, H100).time_ns, kernel_cost(quarter, H100).time_ns
    assert 3.0 < t_full / t_q <= 4.05
