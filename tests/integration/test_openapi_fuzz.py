"""Our /openapi.json says what the service really accepts: bodies generated from it get past validation.

Hypothesis generates request bodies from the spec's own schemas (hypothesis-jsonschema, test-only);
each must be accepted by validation (never a 400) and never cause a 500. Only what a static schema
cannot know is fixed up after generation: which providers and models the registry has.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from costroute.web.openapi import SPEC


def described_only(schema: Any) -> Any:
    """The schema with every object closed to the fields it describes: the generator then spends its
    examples on what the spec says, not on arbitrary extra fields (which the service ignores or passes on)."""
    if isinstance(schema, list):
        return [described_only(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: described_only(value) for key, value in schema.items()}
    if closed.get("type") == "object" and "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed


ROUTE_SCHEMA = SPEC["paths"]["/route"]["post"]["requestBody"]["content"]["application/json"]["schema"]
CHAT_SCHEMA = SPEC["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
# Only the fields the spec describes: every other field is the provider's business (and the mock ignores it).
CHAT_DESCRIBED = described_only({**CHAT_SCHEMA, "additionalProperties": False,
                                 "properties": {**CHAT_SCHEMA["properties"], "messages": {"type": "array", "maxItems": 0}}})
MESSAGE_BRANCHES = described_only(CHAT_SCHEMA["properties"]["messages"]["items"]["anyOf"])
# One strategy per role, composed: cheaper and better spread than one schema with every role in it.
MESSAGES = st.lists(st.one_of([from_schema(branch) for branch in MESSAGE_BRANCHES]), min_size=1, max_size=4)
# Derandomized, so that CI runs the same examples every time; the generator's own filtering of
# patterns is expected, not a sign of a bad strategy.
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.filter_too_much])


def _registry_facts(body: dict[str, Any], routing_key: str) -> dict[str, Any]:
    """Fix what the schema cannot know: the preferred provider must be one of the registry's."""
    routing = body.get(routing_key)
    if isinstance(routing, dict) and routing.get("prefer_provider") is not None:
        routing["prefer_provider"] = "mock"
    return body


@FUZZ
@given(body=from_schema(described_only(ROUTE_SCHEMA)))
def test_route_bodies_from_the_spec_pass_validation(client: Any, body: dict[str, Any]) -> None:
    body = _registry_facts(body, "constraints")
    body["dry_run"] = True
    response = client.post("/route", json=body)
    assert response.status_code in (200, 402, 422), (body, response.get_json())


@FUZZ
@given(body=from_schema(CHAT_DESCRIBED), messages=MESSAGES, model=st.sampled_from(["auto", "mock:basic", "basic"]))
def test_chat_bodies_from_the_spec_pass_validation(
    client: Any, body: dict[str, Any], messages: list[Any], model: str
) -> None:
    body = _registry_facts(body, "routing")
    body.update(model=model, messages=messages)
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code in (200, 402, 422), (body, response.get_data(as_text=True)[:2000])


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        (ROUTE_SCHEMA, {"input": "   "}),
        (ROUTE_SCHEMA, {"input": "hi", "constraints": {"min_quality": 6}}),
        (CHAT_SCHEMA, {"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}),
        (CHAT_SCHEMA, {"model": "auto", "messages": [{"role": "assistant", "content": None}]}),
        (CHAT_SCHEMA, {"model": "auto", "messages": [{"role": "tool", "content": "x"}]}),
        (CHAT_SCHEMA, {"model": "auto", "messages": [{"role": "user", "content": "x"}], "n": 2}),
    ],
)
def test_what_the_service_refuses_the_spec_refuses_too(client: Any, schema: dict[str, Any], body: dict[str, Any]) -> None:
    import jsonschema

    assert not jsonschema.Draft202012Validator(schema).is_valid(body)
    path = "/route" if schema is ROUTE_SCHEMA else "/v1/chat/completions"
    assert client.post(path, json=body).status_code == 400
