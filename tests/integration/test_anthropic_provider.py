"""The Anthropic adapter against FakeAnthropic on loopback (through the real anthropic SDK), and end to end
through /route and /v1/chat/completions beside an OpenAI-compatible fake."""

from __future__ import annotations

import json
import logging
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal, localcontext
from typing import Any

import openai
import pytest
from flask import Flask

from costroute.core.estimate import EXACT
from costroute.core.outcome import FailureKind
from costroute.core.registry import ProviderSpec
from costroute.core.requests import parse_chat_body
from costroute.core.selection import plain_decimal
from costroute.providers.anthropic import KIND, AnthropicProvider, StreamReader, tool_prompt_overhead
from costroute.providers.base import AdapterDeps, ClosingStream, KeySource, ProviderCall, ProviderError
from tests.adapters import RotatingKeys, StaticKey
from tests.answers import attempts_of, trace_of
from tests.conftest import FakeClock
from tests.fakes import fake_anthropic as fa
from tests.fakes.fake_anthropic import FakeAnthropic, count_input_tokens
from tests.fakes.fake_openai import FakeOpenAI
from tests.integration.servers import model_entry, sdk_for
from tests.payloads import repo_root
from tests.random_text import random_text
from tests.registries import parse_registry

ANTHROPIC_KEY = "sk-ant-test-costroute-7f3e9a1b2c4d"
OPENAI_KEY = "sk-test-compat-costroute-4d5e6f7a8b"
ENVIRON = {"TEST_ANTHROPIC_KEY": ANTHROPIC_KEY, "TEST_OPENAI_KEY": OPENAI_KEY}
HI = [{"role": "user", "content": "hi"}]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                            "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture
def claude() -> Iterator[FakeAnthropic]:
    """A fake Anthropic Messages server that accepts ANTHROPIC_KEY."""
    with FakeAnthropic(api_key=ANTHROPIC_KEY) as fake:
        yield fake


@pytest.fixture
def compat() -> Iterator[FakeOpenAI]:
    """A fake OpenAI-compatible server that accepts OPENAI_KEY."""
    with FakeOpenAI(api_key=OPENAI_KEY) as fake:
        yield fake


def claude_model(name: str, quality: int, in_cost: float, out_cost: float, **extra: Any) -> dict[str, Any]:
    return model_entry("claude", name, quality, in_cost, out_cost, upstream_model=f"claude-{name}-5", **extra)


def compat_model(name: str, quality: int, in_cost: float, out_cost: float, **extra: Any) -> dict[str, Any]:
    return model_entry("compat", name, quality, in_cost, out_cost, **extra)


def document(claude_url: str, compat_url: str, *models: dict[str, Any], **claude_settings: Any) -> str:
    """A version-2 registry: the Anthropic fake as ``claude``, the OpenAI-compatible fake as ``compat``."""
    providers = {
        "claude": {"kind": "anthropic", "base_url": claude_url, "api_key": {"env": "TEST_ANTHROPIC_KEY"},
                   **claude_settings},
        "compat": {"kind": "openai", "base_url": compat_url, "api_key": {"env": "TEST_OPENAI_KEY"}},
    }
    return json.dumps({"providers": providers, "models": list(models)})


@pytest.fixture
def build(make_app: Callable[..., Flask], claude: FakeAnthropic, compat: FakeOpenAI) -> Callable[..., Flask]:
    """An app over both fakes with the given models; ``claude_url`` overrides the Anthropic base URL."""

    def factory(*models: dict[str, Any], runtime_kwargs: dict[str, Any] | None = None, claude_url: str | None = None,
                claude_settings: dict[str, Any] | None = None, **settings: Any) -> Flask:
        registry = document(claude_url or claude.base_url, compat.base_url, *models, **(claude_settings or {}))
        return make_app(runtime_kwargs={"environ": ENVIRON, **(runtime_kwargs or {})}, models_config_json=registry,
                        **settings)

    return factory


def chat(app: Flask, model: str = "auto", messages: list[dict[str, Any]] | None = None, **fields: Any) -> Any:
    """POST /v1/chat/completions with the Flask test client."""
    body = {"model": model, "messages": messages or HI, **fields}
    response = app.test_client().post("/v1/chat/completions", json=body)
    response.get_data()  # a stream is read to its end here, inside the test, never left to the garbage collector
    return response


def stream_events(response: Any) -> list[dict[str, Any]]:
    """The JSON events of a streamed /v1 answer."""
    text = response.get_data(as_text=True)
    assert text.rstrip().endswith("data: [DONE]"), text[-300:]
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def streamed_text(events: list[dict[str, Any]]) -> str:
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))


def sent(fake: FakeAnthropic) -> dict[str, Any]:
    """The body of the last Messages request the fake accepted or refused."""
    body = fake.message_requests[-1].body
    assert body is not None
    return body


def adapter(fake: FakeAnthropic, keys: KeySource | None = None) -> AnthropicProvider:
    """The adapter for one provider, built through the kind as the composition root builds it."""
    spec = ProviderSpec(name="claude", kind="anthropic", base_url=fake.base_url)
    return KIND.build(spec, AdapterDeps(keys=keys or StaticKey(ANTHROPIC_KEY), provider_timeout_s=10))


MODEL = parse_registry({"providers": {"claude": {"kind": "anthropic", "api_key": {"env": "K"}}},
                        "models": [claude_model("sonnet", 4, 0.003, 0.015)]}).models[0]
CALL = ProviderCall(messages=tuple(HI), max_tokens=40, timeout_s=5)


# ---------------------------------------------------------------------------------------------
# The adapter against the fake


def test_the_adapter_calls_the_messages_api_with_its_key_and_the_upstream_model(claude: FakeAnthropic) -> None:
    provider = adapter(claude)
    assert provider.status() == {"host": "127.0.0.1", "client": False}
    assert provider.availability(MODEL) is None
    completion = provider.complete(MODEL, CALL)
    assert completion.text == "[FAKE-ANTHROPIC:claude-sonnet-5] hi"
    assert completion.finish_reason == "stop"
    assert completion.usage is not None and completion.usage.input_tokens == count_input_tokens(sent(claude))
    (request,) = claude.message_requests
    assert request.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"
    assert request.anthropic_version == "2026-10-21"
    assert request.body == {"model": "claude-sonnet-5", "max_tokens": 40,
                            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert provider.status() == {"host": "127.0.0.1", "client": True}


def test_the_adapter_streams_pieces_ending_with_finish_reason_and_usage(claude: FakeAnthropic) -> None:
    pieces = list(adapter(claude).stream(MODEL, CALL))
    assert "".join(p.text for p in pieces) == "[FAKE-ANTHROPIC:claude-sonnet-5] hi"
    assert pieces[-1].finish_reason == "stop" and pieces[-1].usage is not None
    assert pieces[-1].usage.output_tokens == 2
    assert sent(claude)["stream"] is True


def test_closing_a_stream_before_the_first_piece_releases_the_connection(claude: FakeAnthropic,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from costroute.providers import anthropic as module

    closed: list[Any] = []
    real_close = module._close

    def recording_close(raw: Any) -> None:
        real_close(raw)
        closed.append(raw)

    monkeypatch.setattr(module, "_close", recording_close)
    stream = adapter(claude).stream(MODEL, CALL)
    assert isinstance(stream, ClosingStream)
    stream.close()
    (raw,) = closed
    assert raw.http_response.is_closed
    assert list(stream) == []
    assert adapter(claude).complete(MODEL, CALL).text  # the fake keeps serving


def test_availability_reports_the_key_sources_problem(claude: FakeAnthropic) -> None:
    class NoKey(StaticKey):
        def problem(self) -> str:
            return "no API key for provider 'claude': the environment variable X is not set"

    assert adapter(claude, NoKey(None)).availability(MODEL) == (
        "no API key for provider 'claude': the environment variable X is not set")


# ---------------------------------------------------------------------------------------------
# Routing across both kinds by price


@pytest.mark.parametrize("cheaper", ["claude", "compat"])
def test_the_cheaper_qualifying_model_wins_on_route(build: Callable[..., Flask], claude: FakeAnthropic,
                                                    compat: FakeOpenAI, cheaper: str) -> None:
    low, high = (0.001, 0.005), (0.002, 0.01)
    app = build(claude_model("haiku", 3, *(low if cheaper == "claude" else high)),
                compat_model("mini", 3, *(high if cheaper == "claude" else low)))
    response = app.test_client().post("/route", json={"input": "Write a haiku.", "constraints": {"min_quality": 3}})
    body = response.get_json()
    assert response.status_code == 200, body
    if cheaper == "claude":
        assert body["model"] == "claude:haiku"
        assert body["response"] == "[FAKE-ANTHROPIC:claude-haiku-5] Write a haiku."
        assert len(claude.message_requests) == 1 and compat.chat_requests == []
    else:
        assert body["model"] == "compat:mini"
        assert body["response"] == "[FAKE:mini] Write a haiku."
        assert claude.message_requests == [] and len(compat.chat_requests) == 1
    assert body["candidates"][0]["model"] == body["model"]


@pytest.mark.parametrize("cheaper", ["claude", "compat"])
@pytest.mark.parametrize("stream", [False, True])
def test_the_cheaper_model_wins_on_v1_through_the_openai_sdk(build: Callable[..., Flask], cheaper: str,
                                                            stream: bool) -> None:
    low, high = (0.001, 0.005), (0.002, 0.01)
    app = build(claude_model("haiku", 3, *(low if cheaper == "claude" else high)),
                compat_model("mini", 3, *(high if cheaper == "claude" else low)))
    prefix = "[FAKE-ANTHROPIC:claude-haiku-5] " if cheaper == "claude" else "[FAKE:mini] "
    with sdk_for(app) as client:
        if stream:
            chunks = list(client.chat.completions.create(model="auto", messages=HI, stream=True,
                                                         stream_options={"include_usage": True}))
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == prefix + "hi"
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
            assert {c.model for c in chunks} == {"claude:haiku" if cheaper == "claude" else "compat:mini"}
        else:
            completion = client.chat.completions.create(model="auto", messages=HI)
            assert completion.model == ("claude:haiku" if cheaper == "claude" else "compat:mini")
            assert completion.choices[0].message.content == prefix + "hi"
            assert completion.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_a_pinned_anthropic_model_is_called_even_when_dearer(build: Callable[..., Flask], claude: FakeAnthropic,
                                                             compat: FakeOpenAI, stream: bool) -> None:
    app = build(claude_model("opus", 5, 0.015, 0.075), compat_model("mini", 5, 0.0001, 0.0004))
    with sdk_for(app) as client:
        if stream:
            chunks = list(client.chat.completions.create(model="claude:opus", messages=HI, stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            text = client.chat.completions.create(model="claude:opus", messages=HI).choices[0].message.content or ""
    assert text == "[FAKE-ANTHROPIC:claude-opus-5] hi"
    assert compat.chat_requests == []


def test_health_shows_the_anthropic_provider_without_its_key(build: Callable[..., Flask]) -> None:
    app = build(claude_model("haiku", 3, 0.001, 0.005))
    client = app.test_client()
    before = next(p for p in client.get("/health").get_json()["providers"] if p["name"] == "claude")
    assert (before["kind"], before["host"], before["client"]) == ("anthropic", "127.0.0.1", False)
    assert chat(app).status_code == 200
    health = client.get("/health")
    after = next(p for p in health.get_json()["providers"] if p["name"] == "claude")
    assert after["client"] is True
    assert after["key"] == {"source": "env:TEST_ANTHROPIC_KEY", "configured": True}
    text = health.get_data(as_text=True)
    assert ANTHROPIC_KEY not in text and ANTHROPIC_KEY[-8:] not in text


# ---------------------------------------------------------------------------------------------
# Translation, as the fake received it


@pytest.fixture
def sonnet(build: Callable[..., Flask]) -> Flask:
    """An app whose only model is claude:sonnet."""
    return build(claude_model("sonnet", 4, 0.003, 0.015, max_output_tokens=8192))


def test_system_and_developer_messages_are_merged_into_system(sonnet: Flask, claude: FakeAnthropic) -> None:
    cached = {"type": "ephemeral"}
    response = chat(sonnet, messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English.", "cache_control": cached}]},
        {"role": "user", "content": "hi"},
    ])
    assert response.status_code == 200, response.get_json()
    body = sent(claude)
    assert body["system"] == [{"type": "text", "text": "You are terse."},
                              {"type": "text", "text": "Answer in English.", "cache_control": cached}]
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_consecutive_messages_of_one_role_are_merged(sonnet: Flask, claude: FakeAnthropic) -> None:
    response = chat(sonnet, messages=[
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
        {"role": "assistant", "content": "three"},
        {"role": "assistant", "content": "four"},
        {"role": "user", "content": "five"},
    ])
    assert response.status_code == 200, response.get_json()  # the fake refuses two turns of one role in a row
    assert sent(claude)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"},
                                     {"type": "text", "text": "two", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "four"}]},
        {"role": "user", "content": [{"type": "text", "text": "five"}]},
    ]


def test_stop_becomes_stop_sequences(sonnet: Flask, claude: FakeAnthropic) -> None:
    claude.enqueue(fa.reply("alpha beta STOP gamma"))
    response = chat(sonnet, stop=["STOP", "END"])
    assert response.status_code == 200, response.get_json()
    assert sent(claude)["stop_sequences"] == ["STOP", "END"]
    choice = response.get_json()["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("alpha beta ", "stop")


def test_max_tokens_is_always_sent(sonnet: Flask, claude: FakeAnthropic) -> None:
    assert chat(sonnet).status_code == 200
    assert sent(claude)["max_tokens"] == 8192  # the model's max_output_tokens
    assert chat(sonnet, max_completion_tokens=33).status_code == 200
    assert sent(claude)["max_tokens"] == 33
    assert chat(sonnet, max_tokens=5000, routing={"max_cost_usd": 0.01}).status_code == 200
    assert 0 < sent(claude)["max_tokens"] < 5000  # the cost ceiling's


def test_user_becomes_metadata_user_id(sonnet: Flask, claude: FakeAnthropic) -> None:
    assert chat(sonnet, user="caller-7", store=True, metadata={"team": "a"}).status_code == 200
    assert sent(claude)["metadata"] == {"user_id": "caller-7"}


@pytest.mark.parametrize(
    ("fields", "tool_choice"),
    [
        ({}, None),
        ({"tool_choice": "auto"}, {"type": "auto"}),
        ({"tool_choice": "none"}, {"type": "none"}),
        ({"tool_choice": "required"}, {"type": "any"}),
        ({"tool_choice": {"type": "function", "function": {"name": "get_time"}}}, {"type": "tool", "name": "get_time"}),
        ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        ({"tool_choice": "required", "parallel_tool_calls": False}, {"type": "any", "disable_parallel_tool_use": True}),
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "parallel_tool_calls": False},
         {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
        ({"tool_choice": "none", "parallel_tool_calls": False}, {"type": "none"}),
        ({"parallel_tool_calls": True}, None),
    ],
)
def test_tools_and_tool_choice_are_translated(sonnet: Flask, claude: FakeAnthropic, fields: dict[str, Any],
                                              tool_choice: dict[str, Any] | None) -> None:
    response = chat(sonnet, tools=[WEATHER, TIME], **fields)
    assert response.status_code == 200, response.get_json()
    body = sent(claude)
    assert body["tools"] == [
        {"name": "get_weather", "description": "Current weather in a city.",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body.get("tool_choice") == tool_choice


def test_a_tool_use_round_trip(sonnet: Flask, claude: FakeAnthropic) -> None:
    claude.enqueue(fa.tool_use("get_weather", {"city": "Oslo"}, text="Checking."), fa.reply("It is 12 C in Oslo."))
    question = {"role": "user", "content": "Weather in Oslo?"}
    with sdk_for(sonnet) as client:
        first = client.chat.completions.create(model="auto", messages=[question], tools=[WEATHER])
        message = first.choices[0].message
        assert first.choices[0].finish_reason == "tool_calls"
        assert message.content == "Checking."
        (call,) = message.tool_calls or []
        assert call.id.startswith("toolu_fake_")
        assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Oslo"})
        second = client.chat.completions.create(model="auto", tools=[WEATHER], messages=[
            question,
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "12 C"},
        ])
    assert second.choices[0].message.content == "It is 12 C in Oslo."
    assert sent(claude)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                          {"type": "tool_use", "id": call.id, "name": "get_weather",
                                           "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "12 C"}]},
    ]


def test_a_tool_use_answer_comes_back_as_tool_calls(sonnet: Flask, claude: FakeAnthropic) -> None:
    claude.enqueue(fa.tool_use("get_weather", {"city": "Oslo", "unit": "C"}))
    with sdk_for(sonnet) as client:
        completion = client.chat.completions.create(model="auto", messages=HI, tools=[WEATHER])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Oslo", "unit": "C"}')
    assert completion.usage is not None and completion.usage.completion_tokens == 4


def test_a_streamed_tool_use_is_accumulated_by_the_openai_sdk(sonnet: Flask, claude: FakeAnthropic) -> None:
    claude.enqueue(fa.tool_use("get_weather", {"city": "Oslo", "days": [1, 2]}, text="Let me check."))
    with sdk_for(sonnet) as client, client.chat.completions.stream(
        model="auto", messages=HI, tools=[WEATHER], stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    (call,) = choice.message.tool_calls or []
    assert call.id.startswith("toolu_fake_")
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Oslo", "days": [1, 2]})
    # The fake counts words: 3 of text and 5 of the tool input's JSON.
    assert final.usage is not None and final.usage.completion_tokens == 3 + 5


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_tool_call_without_input_has_the_arguments_of_an_empty_object(sonnet: Flask, claude: FakeAnthropic,
                                                                       stream: bool) -> None:
    # Streamed, Anthropic sends the input as one partial_json "": the caller must still get "{}", as unstreamed.
    claude.enqueue(fa.tool_use("get_time", {}, text="Checking."))
    with sdk_for(sonnet) as client:
        if stream:
            with client.chat.completions.stream(model="auto", messages=HI, tools=[TIME]) as events:
                completion = events.get_final_completion()
        else:
            completion = client.chat.completions.create(model="auto", messages=HI, tools=[TIME])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert (call.function.name, call.function.arguments) == ("get_time", "{}")


@pytest.mark.parametrize(
    ("behaviour", "fields", "finish", "content"),
    [
        (fa.reply("all done"), {}, "stop", "all done"),
        (fa.reply("one two STOP three"), {"stop": "STOP"}, "stop", "one two "),
        (fa.reply("one two three four five"), {"max_tokens": 2}, "length", "one two"),
        (fa.tool_use("get_time", {}), {"tools": [TIME]}, "tool_calls", None),
        (fa.refusal("I will not help with that."), {}, "content_filter", ""),
    ],
    ids=["end_turn", "stop_sequence", "max_tokens", "tool_use", "refusal"],
)
@pytest.mark.parametrize("stream", [False, True])
def test_each_stop_reason_maps_to_a_finish_reason(sonnet: Flask, claude: FakeAnthropic, behaviour: Any,
                                                  fields: dict[str, Any], finish: str, content: str | None,
                                                  stream: bool) -> None:
    claude.enqueue(behaviour)
    if not stream:
        response = chat(sonnet, **fields)
        assert response.status_code == 200, response.get_json()
        choice = response.get_json()["choices"][0]
        assert (choice["finish_reason"], choice["message"]["content"]) == (finish, content)
        if finish == "content_filter":
            assert choice["message"]["refusal"] == "I will not help with that."
        return
    events = stream_events(chat(sonnet, stream=True, **fields))
    finishes = [e["choices"][0]["finish_reason"] for e in events if e.get("choices") and e["choices"][0]["finish_reason"]]
    assert finishes == [finish]
    if finish != "content_filter":  # a streamed refusal's text was already sent as content
        assert streamed_text(events) == (content or "")


# ---------------------------------------------------------------------------------------------
# Fields with no Anthropic equivalent


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"logit_bias": {"50256": -100}, "seed": 7}, "'logit_bias', 'seed' have no Anthropic equivalent"),
        ({"response_format": {"type": "json_object"}}, "'response_format' has no Anthropic equivalent"),
        ({"temperature": 0.2}, "'temperature' is not accepted by Anthropic API version 2026-10-21"),
        ({"top_p": 0.5}, "'top_p' is not accepted by Anthropic API version 2026-10-21"),
        ({"top_k": 5}, "'top_k' is not accepted by Anthropic API version 2026-10-21"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "not json"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"}]},
         "'messages[1].tool_calls[0].function.arguments' is not JSON"),
    ],
)
def test_a_pinned_request_with_a_refused_field_is_a_400_naming_it(sonnet: Flask, claude: FakeAnthropic,
                                                                  fields: dict[str, Any], reason: str) -> None:
    response = chat(sonnet, model="claude:sonnet", **fields)
    assert response.status_code == 400, response.get_json()
    assert reason in response.get_json()["error"]["message"]
    assert claude.message_requests == []


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"seed": 1, "logit_bias": {"1": 1}}, "'logit_bias', 'seed' have no Anthropic equivalent"),
        ({"temperature": 0.7, "top_p": 0.9}, "'temperature', 'top_p' are not accepted by Anthropic API version 2026-10-21"),
    ],
)
def test_auto_routing_skips_the_anthropic_model_saying_why(build: Callable[..., Flask], claude: FakeAnthropic,
                                                           compat: FakeOpenAI, fields: dict[str, Any], reason: str) -> None:
    app = build(claude_model("haiku", 3, 0.0001, 0.0005), compat_model("mini", 3, 0.002, 0.008))
    response = chat(app, **fields)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["model"] == "compat:mini"
    assert any(f"claude:haiku ({reason})" in line for line in trace_of(response)), trace_of(response)
    assert claude.message_requests == [] and len(compat.chat_requests) == 1
    # With no other model, auto routing fails naming the reason.
    only = build(claude_model("haiku", 3, 0.0001, 0.0005))
    refused = chat(only, **fields)
    assert refused.status_code == 503
    assert f"claude:haiku: {reason}" in refused.get_json()["error"]["message"]


def test_harmless_fields_are_left_out(sonnet: Flask, claude: FakeAnthropic) -> None:
    response = chat(sonnet, store=False, metadata={"k": "v"}, service_tier="auto", n=1, logprobs=False,
                    presence_penalty=0, frequency_penalty=0, response_format={"type": "text"})
    assert response.status_code == 200, response.get_json()
    assert set(sent(claude)) == {"model", "max_tokens", "messages"}


# ---------------------------------------------------------------------------------------------
# Cached tokens, settled exactly

PRICED = {"cached_input_cost_per_1k": 0.0003, "cache_write_cost_per_1k": 0.00375, "cache_write_1h_cost_per_1k": 0.006}
LONG_PROMPT = [{"role": "system", "content": [{"type": "text", "text": "policy " * 600, "cache_control": {"type": "ephemeral"}}]},
               {"role": "user", "content": "Summarise the policy."}]


def cached_cost(body: dict[str, Any], read: int, write_5m: int, write_1h: int, output: int,
                rates: dict[str, str]) -> tuple[Decimal, int]:
    """The hand-computed cost of a cached call, and its uncached input tokens."""
    uncached = count_input_tokens(body) - read - write_5m - write_1h
    cost = (uncached * Decimal(rates["in"]) + read * Decimal(rates["read"]) + write_5m * Decimal(rates["w5"])
            + write_1h * Decimal(rates["w1"]) + output * Decimal(rates["out"])) / 1000
    return cost, uncached


def test_cached_tokens_settle_to_the_exact_decimal(build: Callable[..., Flask], claude: FakeAnthropic) -> None:
    app = build(claude_model("sonnet", 4, 0.003, 0.015, **PRICED))
    claude.enqueue(fa.reply("a short summary").with_cache(read=1200, write_5m=300, write_1h=200))
    response = chat(app, messages=LONG_PROMPT)
    assert response.status_code == 200, response.get_json()
    rates = {"in": "0.003", "read": "0.0003", "w5": "0.00375", "w1": "0.006", "out": "0.015"}
    expected, uncached = cached_cost(sent(claude), 1200, 300, 200, 3, rates)
    assert uncached > 0
    assert response.headers["x-route-cost-usd"] == plain_decimal(expected)
    assert Decimal(response.headers["x-route-cost-usd"]) == expected
    answer = response.get_json()
    assert answer["routing"]["actual_cost_usd"] == float(expected)
    assert answer["usage"] == {"prompt_tokens": uncached + 1700, "completion_tokens": 3,
                               "total_tokens": uncached + 1703, "prompt_tokens_details": {"cached_tokens": 1200}}
    assert not any("priced at the full input price" in line for line in trace_of(response))
    assert any("(1200 read from cache) (500 written to cache)" in line for line in trace_of(response))


def test_cached_tokens_settle_on_route_too(build: Callable[..., Flask], claude: FakeAnthropic) -> None:
    app = build(claude_model("sonnet", 4, 0.003, 0.015, **PRICED))
    claude.enqueue(fa.reply("fine").with_cache(read=5, write_5m=4, write_1h=3))
    response = app.test_client().post("/route", json={"input": "x " * 40})
    body = response.get_json()
    assert response.status_code == 200, body
    rates = {"in": "0.003", "read": "0.0003", "w5": "0.00375", "w1": "0.006", "out": "0.015"}
    expected, uncached = cached_cost(sent(claude), 5, 4, 3, 1, rates)
    assert body["actual_cost_usd"] == float(expected)
    assert body["usage"]["prompt_tokens"] == uncached + 12
    assert (body["usage"]["cached_tokens"], body["usage"]["cache_write_tokens"], body["usage"]["reported"]) == (5, 7, True)


def test_a_cache_class_without_a_rate_is_priced_at_the_input_rate_with_a_note(build: Callable[..., Flask],
                                                                             claude: FakeAnthropic) -> None:
    app = build(claude_model("sonnet", 4, 0.003, 0.015, cached_input_cost_per_1k=0.0003, cache_write_cost_per_1k=0.00375))
    claude.enqueue(fa.reply("ok then").with_cache(read=100, write_5m=50, write_1h=200))
    response = chat(app, messages=LONG_PROMPT)
    assert response.status_code == 200, response.get_json()
    rates = {"in": "0.003", "read": "0.0003", "w5": "0.00375", "w1": "0.003", "out": "0.015"}
    expected, _ = cached_cost(sent(claude), 100, 50, 200, 2, rates)
    assert Decimal(response.headers["x-route-cost-usd"]) == expected
    assert ("200 1-hour cache-write tokens priced at the full input price: the registry gives claude:sonnet no "
            "cache_write_1h_cost_per_1k.") in trace_of(response)


def test_streamed_usage_carries_the_cache_classes(build: Callable[..., Flask], claude: FakeAnthropic) -> None:
    app = build(claude_model("sonnet", 4, 0.003, 0.015, **PRICED))
    claude.enqueue(fa.reply("streamed summary here").with_cache(read=900, write_5m=100, write_1h=50))
    events = stream_events(chat(app, messages=LONG_PROMPT, stream=True, stream_options={"include_usage": True}))
    rates = {"in": "0.003", "read": "0.0003", "w5": "0.00375", "w1": "0.006", "out": "0.015"}
    expected, uncached = cached_cost(sent(claude), 900, 100, 50, 3, rates)
    assert streamed_text(events) == "streamed summary here"
    final = events[-1]
    assert final["usage"] == {"prompt_tokens": uncached + 1050, "completion_tokens": 3, "total_tokens": uncached + 1053,
                              "prompt_tokens_details": {"cached_tokens": 900}}
    assert final["routing"]["actual_cost_usd"] == float(expected)


# ---------------------------------------------------------------------------------------------
# Failover and recovery

CHEAP_CLAUDE = claude_model("haiku", 3, 0.0005, 0.0025, latency_ms=300)
DEAR_COMPAT = compat_model("mini", 3, 0.002, 0.008, latency_ms=300)


@pytest.fixture
def pair(build: Callable[..., Flask], clock: FakeClock) -> Callable[..., Flask]:
    """The cheap Anthropic model with an OpenAI-compatible fallback, on the fake clock."""

    def factory(**settings: Any) -> Flask:
        return build(CHEAP_CLAUDE, DEAR_COMPAT, runtime_kwargs={"clock": clock, "sleep": clock.sleep}, **settings)

    return factory


@pytest.mark.parametrize("stream", [False, True])
def test_529_with_a_retry_after_that_fits_is_waited_out(pair: Callable[..., Flask], claude: FakeAnthropic,
                                                         compat: FakeOpenAI, clock: FakeClock, stream: bool) -> None:
    claude.enqueue(fa.status(529, retry_after=2))
    response = chat(pair(request_deadline_seconds=10), stream=stream)
    assert response.status_code == 200
    assert clock.slept == [2.0]
    assert len(claude.message_requests) == 2 and compat.chat_requests == []
    if not stream:
        assert attempts_of(response) == [("claude:haiku", "upstream"), ("claude:haiku", "ok")]
        assert "Honouring Retry-After: waiting 2 s, then trying claude:haiku once more." in trace_of(response)


@pytest.mark.parametrize("retry_after", [None, 30])
@pytest.mark.parametrize("stream", [False, True])
def test_529_fails_over_to_the_openai_compatible_model(pair: Callable[..., Flask], claude: FakeAnthropic,
                                                        compat: FakeOpenAI, clock: FakeClock, retry_after: int | None,
                                                        stream: bool) -> None:
    claude.enqueue(fa.status(529, retry_after=retry_after))
    response = chat(pair(request_deadline_seconds=10), stream=stream, stream_options={"include_usage": True} if stream else None)
    assert response.status_code == 200
    assert clock.slept == []
    assert response.headers["x-route-model"] == "compat:mini"
    if stream:
        events = stream_events(response)
        assert streamed_text(events) == "[FAKE:mini] hi"
        assert [(a["model"], a["outcome"]) for a in events[-1]["routing"]["attempts"]] == [
            ("claude:haiku", "upstream"), ("compat:mini", "ok")]
    else:
        assert attempts_of(response) == [("claude:haiku", "upstream"), ("compat:mini", "ok")]
        assert response.get_json()["routing"]["attempts"][0]["status"] == 529
    assert len(compat.chat_requests) == 1


def test_429_with_retry_after_is_waited_out_then_fails_over_if_it_repeats(pair: Callable[..., Flask],
                                                                         claude: FakeAnthropic, clock: FakeClock) -> None:
    claude.enqueue(fa.status(429, retry_after=1), fa.status(429, retry_after=1))
    response = chat(pair())
    assert response.status_code == 200
    assert clock.slept == [1.0]
    assert attempts_of(response) == [("claude:haiku", "rate_limited"), ("claude:haiku", "rate_limited"),
                                     ("compat:mini", "ok")]


@pytest.mark.parametrize(
    "behaviour",
    [fa.status(429, retry_after=1, error_code="enforced_spend_limit_reached"),
     fa.status(429, retry_after=1, error_code="contract_spend_limit_reached"),
     fa.status(402, retry_after=1)],
    ids=["enforced", "contract", "402-billing"],
)
def test_a_spend_limit_fails_over_without_waiting(pair: Callable[..., Flask], claude: FakeAnthropic, clock: FakeClock,
                                                  behaviour: Any) -> None:
    claude.enqueue(behaviour)
    response = chat(pair())
    assert response.status_code == 200
    assert clock.slept == []
    assert attempts_of(response) == [("claude:haiku", "spend_limit"), ("compat:mini", "ok")]


def test_a_pinned_spend_limit_is_503_without_retry_after(pair: Callable[..., Flask], claude: FakeAnthropic) -> None:
    claude.enqueue(fa.status(429, retry_after=5, error_code="enforced_spend_limit_reached"))
    response = chat(pair(), model="claude:haiku")
    assert response.status_code == 503
    assert response.get_json()["error"]["type"] == "upstream_spend_limit"
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(
    ("code", "error_type", "http_status", "reason"),
    [(400, None, 400, "upstream_bad_request"), (413, None, 413, "upstream_request_too_large"),
     (403, None, 502, "upstream_forbidden"), (404, None, 502, "upstream_model_not_found"),
     (401, None, 502, "upstream_auth_error")],
)
def test_client_errors_end_the_request_without_failover(pair: Callable[..., Flask], claude: FakeAnthropic,
                                                        compat: FakeOpenAI, code: int, error_type: str | None,
                                                        http_status: int, reason: str) -> None:
    claude.enqueue(fa.status(code, error_type=error_type))
    response = chat(pair())
    assert response.status_code == http_status, response.get_json()
    error = response.get_json()["error"]
    assert error["type"] == reason
    assert [(a["model"], a["status"]) for a in error["attempts"]] == [("claude:haiku", code)]
    assert len(claude.message_requests) == 1 and compat.chat_requests == []  # a 401 re-read the same key


@pytest.mark.parametrize(
    ("behaviour", "outcome", "stream"),
    [(fa.status(500), "upstream", False), (fa.status(500), "upstream", True),
     (fa.status(503), "upstream", False), (fa.status(503), "upstream", True),
     (fa.malformed(), "upstream", False), (fa.malformed(), "upstream", True),
     (fa.invalid_message(), "upstream", False), (fa.invalid_message(), "upstream", True),
     # A streamed line that is not UTF-8 is Anthropic's malformed answer, never the caller's 400.
     (fa.invalid_utf8(), "upstream", True),
     # Non-streamed, a cut body fails inside the SDK's send(): a connection error. (A stream cut after
     # message_start is a failure mid-stream: tested below.)
     (fa.cut_stream(1), "connection", False)],
    ids=["500", "500-stream", "503", "503-stream", "malformed", "malformed-stream", "invalid_message",
         "invalid_message-stream", "not-utf8-stream", "cut-body"],
)
def test_broken_answers_fail_over(pair: Callable[..., Flask], claude: FakeAnthropic, behaviour: Any, outcome: str,
                                  stream: bool) -> None:
    claude.enqueue(behaviour)
    response = chat(pair(), stream=stream, stream_options={"include_usage": True} if stream else None)
    assert response.status_code == 200
    assert response.headers["x-route-model"] == "compat:mini"
    if stream:
        events = stream_events(response)
        assert streamed_text(events) == "[FAKE:mini] hi"
        attempts = [(a["model"], a["outcome"]) for a in events[-1]["routing"]["attempts"]]
    else:
        attempts = attempts_of(response)
    assert attempts == [("claude:haiku", outcome), ("compat:mini", "ok")]


def test_a_timeout_fails_over(build: Callable[..., Flask], claude: FakeAnthropic) -> None:
    claude.enqueue(fa.slow(5))
    began = time.monotonic()
    response = chat(build(CHEAP_CLAUDE, DEAR_COMPAT, provider_timeout_seconds=0.3))
    assert time.monotonic() - began < 3
    assert response.status_code == 200
    assert attempts_of(response) == [("claude:haiku", "timeout"), ("compat:mini", "ok")]


def test_the_providers_own_timeout_seconds_applies(build: Callable[..., Flask], claude: FakeAnthropic) -> None:
    claude.enqueue(fa.slow(5))
    response = chat(build(CHEAP_CLAUDE, DEAR_COMPAT, claude_settings={"timeout_seconds": 0.3}))
    assert attempts_of(response) == [("claude:haiku", "timeout"), ("compat:mini", "ok")]


def test_a_connection_error_fails_over(build: Callable[..., Flask]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    response = chat(build(CHEAP_CLAUDE, DEAR_COMPAT, claude_url=f"http://127.0.0.1:{port}"))
    assert response.status_code == 200
    assert attempts_of(response) == [("claude:haiku", "connection"), ("compat:mini", "ok")]


def test_401_re_reads_the_key_once_and_retries_with_the_new_one(claude: FakeAnthropic) -> None:
    keys = RotatingKeys("sk-ant-stale-000000000", ANTHROPIC_KEY)
    provider = adapter(claude, keys)
    assert provider.complete(MODEL, CALL).text == "[FAKE-ANTHROPIC:claude-sonnet-5] hi"
    assert keys.refreshes == 1
    assert [r.headers["authorization"] for r in claude.message_requests] == [
        "Bearer sk-ant-stale-000000000", f"Bearer {ANTHROPIC_KEY}"]
    assert list(provider.stream(MODEL, CALL))[-1].finish_reason == "stop"  # the new key is kept
    assert keys.refreshes == 1 and len(claude.message_requests) == 3


def test_401_with_no_new_key_is_not_retried(claude: FakeAnthropic) -> None:
    keys = RotatingKeys("sk-ant-wrong-111111111", "sk-ant-wrong-111111111")
    for call in (adapter(claude, keys).complete, adapter(claude, keys).stream):
        with pytest.raises(ProviderError) as caught:
            call(MODEL, CALL)
        assert caught.value.kind is FailureKind.AUTH
    assert keys.refreshes == 2 and len(claude.message_requests) == 2


def test_401_re_read_through_the_service(make_app: Callable[..., Flask], claude: FakeAnthropic,
                                         compat: FakeOpenAI) -> None:
    keys = RotatingKeys("sk-ant-stale-222222222", ANTHROPIC_KEY)
    app = make_app(runtime_kwargs={"environ": ENVIRON, "providers": {"claude": adapter(claude, keys)}},
                   models_config_json=document(claude.base_url, compat.base_url, CHEAP_CLAUDE, DEAR_COMPAT))
    response = chat(app, stream=True)
    assert response.status_code == 200
    assert streamed_text(stream_events(response)) == "[FAKE-ANTHROPIC:claude-haiku-5] hi"
    assert len(claude.message_requests) == 2 and compat.chat_requests == []


# ---------------------------------------------------------------------------------------------
# Failures mid-stream


def worst_case(body: dict[str, Any], in_cost: str, out_cost: str, max_tokens: int) -> Decimal:
    """The plan's worst case, computed from the request: the prompt bound (plus Anthropic's overhead) and max_tokens."""
    route = parse_chat_body(body).route
    tokens = route.prompt_bound + tool_prompt_overhead(route.provider_params)
    with localcontext(EXACT):
        return (tokens * Decimal(in_cost) + max_tokens * Decimal(out_cost)) / 1000


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [(fa.stream_error(2), "upstream"), (fa.stream_error(2, error_type="rate_limit_error"), "rate_limited"),
     (fa.stream_error(2, error_type="api_error"), "upstream"), (fa.cut_stream(2), "upstream"),
     (fa.cut_stream(0), "upstream"), (fa.invalid_utf8(2), "upstream")],
    ids=["overloaded-event", "rate-limit-event", "api-error-event", "cut", "cut-before-text", "not-utf8"],
)
def test_a_failure_mid_stream_ends_with_an_error_event_and_the_worst_case(
    build: Callable[..., Flask], claude: FakeAnthropic, compat: FakeOpenAI, behaviour: Any, code: str
) -> None:
    app = build(CHEAP_CLAUDE, DEAR_COMPAT)
    claude.enqueue(behaviour)
    body = {"model": "auto", "messages": [{"role": "user", "content": "tell me a long story"}], "max_tokens": 50,
            "stream": True, "stream_options": {"include_usage": True}}
    response = app.test_client().post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    events = stream_events(response)
    error = events[-1]
    assert error["error"]["code"] == code and error["error"]["type"] == "upstream_error"
    routing = error["routing"]
    assert routing["max_tokens"] == 50
    assert routing["actual_cost_usd"] == float(worst_case(body, "0.0005", "0.0025", 50))
    assert [(a["model"], a["outcome"]) for a in routing["attempts"]] == [("claude:haiku", code)]
    expected_text = "[FAKE-ANTHROPIC:claude-haiku-5] tell" if behaviour.after_deltas == 2 else ""
    assert streamed_text(events) == expected_text
    assert compat.chat_requests == []  # a stream that started does not fail over
    assert ANTHROPIC_KEY not in response.get_data(as_text=True)


def test_the_openai_sdk_sees_a_mid_stream_error(build: Callable[..., Flask], claude: FakeAnthropic) -> None:
    claude.enqueue(fa.stream_error(1))
    app = build(CHEAP_CLAUDE)
    with sdk_for(app) as client:
        stream = client.chat.completions.create(model="auto", messages=HI, stream=True)
        with pytest.raises(openai.APIError):
            for _ in stream:
                pass


# ---------------------------------------------------------------------------------------------
# The hard ceiling against a fake that spends every token it is allowed

CEILING_MODELS = [
    claude_model("haiku", 2, 0.0008, 0.004, max_output_tokens=8192),
    claude_model("sonnet", 4, 0.003, 0.015, max_output_tokens=16384),
    claude_model("opus", 5, 0.015, 0.075, max_output_tokens=4096),
    claude_model("odd", 3, 0.000123, 0.000987, max_output_tokens=2048),
    claude_model("freeout", 1, 0.0005, 0, max_output_tokens=512),
]
CEILING_PRICES = {m["upstream_model"]: (Decimal(repr(m["in_cost_per_1k"])), Decimal(repr(m["out_cost_per_1k"])))
                  for m in CEILING_MODELS}


def random_tools(rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    tools = []
    for index in range(rng.randint(1, 4)):
        function: dict[str, Any] = {"name": f"tool_{index}_{rng.randint(0, 99)}"}
        if rng.random() < 0.7:
            function["description"] = random_text(rng, 300)
        if rng.random() < 0.8:
            function["parameters"] = {"type": "object", "properties": {
                f"p{k}": {"type": rng.choice(("string", "integer")), "description": random_text(rng, 60)}
                for k in range(rng.randint(0, 4))}}
        tools.append({"type": "function", "function": function})
    extra: dict[str, Any] = {}
    choice = rng.choice((None, "auto", "none", "required", "named"))
    if choice == "named":
        extra["tool_choice"] = {"type": "function", "function": {"name": rng.choice(tools)["function"]["name"]}}
    elif choice is not None:
        extra["tool_choice"] = choice
    if rng.random() < 0.3:
        extra["parallel_tool_calls"] = rng.random() < 0.5
    return tools, extra


def random_request(rng: random.Random) -> tuple[dict[str, Any], Decimal]:
    messages: list[dict[str, Any]] = []
    if rng.random() < 0.3:
        messages.append({"role": rng.choice(("system", "developer")), "content": random_text(rng, 800)})
    for _ in range(rng.randint(1, 3)):
        messages.append({"role": rng.choice(("user", "user", "assistant")), "content": random_text(rng, 2500)})
    messages[-1]["role"] = "user"
    # Anthropic's wire needs a user turn first (the router cannot ask the adapter about messages yet).
    first = next(m for m in messages if m["role"] in ("user", "assistant"))
    first["role"] = "user"
    budget = Decimal(f"{10 ** rng.uniform(-5, -1.5):.3g}")
    body: dict[str, Any] = {"messages": messages, "routing": {"max_cost_usd": float(budget)}}
    if rng.random() < 0.5:
        tools, extra = random_tools(rng)
        body.update(tools=tools, **extra)
    if rng.random() < 0.3:
        body["model"] = "claude:" + rng.choice(["haiku", "sonnet", "opus", "odd", "freeout"])
    else:
        body["model"] = "auto"
        body["routing"]["min_quality"] = rng.randint(1, 5)
    if rng.random() < 0.3:
        body[rng.choice(("max_tokens", "max_completion_tokens"))] = rng.randint(1, 5000)
    if rng.random() < 0.2:
        body.update(stream=True, stream_options={"include_usage": True})
    return body, budget


def test_random_prompts_never_cost_more_than_the_budget(build: Callable[..., Flask], claude: FakeAnthropic) -> None:
    claude.set_default(fa.spend_all())
    client = build(*CEILING_MODELS).test_client()
    rng = random.Random(20261121)
    served = refused = with_tools = 0
    for index in range(160):
        body, budget = random_request(rng)
        before = len(claude.message_requests)
        response = client.post("/v1/chat/completions", json=body)
        new = claude.message_requests[before:]
        context = f"request {index}: {json.dumps(body)[:300]}"
        if response.status_code == 402:
            refused += 1
            assert new == [], context
            continue
        assert response.status_code == 200, f"{context}\n{response.get_data(as_text=True)[:500]}"
        (request,) = new
        assert request.body is not None
        price_in, price_out = CEILING_PRICES[request.body["model"]]
        prompt = count_input_tokens(request.body)  # the fake's total, tool-use system prompt included
        cost = (prompt * price_in + request.body["max_tokens"] * price_out) / 1000
        assert cost <= budget, f"{context}: cost {cost} > budget {budget}"
        routing = stream_events(response)[-1]["routing"] if body.get("stream") else response.get_json()["routing"]
        assert routing["actual_cost_usd"] == float(cost), context
        assert routing["actual_cost_usd"] <= float(budget)
        assert not routing["over_budget"], context
        served += 1
        with_tools += "tools" in request.body
    assert served >= 80 and refused >= 5 and with_tools >= 30, (served, refused, with_tools)


def test_the_ceiling_holds_when_the_prompt_writes_the_cache(build: Callable[..., Flask], claude: FakeAnthropic) -> None:
    app = build(claude_model("sonnet", 4, 0.003, 0.015, **PRICED))
    prompt = [{"role": "user", "content": [{"type": "text", "text": "word " * 300, "cache_control": {"type": "ephemeral",
                                                                                                    "ttl": "1h"}}]}]
    claude.enqueue(fa.spend_all().with_cache(write_1h=1500))
    response = chat(app, messages=prompt, tools=[WEATHER], routing={"max_cost_usd": 0.02})
    assert response.status_code == 200, response.get_json()
    body = sent(claude)
    total = count_input_tokens(body)
    cost = ((total - 1500) * Decimal("0.003") + 1500 * Decimal("0.006") + body["max_tokens"] * Decimal("0.015")) / 1000
    assert Decimal(response.headers["x-route-cost-usd"]) == cost <= Decimal("0.02")


# ---------------------------------------------------------------------------------------------
# Keys


def test_each_upstream_sees_only_its_own_key(build: Callable[..., Flask], claude: FakeAnthropic, compat: FakeOpenAI,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    others = {
        "ANTHROPIC_API_KEY": "sk-ant-from-the-environment-1",
        "ANTHROPIC_AUTH_TOKEN": "sk-ant-token-from-the-environment-2",
        "ANTHROPIC_CUSTOM_HEADERS": "x-api-key: sk-ant-custom-header-3\nX-Leak: sk-ant-custom-header-4",
        "ANTHROPIC_WEBHOOK_SIGNING_KEY": "whsec-from-the-environment-5",
        "OPENAI_API_KEY": "sk-openai-from-the-environment-6",
    }
    for name, value in others.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", dead)
    monkeypatch.setenv("ANTHROPIC_PROFILE", "nonexistent-profile")
    app = build(claude_model("haiku", 3, 0.001, 0.005), compat_model("mini", 3, 0.002, 0.01))
    assert chat(app, model="claude:haiku").status_code == 200
    assert chat(app, model="claude:haiku", stream=True).status_code == 200
    assert chat(app, model="compat:mini").status_code == 200
    assert len(claude.message_requests) == 2 and len(compat.chat_requests) == 1
    for request in claude.message_requests:
        assert request.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"
        assert "x-api-key" not in request.headers and "x-leak" not in request.headers
        text = json.dumps(request.headers)
        assert OPENAI_KEY not in text and not any(value in text for value in others.values())
    (request,) = compat.chat_requests
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert ANTHROPIC_KEY not in json.dumps(request.headers)


LEAKY = f"invalid x-api-key: {ANTHROPIC_KEY}. Check https://console.example.com."


@pytest.mark.parametrize("code", [400, 401, 402, 403, 404, 413, 429, 500, 529])
@pytest.mark.parametrize("stream", [False, True])
def test_the_key_never_appears_in_responses_or_logs(build: Callable[..., Flask], claude: FakeAnthropic,
                                                    caplog: pytest.LogCaptureFixture, code: int, stream: bool) -> None:
    caplog.set_level(logging.DEBUG)
    claude.set_default(fa.status(code, message=LEAKY))
    app = build(claude_model("haiku", 3, 0.001, 0.005))
    client = app.test_client()
    responses = [chat(app, stream=stream), client.post("/route", json={"input": "hi"}), client.get("/health"),
                 client.get("/models"), client.get("/v1/models")]
    assert responses[0].status_code >= 400
    assert claude.message_requests, "the fake was called"
    for response in responses:
        text = response.get_data(as_text=True) + json.dumps(dict(response.headers))
        assert ANTHROPIC_KEY not in text and ANTHROPIC_KEY[-8:] not in text
    logged = caplog.text + "".join(
        record.getMessage() + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        for record in caplog.records)
    assert caplog.records, "DEBUG logging captured something"
    assert ANTHROPIC_KEY not in logged and ANTHROPIC_KEY[-8:] not in logged


def test_a_mid_stream_error_echoing_the_key_is_redacted(claude: FakeAnthropic, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # The fake's error events carry no key: feed one that echoes it to the reader the adapter uses.
    reader = StreamReader(MODEL, ANTHROPIC_KEY)
    with pytest.raises(ProviderError) as caught:
        reader.feed("error", json.dumps({"type": "error", "error": {"type": "api_error", "message": LEAKY}}))
    assert ANTHROPIC_KEY not in caught.value.message and "[redacted]" in caught.value.message
    claude.enqueue(fa.stream_error(1, error_type="api_error"))
    with pytest.raises(ProviderError) as through_the_sdk:
        list(adapter(claude).stream(MODEL, CALL))
    assert through_the_sdk.value.kind is FailureKind.UPSTREAM
    assert ANTHROPIC_KEY not in caplog.text


# ---------------------------------------------------------------------------------------------
# The SDK is imported only when an Anthropic model is called


def test_an_app_that_calls_no_anthropic_model_never_imports_the_sdk() -> None:
    registry = json.dumps({"providers": {"claude": {"kind": "anthropic", "base_url": "http://127.0.0.1:9",
                                                    "api_key": {"env": "TEST_ANTHROPIC_KEY"}}},
                           "models": [claude_model("opus", 5, 0.015, 0.075),
                                      ["mock", "basic", 1, 0.0001, 0.0002, 150, 1024]]})
    script = (
        "import sys, json\n"
        "from costroute.entry import build_app\n"
        "client = build_app().test_client()\n"
        "r = client.post('/route', data=json.dumps({'input': 'hi'}))\n"
        "assert r.status_code == 200 and r.get_json()['model'] == 'mock:basic', r.data\n"
        "r = client.post('/v1/chat/completions', json={'model': 'mock:basic', 'messages': [{'role': 'user', "
        "'content': 'hi'}], 'temperature': 0.5})\n"
        "assert r.status_code == 200, r.data\n"
        "assert client.get('/health').status_code == 200 and client.get('/models').status_code == 200\n"
        "print(sorted(m for m in ('anthropic', 'httpx2', 'openai') if m in sys.modules))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "MODELS_CONFIG_JSON": registry, "TEST_ANTHROPIC_KEY": ANTHROPIC_KEY}
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=repo_root(), timeout=60,
                            env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"  # after the requests' own log lines


def test_the_mock_only_default_app_never_imports_the_sdk() -> None:
    script = (
        "import sys, json\n"
        "from costroute.entry import build_app\n"
        "client = build_app().test_client()\n"
        "assert client.post('/route', data=json.dumps({'input': 'hi'})).status_code == 200\n"
        "print('anthropic' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=repo_root(), timeout=60,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"  # after the request's own log line
