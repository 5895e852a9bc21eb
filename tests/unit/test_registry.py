"""Registry parsing in both formats and every validation error."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest

from costroute.core.registry import DEFAULT_REGISTRY_ROWS, RegistryError, default_registry_json
from tests.registries import parse_registry

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
    registry = parse_registry(json.dumps([ROW]))
    (model,) = registry.models
    assert model.id == "mock:tiny"
    assert (model.quality, model.latency_ms, model.max_output_tokens) == (2, 200, 512)
    assert model.input_cost_per_1k == Decimal("0.0004")
    assert model.output_cost_per_1k == Decimal("0.0016")


def test_object_format_and_mixed_list_parse() -> None:
    registry = parse_registry(json.dumps([ROW, OBJECT]))
    assert [m.id for m in registry.models] == ["mock:tiny", "openai:gpt-4o-mini"]
    assert registry.get("openai:gpt-4o-mini").input_cost_per_1k == Decimal("0.00015")
    assert {m.provider for m in registry.models} == {"mock", "openai"}


def test_object_format_accepts_mock_behaviour_fields() -> None:
    entry = {**OBJECT, "provider": "mock", "mock_fail_status": 503, "mock_fail_rate": 0.5, "mock_delay_ms": 20, "mock_seed": 7}
    (model,) = parse_registry(json.dumps([entry])).models
    options = model.options
    assert (options.fail_status, options.fail_rate, options.delay_ms, options.seed) == (503, 0.5, 20, 7)


def test_default_registry_round_trips_and_has_three_or_more_mock_tiers() -> None:
    registry = parse_registry(default_registry_json())
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
        ('{"a": 1}', "registry: unknown field 'a'"),
        ('"rows"', "must be a JSON array of models or an object"),
        ("[]", "is empty"),
        (json.dumps([ROW[:6]]), "entry 1: a row must have 7 fields"),
        (json.dumps([ROW + [1]]), "entry 1: a row must have 7 fields"),
        (json.dumps(["mock"]), "entry 1: must be an array or an object"),
        (json.dumps(_with(0, 5)), "entry 1: field 'provider' must be a non-empty string"),
        (json.dumps(_with(1, "")), "entry 1: field 'name' must be a non-empty string"),
        (json.dumps(_with(0, "acme")), "entry 1 (acme:tiny): field 'provider' is 'acme', which is not a provider of the registry (mock, openai)"),
        (json.dumps(_with(2, 0)), "entry 1 (mock:tiny): field 'quality' must be an integer from 1 to 5"),
        (json.dumps(_with(2, 6)), "entry 1 (mock:tiny): field 'quality' must be an integer from 1 to 5"),
        (json.dumps(_with(2, "3")), "entry 1 (mock:tiny): field 'quality' must be an integer"),
        (json.dumps(_with(2, True)), "entry 1 (mock:tiny): field 'quality' must be an integer"),
        (json.dumps(_with(2, 3.5)), "entry 1 (mock:tiny): field 'quality' must be an integer"),
        (json.dumps(_with(3, None)), "entry 1 (mock:tiny): field 'in_cost_per_1k' is missing"),
        (json.dumps(_with(3, -0.1)), "entry 1 (mock:tiny): field 'in_cost_per_1k' must not be negative"),
        (json.dumps(_with(3, "0.1")), "entry 1 (mock:tiny): field 'in_cost_per_1k' must be a number"),
        (json.dumps(_with(4, False)), "entry 1 (mock:tiny): field 'out_cost_per_1k' must be a number"),
        (json.dumps(_with(4, None)), "entry 1 (mock:tiny): field 'out_cost_per_1k' is missing"),
        ('[["mock","tiny",2,NaN,0.1,200,512]]', "NaN"),
        ('[["mock","tiny",2,0.1,Infinity,200,512]]', "Infinity"),
        (json.dumps(_with(5, 0)), "entry 1 (mock:tiny): field 'latency_ms' must be an integer of at least 1"),
        (json.dumps(_with(5, 12.5)), "entry 1 (mock:tiny): field 'latency_ms' must be an integer"),
        (json.dumps(_with(6, -1)), "entry 1 (mock:tiny): field 'max_output_tokens' must be an integer of at least 1"),
        (json.dumps(_with(6, "many")), "entry 1 (mock:tiny): field 'max_output_tokens' must be an integer"),
        (json.dumps(_without("out_cost_per_1k")), "field 'out_cost_per_1k' is missing (a price is never assumed to be zero)"),
        (json.dumps(_without("in_cost_per_1k")), "field 'in_cost_per_1k' is missing"),
        (json.dumps(_without("quality")), "field 'quality' is missing"),
        (json.dumps([{**OBJECT, "colour": "red"}]), "entry 1 (openai:gpt-4o-mini): unknown field 'colour'"),
        (json.dumps([ROW, list(ROW)]), "entry 2 (mock:tiny): its id duplicates entry 1"),
        (json.dumps([ROW, {**OBJECT, "mock_fail_status": 200}]), "entry 2 (openai:gpt-4o-mini): unknown field 'mock_fail_status'"),
        (json.dumps([ROW, {**OBJECT, "provider": "mock", "mock_fail_status": 200}]), "entry 2 (mock:gpt-4o-mini): field 'mock_fail_status' must be an integer from 400 to 599"),
        # Numbers no model has: refused by name, never a crash or a billion-digit message.
        ('[["mock","tiny",1' + "0" * 5000 + ',0.1,0.1,200,512]]', "not valid JSON: Exceeds the limit (4300 digits)"),
        ('[["mock","tiny",1e5000,0.1,0.1,200,512]]', "field 'quality' must be an integer from 1 to 5, got 1E+5000"),
        ('[["mock","tiny",2,1e999999999,0.1,200,512]]', "field 'in_cost_per_1k' must be 0 or a price from 1E-30 to 1000"),
        ('[["mock","tiny",2,1e-999999999,0.1,200,512]]', "field 'in_cost_per_1k' must be 0 or a price"),
        ('[["mock","tiny",2,1001,0.1,200,512]]', "field 'in_cost_per_1k' must be 0 or a price"),
        ('[["mock","tiny",2,0.1,0.1,1e400,512]]', "field 'latency_ms' must be an integer of at least 1, got 1E+400"),
        ('[["mock","tiny",2,0.1,0.1,200,1e5000]]', "field 'max_output_tokens' must be an integer of at least 1, got 1E+5000"),
        ('{"providers": {"g": {"kind": "openai", "base_url": "http://a", "timeout_seconds": 1e999999999}}, "models": [["g", "m", 1, 0, 0, 1, 1]]}', "provider 'g': field 'timeout_seconds' must be 0 or a number from 1E-30 to 1E+15 in size, got 1E+999999999"),
        # JSON keeps the last of two equal keys, silently: refused instead.
        ('[{"provider": "mock", "name": "a", "name": "b", "quality": 1, "in_cost_per_1k": 0, "out_cost_per_1k": 0, "latency_ms": 1, "max_output_tokens": 1}]', "the key 'name' appears twice in one object"),
    ],
)
def test_invalid_registry_is_refused_naming_entry_and_field(text: str, expected: str) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_registry(text)
    assert expected in str(caught.value)


def test_one_bad_entry_refuses_the_whole_registry() -> None:
    good = [["mock", f"m{i}", 3, 0.001, 0.002, 100, 100] for i in range(5)]
    bad = good + [["mock", "broken", 3, 0.001, None, 100, 100]]
    with pytest.raises(RegistryError, match="entry 6 \\(mock:broken\\)"):
        parse_registry(json.dumps(bad))


def test_zero_price_is_accepted_only_when_written() -> None:
    (model,) = parse_registry(json.dumps([["mock", "free", 1, 0, 0, 10, 10]])).models
    assert model.input_cost_per_1k == 0 and model.output_cost_per_1k == 0


def test_registry_order_is_kept_but_lookup_is_by_id() -> None:
    rows = [["mock", f"m{i}", 1 + i % 5, 0.001 * (i + 1), 0.002, 100, 100] for i in range(10)]
    random.Random(3).shuffle(rows)
    registry = parse_registry(json.dumps(rows))
    assert registry.get("mock:m4").input_cost_per_1k == Decimal("0.005")
    assert registry.get("mock:nope") is None


# ---- version 2: providers and the models that use them --------------------------------------------

GROQ = {"kind": "openai", "base_url": "https://api.groq.com/openai/v1", "api_key": {"env": "GROQ_API_KEY"}}
LOCAL = {"kind": "openai", "base_url": "http://127.0.0.1:11434/v1"}
KEYS = {"kind": "openai", "base_url": "https://api.together.xyz/v1",
        "api_key": {"secret_id": "costroute/provider-keys", "field": "together"}}


def document(providers: dict, *models: object) -> str:
    return json.dumps({"providers": providers, "models": list(models)})


def test_the_issues_example_document_parses() -> None:
    from costroute.core.registry import CredentialSource

    text = document(
        {"groq": GROQ, "local": LOCAL, "keys": KEYS},
        ["groq", "llama-3.1-8b", 2, 0.00005, 0.00008, 300, 8192],
        {"provider": "local", "name": "llama3.1:8b", "quality": 2, "in_cost_per_1k": 0, "out_cost_per_1k": 0,
         "latency_ms": 900, "max_output_tokens": 4096},
        {"provider": "keys", "name": "meta/llama-3.3-70b.turbo", "upstream_model": "meta-llama/Llama-3.3-70B",
         "quality": 4, "in_cost_per_1k": 0.0009, "out_cost_per_1k": 0.0009, "latency_ms": 700,
         "max_output_tokens": 4096, "cached_input_cost_per_1k": 0.00045},
        ["mock", "basic", 1, 0.0001, 0.0002, 150, 1024],
    )
    registry = parse_registry(text)
    assert [m.id for m in registry.models] == ["groq:llama-3.1-8b", "local:llama3.1:8b",
                                              "keys:meta/llama-3.3-70b.turbo", "mock:basic"]
    local = registry.get("local:llama3.1:8b")
    assert local is not None and (local.provider, local.name, local.upstream) == ("local", "llama3.1:8b", "llama3.1:8b")
    assert local.input_cost_per_1k == 0 and local.output_cost_per_1k == 0
    together = registry.get("keys:meta/llama-3.3-70b.turbo")
    assert together is not None and together.upstream == "meta-llama/Llama-3.3-70B"
    assert together.cached_input_cost_per_1k == Decimal("0.00045")
    groq = registry.providers["groq"]
    assert (groq.kind, groq.base_url, groq.api_key.source, groq.api_key.name) == (
        "openai", "https://api.groq.com/openai/v1", CredentialSource.ENV, "GROQ_API_KEY")
    assert registry.providers["keys"].api_key.describe() == "secretsmanager:costroute/provider-keys#together"
    assert registry.providers["local"].api_key.source is CredentialSource.NONE
    # The built-in providers stay available beside the document's own.
    assert {"mock", "openai"} <= set(registry.providers)


def test_a_document_may_redefine_a_built_in_provider() -> None:
    registry = parse_registry(document({"openai": LOCAL}, ["openai", "m", 3, 0.001, 0.002, 100, 100]))
    assert registry.providers["openai"].base_url == "http://127.0.0.1:11434/v1"
    assert not registry.providers["openai"].builtin


def test_bare_names_and_upstream_names_resolve_when_unambiguous() -> None:
    from costroute.core.registry import AmbiguousModel

    registry = parse_registry(document(
        {"groq": GROQ, "local": LOCAL},
        {"provider": "groq", "name": "small", "upstream_model": "llama-3.1-8b-instant", "quality": 2,
         "in_cost_per_1k": 0.00005, "out_cost_per_1k": 0.00008, "latency_ms": 300, "max_output_tokens": 8192},
        ["local", "llama3.1:8b", 2, 0, 0, 900, 4096],
        ["groq", "twin", 2, 0.1, 0.1, 300, 100],
        ["local", "twin", 2, 0, 0, 900, 100],
    ))
    assert registry.resolve("llama-3.1-8b-instant").id == "groq:small"
    assert registry.resolve("small").id == "groq:small"
    assert registry.resolve("llama3.1:8b").id == "local:llama3.1:8b"
    assert registry.resolve("local:twin").id == "local:twin"
    assert registry.resolve("nothing") is None
    with pytest.raises(AmbiguousModel) as caught:
        registry.resolve("twin")
    assert caught.value.ids == ("groq:twin", "local:twin")


@pytest.mark.parametrize(
    ("providers", "models", "expected"),
    [
        ({"groq": GROQ}, [["acme", "m", 3, 0.1, 0.1, 10, 10]], "model 1 (acme:m): field 'provider' is 'acme', which is not a provider of the registry (groq, mock, openai)"),
        ({"x": {"kind": "cohere"}}, [], "provider 'x': field 'kind' is 'cohere', which is not a provider kind (anthropic, bedrock, mock, openai)"),
        ({"x": {"base_url": "http://a"}}, [], "provider 'x': field 'kind' is missing"),
        ({"Groq": GROQ}, [], "provider 'Groq': a provider name must be lower-case letters, digits"),
        ({"groq": {**GROQ, "api_key": "gsk-live-123"}}, [], "a key is never written inline in the document"),
        ({"groq": {**GROQ, "api_key": {"env": "A", "secret_id": "b"}}}, [], "field 'api_key' must be {\"env\": \"VAR\"} or {\"secret_id\""),
        ({"groq": {**GROQ, "api_key": {"env": "not a var"}}}, [], "'env' must be an environment variable name"),
        ({"groq": {**GROQ, "api_key": {"env": "gsk_live_AbC123"}}}, [], "'env' must be an environment variable name: upper-case letters"),
        ({"groq": {**GROQ, "api_key": {"secret_id": "sk-proj-AbC123"}}}, [], "'secret_id' looks like an API key"),
        ({"groq": {**GROQ, "base_url": "http://127.0.0.1:abc/v1"}}, [], "provider 'groq': field 'base_url' must be an http or https URL"),
        ({"groq": {**GROQ, "base_url": "http://127.0.0.1:99999/v1"}}, [], "provider 'groq': field 'base_url' must be an http or https URL"),
        ({"groq": {**GROQ, "api_key": {"secret_id": ""}}}, [], "field 'secret_id' must be a non-empty string"),
        ({"groq": {**GROQ, "api_key": {"vault": "x"}}}, [], "got the fields vault"),
        ({"groq": {**GROQ, "api_key": 7}}, [], "field 'api_key' must be an object, got number"),
        ({"groq": {**GROQ, "base_url": "not-a-url"}}, [], "provider 'groq': field 'base_url' must be an http or https URL"),
        ({"groq": {**GROQ, "timeout_seconds": 0}}, [], "provider 'groq': field 'timeout_seconds' must be a number greater than 0"),
        ({"groq": {**GROQ, "timeout_seconds": 1e9}}, [], "and at most 900"),
        ({"groq": {**GROQ, "region": "us-east-1"}}, [], "provider 'groq': unknown field 'region'"),
        ({"mock2": {"kind": "mock", "base_url": "http://x"}}, [], "provider 'mock2': unknown field 'base_url'"),
        ({"groq": "openai"}, [], "provider 'groq': its settings must be an object, got string"),
        ({"groq": GROQ}, [{"provider": "groq", "name": "m", "quality": 3, "in_cost_per_1k": 0.1, "out_cost_per_1k": 0.1, "latency_ms": 10, "max_output_tokens": 10, "mock_seed": 1}], "model 1 (groq:m): unknown field 'mock_seed'"),
        ({"groq": GROQ}, [{"provider": "groq", "name": "m", "quality": 3, "in_cost_per_1k": 0.1, "out_cost_per_1k": 0.1, "latency_ms": 10, "max_output_tokens": 10, "upstream_model": " x"}], "field 'upstream_model' must not have surrounding spaces"),
        ({"groq": GROQ}, [{"provider": "groq", "name": "m", "quality": 3, "in_cost_per_1k": 0.1, "out_cost_per_1k": 0.1, "latency_ms": 10, "max_output_tokens": 10, "cached_input_cost_per_1k": -1}], "field 'cached_input_cost_per_1k' must not be negative"),
    ],
)
def test_every_document_error_names_the_provider_or_model_and_the_field(
    providers: dict, models: list, expected: str
) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_registry(document(providers, *(models or [["mock", "basic", 1, 0.1, 0.1, 10, 10]])))
    assert expected in str(caught.value)


def test_every_error_is_reported_not_only_the_first_and_the_list_is_capped() -> None:
    models = [["mock", f"m{i}", 9, -1, 0.1, 10, 10] for i in range(15)]
    with pytest.raises(RegistryError) as caught:
        parse_registry(json.dumps(models))
    assert len(caught.value.errors) == 30  # each row: quality and the input price
    message = str(caught.value)
    assert message.startswith("30 errors: entry 1 (mock:m0): field 'quality'")
    assert "entry 10 (mock:m9)" in message and message.endswith("and 10 more")


def test_an_unknown_top_level_field_and_a_models_field_that_is_not_a_list_are_refused() -> None:
    with pytest.raises(RegistryError) as caught:
        parse_registry(json.dumps({"providers": {}, "models": {"a": 1}, "version": 2}))
    assert "registry: unknown field 'version'" in str(caught.value)
    assert "registry: field 'models' must be an array of models, got object" in str(caught.value)


@pytest.mark.parametrize("pasted", ["sk-proj-AbCdEf0123456789", "gsk_AbCdEf0123456789xyz", "not a var sk-live-123"])
def test_a_key_pasted_as_a_reference_is_never_repeated_in_the_error(pasted: str) -> None:
    """The registry's errors reach /health and every 503: a key pasted where a name goes must not."""
    for reference in ({"env": pasted}, {"secret_id": pasted}):
        try:
            parse_registry(document({"groq": {**GROQ, "api_key": reference}}, ["mock", "basic", 1, 0.1, 0.1, 10, 10]))
        except RegistryError as exc:
            assert pasted not in str(exc)
        else:
            assert reference == {"secret_id": "not a var sk-live-123"}  # a valid secret name: nothing to repeat
