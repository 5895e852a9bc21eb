"""GET /openapi.json describes exactly the app's routes and methods, no more and no less."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Flask

IGNORED_METHODS = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _app_operations(app: Flask) -> set[tuple[str, str]]:
    operations = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        # Flask's <converter:name> becomes OpenAPI's {name}.
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - IGNORED_METHODS:
            operations.add((path, method.lower()))
    return operations


def _spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in spec["paths"].items() for method in item if method in HTTP_METHODS}


def test_spec_and_url_map_describe_the_same_operations(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"].startswith("3.")
    in_app, in_spec = _app_operations(app), _spec_operations(spec)
    assert in_app, "the app has routes"
    assert in_app - in_spec == set(), "routes the spec does not describe"
    assert in_spec - in_app == set(), "operations the spec describes but the app does not serve"


def test_every_operation_documents_a_success_response(make_app: Callable[..., Flask]) -> None:
    spec = make_app().test_client().get("/openapi.json").get_json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert "200" in operation["responses"], f"{method.upper()} {path}"


def test_the_comparison_notices_a_route_missing_from_the_spec(make_app: Callable[..., Flask]) -> None:
    """The check above is not vacuous: an extra route shows up as undocumented."""
    app = make_app()
    app.add_url_rule("/extra/<int:item>", "extra", lambda item: "", methods=["DELETE"])
    spec = app.test_client().get("/openapi.json").get_json()
    assert _app_operations(app) - _spec_operations(spec) == {("/extra/{item}", "delete")}


def test_chat_completions_documents_the_routing_headers(make_app: Callable[..., Flask]) -> None:
    from costroute.core.requests import ROUTING_FIELDS
    from costroute.web.openai_compat import header_name

    spec = make_app().test_client().get("/openapi.json").get_json()
    operation = spec["paths"]["/v1/chat/completions"]["post"]
    documented = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert documented == {header_name(field) for field in ROUTING_FIELDS}
    body_routing = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["routing"]
    (routing_object, null) = body_routing["anyOf"]  # null means absent
    assert null == {"type": "null"}
    assert set(routing_object["properties"]) == set(ROUTING_FIELDS)
    app = make_app()
    response = app.test_client().post("/v1/chat/completions", json={"model": "auto", "messages": [
        {"role": "user", "content": "hi"}]})
    sent = {name.lower() for name in response.headers.keys() if name.lower().startswith("x-route-")}
    # Sent only when a provider ignored max_tokens and the cost passed the budget, and only with budgets.
    conditional = {"x-route-over-budget-usd", "x-route-budget-remaining-usd"}
    assert set(operation["responses"]["200"]["headers"]) - conditional == sent
