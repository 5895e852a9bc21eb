"""Model records and the registry formats: parsing and whole-registry validation.

A registry arrives as JSON text in one of two formats (mixing them within one list is allowed):

* the seed's rows: ``[provider, name, quality, in_cost_per_1k, out_cost_per_1k, latency_ms,
  max_output_tokens]``;
* objects with those field names, which may also carry the optional fields in ``OPTIONAL_FIELDS``.

Prices are kept as ``Decimal`` parsed from the JSON text itself, so ``0.0001`` is exactly one
ten-thousandth of a dollar and sums are exact to the last digit. A registry is refused as a whole
when any entry is wrong: a missing price is never taken as zero.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable, Mapping

ROW_FIELDS: tuple[str, ...] = (
    "provider",
    "name",
    "quality",
    "in_cost_per_1k",
    "out_cost_per_1k",
    "latency_ms",
    "max_output_tokens",
)

# Optional object fields that steer the shipped mock provider (see providers/mock.py).
OPTIONAL_FIELDS: tuple[str, ...] = (
    "mock_fail_status",
    "mock_fail_rate",
    "mock_delay_ms",
    "mock_seed",
    # The request field that carries the output cap, when the model insists on one (OpenAI's
    # reasoning models refuse "max_tokens" and want "max_completion_tokens").
    "max_tokens_field",
)
MAX_TOKENS_FIELDS: tuple[str, ...] = ("max_tokens", "max_completion_tokens")

MIN_QUALITY = 1
MAX_QUALITY = 5


class RegistryError(ValueError):
    """A registry that cannot be used; the message names the entry and the field."""


@dataclass(frozen=True)
class MockBehaviour:
    """How the mock provider misbehaves for one model: for failover and breaker tests."""

    fail_status: int | None = None
    fail_rate: float = 0.0
    delay_ms: int = 0
    seed: int = 0


@dataclass(frozen=True)
class Model:
    """One routable model with its prices (USD per 1,000 tokens) and limits."""

    provider: str
    name: str
    quality: int
    input_cost_per_1k: Decimal
    output_cost_per_1k: Decimal
    latency_ms: int
    max_output_tokens: int
    mock: MockBehaviour = field(default_factory=MockBehaviour)
    max_tokens_field: str | None = None
    # Derived once, because selection reads them for every model of every request: the id
    # ``provider:name`` and the exact prices per single token (a Decimal division is not cheap).
    id: str = field(init=False, compare=False)
    input_cost_per_token: Decimal = field(init=False, compare=False, repr=False)
    output_cost_per_token: Decimal = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.provider}:{self.name}")
        object.__setattr__(self, "input_cost_per_token", self.input_cost_per_1k / 1000)
        object.__setattr__(self, "output_cost_per_token", self.output_cost_per_1k / 1000)


@dataclass(frozen=True)
class Registry:
    """A validated, non-empty set of models with unique ids."""

    models: tuple[Model, ...]

    def get(self, model_id: str) -> Model | None:
        """The model with this id, or None."""
        for model in self.models:
            if model.id == model_id:
                return model
        return None


# The built-in registry. Tiers are priced so the seed's haiku request (min_quality 3, budget
# $0.002, latency 1000 ms) lands on mock:advanced: standard is below the quality floor and
# premium is over both the budget and the latency limit.
DEFAULT_REGISTRY_ROWS: tuple[tuple[Any, ...], ...] = (
    ("mock", "basic", 1, "0.0001", "0.0002", 150, 1024),
    ("mock", "standard", 2, "0.0005", "0.0015", 300, 2048),
    ("mock", "advanced", 4, "0.0025", "0.006", 500, 4096),
    ("mock", "premium", 5, "0.01", "0.03", 1500, 8192),
)


def default_registry_rows() -> list[list[Any]]:
    """The built-in registry as rows in the seed's format, prices as exact Decimals."""
    return [[p, n, q, Decimal(i), Decimal(o), lat, mx] for p, n, q, i, o, lat, mx in DEFAULT_REGISTRY_ROWS]


def default_registry_json() -> str:
    """The built-in registry in the seed's row format, as JSON text."""
    return json.dumps(default_registry_rows(), default=_decimal_to_json_number)


def _decimal_to_json_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _reject_constant(name: str) -> Any:
    raise RegistryError(f"registry JSON contains {name}, which is not a number")


def parse_registry_json(text: str, known_providers: Iterable[str]) -> Registry:
    """Parse and validate registry JSON text; raise RegistryError naming the entry and field."""
    try:
        data = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except RegistryError:
        raise
    except (json.JSONDecodeError, TypeError) as exc:
        raise RegistryError(f"registry is not valid JSON: {exc}") from exc
    return build_registry(data, known_providers)


def build_registry(data: Any, known_providers: Iterable[str]) -> Registry:
    """Validate decoded registry data (a list of rows or objects) as a whole."""
    providers = frozenset(known_providers)
    if not isinstance(data, list):
        raise RegistryError(f"registry must be a JSON array of models, got {_json_type(data)}")
    if not data:
        raise RegistryError("registry is empty: it must list at least one model")
    models: list[Model] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(data):
        model = _parse_entry(index, entry, providers)
        if model.id in seen:
            raise RegistryError(
                f"entry {index} ({model.id}): field 'name' duplicates the id of entry {seen[model.id]}"
            )
        seen[model.id] = index
        models.append(model)
    return Registry(models=tuple(models))


def _parse_entry(index: int, entry: Any, providers: frozenset[str]) -> Model:
    if isinstance(entry, list):
        if len(entry) != len(ROW_FIELDS):
            raise RegistryError(
                f"entry {index}: a row must have {len(ROW_FIELDS)} fields "
                f"[{', '.join(ROW_FIELDS)}], got {len(entry)}"
            )
        values: Mapping[str, Any] = dict(zip(ROW_FIELDS, entry))
    elif isinstance(entry, dict):
        values = entry
        unknown = sorted(set(entry) - set(ROW_FIELDS) - set(OPTIONAL_FIELDS))
        if unknown:
            raise RegistryError(f"entry {index}: unknown field '{unknown[0]}'")
    else:
        raise RegistryError(f"entry {index}: must be an array or an object, got {_json_type(entry)}")

    label = f"entry {index}"
    provider = _require_text(values, "provider", label)
    name = _require_text(values, "name", label)
    label = f"entry {index} ({provider}:{name})"
    if provider not in providers:
        raise RegistryError(
            f"{label}: field 'provider' is '{provider}', which is not a known provider "
            f"({', '.join(sorted(providers))})"
        )
    quality = _require_int(values, "quality", label)
    if not MIN_QUALITY <= quality <= MAX_QUALITY:
        raise RegistryError(f"{label}: field 'quality' must be from {MIN_QUALITY} to {MAX_QUALITY}, got {quality}")
    input_cost = _require_price(values, "in_cost_per_1k", label)
    output_cost = _require_price(values, "out_cost_per_1k", label)
    latency = _require_int(values, "latency_ms", label)
    max_tokens = _require_int(values, "max_output_tokens", label)
    for field_name, number in (("latency_ms", latency), ("max_output_tokens", max_tokens)):
        if number <= 0:
            raise RegistryError(f"{label}: field '{field_name}' must be a positive integer, got {number}")
    return Model(
        provider=provider,
        name=name,
        quality=quality,
        input_cost_per_1k=input_cost,
        output_cost_per_1k=output_cost,
        latency_ms=latency,
        max_output_tokens=max_tokens,
        mock=_parse_mock_behaviour(values, label),
        max_tokens_field=_parse_max_tokens_field(values, label),
    )


def _parse_max_tokens_field(values: Mapping[str, Any], label: str) -> str | None:
    value = values.get("max_tokens_field")
    if value is not None and value not in MAX_TOKENS_FIELDS:
        raise RegistryError(f"{label}: field 'max_tokens_field' must be one of {', '.join(MAX_TOKENS_FIELDS)}")
    return value


def _parse_mock_behaviour(values: Mapping[str, Any], label: str) -> MockBehaviour:
    fail_status = values.get("mock_fail_status")
    if fail_status is not None:
        if not _is_int(fail_status) or not 400 <= fail_status <= 599:
            raise RegistryError(f"{label}: field 'mock_fail_status' must be an HTTP error status 400-599")
    fail_rate = values.get("mock_fail_rate", 0)
    if not _is_number(fail_rate) or not 0 <= fail_rate <= 1:
        raise RegistryError(f"{label}: field 'mock_fail_rate' must be a number from 0 to 1")
    delay = values.get("mock_delay_ms", 0)
    if not _is_int(delay) or delay < 0:
        raise RegistryError(f"{label}: field 'mock_delay_ms' must be a non-negative integer")
    seed = values.get("mock_seed", 0)
    if not _is_int(seed):
        raise RegistryError(f"{label}: field 'mock_seed' must be an integer")
    return MockBehaviour(fail_status=fail_status, fail_rate=float(fail_rate), delay_ms=delay, seed=seed)


def _require_text(values: Mapping[str, Any], field_name: str, label: str) -> str:
    if field_name not in values:
        raise RegistryError(f"{label}: field '{field_name}' is missing")
    value = values[field_name]
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"{label}: field '{field_name}' must be a non-empty string, got {_json_type(value)}")
    if ":" in value or value != value.strip():
        raise RegistryError(f"{label}: field '{field_name}' must not contain ':' or surrounding spaces")
    return value


def _require_int(values: Mapping[str, Any], field_name: str, label: str) -> int:
    if field_name not in values or values[field_name] is None:
        raise RegistryError(f"{label}: field '{field_name}' is missing")
    value = values[field_name]
    if not _is_int(value):
        raise RegistryError(f"{label}: field '{field_name}' must be an integer, got {_json_type(value)} {value!r}")
    return int(value)


def _require_price(values: Mapping[str, Any], field_name: str, label: str) -> Decimal:
    if field_name not in values or values[field_name] is None:
        raise RegistryError(f"{label}: field '{field_name}' is missing (a price is never assumed to be zero)")
    value = values[field_name]
    if not _is_number(value):
        raise RegistryError(f"{label}: field '{field_name}' must be a number, got {_json_type(value)} {value!r}")
    price = Decimal(str(value)) if not isinstance(value, Decimal) else value
    if not price.is_finite():
        raise RegistryError(f"{label}: field '{field_name}' must be a finite number")
    if price < 0:
        raise RegistryError(f"{label}: field '{field_name}' must not be negative, got {value}")
    return price


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value()


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, Decimal)):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _json_type(value: Any) -> str:
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
