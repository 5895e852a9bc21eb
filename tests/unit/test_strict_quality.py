"""strict_quality, the twin of strict_budget: the quality floor is never relaxed; 422 when nothing meets it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

MODELS = [
    ["mock", "basic", 1, 0.0001, 0.0002, 150, 1024],
    ["mock", "standard", 2, 0.0005, 0.0015, 300, 2048],
    ["mock", "advanced", 4, 0.0025, 0.006, 500, 4096],
]


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> Any:
    return make_app(models_config_json=json.dumps(MODELS)).test_client()


def route(client: Any, constraints: dict[str, Any], via: str) -> Any:
    if via == "/route":
        return client.post("/route", json={"input": "hi", "constraints": constraints, "dry_run": True})
    if via == "routing":
        return client.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}],
                                                         "routing": constraints})
    headers = {"x-route-" + k.replace("_", "-"): json.dumps(v) for k, v in constraints.items()}
    return client.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                       headers=headers)


VIAS = pytest.mark.parametrize("via", ["/route", "routing", "header"])


@VIAS
def test_the_seed_ladder_relaxes_quality_by_default(client: Any, via: str) -> None:
    response = route(client, {"min_quality": 5, "max_cost_usd": 0.01}, via)
    assert response.status_code == 200
    account = response.get_json() if via == "/route" else response.get_json()["routing"]
    assert account["rung"]["number"] == 3  # quality relaxed: the best within budget
    assert account["model"] == "mock:advanced"


@VIAS
def test_strict_quality_never_relaxes_the_floor_and_names_each_models_reason(client: Any, via: str) -> None:
    response = route(client, {"min_quality": 5, "strict_quality": True}, via)
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["type"] == "quality_unmet"
    for model_id, quality in (("mock:basic", 1), ("mock:standard", 2), ("mock:advanced", 4)):
        assert f"{model_id}: quality {quality} < required 5" in error["message"]
    assert "strict_quality: the quality floor is never relaxed, so rungs 3 and 4 are not used." in error["decision_trace"]
    assert response.headers["x-should-retry"] == "false"


@VIAS
def test_strict_quality_keeps_rungs_1_and_2(client: Any, via: str) -> None:
    response = route(client, {"min_quality": 4, "max_cost_usd": 0.0005, "strict_quality": True}, via)
    assert response.status_code == 200
    account = response.get_json() if via == "/route" else response.get_json()["routing"]
    assert (account["model"], account["rung"]["number"]) == ("mock:advanced", 2)  # budget relaxed, quality kept


def test_with_both_strict_flags_only_rung_1_is_used(client: Any) -> None:
    response = route(client, {"min_quality": 4, "max_cost_usd": 0.0005, "strict_quality": True,
                              "strict_budget": True}, "/route")
    assert response.status_code == 402
    assert response.get_json()["error"]["type"] == "budget_exceeded"


def test_a_floor_met_only_by_models_the_hard_ceiling_rules_out_is_a_402(client: Any) -> None:
    response = route(client, {"min_quality": 4, "max_cost_usd": 0.00001, "strict_quality": True}, "/route")
    assert response.status_code == 402
    assert "leaves no room within the budget of $0.00001 for one output token" in response.get_json()["error"]["message"]


def test_a_floor_met_only_by_unavailable_models_is_an_outage_not_an_impossible_request(
    make_app: Callable[..., Flask]
) -> None:
    models = [*MODELS[:2], {"provider": "mock", "name": "down", "quality": 5, "in_cost_per_1k": 0.001,
                            "out_cost_per_1k": 0.001, "latency_ms": 100, "max_output_tokens": 100,
                            "mock_fail_status": 503}]
    client = make_app(models_config_json=json.dumps(models), breaker_failure_threshold=1).test_client()
    first = client.post("/route", json={"input": "hi", "constraints": {"min_quality": 5}}).get_json()
    assert first["attempts"][0] == {**first["attempts"][0], "model": "mock:down", "outcome": "upstream"}
    response = route(client, {"min_quality": 5, "strict_quality": True}, "/route")
    assert response.status_code == 503  # mock:down meets the floor; its breaker is open
    assert response.get_json()["error"]["type"] == "no_model_available"


def test_strict_quality_must_be_a_boolean_named_as_sent(client: Any) -> None:
    response = route(client, {"strict_quality": "yes"}, "routing")
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "routing.strict_quality"
