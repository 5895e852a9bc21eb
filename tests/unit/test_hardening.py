"""Inputs found by review that once hung a worker, answered 500, or could break the ceiling."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from costroute.core.estimate import cost_usd
from costroute.core.plan import plan_call, worst_input
from costroute.core.registry import Model
from costroute.core.requests import parse_chat_body

CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


def test_a_huge_integer_budget_is_refused_not_looped_over(client: Any) -> None:
    response = client.post("/route", data=json.dumps({"input": "hi", "constraints": {"max_cost_usd": 10**29}}))
    assert response.status_code == 400
    assert "at most 1000000" in response.get_json()["error"]["message"]


def test_the_ceiling_is_exact_for_the_largest_budget_and_long_prices() -> None:
    model = Model("mock", "m", 3, Decimal("0.000123456789012345678901234567"), Decimal("0.000987654321098765432109876543"), 1, 10**13)
    budget = Decimal(1_000_000)
    plan = plan_call(model, worst_input(model, 12_345), None, budget)
    assert plan is not None
    ceiling = plan.max_tokens
    assert 0 < ceiling < 10**13
    assert cost_usd(model, 12_345, ceiling) <= budget < cost_usd(model, 12_345, ceiling + 1)


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 5000 + "]" * 5000,
        json.dumps({"input": "hi", "metadata": {"x": 1}})[:-1] + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}",
    ],
    ids=["body", "inside-a-field"],
)
def test_deeply_nested_json_is_a_400(client: Any, raw: str) -> None:
    for path in ("/route", "/v1/chat/completions"):
        response = client.post(path, data=raw)
        assert response.status_code == 400, (path, response.get_data(as_text=True)[:200])
        assert "nested too deeply" in response.get_json()["error"]["message"]


def test_a_deeply_nested_header_value_is_a_400_naming_the_header(client: Any) -> None:
    response = client.post("/v1/chat/completions", json=CHAT, headers={"x-route-min-quality": "[" * 5000})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "x-route-min-quality"


@pytest.mark.parametrize("path", ["/route", "/v1/chat/completions"])
def test_a_lone_surrogate_is_a_400_before_any_provider_is_called(client: Any, path: str) -> None:
    body = '{"input": "hi \\ud800"}' if path == "/route" else '{"model": "auto", "messages": [{"role": "user", "content": "hi \\uD800"}]}'
    response = client.post(path, data=body)
    assert response.status_code == 400
    assert "lone surrogate" in response.get_json()["error"]["message"]
    assert client.get("/health").get_json()["open_breakers"] == {}


def test_a_valid_surrogate_pair_is_text(client: Any) -> None:
    response = client.post("/route", data='{"input": "smile \\ud83d\\ude00"}')
    assert response.status_code == 200
    assert response.get_json()["response"].endswith("smile \U0001F600")


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"service_tier": "priority"}, "service_tier"), ({"service_tier": "scale"}, "service_tier"), ({"n": True}, "n")],
)
def test_fields_that_would_break_the_ceiling_are_refused(client: Any, extra: dict[str, Any], param: str) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, **extra})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == param


@pytest.mark.parametrize("tier", ["auto", "default", "flex"])
def test_service_tiers_at_or_below_standard_prices_pass_through(tier: str) -> None:
    chat = parse_chat_body({**CHAT, "service_tier": tier})
    assert chat.route.provider_params["service_tier"] == tier


def test_the_smaller_of_two_output_caps_holds() -> None:
    chat = parse_chat_body({**CHAT, "max_tokens": 20, "max_completion_tokens": 50})
    assert (chat.route.max_tokens, chat.route.max_tokens_field) == (20, "max_completion_tokens")
    chat = parse_chat_body({**CHAT, "max_tokens": 80, "max_completion_tokens": 50})
    assert chat.route.max_tokens == 50
