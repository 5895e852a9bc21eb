"""The mock plays an agent: tool calls and structured outputs valid against their schemas, through LangChain.

LangChain's ``ChatOpenAI`` (a test-only dependency) talks to the service over real HTTP, as an
agent framework would with no provider keys: ``bind_tools`` gets a tool call, and
``with_structured_output`` gets JSON its pydantic model accepts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

import jsonschema
import pytest
from flask import Flask
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from costroute.providers.mock import MAX_EXAMPLE_CHARS, MAX_REPEAT, example_for_schema
from tests.integration.servers import serving


@tool
def get_weather(city: str, days: int) -> str:
    """The weather forecast for a city."""
    return "sunny"


@tool
def search(query: str, limit: int = 5) -> str:
    """Search the web."""
    return "nothing"


class Mood(StrEnum):
    CALM = "calm"
    STORMY = "stormy"


class Line(BaseModel):
    text: str = Field(min_length=3)
    syllables: int = Field(ge=5, le=7)


class Haiku(BaseModel):
    title: str
    mood: Mood
    lines: list[Line] = Field(min_length=3)
    author: str | None = None


@pytest.fixture
def llm(client: Any) -> Iterator[ChatOpenAI]:
    app: Flask = client.application
    with serving(app) as base_url:
        yield ChatOpenAI(base_url=base_url, api_key="unused", model="mock:advanced", max_retries=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("choice", ["get_weather", "required"])
def test_bind_tools_gets_a_tool_call_valid_against_the_tools_schema(llm: ChatOpenAI, choice: str) -> None:
    message = llm.bind_tools([get_weather, search], tool_choice=choice).invoke("What is the weather in Paris?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather"  # named, or the first tool for "required"
    schema = get_weather.tool_call_schema.model_json_schema()
    jsonschema.validate(call["args"], schema)
    assert set(call["args"]) == {"city", "days"}


def test_without_a_tool_choice_the_mock_answers_in_text(llm: ChatOpenAI) -> None:
    message = llm.bind_tools([get_weather]).invoke("hello")
    assert message.tool_calls == []
    assert message.content == "[MOCK:advanced] Echo: hello"


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_with_structured_output_gets_an_instance_of_the_model(llm: ChatOpenAI, method: str) -> None:
    haiku = llm.with_structured_output(Haiku, method=method).invoke("Write a haiku about the sea.")
    assert isinstance(haiku, Haiku)
    assert len(haiku.lines) >= 3 and all(5 <= line.syllables <= 7 and len(line.text) >= 3 for line in haiku.lines)
    assert haiku.mood is Mood.CALM


def test_the_same_request_gets_the_same_answer(llm: ChatOpenAI) -> None:
    structured = llm.with_structured_output(Haiku)
    assert structured.invoke("a") == structured.invoke("a")


def test_json_schema_answers_validate_against_the_schema_over_the_api(client: Any) -> None:
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "when": {"type": "string", "format": "date-time"},
            "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 2},
            "nested": {"$ref": "#/$defs/Nested"},
            "choice": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 10}]},
        },
        "required": ["id", "when", "score", "tags", "nested", "choice"],
        "additionalProperties": False,
        "$defs": {"Nested": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}},
    }
    response = client.post("/v1/chat/completions", json={
        "model": "mock:advanced", "messages": [{"role": "user", "content": "go"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}}})
    content = response.get_json()["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), schema, format_checker=jsonschema.FormatChecker())


def test_json_object_answers_are_json(client: Any) -> None:
    response = client.post("/v1/chat/completions", json={
        "model": "mock:basic", "messages": [{"role": "user", "content": "go"}], "response_format": {"type": "json_object"}})
    assert json.loads(response.get_json()["choices"][0]["message"]["content"]) == {"answer": "[MOCK:basic] Echo: go"}


def _arrays(value: Any) -> Iterator[list[Any]]:
    """Every array inside a JSON value."""
    if isinstance(value, list):
        yield value
        for item in value:
            yield from _arrays(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _arrays(item)


def test_a_tiny_request_cannot_make_the_mock_build_a_huge_tool_call(client: Any) -> None:
    nested = {"type": "array", "minItems": 3000, "items": {"type": "array", "minItems": 300, "items": {"type": "string"}}}
    long = {"type": "string", "minLength": 100_000}
    body = json.dumps({"model": "mock:advanced", "messages": [{"role": "user", "content": "go"}],
                       "tools": [{"type": "function", "function": {"name": "f", "parameters": {
                           "type": "object", "properties": {"x": nested, "s": long}}}}],
                       "tool_choice": {"type": "function", "function": {"name": "f"}}}, separators=(",", ":"))
    assert len(body) < 400  # a few hundred bytes of request
    response = client.post("/v1/chat/completions", data=body, content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    (call,) = response.get_json()["choices"][0]["message"]["tool_calls"]
    arguments = call["function"]["arguments"]
    assert len(arguments) <= MAX_EXAMPLE_CHARS + 100
    value = json.loads(arguments)
    assert all(len(array) <= MAX_REPEAT for array in _arrays(value))
    assert value["s"] == "mock" + "m" * (MAX_REPEAT - 4)


@pytest.mark.parametrize(
    "schema",
    [
        # Nested minItems multiply: 3000 ** 4 values uncapped.
        {"type": "array", "minItems": 3000, "items": {"type": "array", "minItems": 3000, "items": {
            "type": "array", "minItems": 3000, "items": {"type": "array", "minItems": 3000, "items": {"type": "integer"}}}}},
        # A schema that refers to itself through ten properties: 10 ** 12 values within the depth bound.
        {"$ref": "#/$defs/node", "$defs": {"node": {"type": "object",
                                                    "properties": {f"p{i}": {"$ref": "#/$defs/node"} for i in range(10)}}}},
        # A large constant repeated by the arrays around it.
        {"type": "array", "minItems": 16, "items": {"type": "array", "minItems": 16, "items": {"const": "c" * 500_000}}},
        {"type": "string", "minLength": 10 ** 12},
    ],
    ids=["nested-min-items", "self-reference", "repeated-constant", "min-length"],
)
def test_what_the_mock_generates_from_a_schema_stays_small(schema: dict[str, Any]) -> None:
    assert len(json.dumps(example_for_schema(schema))) <= MAX_EXAMPLE_CHARS + 100


def test_a_bound_beyond_any_float_is_not_a_500(client: Any) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 10 ** 400}}}
    response = client.post("/v1/chat/completions", json={
        "model": "mock:advanced", "messages": [{"role": "user", "content": "go"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}})
    assert response.status_code == 200
    assert isinstance(json.loads(response.get_json()["choices"][0]["message"]["content"])["n"], int)
