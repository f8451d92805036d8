"""Field types for the config schema, each with its own check and its own error text.

Every scalar field is an ``Annotated`` type whose before-validator parses the YAML value
(``'1e9'`` is a number here, ``True`` is not) and raises a message of the form
``expected <what>, got <value>``; :mod:`sim.config.errors` adds the file and dotted path.
Unions that pick a variant by a key (``kind``, ``dist``) or by shape (scalar vs mapping)
use tags starting with ``~`` so the error translator can drop them from field paths.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Tag,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sim.units import UnitError, describe, parse_int, parse_number

TAG_ERROR = "moska_tag"  # a tagged union whose key is missing or names no variant
FIELD_ERROR = "moska"  # one field's own check failed; ctx['text'] is the message
CROSS_ERROR = "moska_fields"  # checks across fields; ctx['issues'] = ((dotted path, text), ...)

# '~Tag' -> model class of that variant, and its label ("kind 'gamma'"), for error messages
TAGS: dict[str, type[BaseModel]] = {}
TAG_LABELS: dict[str, str] = {}


class Expect:
    """Annotated marker: what a field expects, in words (for "missing required field" errors)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Expect({self.text!r})"


def fail(text: str) -> PydanticCustomError:
    """The error a field check raises; its message is ``text`` verbatim."""
    return PydanticCustomError(FIELD_ERROR, "{text}", {"text": text})


def cross_fail(issues: Sequence[tuple[str, str]]) -> PydanticCustomError:
    """The error a cross-field check raises: (dotted path relative to the model, text) pairs."""
    return PydanticCustomError(CROSS_ERROR, "{count} cross-field errors",
                               {"issues": tuple(issues), "count": len(issues)})


class StrictModel(BaseModel):
    """Base of every config section: frozen, no unknown keys, no type coercion by pydantic."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _plain_mapping(cls, data: Any) -> Any:
        """An empty section (``batching:``) means all defaults."""
        return {} if data is None else data


def _bounds_text(gt: float | None, ge: float | None, lt: float | None, le: float | None) -> str:
    parts = [f"{op} {_num(v)}" for op, v in ((">", gt), (">=", ge), ("<", lt), ("<=", le))
             if v is not None]
    return " and ".join(parts)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _in_bounds(x: float, gt: float | None, ge: float | None, lt: float | None,
               le: float | None) -> bool:
    return ((gt is None or x > gt) and (ge is None or x >= ge)
            and (lt is None or x < lt) and (le is None or x <= le))


def number(*, gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None) -> Any:
    """A real number (resolved as float) within the given bounds; '1e9' and '2.5k' accepted."""
    bounds = _bounds_text(gt, ge, lt, le)
    what = f"a number {bounds}".strip()

    def check(value: Any) -> float:
        try:
            x = float(parse_number(value))
        except UnitError as exc:
            why = f"; {exc.reason}" if exc.reason.startswith("unknown suffix") else ""
            raise fail(f"expected {what}, got {describe(value)}{why}") from None
        if not _in_bounds(x, gt, ge, lt, le):
            raise fail(f"expected {what}, got {describe(value)}")
        return x

    return Annotated[float, BeforeValidator(check), Expect(what)]


def integer(*, ge: int | None = None, le: int | None = None, size: bool = False) -> Any:
    """A whole number within bounds; ``size=True`` for counts of tokens ('64Ki', '16Mi', '1M')."""
    bounds = _bounds_text(None, ge, None, le)
    noun = "a size" if size else "an integer"
    example = " (an integer, or a string such as '64Ki', '16Mi', '1M')" if size else ""
    what = f"{noun} {bounds}".strip()

    def check(value: Any) -> int:
        try:
            n = parse_int(value)
        except UnitError as exc:
            why = f"; {exc.reason}" if exc.reason.startswith("unknown suffix") else ""
            raise fail(f"expected {what}{example}, got {describe(value)}{why}") from None
        if not _in_bounds(n, None, ge, None, le):
            raise fail(f"expected {what}, got {describe(value)}")
        return n

    return Annotated[int, BeforeValidator(check), Expect(what)]


def size(*, ge: int = 0) -> Any:
    """A token count >= ``ge``: an int or '64Ki' (binary), '1M' (decimal), '1e6', '1_000'."""
    return integer(ge=ge, size=True)


def size_list(*, ge: int = 1) -> Any:
    """A non-empty list of sizes, resolved as a tuple (configs are immutable)."""
    item = integer(ge=ge, size=True)
    what = f"a non-empty list of sizes >= {ge}"

    def check(value: Any) -> tuple[int, ...]:
        if not isinstance(value, (list, tuple)) or not value:
            raise fail(f"expected {what}, got {describe(value)}")
        return tuple(value)

    return Annotated[tuple[item, ...], BeforeValidator(check), Expect(what)]


def suggest(value: str, options: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or an empty string."""
    near = difflib.get_close_matches(value, list(options), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def nearest_first(value: str, options: Sequence[str]) -> list[str]:
    """``options`` ordered by similarity to ``value``, closest first (ties keep their order)."""
    def score(opt: str) -> float:
        return difflib.SequenceMatcher(None, value.lower(), opt.lower()).ratio()

    return sorted(options, key=score, reverse=True)


def _quoted(options: Sequence[str]) -> str:
    return ", ".join(repr(o) for o in options)


def choice(*options: str, what: str | None = None) -> Any:
    """One of a fixed set of strings; a near miss gets a suggestion."""
    what = what or f"one of {_quoted(options)}"

    def check(value: Any) -> str:
        if isinstance(value, str) and value in options:
            return value
        hint = suggest(value, options) if isinstance(value, str) else ""
        raise fail(f"expected {what}, got {describe(value)}{hint}")

    return Annotated[str, BeforeValidator(check), Expect(what)]


def registered(kind: str, available: Callable[[], list[str]]) -> Any:
    """A name from a registry read at validation time (chips, models); errors list all names."""

    def check(value: Any) -> str:
        names = list(available())
        if isinstance(value, str) and value in names:
            return value
        if not isinstance(value, str):
            raise fail(f"expected a {kind} name, one of {_quoted(names)}; got {describe(value)}")
        raise fail(f"unknown {kind} {value!r}{suggest(value, names)}; expected one of "
                   f"{_quoted(nearest_first(value, names))}")

    return Annotated[str, BeforeValidator(check), Expect(f"a {kind} name")]


def pattern(regex: str, what: str) -> Any:
    """A string matching ``regex`` in full."""
    compiled = re.compile(regex)

    def check(value: Any) -> str:
        if isinstance(value, str) and compiled.fullmatch(value):
            return value
        raise fail(f"expected {what}, got {describe(value)}")

    return Annotated[str, BeforeValidator(check), Expect(what)]


def existing_file() -> Any:
    """A path to an existing file; relative paths resolve against the config file's folder.

    The folder comes from the validation context key ``base_dir`` (default: the current
    directory). The resolved value is absolute, so the config means the same from anywhere.
    """
    what = "a path to an existing file"

    def check(value: Any, info: ValidationInfo) -> str:
        if not isinstance(value, str) or not value:
            raise fail(f"expected {what}, got {describe(value)}")
        base = (info.context or {}).get("base_dir") or os.getcwd()
        path = Path(os.path.abspath(Path(base) / Path(value).expanduser()))
        if not path.is_file():
            raise fail(f"file not found: {str(path)!r}"
                       + (f" (from {value!r})" if value != str(path) else ""))
        return str(path)

    return Annotated[str, BeforeValidator(check), Expect(what)]


def tagged(key: str, variants: Sequence[type[BaseModel]]) -> Any:
    """A union of models told apart by the value of ``key`` (each variant has a Literal default).

    An unknown or missing ``key`` is one clear error listing the valid values.
    """
    by_value: dict[str, str] = {}
    for cls in variants:
        value = cls.model_fields[key].default
        tag = f"~{cls.__name__}"
        TAGS[tag], TAG_LABELS[tag], by_value[value] = cls, f"{key} {value!r}", tag

    def pick(data: Any) -> str | None:
        if isinstance(data, BaseModel):  # serializing a validated config
            return f"~{type(data).__name__}"
        if isinstance(data, dict):
            return by_value.get(data.get(key))  # type: ignore[arg-type]
        return None

    members = tuple(Annotated[cls, Tag(f"~{cls.__name__}")] for cls in variants)
    # the message carries "key|choice,choice" (a context dict would make the type unhashable)
    union = Discriminator(pick, custom_error_type=TAG_ERROR,
                          custom_error_message=f"{key}|{','.join(by_value)}")
    what = f"a mapping with {key}: one of {_quoted(list(by_value))}"
    return Annotated[Union[members], union, Expect(what)]  # noqa: UP007


def by_shape(scalar: Any, mapping: Any, what: str) -> Any:
    """A scalar (``scalar`` type) or a mapping (``mapping``: a model or a tagged union)."""
    if isinstance(mapping, type) and issubclass(mapping, BaseModel):
        mapping_tag = f"~{mapping.__name__}"
        TAGS[mapping_tag] = mapping
    else:
        mapping_tag = "~mapping"

    def pick(data: Any) -> str:
        return mapping_tag if isinstance(data, (dict, BaseModel)) else "~scalar"

    union = Union[Annotated[scalar, Tag("~scalar")], Annotated[mapping, Tag(mapping_tag)]]  # noqa: UP007
    return Annotated[union, Discriminator(pick), Expect(what)]


__all__ = [
    "CROSS_ERROR",
    "FIELD_ERROR",
    "TAGS",
    "TAG_ERROR",
    "TAG_LABELS",
    "Expect",
    "StrictModel",
    "by_shape",
    "choice",
    "cross_fail",
    "existing_file",
    "fail",
    "integer",
    "nearest_first",
    "number",
    "pattern",
    "registered",
    "size",
    "size_list",
    "suggest",
    "tagged",
]
