"""The measurement file of one serving run (``*.serving.json``), read and written with the standard
library and numpy only (``bench/validate_e2e.py`` reads it without torch). Format in docs/validation.md.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

FORMAT = "moska-serving-run"
FORMAT_VERSION = 1
REQUEST_COLUMNS = ("id", "unique_tokens", "output_tokens", "arrival_s", "admit_s",
                   "first_token_s", "done_s", "generated")
STEP_COLUMNS = ("start_s", "end_s", "batch")
REQUIRED = ("format", "format_version", "deployment", "engine", "load", "device", "software",
            "summary", "steps", "requests")


class MeasurementError(ValueError):
    """A measurement file is unreadable or malformed; the message names the file and the field."""


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 9)  # NaN -> null


def to_document(deployment: dict[str, Any], engine: dict[str, Any], load: dict[str, Any],
                device: dict[str, Any], software: dict[str, str], summary: dict[str, Any],
                steps: tuple[list[float], list[float], list[int]],
                requests: list[Any], notes: str = "") -> dict[str, Any]:
    """The JSON document of one run (requests: objects with the REQUEST_COLUMNS attributes)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "deployment": deployment,
        "engine": engine,
        "load": load,
        "device": device,
        "software": software,
        "summary": summary,
        "notes": notes,
        "steps": {"columns": list(STEP_COLUMNS),
                  "rows": [[_num(a), _num(b), int(c)] for a, b, c in zip(*steps)]},
        "requests": {"columns": list(REQUEST_COLUMNS),
                     "rows": [[int(r.id), int(r.unique_tokens), int(r.output_tokens),
                               _num(r.arrival_s), _num(r.admit_s), _num(r.first_token_s),
                               _num(r.done_s), int(r.generated)] for r in requests]},
    }


def write_measurement(path: str | Path, doc: dict[str, Any]) -> Path:
    """Write atomically (temp file in the same folder, then rename); sorted keys, one line per row."""
    check_document(doc, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def check_document(doc: Any, source: str) -> None:
    """Raise MeasurementError on a missing field, a wrong version or mismatched columns."""
    if not isinstance(doc, dict):
        raise MeasurementError(f"{source}: top level must be a JSON object")
    for key in REQUIRED:
        if key not in doc:
            raise MeasurementError(f"{source}: missing field {key!r}")
    if doc["format"] != FORMAT:
        raise MeasurementError(f"{source}: field 'format': expected {FORMAT!r}, got {doc['format']!r}")
    if not isinstance(doc["format_version"], int) or doc["format_version"] > FORMAT_VERSION:
        raise MeasurementError(f"{source}: field 'format_version': {doc['format_version']!r} is not "
                               f"a version this reader knows (up to {FORMAT_VERSION})")
    for key, cols in (("steps", STEP_COLUMNS), ("requests", REQUEST_COLUMNS)):
        part = doc[key]
        if not isinstance(part, dict) or list(part.get("columns", [])) != list(cols):
            raise MeasurementError(f"{source}: field '{key}.columns': expected {list(cols)}")
        for i, row in enumerate(part.get("rows", [])):
            if len(row) != len(cols):
                raise MeasurementError(f"{source}: field '{key}.rows[{i}]': {len(row)} values, "
                                       f"expected {len(cols)}")
    for key in ("throughput_tokens_per_s", "tpot_ms", "ttft_ms"):
        if key not in doc["summary"]:
            raise MeasurementError(f"{source}: field 'summary.{key}' is missing")


def read_measurement(path: str | Path) -> dict[str, Any]:
    """Read and check one measurement file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MeasurementError(f"{path}: not a readable JSON file ({e})") from e
    check_document(doc, str(path))
    return doc
