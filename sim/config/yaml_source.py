"""Strict YAML in and out for experiment configs.

PyYAML's ``safe_load`` lets a duplicated key silently win (PyYAML #165), so this loader
composes the node tree first, rejects duplicate keys with both line numbers, and records
the line of every key so later errors can point at it. Malformed YAML becomes a
:class:`ConfigError` naming the file, line and column.

Hostile input is refused before it can cost time or memory: text over
:data:`MAX_YAML_BYTES`, control characters (anywhere, comments included), nesting deeper
than :data:`MAX_YAML_DEPTH` (checked while composing, so it never reaches Python's
recursion limit) and more than :data:`MAX_YAML_NODES` values once aliases are expanded
(an "alias bomb" of a few lines would otherwise expand to billions of values).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from sim.config.errors import ConfigError, Issue

Path_ = tuple[str | int, ...]

MAX_YAML_BYTES = 2**20  #: largest YAML text read (configs and variants files are KiB)
MAX_YAML_DEPTH = 64  #: deepest nesting of mappings and lists
MAX_YAML_NODES = 50_000  #: most values in a document, aliases expanded
# C0 controls but tab, LF and CR; DEL; C1 controls but NEL; surrogates; U+FFFE/U+FFFF
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")

_BRACKET = re.compile(r"[\[\]{}]")


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of ``text[index]``."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _flow_depth_error(text: str, source: str) -> ConfigError | None:
    """An error when brackets (``[`` ``{``) open more than MAX_YAML_DEPTH deep.

    PyYAML's scanner reads a whole nested flow before its first token (quadratic time), so
    the depth is counted here first; brackets inside strings count too (an upper bound).
    """
    if text.count("[") + text.count("{") <= MAX_YAML_DEPTH:
        return None
    depth = 0
    for match in _BRACKET.finditer(text):
        depth += 1 if match.group() in "[{" else -1
        if depth > MAX_YAML_DEPTH:
            line, column = _position(text, match.start())
            return ConfigError([Issue(source, (), f"nesting deeper than {MAX_YAML_DEPTH} levels",
                                      line, column)])
        depth = max(depth, 0)
    return None


def check_yaml_text(text: str, source: str) -> None:
    """Refuse text too long for a config, holding a control character (even in a comment:
    YAML forbids them everywhere) or nesting brackets too deep, naming the line and column."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError([Issue(source, (), f"expected at most {MAX_YAML_BYTES // 2**20} MiB "
                                             f"of YAML, got {len(text):,} characters")])
    if bad := _CONTROL.search(text):
        line, column = _position(text, bad.start())
        raise ConfigError([Issue(source, (), (f"control character U+{ord(bad.group()):04X} "
                                              "not allowed in YAML (only tab, newline and "
                                              "printable characters)"), line, column)])
    if error := _flow_depth_error(text, source):
        raise error


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that refuses nesting deeper than MAX_YAML_DEPTH while composing."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._source = source

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError([Issue(self._source, (), (f"nesting deeper than "
                                                            f"{MAX_YAML_DEPTH} levels"),
                                         mark.line + 1, mark.column + 1)])
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


@dataclass
class LoadedYaml:
    """The plain data of a YAML document and the 1-based line of each key path in it."""

    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)


class _Budget:
    """Counts the values a walk visits (aliases expanded) against MAX_YAML_NODES."""

    def __init__(self, source: str) -> None:
        self.left, self.source = MAX_YAML_NODES, source

    def spend(self, node: yaml.Node) -> None:
        self.left -= 1
        if self.left < 0:
            raise ConfigError([Issue(self.source, (), (
                f"more than {MAX_YAML_NODES:,} values once aliases (*name) are expanded; "
                "expected a config of a few hundred values"), node.start_mark.line + 1)])


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], issues: list[Issue],
          source: str, budget: _Budget | None = None) -> None:
    """Record the line of every mapping key under ``node``; report duplicate keys; count
    every value (aliases expanded) against the budget."""
    budget = budget or _Budget(source)
    budget.spend(node)
    if len(path) > MAX_YAML_DEPTH:
        raise ConfigError([Issue(source, (), (f"nesting deeper than {MAX_YAML_DEPTH} levels "
                                              "once aliases are expanded (a recursive alias?)"),
                                 node.start_mark.line + 1)])
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                # merge keys and complex keys are left to the constructor, but counted
                _walk(key_node, (*path, "<<"), {}, [], source, budget)
                _walk(value_node, (*path, "<<"), {}, [], source, budget)
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in first_seen:
                issues.append(Issue(source, (*path, key), f"duplicate key; first set at line "
                                    f"{first_seen[key]} (YAML would keep the last silently)",
                                    line))
                continue
            first_seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, issues, source, budget)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, issues, source, budget)


def _mark_error(exc: yaml.YAMLError, source: str) -> ConfigError:
    """A ConfigError for a YAML syntax error, at the line and column PyYAML reports."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context else problem
    if mark is None:
        return ConfigError([Issue(source, (), f"malformed YAML: {detail}")])
    return ConfigError([Issue(source, (), f"malformed YAML: {detail}", mark.line + 1,
                              mark.column + 1)])


def load_yaml_text(text: str, source: str) -> LoadedYaml:
    """Parse one YAML document safely; raise ConfigError on bad syntax, duplicate keys, or
    text past the limits (size, control characters, depth, values with aliases expanded)."""
    check_yaml_text(text, source)
    loader = _BoundedLoader(text, source)
    try:
        node = loader.get_single_node()
        if node is None:
            return LoadedYaml(None)
        lines: dict[Path_, int] = {}
        issues: list[Issue] = []
        _walk(node, (), lines, issues, source)
        if issues:
            raise ConfigError(issues)
        return LoadedYaml(loader.construct_document(node), lines)
    except yaml.YAMLError as exc:
        raise _mark_error(exc, source) from None
    finally:
        loader.dispose()


class _Dumper(yaml.SafeDumper):
    """Block-style dumper that keeps key order and writes short lists of scalars inline."""

    def represent_list(self, data: list[Any]) -> yaml.Node:
        flow = all(not isinstance(x, (dict, list)) for x in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _Dumper.represent_list)
_Dumper.add_representer(tuple, _Dumper.represent_list)


def dump_yaml(data: Any) -> str:
    """YAML text for plain data, in insertion order, that :func:`load_yaml_text` reads back."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=100)


__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "LoadedYaml", "check_yaml_text",
           "dump_yaml", "load_yaml_text"]
