"""Hardware specs as frozen dataclasses, loaded from the YAML presets in ``hw/presets/``.

A *chip* is one accelerator package; a cluster node in the simulator is one chip. A chip
preset holds datasheet numbers (each preset file cites its source): SMs, the clock the dense
peaks are quoted at, tensor peaks, HBM bandwidth and capacity, on-chip buffers, plus the measured
ratio of sustained to burst compute and which clock to price at. What a kernel *achieves* of
those numbers belongs to the kernel and lives in ``hw/profiles`` (``hw.profiles``). The legacy
``mma_efficiency``, ``mem_efficiency``, ``launch_overhead_ns`` and ``mem_latency_ns`` fields are
kept so old presets and configs still load; ``hw.compute`` does not read them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from hw.errors import HardwareError

PRESET_DIR = Path(__file__).with_name("presets")
DTYPE_BYTES: dict[str, float] = {"fp8": 1.0, "bf16": 2.0, "fp16": 2.0, "fp32": 4.0}


def dtype_bytes(dtype: str, field_name: str = "dtype") -> float:
    """Bytes per element of ``dtype``; a clear error for an unknown one."""
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise HardwareError(
            f"{field_name}: expected one of {', '.join(DTYPE_BYTES)}, got {dtype!r}"
        ) from None


@dataclass(frozen=True)
class ChipSpec:
    """One accelerator: clock, SMs, tensor throughput per dtype, HBM, on-chip buffers."""

    name: str
    clock_ghz: float
    sm_count: int
    peak_tflops: dict[str, float]  # dense tensor-core TFLOP/s per dtype (bf16, fp8)
    hbm_bandwidth_GBps: float  # GB/s, 1 GB = 1e9 B
    hbm_capacity_GiB: float
    smem_per_sm_KiB: float
    l2_MiB: float
    sfu_ops_per_cycle_per_sm: int = 16  # exp2 throughput of the special-function units
    mma_min_m: int = 64  # smallest M a tensor-core instruction computes (rows are padded to it)
    gemm_tile_m: int = 128
    gemm_tile_n: int = 128
    attn_tile_m: int = 128  # query rows per attention thread block
    attn_block_n: int = 128  # KV tokens per inner-loop step
    sm_max_bandwidth_GBps: float = 0.0  # the most one SM can stream; 0 = 2.5x its fair share
    mem_latency_ns: float = 600.0  # first-byte latency of an HBM load (pipeline fill)
    launch_overhead_ns: float = 2500.0  # kernel launch + drain, per launch (no CUDA graphs)
    mma_efficiency: float = 0.8  # sustained fraction of peak tensor throughput
    mem_efficiency: float = 0.9  # sustained fraction of peak HBM bandwidth
    kv_splits_per_sm: int = 2  # legacy: unused by hw.compute (kernel profiles say how KV splits)
    # What clock compute runs at: "burst" (a GPU idle before the kernel, SM clock at its maximum) or
    # "sustained" (continuous load at the power limit, where the SM clock falls; HBM does not).
    clock: str = "sustained"
    sustained_compute_ratio: float = 1.0  # measured sustained / burst compute throughput
    profile_key: str = ""  # kernel-profile entry to use (default: this chip's name, else 'default')
    # which kernel prices each op family here (gemm, gemm-fp8, decode_attention,
    # shared_attention, merge, copy -> a profile name); families not named use the default
    kernel_profiles: dict[str, str] = dataclasses.field(default_factory=dict)
    source: str = ""
    notes: str = ""

    def __hash__(self) -> int:  # peak_tflops is a dict; hash its items with the rest
        # NOTE: for performance: cached (every kernel_cost lookup hashes the chip); the
        # spec is frozen, and peak_tflops is never mutated after loading.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(
                tuple(sorted(v.items())) if isinstance(v, dict) else v
                for v in (getattr(self, f.name) for f in dataclasses.fields(self))
            ))
            object.__setattr__(self, "_hash", cached)
        return cached

    @property
    def clock_hz(self) -> float:
        return self.clock_ghz * 1e9

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype`` (fp32 accumulate); error if the chip lacks it."""
        if dtype == "fp16":
            dtype = "bf16"
        if dtype not in self.peak_tflops:
            raise HardwareError(
                f"chip {self.name}: no peak_tflops for dtype {dtype!r} "
                f"(has {', '.join(sorted(self.peak_tflops))})"
            )
        return self.peak_tflops[dtype] * 1e12

    def flops_per_cycle_per_sm(self, dtype: str) -> float:
        return self.peak_flops(dtype) / (self.sm_count * self.clock_hz)

    @property
    def hbm_bytes_per_s(self) -> float:
        return self.hbm_bandwidth_GBps * 1e9

    @property
    def hbm_bytes_per_cycle(self) -> float:
        return self.hbm_bytes_per_s / self.clock_hz

    @property
    def sm_bytes_per_cycle(self) -> float:
        per_sm = self.sm_max_bandwidth_GBps or 2.5 * self.hbm_bandwidth_GBps / self.sm_count
        return per_sm * 1e9 / self.clock_hz

    @property
    def hbm_capacity_bytes(self) -> int:
        return int(self.hbm_capacity_GiB * 2**30)

    def ridge_point(self, dtype: str) -> float:
        """FLOP per byte where the roofline turns from memory- to compute-bound."""
        return self.peak_flops(dtype) / self.hbm_bytes_per_s


@dataclass(frozen=True)
class LinkSpec:
    """A point-to-point link as a collective library (NCCL send/recv) achieves it.

    ``bandwidth_GBps``: achieved bandwidth per direction for large messages; ``latency_ns``:
    one-way wire and switch latency (what the fabric charges per hop); ``fixed_ns``: the
    library's per-message cost on top (kernel launch, handshake, protocol), paid once per
    message; ``spec_bandwidth_GBps``: the datasheet figure, for reference.
    """

    name: str
    bandwidth_GBps: float
    latency_ns: float
    source: str = ""
    fixed_ns: float = 0.0
    spec_bandwidth_GBps: float = 0.0
    fit: str = ""  # how fixed_ns and bandwidth_GBps were fitted, and their held-out error

    @property
    def bytes_per_ns(self) -> float:
        return self.bandwidth_GBps  # 1 GB/s = 1 B/ns


_CHIP_FIELDS = {f.name: f for f in dataclasses.fields(ChipSpec)}
_LINK_FIELDS = {f.name: f for f in dataclasses.fields(LinkSpec)}
_POSITIVE = {
    "clock_ghz", "sm_count", "hbm_bandwidth_GBps", "hbm_capacity_GiB", "smem_per_sm_KiB",
    "l2_MiB", "sfu_ops_per_cycle_per_sm", "mma_min_m", "gemm_tile_m", "gemm_tile_n",
    "attn_tile_m", "attn_block_n", "kv_splits_per_sm", "bandwidth_GBps",
}
_NON_NEGATIVE = {"sm_max_bandwidth_GBps", "mem_latency_ns", "launch_overhead_ns", "latency_ns", "fixed_ns",
                 "spec_bandwidth_GBps"}
CLOCKS = ("burst", "sustained")
_FRACTIONS = {"mma_efficiency", "mem_efficiency", "sustained_compute_ratio"}


def _check_fields(kind: str, name: str, data: dict[str, Any], fields: dict, where: str) -> dict:
    """Validate a raw preset mapping against a dataclass's fields; one-line errors."""
    import difflib

    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise HardwareError(f"{where}: {kind} {name}: unknown field {key!r}{hint}")
        out[key] = value
    for key, f in fields.items():
        if key not in out and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise HardwareError(f"{where}: {kind} {name}: missing required field {key!r}")
    for key, value in out.items():
        if key == "clock":
            if value not in CLOCKS:
                raise HardwareError(f"{where}: {kind} {name}: clock: expected one of {', '.join(CLOCKS)}, "
                                    f"got {value!r}")
            continue
        if key in ("name", "source", "notes", "profile_key", "fit"):
            if not isinstance(value, str):
                raise HardwareError(f"{where}: {kind} {name}: {key}: expected text, got {value!r}")
            continue
        if key == "kernel_profiles":
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise HardwareError(f"{where}: {kind} {name}: kernel_profiles: expected a mapping "
                                    f"op family -> kernel profile name, got {value!r}")
            out[key] = dict(value)
            continue
        if key == "peak_tflops":
            if not isinstance(value, dict) or not value:
                raise HardwareError(
                    f"{where}: {kind} {name}: peak_tflops: expected a mapping dtype -> TFLOP/s"
                )
            for dt, tf in value.items():
                dtype_bytes(dt, f"{where}: {kind} {name}: peak_tflops key")
                if isinstance(tf, bool) or not isinstance(tf, (int, float)) or tf <= 0:
                    raise HardwareError(
                        f"{where}: {kind} {name}: peak_tflops.{dt}: expected a number > 0, "
                        f"got {tf!r}"
                    )
            out[key] = {str(k): float(v) for k, v in value.items()}
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HardwareError(f"{where}: {kind} {name}: {key}: expected a number, got {value!r}")
        if key in _POSITIVE and value <= 0:
            raise HardwareError(f"{where}: {kind} {name}: {key}: expected a number > 0, got {value}")
        if key in _NON_NEGATIVE and value < 0:
            raise HardwareError(f"{where}: {kind} {name}: {key}: expected a number >= 0, got {value}")
        if key in _FRACTIONS and not 0 < value <= 1:
            raise HardwareError(f"{where}: {kind} {name}: {key}: expected a number in (0, 1], got {value}")
        if fields[key].type in ("int", int) and int(value) != value:
            raise HardwareError(f"{where}: {kind} {name}: {key}: expected a whole number, got {value}")
        out[key] = int(value) if fields[key].type in ("int", int) else float(value)
    return out


def chip_from_dict(data: dict[str, Any], where: str = "<dict>") -> ChipSpec:
    """Build a ChipSpec from a mapping, validating every field."""
    if not isinstance(data, dict):
        raise HardwareError(f"{where}: expected a mapping of chip fields, got {type(data).__name__}")
    name = str(data.get("name", "?"))
    return ChipSpec(**_check_fields("chip", name, data, _CHIP_FIELDS, where))


def link_from_dict(data: dict[str, Any], where: str = "<dict>") -> LinkSpec:
    """Build a LinkSpec from a mapping, validating every field."""
    if not isinstance(data, dict):
        raise HardwareError(f"{where}: expected a mapping of link fields, got {type(data).__name__}")
    name = str(data.get("name", "?"))
    return LinkSpec(**_check_fields("link", name, data, _LINK_FIELDS, where))


def _read_preset_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HardwareError(f"{path}: malformed YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise HardwareError(f"{path}: expected a mapping at the top level")
    return data


@cache
def _chip_presets() -> dict[str, ChipSpec]:
    presets: dict[str, ChipSpec] = {}
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        data = _read_preset_file(path)
        if data.get("kind") != "chip":
            continue
        body = {k: v for k, v in data.items() if k != "kind"}
        body.setdefault("name", path.stem)
        presets[body["name"]] = chip_from_dict(body, str(path))
    return presets


@cache
def _link_presets() -> dict[str, LinkSpec]:
    data = _read_preset_file(PRESET_DIR / "links.yaml")
    return {
        name: link_from_dict({"name": name, **body}, f"{PRESET_DIR / 'links.yaml'}: {name}")
        for name, body in data.get("links", {}).items()
    }


def available_chips() -> list[str]:
    """Names of the chip presets shipped in hw/presets."""
    return sorted(_chip_presets())


def available_links() -> list[str]:
    return sorted(_link_presets())


def _unknown(kind: str, name: str, known: list[str]) -> HardwareError:
    import difflib

    near = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return HardwareError(f"{kind}: unknown preset {name!r}{hint}; known: {', '.join(known)}")


def load_chip(name: str, overrides: dict[str, Any] | None = None) -> ChipSpec:
    """The chip preset ``name``, with fields replaced by ``overrides`` (validated)."""
    presets = _chip_presets()
    if name not in presets:
        raise _unknown("chip", name, available_chips())
    chip = presets[name]
    if overrides:
        merged = {**dataclasses.asdict(chip), **overrides}
        chip = chip_from_dict(merged, f"chip {name} overrides")
    return chip


def load_link(name: str) -> LinkSpec:
    """The link preset ``name`` (hw/presets/links.yaml)."""
    presets = _link_presets()
    if name not in presets:
        raise _unknown("link", name, available_links())
    return presets[name]


def chip_to_dict(chip: ChipSpec) -> dict[str, Any]:
    return dataclasses.asdict(chip)


__all__ = [
    "ChipSpec",
    "LinkSpec",
    "available_chips",
    "available_links",
    "chip_from_dict",
    "chip_to_dict",
    "dtype_bytes",
    "field",
    "link_from_dict",
    "load_chip",
    "load_link",
]
