"""Registry parsing in both formats and every validation error."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from costroute.core.registry import (
    DEFAULT_REGISTRY_ROWS,
    RegistryError,
    default_registry_json,
    parse_registry_json,
)

PROVIDERS = ("mock", "openai")
ROW = ["mock", "tiny", 2, 0.0004, 0.0016, 200, 512]
OBJECT = {
    "provider": "openai",
    "name": "gpt-4o-mini",
    "quality": 3,
    "in_cost_per_1k": 0.00015,
    "out_cost_per_1k": 0.0006,
    "latency_ms": 800,
    "max_output_tokens": 4096,
}


def test_seed_row_format_parses_with_exact_prices() -> None:
    registry = parse_registry_json(json.dumps([ROW]), PROVIDERS)
    (model,) = registry.models
    assert model.id == "mock:tiny"
    assert (model.quality, model.latency_ms, model.max_output_tokens) == (2, 200, 512)
    assert model.input_cost_per_1k == Decimal("0.0004")
    assert model.output_cost_per_1k == Decimal("0.0016")


def test_object_format_and_mixed_list_parse() -> None:
    registry = parse_registry_json(json.dumps([ROW, OBJECT]), PROVIDERS)
    assert [m.id for m in registry.models] == ["mock:tiny", "openai:gpt-4o-mini"]
    assert registry.get("openai:gpt-4o-mini").input_cost_per_1k == Decimal("0.00015")
    assert {m.provider for m in registry.models} == {"mock", "openai"}


def test_object_format_accepts_mock_behaviour_fields() -> None:
    entry = {**OBJECT, "provider": "mock", "mock_fail_status": 503, "mock_fail_rate": 0.5, "mock_delay_ms": 20, "mock_seed": 7}
    (model,) = parse_registry_json(json.dumps([entry]), PROVIDERS).models
    assert (model.mock.fail_status, model.mock.fail_rate, model.mock.delay_ms, model.mock.seed) == (503, 0.5, 20, 7)


def test_default_registry_round_trips_and_has_three_or_more_mock_tiers() -> None:
    registry = parse_registry_json(default_registry_json(), PROVIDERS)
    assert len(registry.models) == len(DEFAULT_REGISTRY_ROWS) >= 3
    assert {m.provider for m in registry.models} == {"mock"}
    assert len({m.quality for m in registry.models}) >= 3


def _with(index: int, value: object) -> list:
    row = list(ROW)
    row[index] = value
    return [row]


def _without(field: str) -> list:
    entry = dict(OBJECT)
    del entry[field]
    return [entry]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not json", "not valid JSON"),
        ('{"a": 1}', "must be a JSON array"),
        ("[]", "is empty"),
        (json.dumps([ROW[:6]]), "entry 0: a row must have 7 fields"),
        (json.dumps([ROW + [1]]), "entry 0: a row must have 7 fields"),
        (json.dumps(["mock"]), "entry 0: must be an array or an object"),
        (json.dumps(_with(0, 5)), "entry 0: field 'provider' must be a non-empty string"),
        (json.dumps(_with(1, "")), "entry 0: field 'name' must be a non-empty string"),
        (json.dumps(_with(0, "acme")), "entry 0 (acme:tiny): field 'provider' is 'acme', which is not a known provider"),
        (json.dumps(_with(2, 0)), "entry 0 (mock:tiny): field 'quality' must be from 1 to 5"),
        (json.dumps(_with(2, 6)), "entry 0 (mock:tiny): field 'quality' must be from 1 to 5"),
        (json.dumps(_with(2, "3")), "entry 0 (mock:tiny): field 'quality' must be an integer"),
        (json.dumps(_with(2, True)), "entry 0 (mock:tiny): field 'quality' must be an integer"),
        (json.dumps(_with(2, 3.5)), "entry 0 (mock:tiny): field 'quality' must be an integer"),
        (json.dumps(_with(3, None)), "entry 0 (mock:tiny): field 'in_cost_per_1k' is missing"),
        (json.dumps(_with(3, -0.1)), "entry 0 (mock:tiny): field 'in_cost_per_1k' must not be negative"),
        (json.dumps(_with(3, "0.1")), "entry 0 (mock:tiny): field 'in_cost_per_1k' must be a number"),
        (json.dumps(_with(4, False)), "entry 0 (mock:tiny): field 'out_cost_per_1k' must be a number"),
        (json.dumps(_with(4, None)), "entry 0 (mock:tiny): field 'out_cost_per_1k' is missing"),
        ('[["mock","tiny",2,NaN,0.1,200,512]]', "NaN"),
        ('[["mock","tiny",2,0.1,Infinity,200,512]]', "Infinity"),
        (json.dumps(_with(5, 0)), "entry 0 (mock:tiny): field 'latency_ms' must be a positive integer"),
        (json.dumps(_with(5, 12.5)), "entry 0 (mock:tiny): field 'latency_ms' must be an integer"),
        (json.dumps(_with(6, -1)), "entry 0 (mock:tiny): field 'max_output_tokens' must be a positive integer"),
        (json.dumps(_with(6, "many")), "entry 0 (mock:tiny): field 'max_output_tokens' must be an integer"),
        (json.dumps(_without("out_cost_per_1k")), "field 'out_cost_per_1k' is missing (a price is never assumed to be zero)"),
        (json.dumps(_without("in_cost_per_1k")), "field 'in_cost_per_1k' is missing"),
        (json.dumps(_without("quality")), "field 'quality' is missing"),
        (json.dumps([{**OBJECT, "colour": "red"}]), "entry 0: unknown field 'colour'"),
        (json.dumps([ROW, list(ROW)]), "entry 1 (mock:tiny): field 'name' duplicates the id of entry 0"),
        (json.dumps([ROW, {**OBJECT, "mock_fail_status": 200}]), "entry 1 (openai:gpt-4o-mini): field 'mock_fail_status'"),
    ],
)
def test_invalid_registry_is_refused_naming_entry_and_field(text: str, expected: str) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_registry_json(text, PROVIDERS)
    assert expected in str(caught.value)


def test_one_bad_entry_refuses_the_whole_registry() -> None:
    good = [["mock", f"m{i}", 3, 0.001, 0.002, 100, 100] for i in range(5)]
    bad = good + [["mock", "broken", 3, 0.001, None, 100, 100]]
    with pytest.raises(RegistryError, match="entry 5 \\(mock:broken\\)"):
        parse_registry_json(json.dumps(bad), PROVIDERS)


def test_zero_price_is_accepted_only_when_written() -> None:
    (model,) = parse_registry_json(json.dumps([["mock", "free", 1, 0, 0, 10, 10]]), PROVIDERS).models
    assert model.input_cost_per_1k == 0 and model.output_cost_per_1k == 0


def test_registry_order_is_kept_but_lookup_is_by_id() -> None:
    rows = [["mock", f"m{i}", 1 + i % 5, 0.001 * (i + 1), 0.002, 100, 100] for i in range(10)]
    random.Random(3).shuffle(rows)
    registry = parse_registry_json(json.dumps(rows), PROVIDERS)
    assert registry.get("mock:m4").input_cost_per_1k == Decimal("0.005")
    assert registry.get("mock:nope") is None
