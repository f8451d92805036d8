"""Experiment YAML -> validated, fully resolved ``ExperimentConfig``.

Loading is strict: duplicate keys, malformed YAML, unknown keys, wrong types and values out
of range are all errors, collected and raised together as one :class:`ConfigError` whose
lines read ``FILE: dotted.field: expected ..., got ... (line N)``. The schema itself lives
in :mod:`sim.config.schema`; docs/config.md documents every field.
"""

from __future__ import annotations

import copy
import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sim.config.errors import ConfigError, FieldPath, Issue, issues_from_validation
from sim.config.fields import MAX_DURATION_S, MAX_REQUESTS
from sim.config.schema import ExperimentConfig
from sim.config.yaml_source import MAX_YAML_BYTES, load_yaml_text
from sim.units import describe

Overrides = Mapping[str | FieldPath, Any]

MAX_SET_VALUE = 64 * 2**10  #: longest ``--set`` value, characters
MAX_KEY_LENGTH = 256  #: longest dotted override key, characters
MAX_KEY_PARTS = 16  #: most parts of a dotted override key


def _kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_text_file(path: str | Path, source: str, limit: int = MAX_YAML_BYTES,
                   what: str = "YAML") -> str:
    """The UTF-8 text of the regular file at ``path``, at most ``limit`` bytes.

    Opened without blocking and checked with ``fstat`` before reading, so a named pipe, a
    device or a folder is refused at once (never waited on); every failure is a one-line
    :class:`ConfigError` naming the file and what was expected.
    """
    def error(text: str, line: int | None = None) -> ConfigError:
        return ConfigError([Issue(source, (), text, line)])

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error("file not found") from None
    except IsADirectoryError:
        raise error("expected a file, got a folder") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
        if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
            reason = "too many levels of symbolic links"
        raise error(f"cannot read: {reason}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"expected a regular file, got {_kind_of(mode)}")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise error(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"expected at most {limit // 2**10:,} KiB of {what}, the file is larger")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"expected UTF-8 text, got byte 0x{data[exc.start]:02x} that is not "
                    f"UTF-8 (at byte {exc.start})", line) from None


def _split(key: str | FieldPath) -> FieldPath:
    """``'workload.arrivals.rate_per_s'`` -> ``('workload', 'arrivals', 'rate_per_s')``."""
    if isinstance(key, str) and len(key) > MAX_KEY_LENGTH:
        raise ConfigError([Issue("<overrides>", (), f"override key of {len(key):,} characters; "
                                 f"expected a dotted path of at most {MAX_KEY_LENGTH}")])
    parts = tuple(key.split(".")) if isinstance(key, str) else tuple(key)
    if len(parts) > MAX_KEY_PARTS:
        raise ConfigError([Issue("<overrides>", (), f"override key {describe(key)} has "
                                 f"{len(parts)} parts; expected at most {MAX_KEY_PARTS}")])
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
        cfg = ExperimentConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(issues_from_validation(exc, ExperimentConfig, source, lines,
                                                 overridden or [])) from None
    if issues := _plausibility_issues(cfg):
        lines, overridden = lines or {}, overridden or []
        raise ConfigError([Issue(source, path, text + (" (set by override)" if any(
            path[: len(o)] == tuple(o) for o in overridden) else ""), lines.get(path))
            for path, text in issues])
    return cfg


def _plausibility_issues(cfg: ExperimentConfig) -> list[tuple[FieldPath, str]]:
    """Checks across sections that keep a run finite: an open-loop run of ``run.requests``
    arrivals spans at most MAX_DURATION_S simulated seconds, and one bounded only by
    ``run.duration_s`` plans at most MAX_REQUESTS arrivals."""
    arrivals, run = cfg.workload.arrivals, cfg.run
    rate = getattr(arrivals, "rate_per_s", None)
    if rate is None:
        return []
    where: FieldPath = ("workload", "arrivals", "rate_per_s")
    if run.duration_s is None and run.requests is not None \
            and run.requests / rate > MAX_DURATION_S:
        return [(where, (f"expected a rate >= {run.requests / MAX_DURATION_S:.3g} per s, so that "
                         f"run.requests ({run.requests}) arrive within {MAX_DURATION_S:.0e} "
                         f"simulated seconds; got {rate:g} (or set run.duration_s)"))]
    if run.requests is None and run.duration_s is not None \
            and rate * run.duration_s > MAX_REQUESTS:
        return [(where, (f"expected at most {MAX_REQUESTS:.0e} arrivals in run.duration_s "
                         f"({run.duration_s:g} s), got a rate of {rate:g} per s "
                         f"({rate * run.duration_s:.3g} arrivals; or set run.requests)"))]
    return []


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
    text = read_text_file(path, source)
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
        raise ConfigError([Issue("--set", (), f"expected KEY=VALUE, got {describe(text)}")])
    if len(raw) > MAX_SET_VALUE:
        raise ConfigError([Issue(f"--set {describe(key.strip())}", (), (
            f"value of {len(raw):,} characters; expected at most {MAX_SET_VALUE // 2**10} KiB"))])
    if len(key.strip()) > MAX_KEY_LENGTH:
        raise ConfigError([Issue("--set", (), f"key of {len(key.strip()):,} characters; "
                                 f"expected a dotted path of at most {MAX_KEY_LENGTH}")])
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
    "read_text_file",
    "with_overrides",
]
