"""The one error a bad config raises, and the translation of pydantic's errors into it.

Users see ``FILE: dotted.field.path: expected ..., got ... (line N)``, one line per problem,
never pydantic's own dump: tags of tagged unions are dropped from paths, unknown keys get
the nearest valid name, missing keys say what they needed.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from sim.config.fields import (
    CROSS_ERROR,
    FIELD_ERROR,
    TAG_ERROR,
    TAG_LABELS,
    TAGS,
    Expect,
    suggest,
)
from sim.units import describe

FieldPath = tuple[str | int, ...]


def dotted(path: Sequence[str | int]) -> str:
    """``('analysis', 'batch_sweep', 2)`` -> ``'analysis.batch_sweep[2]'``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(frozen=True)
class Issue:
    """One problem: where (source file, field path, line) and what."""

    source: str
    path: FieldPath
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}: {dotted(self.path)}: " if self.path else f"{self.source}: "
        at = ""
        if self.line is not None:
            at = f" (line {self.line}" + (f", column {self.column})" if self.column else ")")
        return f"{where}{self.message}{at}"


class ConfigError(ValueError):
    """A config that cannot be used; ``issues`` lists every problem, one per message line."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


def _model_type(annotation: Any) -> type[BaseModel] | None:
    """The model class behind an annotation (``X``, ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _model_type(args[0])
    return None


def _model_at(root: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    """The model class that holds the field at ``loc`` (pydantic loc, tags included)."""
    cls: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, str) and part.startswith("~"):
            cls = TAGS.get(part)
        elif cls is not None and isinstance(part, str) and part in cls.model_fields:
            cls = _model_type(cls.model_fields[part].annotation)
        else:
            cls = None
    return cls


def _expected(cls: type[BaseModel] | None, name: Any) -> str | None:
    """What field ``name`` of ``cls`` expects, from its Expect marker or its model type."""
    if cls is None or name not in cls.model_fields:
        return None
    info = cls.model_fields[name]
    for meta in info.metadata:
        if isinstance(meta, Expect):
            return meta.text
    if _model_type(info.annotation) is not None:
        return "a mapping"
    return None


def _variant_label(loc: Sequence[Any]) -> str | None:
    """``"kind 'gamma'"`` when the last step into the field's parent went through a tag."""
    tags = [p for p in loc if isinstance(p, str) and p.startswith("~")]
    return TAG_LABELS.get(tags[-1]) if tags else None


def _translate_one(err: Mapping[str, Any], root: type[BaseModel]) -> list[tuple[FieldPath, str]]:
    """(field path, message) pairs for one pydantic error."""
    loc = tuple(err["loc"])
    path: FieldPath = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("~")))
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    parent = _model_at(root, loc[:-1])
    name = loc[-1] if loc else None
    if kind == FIELD_ERROR:
        return [(path, str(ctx["text"]))]
    if kind == CROSS_ERROR:
        return [((*path, *rel.split(".")) if rel else path, text) for rel, text in ctx["issues"]]
    if kind == TAG_ERROR:
        key, _, joined = str(err["msg"]).partition("|")
        choices = joined.split(",")
        listing = ", ".join(repr(c) for c in choices)
        if not isinstance(value, dict):
            return [(path, (f"expected a mapping with {key}: one of {listing}, "
                           f"got {describe(value)}"))]
        if key not in value:
            return [((*path, key), f"missing; expected one of {listing}")]
        got = value[key]
        hint = suggest(got, choices) if isinstance(got, str) else ""
        return [((*path, key), f"expected one of {listing}, got {describe(got)}{hint}")]
    if kind == "extra_forbidden":
        valid = list(parent.model_fields) if parent else []
        label = _variant_label(loc)
        scope = f" for {label}" if label else ""
        hint = suggest(str(name), valid) if valid else ""
        if hint:
            return [(path, f"unknown field{scope}{hint}")]
        listing = f"; valid fields: {', '.join(valid)}" if valid else ""
        return [(path, f"unknown field{scope}{listing}")]
    if kind == "missing":
        expected = _expected(parent, name)
        label = _variant_label(loc)
        needed = f" (needed by {label})" if label else ""
        return [(path, f"missing required field{needed}"
                       + (f"; expected {expected}" if expected else ""))]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return [(path, f"expected a mapping, got {describe(value)}")]
    if kind in ("tuple_type", "list_type"):
        return [(path, f"expected a list, got {describe(value)}")]
    return [(path, f"{err['msg']}, got {describe(value)}")]  # a check we did not anticipate


def issues_from_validation(exc: ValidationError, root: type[BaseModel], source: str,
                           lines: Mapping[FieldPath, int] | None = None,
                           overridden: Sequence[FieldPath] = ()) -> list[Issue]:
    """One Issue per problem in ``exc``, each with the line of its key where known.

    Paths that an override set (or lie under one) say so instead of pointing at a line.
    """
    lines = lines or {}
    issues: list[Issue] = []
    for err in exc.errors(include_url=False):
        for path, message in _translate_one(err, root):
            from_override = any(path[: len(o)] == tuple(o) for o in overridden)
            line = None if from_override else _line_of(path, lines)
            issues.append(Issue(source, path, message + (" (set by override)"
                                                          if from_override else ""), line))
    return issues


def _line_of(path: FieldPath, lines: Mapping[FieldPath, int]) -> int | None:
    """The line of ``path``, or of its closest ancestor present in the file."""
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


__all__ = ["ConfigError", "FieldPath", "Issue", "dotted", "issues_from_validation"]
