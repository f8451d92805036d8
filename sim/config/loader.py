"""Experiment YAML -> validated, fully resolved ``ExperimentConfig``.

Loading is strict: duplicate keys, malformed YAML, unknown keys, wrong types and values out
of range are all errors, collected and raised together as one :class:`ConfigError` whose
lines read ``FILE: dotted.field: expected ..., got ... (line N)``. The schema itself lives
in :mod:`sim.config.schema`; docs/config.md documents every field.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sim.config.errors import ConfigError, FieldPath, Issue, issues_from_validation
from sim.config.schema import ExperimentConfig
from sim.config.yaml_source import load_yaml_text
from sim.units import describe

Overrides = Mapping[str | FieldPath, Any]


def _split(key: str | FieldPath) -> FieldPath:
    """``'workload.arrivals.rate_per_s'`` -> ``('workload', 'arrivals', 'rate_per_s')``."""
    parts = tuple(key.split(".")) if isinstance(key, str) else tuple(key)
    if not parts or any(p == "" for p in parts):
        raise ConfigError([Issue("<overrides>", (), f"bad override key {key!r}; expected a "
                                                   "dotted path such as 'run.seed'")])
    return parts


def apply_overrides(data: Mapping[str, Any], overrides: Overrides | None,
                    source: str = "<overrides>") -> tuple[dict[str, Any], list[FieldPath]]:
    """A deep copy of ``data`` with each dotted-path override set; also the paths set.

    A mapping value replaces the whole section (to switch ``workload.arrivals`` from one
    kind to another, set the section, not its ``kind`` alone). Missing sections are created.
    """
    result: dict[str, Any] = copy.deepcopy(dict(data))
    paths: list[FieldPath] = []
    for key, value in (overrides or {}).items():
        path = _split(key)
        node: Any = result
        for depth, part in enumerate(path[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = path[: depth + 1]
                raise ConfigError([Issue(source, where, f"cannot set {'.'.join(map(str, path))}:"
                                         f" this field is {describe(child)}, not a mapping")])
            node = child
        node[path[-1]] = copy.deepcopy(value)
        paths.append(path)
    return result, paths


def _non_string_keys(data: Any, path: FieldPath = ()) -> list[tuple[FieldPath, Any]]:
    """(parent path, key) of every mapping key that is not a string (``on:`` is True)."""
    found: list[tuple[FieldPath, Any]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(key, str):
                found.append((path, key))
            else:
                found.extend(_non_string_keys(value, (*path, key)))
    elif isinstance(data, list):
        for index, item in enumerate(data):
            found.extend(_non_string_keys(item, (*path, index)))
    return found


def _validate(data: Any, source: str, base_dir: Path | None,
              lines: Mapping[FieldPath, int] | None = None,
              overridden: list[FieldPath] | None = None) -> ExperimentConfig:
    """Validate plain data; every problem becomes one Issue of a single ConfigError."""
    if not isinstance(data, dict):
        what = "an empty file" if data is None else describe(data)
        raise ConfigError([Issue(source, (), f"expected a mapping of config sections "
                                             f"(name, cluster, workload, ...), got {what}")])
    if bad := _non_string_keys(data):
        lines = lines or {}
        raise ConfigError([Issue(source, path, f"key {describe(key)} is not a string; quote it",
                                 lines.get(path)) for path, key in bad])
    context = {"base_dir": str(base_dir) if base_dir is not None else os.getcwd()}
    try:
        return ExperimentConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(issues_from_validation(exc, ExperimentConfig, source, lines,
                                                 overridden or [])) from None


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>", *,
                     base_dir: str | Path | None = None) -> ExperimentConfig:
    """Validate and resolve config data; relative paths resolve against ``base_dir`` (cwd)."""
    plain = dict(data) if isinstance(data, Mapping) else data
    return _validate(plain, source, Path(base_dir) if base_dir is not None else None)


def load_config(path: str | Path, overrides: Overrides | None = None) -> ExperimentConfig:
    """Read, validate and resolve the experiment YAML at ``path``, then apply ``overrides``.

    ``overrides`` maps dotted paths to values (``{'run.seed': 3}``); they are validated like
    the file's own values and errors about them say "(set by override)".
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Issue(source, (), "file not found")]) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError([Issue(source, (), f"cannot read: {exc}")]) from None
    loaded = load_yaml_text(text, source)
    data, paths = loaded.data, []
    if overrides:
        if not isinstance(data, dict):
            _validate(data, source, None)  # raises the top-level shape error
        data, paths = apply_overrides(data, overrides, source)
    base_dir = Path(os.path.abspath(path)).parent
    return _validate(data, source, base_dir, loaded.lines, paths)


def with_overrides(cfg: ExperimentConfig, overrides: Overrides,
                   source: str = "<overrides>") -> ExperimentConfig:
    """``cfg`` with dotted-path fields replaced, validated like a file (sweeps use this)."""
    data, paths = apply_overrides(cfg.to_dict(), overrides, source)
    return _validate(data, source, None, None, paths)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``'workload.arrivals.rate_per_s=50'`` -> ``('workload.arrivals.rate_per_s', 50)``.

    The value is read as YAML (so ``{zipf: 1.1}`` and ``null`` work); for ``--set`` options.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError([Issue("--set", (), f"expected KEY=VALUE, got {text!r}")])
    loaded = load_yaml_text(raw, f"--set {key.strip()}")
    return key.strip(), loaded.data if raw.strip() else None


__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "Issue",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "parse_assignment",
    "with_overrides",
]
