"""Numbers and sizes as people write them in YAML: ``64Ki``, ``16Mi``, ``1M``, ``1_000``, ``1e9``.

PyYAML (YAML 1.1) reads ``1e9`` and ``3.35e12`` as *strings* and ``no``/``on`` as booleans,
so every field that expects a number goes through these parsers rather than trusting the
type YAML picked. Binary suffixes are powers of 1024 (``Ki Mi Gi Ti``), decimal ones powers
of 1000 (``k M G T``); a bare ``K`` is refused because it is ambiguous.
"""

from __future__ import annotations

import math
import re

BINARY_SUFFIXES: dict[str, int] = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
DECIMAL_SUFFIXES: dict[str, int] = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
SUFFIXES: dict[str, int] = {**BINARY_SUFFIXES, **DECIMAL_SUFFIXES}
MAX_NUMBER_CHARS = 100  #: longest numeric string parsed

# sign, then a decimal or float literal (underscores between digits), then an optional suffix
_NUMBER_RE = re.compile(
    r"^(?P<num>[+-]?(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d+)?)"
    r"\s*(?P<suffix>[A-Za-z]*)$"
)


class UnitError(ValueError):
    """A value that is not the number or size a field expects; the message names the field.

    ``reason`` is the message without the field name, for callers that add their own.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, reason
        super().__init__(f"{field}: {reason}")


def describe(value: object) -> str:
    """``value`` as an error message shows it: repr, shortened, with booleans called out."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    if isinstance(value, bool):
        text += " (a boolean; YAML reads yes/no/on/off as booleans)"
    return text


def _from_string(text: str, field: str) -> int | float:
    """Parse a numeric string with an optional suffix; integers stay exact (no float detour).

    Strings over MAX_NUMBER_CHARS characters are refused before parsing (Python refuses to
    convert integers of over 4300 digits, and nothing plausible needs 100).
    """
    if len(text) > MAX_NUMBER_CHARS:
        raise UnitError(field, f"expected a number of at most {MAX_NUMBER_CHARS} characters, "
                               f"got {describe(text)} ({len(text):,} characters)")
    match = _NUMBER_RE.match(text.strip())
    if not match:
        raise UnitError(field, f"expected a number, got {describe(text)}")
    num, suffix = match["num"].replace("_", ""), match["suffix"]
    if suffix and suffix not in SUFFIXES:
        hint = " (use k for 1000 or Ki for 1024)" if suffix == "K" else ""
        raise UnitError(field, f"unknown suffix {suffix!r} in {text!r}{hint}; "
                               f"expected one of {', '.join(SUFFIXES)}")
    scale = SUFFIXES.get(suffix, 1)
    if re.fullmatch(r"[+-]?\d+", num):
        return int(num) * scale
    value = float(num) * scale
    if value.is_integer() and ("e" in num.lower() or suffix):
        return int(value)  # '1e9', '1.5Ki' are whole numbers written compactly
    return value


def parse_number(value: object, field: str = "value") -> int | float:
    """A finite real number from an int, float or numeric string ('1e9', '2.5k', '1_000').

    Integers (and whole numbers written with an exponent or suffix) come back as ``int``.
    """
    if isinstance(value, bool):
        raise UnitError(field, f"expected a number, got {describe(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnitError(field, f"expected a finite number, got {describe(value)}")
        return value
    if isinstance(value, str):
        result = _from_string(value, field)
        if isinstance(result, float) and not math.isfinite(result):
            raise UnitError(field, f"expected a finite number, got {describe(value)}")
        return result
    raise UnitError(field, f"expected a number, got {describe(value)}")


def parse_int(value: object, field: str = "value") -> int:
    """A whole number (any sign) from an int, a whole float or a string ('64Ki', '1e6')."""
    number = parse_number(value, field)
    if isinstance(number, float):
        if not number.is_integer():
            raise UnitError(field, f"expected a whole number, got {describe(value)}")
        number = int(number)
    return number


def parse_size(value: object, field: str = "value") -> int:
    """A count of things (tokens, bytes) >= 0: ``65536``, ``'64Ki'``, ``'1M'``, ``'1e6'``."""
    try:
        size = parse_int(value, field)
    except UnitError as exc:
        if exc.reason.startswith("unknown suffix"):
            raise
        raise UnitError(field, f"expected a size (an integer >= 0, or a string such as "
                               f"'64Ki', '16Mi', '1M', '1e6'), got {describe(value)}") from exc
    if size < 0:
        raise UnitError(field, f"expected a size >= 0, got {describe(value)}")
    return size


def format_size(n: int) -> str:
    """The shortest exact spelling of ``n`` for people: 65536 -> '64Ki', 2000000 -> '2M'."""
    for suffixes in (BINARY_SUFFIXES, DECIMAL_SUFFIXES):
        for suffix, scale in reversed(suffixes.items()):
            if n and n % scale == 0:
                return f"{n // scale}{suffix}"
    return str(n)


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: a duration as a person reads it."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


__all__ = [
    "BINARY_SUFFIXES",
    "DECIMAL_SUFFIXES",
    "MAX_NUMBER_CHARS",
    "SUFFIXES",
    "UnitError",
    "describe",
    "format_duration",
    "format_size",
    "parse_int",
    "parse_number",
    "parse_size",
]
