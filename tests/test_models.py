"""Model shapes, KV bytes, and the per-system decode-step op lists."""

import pytest

from hw import DecodeAttention, GroupedSharedAttention, SharedAttention, Transfer
from workloads.errors import WorkloadError
from workloads.models import get_model
from workloads.systems import available_systems, decode_step_ops, prefill_ops
from workloads.systems.ops import expected_chunk_batches

SYSTEMS = tuple(available_systems())

M = get_model("llama-3.1-8b")


def test_kv_bytes_llama_8b_fp8():
    assert M.kv_bytes_per_token_per_layer("fp8") == 2 * 8 * 128 * 1 == 2048
    assert M.kv_bytes_per_token("fp8") == 64 * 1024
    assert M.kv_bytes_per_token("bf16") == 128 * 1024


def test_param_counts_match_published_sizes():
    assert M.params == pytest.approx(8.03e9, rel=0.01)
    assert get_model("llama-3.1-70b").params == pytest.approx(70.6e9, rel=0.01)


def test_unknown_model():
    with pytest.raises(WorkloadError, match="llama-3.1-8b"):
        get_model("llama-3-8b")


def _ops(system, **kw):
    return {o.name: o for o in decode_step_ops(M, system, "fp8", 16, 65536, 1 << 20, **kw)}


def test_vanilla_and_prefix_cache_read_shared_per_request():
    for s in ("vanilla", "prefix_cache"):
        att = _ops(s)["attention"].op
        assert isinstance(att, DecodeAttention) and att.kv_tokens == (1 << 20) + 65536
        assert att.batch == 16


def test_shared_gemm_batches_shared_attention():
    ops = _ops("shared_gemm")
    assert isinstance(ops["shared_attention"].op, SharedAttention)
    assert ops["shared_attention"].op.batch == 16
    assert ops["unique_attention"].op.kv_tokens == 65536
    assert all(o.where == "unique" for o in ops.values())


def test_moska_splits_nodes_and_ships_queries():
    ops = _ops("moska", keep_fraction=0.25, chunk_tokens=2048, shared_queries=64, shared_nodes=2)
    sh = ops["shared_attention"].op
    assert isinstance(sh, GroupedSharedAttention) and ops["shared_attention"].where == "shared"
    # each node holds 256 chunks; 64 queries keep 25%: ~all chunks active, 16 queries each
    # Q x k = 4096 (query, chunk) pairs; each of the <= 256 active chunks' batch is its
    # quantile bin's mean rounded up, so the pairs priced exceed 4096 by less than one a chunk
    assert sh.chunks * 2 <= 512 and 64 * 64 <= sh.query_chunk_pairs < 64 * 64 + sh.chunks
    assert isinstance(ops["send_query"].op, Transfer) and ops["send_query"].where == "fabric"
    assert ops["send_query"].op.nbytes == 16 * 32 * 128 * 2
    assert ops["merge"].op.partials == 3


def test_expected_chunk_batches_single_query_is_exact():
    assert expected_chunk_batches(1, 512, 0.25) == ((1, 128),)


def test_unknown_system():
    with pytest.raises(WorkloadError, match="system"):
        decode_step_ops(M, "magic", "fp8", 1, 1, 1)


@pytest.mark.parametrize("system", SYSTEMS)
def test_prefill_has_projections_and_attention(system):
    names = [o.name for o in prefill_ops(M, system, "fp8", 1024, 1 << 20, keep_fraction=0.25)]
    assert {"qkv_proj", "ffn_down", "prefill_unique_attention", "prefill_shared_attention"} <= set(names)
