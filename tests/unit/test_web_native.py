"""The native API end to end through Flask's test client: /health, /models, /route and bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from tests.health import provider_entry
from tests.payloads import HAIKU_REQUEST, SEED_CURL_REQUEST


def post(client: Any, body: Any, path: str = "/route", **kwargs: Any) -> Any:
    """POST a JSON body (or raw text) and return the response."""
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data=data, content_type=kwargs.pop("content_type", "application/json"), **kwargs)


def assert_error(response: Any, status: int, fragment: str, param: str | None = None) -> dict[str, Any]:
    """The response is the one JSON error shape with this status and message fragment."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    error = response.get_json()["error"]
    assert set(error) >= {"type", "message", "param", "code"}
    assert fragment in error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def test_seed_haiku_example_picks_mock_advanced(client: Any) -> None:
    body = post(client, HAIKU_REQUEST).get_json()
    assert body["model"] == "mock:advanced"
    assert body["strategy"] == "quality_then_cost_with_provider_bias"
    assert body["response"] == "[MOCK:advanced] Echo: Write a haiku about the sea."
    assert body["estimate"]["output_tokens"] == 128
    assert body["estimate"]["latency_ms"] == body["provider_latency_ms"] == 500
    assert body["estimate"]["cost_usd"] <= 0.002
    assert all(isinstance(line, str) for line in body["decision_trace"]) and body["decision_trace"]


def test_seed_curl_example_meets_quality_and_budget(client: Any) -> None:
    body = post(client, SEED_CURL_REQUEST).get_json()
    chosen = next(c for c in body["candidates"] if c["verdict"] == "chosen")
    assert chosen["model"] == body["model"] and chosen["quality"] >= 3
    assert body["estimate"]["cost_usd"] <= 0.005 and body["actual_cost_usd"] <= 0.005


def test_route_reports_candidates_quality_source_rung_and_usage(client: Any) -> None:
    body = post(client, HAIKU_REQUEST).get_json()
    assert body["required_quality"] == {"value": 3, "source": "constraints.min_quality"}
    assert body["rung"]["number"] == 1
    verdicts = {c["model"]: c["verdict"] for c in body["candidates"]}
    assert verdicts == {"mock:basic": "excluded", "mock:standard": "excluded", "mock:advanced": "chosen", "mock:premium": "excluded"}
    assert all(c["reason"] for c in body["candidates"])
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    expected = (usage["prompt_tokens"] * 0.0025 + usage["completion_tokens"] * 0.006) / 1000
    assert usage["cost_usd"] == pytest.approx(expected, rel=1e-12)
    assert body["actual_cost_usd"] == usage["cost_usd"]


def test_quality_from_task_type_when_min_quality_is_absent(client: Any) -> None:
    body = post(client, {"input": "x = 1", "metadata": {"task_type": "code"}}).get_json()
    assert body["required_quality"]["value"] == 4
    assert "task_type 'code'" in body["required_quality"]["source"]


def test_dry_run_decides_without_calling_a_provider(client: Any) -> None:
    body = post(client, {**HAIKU_REQUEST, "dry_run": True}).get_json()
    assert body["dry_run"] is True
    assert body["model"] == "mock:advanced"
    assert body["response"] is None and body["usage"] is None and body["attempts"] == []
    assert len(body["candidates"]) == 4


def test_max_candidates_trims_the_list_but_not_the_count(client: Any) -> None:
    body = post(client, {**HAIKU_REQUEST, "dry_run": True, "max_candidates": 1}).get_json()
    assert len(body["candidates"]) == 1 and body["candidates_total"] == 4


def test_json_body_without_content_type_is_accepted(client: Any) -> None:
    response = client.post("/route", data=json.dumps(HAIKU_REQUEST))
    assert response.status_code == 200 and response.get_json()["model"] == "mock:advanced"
    response = post(client, HAIKU_REQUEST, content_type="text/plain")
    assert response.status_code == 200


def test_unknown_fields_are_ignored(client: Any) -> None:
    body = {**HAIKU_REQUEST, "colour": "blue", "constraints": {**HAIKU_REQUEST["constraints"], "mood": 1}}
    assert post(client, body).status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment", "param"),
    [
        ("not json", "not valid JSON", None),
        ("", "empty", None),
        ("[1, 2]", "must be a JSON object", None),
        ('"text"', "must be a JSON object", None),
        ({}, "'input' is required", "input"),
        ({"input": ""}, "must not be empty", "input"),
        ({"input": "   "}, "must not be empty", "input"),
        ({"input": 42}, "'input' must be a string", "input"),
        ({"input": "hi", "constraints": []}, "'constraints' must be an object", "constraints"),
        ({"input": "hi", "metadata": "qa"}, "'metadata' must be an object", "metadata"),
        ({"input": "hi", "constraints": {"min_quality": 0}}, "from 1 to 5, got 0", "constraints.min_quality"),
        ({"input": "hi", "constraints": {"min_quality": 6}}, "from 1 to 5", "constraints.min_quality"),
        ({"input": "hi", "constraints": {"min_quality": 3.5}}, "must be an integer", "constraints.min_quality"),
        ({"input": "hi", "constraints": {"min_quality": True}}, "must be an integer", "constraints.min_quality"),
        ({"input": "hi", "constraints": {"min_quality": "3"}}, "must be an integer", "constraints.min_quality"),
        ({"input": "hi", "constraints": {"max_cost_usd": 0}}, "greater than 0", "constraints.max_cost_usd"),
        ({"input": "hi", "constraints": {"max_cost_usd": -1}}, "greater than 0", "constraints.max_cost_usd"),
        ({"input": "hi", "constraints": {"max_cost_usd": "1"}}, "positive number", "constraints.max_cost_usd"),
        ({"input": "hi", "constraints": {"max_cost_usd": True}}, "positive number", "constraints.max_cost_usd"),
        ({"input": "hi", "constraints": {"max_latency_ms": 0}}, "positive integer", "constraints.max_latency_ms"),
        ({"input": "hi", "constraints": {"max_latency_ms": 10.5}}, "must be an integer", "constraints.max_latency_ms"),
        ({"input": "hi", "metadata": {"expected_output_tokens": -3}}, "positive integer", "metadata.expected_output_tokens"),
        ({"input": "hi", "metadata": {"expected_output_tokens": "many"}}, "must be an integer", "metadata.expected_output_tokens"),
        ('{"input": "hi", "constraints": {"max_cost_usd": NaN}}', "NaN", None),
        ('{"input": "hi", "constraints": {"max_cost_usd": Infinity}}', "Infinity", None),
        ('{"input": "hi", "metadata": {"expected_output_tokens": -Infinity}}', "-Infinity", None),
        ({"input": "hi", "constraints": {"prefer_provider": "acme"}}, "providers: mock", "constraints.prefer_provider"),
        ({"input": "hi", "constraints": {"prefer_provider": 3}}, "non-empty string", "constraints.prefer_provider"),
        ({"input": "hi", "dry_run": "yes"}, "true or false", "dry_run"),
    ],
)
def test_bad_input_gets_a_400_json_error(client: Any, body: Any, fragment: str, param: str | None) -> None:
    assert_error(post(client, body), 400, fragment, param)


def test_body_over_the_limit_is_413(make_app: Callable[..., Flask]) -> None:
    client = make_app(max_body_bytes=1000).test_client()
    response = post(client, {"input": "x" * 2000})
    assert_error(response, 413, "larger than the limit of 1000 bytes")


def test_unknown_path_is_a_json_404_and_wrong_method_a_json_405(client: Any) -> None:
    assert_error(client.get("/nope"), 404, "was not found on the server")
    response = client.get("/route")
    assert_error(response, 405, "method is not allowed")
    assert "POST" in response.headers["Allow"]


def test_health_reports_version_and_registry_never_a_key(make_app: Callable[..., Flask]) -> None:
    client = make_app(openai_api_key="sk-test-secret-health-1234").test_client()
    response = client.get("/health")
    body = response.get_json()
    assert body["status"] == "ok" and body["version"]
    assert body["registry"]["source"] == "builtin+openai" and body["registry"]["models"] == 5
    assert provider_entry(body, "openai")["key"] == {"source": "env:OPENAI_API_KEY", "configured": True}
    assert "sk-test-secret-health-1234" not in response.get_data(as_text=True)


def test_models_lists_every_field_and_availability(client: Any) -> None:
    models = client.get("/models").get_json()["models"]
    assert [m["id"] for m in models] == ["mock:basic", "mock:standard", "mock:advanced", "mock:premium"]
    assert set(models[0]) >= {
        "id", "provider", "name", "quality", "input_cost_per_1k", "output_cost_per_1k", "latency_ms",
        "max_output_tokens", "available", "unavailable_reason",
    }
    assert all(m["available"] for m in models)


def test_openai_model_in_a_custom_registry_without_a_key_is_unavailable(make_app: Callable[..., Flask]) -> None:
    registry = json.dumps([["mock", "basic", 1, 0.0001, 0.0002, 150, 1024], ["openai", "gpt-4o", 5, 0.0025, 0.01, 900, 4096]])
    client = make_app(models_config_json=registry).test_client()
    models = {m["id"]: m for m in client.get("/models").get_json()["models"]}
    assert models["openai:gpt-4o"]["available"] is False
    assert "OPENAI_API_KEY" in models["openai:gpt-4o"]["unavailable_reason"]
    body = post(client, {"input": "hi", "constraints": {"min_quality": 5}}).get_json()
    assert body["model"] == "mock:basic"
    assert {c["model"]: c["verdict"] for c in body["candidates"]}["openai:gpt-4o"] == "excluded"


def test_custom_registry_replaces_the_builtin_and_gets_no_openai_model(make_app: Callable[..., Flask]) -> None:
    registry = json.dumps([{"provider": "mock", "name": "solo", "quality": 3, "in_cost_per_1k": 0.001,
                            "out_cost_per_1k": 0.002, "latency_ms": 100, "max_output_tokens": 100}])
    client = make_app(models_config_json=registry, openai_api_key="sk-test-x").test_client()
    assert [m["id"] for m in client.get("/models").get_json()["models"]] == ["mock:solo"]
    assert client.get("/health").get_json()["registry"]["source"] == "env:MODELS_CONFIG_JSON"


def test_openai_variables_describe_the_added_model() -> None:
    from costroute.bootstrap import build_runtime
    from costroute.config.settings import Settings
    from costroute.web import create_app

    settings = Settings.from_env({
        "OPENAI_API_KEY": "sk-test-vars", "OPENAI_MODEL_NAME": "gpt-x", "OPENAI_INPUT_COST_PER_1K": "0.0003",
        "OPENAI_OUTPUT_COST_PER_1K": "0.0012", "OPENAI_MODEL_QUALITY": "4", "OPENAI_MODEL_LATENCY_MS": "700",
        "OPENAI_MODEL_MAX_TOKENS": "2048",
    })
    client = create_app(build_runtime(settings)).test_client()
    models = {m["id"]: m for m in client.get("/models").get_json()["models"]}
    assert models["openai:gpt-x"] == {
        "id": "openai:gpt-x", "provider": "openai", "kind": "openai", "name": "gpt-x", "upstream_model": "gpt-x",
        "quality": 4, "input_cost_per_1k": 0.0003, "output_cost_per_1k": 0.0012, "cached_input_cost_per_1k": None,
        "cache_write_cost_per_1k": None, "latency_ms": 700, "max_output_tokens": 2048, "available": True,
        "unavailable_reason": None, "pinnable": True,
    }


@pytest.mark.parametrize(("variable", "value", "fragment"), [
    ("OPENAI_MODEL_QUALITY", "9" * 5000, "OPENAI_MODEL_QUALITY must be a number"),
    ("OPENAI_MODEL_QUALITY", "high", "OPENAI_MODEL_QUALITY must be a number, got 'high'"),
    ("OPENAI_INPUT_COST_PER_1K", "1e999999999", "field 'in_cost_per_1k' must be 0 or a price"),
])
def test_an_openai_variable_no_model_could_have_is_a_503_naming_it_not_a_500(variable: str, value: str,
                                                                             fragment: str) -> None:
    from costroute.bootstrap import build_runtime
    from costroute.config.settings import Settings
    from costroute.web import create_app

    client = create_app(build_runtime(Settings.from_env({"OPENAI_API_KEY": "sk-test-vars", variable: value}))).test_client()
    response = client.post("/route", json={"input": "hi"})
    assert response.status_code == 503
    assert fragment in response.get_json()["error"]["message"]
    assert client.get("/health").get_json()["status"] == "degraded"


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"models_config_json": "[[\"mock\", \"a\", 9, 0.1, 0.1, 10, 10]]"}, "entry 1 (mock:a): field 'quality'"),
        ({"models_config_json": "{oops"}, "not valid JSON"),
        ({"openai_api_key": "sk-test-y", "openai_model": None}, ""),
    ],
)
def test_invalid_registry_answers_503_and_health_says_degraded(
    make_app: Callable[..., Flask], settings: dict[str, Any], fragment: str
) -> None:
    from costroute.config.settings import OpenAIModelSettings

    if "openai_model" in settings:
        settings["openai_model"] = OpenAIModelSettings(input_cost_per_1k="cheap")
        fragment = "OPENAI_INPUT_COST_PER_1K must be a number"
    client = make_app(**settings).test_client()
    for response in (post(client, HAIKU_REQUEST), client.get("/models"), client.get("/v1/models")):
        assert_error(response, 503, fragment)
    health = client.get("/health")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "degraded" and fragment in body["registry"]["error"]


def test_options_and_head_get_json_or_nothing_never_html(client: Any) -> None:
    response = client.open("/route", method="OPTIONS")
    assert response.status_code == 405 and response.is_json
    assert "POST" in response.headers["Allow"]
    head = client.head("/health")
    assert head.status_code == 200 and head.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/route", {"input": "hi", "constraints": {"min_quality": 3}, "metadata": {"expected_output_tokens": 9}},
         ("constraints.min_quality", "metadata.expected_output_tokens")),
        ("/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": "hi"}],
                                  "routing": {"min_quality": 3, "expected_output_tokens": 9}},
         ("routing.min_quality", "routing.expected_output_tokens")),
    ],
)
def test_the_trace_names_routing_fields_as_the_caller_sent_them(
    client: Any, path: str, body: dict[str, Any], expected: tuple[str, str]
) -> None:
    answer = client.post(path, json=body).get_json()
    account = answer.get("routing", answer)
    quality, output = expected
    assert account["decision_trace"][0] == f"Required quality 3, from {quality}."
    assert f"and 9 output tokens, from {output}," in account["decision_trace"][1]
    assert account["required_quality"]["source"] == quality
