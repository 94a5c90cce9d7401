"""Kubernetes ``resource.Quantity``: parse, compare, add and format, exactly.

The grammar is apimachinery's (``k8s.io/apimachinery/pkg/api/resource/quantity.go``)::

    <quantity>        ::= <signedNumber><suffix>
    <signedNumber>    ::= <number> | +<number> | -<number>
    <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
    <decimalExponent> ::= e<signedInteger> | E<signedInteger>

so ``80Gi``, ``40G``, ``500m``, ``1.5Ti``, ``1e3`` and ``16`` all parse. As upstream:

- a value is kept exactly, as an integer count of nano-units (``10**-9``); a more precise input is
  rounded *away from zero* to the next nano-unit ("if you want some resources you should get
  some", upstream's words), so ``0.1n`` is ``1n``;
- a binary-suffixed value is capped at ``2**63 - 1`` in magnitude (a decimal one is not);
- the suffix style (``Format``) is remembered and used again when formatting, in canonical form:
  the largest suffix that loses nothing and leaves no fractional digits (``1.5Gi`` → ``1536Mi``,
  ``1.5`` → ``1500m``, ``1000000`` → ``1M``, ``0`` → ``0``).

Deliberate differences from upstream: a quantity needs at least one digit (upstream reads ``-``,
``+`` and ``.`` as zero), an exponent is limited to ±1000 (upstream wraps it into an int32), and a
decimal value of 1000E or more formats with the ``E`` suffix and a larger mantissa (upstream
prints a number without its exponent there).

Equality, ordering and hashing go by value alone: ``1Ki == 1024`` although they format
differently.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

__all__ = [
    "MAX_BINARY",
    "NANO",
    "Format",
    "Quantity",
    "QuantityError",
    "format_quantity",
    "parse_quantity",
]

NANO = 10**9
"""Nano-units per unit: the resolution of every quantity."""

MAX_BINARY = 2**63 - 1
"""Upstream's cap on the magnitude of a binary-suffixed quantity (``maxAllowed``)."""

_MAX_EXPONENT = 1000

_DECIMAL_SUFFIXES = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}
_DECIMAL_BY_EXPONENT = {exponent: suffix for suffix, exponent in _DECIMAL_SUFFIXES.items()}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_BINARY_BY_POWER = {power // 10: suffix for suffix, power in _BINARY_SUFFIXES.items()}

# [0-9], not \d: \d also matches non-ASCII digits.
_NUMBER = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(.*)", re.DOTALL)
_EXPONENT = re.compile(r"[eE]([+-]?[0-9]+)")


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


class Format(enum.StrEnum):
    """How a quantity is written (upstream's ``resource.Format``)."""

    DECIMAL_SI = "DecimalSI"
    """``12M`` = 12 * 10^6, ``500m``."""
    BINARY_SI = "BinarySI"
    """``12Mi`` = 12 * 2^20."""
    DECIMAL_EXPONENT = "DecimalExponent"
    """``12e6``."""


@dataclass(frozen=True, slots=True, eq=False)
class Quantity:
    """An exact quantity: ``nanos`` * 10^-9, written in ``format``.

    Build one with :func:`parse_quantity` or :meth:`from_number`; compare with the usual operators
    (by value), add and subtract, and format with ``str()``.
    """

    nanos: int
    """The value in nano-units (an exact integer)."""
    format: Format = Format.DECIMAL_SI

    @classmethod
    def from_number(
        cls, value: int | Fraction | Decimal, format: Format = Format.DECIMAL_SI
    ) -> Quantity:
        """The quantity of an exact number, rounded away from zero to the next nano-unit."""
        if isinstance(value, bool) or not isinstance(value, (int, Fraction, Decimal)):
            raise TypeError(f"expected an int, Fraction or Decimal, got {type(value).__name__}")
        return cls(_round_to_nanos(Fraction(value)), format)

    @property
    def value(self) -> Fraction:
        """The exact value."""
        return Fraction(self.nanos, NANO)

    def as_decimal(self) -> Decimal:
        """The exact value as a ``Decimal`` (built digit by digit: no context rounding)."""
        mantissa, exponent = abs(self.nanos), -9
        while exponent < 0 and mantissa and mantissa % 10 == 0:
            mantissa //= 10
            exponent += 1
        digits = tuple(int(d) for d in str(mantissa))
        return Decimal((int(self.nanos < 0), digits, exponent if mantissa else 0))

    def is_integer(self) -> bool:
        return self.nanos % NANO == 0

    def to_int(self) -> int:
        """The value as an integer; ``ValueError`` if it has a fractional part."""
        whole, rest = divmod(self.nanos, NANO)
        if rest:
            raise ValueError(f"{self} is not an integer")
        return whole

    def ceil_int(self) -> int:
        """The value rounded up (towards +∞) to an integer, like upstream's ``Value()`` for a
        positive quantity."""
        return -(-self.nanos // NANO)

    def milli_value(self) -> int:
        """The value in milli-units, rounded up (upstream's ``MilliValue()``)."""
        return -(-self.nanos // 10**6)

    def as_float(self) -> float:
        """An approximate float (upstream's ``AsApproximateFloat64``)."""
        return self.nanos / NANO

    @property
    def sign(self) -> int:
        return (self.nanos > 0) - (self.nanos < 0)

    def __add__(self, other: Quantity) -> Quantity:
        if not isinstance(other, Quantity):
            return NotImplemented
        return Quantity(self.nanos + other.nanos, self.format)

    def __sub__(self, other: Quantity) -> Quantity:
        if not isinstance(other, Quantity):
            return NotImplemented
        return Quantity(self.nanos - other.nanos, self.format)

    def __neg__(self) -> Quantity:
        return Quantity(-self.nanos, self.format)

    def __bool__(self) -> bool:
        return self.nanos != 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.nanos == other.nanos

    def __hash__(self) -> int:
        return hash(self.nanos)

    def __lt__(self, other: Quantity) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.nanos < other.nanos

    def __le__(self, other: Quantity) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.nanos <= other.nanos

    def __gt__(self, other: Quantity) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.nanos > other.nanos

    def __ge__(self, other: Quantity) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.nanos >= other.nanos

    def __str__(self) -> str:
        return _canonical(self)

    def __repr__(self) -> str:
        return f"Quantity({_canonical(self)!r})"


def parse_quantity(text: str | int) -> Quantity:
    """Parse a Kubernetes quantity (``80Gi``, ``40G``, ``500m``, ``1.5Ti``, ``1e3``, ``16``).

    An ``int`` is taken as a plain number. Raises :class:`QuantityError`.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise QuantityError(f"a quantity is a string or an integer, not {type(text).__name__}")
    if isinstance(text, int):
        return Quantity(text * NANO, Format.DECIMAL_SI)
    match = _NUMBER.fullmatch(text)
    if match is None or not (match[2] or match[3]):
        raise QuantityError(
            f"{text!r} is not a quantity: expected a number like 80Gi, 500m, 1e3 or 16"
        )
    sign, whole, fraction, suffix = match[1], match[2], match[3] or "", match[4]
    if suffix in _DECIMAL_SUFFIXES:
        base, exponent, fmt = 10, _DECIMAL_SUFFIXES[suffix], Format.DECIMAL_SI
    elif suffix in _BINARY_SUFFIXES:
        base, exponent, fmt = 2, _BINARY_SUFFIXES[suffix], Format.BINARY_SI
    elif exp := _EXPONENT.fullmatch(suffix):
        base, exponent, fmt = 10, int(exp[1]), Format.DECIMAL_EXPONENT
        if abs(exponent) > _MAX_EXPONENT:
            raise QuantityError(f"{text!r}: exponent out of range (at most ±{_MAX_EXPONENT})")
    else:
        raise QuantityError(
            f"{text!r}: unknown suffix {suffix!r}; expected one of "
            "n u m k M G T P E, Ki Mi Gi Ti Pi Ei, or an exponent like e3"
        )
    value = Fraction(int(whole + fraction), 10 ** len(fraction)) * Fraction(base) ** exponent
    nanos = _round_to_nanos(value)
    if fmt is Format.BINARY_SI:
        nanos = min(nanos, MAX_BINARY * NANO)
        if 0 < nanos < NANO:
            fmt = Format.DECIMAL_SI
    return Quantity(-nanos if sign == "-" else nanos, fmt)


def format_quantity(quantity: Quantity) -> str:
    """The canonical string of a quantity (the same as ``str(quantity)``)."""
    return _canonical(quantity)


def _round_to_nanos(value: Fraction) -> int:
    """``value`` in nano-units, rounded away from zero."""
    scaled = value * NANO
    magnitude = -(-abs(scaled.numerator) // scaled.denominator)
    return -magnitude if scaled < 0 else magnitude


def _canonical(quantity: Quantity) -> str:
    nanos = quantity.nanos
    if nanos == 0:
        return "0"
    fmt = quantity.format
    if fmt is Format.BINARY_SI and (
        abs(nanos) < 1024 * NANO or nanos % NANO or (nanos // NANO) % 1024
    ):
        # Small, fractional or suffix-less binary values are written in decimal: a bare number
        # parses back as decimal, so writing it bare would make the canonical form not a fixed
        # point ("225000" -> "225k").
        fmt = Format.DECIMAL_SI
    if fmt is Format.BINARY_SI:
        mantissa, power = nanos // NANO, 0
        while mantissa % 1024 == 0 and power < 6:
            mantissa //= 1024
            power += 1
        return f"{mantissa}{_BINARY_BY_POWER.get(power, '')}"
    # Decimal: move every factor of ten into the exponent, then step down to a multiple of 3.
    mantissa, exponent = nanos, -9
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    while exponent % 3:
        mantissa *= 10
        exponent -= 1
    if fmt is Format.DECIMAL_EXPONENT:
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    if exponent > 18:
        mantissa *= 10 ** (exponent - 18)
        exponent = 18
    return f"{mantissa}{_DECIMAL_BY_EXPONENT[exponent]}"
