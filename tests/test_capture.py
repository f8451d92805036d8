"""The Llama decoder with MoSKA attention, safetensors loading, and the capture CLI (CPU, tiny shapes)."""

import json
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
if not torch.cuda.is_available():  # before triton is imported: it reads the variable once
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from safetensors.torch import save_file

from traces.capture.cli import main
from traces.capture.model import PRESETS, LlamaConfig, LlamaForCausalLM, UniqueCache, rope_inv_freq
from traces.capture.moska import MoskaOptions
from traces.capture.weights import CheckpointError, load_llama
from traces.io import read_trace
from traces.schema import KERNEL_NAMES

DEV = "cuda" if torch.cuda.is_available() else "cpu"  # where the Triton backend can run
TINY = LlamaConfig(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_layers=2,
    q_heads=4,
    kv_heads=2,
    head_dim=8,
    rope_theta=10_000.0,
    name="test",
)


def random_model(cfg=TINY, seed=0) -> LlamaForCausalLM:
    m = LlamaForCausalLM.build(cfg, torch.float32, "cpu")
    m.init_random(torch.Generator().manual_seed(seed), std=0.2)
    with torch.no_grad():  # non-trivial norm weights so a mixed-up norm would show
        for name, p in m.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(len(name)))
    return m


def reference_logits(state: dict, cfg: LlamaConfig, tokens: torch.Tensor) -> torch.Tensor:
    """Independent full-sequence causal Llama forward in float64, straight from HF-named weights."""
    w = {k: v.double() for k, v in state.items()}
    d, g = cfg.head_dim, cfg.q_heads // cfg.kv_heads

    def norm(x, weight):
        return weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps)

    def rope(x, pos):
        inv = 1.0 / cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = pos[:, None].double() * inv
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        c, s = ang.cos()[:, None], ang.sin()[:, None]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1)

    t = tokens.shape[0]
    pos = torch.arange(t)
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        h = norm(x, w[p + "input_layernorm.weight"])
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).view(t, cfg.q_heads, d), pos)
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).view(t, cfg.kv_heads, d), pos)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(t, cfg.kv_heads, d)
        k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        s = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(d)
        s = s.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), -math.inf)
        a = torch.einsum("hqk,khd->qhd", torch.softmax(s, -1), v).reshape(t, -1)
        x = x + a @ w[p + "self_attn.o_proj.weight"].T
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    return norm(x, w["model.norm.weight"]) @ w["lm_head.weight"].T


def decode(model, corpus, prompts, steps, options, chunk=8, device="cpu"):
    """Prefill corpus + prompts, then greedy MoSKA decode; returns per-step logits [steps, B, vocab] (CPU)."""
    cfg = model.config
    model = model.to(device)
    corpus, prompts = corpus.to(device), [p.to(device) for p in prompts]
    shared = model.prefill_shared(corpus, chunk, torch.float32)
    cap = max(len(p) for p in prompts) + steps
    shape = (len(prompts), cfg.kv_heads, cap, cfg.head_dim)
    cache = UniqueCache(
        k=[torch.zeros(shape, device=device) for _ in range(cfg.num_layers)],
        v=[torch.zeros(shape, device=device) for _ in range(cfg.num_layers)],
        lens=torch.tensor([len(p) for p in prompts], device=device),
    )
    first, all_logits = [], []
    for i, p in enumerate(prompts):
        ks, vs, logits = model.prefill_unique(p, shared)
        for layer in range(cfg.num_layers):
            cache.k[layer][i, :, : len(p)] = ks[layer]
            cache.v[layer][i, :, : len(p)] = vs[layer]
        first.append(logits)
    tokens = torch.stack(first).argmax(-1)
    all_logits.append(torch.stack(first))
    for _ in range(steps):
        logits = model.decode_step(tokens, shared, cache, options)
        all_logits.append(logits)
        tokens = logits.argmax(-1)
    return torch.stack(all_logits).cpu()


# -- the decoder -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_keep_all_moska_decode_equals_dense_llama_forward(backend):
    cfg = LlamaConfig(
        **{**TINY.__dict__, "head_dim": 16, "q_heads": 4, "kv_heads": 2, "hidden_size": 32}
    )
    model = random_model(cfg)
    gen = torch.Generator().manual_seed(3)
    corpus = torch.randint(cfg.vocab_size, (30,), generator=gen)  # 4 chunks of 8, the last of 6
    prompts = [torch.randint(cfg.vocab_size, (n,), generator=gen) for n in (3, 6)]
    steps = 4
    state = {k: v.clone() for k, v in model.state_dict().items()}
    device = DEV if backend == "triton" else "cpu"
    got = decode(
        model,
        corpus,
        prompts,
        steps,
        MoskaOptions(keep_fraction=1.0, backend=backend),
        device=device,
    )
    for b, prompt in enumerate(prompts):
        seq = torch.cat([corpus, prompt])
        for s in range(steps + 1):
            ref = reference_logits(state, cfg, seq)[-1]
            assert (got[s, b].double() - ref).abs().max() < 1e-4, (b, s)
            seq = torch.cat([seq, ref.argmax().view(1)])
            assert int(got[s, b].argmax()) == int(ref.argmax())


def test_sparse_decode_runs_and_differs_from_dense():
    model = random_model()
    gen = torch.Generator().manual_seed(4)
    corpus = torch.randint(64, (64,), generator=gen)
    prompts = [torch.randint(64, (5,), generator=gen)]
    dense = decode(model, corpus, prompts, 2, MoskaOptions(keep_fraction=1.0))
    sparse = decode(model, corpus, prompts, 2, MoskaOptions(keep_fraction=0.25))
    assert torch.equal(dense[0], sparse[0])  # prefill is dense in both
    assert not torch.allclose(dense[1:], sparse[1:])


def test_llama3_rope_scaling_keeps_high_and_divides_low_frequencies():
    cfg = PRESETS["llama-3.1-8b"]
    plain = rope_inv_freq(LlamaConfig(**{**cfg.__dict__, "rope_scaling": None}))
    scaled = rope_inv_freq(cfg)
    wavelen = 2 * math.pi / plain
    high = wavelen < 8192 / 4
    low = wavelen > 8192 / 1
    assert torch.equal(scaled[high], plain[high])
    assert torch.allclose(scaled[low], plain[low] / 8)
    mid = ~high & ~low
    assert ((scaled[mid] < plain[mid]) & (scaled[mid] > plain[mid] / 8)).all()


# -- loading a Hugging Face checkpoint -------------------------------------------------------------


def write_checkpoint(folder, model, shards=1, drop=None, tie=False):
    cfg = model.config
    folder.mkdir(parents=True, exist_ok=True)
    hf = {
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.q_heads,
        "num_key_value_heads": cfg.kv_heads,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": tie,
        "torch_dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(hf))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != drop}
    if tie:
        state.pop("lm_head.weight")
    names = sorted(state)
    if shards == 1:
        save_file(state, str(folder / "model.safetensors"))
        return
    weight_map = {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n] for n in names[i::shards]}
        save_file(part, str(folder / fname))
        weight_map.update({n: fname for n in part})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


@pytest.mark.parametrize("shards", [1, 3])
def test_loads_hf_safetensors_checkpoint(tmp_path, shards):
    model = random_model(seed=11)
    write_checkpoint(tmp_path / "ckpt", model, shards=shards)
    loaded = load_llama(tmp_path / "ckpt", torch.float32)
    assert loaded.config.head_dim == TINY.hidden_size // TINY.q_heads
    for name, t in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
    tokens = torch.randint(64, (12,), generator=torch.Generator().manual_seed(0))
    ref = reference_logits(model.state_dict(), model.config, tokens)[-1]
    shared = loaded.prefill_shared(tokens[:8], 4, torch.float32)
    _, _, logits = loaded.prefill_unique(tokens[8:], shared)
    assert (logits.double() - ref).abs().max() < 1e-4
    one_layer = load_llama(tmp_path / "ckpt", torch.bfloat16, num_layers=1)
    assert one_layer.config.num_layers == 1 and one_layer.lm_head.weight.dtype == torch.bfloat16


def test_tied_embeddings_checkpoint(tmp_path):
    cfg = LlamaConfig(**{**TINY.__dict__, "tie_word_embeddings": True})
    model = random_model(cfg)
    write_checkpoint(tmp_path / "tied", model, tie=True)
    loaded = load_llama(tmp_path / "tied", torch.float32)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert torch.equal(loaded.lm_head.weight, model.model.embed_tokens.weight)


def test_checkpoint_errors_name_the_problem(tmp_path):
    model = random_model()
    write_checkpoint(tmp_path / "missing", model, drop="model.layers.1.mlp.up_proj.weight")
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*missing"):
        load_llama(tmp_path / "missing", torch.float32)
    with pytest.raises(CheckpointError, match="config.json"):
        load_llama(tmp_path / "nowhere", torch.float32)
    write_checkpoint(tmp_path / "shape", model)
    cfg = json.loads((tmp_path / "shape" / "config.json").read_text())
    cfg["intermediate_size"] = 40
    (tmp_path / "shape" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="mlp.*shape"):
        load_llama(tmp_path / "shape", torch.float32)


# -- the capture CLI -------------------------------------------------------------------------------

ARGS = [
    "--preset",
    "tiny",
    "--shared-tokens",
    "256",
    "--chunk-tokens",
    "32",
    "--keep-fraction",
    "0.25",
    "--batch",
    "3",
    "--unique-tokens",
    "4:12",
    "--steps",
    "3",
    "--seed",
    "5",
    "--created-at",
    "",
    "-q",
]


def test_cli_capture_is_deterministic_and_consistent(tmp_path, capsys):
    a, b = tmp_path / "a.trace.npz", tmp_path / "b.trace.npz"
    assert main(["--out", str(a), "--device", "cpu", *ARGS]) == 0
    assert main(["--out", str(b), "--device", "cpu", *ARGS]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert "wrote" in capsys.readouterr().out
    t = read_trace(a)
    h = t.header
    assert (h.layers, h.q_heads, h.kv_heads, h.head_dim) == (2, 4, 2, 16)
    assert (h.n_chunks, h.top_k, h.dtype, h.created_at, h.chip_hint) == (8, 2, "fp32", "", None)
    assert h.software["torch"] == torch.__version__ and h.capture["backend"] == "torch"
    assert t.n_records == 6 and list(t.steps()) == [0, 1, 2]
    first, last = t.step_records(0)[0], t.step_records(2)[1]
    assert np.array_equal(last.unique_tokens, first.unique_tokens + 2)
    assert ((first.unique_tokens >= 5) & (first.unique_tokens <= 13)).all()
    for r in t.records:
        assert np.array_equal(r.request_ids, [0, 1, 2]) and r.kernel_ns == {}
        assert (r.chunk_batch.sum(axis=1) == 3 * 2).all()


def test_cli_triton_backend_records_the_same_routing_as_torch(tmp_path):
    a, b = tmp_path / "torch.npz", tmp_path / "triton.npz"
    extra = ["--dtype", "fp32", "--no-timing"]
    assert main(["--out", str(a), "--device", DEV, "--backend", "torch", *extra, *ARGS]) == 0
    assert main(["--out", str(b), "--device", DEV, "--backend", "triton", *extra, *ARGS]) == 0
    ta, tb = read_trace(a), read_trace(b)
    assert tb.header.capture["backend"] == "triton" and "shared_kernel" in tb.header.capture
    for ra, rb in zip(ta.records, tb.records):
        assert np.array_equal(ra.selected_chunks, rb.selected_chunks)
        assert np.array_equal(ra.chunk_batch, rb.chunk_batch)


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    out = str(tmp_path / "x.npz")
    assert main(["--out", out, "--keep-fraction", "0"]) == 2
    assert "keep-fraction" in capsys.readouterr().err
    assert main(["--out", out, "--preset", "huge", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --preset") and err.count("\n") == 1
    assert (
        main(["--out", out, "--device", "cpu", "--chunk-tokens", "1024", "--shared-tokens", "512"])
        == 1
    )
    assert "--chunk-tokens" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["--out", out, "--device", "cuda"]) == 1
        assert "no CUDA device" in capsys.readouterr().err
    assert main(["--out", out, "--device", "cpu", "--checkpoint", str(tmp_path / "none")]) == 1
    assert "config.json" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_cli_loads_a_checkpoint(tmp_path):
    model = random_model(
        LlamaConfig(**{**TINY.__dict__, "head_dim": 16, "hidden_size": 64}), seed=2
    )
    write_checkpoint(tmp_path / "ckpt", model)
    out = tmp_path / "ck.npz"
    assert (
        main(
            [
                "--out",
                str(out),
                "--device",
                "cpu",
                "--checkpoint",
                str(tmp_path / "ckpt"),
                "--shared-tokens",
                "64",
                "--chunk-tokens",
                "16",
                "--steps",
                "2",
                "--batch",
                "2",
                "-q",
            ]
        )
        == 0
    )
    t = read_trace(out)
    assert t.header.capture["weights"] == "checkpoint" and t.header.n_chunks == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="kernel times need a CUDA GPU")
def test_cli_on_cuda_records_every_kernel_time(tmp_path):
    out = tmp_path / "gpu.npz"
    assert main(["--out", str(out), "--device", "cuda", "--dtype", "bf16", *ARGS]) == 0
    t = read_trace(out)
    assert t.header.capture["timing"] == "cuda_events" and t.header.software.get("cuda")
    for r in t.records:
        assert set(r.kernel_ns) == set(KERNEL_NAMES) and all(v > 0 for v in r.kernel_ns.values())
