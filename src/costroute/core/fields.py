"""Reading fields of decoded JSON documents (registry, budgets) with errors that name them.

A ``FieldReader`` never stops at the first error: every wrong field is appended to the shared
``errors`` list, so a document is refused as a whole with everything that is wrong in it.
Numbers are decoded with ``parse_float=Decimal``, so a price keeps the digits it was written with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

# A refused document lists at most this many errors, then says how many more there were.
MAX_LISTED_ERRORS = 20
# No quantity of a registry or budgets document needs more than this: bounded here, every later
# computation and message stays of a sane size (a price of 1e999999999 would print a billion digits).
LARGEST_MAGNITUDE = Decimal("1e15")
SMALLEST_MAGNITUDE = Decimal("1e-30")
# A price above $1,000 per 1,000 tokens ($1M per million) is a typo, not a model.
MAX_PRICE_PER_1K = Decimal(1000)


class DocumentError(ValueError):
    """A document that cannot be used; ``errors`` names every wrong entry and field."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors = tuple(errors)
        shown = list(self.errors[:MAX_LISTED_ERRORS])
        if len(self.errors) > MAX_LISTED_ERRORS:
            shown.append(f"and {len(self.errors) - MAX_LISTED_ERRORS} more")
        listed = "; ".join(shown)
        super().__init__(listed if len(self.errors) == 1 else f"{len(self.errors)} errors: {listed}")


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def is_int(value: Any) -> bool:
    """A JSON integer (``3``, or ``3`` written as a Decimal-parsed ``3``); never a boolean."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value()


def is_number(value: Any) -> bool:
    """A finite JSON number; never a boolean."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, Decimal):
        return value.is_finite()
    return isinstance(value, float) and math.isfinite(value)


class FieldReader:
    """Reads the fields of one object; each method returns None (and records why) when wrong."""

    def __init__(self, values: Mapping[str, Any], label: str, errors: list[str]) -> None:
        self.values = values
        self.label = label
        self.errors = errors

    def error(self, message: str) -> None:
        """Record an error about this object."""
        self.errors.append(f"{self.label}: {message}")

    def present(self, name: str) -> bool:
        """Whether the field is given (null counts as absent)."""
        return self.values.get(name) is not None

    def refuse_unknown(self, allowed: Iterable[str]) -> None:
        """Record every field not in ``allowed``."""
        for name in sorted(set(self.values) - set(allowed)):
            self.error(f"unknown field '{name}'")

    def text(self, name: str, required: bool = False) -> str | None:
        """A non-empty string without surrounding spaces or control characters."""
        value = self.values.get(name)
        if value is None:
            if required:
                self.error(f"field '{name}' is missing")
            return None
        if not isinstance(value, str) or not value.strip():
            self.error(f"field '{name}' must be a non-empty string, got {json_type(value)}")
            return None
        if value != value.strip() or any(ord(char) < 32 for char in value):
            self.error(f"field '{name}' must not have surrounding spaces or control characters")
            return None
        return value

    def integer(
        self, name: str, required: bool = False, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        """A JSON integer within the bounds given."""
        value = self.values.get(name)
        if value is None:
            if required:
                self.error(f"field '{name}' is missing")
            return None
        if not is_int(value):
            self.error(f"field '{name}' must be an integer, got {json_type(value)} {value!r}")
            return None
        if Decimal(value).copy_abs() >= LARGEST_MAGNITUDE:
            self.error(f"field '{name}' must be {_range(minimum, maximum, 'an integer')}, got {_short(value)}")
            return None
        number = int(value)
        if minimum is not None and number < minimum or maximum is not None and number > maximum:
            self.error(f"field '{name}' must be {_range(minimum, maximum, 'an integer')}, got {number}")
            return None
        return number

    def number(
        self, name: str, required: bool = False, minimum: Decimal | None = None, maximum: Decimal | None = None,
        exclusive_minimum: bool = False,
    ) -> Decimal | None:
        """A finite JSON number within the bounds given, as an exact Decimal."""
        value = self.values.get(name)
        if value is None:
            if required:
                self.error(f"field '{name}' is missing")
            return None
        if not is_number(value):
            self.error(f"field '{name}' must be a finite number, got {json_type(value)} {value!r}")
            return None
        number = value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else value)
        if not in_scale(number):
            self.error(f"field '{name}' must be 0 or a number from {SMALLEST_MAGNITUDE} to {LARGEST_MAGNITUDE} in "
                       f"size, got {_short(value)}")
            return None
        low = minimum is not None and (number <= minimum if exclusive_minimum else number < minimum)
        if low or maximum is not None and number > maximum:
            kind = f"a number greater than {minimum}" if exclusive_minimum else _range(minimum, maximum, "a number")
            if exclusive_minimum and maximum is not None:
                kind += f" and at most {maximum}"
            self.error(f"field '{name}' must be {kind}, got {value}")
            return None
        return number

    def price(self, name: str, required: bool = True) -> Decimal | None:
        """A price in USD per 1,000 tokens: a finite number of at least 0, never assumed when missing."""
        value = self.values.get(name)
        if value is None:
            if required:
                self.error(f"field '{name}' is missing (a price is never assumed to be zero)")
            return None
        if not is_number(value):
            self.error(f"field '{name}' must be a number, got {json_type(value)} {value!r}")
            return None
        price = value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else value)
        if price < 0:
            self.error(f"field '{name}' must not be negative, got {_short(value)}")
            return None
        if price > MAX_PRICE_PER_1K or not in_scale(price):
            self.error(f"field '{name}' must be 0 or a price from {SMALLEST_MAGNITUDE} to {MAX_PRICE_PER_1K} USD per "
                       f"1,000 tokens, got {_short(value)}")
            return None
        return price

    def boolean(self, name: str) -> bool | None:
        """true or false."""
        value = self.values.get(name)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.error(f"field '{name}' must be true or false, got {json_type(value)}")
            return None
        return value

    def choice(self, name: str, options: Iterable[str], required: bool = False) -> str | None:
        """One of the given strings."""
        allowed = tuple(options)
        value = self.values.get(name)
        if value is None:
            if required:
                self.error(f"field '{name}' is missing")
            return None
        if value not in allowed:
            self.error(f"field '{name}' must be one of {', '.join(allowed)}, got {value!r}")
            return None
        return str(value)

    def url(self, name: str, required: bool = False) -> str | None:
        """An absolute http or https URL with a host."""
        text = self.text(name, required)
        if text is None:
            return None
        if not is_http_url(text):
            self.error(f"field '{name}' must be an http or https URL with a host, got {text!r}")
            return None
        return text

    def mapping(self, name: str, required: bool = False) -> Mapping[str, Any] | None:
        """A JSON object."""
        value = self.values.get(name)
        if value is None:
            if required:
                self.error(f"field '{name}' is missing")
            return None
        if not isinstance(value, dict):
            self.error(f"field '{name}' must be an object, got {json_type(value)}")
            return None
        return value


def is_http_url(text: str) -> bool:
    """Whether ``text`` is an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    try:
        port = parts.port  # urlsplit defers reading the port: "http://host:abc" only fails here
    except ValueError:
        return False
    if port is not None and not 1 <= port <= 65535:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in text


def in_scale(number: Decimal) -> bool:
    """Whether a number is 0 or within the magnitudes a document may hold."""
    return number == 0 or SMALLEST_MAGNITUDE <= number.copy_abs() <= LARGEST_MAGNITUDE  # copy_abs: no rounding


def _short(value: Any) -> str:
    """A number for a message: as written when short, else in scientific notation."""
    text = repr(value) if isinstance(value, float) else str(value)
    if len(text) <= 40:
        return text
    return f"{Decimal(value):.3e}" if isinstance(value, (int, Decimal)) else text[:40] + "..."


def _range(minimum: Any, maximum: Any, kind: str) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} from {minimum} to {maximum}"
    if minimum is not None:
        return f"{kind} of at least {minimum}"
    return f"{kind} of at most {maximum}"


def unique_keys(error: Callable[[list[str]], Exception]) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A ``json.loads`` object hook that refuses a key written twice in one object (JSON keeps the last, silently)."""

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in pairs:
            if key in found:
                raise error([f"the key {key!r} appears twice in one object (only one can hold)"])
            found[key] = value
        return found

    return build


def load_json_document(text: str, error: Callable[[list[str]], Exception], what: str) -> Any:
    """Decode a document's JSON with exact numbers; NaN, Infinity, a repeated key or deep nesting is ``error``."""

    def reject_constant(name: str) -> Any:
        raise error([f"{what} contains {name}, which is not a number"])

    try:
        return json.loads(text, parse_float=Decimal, parse_constant=reject_constant,
                          object_pairs_hook=unique_keys(error))
    except DocumentError:
        raise
    except RecursionError as exc:
        raise error([f"{what} is nested too deeply"]) from exc
    except (ValueError, TypeError) as exc:  # ValueError: JSONDecodeError, or an integer of over 4,300 digits
        raise error([f"{what} is not valid JSON: {exc}"]) from exc
