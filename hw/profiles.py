"""Kernel profiles: what one kernel implementation achieves on a chip, apart from the chip's spec sheet.

A chip preset (``hw/presets``) holds datasheet numbers: SMs, clock, dense peaks, HBM bandwidth.
How close a kernel gets to them is a property of the *kernel* (cuBLAS streams weights differently
from a copy; the project's Triton shared-attention kernel reaches a different fraction of the
tensor peak than SDPA's FlashAttention), so it lives here, one YAML file per kernel in
``hw/profiles/``, fitted from measurements (``moska-sim calibrate``) per chip:

* ``fixed_ns``: GPU time every launch pays whatever its size: launch ramp, the first loads'
  memory latency (one pipeline fill per kernel, not per wave), the tail.
* ``mem_fraction``: achieved fraction of the chip's HBM bandwidth while streaming.
* ``mma_fraction``: achieved fraction of the dense tensor-core peak while compute-bound, at the
  burst clock (the chip's ``clock: sustained`` scales compute by its measured ratio).
* ``cta_bandwidth_GBps``: the most one thread block streams (its loads in flight / latency);
  0 = no limit. Matters when a launch has few blocks (SDPA over one query matrix per head).
* ``overlap_p``: how well compute and memory overlap: a phase takes
  ``(compute^p + memory^p)^(1/p)``; large p is a perfect overlap (the roofline's max), p = 1 none.
* ``serial_latency_ns``: one dependent load of a loop that waits on each (the merge kernel).
* ``l2_writeback``: the fraction of an L2's worth of dirty lines (left by the kernels before) that
  the kernel's reads evict and write back: ``l2_writeback x min(bytes read, L2 size)`` more HBM
  traffic. A kernel that streams less than the L2 pays for what it displaces, one that streams
  more pays for the whole L2 once.
* ``kv_reuse``: how many row tiles of one KV stream share one HBM read of it through L2 (at most
  the row tiles there are): 1 = every row tile reads the KV itself.

Kernel-wide (not per chip): ``tile_m`` (the row tiles the kernel can pick; rows are padded to the
smallest that holds them, else the largest), ``split`` (how KV is split across blocks: ``none``,
``fa2`` FlashAttention-2's heuristic, or ``programs``: double the splits until the launch has
``split_programs_per_sm`` blocks per SM or a split would hold fewer than ``split_min_tokens``),
``combine`` (a separate split-combine launch after a split KV; no shipped profile uses it: the
launch appears and vanishes as the split count changes, so time would not be monotone in the
batch, and SDPA's decode fits as well without it).

A chip with no entry of its own uses the ``default`` entry, which each file says the origin of.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from hw.errors import HardwareError

PROFILE_DIR = Path(__file__).with_name("profiles")
FAMILIES = ("gemm", "decode_attention", "shared_attention", "merge", "copy")
SPLITS = ("none", "fa2", "programs")
DEFAULT_ENTRY = "default"


@dataclass(frozen=True)
class ProfileParams:
    """The fitted numbers of one kernel on one chip (see the module docstring for each)."""

    fixed_ns: float = 2000.0
    mem_fraction: float = 0.9
    mma_fraction: float = 0.8
    cta_bandwidth_GBps: float = 0.0
    overlap_p: float = 4.0
    serial_latency_ns: float = 0.0
    l2_writeback: float = 0.0
    kv_reuse: float = 1024.0
    heldout: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    source: str = field(default="", compare=False, hash=False)


PARAM_BOUNDS: dict[str, tuple[float, float]] = {
    "fixed_ns": (0.0, 200_000.0),
    "mem_fraction": (0.01, 1.0),
    "mma_fraction": (0.01, 1.0),
    "cta_bandwidth_GBps": (0.0, 10_000.0),
    "overlap_p": (1.0, 64.0),
    "serial_latency_ns": (0.0, 20_000.0),
    "l2_writeback": (0.0, 1.0),
    "kv_reuse": (1.0, 1024.0),
}
FITTABLE = tuple(PARAM_BOUNDS)


@dataclass(frozen=True)
class KernelProfile:
    """One kernel implementation: how it tiles and splits, and its fitted numbers per chip."""

    name: str
    family: str
    kernel: str = ""
    tile_m: tuple[int, ...] = (64,)
    split: str = "none"
    split_programs_per_sm: float = 0.0
    split_min_tokens: int = 256
    combine: bool = False
    chips: tuple[tuple[str, ProfileParams], ...] = ()
    source: str = ""

    def params(self, chip_name: str, profile_key: str = "") -> ProfileParams:
        """The entry for ``profile_key`` or ``chip_name``, else ``default``; error if none."""
        table = dict(self.chips)
        for key in (profile_key, chip_name, DEFAULT_ENTRY):
            if key and key in table:
                return table[key]
        raise HardwareError(f"{PROFILE_DIR / (self.name + '.yaml')}: chips: no entry for chip {chip_name!r} "
                            f"and no {DEFAULT_ENTRY!r} entry")

    def pick_tile(self, rows: float) -> int:
        """The smallest row tile that holds ``rows``, else the largest."""
        for t in sorted(self.tile_m):
            if rows <= t:
                return t
        return max(self.tile_m)

    def with_params(self, chip_key: str, params: ProfileParams) -> KernelProfile:
        """A copy with ``chip_key``'s entry replaced (or added)."""
        table = dict(self.chips)
        table[chip_key] = params
        return dataclasses.replace(self, chips=tuple(sorted(table.items())))


def _check_params(data: Any, where: str) -> ProfileParams:
    if not isinstance(data, dict):
        raise HardwareError(f"{where}: expected a mapping of {', '.join(FITTABLE)}")
    known = {f.name for f in dataclasses.fields(ProfileParams)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            near = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise HardwareError(f"{where}: unknown field {key!r}{hint}")
        if key == "heldout":
            if not isinstance(value, dict):
                raise HardwareError(f"{where}.heldout: expected a mapping")
            out[key] = value
            continue
        if key == "source":
            if not isinstance(value, str):
                raise HardwareError(f"{where}.source: expected text")
            out[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HardwareError(f"{where}.{key}: expected a number, got {value!r}")
        lo, hi = PARAM_BOUNDS[key]
        if not lo <= value <= hi or (key in ("mem_fraction", "mma_fraction") and value <= 0):
            raise HardwareError(f"{where}.{key}: expected a number in [{lo}, {hi}], got {value}")
        out[key] = float(value)
    return ProfileParams(**out)


def profile_from_dict(data: Any, where: str) -> KernelProfile:
    """Validate one profile mapping (one YAML file); errors name the file and the field."""
    if not isinstance(data, dict):
        raise HardwareError(f"{where}: expected a mapping at the top level")
    if data.get("kind") != "kernel-profile":
        raise HardwareError(f"{where}: field 'kind': expected 'kernel-profile', got {data.get('kind')!r}")
    known = {f.name for f in dataclasses.fields(KernelProfile)} | {"kind"}
    for key in data:
        if key not in known:
            near = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise HardwareError(f"{where}: unknown field {key!r}{hint}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise HardwareError(f"{where}: field 'name': expected the profile's name")
    family = data.get("family")
    if family not in FAMILIES:
        raise HardwareError(f"{where}: field 'family': expected one of {', '.join(FAMILIES)}, got {family!r}")
    tiles = data.get("tile_m", [64])
    if isinstance(tiles, int):
        tiles = [tiles]
    if not isinstance(tiles, list) or not tiles or any(isinstance(t, bool) or not isinstance(t, int) or t < 1
                                                        for t in tiles):
        raise HardwareError(f"{where}: field 'tile_m': expected a list of whole numbers >= 1, got {tiles!r}")
    split = data.get("split", "none")
    if split not in SPLITS:
        raise HardwareError(f"{where}: field 'split': expected one of {', '.join(SPLITS)}, got {split!r}")
    pps = data.get("split_programs_per_sm", 0.0)
    if isinstance(pps, bool) or not isinstance(pps, (int, float)) or pps < 0:
        raise HardwareError(f"{where}: field 'split_programs_per_sm': expected a number >= 0, got {pps!r}")
    if split == "programs" and pps <= 0:
        raise HardwareError(f"{where}: field 'split_programs_per_sm': split 'programs' needs a number > 0")
    smt = data.get("split_min_tokens", 256)
    if isinstance(smt, bool) or not isinstance(smt, int) or smt < 1:
        raise HardwareError(f"{where}: field 'split_min_tokens': expected a whole number >= 1, got {smt!r}")
    combine = data.get("combine", False)
    if not isinstance(combine, bool):
        raise HardwareError(f"{where}: field 'combine': expected true or false, got {combine!r}")
    chips = data.get("chips")
    if not isinstance(chips, dict) or not chips:
        raise HardwareError(f"{where}: field 'chips': expected a mapping chip -> fitted numbers")
    table = tuple(sorted((str(k), _check_params(v, f"{where}: chips.{k}")) for k, v in chips.items()))
    for key in ("kernel", "source"):
        if not isinstance(data.get(key, ""), str):
            raise HardwareError(f"{where}: field {key!r}: expected text")
    return KernelProfile(name=name, family=family, kernel=data.get("kernel", ""), tile_m=tuple(sorted(tiles)),
                         split=split, split_programs_per_sm=float(pps), split_min_tokens=smt, combine=combine,
                         chips=table, source=data.get("source", ""))


def profile_to_dict(profile: KernelProfile) -> dict[str, Any]:
    """The YAML mapping of ``profile`` (the inverse of profile_from_dict)."""
    chips: dict[str, Any] = {}
    for key, p in profile.chips:
        entry: dict[str, Any] = {f: float(f"{getattr(p, f):.6g}") for f in FITTABLE}
        if p.source:
            entry["source"] = p.source
        if p.heldout:
            entry["heldout"] = p.heldout
        chips[key] = entry
    return {"kind": "kernel-profile", "name": profile.name, "family": profile.family, "kernel": profile.kernel,
            "tile_m": list(profile.tile_m), "split": profile.split,
            "split_programs_per_sm": profile.split_programs_per_sm, "split_min_tokens": profile.split_min_tokens,
            "combine": profile.combine, "source": profile.source, "chips": chips}


@cache
def _profiles() -> dict[str, KernelProfile]:
    out: dict[str, KernelProfile] = {}
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise HardwareError(f"{path}: malformed YAML: {str(exc).splitlines()[0]}") from None
        prof = profile_from_dict(data, str(path))
        if prof.name in out:
            raise HardwareError(f"{path}: field 'name': profile {prof.name!r} is defined twice")
        out[prof.name] = prof
    return out


def available_profiles() -> list[str]:
    """Names of the shipped kernel profiles (hw/profiles/*.yaml)."""
    return sorted(_profiles())


def load_profile(name: str) -> KernelProfile:
    """The kernel profile ``name``; a clear error naming the known ones."""
    profiles = _profiles()
    if name not in profiles:
        near = difflib.get_close_matches(name, list(profiles), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise HardwareError(f"kernel profile: unknown {name!r}{hint}; known: {', '.join(sorted(profiles))}")
    return profiles[name]


# What the simulator runs when a system names no profile: cuBLAS GEMMs, the project's own Triton
# attention and merge kernels (MoSKA's shared attention is that kernel), a plain device copy.
DEFAULT_PROFILES: dict[str, str] = {
    "gemm": "cublas",
    "gemm-fp8": "cublas-fp8",
    "decode_attention": "triton-moska-decode",
    "shared_attention": "triton-moska-shared",
    "merge": "triton-moska-merge",
    "copy": "torch-copy",
}


def default_profile_name(family: str, dtype: str = "") -> str:
    """The profile the cost model uses for ``family`` (and GEMM ``dtype``) unless told otherwise."""
    if family == "gemm" and dtype == "fp8":
        return DEFAULT_PROFILES["gemm-fp8"]
    return DEFAULT_PROFILES[family]


def clear_cache() -> None:
    """Forget loaded profiles (after a calibration writes a file)."""
    _profiles.cache_clear()


__all__ = [
    "DEFAULT_PROFILES",
    "FAMILIES",
    "FITTABLE",
    "PARAM_BOUNDS",
    "PROFILE_DIR",
    "KernelProfile",
    "ProfileParams",
    "available_profiles",
    "clear_cache",
    "default_profile_name",
    "load_profile",
    "profile_from_dict",
    "profile_to_dict",
]
