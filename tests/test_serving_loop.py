"""The MoSKA serving loop (traces.serving) on tiny shapes: continuous batching gives every request
exactly the tokens it gets when decoded alone by the dense/MoSKA reference, the records account for
every step, token and request, the measurement file round-trips, and shared attention on a peer
rank (torch.distributed, gloo) gives the same tokens as co-located.

The Triton kernels run under TRITON_INTERPRET=1 on CPU (set for this module)."""

from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from traces.capture.model import UniqueCache
from traces.capture.moska import MoskaOptions
from traces.serving.engine import DecodeEngine, EngineConfig, StepRows, prompt_tokens
from traces.serving.loop import LoadSpec, request_seed, run_load, summarize
from traces.serving.records import (
    MeasurementError,
    read_measurement,
    to_document,
    write_measurement,
)


@pytest.fixture(autouse=True)
def _interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def small_config(system: str, backend: str = "triton", **kw) -> EngineConfig:
    base = {"system": system, "backend": backend, "shared_tokens": 200, "chunk_tokens": 32,
            "keep_fraction": 0.25, "unique_max": 12, "output_max": 5, "max_batch": 3, "seed": 3}
    if backend == "torch":
        base["glue"] = "torch"
    base.update(kw)
    return EngineConfig(**base)


CLOSED = LoadSpec(kind="closed_loop", requests=5, unique_min=3, unique_max=12, output_min=2,
                  output_max=5, concurrency=3, seed=4)


def reference_tokens(engine: DecodeEngine, load: LoadSpec, rid: int, n_unique: int,
                     n_out: int) -> tuple[list[int], torch.Tensor]:
    """The request decoded alone (batch of one) by the model's own decode_step with the plain-torch
    MoSKA attention: dense attention over [selected chunks ; unique] (all chunks for shared_gemm,
    i.e. full dense attention). Returns its tokens and its last step's logits."""
    model, shared, cfg = engine.model, engine.shared, engine.cfg
    prompt = prompt_tokens(model.config.vocab_size, n_unique, request_seed(load, rid))
    ks, vs, logits = model.prefill_unique(prompt, shared)
    cap = n_unique + n_out
    kc = [torch.zeros((1, k.shape[0], cap, k.shape[2]), dtype=k.dtype) for k in ks]
    vc = [torch.zeros_like(k) for k in kc]
    for i in range(len(ks)):
        kc[i][0, :, :n_unique] = ks[i]
        vc[i][0, :, :n_unique] = vs[i]
    cache = UniqueCache(kc, vc, torch.tensor([n_unique]))
    opts = MoskaOptions(keep_fraction=cfg.effective_keep_fraction, backend="torch")
    tok = torch.tensor([int(logits.argmax())])
    out = []
    for _ in range(n_out):
        logits = model.decode_step(tok, shared, cache, opts)
        tok = logits.argmax(-1)
        out.append(int(tok[0]))
    return out, logits[0]


@pytest.mark.parametrize(("system", "glue"),
                         [("moska", "fused"), ("shared_gemm", "fused"), ("moska", "torch")])
def test_continuous_batching_gives_each_request_its_reference_tokens(system, glue):
    engine = DecodeEngine.build(small_config(system, glue=glue))
    rec = run_load(engine, CLOSED, keep_tokens=True)
    # requests joined and left between steps: more than one distinct batch composition
    assert len(rec.requests) == 5 and min(rec.step_batch) >= 1 and max(rec.step_batch) == 3
    for r in rec.requests:
        want, _ = reference_tokens(engine, CLOSED, r.id, r.unique_tokens, r.output_tokens)
        assert r.tokens == want, f"request {r.id}"


def test_last_step_logits_equal_the_dense_reference():
    """shared_gemm reads every chunk: one request's logits equal full dense attention decoding."""
    engine = DecodeEngine.build(small_config("shared_gemm"))
    load = LoadSpec(kind="closed_loop", requests=1, unique_min=7, unique_max=7, output_min=4,
                    output_max=4, concurrency=1, seed=9)
    rec = run_load(engine, load, keep_tokens=True)
    want, logits = reference_tokens(engine, load, 0, 7, 4)
    assert rec.requests[0].tokens == want
    torch.testing.assert_close(engine.last_logits[0], logits, atol=1e-4, rtol=1e-4)


def test_fused_glue_kernels_equal_the_reference_ops():
    """fp32: the fused norm, SwiGLU and RoPE + KV append equal the model's modules; the fused router
    equals route() (ties included) and its dispatch equals build_dispatch pair for pair and tile for
    tile."""
    from traces.capture.model import PRESETS, RMSNorm, apply_rope, rope_inv_freq
    from traces.capture.router import build_dispatch
    from traces.serving import fused

    gen = torch.Generator().manual_seed(0)
    x, r = torch.randn(5, 64, generator=gen), torch.randn(5, 64, generator=gen)
    norm = RMSNorm(64, 1e-5)
    norm.weight.data = torch.randn(64, generator=gen)
    y, res = fused.add_rms_norm(x, norm.weight, 1e-5, r)
    assert torch.equal(res, x + r)
    torch.testing.assert_close(y, norm(x + r).detach(), atol=1e-6, rtol=1e-6)
    gu = torch.randn(3, 40, generator=gen)
    torch.testing.assert_close(fused.silu_mul(gu),
                               torch.nn.functional.silu(gu[:, :20]) * gu[:, 20:])
    inv = rope_inv_freq(PRESETS["tiny"])
    cos, sin = fused.rope_tables(inv, 300, torch.device("cpu"))
    b, hq, hk, d = 3, 4, 2, 16
    qkv = torch.randn(b, (hq + 2 * hk) * d, generator=gen)
    lens, slots = torch.tensor([3, 7, 0]), torch.tensor([2, 0, 1])
    kc = torch.zeros(4, hk, 10, d)
    vc = torch.zeros_like(kc)
    q = fused.rope_append(qkv, cos, sin, lens, slots, kc, vc, 100, hq, hk, d)
    pos = 100 + lens
    torch.testing.assert_close(q, apply_rope(qkv[:, :hq * d].view(b, hq, d), pos, inv))
    torch.testing.assert_close(kc[slots, :, lens],
                               apply_rope(qkv[:, hq * d:(hq + hk) * d].view(b, hk, d), pos, inv))
    assert torch.equal(vc[slots, :, lens], qkv[:, (hq + hk) * d:].view(b, hk, d))
    assert kc[3].abs().sum() == 0  # nothing written outside the rows' slots
    for batch, n, k in [(5, 8, 2), (7, 37, 9), (3, 128, 32), (1, 4, 4)]:
        scores = torch.randn(batch, 2, n, generator=gen)
        scores[0, 0, :3] = scores[0, 0, 3]  # a four-way tie: lower ids first
        order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
        want_sel = torch.sort(order[..., :k], dim=-1).values.to(torch.int32)
        sel, slot_of = fused.route_topk(scores, k)
        assert torch.equal(sel, want_sel)
        for ppt in (1, 2, 4):
            want, got = build_dispatch(sel, n, ppt), fused.dispatch(slot_of, k, ppt)
            assert torch.equal(got.pair_order, want.pair_order)
            assert torch.equal(got.counts, want.counts)

            def tiles(dsp):
                m = dsp.tile_expert >= 0
                return list(zip(dsp.tile_expert[m].tolist(), dsp.tile_first[m].tolist(),
                                dsp.tile_count[m].tolist()))

            assert tiles(got) == tiles(want) and got.max_tiles >= want.max_tiles


def test_triton_and_torch_backends_make_the_same_tokens():
    runs = []
    for backend in ("triton", "torch"):
        engine = DecodeEngine.build(small_config("moska", backend=backend))
        rec = run_load(engine, CLOSED, keep_tokens=True)
        runs.append([r.tokens for r in rec.requests])
    assert runs[0] == runs[1]


def _check_accounting(rec, load: LoadSpec, cap: int) -> None:
    reqs = rec.requests
    assert len(reqs) == load.requests
    assert all(r.generated == r.output_tokens for r in reqs)
    assert sum(rec.step_batch) == sum(r.output_tokens for r in reqs)  # one token per row per step
    assert max(rec.step_batch) <= cap
    for a, b in zip(rec.step_end_s, rec.step_start_s[1:]):
        assert b >= a  # steps do not overlap
    for r in reqs:
        assert r.arrival_s <= r.admit_s <= r.first_token_s <= r.done_s
        assert r.first_token_s in rec.step_end_s and r.done_s in rec.step_end_s
        # every token of a request comes from a distinct consecutive step of the run
        first = rec.step_end_s.index(r.first_token_s)
        last = rec.step_end_s.index(r.done_s)
        assert last - first + 1 == r.output_tokens
    # at any step, the batch equals the requests whose decoding spans that step
    for i, end in enumerate(rec.step_end_s):
        live = sum(1 for r in reqs if r.first_token_s <= end <= r.done_s)
        assert live == rec.step_batch[i]


def test_closed_loop_records_account_for_every_step_token_and_request():
    engine = DecodeEngine.build(small_config("moska", backend="torch", context="projected"))
    rec = run_load(engine, CLOSED)
    _check_accounting(rec, CLOSED, 3)
    # closed loop: the first C arrive at 0, each later one when an earlier one completes
    arrivals = sorted(r.arrival_s for r in rec.requests)
    assert arrivals[:3] == [0.0, 0.0, 0.0]
    assert set(arrivals[3:]) <= {r.done_s for r in rec.requests}
    s = summarize(rec)
    assert s["requests_completed"] == 5
    assert s["tokens_generated"] == sum(r.output_tokens for r in rec.requests)
    assert s["throughput_tokens_per_s"] == pytest.approx(s["tokens_generated"] / s["duration_s"])
    tpot = [(r.done_s - r.first_token_s) / (r.output_tokens - 1) * 1e3 for r in rec.requests
            if r.output_tokens > 1]
    assert s["tpot_ms"]["count"] == len(tpot)
    assert s["tpot_ms"]["p50"] == pytest.approx(sorted(tpot)[len(tpot) // 2] if len(tpot) % 2
                                                else sum(sorted(tpot)[len(tpot)//2-1:len(tpot)//2+1]) / 2)


def test_poisson_load_admits_at_arrival_and_caps_the_batch():
    engine = DecodeEngine.build(small_config("shared_gemm", backend="torch", context="projected",
                                             max_batch=4))
    load = LoadSpec(kind="poisson", requests=6, unique_min=2, unique_max=10, output_min=1,
                    output_max=4, rate_per_s=400.0, seed=2)
    rec = run_load(engine, load, max_running=2)
    _check_accounting(rec, load, 2)
    _, _, arrivals = load.draw()
    assert [r.arrival_s for r in rec.requests] == pytest.approx(list(arrivals))


def test_measurement_file_round_trips_and_errors_name_the_field(tmp_path):
    engine = DecodeEngine.build(small_config("moska", backend="torch", context="projected"))
    rec = run_load(engine, CLOSED)
    doc = to_document({"kind": "colocated"}, {"system": "moska"}, {"kind": "closed_loop"},
                      {"name": "cpu"}, {"torch": torch.__version__}, summarize(rec),
                      (rec.step_start_s, rec.step_end_s, rec.step_batch), rec.requests)
    path = write_measurement(tmp_path / "run.serving.json", doc)
    back = read_measurement(path)
    assert back["summary"]["tokens_generated"] == sum(rec.step_batch)
    assert len(back["requests"]["rows"]) == 5 and len(back["steps"]["rows"]) == len(rec.step_batch)
    bad = json.loads(path.read_text())
    bad["format_version"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(MeasurementError, match="format_version"):
        read_measurement(tmp_path / "bad.json")
    del bad["summary"]
    (tmp_path / "bad2.json").write_text(json.dumps(bad))
    with pytest.raises(MeasurementError, match="missing field 'summary'"):
        read_measurement(tmp_path / "bad2.json")


def test_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="system"):
        small_config("vanilla").check()
    with pytest.raises(ValueError, match="chunk_tokens"):
        small_config("moska", chunk_tokens=400).check()
    with pytest.raises(ValueError, match="needs backend 'triton'"):
        small_config("moska", backend="torch", glue="fused").check()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        small_config("moska").check()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    engine = DecodeEngine.build(small_config("moska", backend="torch", context="projected"))
    with pytest.raises(ValueError, match="sized for"):
        run_load(engine, LoadSpec(kind="closed_loop", requests=1, unique_min=1, unique_max=99,
                                  output_min=1, output_max=1, concurrency=1))
    with pytest.raises(ValueError, match="batch of 4 rows"):
        engine.step(StepRows([0, 1, 2, 0], [1, 1, 1, 1], [0, 0, 0, 0]))
    with pytest.raises(ValueError, match="concurrency"):
        LoadSpec(kind="closed_loop", requests=1, unique_min=1, unique_max=1, output_min=1,
                 output_max=1).check()


# -- disaggregated: shared attention on a peer rank ------------------------------------------------
def _rank_main(rank: int, port: int, result_path: str) -> None:
    import torch.distributed as dist

    from traces.serving.cli import _serve_shared_rank
    from traces.serving.shared_side import RemoteSharedSide

    os.environ["TRITON_INTERPRET"] = "1"
    torch.set_num_threads(1)  # two processes on a small CI machine: no thread oversubscription
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    cfg = small_config("moska", backend="torch")
    try:
        if rank == 1:
            # the shared rank makes the same model and corpus from the seed, keeps only the corpus
            served = _serve_shared_rank(cfg)
            with open(result_path + ".served", "w") as f:
                f.write(str(served))
        else:
            engine = DecodeEngine.build(
                cfg, side_for=lambda meta: RemoteSharedSide(meta, cfg, peer=1,
                                                            shared_device=torch.device("cpu")))
            side = engine.side
            rec = run_load(engine, CLOSED, keep_tokens=True)
            side.stop(torch.device("cpu"))
            with open(result_path, "w") as f:
                json.dump({"tokens": [r.tokens for r in rec.requests],
                           "steps": len(rec.step_batch), "sent": side.bytes_sent,
                           "received": side.bytes_received,
                           "layer_requests": side.layer_requests}, f)
    finally:
        dist.destroy_process_group()


def test_shared_attention_on_a_peer_rank_gives_the_colocated_tokens(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "remote.json")
    mp.start_processes(_rank_main, args=(port, out), nprocs=2, join=True, start_method="spawn")
    with open(out) as f:
        remote = json.load(f)
    engine = DecodeEngine.build(small_config("moska", backend="torch"))
    local = run_load(engine, CLOSED, keep_tokens=True)
    assert remote["tokens"] == [r.tokens for r in local.requests]
    layers = engine.model.config.num_layers
    # one layer request per layer of every step was served
    with open(out + ".served") as f:
        assert int(f.read()) == remote["steps"] * layers
    assert remote["layer_requests"] == remote["steps"] * layers
    assert remote["sent"] > 0 and remote["received"] > 0


# -- bench/validate_e2e.py over the shipped measurements ---------------------------------------------
def test_validate_e2e_compares_every_shipped_point_without_torch():
    """Every shipped one-GPU measurement gets a row whose measured figures are the file's and whose
    errors are (simulated - measured) / measured of the figures it prints; the script imports no
    torch (it runs where the simulator runs)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = ("import sys, runpy; sys.argv = ['validate_e2e', '--json']; "
            "runpy.run_path('bench/validate_e2e.py', run_name='__main__'); "
            "assert 'torch' not in sys.modules, 'validate_e2e imported torch'")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         check=True).stdout
    points = json.loads(out)["points"]
    shipped = sorted((root / "traces/validation/h200-colocated").glob("*.serving.json"))
    assert len(points) == len(shipped) == 10
    for p in points:
        doc = read_measurement(root / p["file"])
        m, s, e = p["measured"], p["simulated"], p["error"]
        assert m["throughput_tokens_per_s"] == doc["summary"]["throughput_tokens_per_s"]
        assert m["tpot_p50_ms"] == doc["summary"]["tpot_ms"]["p50"]
        assert e["tpot_p50"] == pytest.approx((s["tpot_p50_ms"] - m["tpot_p50_ms"]) / m["tpot_p50_ms"])
        assert e["throughput"] == pytest.approx(
            (s["throughput_tokens_per_s"] - m["throughput_tokens_per_s"])
            / m["throughput_tokens_per_s"])
        assert s["tpot_p50_ms"] > 0 and s["throughput_tokens_per_s"] > 0
        if not p["decode_only"] and p["concurrency"]:
            assert s["decode_rate_tokens_per_s"] == pytest.approx(
                p["concurrency"] / s["tpot_p50_ms"] * 1e3)
