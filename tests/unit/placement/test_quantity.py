import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aviator.placement import quantity
from aviator.placement.quantity import (
    MAX_BINARY,
    NANO,
    Format,
    Quantity,
    QuantityError,
    format_quantity,
    parse_quantity,
)

GI = 2**30


@pytest.mark.parametrize(
    ("text", "value", "canonical", "fmt"),
    [
        ("80Gi", 80 * GI, "80Gi", Format.BINARY_SI),
        ("40G", 40 * 10**9, "40G", Format.DECIMAL_SI),
        ("500m", Fraction(1, 2), "500m", Format.DECIMAL_SI),
        ("1.5Ti", 1536 * GI, "1536Gi", Format.BINARY_SI),
        ("1e3", 1000, "1e3", Format.DECIMAL_EXPONENT),
        ("1E3", 1000, "1e3", Format.DECIMAL_EXPONENT),
        ("1e-3", Fraction(1, 1000), "1e-3", Format.DECIMAL_EXPONENT),
        ("16", 16, "16", Format.DECIMAL_SI),
        ("0", 0, "0", Format.DECIMAL_SI),
        ("-0", 0, "0", Format.DECIMAL_SI),
        ("1.5", Fraction(3, 2), "1500m", Format.DECIMAL_SI),
        ("1.5Gi", 1536 * 2**20, "1536Mi", Format.BINARY_SI),
        ("1000000", 10**6, "1M", Format.DECIMAL_SI),
        ("1500", 1500, "1500", Format.DECIMAL_SI),
        ("-1.5", Fraction(-3, 2), "-1500m", Format.DECIMAL_SI),
        ("+3k", 3000, "3k", Format.DECIMAL_SI),
        (".5", Fraction(1, 2), "500m", Format.DECIMAL_SI),
        ("5.", 5, "5", Format.DECIMAL_SI),
        ("1.G", 10**9, "1G", Format.DECIMAL_SI),
        ("007", 7, "7", Format.DECIMAL_SI),
        ("1n", Fraction(1, NANO), "1n", Format.DECIMAL_SI),
        ("1u", Fraction(1, 10**6), "1u", Format.DECIMAL_SI),
        ("1E", 10**18, "1E", Format.DECIMAL_SI),
        ("1000E", 10**21, "1000E", Format.DECIMAL_SI),
        ("1e21", 10**21, "1e21", Format.DECIMAL_EXPONENT),
        ("2048", 2048, "2048", Format.DECIMAL_SI),
        ("2Ki", 2048, "2Ki", Format.BINARY_SI),
        ("-2Ki", -2048, "-2Ki", Format.BINARY_SI),
        ("1000Ki", 1024000, "1000Ki", Format.BINARY_SI),
        ("1536", 1536, "1536", Format.DECIMAL_SI),
        # Binary values under 1024 or with a fraction are written in decimal, like upstream.
        ("0.5Ki", 512, "512", Format.BINARY_SI),
        ("1.5Ki", 1536, "1536", Format.BINARY_SI),
    ],
)
def test_parse_and_canonical_form(text: str, value: Fraction, canonical: str, fmt: Format) -> None:
    q = parse_quantity(text)
    assert q.value == value
    assert q.format is fmt
    assert str(q) == canonical == format_quantity(q)
    assert parse_quantity(canonical) == q


@pytest.mark.parametrize(
    "text",
    ["", "-", "+", ".", "Gi", "e3", " 1", "1 ", "1K", "1ki", "1e", "1Gib", "1.2.3", "1e1001",
     "\u0661", "1_000", "0x10", "1,5", "\u0661Gi"],
)  # fmt: skip
def test_rejects(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_quantity_error_is_a_value_error_and_names_the_input() -> None:
    with pytest.raises(ValueError, match=r"'1K': unknown suffix 'K'"):
        parse_quantity("1K")


def test_more_precise_than_a_nano_rounds_away_from_zero() -> None:
    assert str(parse_quantity("0.1n")) == "1n"
    assert str(parse_quantity("-0.1n")) == "-1n"
    assert parse_quantity("1.0000000001").nanos == NANO + 1
    assert str(parse_quantity("1e-1000")) == "1e-9"  # the format is kept


def test_binary_quantities_are_capped_at_int64_like_upstream() -> None:
    assert parse_quantity("8Ei").value == MAX_BINARY
    assert parse_quantity("-9Ei").value == -MAX_BINARY
    assert parse_quantity("9223372036854775807").value == MAX_BINARY  # decimal: not capped
    assert parse_quantity("10E").value == 10 * 10**18


def test_int_input_and_type_errors() -> None:
    assert parse_quantity(16) == parse_quantity("16")
    with pytest.raises(QuantityError):
        parse_quantity(True)
    with pytest.raises(QuantityError):
        parse_quantity(1.5)  # type: ignore[arg-type]  # a float is inexact: refused


def test_equality_ordering_and_hash_go_by_value() -> None:
    assert parse_quantity("1Ki") == parse_quantity("1024") == parse_quantity("1.024k")
    assert str(parse_quantity("1Ki")) != str(parse_quantity("1024"))
    assert hash(parse_quantity("1Ki")) == hash(parse_quantity("1024"))
    assert len({parse_quantity("1Gi"), parse_quantity("1073741824")}) == 1
    assert parse_quantity("1Gi") > parse_quantity("1G") >= parse_quantity("1000M")
    assert parse_quantity("500m") < parse_quantity("1") <= parse_quantity("1000m")
    assert parse_quantity("1") != "1"
    assert sorted(map(parse_quantity, ["1Gi", "1G", "-1", "500m", "1e3"])) == list(
        map(parse_quantity, ["-1", "500m", "1e3", "1G", "1Gi"])
    )


def test_arithmetic_and_conversions() -> None:
    a, b = parse_quantity("80Gi"), parse_quantity("40Gi")
    assert a - b == b
    assert str(b + b) == "80Gi"
    assert (-a).sign == -1 and a.sign == 1 and parse_quantity("0").sign == 0
    assert not parse_quantity("0") and a
    assert a.to_int() == 80 * GI and a.is_integer()
    half = parse_quantity("500m")
    assert not half.is_integer()
    with pytest.raises(ValueError, match="not an integer"):
        half.to_int()
    assert half.ceil_int() == 1 and parse_quantity("-1.5").ceil_int() == -1
    assert half.milli_value() == 500 and parse_quantity("1n").milli_value() == 1
    assert half.as_float() == 0.5
    assert half.as_decimal() == Decimal("0.5")
    assert parse_quantity("1n").as_decimal() == Decimal("1E-9")
    assert parse_quantity("1e30").as_decimal() == Decimal(10**30)
    assert str(parse_quantity("-1500m").as_decimal()) == "-1.5"


def test_from_number_rounds_to_nanos() -> None:
    assert Quantity.from_number(Fraction(1, 3)).nanos == 333_333_334
    assert Quantity.from_number(Decimal("2.5"), Format.BINARY_SI).value == Fraction(5, 2)
    assert str(Quantity.from_number(3 * GI, Format.BINARY_SI)) == "3Gi"
    with pytest.raises(TypeError):
        Quantity.from_number(1.5)  # type: ignore[arg-type]


def test_repr() -> None:
    assert repr(parse_quantity("1.5Gi")) == "Quantity('1536Mi')"


def test_exports() -> None:
    assert set(quantity.__all__) == {
        "MAX_BINARY",
        "NANO",
        "Format",
        "Quantity",
        "QuantityError",
        "format_quantity",
        "parse_quantity",
    }


# --- Properties ---------------------------------------------------------------------------------

quantities = st.builds(
    Quantity,
    st.integers(min_value=-(10**30), max_value=10**30)
    | st.integers(min_value=-(10**12), max_value=10**12)
    | st.integers(min_value=-MAX_BINARY, max_value=MAX_BINARY).map(lambda n: n * NANO),
    st.sampled_from(Format),
).filter(
    # Parsing caps binary quantities at 2^63-1 (upstream's rule), so larger ones cannot round-trip.
    lambda q: q.format is not Format.BINARY_SI or abs(q.nanos) <= MAX_BINARY * NANO
)


@given(quantities)
def test_parse_of_format_round_trips(q: Quantity) -> None:
    text = format_quantity(q)
    again = parse_quantity(text)
    assert again == q
    assert format_quantity(again) == text  # canonical form is a fixed point


_MULTIPLIERS: dict[str, Fraction] = {
    **{s: Fraction(10) ** e for s, e in quantity._DECIMAL_SUFFIXES.items()},
    **{s: Fraction(2) ** e for s, e in quantity._BINARY_SUFFIXES.items()},
    **{f"e{e}": Fraction(10) ** e for e in range(-9, 25)},
    **{f"E+{e}": Fraction(10) ** e for e in range(0, 4)},
}


@st.composite
def quantity_texts(draw: st.DrawFn) -> tuple[str, Fraction]:
    """A quantity string and its value, computed without the parser."""
    whole = draw(st.integers(min_value=0, max_value=10**6))
    fraction = draw(st.text("0123456789", max_size=4))
    suffix = draw(st.sampled_from(sorted(_MULTIPLIERS)))
    negative = draw(st.booleans())
    text = f"{'-' if negative else ''}{whole}{'.' + fraction if fraction else ''}{suffix}"
    value = (whole + Fraction(int(fraction or "0"), 10 ** len(fraction))) * _MULTIPLIERS[suffix]
    nanos = math.ceil(value * NANO)  # rounding: up to the next nano-unit, away from zero
    if suffix in quantity._BINARY_SUFFIXES:
        nanos = min(nanos, MAX_BINARY * NANO)  # the cap on binary quantities
    return text, Fraction(-nanos if negative else nanos, NANO)


@given(quantity_texts(), quantity_texts())
def test_ordering_agrees_with_numeric_value(
    a: tuple[str, Fraction], b: tuple[str, Fraction]
) -> None:
    (text_a, value_a), (text_b, value_b) = a, b
    qa, qb = parse_quantity(text_a), parse_quantity(text_b)
    assert qa.value == value_a
    assert (qa < qb) == (value_a < value_b)
    assert (qa == qb) == (value_a == value_b)
    assert (qa > qb) == (value_a > value_b)
