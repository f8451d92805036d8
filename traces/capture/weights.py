"""Load a local Hugging Face Llama checkpoint (config.json + *.safetensors, single file or sharded with
model.safetensors.index.json) into LlamaForCausalLM. Local files only: this never downloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from traces.capture.model import LlamaConfig, LlamaForCausalLM


class CheckpointError(ValueError):
    """The checkpoint folder is missing, incomplete or does not match the model; one-line message."""


def config_from_hf(data: dict[str, Any], source: str = "config.json") -> LlamaConfig:
    """LlamaConfig from a Hugging Face LlamaConfig JSON object."""
    try:
        hidden = int(data["hidden_size"])
        q_heads = int(data["num_attention_heads"])
        return LlamaConfig(
            vocab_size=int(data["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(data["intermediate_size"]),
            num_layers=int(data["num_hidden_layers"]),
            q_heads=q_heads,
            kv_heads=int(data.get("num_key_value_heads") or q_heads),
            head_dim=int(data.get("head_dim") or hidden // q_heads),
            rope_theta=float(data.get("rope_theta", 10_000.0)),
            rms_norm_eps=float(data.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            rope_scaling=data.get("rope_scaling"),
            name=str(data.get("_name_or_path") or data.get("model_type") or "checkpoint"),
        )
    except KeyError as exc:
        raise CheckpointError(f"{source}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: {exc}") from None


def read_config(folder: str | Path) -> LlamaConfig:
    """Parse folder/config.json."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{path}: not found (a Hugging Face checkpoint folder needs config.json)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    if data.get("model_type", "llama") != "llama":
        raise CheckpointError(f"{path}: model_type {data.get('model_type')!r} is not 'llama'")
    return config_from_hf(data, str(path))


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index}: unreadable index ({exc})") from None
        files = sorted({folder / name for name in weight_map.values()})
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no *.safetensors weights found")
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f}: listed in the index but missing")
    return files


def load_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint's safetensors files (on CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in _weight_files(Path(folder)):
        try:
            part = load_file(str(f))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{f}: unreadable safetensors file ({exc})") from None
        dup = set(part) & set(state)
        if dup:
            raise CheckpointError(f"{f}: tensor {min(dup)!r} appears in more than one file")
        state.update(part)
    return state


def load_llama(
    folder: str | Path,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    num_layers: int | None = None,
) -> LlamaForCausalLM:
    """Build LlamaForCausalLM from a local checkpoint; num_layers keeps only the first layers."""
    folder = Path(folder)
    cfg = read_config(folder)
    if num_layers is not None:
        if not 1 <= num_layers <= cfg.num_layers:
            raise CheckpointError(
                f"{folder}: asked for {num_layers} layers, the checkpoint has {cfg.num_layers}"
            )
        cfg = cfg.with_layers(num_layers)
    state = load_state_dict(folder)
    state = {
        k: v
        for k, v in state.items()
        if not k.startswith("model.layers.") or int(k.split(".")[2]) < cfg.num_layers
    }
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    model = LlamaForCausalLM.build(cfg, dtype, device)
    expected = {
        k: v
        for k, v in model.state_dict().items()
        if not (cfg.tie_word_embeddings and k == "lm_head.weight")
    }
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(
            f"{folder}: tensor {missing[0]!r} missing ({len(missing)} missing in all)"
        )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"{folder}: unexpected tensor {unexpected[0]!r} (not a Llama layout?)"
        )
    for name, t in expected.items():
        if tuple(state[name].shape) != tuple(t.shape):
            raise CheckpointError(
                f"{folder}: tensor {name!r} has shape {tuple(state[name].shape)}, "
                f"config.json implies {tuple(t.shape)}"
            )
    with torch.no_grad():
        for name, t in expected.items():
            t.copy_(state[name].to(dtype))
    return model
