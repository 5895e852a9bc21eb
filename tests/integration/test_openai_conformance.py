"""Every /v1 answer validates against the schema OpenAI publishes for it (../shared/openai-openapi.json).

OpenAPI's ``nullable: true`` means "this, or null", which plain JSON Schema ignores: each such node
is rewritten as ``anyOf [node, null]`` before validating. Answers are real ones: routed, pinned,
capped, with tool calls, streamed with and without usage, cut mid-stream, each error status, the
model list and one model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest
from flask import Flask
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.fakes.fake_openai import FakeOpenAI, cut_stream, status
from tests.integration.servers import FAKE_KEY, fake_openai, model_entry, registry_json, sdk_for  # noqa: F401
from tests.payloads import repo_root

SPEC_PATH = os.path.join(os.path.dirname(repo_root()), "shared", "openai-openapi.json")
BASE = "urn:openai-openapi"
HI = [{"role": "user", "content": "Write a haiku about the sea."}]
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"]}}}


def _nullable_to_any_of(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable_to_any_of(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_to_any_of(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@pytest.fixture(scope="module")
def validate() -> Callable[[str, Any], None]:
    """Validate an instance against one of OpenAI's component schemas."""
    assert os.path.exists(SPEC_PATH), f"OpenAI's OpenAPI document is expected at {SPEC_PATH}"
    with open(SPEC_PATH, encoding="utf-8") as spec_file:
        document = _nullable_to_any_of(json.load(spec_file))
    registry: Registry = Registry().with_resource(BASE, Resource.from_contents(document, default_specification=DRAFT202012))

    def check(schema_name: str, instance: Any) -> None:
        validator = jsonschema.Draft202012Validator({"$ref": f"{BASE}#/components/schemas/{schema_name}"},
                                                    registry=registry)
        errors = sorted(validator.iter_errors(instance), key=lambda error: list(error.absolute_path))
        assert not errors, f"{schema_name}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])

    return check


@pytest.fixture
def app(make_app: Callable[..., Flask], fake_openai: FakeOpenAI) -> Flask:  # noqa: F811
    registry = registry_json(
        ["mock", "basic", 1, 0.0001, 0.0002, 150, 1024],
        ["mock", "advanced", 4, 0.0025, 0.006, 500, 4096],
        model_entry("openai", "gpt-4o-mini", 3, 0.00015, 0.0006),
    )
    return make_app(models_config_json=registry, openai_api_key=FAKE_KEY, openai_base_url=fake_openai.base_url)


def _events(response: Any) -> Iterator[Any]:
    for block in response.get_data(as_text=True).split("\n\n"):
        if block.startswith("data: ") and block != "data: [DONE]":
            yield json.loads(block[6:])


@pytest.mark.parametrize(
    "body",
    [
        {"model": "auto", "messages": HI, "routing": {"min_quality": 3}},
        {"model": "mock:basic", "messages": HI},
        {"model": "gpt-4o-mini", "messages": HI},
        {"model": "openai:gpt-4o-mini", "messages": HI, "max_tokens": 2},
        {"model": "mock:advanced", "messages": HI, "tools": [WEATHER_TOOL], "tool_choice": "required"},
        {"model": "mock:advanced", "messages": HI, "response_format": {"type": "json_object"}},
    ],
    ids=["routed", "pinned-mock", "bare-name", "capped-upstream", "tool-call", "json-object"],
)
def test_completions_validate(app: Flask, validate: Callable[[str, Any], None], body: dict[str, Any]) -> None:
    response = app.test_client().post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    validate("CreateChatCompletionResponse", answer)
    assert answer["choices"][0]["message"]["refusal"] is None


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("model", ["auto", "openai:gpt-4o-mini", "mock:advanced"])
def test_every_streamed_chunk_validates(
    app: Flask, validate: Callable[[str, Any], None], include_usage: bool, model: str
) -> None:
    body: dict[str, Any] = {"model": model, "messages": HI, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    response = app.test_client().post("/v1/chat/completions", json=body)
    chunks = list(_events(response))
    assert len(chunks) >= 3
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    assert (chunks[-1].get("usage") is not None) is include_usage


def test_streamed_tool_call_chunks_validate(app: Flask, validate: Callable[[str, Any], None]) -> None:
    response = app.test_client().post("/v1/chat/completions", json={
        "model": "mock:advanced", "messages": HI, "stream": True, "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
    chunks = list(_events(response))
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_the_error_event_of_a_cut_stream_validates(
    app: Flask, fake_openai: FakeOpenAI, validate: Callable[[str, Any], None]  # noqa: F811
) -> None:
    fake_openai.enqueue(cut_stream(after_words=1))
    response = app.test_client().post("/v1/chat/completions", json={
        "model": "openai:gpt-4o-mini", "messages": HI, "stream": True})
    *chunks, error = list(_events(response))
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    validate("ErrorResponse", error)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"model": "auto", "messages": []}, 400),
        ({"model": "acme:nope", "messages": HI}, 404),
        ({"model": "auto", "messages": HI, "routing": {"max_cost_usd": 1e-12}}, 402),
        ({"model": "auto", "messages": HI, "routing": {"min_quality": 5, "strict_quality": True}}, 422),
        ({"model": "openai:gpt-4o-mini", "messages": HI}, 502),
        ({"model": "openai:gpt-4o-mini", "messages": HI, "stream": True}, 503),
    ],
)
def test_every_error_validates(
    app: Flask, fake_openai: FakeOpenAI, validate: Callable[[str, Any], None],  # noqa: F811
    body: dict[str, Any], expected: int,
) -> None:
    fake_openai.set_default(status(500) if expected == 502 else status(429, retry_after=600))
    response = app.test_client().post("/v1/chat/completions", json=body)
    assert response.status_code == expected, response.get_json()
    validate("ErrorResponse", response.get_json())


def test_an_http_level_error_validates(app: Flask, validate: Callable[[str, Any], None]) -> None:
    for response in (app.test_client().get("/v1/chat/completions"), app.test_client().get("/v1/nope")):
        validate("ErrorResponse", response.get_json())


def test_models_and_one_model_validate(app: Flask, validate: Callable[[str, Any], None]) -> None:
    client = app.test_client()
    listed = client.get("/v1/models").get_json()
    validate("ListModelsResponse", listed)
    for model in listed["data"]:
        one = client.get(f"/v1/models/{model['id']}")
        assert one.status_code == 200
        validate("Model", one.get_json())
        assert one.get_json() == model
    missing = client.get("/v1/models/acme:nope")
    assert missing.status_code == 404
    validate("ErrorResponse", missing.get_json())


def test_the_sdk_retrieves_a_model_and_raises_not_found(app: Flask) -> None:
    import openai

    with sdk_for(app) as sdk:
        model = sdk.models.retrieve("openai:gpt-4o-mini")
        assert (model.id, model.owned_by) == ("openai:gpt-4o-mini", "openai")
        assert sdk.models.retrieve("gpt-4o-mini").id == "openai:gpt-4o-mini"  # a bare name, unambiguous
        with pytest.raises(openai.NotFoundError):
            sdk.models.retrieve("acme:nope")
