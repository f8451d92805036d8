"""Strict YAML in and out for experiment configs.

PyYAML's ``safe_load`` lets a duplicated key silently win (PyYAML #165), so this loader
composes the node tree first, rejects duplicate keys with both line numbers, and records
the line of every key so later errors can point at it. Malformed YAML becomes a
:class:`ConfigError` naming the file, line and column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from sim.config.errors import ConfigError, Issue

Path_ = tuple[str | int, ...]


@dataclass
class LoadedYaml:
    """The plain data of a YAML document and the 1-based line of each key path in it."""

    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], issues: list[Issue],
          source: str) -> None:
    """Record the line of every mapping key under ``node``; report duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue  # merge keys and complex keys are left to the constructor
            key, line = key_node.value, key_node.start_mark.line + 1
            if key in first_seen:
                issues.append(Issue(source, (*path, key), f"duplicate key; first set at line "
                                    f"{first_seen[key]} (YAML would keep the last silently)",
                                    line))
                continue
            first_seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, issues, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, issues, source)


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
    """Parse one YAML document safely; raise ConfigError on bad syntax or duplicate keys."""
    loader = yaml.SafeLoader(text)
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


__all__ = ["LoadedYaml", "dump_yaml", "load_yaml_text"]
