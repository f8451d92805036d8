"""MoSKA attention is exact: router, dispatch, torch and Triton paths against a float64 dense oracle.

Triton kernels run on CUDA when available, else on CPU under TRITON_INTERPRET=1 (small shapes).
"""

import math
import os

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():  # before triton is imported: it reads the variable once
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

import itertools

from traces.capture import kernels
from traces.capture.moska import MoskaOptions, moska_attention
from traces.capture.reference import (
    dense_oracle,
    merge_states_torch,
    shared_attention_torch,
    unique_attention_torch,
)
from traces.capture.router import build_dispatch, chunk_counts, max_tiles_for, route
from traces.capture.shared_kv import SharedKV
from traces.schema import chunk_batch_of, top_k_for

DEV = "cuda" if torch.cuda.is_available() else "cpu"
if DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1", allow_module_level=True)

B, HQ, HK, D = 3, 4, 2, 16
L_SHARED, CHUNK, L_MAX = 100, 32, 40  # 4 chunks, the last one 4 tokens long
LENS = [5, 0, 40]  # one request with no unique tokens at all


def make_inputs(dtype, seed=0, device=DEV, lens=LENS):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    q = rnd(len(lens), HQ, D)
    shared = SharedKV.build(rnd(HK, L_SHARED, D), rnd(HK, L_SHARED, D), CHUNK)
    k_u, v_u = rnd(len(lens), HK, L_MAX, D), rnd(len(lens), HK, L_MAX, D)
    return q, shared, k_u, v_u, torch.tensor(lens, device=device)


def full_dense(q, shared, k_u, v_u, lens):
    """float64 attention over [the whole shared KV ; unique], written independently of the router."""
    out = torch.zeros(q.shape, dtype=torch.float64)
    g = q.shape[1] // shared.kv_heads
    for b in range(q.shape[0]):
        n = int(lens[b])
        for h in range(shared.kv_heads):
            keys = torch.cat([shared.k[h], k_u[b, h, :n]]).double().cpu()
            vals = torch.cat([shared.v[h], v_u[b, h, :n]]).double().cpu()
            s = q[b, h * g : (h + 1) * g].double().cpu() @ keys.T / math.sqrt(q.shape[2])
            out[b, h * g : (h + 1) * g] = torch.softmax(s, -1) @ vals
    return out


# -- merge algebra ---------------------------------------------------------------------------------


def test_merge_of_any_split_equals_attention_over_the_union():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 8, generator=gen, dtype=torch.float64)  # B=2, Hq=4 (Hk=2, g=2), d=8
    keys = torch.randn(2, 30, 8, generator=gen, dtype=torch.float64)
    vals = torch.randn(2, 30, 8, generator=gen, dtype=torch.float64)
    cuts = [0, 7, 7, 19, 30]  # includes an empty piece (LSE = -inf)
    parts_o, parts_l = [], []
    for lo, hi in itertools.pairwise(cuts):
        k_u = keys[None, :, lo:hi].expand(2, -1, -1, -1)
        v_u = vals[None, :, lo:hi].expand(2, -1, -1, -1)
        o, lse = unique_attention_torch(q, k_u, v_u, torch.tensor([hi - lo] * 2))
        parts_o.append(o)
        parts_l.append(lse)
    o_all, l_all = torch.cat(parts_o, 2), torch.cat(parts_l, 2)
    assert torch.isinf(l_all[:, :, 1]).all()
    # feed three pieces as "shared" partials and one as the unique partial: the merge cannot tell
    o_sh = o_all[:, :, :3].reshape(-1, 1, 2, 8)
    l_sh = l_all[:, :, :3].reshape(-1, 1, 2)
    out = merge_states_torch(o_sh, l_sh, o_all[:, :, 3:], l_all[:, :, 3:], torch.float64)
    ref, _ = unique_attention_torch(
        q,
        keys[None].expand(2, -1, -1, -1),
        vals[None].expand(2, -1, -1, -1),
        torch.tensor([30, 30]),
    )
    assert (out - ref.reshape(2, 4, 8)).abs().max() < 1e-12
    # order of the partials does not matter
    perm = merge_states_torch(
        o_all[:, :, 1:].reshape(-1, 1, 2, 8),
        l_all[:, :, 1:].reshape(-1, 1, 2),
        o_all[:, :, :1],
        l_all[:, :, :1],
        torch.float64,
    )
    assert (perm - out).abs().max() < 1e-12


def test_merge_of_nothing_is_zero_not_nan():
    o = torch.zeros(1, 2, 2, 2, 8)
    lse = torch.full((1, 2, 2, 2), -math.inf)
    out = merge_states_torch(
        o.reshape(-1, 1, 2, 8), lse.reshape(-1, 1, 2), o[:, :, :1], lse[:, :, :1], torch.float32
    )
    assert torch.equal(out, torch.zeros(1, 4, 8))


# -- router and dispatch ---------------------------------------------------------------------------


def test_router_keeps_top_k_ascending_and_breaks_ties_by_lower_chunk_id():
    q, shared, *_ = make_inputs(torch.float32, device="cpu")
    sel = route(q, shared, 2)
    assert sel.dtype == torch.int32 and sel.shape == (B, HK, 2)
    assert (sel[..., 1] > sel[..., 0]).all()
    scores = torch.einsum("bhgd,hnd->bhgn", q.view(B, HK, 2, D), shared.summaries).amax(2)
    for b in range(B):
        for h in range(HK):
            top = set(torch.topk(scores[b, h], 2).indices.tolist())
            assert set(sel[b, h].tolist()) == top
    tied = route(torch.zeros_like(q), shared, 3)  # every score is 0
    assert (tied == torch.tensor([0, 1, 2], dtype=torch.int32)).all()
    everything = route(q, shared, shared.n_chunks)
    assert (everything == torch.arange(shared.n_chunks, dtype=torch.int32)).all()


def test_chunk_summaries_are_mean_keys_including_a_short_last_chunk():
    _, shared, *_ = make_inputs(torch.float32, device="cpu")
    assert shared.n_chunks == 4
    assert torch.allclose(shared.summaries[1, 3], shared.k[1, 96:100].mean(0), atol=1e-6)
    assert torch.allclose(shared.summaries[0, 0], shared.k[0, 0:32].mean(0), atol=1e-6)


@pytest.mark.parametrize("ppt", [1, 3, 8])
def test_dispatch_tiles_cover_every_pair_once_grouped_by_chunk(ppt):
    gen = torch.Generator().manual_seed(ppt)
    b, hk, n, k = 7, 3, 9, 4
    sel = torch.stack(
        [
            torch.stack([torch.randperm(n, generator=gen)[:k].sort().values for _ in range(hk)])
            for _ in range(b)
        ]
    ).to(torch.int32)
    disp = build_dispatch(sel, n, ppt)
    assert disp.max_tiles == max_tiles_for(b * hk * k, hk * n, ppt)
    seen = []
    for t in range(disp.max_tiles):
        e = int(disp.tile_expert[t])
        if e < 0:
            assert int(disp.tile_count[t]) == 0
            continue
        cnt, first = int(disp.tile_count[t]), int(disp.tile_first[t])
        assert 1 <= cnt <= ppt
        for p in disp.pair_order[first : first + cnt].tolist():
            bb, rest = divmod(p, hk * k)
            h, j = divmod(rest, k)
            assert h * n + int(sel[bb, h, j]) == e
            seen.append(p)
    assert sorted(seen) == list(range(b * hk * k))
    assert torch.equal(disp.counts, chunk_counts(sel, n))
    assert (disp.counts.numpy() == chunk_batch_of(sel.numpy(), n)).all()


# -- exactness -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("keep", [0.25, 0.5, 1.0])
def test_fp32_equals_dense_attention_over_selected_chunks_and_unique(backend, keep):
    q, shared, k_u, v_u, lens = make_inputs(torch.float32)
    res = moska_attention(
        q, shared, k_u, v_u, lens, MoskaOptions(keep_fraction=keep, backend=backend)
    )
    assert res.selected.shape == (B, HK, top_k_for(4, keep))
    ref = dense_oracle(q, shared, res.selected, k_u, v_u, lens)
    assert res.out.dtype == torch.float32
    assert (res.out.double() - ref).abs().max().item() <= 1e-5
    assert torch.equal(res.chunk_batch.cpu(), chunk_counts(res.selected.cpu(), 4))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bf16_within_2e2_of_float64_oracle(backend):
    q, shared, k_u, v_u, lens = make_inputs(torch.bfloat16, seed=3)
    res = moska_attention(
        q, shared, k_u, v_u, lens, MoskaOptions(keep_fraction=0.5, backend=backend)
    )
    assert res.out.dtype == torch.bfloat16
    ref = dense_oracle(q, shared, res.selected, k_u, v_u, lens)
    assert (res.out.double() - ref).abs().max().item() <= 2e-2


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_keep_all_equals_full_dense_attention(backend):
    q, shared, k_u, v_u, lens = make_inputs(torch.float32, seed=5)
    res = moska_attention(
        q, shared, k_u, v_u, lens, MoskaOptions(keep_fraction=1.0, backend=backend)
    )
    assert (
        res.out.double().cpu() - full_dense(q, shared, k_u, v_u, lens)
    ).abs().max().item() <= 1e-5


def test_triton_and_torch_partials_agree_and_kv_splits_change_nothing():
    q, shared, k_u, v_u, lens = make_inputs(torch.float32, seed=7)
    sel = route(q, shared, 2)
    o_ref, l_ref = shared_attention_torch(q, shared, sel)
    for splits in (1, 2, 4):
        plan = kernels.plan_shared(
            q, shared, 2, config=kernels.KernelConfig(16, 16, 4, 1), n_splits=splits
        )
        disp = build_dispatch(sel, shared.n_chunks, plan.config.block_m // 2)
        o, lse = kernels.shared_attention_triton(q, shared, disp, plan)
        assert o.shape == (B * HK * 2, splits, 2, D)
        # merging the splits of each pair gives the unsplit partial
        m = lse.amax(1, keepdim=True)
        w = torch.exp(lse - torch.where(torch.isinf(m), torch.zeros_like(m), m))
        merged = (w[..., None] * o).sum(1) / w.sum(1)[..., None]
        lse_m = torch.logsumexp(lse, dim=1)
        assert (merged - o_ref[:, 0]).abs().max() <= 1e-6
        assert (lse_m - l_ref[:, 0]).abs().max() <= 1e-5
    o_u, l_u = unique_attention_torch(q, k_u, v_u, lens)
    for splits in (1, 3):
        o_t, l_t = kernels.unique_attention_triton(q, k_u, v_u, lens, n_splits=splits)
        out = merge_states_torch(o_ref, l_ref, o_t, l_t, torch.float64)
        assert (out - merge_states_torch(o_ref, l_ref, o_u, l_u, torch.float64)).abs().max() <= 1e-6


def test_fp8_kv_matches_oracle_on_the_same_quantised_values():
    q, shared, k_u, v_u, lens = make_inputs(torch.bfloat16, seed=9)
    f8 = torch.float8_e4m3fn
    shared8 = SharedKV.build(shared.k.to(f8), shared.v.to(f8), CHUNK)
    res = moska_attention(
        q, shared8, k_u.to(f8), v_u.to(f8), lens, MoskaOptions(keep_fraction=0.5, backend="triton")
    )
    ref = dense_oracle(q, shared8, res.selected, k_u.to(f8), v_u.to(f8), lens)
    assert (res.out.double() - ref).abs().max().item() <= 2e-2


def test_triton_refuses_cpu_tensors_without_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, _, k_u, v_u, lens = make_inputs(torch.float32, device="cpu")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        kernels.unique_attention_triton(q, k_u, v_u, lens)
