"""What ``moska-sim compare`` runs: labelled, validated configs, from config files or from
one variants file (``base`` + ``variants``), with errors that name the file and field.

A variants file:

```yaml
name: paper-vs-h100            # optional: names the results folder (default: file stem)
base: ../paper.yaml            # a config path (relative to this file) or an inline config
overrides: {run.requests: 64}  # optional: dotted-path overrides applied to every variant
load_sweep: {points: 4}        # optional: see sim.studies.sweep.SweepSettings
variants:
  - label: moska               # [A-Za-z0-9._-]+, unique; names runs/<label>/
    overrides: {}              # dotted-path overrides of this variant (after the common ones)
```
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.config import ConfigError, Issue, config_from_dict, load_config, with_overrides
from sim.config.errors import FieldPath, dotted
from sim.config.fields import suggest
from sim.config.loader import read_text_file
from sim.config.schema import ExperimentConfig
from sim.config.yaml_source import LoadedYaml, load_yaml_text
from sim.studies.sweep import SweepSettings
from sim.units import describe

LABEL_RE = re.compile(r"[A-Za-z0-9._-]+")
TOP_KEYS = ("name", "base", "overrides", "load_sweep", "variants")
VARIANT_KEYS = ("label", "overrides")


@dataclass(frozen=True)
class Variant:
    """One column of the comparison: a label and the resolved config it runs."""

    label: str
    config: ExperimentConfig
    source: str


@dataclass(frozen=True)
class CompareInputs:
    """Everything the command line or a variants file asks to compare."""

    name: str
    variants: list[Variant]
    load_sweep: Mapping[str, Any] = field(default_factory=dict)  # raw; SweepSettings parses it
    load_sweep_source: str = ""


def is_variants_data(data: Any) -> bool:
    """A YAML document is a variants file when its top level has ``variants`` or ``base``."""
    return isinstance(data, dict) and ("variants" in data or "base" in data)


class _Issues:
    """Collects the problems of one variants file, each with the line of its key."""

    def __init__(self, source: str, loaded: LoadedYaml) -> None:
        self.source = source
        self.lines = loaded.lines
        self.items: list[Issue] = []

    def add(self, path: FieldPath, message: str) -> None:
        issue = Issue(self.source, path, message, self._line(path))
        if issue not in self.items:  # a bad common override is reported once, not per variant
            self.items.append(issue)

    def _line(self, path: FieldPath) -> int | None:
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)


def _check_overrides(value: Any, path: FieldPath, issues: _Issues) -> dict[str, Any]:
    """A mapping of dotted paths to values; a nested mapping is not flattened (it replaces
    the section, as in :func:`sim.config.apply_overrides`)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        issues.add(path, f"expected a mapping of dotted field paths to values, got "
                         f"{describe(value)}")
        return {}
    out: dict[str, Any] = {}
    for key, v in value.items():
        if not isinstance(key, str) or not key or any(p == "" for p in key.split(".")):
            issues.add((*path, str(key)), f"bad override key {describe(key)}; expected a dotted "
                                          "path such as 'cluster.unique.chip'")
            continue
        out[key] = v
    return out


def _absolute_paths(overrides: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """Override values that are file paths (a key ending in ``path``, or a section holding
    a ``path``) made absolute against ``folder``: paths in a variants file are relative
    to it, as paths in a config are relative to the config."""
    def fix(key: str, value: Any) -> Any:
        if key == "path" and isinstance(value, str) and not os.path.isabs(value):
            return str(folder / value)
        if isinstance(value, dict):
            return {k: fix(str(k), v) for k, v in value.items()}
        return value

    return {k: fix(k.rsplit(".", 1)[-1], v) for k, v in overrides.items()}


def _relocate(exc: ConfigError, homes: Mapping[str, FieldPath], fallback: FieldPath,
              issues: _Issues) -> None:
    """Re-home a variant's config issues into the variants file: a field an override set is
    named ``<where that override is written>.<key>...`` at that key's line; anything else
    is reported at ``fallback`` (the variant) with the config field it concerns."""
    keys = sorted(((tuple(k.split(".")), k) for k in homes), key=lambda kv: -len(kv[0]))
    for issue in exc.issues:
        path = tuple(issue.path)
        message = issue.message.removesuffix(" (set by override)")
        hit = next(((parts, k) for parts, k in keys if path[: len(parts)] == parts), None)
        above = next((k for parts, k in keys if path and parts[: len(path)] == path), None)
        if hit is not None:
            parts, key = hit
            issues.add((*homes[key], key, *path[len(parts):]), message)
        elif above is not None:  # the override names a field under an unknown section
            issues.add((*homes[above], above), f"{dotted(path)}: {message}")
        else:
            where = dotted(path) if path else "(top level)"
            issues.add(fallback, f"the resulting config is invalid at {where}: {message}")


def _load_base(value: Any, folder: Path, issues: _Issues) -> ExperimentConfig | None:
    """The base config: a path relative to ``folder``, or an inline config mapping."""
    if isinstance(value, str):
        path = Path(value) if os.path.isabs(value) else folder / value
        if not path.is_file():
            issues.add(("base",), f"config file {str(path)!r} not found (a path relative to "
                                  "the variants file's folder)")
            return None
        return load_config(path)  # its errors name the base file itself
    if isinstance(value, dict):
        try:
            return config_from_dict(value, source=f"{issues.source}: base", base_dir=folder)
        except ConfigError as exc:
            for issue in exc.issues:
                issues.add(("base", *issue.path), issue.message)
            return None
    issues.add(("base",), f"expected a config path or an inline config mapping, got "
                          f"{describe(value)}")
    return None


def _unknown_keys(data: Mapping[str, Any], allowed: Sequence[str], path: FieldPath,
                  issues: _Issues) -> None:
    for key in data:
        if key not in allowed:
            hint = suggest(str(key), allowed) or f"; valid fields: {', '.join(allowed)}"
            issues.add((*path, str(key)), f"unknown field{hint}")


def load_variants_file(path: str | Path, extra: Mapping[str, Any] | None = None) -> CompareInputs:
    """Read and validate a variants file; every variant's config is resolved and checked.

    ``extra`` overrides (from ``--set``) apply to every variant after the file's own.
    Raises :class:`ConfigError` listing every problem as ``FILE: field: message (line N)``.
    """
    path = Path(path)
    source = str(path)
    text = read_text_file(path, source)  # a pipe or device is refused, never waited on
    loaded = load_yaml_text(text, source)
    data = loaded.data
    issues = _Issues(source, loaded)
    if not isinstance(data, dict):
        issues.add((), f"expected a mapping with base and variants, got {describe(data)}")
        issues.raise_if_any()
    _unknown_keys(data, TOP_KEYS, (), issues)
    folder = Path(os.path.abspath(path)).parent

    name = data.get("name", path.stem)
    if not isinstance(name, str) or not LABEL_RE.fullmatch(name):
        issues.add(("name",), f"expected a name of letters, digits, '.', '_' or '-', got "
                              f"{describe(name)}")
    sweep = data.get("load_sweep") or {}
    if not isinstance(sweep, dict):
        issues.add(("load_sweep",), f"expected a mapping, got {describe(sweep)}")
        sweep = {}
    try:
        SweepSettings.from_mapping(sweep, source)  # checked here so all errors come at once
    except ConfigError as exc:
        for issue in exc.issues:
            issues.add(issue.path, issue.message)
    common = _check_overrides(data.get("overrides"), ("overrides",), issues)
    base = None
    if "base" not in data:
        issues.add(("base",), "missing required field; expected a config path or an inline "
                              "config mapping")
    else:
        base = _load_base(data["base"], folder, issues)

    raw_variants = data.get("variants")
    specs: list[tuple[int, str, dict[str, Any]]] = []
    if raw_variants is None:
        issues.add(("variants",), "missing required field; expected a list of {label, "
                                  "overrides} mappings")
    elif not isinstance(raw_variants, list) or not raw_variants:
        issues.add(("variants",), f"expected a non-empty list of {{label, overrides}} "
                                  f"mappings, got {describe(raw_variants)}")
    else:
        seen: dict[str, int] = {}
        for i, item in enumerate(raw_variants):
            where: FieldPath = ("variants", i)
            if not isinstance(item, dict):
                issues.add(where, f"expected a mapping with label and overrides, got "
                                  f"{describe(item)}")
                continue
            _unknown_keys(item, VARIANT_KEYS, where, issues)
            label = item.get("label")
            if label is None:
                issues.add((*where, "label"), "missing required field; expected a label of "
                                              "letters, digits, '.', '_' or '-'")
                continue
            if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
                issues.add((*where, "label"), f"expected a label of letters, digits, '.', '_' "
                                              f"or '-' (it names runs/<label>/), got "
                                              f"{describe(label)}")
                continue
            if label in seen:
                issues.add((*where, "label"), f"duplicate label {label!r}; variants[{seen[label]}]"
                                              " has it already")
                continue
            seen[label] = i
            own = _check_overrides(item.get("overrides"), (*where, "overrides"), issues)
            specs.append((i, label, own))

    variants: list[Variant] = []
    if base is not None:
        for i, label, own in specs:
            merged = {"name": label, **common, **own, **dict(extra or {})}
            merged = _absolute_paths(merged, folder)
            homes: dict[str, FieldPath] = {k: ("overrides",) for k in common}
            homes.update({k: ("variants", i, "overrides") for k in own})
            try:
                cfg = with_overrides(base, merged, source=f"{source}: variants[{i}]")
            except ConfigError as exc:
                _relocate(exc, homes, ("variants", i), issues)
                continue
            variants.append(Variant(label, cfg, f"{source}: variants[{i}]"))
    issues.raise_if_any()
    return CompareInputs(str(name), variants, sweep, source)


def _unique_label(name: str, taken: set[str]) -> str:
    label, n = name, 2
    while label in taken:
        label = f"{name}-{n}"
        n += 1
    taken.add(label)
    return label


def load_inputs(paths: Sequence[str | Path],
                extra: Mapping[str, Any] | None = None) -> CompareInputs:
    """The configs to compare: several experiment YAMLs (labelled by their ``name``), or
    exactly one variants file. ``extra`` overrides apply to every config."""
    if not paths:
        raise ConfigError([Issue("compare", (), "no CONFIG given")])
    kinds = []
    for p in paths:
        text = read_text_file(p, str(p))
        kinds.append(is_variants_data(load_yaml_text(text, str(p)).data))
    if any(kinds):
        if len(paths) > 1:
            first = str(paths[kinds.index(True)])
            raise ConfigError([Issue(first, (), "a variants file (base + variants) must be the "
                                                "only CONFIG given")])
        return load_variants_file(paths[0], extra)
    taken: set[str] = set()
    variants = []
    for p in paths:
        cfg = load_config(p, extra or None)
        variants.append(Variant(_unique_label(cfg.name, taken), cfg, str(p)))
    name = variants[0].label if len(variants) == 1 else "compare"
    return CompareInputs(name, variants)


__all__ = ["CompareInputs", "Variant", "is_variants_data", "load_inputs", "load_variants_file"]
