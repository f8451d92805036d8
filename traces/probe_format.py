"""The moska probe file: measured GPU kernel times of a standard grid, one JSON document.

``moska-sim probe`` (traces.capture.probe) writes it; ``hw``'s kernel profiles and
``docs/fidelity.md`` are fitted and checked against it. JSON because the files are small
(a few hundred records), diffable, and readable without numpy.

Layout (version 1)::

    {"format": "moska-probe", "version": 1,
     "device": {"name": ..., "chip_hint": ..., "sm_count": ..., "l2_bytes": ..., ...},
     "env": {"torch": ..., "triton": ..., "cuda": ..., "driver": ..., "created_at": ...},
     "method": {"repeats": 20, "warmup": 3, "l2_flush_bytes": ..., "timer": "cuda-events", ...},
     "records": [
        {"family": "gemm", "kernel": "cublas", "clock": "burst", "dtype": "bf16",
         "shape": {"m": 1, "n": 4096, "k": 4096}, "median_ns": ..., "p10_ns": ..., "p90_ns": ...,
         "n": 20, "sm_clock_mhz": ..., "power_w": ..., "note": ""}, ...]}

``family`` is one of FAMILIES; ``shape`` holds the fields SHAPE_FIELDS names for that family,
all whole numbers; ``clock`` says whether the GPU was idle before the grid (``burst``) or kept
under continuous load (``sustained``). Times are GPU time between CUDA events, L2 flushed before
every call, the median over ``n`` calls. ``sm_clock_mhz`` and ``power_w`` are the medians of
NVML samples taken while the record was timed (None when NVML was not available).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "moska-probe"
VERSION = 1
CLOCKS = ("burst", "sustained")
# family -> the shape fields its records carry (every one a whole number >= 1)
SHAPE_FIELDS: dict[str, tuple[str, ...]] = {
    "copy": ("bytes",),  # device-to-device copy of `bytes` (read once, written once)
    "gemm": ("m", "n", "k"),  # C[m,n] = A[m,k] @ W[k,n]
    "decode_attention": ("batch", "kv_tokens", "q_heads", "kv_heads", "head_dim"),
    "shared_attention": ("batch", "kv_tokens", "chunk_tokens", "top_k", "q_heads", "kv_heads", "head_dim"),
    "merge": ("batch", "q_heads", "kv_heads", "head_dim", "shared_parts", "unique_parts"),
    "router": ("batch", "n_chunks", "top_k", "q_heads", "kv_heads", "head_dim"),
}
FAMILIES = tuple(SHAPE_FIELDS)
DTYPES = ("fp8", "bf16", "fp16", "fp32")


class ProbeError(ValueError):
    """A malformed probe file; the message names the file and the field."""


@dataclass(frozen=True)
class ProbeRecord:
    """One timed kernel of the grid."""

    family: str
    kernel: str  # which implementation: cublas, triton-moska, sdpa-flash, torch-copy, ...
    clock: str
    dtype: str
    shape: dict[str, int]
    median_ns: float
    p10_ns: float
    p90_ns: float
    n: int
    sm_clock_mhz: float | None = None
    power_w: float | None = None
    note: str = ""

    def key(self) -> tuple:
        """What identifies the measurement (two records with one key are repeats)."""
        return (self.family, self.kernel, self.clock, self.dtype, tuple(sorted(self.shape.items())))


@dataclass
class ProbeFile:
    """A whole probe file: device, environment, method and the records."""

    device: dict[str, Any]
    env: dict[str, Any]
    method: dict[str, Any]
    records: list[ProbeRecord] = field(default_factory=list)
    version: int = VERSION

    def select(self, family: str | None = None, kernel: str | None = None,
               clock: str | None = None) -> list[ProbeRecord]:
        """The records matching every filter given."""
        return [r for r in self.records
                if (family is None or r.family == family) and (kernel is None or r.kernel == kernel)
                and (clock is None or r.clock == clock)]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": self.version, "device": self.device, "env": self.env,
                "method": self.method, "records": [asdict(r) for r in self.records]}


def _num(where: str, value: Any, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProbeError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def record_from_dict(data: Any, where: str) -> ProbeRecord:
    """Validate one record mapping; errors name ``where`` (file and record index) and the field."""
    if not isinstance(data, dict):
        raise ProbeError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f for f in ProbeRecord.__dataclass_fields__}
    for key in data:
        if key not in known:
            raise ProbeError(f"{where}: unknown field {key!r}")
    for key in ("family", "kernel", "clock", "dtype", "shape", "median_ns", "p10_ns", "p90_ns", "n"):
        if key not in data:
            raise ProbeError(f"{where}: missing field {key!r}")
    family = data["family"]
    if family not in SHAPE_FIELDS:
        raise ProbeError(f"{where}.family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    if data["clock"] not in CLOCKS:
        raise ProbeError(f"{where}.clock: expected one of {', '.join(CLOCKS)}, got {data['clock']!r}")
    if data["dtype"] not in DTYPES:
        raise ProbeError(f"{where}.dtype: expected one of {', '.join(DTYPES)}, got {data['dtype']!r}")
    if not isinstance(data["kernel"], str) or not data["kernel"]:
        raise ProbeError(f"{where}.kernel: expected a non-empty name, got {data['kernel']!r}")
    shape = data["shape"]
    if not isinstance(shape, dict):
        raise ProbeError(f"{where}.shape: expected a mapping, got {shape!r}")
    want = SHAPE_FIELDS[family]
    if set(shape) != set(want):
        raise ProbeError(f"{where}.shape: a {family} record has fields {', '.join(want)}, got "
                         f"{', '.join(sorted(shape)) or 'none'}")
    for k, v in shape.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ProbeError(f"{where}.shape.{k}: expected a whole number >= 1, got {v!r}")
    times = {k: _num(f"{where}.{k}", data[k]) for k in ("median_ns", "p10_ns", "p90_ns")}
    if not 0 < times["p10_ns"] <= times["median_ns"] <= times["p90_ns"]:
        raise ProbeError(f"{where}: expected 0 < p10_ns <= median_ns <= p90_ns, got "
                         f"{times['p10_ns']}, {times['median_ns']}, {times['p90_ns']}")
    n = data["n"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ProbeError(f"{where}.n: expected a whole number >= 1, got {n!r}")
    note = data.get("note", "")
    if not isinstance(note, str):
        raise ProbeError(f"{where}.note: expected text, got {note!r}")
    return ProbeRecord(
        family=family, kernel=data["kernel"], clock=data["clock"], dtype=data["dtype"],
        shape={k: int(shape[k]) for k in want}, n=n, note=note,
        sm_clock_mhz=_num(f"{where}.sm_clock_mhz", data.get("sm_clock_mhz"), allow_none=True),
        power_w=_num(f"{where}.power_w", data.get("power_w"), allow_none=True),
        **times,  # type: ignore[arg-type]
    )


def probe_from_dict(data: Any, where: str = "<probe>") -> ProbeFile:
    """Validate a whole probe document (format, version, sections, every record)."""
    if not isinstance(data, dict):
        raise ProbeError(f"{where}: expected a JSON object at the top level")
    if data.get("format") != FORMAT:
        raise ProbeError(f"{where}: field 'format': expected {FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != VERSION:
        raise ProbeError(f"{where}: field 'version': this reader knows version {VERSION}, got "
                         f"{data.get('version')!r}")
    for key in ("device", "env", "method"):
        if not isinstance(data.get(key), dict):
            raise ProbeError(f"{where}: field {key!r}: expected a mapping")
    if not isinstance(data["device"].get("name"), str):
        raise ProbeError(f"{where}: field 'device.name': expected the GPU's name")
    recs = data.get("records")
    if not isinstance(recs, list):
        raise ProbeError(f"{where}: field 'records': expected a list")
    records = [record_from_dict(r, f"{where}: records[{i}]") for i, r in enumerate(recs)]
    return ProbeFile(device=data["device"], env=data["env"], method=data["method"], records=records)


def read_probe(path: str | Path) -> ProbeFile:
    """Read and validate a probe file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ProbeError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ProbeError(f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    return probe_from_dict(data, str(path))


def write_probe(probe: ProbeFile, path: str | Path) -> Path:
    """Write ``probe`` (validated first) as indented JSON, one record per line; returns the path."""
    path = Path(path)
    doc = probe.to_dict()
    probe_from_dict(json.loads(json.dumps(doc)), str(path))  # never write what cannot be read back
    head = {k: v for k, v in doc.items() if k != "records"}
    lines = json.dumps(head, indent=1, sort_keys=True)[:-2]  # drop the closing "\n}"
    body = ",\n".join("  " + json.dumps(r, sort_keys=True) for r in doc["records"])
    text = lines + ',\n "records": [\n' + body + "\n ]\n}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


__all__ = [
    "CLOCKS",
    "FAMILIES",
    "FORMAT",
    "SHAPE_FIELDS",
    "VERSION",
    "ProbeError",
    "ProbeFile",
    "ProbeRecord",
    "probe_from_dict",
    "read_probe",
    "record_from_dict",
    "write_probe",
]
