"""Write a fitted chip as a NEW preset YAML (``kind: chip``), never replacing an existing one by accident.

The file holds every field of the base chip in ChipSpec order with the fitted factors replaced, and
a ``source`` line naming the trace and the errors before and after. It is validated by reading it
back with ``hw.specs.chip_from_dict`` before it is moved into place (atomically).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from hw import specs
from hw.errors import HardwareError
from hw.specs import ChipSpec, chip_from_dict


class PresetExistsError(ValueError):
    """The target preset file or preset name already exists and --force was not given."""


def preset_body(chip: ChipSpec, name: str, source: str) -> dict[str, Any]:
    """The YAML mapping of ``chip`` renamed to ``name`` with ``source`` replaced (kind first)."""
    body: dict[str, Any] = {"kind": "chip"}
    for f in dataclasses.fields(ChipSpec):
        value = getattr(chip, f.name)
        if f.name == "name":
            value = name
        elif f.name == "source":
            value = source
        elif isinstance(value, dict):
            value = dict(value)
        elif isinstance(value, float):
            value = float(f"{value:.6g}")  # readable, and well inside the fit's own precision
        body[f.name] = value
    return body


def _names_in(preset_dir: Path) -> dict[str, Path]:
    """Chip preset name -> file, for every chip preset in ``preset_dir``."""
    out: dict[str, Path] = {}
    for path in sorted(preset_dir.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("kind") == "chip":
            out[str(data.get("name", path.stem))] = path
    return out


def write_preset(chip: ChipSpec, name: str, source: str, preset_dir: Path, force: bool = False,
                 header: str = "") -> Path:
    """Write ``preset_dir/<name>.yaml``; refuse to replace a file or shadow a preset name unless ``force``."""
    preset_dir = Path(preset_dir)
    target = preset_dir / f"{name}.yaml"
    if not force:
        if target.exists():
            raise PresetExistsError(f"{target}: already exists; pass --force to overwrite, or --name NEW")
        clash = _names_in(preset_dir).get(name) if preset_dir.is_dir() else None
        if clash is not None:
            raise PresetExistsError(f"{clash}: already defines chip preset {name!r}; pass --name NEW")
    body = preset_body(chip, name, source)
    try:
        chip_from_dict({k: v for k, v in body.items() if k != "kind"}, str(target))
    except HardwareError as exc:
        raise ValueError(f"fitted chip does not validate: {exc}") from None
    text = "\n".join(f"# {line}".rstrip() for line in header.splitlines()) + "\n" if header else ""
    text += yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=100)
    preset_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=preset_dir)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    specs._chip_presets.cache_clear()  # the next load_chip sees the new preset
    return target
