"""strict_budget, in /route's constraints and in /v1's routing: never over budget, 402 when nothing fits."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask

from tests.random_text import random_text

MODELS = [
    ["mock", "basic", 1, 0.0001, 0.0002, 150, 1024],
    ["mock", "standard", 2, 0.0005, 0.0015, 300, 2048],
    ["mock", "advanced", 4, 0.0025, 0.006, 500, 4096],
    ["mock", "premium", 5, 0.01, 0.03, 1500, 8192],
    ["mock", "odd", 3, 0.000123, 0.000987, 700, 512],
]


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(models_config_json=json.dumps(MODELS))


def test_strict_budget_never_picks_an_over_budget_model(app: Flask) -> None:
    """Over random inputs, budgets, quality floors and output sizes, on /route (dry run) and /v1."""
    rng = random.Random(7)
    client = app.test_client()
    picked = refused = 0
    for index in range(150):
        text = random_text(rng, 2000)
        budget = float(f"{10 ** rng.uniform(-5, -1.5):.3g}")
        constraints: dict[str, Any] = {"max_cost_usd": budget, "strict_budget": True,
                                       "min_quality": rng.randint(1, 5)}
        metadata = {"expected_output_tokens": rng.randint(1, 4000)} if rng.random() < 0.5 else {}
        if index % 2:
            response = client.post("/route", json={"input": text, "constraints": constraints,
                                                   "metadata": metadata, "dry_run": True})
            account = response.get_json()
        else:
            response = client.post("/v1/chat/completions", json={
                "model": "auto", "messages": [{"role": "user", "content": text}], "routing": {**constraints, **metadata}})
            account = response.get_json().get("routing")
        if response.status_code == 402:
            refused += 1
            assert response.get_json()["error"]["type"] == "budget_exceeded"
            continue
        assert response.status_code == 200, response.get_json()
        picked += 1
        assert Decimal(repr(account["estimate"]["cost_usd"])) <= Decimal(repr(budget)), (index, account["model"])
        assert account["rung"]["number"] in (1, 3)
        if account["actual_cost_usd"] is not None:
            assert Decimal(repr(account["actual_cost_usd"])) <= Decimal(repr(budget))
    assert picked >= 50 and refused >= 20, (picked, refused)


@pytest.mark.parametrize("endpoint", ["/route", "/v1/chat/completions"])
def test_strict_budget_with_nothing_in_budget_is_402_with_each_models_reason(app: Flask, endpoint: str) -> None:
    constraints = {"max_cost_usd": 0.00001, "min_quality": 3, "strict_budget": True}
    if endpoint == "/route":
        body: dict[str, Any] = {"input": "Explain recursion to a child.", "constraints": constraints}
    else:
        body = {"model": "auto", "messages": [{"role": "user", "content": "Explain recursion to a child."}],
                "routing": constraints}
    response = app.test_client().post(endpoint, json=body)
    assert response.status_code == 402
    error = response.get_json()["error"]
    assert error["type"] == "budget_exceeded"
    assert error["message"].startswith("No model fits the budget of $0.00001 and strict_budget forbids relaxing it: ")
    for model in ("mock:basic", "mock:standard", "mock:advanced", "mock:premium", "mock:odd"):
        assert model in error["message"]
    assert "> budget $0.00001" in error["message"]
    assert error["attempts"] == []


@pytest.mark.parametrize("endpoint", ["/route", "/v1/chat/completions"])
def test_without_strict_the_over_budget_rungs_still_pick(app: Flask, endpoint: str) -> None:
    """min_quality 5 and a budget below premium's estimate: rung 2 picks it, and the ceiling holds."""
    constraints = {"max_cost_usd": 0.0005, "min_quality": 5}
    if endpoint == "/route":
        body: dict[str, Any] = {"input": "hi", "constraints": constraints}
    else:
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "routing": constraints}
    client = app.test_client()
    response = client.post(endpoint, json=body)
    assert response.status_code == 200
    json_body = response.get_json()
    account = json_body if endpoint == "/route" else json_body["routing"]
    assert account["model"] == "mock:premium"
    assert account["rung"]["number"] == 2
    assert account["estimate"]["cost_usd"] > 0.0005
    assert account["cost_ceiling_applied"] is True
    assert Decimal(repr(account["actual_cost_usd"])) <= Decimal("0.0005")

    # The same request under strict_budget: rung 3, the best model within the budget.
    strict = {**constraints, "strict_budget": True}
    body = {**body, ("constraints" if endpoint == "/route" else "routing"): strict}
    json_body = client.post(endpoint, json=body).get_json()
    account = json_body if endpoint == "/route" else json_body["routing"]
    assert account["rung"]["number"] == 3
    assert account["model"] == "mock:odd"
    assert account["estimate"]["cost_usd"] <= 0.0005


def test_strict_budget_from_a_header(app: Flask) -> None:
    response = app.test_client().post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}], "routing": {"min_quality": 5}},
        headers={"x-route-max-cost-usd": "0.0005", "x-route-strict-budget": "true"},
    )
    assert response.status_code == 200
    assert response.get_json()["routing"]["rung"]["number"] == 3
