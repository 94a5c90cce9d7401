"""CEL device selectors with the semantics of Kubernetes Dynamic Resource Allocation.

A selector is a CEL expression over one variable, ``device`` (DRA's ``CELDeviceSelector``)::

    device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'
    device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0
    device.attributes['gpu.nvidia.com'].productName.lowerAscii().matches('^.*a100.*$')
    device.attributes['gpu.nvidia.com'].driverVersion.isGreaterThan(semver('550.0.0'))

The device comes in the ResourceSlice shape (typed attributes ``{"string"|"int"|"bool"|"version":
v}``, capacities ``{"value": "80Gi"}``). Attributes and capacities are grouped by domain: a
qualified name ``domain/name`` belongs to ``domain``, an unqualified one to the driver's domain.
A domain the device does not have reads as an empty map; a name a domain does not have is an
evaluation error. Like DRA, that error never counts as a match; unlike DRA, which aborts the whole
allocation, the device is excluded and the :class:`Verdict` says why (``missing attribute
gpu.nvidia.com/productName``), so callers can count and report the excluded devices. ``has()``
guards work as upstream.

Use::

    selector = compile_selector(expression)        # once (~250 µs, then cached)
    ctx = selector_context(device)                 # once per device (~10 µs)
    verdict = selector.evaluate(ctx)               # per pair (3-20 µs; ~50 µs with matches()),
                                                   # plus ~60-80 µs on the context's first one
    key = selector.verdict_key(ctx)                # per pair (~1.5 µs); equal keys, equal verdicts

Cost (``bench/cel_selectors.py``, 2 cores). The binding (``common-expression-language``, a Rust
CEL) converts Python values into CEL values at about 2 µs per string and 4 µs per small map, so
turning a GPU into CEL costs 60-110 µs, far more than evaluating a selector against it (3 µs for
comparisons of attributes; 12-20 µs when ``quantity()``/``semver()`` and their methods, which run
as Python callbacks, are involved). :func:`selector_context` therefore converts the device once
— into CEL-shaped Python values at once, into a ``cel.Context`` (the device plus the functions
below) on its first evaluation — and keeps both; reuse it for every selector and every
allocation attempt while the device is unchanged. Better still, most devices of a fleet share a
shape (product, memory, driver version) and differ only in names, uuids and bus ids, which
selectors rarely read: :meth:`CompiledSelector.verdict_key` says which values a verdict depends
on, so a caller evaluates once per distinct key and most contexts never reach the binding.
:meth:`CompiledSelector.evaluate` also accepts a plain device mapping and then converts it for
that one call (about 25x slower for a simple selector).

Functions beyond the binding's CEL core (``size``, ``matches``, ``startsWith``, ``endsWith``,
``contains``, conversions, timestamps, optionals), from the Kubernetes CEL environment:

- quantities: ``quantity(s)``, ``isQuantity(s)``, and on a quantity ``compareTo``,
  ``isGreaterThan``, ``isLessThan``, ``add``, ``sub`` (quantity or int), ``sign``, ``isInteger``,
  ``asInteger``, ``asApproximateFloat``; ``==`` compares values (``quantity('1Ki') ==
  quantity('1024')``). Capacities are quantities.
- versions: ``semver(s)``, ``semver(s, normalize)``, ``isSemver(s[, normalize])``, and on a
  version ``compareTo``, ``isGreaterThan``, ``isLessThan``, ``major``, ``minor``, ``patch``;
  ``==`` compares precedence (build metadata ignored). Version attributes are versions.
- strings: ``lowerAscii``, ``upperAscii``, ``trim``, ``charAt``, ``indexOf``, ``lastIndexOf``,
  ``substring``, ``replace``, ``split``, and ``join`` on a list.

The binding calls a custom function both as ``f(a, b)`` and as ``a.f(b)``, but its values must be
plain CEL values, so a quantity is a one-entry map ``{"__quantity__": "<canonical decimal>"}`` and
a version ``{"__semver__": "<canonical>"}``. That keeps DRA's typing where it matters:
``memory > 40`` or ``memory < quantity('1Gi')`` is a "no such overload" error, as upstream, rather
than a silent comparison in the wrong unit, and ``==`` is exact because the canonical form is
unique per value.

Checks at compile time: syntax (CEL's message with line:column and a caret), the 10 KiB limit,
undeclared variables and functions (from the parsed expression, so every branch is covered),
fields ``device`` does not have, literal ``matches()`` patterns, ``quantity()`` and ``semver()``
strings that cannot parse, and — by one dry run against an empty device — a result that is not a
bool. Attribute and capacity names are not checked: which exist is a property of the device.

Gaps against upstream DRA CEL (cel-go in kube-apiserver):

- no cost limit: the binding has no cost estimator; an expression's run time is bounded only by
  the 10 KiB limit and by the size of the device's maps;
- no static type checking: a type error shows up when a device reaches it (as a verdict error,
  never as an exception), not when the selector is written;
- ``cel.bind()``, the optional syntax ``.?field`` / ``[?key]`` and two-variable comprehensions are
  not supported by the binding (the first is reported as such, the others as syntax errors);
- ``matches()`` is the binding's: Rust ``regex`` syntax (RE2-like, Unicode-aware ``\\d``/``\\w``),
  and the pattern is compiled on every call (~75 µs), so it dominates any selector that uses it;
  prefer ``startsWith``/``endsWith``/``contains`` on hot paths;
- an error inside ``exists()`` is not absorbed by a later true element;
- a version or quantity compared with ``==`` to a value of another type is false (upstream: a
  "no such overload" error); quantities carry no format inside CEL;
- missing from the Kubernetes library: ``url``, ``ip``/``cidr``, ``format``, ``find``/``findAll``,
  the list functions (``isSorted``, ``sum``, ``min``, ``max``, list ``indexOf``), ``reverse``.

The binding logs a warning on logger ``cel`` whenever a Python function raises. For the functions
registered here that is an expected outcome (a device of the wrong shape), already reported in
the verdict, so this module filters those records out of that logger.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aviator.api.errors import AviatorError, FieldError
from aviator.placement.quantity import NANO, Quantity, QuantityError, parse_quantity

if TYPE_CHECKING:
    # The binding is imported where an expression is first compiled or evaluated: importing it
    # takes ~0.4 s (its package imports its interactive shell, prompt_toolkit and all), which
    # every plane start and CLI command would pay for selectors most of them never see.
    import cel

__all__ = [
    "MAX_EXPRESSION_BYTES",
    "CompiledSelector",
    "SelectorContext",
    "SelectorError",
    "Verdict",
    "compile_selector",
    "selector_context",
]

MAX_EXPRESSION_BYTES: Final = 10 * 1024
"""DRA's limit on a selector (``CELSelectorExpressionMaxLength``), in UTF-8 bytes."""

_ERROR_MAX_CHARS = 300


class SelectorError(AviatorError, ValueError):
    """A selector that cannot work: bad syntax, too long, an undeclared name, not a bool.

    ``message`` is CEL-style, with ``line:column`` and a caret line where there is a position.
    """

    def __init__(self, message: str, *, expression: str) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression

    def to_field_error(self, field: str) -> FieldError:
        """The admission cause for the field that holds the expression."""
        return FieldError(field=field, message=self.message)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a device satisfies a selector; ``error`` says why it was excluded regardless."""

    matched: bool
    error: str | None = None


_MATCHED: Final = Verdict(matched=True)
_NOT_MATCHED: Final = Verdict(matched=False)


# --- Versions (Kubernetes' semver library, blang/semver semantics) -------------------------------

_NUMERIC = r"(?:0|[1-9][0-9]*)"
_PRE_ID = rf"(?:{_NUMERIC}|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(
    rf"({_NUMERIC})\.({_NUMERIC})\.({_NUMERIC})"
    rf"(?:-({_PRE_ID}(?:\.{_PRE_ID})*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)


@dataclass(frozen=True, slots=True)
class _Version:
    major: int
    minor: int
    patch: int
    pre: tuple[str, ...]
    key: tuple[Any, ...]
    """Precedence: a pre-release sorts before its release; numeric identifiers compare as numbers
    and before alphanumeric ones; more identifiers sort after fewer equal ones."""

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{'.'.join(self.pre)}" if self.pre else core


def _parse_version(text: str, *, normalize: bool = False) -> _Version:
    """Parse a semantic version (semver.org 2.0.0); ``normalize`` as ``semver(s, true)``: drop a
    leading ``v``, fill in a missing minor or patch, drop leading zeros."""
    if normalize:
        text = _normalize_version(text)
    match = _SEMVER.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a semantic version (like 1.2.3 or 1.2.3-rc.1)")
    major, minor, patch = int(match[1]), int(match[2]), int(match[3])
    pre = tuple(match[4].split(".")) if match[4] else ()
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre)
    return _Version(major, minor, patch, pre, key=(major, minor, patch, not pre, ids))


def _normalize_version(text: str) -> str:
    # Kubernetes' normalizeAndParse, step by step.
    parts = text.removeprefix("v").split(".", 2)
    for i, part in enumerate(parts):
        if len(part) > 1:
            trimmed = part.lstrip("0")
            parts[i] = trimmed if trimmed and trimmed[0] in "0123456789" else "0" + trimmed
    if len(parts) < 3:
        if any(c in parts[-1] for c in "+-"):
            raise ValueError(f"{text!r}: a short version cannot have pre-release or build metadata")
        parts += ["0"] * (3 - len(parts))
    return ".".join(parts)


# --- CEL encodings of quantities and versions -------------------------------------------------

_QUANTITY: Final = "__quantity__"
_SEMVER_KEY: Final = "__semver__"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class _CelFunctionError(Exception):
    """Raised inside a CEL function; the binding turns it into an evaluation error."""


def _encode_quantity(quantity: Quantity) -> dict[str, str]:
    # The exact value as a plain decimal, unique per value: "85899345920", "0.5", "-1.25".
    whole, nanos = divmod(abs(quantity.nanos), NANO)
    text = f"{whole}.{nanos:09d}".rstrip("0").rstrip(".") if nanos else str(whole)
    return {_QUANTITY: "-" + text if quantity.nanos < 0 else text}


def _encode_version(version: _Version) -> dict[str, str]:
    return {_SEMVER_KEY: str(version)}


@functools.lru_cache(maxsize=8192)
def _cached_quantity(text: str) -> Quantity:
    return parse_quantity(text)


@functools.lru_cache(maxsize=8192)
def _encoded_quantity(text: str) -> dict[str, str]:
    """``quantity(text)`` as CEL gets it. Shared: the binding copies it, nobody mutates it."""
    return _encode_quantity(_cached_quantity(text))


@functools.lru_cache(maxsize=4096)
def _cached_version(text: str, normalize: bool) -> _Version:
    return _parse_version(text, normalize=normalize)


@functools.lru_cache(maxsize=4096)
def _encoded_version(text: str, normalize: bool) -> dict[str, str]:
    """``semver(text, normalize)`` as CEL gets it (shared, like :func:`_encoded_quantity`)."""
    return _encode_version(_cached_version(text, normalize))


def _type_name(value: Any) -> str:
    if isinstance(value, dict) and len(value) == 1:
        if _QUANTITY in value:
            return "quantity"
        if _SEMVER_KEY in value:
            return "semver"
    if isinstance(value, bool):
        return "bool"
    return {
        int: "int",
        float: "double",
        str: "string",
        bytes: "bytes",
        list: "list",
        dict: "map",
    }.get(type(value), type(value).__name__)


def _no_overload(function: str, *args: Any) -> _CelFunctionError:
    types = ", ".join(_type_name(a) for a in args)
    return _CelFunctionError(f"no such overload: {function}({types})")


def _decode_quantity(value: Any) -> Quantity | None:
    if isinstance(value, dict) and len(value) == 1 and _QUANTITY in value:
        return _cached_quantity(value[_QUANTITY])
    return None


def _decode_version(value: Any) -> _Version | None:
    if isinstance(value, dict) and len(value) == 1 and _SEMVER_KEY in value:
        return _cached_version(value[_SEMVER_KEY], False)
    return None


def _compare(function: str, a: Any, b: Any) -> int:
    qa, qb = _decode_quantity(a), _decode_quantity(b)
    if qa is not None and qb is not None:
        return (qa.nanos > qb.nanos) - (qa.nanos < qb.nanos)
    va, vb = _decode_version(a), _decode_version(b)
    if va is not None and vb is not None:
        return (va.key > vb.key) - (va.key < vb.key)
    raise _no_overload(function, a, b)


def _fn_compare_to(a: Any, b: Any) -> int:
    return _compare("compareTo", a, b)


def _fn_is_greater_than(a: Any, b: Any) -> bool:
    return _compare("isGreaterThan", a, b) > 0


def _fn_is_less_than(a: Any, b: Any) -> bool:
    return _compare("isLessThan", a, b) < 0


def _fn_quantity(text: Any) -> dict[str, str]:
    if not isinstance(text, str):
        raise _no_overload("quantity", text)
    try:
        return _encoded_quantity(text)
    except QuantityError as exc:
        raise _CelFunctionError(f"quantity: {exc}") from None


def _fn_is_quantity(text: Any) -> bool:
    if not isinstance(text, str):
        raise _no_overload("isQuantity", text)
    try:
        _cached_quantity(text)
    except QuantityError:
        return False
    return True


def _quantity_arg(function: str, value: Any) -> Quantity:
    quantity = _decode_quantity(value)
    if quantity is None:
        raise _no_overload(function, value)
    return quantity


def _fn_sign(value: Any) -> int:
    return _quantity_arg("sign", value).sign


def _fn_is_integer(value: Any) -> bool:
    quantity = _quantity_arg("isInteger", value)
    return quantity.is_integer() and _INT64_MIN <= quantity.to_int() <= _INT64_MAX


def _fn_as_integer(value: Any) -> int:
    quantity = _quantity_arg("asInteger", value)
    if not _fn_is_integer(value):
        raise _CelFunctionError(f"asInteger: {quantity} is not an integer in the int64 range")
    return quantity.to_int()


def _fn_as_approximate_float(value: Any) -> float:
    return _quantity_arg("asApproximateFloat", value).as_float()


def _arith(function: str, a: Any, b: Any, sign: int) -> dict[str, str]:
    left = _quantity_arg(function, a)
    if isinstance(b, int) and not isinstance(b, bool):
        right = parse_quantity(b)
    elif (decoded := _decode_quantity(b)) is not None:
        right = decoded
    else:
        raise _no_overload(function, a, b)
    return _encode_quantity(left + right if sign > 0 else left - right)


def _fn_add(a: Any, b: Any) -> dict[str, str]:
    return _arith("add", a, b, 1)


def _fn_sub(a: Any, b: Any) -> dict[str, str]:
    return _arith("sub", a, b, -1)


def _fn_semver(text: Any, normalize: Any = False) -> dict[str, str]:
    if not isinstance(text, str) or not isinstance(normalize, bool):
        raise _no_overload("semver", text, normalize)
    try:
        return _encoded_version(text, normalize)
    except ValueError as exc:
        raise _CelFunctionError(f"semver: {exc}") from None


def _fn_is_semver(text: Any, normalize: Any = False) -> bool:
    if not isinstance(text, str) or not isinstance(normalize, bool):
        raise _no_overload("isSemver", text, normalize)
    try:
        _cached_version(text, normalize)
    except ValueError:
        return False
    return True


def _version_arg(function: str, value: Any) -> _Version:
    version = _decode_version(value)
    if version is None:
        raise _no_overload(function, value)
    return version


def _fn_major(value: Any) -> int:
    return _version_arg("major", value).major


def _fn_minor(value: Any) -> int:
    return _version_arg("minor", value).minor


def _fn_patch(value: Any) -> int:
    return _version_arg("patch", value).patch


# --- String helpers (cel-go's strings extension, as Kubernetes enables it) ----------------------

_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _string_function(name: str, body: Callable[..., Any]) -> Callable[..., Any]:
    def function(receiver: Any, *args: Any) -> Any:
        if not isinstance(receiver, str):
            raise _no_overload(name, receiver, *args)
        try:
            return body(receiver, *args)
        except (TypeError, ValueError, IndexError) as exc:
            raise _CelFunctionError(f"{name}: {exc}") from None

    function.__name__ = name
    return function


def _char_at(s: str, index: int) -> str:
    if not 0 <= index <= len(s):
        raise IndexError(f"index {index} out of range")
    return s[index : index + 1]


def _index_of(s: str, sub: str, start: int = 0) -> int:
    if not 0 <= start <= len(s):
        raise IndexError(f"index {start} out of range")
    return s.find(sub, start)


def _last_index_of(s: str, sub: str, end: int | None = None) -> int:
    if end is None:
        return s.rfind(sub)
    if not 0 <= end <= len(s):
        raise IndexError(f"index {end} out of range")
    return s.rfind(sub, 0, end + len(sub))


def _substring(s: str, start: int, end: int | None = None) -> str:
    end = len(s) if end is None else end
    if not 0 <= start <= end <= len(s):
        raise IndexError(f"range [{start}:{end}] out of range")
    return s[start:end]


def _replace(s: str, old: str, new: str, limit: int = -1) -> str:
    return s.replace(old, new, limit)


def _split(s: str, sep: str, limit: int = -1) -> list[str]:
    if limit == 0:
        return []
    if sep == "":
        chars = list(s)
        return chars if limit < 0 or limit >= len(chars) else [*chars[: limit - 1], s[limit - 1 :]]
    return s.split(sep, limit - 1 if limit > 0 else -1)


def _fn_join(items: Any, sep: Any = "") -> str:
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise _no_overload("join", items, sep)
    if not isinstance(sep, str):
        raise _no_overload("join", items, sep)
    return sep.join(items)


_FUNCTIONS: Final[dict[str, Callable[..., Any]]] = {
    "quantity": _fn_quantity,
    "isQuantity": _fn_is_quantity,
    "compareTo": _fn_compare_to,
    "isGreaterThan": _fn_is_greater_than,
    "isLessThan": _fn_is_less_than,
    "sign": _fn_sign,
    "isInteger": _fn_is_integer,
    "asInteger": _fn_as_integer,
    "asApproximateFloat": _fn_as_approximate_float,
    "add": _fn_add,
    "sub": _fn_sub,
    "semver": _fn_semver,
    "isSemver": _fn_is_semver,
    "major": _fn_major,
    "minor": _fn_minor,
    "patch": _fn_patch,
    "lowerAscii": _string_function("lowerAscii", lambda s: s.translate(_LOWER)),
    "upperAscii": _string_function("upperAscii", lambda s: s.translate(_UPPER)),
    "trim": _string_function("trim", str.strip),
    "charAt": _string_function("charAt", _char_at),
    "indexOf": _string_function("indexOf", _index_of),
    "lastIndexOf": _string_function("lastIndexOf", _last_index_of),
    "substring": _string_function("substring", _substring),
    "replace": _string_function("replace", _replace),
    "split": _string_function("split", _split),
    "join": _fn_join,
}

# Functions of the binding's own CEL core (cel 0.10), as Program.references() names them.
_BUILTINS: Final = frozenset({
    "size", "int", "uint", "double", "string", "bytes", "timestamp", "duration", "type", "dyn",
    "matches", "contains", "startsWith", "endsWith",
    "getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek",
    "getHours", "getMinutes", "getSeconds", "getMilliseconds",
    "of", "none", "ofNonZeroValue", "orValue", "hasValue", "value", "or",
})  # fmt: skip
# Identifiers that are not variables: type names, and the ``optional`` namespace.
_NAMESPACES: Final = frozenset({
    "int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type",
    "optional",
})  # fmt: skip
_MACROS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})
_DEVICE_FIELDS: Final = frozenset({"driver", "attributes", "capacity", "allowMultipleAllocations"})


class _QuietOwnFunctions(logging.Filter):
    """Drops the binding's warning when one of our functions raised (the verdict reports it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Python function '"):
            name = message[len("Python function '") :].split("'", 1)[0]
            return name not in _FUNCTIONS
        return True


_cel_logger = logging.getLogger("cel")
if not any(isinstance(f, _QuietOwnFunctions) for f in _cel_logger.filters):
    _cel_logger.addFilter(_QuietOwnFunctions())


# --- The device, as CEL sees it ---------------------------------------------------------------


class SelectorContext(Mapping[str, Any]):
    """One device, converted for CEL once: evaluate any number of selectors against it.

    Build with :func:`selector_context`. It is also a read-only view of the device it was built
    from (``ctx["name"]``, ``ctx["attributes"]``), so code that takes device mappings can be handed
    contexts instead and every selector evaluation on them is cheap.

    It holds the device converted to CEL values in Python, and builds the ``cel.Context`` (the
    device plus the functions: the costly conversion into the binding) on the first evaluation
    and keeps it, so a context whose verdicts all come from elsewhere
    (:meth:`CompiledSelector.verdict_key`) never pays for it. A selector that names a domain the
    device lacks gets a second context with that domain present and empty (DRA reads an unknown
    domain as an empty map), built on first use and kept. Pass such domains to
    :func:`selector_context` to have one context serve them all.
    """

    __slots__ = (
        "_attributes",
        "_base",
        "_capacity",
        "_device",
        "_multiple",
        "_padded",
        "driver",
        "name",
    )

    def __init__(
        self,
        device: Mapping[str, Any],
        *,
        name: str,
        driver: str,
        attributes: dict[str, dict[str, Any]],
        capacity: dict[str, dict[str, Any]],
        allow_multiple_allocations: bool,
    ) -> None:
        self._device = device
        self.name = name
        self.driver = driver
        self._attributes = attributes
        self._capacity = capacity
        self._multiple = allow_multiple_allocations
        # Built on first use: many contexts never reach the binding (see verdict_key).
        self._base: cel.Context | None = None
        self._padded: dict[frozenset[str], cel.Context] | None = None

    def __getitem__(self, key: str) -> Any:
        return self._device[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._device)

    def __len__(self) -> int:
        return len(self._device)

    def _context(
        self, attributes: dict[str, dict[str, Any]], capacity: dict[str, dict[str, Any]]
    ) -> cel.Context:
        import cel

        activation = {
            "driver": self.driver,
            "attributes": attributes,
            "capacity": capacity,
            "allowMultipleAllocations": self._multiple,
        }
        return cel.Context(variables={"device": activation}, functions=_FUNCTIONS)

    def _context_for(self, domains: frozenset[str]) -> cel.Context:
        attributes, capacity = self._attributes, self._capacity
        for domain in domains:
            if domain not in attributes or domain not in capacity:
                break
        else:
            if self._base is None:
                self._base = self._context(attributes, capacity)
            return self._base
        missing = frozenset(d for d in domains if d not in attributes or d not in capacity)
        if self._padded is None:
            self._padded = {}
        context = self._padded.get(missing)
        if context is None:
            context = self._context(
                {**{d: {} for d in missing}, **attributes}, {**{d: {} for d in missing}, **capacity}
            )
            self._padded[missing] = context
        return context

    def __repr__(self) -> str:
        return f"SelectorContext({self.name!r}, driver={self.driver!r})"


def selector_context(device: Mapping[str, Any], *, domains: Iterable[str] = ()) -> SelectorContext:
    """Prepare a ResourceSlice-shaped device for evaluating selectors (see the module docstring
    for the cost). ``domains`` are added as empty maps where the device lacks them, so selectors
    naming them (:attr:`CompiledSelector.domains`) reuse this context.

    Raises ``ValueError`` when the device is not in the shape admission produces.
    """
    name = str(device.get("name", ""))
    driver = device.get("driver")
    if not isinstance(driver, str) or not driver:
        raise ValueError(f"device {name!r}: driver must be a non-empty string")
    attributes: dict[str, dict[str, Any]] = {driver: {}}
    capacity: dict[str, dict[str, Any]] = {driver: {}}
    for qualified, raw in _mapping(device, "attributes", name).items():
        domain, short = _split_name(qualified, driver)
        attributes.setdefault(domain, {})[short] = _attribute_value(raw, name, qualified)
    for qualified, raw in _mapping(device, "capacity", name).items():
        domain, short = _split_name(qualified, driver)
        capacity.setdefault(domain, {})[short] = _capacity_value(raw, name, qualified)
    for domain in domains:
        attributes.setdefault(domain, {})
        capacity.setdefault(domain, {})
    return SelectorContext(
        device,
        name=name,
        driver=driver,
        attributes=attributes,
        capacity=capacity,
        allow_multiple_allocations=bool(device.get("allowMultipleAllocations", False)),
    )


def _mapping(device: Mapping[str, Any], field: str, name: str) -> Mapping[str, Any]:
    value = device.get(field)
    if value is None:
        return {}
    if type(value) is not dict and not isinstance(value, Mapping):
        raise ValueError(f"device {name!r}: {field} must be a mapping")
    return value


def _split_name(qualified: str, driver: str) -> tuple[str, str]:
    domain, slash, short = qualified.rpartition("/")
    return (domain, short) if slash else (driver, qualified)


_SCALAR_ATTRIBUTES: Final[dict[str, type]] = {"string": str, "bool": bool, "int": int}


def _attribute_value(raw: Any, device: str, qualified: str) -> Any:
    if type(raw) is dict and len(raw) == 1:  # the admitted spelling, first: the common case
        ((kind, value),) = raw.items()
        if type(value) is _SCALAR_ATTRIBUTES.get(kind):
            return value
    if type(raw) in (str, bool, int):  # the friendly spelling, before admission
        return raw
    if isinstance(raw, Mapping) and len(raw) == 1:
        ((kind, value),) = raw.items()
        if type(value) is _SCALAR_ATTRIBUTES.get(kind):  # type(): a bool is no int here
            return value
        if kind == "version" and isinstance(value, str):
            try:
                return _encoded_version(value, False)
            except ValueError:
                pass
            try:  # admission accepts leading zeros; semver does not
                return _encoded_version(value, True)
            except ValueError as exc:
                raise ValueError(f"device {device!r}: attribute {qualified!r}: {exc}") from None
    raise ValueError(
        f"device {device!r}: attribute {qualified!r} must be one of "
        f"{{int|bool|string|version: value}}, got {raw!r}"
    )


def _capacity_value(raw: Any, device: str, qualified: str) -> dict[str, str]:
    value: Any = raw.get("value") if type(raw) is dict or isinstance(raw, Mapping) else raw
    try:
        if isinstance(value, str):
            return _encoded_quantity(value)
        return _encode_quantity(value if isinstance(value, Quantity) else parse_quantity(value))
    except QuantityError as exc:
        raise ValueError(f"device {device!r}: capacity {qualified!r}: {exc}") from None


# --- Reading the expression: tokens, references, positions ------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>(?:[rR][bB]?|[bB][rR]?)?  # optional raw/bytes prefix, then one of four quotings
        (?:'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[0-9][0-9A-Za-z_]*(?:\.[0-9][0-9A-Za-z_]*)?)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    start: int

    def literal(self) -> str | None:
        """The value of a string literal without escapes (None if it has any)."""
        if self.kind != "string":
            return None
        body = self.text.lstrip("rRbB")
        raw = self.text[: len(self.text) - len(body)].lower().count("r") > 0
        quote = 3 if body[:3] in ("'''", '"""') else 1
        inner = body[quote:-quote]
        return inner if raw or "\\" not in inner else None


def _tokens(expression: str) -> list[_Token]:
    return [
        _Token(m.lastgroup or "other", m.group(), m.start())
        for m in _TOKEN.finditer(expression)
        if m.lastgroup != "space"
    ]


_DRIVER_DOMAIN: Final = "\x00driver"  # marks device.attributes[device.driver]
_DRIVER_INDEX: Final = ["device", ".", "driver", "]"]


@dataclass(frozen=True, slots=True)
class _Reference:
    kind: str  # "attributes" or "capacity"
    domain: str  # or _DRIVER_DOMAIN
    name: str | None


def _is(tokens: list[_Token], i: int, text: str) -> bool:
    return i < len(tokens) and tokens[i].text == text and tokens[i].kind != "string"


def _scan(tokens: list[_Token], expression: str) -> tuple[list[_Reference], set[str]]:
    """The attribute/capacity references and the comprehension variables in ``tokens``; raises
    SelectorError for a field ``device`` does not have."""
    references: list[_Reference] = []
    bound: set[str] = set()
    for i, tok in enumerate(tokens):
        if tok.kind != "ident":
            continue
        if tok.text in _MACROS and _is(tokens, i - 1, ".") and _is(tokens, i + 1, "("):
            for j in (i + 2, i + 4):
                if j + 1 < len(tokens) and tokens[j].kind == "ident" and _is(tokens, j + 1, ","):
                    bound.add(tokens[j].text)
                else:
                    break
        if tok.text != "device" or _is(tokens, i - 1, ".") or not _is(tokens, i + 1, "."):
            continue
        if i + 2 >= len(tokens) or tokens[i + 2].kind != "ident" or _is(tokens, i + 3, "("):
            continue
        field = tokens[i + 2].text
        if field not in _DEVICE_FIELDS:
            raise SelectorError(
                _positioned(
                    expression,
                    tokens[i + 2].start,
                    f"undefined field '{field}' on device "
                    f"(it has {', '.join(sorted(_DEVICE_FIELDS))})",
                ),
                expression=expression,
            )
        if field not in ("attributes", "capacity"):
            continue
        j = i + 3
        domain: str | None = None
        if _is(tokens, j, "[") and j + 2 < len(tokens) and _is(tokens, j + 2, "]"):
            domain, j = tokens[j + 1].literal(), j + 3
        elif _is(tokens, j, "[") and [t.text for t in tokens[j + 1 : j + 5]] == _DRIVER_INDEX:
            domain, j = _DRIVER_DOMAIN, j + 5
        elif _is(tokens, j, ".") and j + 1 < len(tokens) and tokens[j + 1].kind == "ident":
            domain, j = tokens[j + 1].text, j + 2
        if domain is None:
            continue
        name: str | None = None
        if _is(tokens, j, ".") and j + 1 < len(tokens) and tokens[j + 1].kind == "ident":
            if not _is(tokens, j + 2, "("):
                name = tokens[j + 1].text
        elif _is(tokens, j, "[") and j + 2 < len(tokens) and _is(tokens, j + 2, "]"):
            name = tokens[j + 1].literal()
        references.append(_Reference(field, domain, name))
    return references, bound


_Read = tuple[str, str, str]
"""``(kind, domain, name)``: one attribute or capacity an expression reads, by a literal path."""


def _key_literal(token: _Token) -> str | None:
    """The text of a string literal usable as a map key (not bytes, no escapes), else None."""
    if token.kind != "string":
        return None
    prefix = token.text[: len(token.text) - len(token.text.lstrip("rRbB"))]
    return None if "b" in prefix.lower() else token.literal()


def _device_reads(tokens: list[_Token]) -> tuple[_Read, ...] | None:
    """Everything the expression reads from ``device`` besides ``driver`` and
    ``allowMultipleAllocations``, when every use of the variable is one of::

        device.driver    device.allowMultipleAllocations
        device.attributes['<domain>'].<name>      (or ['<name>'], or .<domain>, or [device.driver])
        device.capacity['<domain>'].<name>

    None for any other use — a whole domain (``size(device.attributes['d'])``, ``'x' in …``,
    ``….exists(…)``), a computed key, ``device`` bound by a macro, a method called on it: then
    the verdict may depend on more than named values. Stricter than :func:`_scan`, which only
    collects what it recognizes."""
    reads: set[_Read] = set()
    for i, tok in enumerate(tokens):
        if tok.kind != "ident" or tok.text != "device":
            continue
        if i >= 2 and _is(tokens, i - 1, "."):
            before = tokens[i - 2]
            if (
                before.kind in ("ident", "string", "number")
                or _is(tokens, i - 2, ")")
                or _is(tokens, i - 2, "]")
            ):
                continue  # a field named device (x.device), not the variable
            return None  # `.device`, the variable by its absolute name (compiling refuses it)
        elif i == 1 and _is(tokens, 0, "."):
            return None
        if not _is(tokens, i + 1, ".") or i + 2 >= len(tokens) or tokens[i + 2].kind != "ident":
            return None
        field = tokens[i + 2].text
        if _is(tokens, i + 3, "("):
            return None
        if field in ("driver", "allowMultipleAllocations"):
            continue
        if field not in ("attributes", "capacity"):
            return None
        j = i + 3
        domain: str | None
        if _is(tokens, j, "[") and j + 2 < len(tokens) and _is(tokens, j + 2, "]"):
            domain, j = _key_literal(tokens[j + 1]), j + 3
        elif _is(tokens, j, "[") and all(
            _is(tokens, j + 1 + k, text) for k, text in enumerate(_DRIVER_INDEX)
        ):
            domain, j = _DRIVER_DOMAIN, j + 5
        elif (
            _is(tokens, j, ".")
            and j + 1 < len(tokens)
            and tokens[j + 1].kind == "ident"
            and not _is(tokens, j + 2, "(")
        ):
            domain, j = tokens[j + 1].text, j + 2
        else:
            return None
        name: str | None
        if (
            _is(tokens, j, ".")
            and j + 1 < len(tokens)
            and tokens[j + 1].kind == "ident"
            and not _is(tokens, j + 2, "(")
        ):
            name = tokens[j + 1].text
        elif _is(tokens, j, "[") and j + 2 < len(tokens) and _is(tokens, j + 2, "]"):
            name = _key_literal(tokens[j + 1])
        else:
            return None
        if domain is None or name is None:
            return None
        reads.add((field, domain, name))
    return tuple(sorted(reads))


def _positioned(expression: str, offset: int, message: str) -> str:
    """``ERROR: <input>:line:col: message`` with the line and a caret, as CEL prints them."""
    line_start = expression.rfind("\n", 0, offset) + 1
    line_end = expression.find("\n", offset)
    line = expression[line_start : line_end if line_end >= 0 else len(expression)]
    line_no = expression.count("\n", 0, offset) + 1
    column = offset - line_start + 1
    return f"ERROR: <input>:{line_no}:{column}: {message}\n| {line}\n| {'.' * (column - 1)}^"


def _first_use(tokens: list[_Token], name: str, *, call: bool) -> int:
    for i, tok in enumerate(tokens):
        if tok.kind == "ident" and tok.text == name and (_is(tokens, i + 1, "(") or not call):
            return tok.start
    return 0


# --- Selectors ----------------------------------------------------------------------------------


class CompiledSelector:
    """A selector compiled once (:func:`compile_selector`), evaluated against many devices."""

    __slots__ = ("_program", "_reads", "_references", "domains", "expression")

    def __init__(
        self,
        expression: str,
        program: cel.Program,
        references: tuple[_Reference, ...],
        reads: tuple[_Read, ...] | None = None,
    ) -> None:
        self.expression = expression
        self._program = program
        self._references = references
        self._reads = reads
        self.domains: frozenset[str] = frozenset(
            r.domain for r in references if r.domain != _DRIVER_DOMAIN
        )
        """The domains the expression names literally (``device.attributes['<domain>']``)."""

    def evaluate(self, device: SelectorContext | Mapping[str, Any]) -> Verdict:
        """Whether ``device`` satisfies the selector. Never raises for what the device holds: an
        evaluation error, including a missing attribute, is ``matched=False`` with ``error``.

        Pass a :class:`SelectorContext` to evaluate many selectors against one device cheaply; a
        plain device mapping is converted for this call only (``ValueError`` if malformed).
        """
        ctx = (
            device
            if isinstance(device, SelectorContext)
            else selector_context(device, domains=self.domains)
        )
        try:
            result = self._program.execute(ctx._context_for(self.domains))
        except KeyError as exc:
            return Verdict(matched=False, error=self._missing(exc, ctx))
        except Exception as exc:  # every evaluation failure is a verdict, never an exception
            return Verdict(matched=False, error=_clean(exc))
        if result is True:
            return _MATCHED
        if result is False:
            return _NOT_MATCHED
        return Verdict(matched=False, error=_not_bool(result))

    def verdict_key(self, device: SelectorContext | Mapping[str, Any]) -> Hashable | None:
        """What the verdict on ``device`` depends on: two devices with equal keys get equal
        verdicts, errors included, so a caller may evaluate one and reuse its verdict for the
        other. The key holds the device's driver, ``allowMultipleAllocations`` and the value (or
        absence) of each attribute and capacity the expression names — never its name, uuid or
        any other attribute — so devices of one shape (same product, memory, …) share a key.

        None — evaluate this device itself — for a plain mapping (not a
        :class:`SelectorContext`) and for an expression that reads the device in a way the key
        cannot follow (a whole domain, a computed key; see ``_device_reads``)."""
        reads = self._reads
        if reads is None or not isinstance(device, SelectorContext):
            return None
        driver = device.driver
        key: list[Hashable] = [driver, device._multiple]
        for kind, domain, name in reads:
            values = (device._attributes if kind == "attributes" else device._capacity).get(
                driver if domain == _DRIVER_DOMAIN else domain
            )
            if values is None or name not in values:
                key.append(None)
                continue
            value = values[name]
            if type(value) is dict:  # an encoded quantity or version: one entry, str → str
                key.append(("map", *sorted(value.items())))
            elif type(value) in (str, int, bool):
                key.append((type(value), value))  # the type: True and 1 must not share a key
            else:
                return None
        return tuple(key)

    def _missing(self, exc: KeyError, ctx: SelectorContext) -> str:
        key = exc.args[0] if exc.args else None
        for ref in self._references:
            domain = ctx.driver if ref.domain == _DRIVER_DOMAIN else ref.domain
            values = (ctx._attributes if ref.kind == "attributes" else ctx._capacity).get(
                domain, {}
            )
            if ref.name == key and key not in values:
                what = "attribute" if ref.kind == "attributes" else "capacity"
                return f"missing {what} {domain}/{key}"
        return f"no such key: {key}"

    def __repr__(self) -> str:
        return f"CompiledSelector({self.expression!r})"


def compile_selector(expression: str) -> CompiledSelector:
    """Compile a DRA CEL selector, or raise :class:`SelectorError` with CEL's message.

    Compiled selectors are immutable and cached by expression (the last 1024).
    """
    return _compile(expression)


@functools.lru_cache(maxsize=1024)
def _compile(expression: str) -> CompiledSelector:
    size = len(expression.encode())
    if size > MAX_EXPRESSION_BYTES:
        raise SelectorError(
            f"expression is {size} bytes long; may not be more than {MAX_EXPRESSION_BYTES} bytes",
            expression=expression,
        )
    import cel

    try:
        program = cel.compile(expression)
    except Exception as exc:  # the binding raises ValueError for syntax errors
        message = str(exc)
        prefix = f"Failed to parse expression '{expression}': "
        raise SelectorError(message.removeprefix(prefix), expression=expression) from None
    tokens = _tokens(expression)
    references, bound = _scan(tokens, expression)
    used = program.references()
    for name in used["functions"]:
        if name[0] in "_@!-" or name in _BUILTINS or name in _FUNCTIONS:
            continue
        hint = (
            "cel.bind() is not supported here; repeat the subexpression instead"
            if name == "bind"
            else f"undeclared reference to function '{name}'"
        )
        raise SelectorError(
            _positioned(expression, _first_use(tokens, name, call=True), hint),
            expression=expression,
        )
    for name in used["variables"]:
        if name != "device" and name not in _NAMESPACES and name not in bound:
            raise SelectorError(
                _positioned(
                    expression,
                    _first_use(tokens, name, call=False),
                    f"undeclared reference to '{name}' (the only variable is 'device')",
                ),
                expression=expression,
            )
    _check_literals(tokens, expression)
    selector = CompiledSelector(expression, program, tuple(references), _device_reads(tokens))
    _dry_run(selector)
    return selector


def _check_literals(tokens: list[_Token], expression: str) -> None:
    """Literal arguments of ``matches()``, ``quantity()`` and ``semver()`` must be valid: they
    cannot depend on a device (cel-go rejects a bad literal pattern up front, too)."""
    for i, tok in enumerate(tokens):
        if tok.kind != "ident" or not _is(tokens, i + 1, "(") or i + 3 >= len(tokens):
            continue
        arg = tokens[i + 2]
        if arg.kind != "string":
            continue
        closed = _is(tokens, i + 3, ")")
        problem: str | None = None
        if tok.text == "matches" and closed:
            import cel

            try:
                cel.evaluate(f"''.matches({arg.text})")
            except Exception as exc:
                problem = _clean(exc)
        elif tok.text == "quantity" and closed:
            text = arg.literal()
            if text is not None:
                try:
                    _cached_quantity(text)
                except QuantityError as exc:
                    problem = f"quantity: {exc}"
        elif tok.text == "semver" and (closed or _is(tokens, i + 3, ",")):
            text = arg.literal()
            normalize = _is(tokens, i + 4, "true") and _is(tokens, i + 5, ")")
            if text is not None and (closed or normalize or _is(tokens, i + 4, "false")):
                try:
                    _cached_version(text, normalize)
                except ValueError as exc:
                    problem = f"semver: {exc}"
        if problem is not None:
            raise SelectorError(_positioned(expression, arg.start, problem), expression=expression)


def _dry_run(selector: CompiledSelector) -> None:
    """Evaluate once against an empty device: a result that is not a bool, or a literal that
    ``quantity()``/``semver()`` rejects, cannot depend on any device."""
    empty = SelectorContext(
        {},
        name="dry-run",
        driver="",
        attributes={"": {}, **{d: {} for d in selector.domains}},
        capacity={"": {}, **{d: {} for d in selector.domains}},
        allow_multiple_allocations=False,
    )
    try:
        result = selector._program.execute(empty._context_for(selector.domains))
    except KeyError:
        return
    except Exception as exc:
        message = str(exc)
        if message.startswith(("Function 'quantity' error", "Function 'semver' error")):
            raise SelectorError(_clean(exc), expression=selector.expression) from None
        return
    if not isinstance(result, bool):
        raise SelectorError(
            f"selector must evaluate to bool, not {_type_name(result)}",
            expression=selector.expression,
        )


_ADVICE = re.compile(
    r"\.?\s*(?:CEL does not coerce|Check that the variable|Check function arguments).*$", re.DOTALL
)
_PYTHON_FAILURE = re.compile(r"^Function '[^']*' error: Python function call failed: [A-Za-z_.]+: ")
_FUNCTION_FAILURE = re.compile(r"^Function '([^']*)' error: ")
_UNDEFINED_AT_RUNTIME = re.compile(r"^Undefined variable or function: '([^']*)'")


def _clean(exc: BaseException) -> str:
    """The binding's error text, without its generic advice, on one line."""
    message = str(exc)
    if isinstance(exc, RuntimeError) and (m := _UNDEFINED_AT_RUNTIME.match(message)):
        # Names were checked at compile time: at run time this means no overload for the
        # argument types (e.g. size() of an int).
        return f"no such overload: {m[1]}() for these argument types"
    message = _PYTHON_FAILURE.sub("", message)
    message = _FUNCTION_FAILURE.sub(r"\1: ", message)
    message = " ".join(_ADVICE.sub("", message).split())
    if len(message) > _ERROR_MAX_CHARS:
        message = message[: _ERROR_MAX_CHARS - 1] + "…"
    return message or type(exc).__name__


def _not_bool(result: Any) -> str:
    return f"selector must evaluate to bool, got {_type_name(result)} {result!r}"[:_ERROR_MAX_CHARS]
