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
import stat
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

# Plausibility bounds (docs/config.md, "Bounds"): far beyond any real cluster or workload,
# and low enough that no accepted value overflows the integer-ns clock, int64 arrays or a
# float (a run's simulated time stays below 2^63 ns, about 292 years).
MAX_NODES = 4096  #: nodes in one group; also hosts per leaf, spines, tp
MIN_BANDWIDTH_GBPS = 1e-3  #: 1 MB/s
MAX_BANDWIDTH_GBPS = 1e6  #: 1 PB/s
MAX_LATENCY_NS = 1e10  #: 10 s
MAX_PRICE_PER_HOUR = 1e6  #: USD per node hour
MAX_CONTEXT_TOKENS = 2**30  #: one request's own context (1Gi tokens)
MAX_SHARED_TOKENS = 2**34  #: one shared corpus (16Gi tokens)
MAX_CORPORA = 100_000  #: distinct shared corpora
MAX_CV = 10.0  #: coefficient of variation of a token distribution (its far tail x KV
# bytes per token stays within int64)
MAX_ZIPF = 100.0  #: Zipf exponent
MAX_BATCH = 2**20  #: queries in one batch, requests running or in the analysis sweep
MAX_WINDOW_US = 1e9  #: batching window (1000 s)
MAX_REQUESTS = 10**7  #: requests one run simulates (also arrivals planned from a duration)
MAX_DURATION_S = 1e8  #: simulated seconds (about 3 years)
MAX_SEED = 2**63 - 1
MAX_LIST = 1024  #: items in a sweep list
MIN_RATE_PER_S = 1e-6  #: one request every 11.6 days
MAX_RATE_PER_S = 1e9
MAX_CONCURRENCY = 10**6  #: closed-loop clients
MIN_TIME_SCALE, MAX_TIME_SCALE = 1e-6, 100.0  #: trace time multiplier (trace spans
# are at most 1e7 s, workloads.arrivals.trace_rows.MAX_TRACE_SPAN_NS)
#: upper/lower bounds of each arrival parameter (its declared gt/ge stay the floor)
ARRIVAL_LIMITS: dict[str, dict[str, float]] = {
    "rate_per_s": {"ge": MIN_RATE_PER_S, "le": MAX_RATE_PER_S},
    "cv": {"ge": 1e-3, "le": 100.0},
    "concurrency": {"le": MAX_CONCURRENCY},
    "time_scale": {"ge": MIN_TIME_SCALE, "le": MAX_TIME_SCALE},
}

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


def _floor_text(gt: float | None, ge: float | None) -> str:
    """The declared floor in words: ``> gt`` when there is one (the natural bound), else
    ``>= ge``."""
    return _bounds_text(gt, None if gt is not None else ge, None, None)


def _range_text(gt: float | None, ge: float | None, lt: float | None, le: float | None) -> str:
    """The whole range, the tighter floor only (``>= 1e-06`` rather than ``> 0 and >=``)."""
    if gt is not None and ge is not None:
        gt, ge = (None, ge) if ge > gt else (gt, None)
    return _bounds_text(gt, ge, lt, le)


def _broken(x: float, gt: float | None, ge: float | None, lt: float | None,
            le: float | None) -> str | None:
    """The first bound ``x`` breaks, in words (``> 0``, ``>= 1e-06``, ``<= 4096``), or None."""
    for op, v, ok in ((">", gt, lambda b: x > b), (">=", ge, lambda b: x >= b),
                      ("<", lt, lambda b: x < b), ("<=", le, lambda b: x <= b)):
        if v is not None and not ok(v):
            return f"{op} {_num(v)}"
    return None


def number(*, gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None) -> Any:
    """A real number (resolved as float) within the given bounds; '1e9' and '2.5k' accepted.

    An error names the floor broken (``expected a number > 0, got -3``) or, above the
    ceiling, the whole range (``expected a number >= 1e-06 and <= 1000000000, got 1e+30``;
    the ceilings are the plausibility bounds of docs/config.md); what is not a number gets
    the floor (``expected a number > 0, got 'abc'``).
    """
    what = f"a number {_range_text(gt, ge, lt, le)}".strip()
    floor = f"a number {_floor_text(gt, ge)}".strip()

    def check(value: Any) -> float:
        try:
            x = float(parse_number(value))
        except UnitError as exc:
            why = f"; {exc.reason}" if exc.reason.startswith("unknown suffix") else ""
            raise fail(f"expected {floor}, got {describe(value)}{why}") from None
        except OverflowError:  # an integer too large for a float
            raise fail(f"expected {what}, got {describe(value)}") from None
        if broken := _broken(x, gt, ge, lt, le):
            shown = what if broken[0] == "<" else f"a number {broken}"
            raise fail(f"expected {shown}, got {describe(value)}")
        return x

    return Annotated[float, BeforeValidator(check), Expect(what)]


def integer(*, ge: int | None = None, le: int | None = None, size: bool = False) -> Any:
    """A whole number within bounds; ``size=True`` for counts of tokens ('64Ki', '16Mi', '1M').

    An error names the bound broken, as for :func:`number`.
    """
    noun = "a size" if size else "an integer"
    example = " (an integer, or a string such as '64Ki', '16Mi', '1M')" if size else ""
    what = f"{noun} {_bounds_text(None, ge, None, le)}".strip()
    floor = f"{noun} {_floor_text(None, ge)}".strip()

    def check(value: Any) -> int:
        try:
            n = parse_int(value)
        except UnitError as exc:
            why = f"; {exc.reason}" if exc.reason.startswith("unknown suffix") else ""
            raise fail(f"expected {floor}{example}, got {describe(value)}{why}") from None
        if broken := _broken(n, None, ge, None, le):
            shown = what if broken[0] == "<" else f"{noun} {broken}"
            raise fail(f"expected {shown}, got {describe(value)}")
        return n

    return Annotated[int, BeforeValidator(check), Expect(what)]


def size(*, ge: int = 0, le: int | None = None) -> Any:
    """A token count >= ``ge`` (and <= ``le``): an int or '64Ki' (binary), '1M' (decimal),
    '1e6', '1_000'."""
    return integer(ge=ge, le=le, size=True)


def size_list(*, ge: int = 1, le: int | None = None, max_items: int = MAX_LIST) -> Any:
    """A non-empty list of at most ``max_items`` sizes, resolved as a tuple (configs are
    immutable)."""
    item = integer(ge=ge, le=le, size=True)
    what = f"a non-empty list of at most {max_items} sizes >= {ge}"

    def check(value: Any) -> tuple[int, ...]:
        if not isinstance(value, (list, tuple)) or not value or len(value) > max_items:
            raise fail(f"expected {what}, got {describe(value)}")
        return tuple(value)

    return Annotated[tuple[item, ...], BeforeValidator(check), Expect(what)]


def arrival_bounds(name: str, gt: float | None, ge: float | None) -> dict[str, float | None]:
    """Bounds of an arrival parameter: its declared ``gt``/``ge`` tightened by
    :data:`ARRIVAL_LIMITS` (a plausible floor and ceiling)."""
    limits = ARRIVAL_LIMITS.get(name, {})
    floor = limits.get("ge")
    if floor is not None and (ge is None or floor > ge):
        ge = floor
    return {"gt": gt, "ge": ge, "le": limits.get("le")}


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
        if "\0" in value or len(value) > 4095:
            raise fail(f"expected {what}, got {describe(value)}")
        path = Path(os.path.abspath(Path(base) / Path(value).expanduser()))
        try:
            mode = path.stat().st_mode
        except OSError:
            mode = None
        if mode is None:
            raise fail(f"file not found: {str(path)!r}"
                       + (f" (from {value!r})" if value != str(path) else ""))
        if not stat.S_ISREG(mode):
            kind = ("a folder" if stat.S_ISDIR(mode) else "a named pipe"
                    if stat.S_ISFIFO(mode) else "a device or socket")
            raise fail(f"expected a regular file, got {kind}: {str(path)!r}")
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
    "ARRIVAL_LIMITS",
    "CROSS_ERROR",
    "FIELD_ERROR",
    "TAGS",
    "TAG_ERROR",
    "TAG_LABELS",
    "Expect",
    "StrictModel",
    "arrival_bounds",
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
