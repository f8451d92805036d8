"""Property tests: modelled time never falls as any dimension of the work grows.

More rows, columns, depth, requests, tokens, chunks, partials or bytes is never faster, on every
chip preset, at both clocks, with every kernel profile that prices the op. (The old tile model
broke this: a skinny GEMM's split-K reduce made n 4096, k 1024 cheaper at m 512 than at m 256.)
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from hw import (
    DecodeAttention,
    Gemm,
    GroupedSharedAttention,
    LseMerge,
    SharedAttention,
    Transfer,
    kernel_cost,
)
from hw.link import transfer_cost
from hw.ops import Copy
from hw.profiles import available_profiles, load_profile
from hw.specs import CLOCKS, available_chips, available_links, load_chip, load_link

CHIPS = st.sampled_from(available_chips())
CLOCK = st.sampled_from(CLOCKS)
DIM = st.integers(1, 20_000)
GROW = st.integers(1, 20_000)
HEADS = [(32, 8, 128), (64, 8, 128), (8, 8, 64), (16, 1, 128)]
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)


def _chip(name: str, clock: str):
    return dataclasses.replace(load_chip(name), clock=clock)


def _profiles(family: str) -> list[str]:
    return [n for n in available_profiles() if load_profile(n).family == family]


def _t(op, chip, profile=None) -> int:
    return kernel_cost(op, chip, profile).time_ns


@SETTINGS
@given(chip=CHIPS, clock=CLOCK, dtype=st.sampled_from(["bf16", "fp8", "fp16"]), m=DIM, n=DIM, k=DIM,
       which=st.sampled_from("mnk"), grow=GROW, profile=st.sampled_from(_profiles("gemm") + [None]))
def test_gemm_time_never_falls_as_m_n_or_k_grows(chip, clock, dtype, m, n, k, which, grow, profile):
    c = _chip(chip, clock)
    dims = {"m": m, "n": n, "k": k}
    bigger = {**dims, which: dims[which] + grow}
    assert _t(Gemm(**bigger, dtype=dtype), c, profile) >= _t(Gemm(**dims, dtype=dtype), c, profile)


@SETTINGS
@given(chip=CHIPS, clock=CLOCK, heads=st.sampled_from(HEADS), dtype=st.sampled_from(["bf16", "fp8"]),
       batch=st.integers(1, 1024), tokens=st.integers(1, 1 << 20), which=st.sampled_from(["batch", "kv_tokens"]),
       grow=GROW, profile=st.sampled_from(_profiles("decode_attention")))
def test_decode_attention_never_falls_as_batch_or_context_grows(chip, clock, heads, dtype, batch, tokens, which,
                                                                 grow, profile):
    c = _chip(chip, clock)
    q, kv, d = heads
    base = {"batch": batch, "kv_tokens": tokens}
    bigger = {**base, which: base[which] + grow}
    small = DecodeAttention(q, kv, d, dtype, **base)
    large = DecodeAttention(q, kv, d, dtype, **bigger)
    assert _t(large, c, profile) >= _t(small, c, profile)


@SETTINGS
@given(chip=CHIPS, clock=CLOCK, heads=st.sampled_from(HEADS), dtype=st.sampled_from(["bf16", "fp8"]),
       batch=st.integers(1, 4096), tokens=st.integers(1, 1 << 22), which=st.sampled_from(["batch", "kv_tokens"]),
       grow=GROW, profile=st.sampled_from(_profiles("shared_attention")))
def test_shared_attention_never_falls_as_batch_or_tokens_grow(chip, clock, heads, dtype, batch, tokens, which,
                                                              grow, profile):
    c = _chip(chip, clock)
    q, kv, d = heads
    base = {"batch": batch, "kv_tokens": tokens}
    bigger = {**base, which: base[which] + grow}
    assert (_t(SharedAttention(q, kv, d, dtype, **bigger), c, profile)
            >= _t(SharedAttention(q, kv, d, dtype, **base), c, profile))


@SETTINGS
@given(chip=CHIPS, clock=CLOCK, queries=st.integers(1, 512), chunks=st.integers(1, 2048),
       chunk_tokens=st.sampled_from([256, 1024, 2048, 4096]), which=st.sampled_from(["queries", "chunks"]),
       grow=st.integers(1, 512), profile=st.sampled_from(_profiles("shared_attention")))
def test_grouped_shared_attention_never_falls_with_more_queries_or_chunks(chip, clock, queries, chunks, chunk_tokens,
                                                                          which, grow, profile):
    c = _chip(chip, clock)
    base = {"queries": queries, "chunks": chunks}
    bigger = {**base, which: base[which] + grow}

    def op(x):
        return GroupedSharedAttention(32, 8, 128, "bf16", chunk_batches=((x["queries"], x["chunks"]),),
                                      chunk_tokens=chunk_tokens, requests=max(x["queries"], 1))
    assert _t(op(bigger), c, profile) >= _t(op(base), c, profile)


@SETTINGS
@given(chip=CHIPS, clock=CLOCK, batch=st.integers(1, 4096), partials=st.integers(1, 512),
       which=st.sampled_from(["batch", "partials"]), grow=st.integers(1, 4096),
       dtype=st.sampled_from(["bf16", "fp32"]))
def test_merge_never_falls_with_more_requests_or_partials(chip, clock, batch, partials, which, grow, dtype):
    c = _chip(chip, clock)
    base = {"batch": batch, "partials": partials}
    bigger = {**base, which: base[which] + grow}
    assert _t(LseMerge(q_heads=32, head_dim=128, partial_dtype=dtype, **bigger), c) >= _t(
        LseMerge(q_heads=32, head_dim=128, partial_dtype=dtype, **base), c)


@SETTINGS
@given(chip=CHIPS, nbytes=st.integers(1, 1 << 34), grow=st.integers(1, 1 << 30))
def test_copy_never_falls_with_more_bytes(chip, nbytes, grow):
    c = load_chip(chip)
    assert _t(Copy(nbytes + grow), c) >= _t(Copy(nbytes), c)


@SETTINGS
@given(link=st.sampled_from(available_links()), nbytes=st.integers(0, 1 << 34), grow=st.integers(1, 1 << 30))
def test_transfer_never_falls_with_more_bytes(link, nbytes, grow):
    spec = load_link(link)
    assert transfer_cost(Transfer(nbytes + grow), spec).time_ns >= transfer_cost(Transfer(nbytes), spec).time_ns


@SETTINGS
@given(chip=CHIPS, m=DIM, n=DIM, k=DIM, batch=st.integers(1, 2048), tokens=st.integers(1, 1 << 21))
def test_sustained_is_never_faster_than_burst(chip, m, n, k, batch, tokens):
    burst, sustained = _chip(chip, "burst"), _chip(chip, "sustained")
    for op in (Gemm(m, n, k), SharedAttention(32, 8, 128, "bf16", batch=batch, kv_tokens=tokens),
               DecodeAttention(32, 8, 128, "bf16", batch=batch, kv_tokens=tokens)):
        assert _t(op, sustained) >= _t(op, burst)
