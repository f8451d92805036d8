"""sim.units: sizes and numbers as YAML users write them (PyYAML reads '1e9' as a string)."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.units import UnitError, format_size, parse_int, parse_number, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (65536, 65536),
        ("64Ki", 64 * 1024),
        ("16Mi", 16 * 1024 * 1024),
        ("1Gi", 1024**3),
        ("1M", 1_000_000),
        ("2k", 2_000),
        ("3G", 3 * 10**9),
        ("1e6", 1_000_000),
        ("1.5Ki", 1536),
        ("1_000", 1000),
        (" 8Mi ", 8 * 2**20),
        (2048.0, 2048),
        (0, 0),
    ],
)
def test_parse_size_accepts(text, expected):
    assert parse_size(text, "f") == expected
    assert isinstance(parse_size(text, "f"), int)


def test_parse_size_large_ints_stay_exact():
    assert parse_size("9007199254740993") == 2**53 + 1  # a float detour would lose the 1


@pytest.mark.parametrize("bad", [-1, "-3", 1.5, "1.5", "abc", "", True, None, [1], "1e-3",
                                 float("inf"), "64KB"])
def test_parse_size_rejects(bad):
    with pytest.raises(UnitError, match=r"^tokens: "):
        parse_size(bad, "tokens")


def test_bare_K_is_refused_with_a_hint():
    with pytest.raises(UnitError, match=r"use k for 1000 or Ki for 1024"):
        parse_size("64K", "unique_tokens")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e9", 1_000_000_000), ("3.35e12", 3.35e12), ("2.5", 2.5), (7, 7), (0.25, 0.25),
     ("-3", -3), ("1.5k", 1500), (".5", 0.5)],
)
def test_parse_number_accepts(text, expected):
    assert parse_number(text) == expected


def test_parse_number_keeps_whole_exponents_integral():
    assert isinstance(parse_number("1e9"), int)
    assert isinstance(parse_number("2.5"), float)


@pytest.mark.parametrize("bad", [True, False, "nan", "inf", float("nan"), "1e400", "x", {}, None])
def test_parse_number_rejects(bad):
    with pytest.raises(UnitError, match=r"^rate: expected a (finite )?number"):
        parse_number(bad, "rate")


def test_parse_int_rejects_fractions():
    assert parse_int("-2") == -2
    with pytest.raises(UnitError, match="whole number"):
        parse_int(2.5, "n")


def test_unit_error_is_a_value_error_with_reason():
    with pytest.raises(ValueError) as info:
        parse_size(-3, "chunk_tokens")
    assert info.value.reason == "expected a size >= 0, got -3"
    assert str(info.value) == "chunk_tokens: expected a size >= 0, got -3"


@pytest.mark.parametrize(("n", "text"), [(65536, "64Ki"), (2_000_000, "2M"), (16 * 2**20, "16Mi"),
                                         (1000, "1k"), (7, "7"), (0, "0")])
def test_format_size(n, text):
    assert format_size(n) == text


@given(st.integers(min_value=0, max_value=2**62))
def test_format_then_parse_round_trips(n):
    assert parse_size(format_size(n)) == n


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_parse_number_reads_repr_of_any_float(x):
    assert math.isclose(parse_number(repr(x)), x, rel_tol=0, abs_tol=0)


def test_overlong_numeric_strings_are_refused_before_parsing():
    """Python refuses int() of over 4300 digits with a bare ValueError; a 100-character
    limit turns any such string into a UnitError that names the field."""
    from sim.units import MAX_NUMBER_CHARS

    assert parse_number("9" * MAX_NUMBER_CHARS) == int("9" * MAX_NUMBER_CHARS)
    for text in ("9" * (MAX_NUMBER_CHARS + 1), "1" + "0" * 5000, "1" * 10**6 + "Ki"):
        with pytest.raises(UnitError, match=r"seed: expected a number of at most 100 characters"):
            parse_int(text, "seed")
