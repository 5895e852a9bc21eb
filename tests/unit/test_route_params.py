"""Errors name the field the caller actually sent, on /route as on /v1."""

from __future__ import annotations

from typing import Any


def test_v1_unknown_prefer_provider_names_the_routing_field(client: Any) -> None:
    response = client.post("/v1/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": "hi"}], "routing": {"prefer_provider": "nobody"}})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "routing.prefer_provider"


def test_route_unknown_prefer_provider_names_the_constraints_field(client: Any) -> None:
    response = client.post("/route", json={"input": "hi", "constraints": {"prefer_provider": "nobody"}})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "constraints.prefer_provider"
