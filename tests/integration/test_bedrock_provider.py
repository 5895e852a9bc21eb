"""The Bedrock adapter end to end: real boto3 against FakeBedrock, through /route, /v1 (the openai SDK) and Lambda.

FakeBedrock speaks Converse's wire (JSON, event-stream frames, SigV4 required, ``x-amzn-ErrorType``
errors) and counts tokens deterministically, so costs here are computed from what it received.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import handler
from costroute.core.requests import parse_chat_body
from costroute.core.selection import plain_decimal
from costroute.providers.bedrock import MAX_CLIENTS, BedrockClients, BedrockSettings
from tests.fakes import fake_bedrock as fb
from tests.fakes.fake_bedrock import FakeBedrock, RecordedRequest, count_input_tokens, signing_info
from tests.fakes.fake_openai import FakeOpenAI
from tests.fakes.fake_openai import status as openai_status
from tests.health import provider_entry
from tests.integration.servers import sdk_for
from tests.payloads import repo_root
from tests.random_text import random_text

HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"
PROFILE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
PROFILE_ARN = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{PROFILE}"
COMPAT_KEY = "sk-test-compat-9f8e7d6c5b4a3210"
EVENTS_DIR = Path(repo_root()) / "events"
HI = [{"role": "user", "content": "hi"}]
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]


def br_model(name: str = "haiku", upstream: str = HAIKU, in_cost: float = 0.0008, out_cost: float = 0.004,
             quality: int = 3, max_output_tokens: int = 1024, **extra: Any) -> dict[str, Any]:
    return {"provider": "br", "name": name, "upstream_model": upstream, "quality": quality, "in_cost_per_1k": in_cost,
            "out_cost_per_1k": out_cost, "latency_ms": 300, "max_output_tokens": max_output_tokens, **extra}


def compat_model(in_cost: float = 0.001, out_cost: float = 0.005) -> dict[str, Any]:
    return {"provider": "compat", "name": "mini", "quality": 3, "in_cost_per_1k": in_cost, "out_cost_per_1k": out_cost,
            "latency_ms": 300, "max_output_tokens": 1024}


def mock_row(in_cost: float = 0.002, out_cost: float = 0.01) -> list[Any]:
    return ["mock", "backup", 3, in_cost, out_cost, 300, 1024]


def registry(bedrock: FakeBedrock | None, models: list[Any], compat: FakeOpenAI | None = None,
             **bedrock_settings: Any) -> str:
    """A registry document with a Bedrock provider on the fake (unless settings say otherwise)."""
    settings = {"kind": "bedrock", "region": "us-east-1", **bedrock_settings}
    if bedrock is not None and "endpoint_url" not in bedrock_settings:
        settings["endpoint_url"] = bedrock.endpoint_url
    settings = {key: value for key, value in settings.items() if value is not None}
    providers: dict[str, Any] = {"br": settings}
    if compat is not None:
        providers["compat"] = {"kind": "openai", "base_url": compat.base_url, "api_key": {"env": "TEST_OPENAI_KEY"}}
    return json.dumps({"providers": providers, "models": models})


@pytest.fixture(scope="module")
def bedrock_server() -> Iterator[FakeBedrock]:
    with FakeBedrock() as fake:
        yield fake


@pytest.fixture
def bedrock(bedrock_server: FakeBedrock) -> Iterator[FakeBedrock]:
    bedrock_server.reset()
    yield bedrock_server
    bedrock_server.reset()


@pytest.fixture(scope="module")
def compat_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=COMPAT_KEY) as fake:
        yield fake


@pytest.fixture
def compat(compat_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    compat_server.reset()
    yield compat_server
    compat_server.reset()


@pytest.fixture
def build(make_app: Callable[..., Flask], bedrock: FakeBedrock) -> Callable[..., Flask]:
    """An app over a registry document (default: Bedrock haiku, then a dearer mock fallback)."""

    def factory(document: str | None = None, **settings: Any) -> Flask:
        text = document if document is not None else registry(bedrock, [br_model(), mock_row()])
        # The service's view of the process environment: the real one (AWS_* included), plus the test's key.
        environ = {**os.environ, "TEST_OPENAI_KEY": COMPAT_KEY}
        return make_app(models_config_json=text, runtime_kwargs={"environ": environ}, **settings)

    return factory


def chat(app: Flask, messages: list[dict[str, Any]] | None = None, model: str = "auto", **fields: Any) -> Any:
    return app.test_client().post("/v1/chat/completions", json={"model": model, "messages": messages or HI, **fields})


def events_of(response: Any) -> list[dict[str, Any]]:
    """The JSON events of an SSE answer (without [DONE])."""
    text = response.get_data(as_text=True)
    assert text.rstrip().endswith("data: [DONE]"), text[-300:]
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]


def attempts_of(body: dict[str, Any]) -> list[tuple[str, str]]:
    if "error" in body:
        attempts = body["error"].get("attempts") or body.get("routing", {}).get("attempts", [])
    else:
        attempts = body["routing"]["attempts"] if "routing" in body else body["attempts"]
    return [(attempt["model"], attempt["outcome"]) for attempt in attempts]


def trace_of(body: dict[str, Any]) -> str:
    if "error" in body:
        return " ".join(body["error"].get("decision_trace") or body.get("routing", {}).get("decision_trace", []))
    return " ".join(body["routing"]["decision_trace"] if "routing" in body else body["decision_trace"])


def only_request(fake: FakeBedrock) -> RecordedRequest:
    (sent,) = fake.converse_requests
    return sent


def body_of(sent: RecordedRequest) -> dict[str, Any]:
    """The JSON body Bedrock received."""
    assert sent.body is not None
    return sent.body


def create(sdk: Any, **fields: Any) -> Any:
    """``chat.completions.create`` with the routing fields this project adds (untyped for the SDK's overloads)."""
    return sdk.chat.completions.create(**fields)


# ---------------------------------------------------------------------------------------------
# Routing by price across Bedrock, an OpenAI-compatible server and the mock

PRICES_BY_WINNER = {
    "br:haiku": ((0.0001, 0.0002), (0.0005, 0.001), (0.0005, 0.001)),
    "compat:mini": ((0.0005, 0.001), (0.0001, 0.0002), (0.0005, 0.001)),
    "mock:backup": ((0.0005, 0.001), (0.0005, 0.001), (0.0001, 0.0002)),
}


def priced_registry(bedrock: FakeBedrock, compat: FakeOpenAI, winner: str) -> str:
    (b_in, b_out), (c_in, c_out), (m_in, m_out) = PRICES_BY_WINNER[winner]
    return registry(bedrock, [br_model(in_cost=b_in, out_cost=b_out), compat_model(c_in, c_out), mock_row(m_in, m_out)],
                    compat)


def answered_by(winner: str, text: str, bedrock: FakeBedrock, compat: FakeOpenAI) -> None:
    prefix = {"br:haiku": f"[FAKE-BEDROCK:{HAIKU}] ", "compat:mini": "[FAKE:mini] ", "mock:backup": "[MOCK:backup]"}
    assert text.startswith(prefix[winner]), text
    assert len(bedrock.converse_requests) == (winner == "br:haiku")
    assert len(compat.chat_requests) == (winner == "compat:mini")


@pytest.mark.parametrize("winner", sorted(PRICES_BY_WINNER))
def test_route_picks_the_cheapest_of_the_three(build: Callable[..., Flask], bedrock: FakeBedrock, compat: FakeOpenAI,
                                               winner: str) -> None:
    app = build(priced_registry(bedrock, compat, winner))
    response = app.test_client().post("/route", json={"input": "Name a colour.", "constraints": {"min_quality": 3}})
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["model"] == winner
    answered_by(winner, body["response"], bedrock, compat)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("winner", sorted(PRICES_BY_WINNER))
def test_the_openai_sdk_routes_to_the_cheapest_of_the_three(build: Callable[..., Flask], bedrock: FakeBedrock,
                                                            compat: FakeOpenAI, winner: str, stream: bool) -> None:
    app = build(priced_registry(bedrock, compat, winner))
    with sdk_for(app) as sdk:
        if stream:
            chunks = list(create(sdk, model="auto", messages=HI, stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            model = chunks[0].model
        else:
            completion = create(sdk, model="auto", messages=HI)
            text, model = completion.choices[0].message.content or "", completion.model
    assert model == winner
    answered_by(winner, text, bedrock, compat)


# ---------------------------------------------------------------------------------------------
# Model ids, endpoint, region and signing


@pytest.mark.parametrize("upstream", [HAIKU, PROFILE, PROFILE_ARN], ids=["model-id", "profile-id", "profile-arn"])
def test_model_ids_reach_bedrock_percent_decoded(build: Callable[..., Flask], bedrock: FakeBedrock, upstream: str) -> None:
    app = build(registry(bedrock, [br_model(upstream=upstream)]))
    response = chat(app, model="br:haiku")
    assert response.status_code == 200, response.get_json()
    sent = only_request(bedrock)
    assert sent.model_id == upstream
    assert sent.operation == "converse"
    assert "%3A" in sent.path and ":" not in sent.path.split("/model/")[1]
    if "/" in upstream:
        assert "%2F" in sent.path


def test_the_standard_endpoint_variable_is_honoured(build: Callable[..., Flask], bedrock: FakeBedrock,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", bedrock.endpoint_url)
    app = build(registry(None, [br_model()], region="us-west-2"))
    assert chat(app).status_code == 200
    assert signing_info(only_request(bedrock)) == ("testing", "us-west-2", "bedrock")
    entry = provider_entry(app.test_client().get("/health").get_json(), "br")
    assert entry["host"] == "127.0.0.1"


@pytest.mark.parametrize(("region", "scoped"), [("eu-west-1", "eu-west-1"), (None, "us-east-1")],
                         ids=["document", "function"])
def test_requests_are_signed_with_sigv4_for_bedrock_in_the_region(build: Callable[..., Flask], bedrock: FakeBedrock,
                                                                  region: str | None, scoped: str) -> None:
    app = build(registry(bedrock, [br_model()], region=region))
    assert chat(app).status_code == 200
    sent = only_request(bedrock)
    assert signing_info(sent) == ("testing", scoped, "bedrock")
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    entry = provider_entry(app.test_client().get("/health").get_json(), "br")
    assert (entry["region"], entry["region_source"]) == (scoped, "registry" if region else "AWS_REGION")


def test_a_bedrock_api_key_in_the_environment_is_ignored(build: Callable[..., Flask], bedrock: FakeBedrock,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "ABSKbedrock-api-key-never-sent-0123")
    assert chat(build()).status_code == 200
    sent = only_request(bedrock)
    assert signing_info(sent)[2] == "bedrock"
    assert not any("never-sent" in value for value in sent.headers.values())


def test_a_region_that_cannot_be_resolved_makes_the_model_unavailable(
    build: Callable[..., Flask], bedrock: FakeBedrock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    app = build(registry(bedrock, [br_model(), mock_row()], region=None))
    response = chat(app)
    assert response.status_code == 200
    assert response.get_json()["model"] == "mock:backup"
    assert "br:haiku (no AWS region for Bedrock: set 'region' on the provider" in trace_of(response.get_json())
    pinned = chat(app, model="br:haiku")
    assert pinned.status_code == 503
    assert "no AWS region for Bedrock" in pinned.get_json()["error"]["message"]
    assert bedrock.converse_requests == []


# ---------------------------------------------------------------------------------------------
# Translation, as Bedrock received it


def test_system_cache_points_merges_and_inference_config(build: Callable[..., Flask], bedrock: FakeBedrock) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]},
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": "first"},
        {"role": "user", "content": [{"type": "text", "text": "big doc", "cache_control": {"type": "ephemeral"}},
                                     {"type": "text", "text": "second"}]},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "third"},
    ]
    response = chat(build(), messages, temperature=0.3, top_p=0.8, stop=["END", "STOP"], max_tokens=50, user="u-1")
    assert response.status_code == 200, response.get_json()
    body = only_request(bedrock).body
    assert body == {
        "system": [{"text": "You are terse."}, {"cachePoint": {"type": "default"}}, {"text": "Answer in English."}],
        "messages": [
            {"role": "user", "content": [{"text": "first"}, {"text": "big doc"}, {"cachePoint": {"type": "default"}},
                                         {"text": "second"}]},
            {"role": "assistant", "content": [{"text": "noted"}]},
            {"role": "user", "content": [{"text": "third"}]},
        ],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.3, "topP": 0.8, "stopSequences": ["END", "STOP"]},
    }


def test_max_tokens_is_always_the_routers_cap(build: Callable[..., Flask], bedrock: FakeBedrock) -> None:
    app = build()
    assert chat(app).status_code == 200
    assert chat(app, max_completion_tokens=33).status_code == 200
    assert [body_of(sent)["inferenceConfig"] for sent in bedrock.converse_requests] == [{"maxTokens": 1024},
                                                                                      {"maxTokens": 33}]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [(None, None), ("auto", {"auto": {}}), ("required", {"any": {}}),
     ({"type": "function", "function": {"name": "get_weather"}}, {"tool": {"name": "get_weather"}}), ("none", "no tools")],
    ids=["absent", "auto", "required", "named", "none"],
)
def test_tools_and_tool_choice_reach_bedrock(build: Callable[..., Flask], bedrock: FakeBedrock, choice: Any,
                                             expected: Any) -> None:
    fields: dict[str, Any] = {"tools": TOOLS}
    if choice is not None:
        fields["tool_choice"] = choice
    assert chat(build(), **fields).status_code == 200
    body = only_request(bedrock).body
    assert body is not None
    if expected == "no tools":
        assert "toolConfig" not in body
        return
    spec: Any = TOOLS[0]["function"]
    assert body["toolConfig"]["tools"] == [{"toolSpec": {"name": spec["name"], "description": spec["description"],
                                                         "inputSchema": {"json": spec["parameters"]}}}]
    assert body["toolConfig"].get("toolChoice") == expected


def test_a_tool_use_round_trip_through_the_sdk(build: Callable[..., Flask], bedrock: FakeBedrock) -> None:
    bedrock.enqueue(fb.tool_use("get_weather", {"city": "Oslo"}, text="Let me check."), fb.reply("It is 12 C in Oslo."))
    messages: list[Any] = [{"role": "user", "content": "Weather in Oslo?"}]
    with sdk_for(build()) as sdk:
        first = create(sdk, model="auto", messages=messages, tools=TOOLS)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Let me check."
        (call,) = choice.message.tool_calls or []
        assert (call.type, call.function.name, json.loads(call.function.arguments)) == (
            "function", "get_weather", {"city": "Oslo"})
        messages += [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "12 C"}]
        second = create(sdk, model="auto", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "It is 12 C in Oslo."
    assert second.choices[0].finish_reason == "stop"
    sent = bedrock.converse_requests[1].body
    assert sent is not None
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": [{"text": "Let me check."}, {"toolUse": {"toolUseId": call.id, "name": "get_weather",
                                                                               "input": {"city": "Oslo"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": call.id, "content": [{"text": "12 C"}]}}]},
    ]


def test_a_streamed_tool_use_arrives_as_tool_call_deltas(build: Callable[..., Flask], bedrock: FakeBedrock) -> None:
    bedrock.enqueue(fb.tool_use("get_weather", {"city": "Oslo", "unit": "celsius"}))
    with sdk_for(build()) as sdk:
        chunks = list(create(sdk, model="auto", messages=HI, tools=TOOLS, stream=True,
                                                  stream_options={"include_usage": True}))
    deltas = [call for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id and deltas[0].id.startswith("tooluse_fake_") and deltas[0].function.name == "get_weather"
    assert {delta.index for delta in deltas} == {0}
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Oslo", "unit": "celsius"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_tool_call_without_input_has_the_arguments_of_an_empty_object(build: Callable[..., Flask],
                                                                       bedrock: FakeBedrock, stream: bool) -> None:
    # Streamed, Bedrock may send no input delta at all: the caller must still get "{}", as unstreamed.
    bedrock.enqueue(fb.tool_use("get_time", {}, input_deltas=False))
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]
    with sdk_for(build()) as sdk:
        if stream:
            with sdk.chat.completions.stream(model="auto", messages=HI, tools=tools) as events:
                completion = events.get_final_completion()
        else:
            completion = create(sdk, model="auto", messages=HI, tools=tools)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert (call.function.name, call.function.arguments) == ("get_time", "{}")


@pytest.mark.parametrize(
    ("behaviour", "fields", "finish", "text"),
    [
        (fb.ok(), {}, "stop", f"[FAKE-BEDROCK:{HAIKU}] hi"),
        (fb.reply("alpha beta STOP gamma"), {"stop": "STOP"}, "stop", "alpha beta "),
        (fb.reply("one two three four five"), {"max_tokens": 2}, "length", "one two"),
        (fb.tool_use("get_weather", {"city": "Oslo"}), {"tools": TOOLS}, "tool_calls", ""),
        (fb.guardrail(), {}, "content_filter", fb.GUARDRAIL_TEXT),
        (fb.content_filtered(), {}, "content_filter", fb.CONTENT_FILTERED_TEXT),
    ],
    ids=["end_turn", "stop_sequence", "max_tokens", "tool_use", "guardrail_intervened", "content_filtered"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_stop_reasons_become_finish_reasons(build: Callable[..., Flask], bedrock: FakeBedrock, behaviour: fb.Behaviour,
                                            fields: dict[str, Any], finish: str, text: str, stream: bool) -> None:
    bedrock.enqueue(behaviour)
    with sdk_for(build()) as sdk:
        if stream:
            chunks = list(create(sdk, model="auto", messages=HI, stream=True, **fields))
            got = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        else:
            completion = create(sdk, model="auto", messages=HI, **fields)
            got, reasons = completion.choices[0].message.content or "", [completion.choices[0].finish_reason]
    assert reasons == [finish]
    assert got == text


# ---------------------------------------------------------------------------------------------
# Fields Converse cannot take


def test_a_refused_field_is_a_400_naming_it_when_pinned(build: Callable[..., Flask], bedrock: FakeBedrock) -> None:
    response = chat(build(), model="br:haiku", seed=7, response_format={"type": "json_object"})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["param"] == "model"
    assert error["message"] == ("model br:haiku cannot take this request: Bedrock Converse has no equivalent of "
                                "'response_format', 'seed', and leaving them out would change the answer or its cost")
    assert bedrock.converse_requests == []


def test_a_refused_field_excludes_bedrock_from_routing_with_the_reason(build: Callable[..., Flask],
                                                                       bedrock: FakeBedrock) -> None:
    response = chat(build(), logit_bias={"50256": -100})
    assert response.status_code == 200
    body = response.get_json()
    assert body["model"] == "mock:backup"
    assert "br:haiku (Bedrock Converse has no equivalent of 'logit_bias'" in trace_of(body)
    assert bedrock.converse_requests == []


def test_a_value_converse_refuses_is_a_400_when_pinned(build: Callable[..., Flask]) -> None:
    response = chat(build(), model="br:haiku", temperature=1.7)
    assert response.status_code == 400
    assert "Bedrock Converse takes 'temperature' from 0 to 1, got 1.7" in response.get_json()["error"]["message"]


def test_a_conversation_converse_cannot_express_is_the_callers_400(build: Callable[..., Flask],
                                                                   bedrock: FakeBedrock) -> None:
    messages = [{"role": "assistant", "content": "I speak first"}, {"role": "user", "content": "ok"}]
    response = chat(build(), messages, model="br:haiku")
    assert response.status_code == 400
    assert "must have a user message before the first assistant message" in response.get_json()["error"]["message"]
    assert bedrock.converse_requests == []


# ---------------------------------------------------------------------------------------------
# Usage and cost


def cost(tokens_and_prices: list[tuple[int, str]]) -> Decimal:
    return sum((tokens * Decimal(price) for tokens, price in tokens_and_prices), Decimal(0)) / 1000


PROMPT = "Summarise the attached contract in three sentences, please, with care."


def test_cached_tokens_are_settled_to_the_last_digit(build: Callable[..., Flask], bedrock: FakeBedrock) -> None:
    app = build(registry(bedrock, [br_model(in_cost=0.0008, out_cost=0.004, cached_input_cost_per_1k=0.00008,
                                            cache_write_cost_per_1k=0.001)]))
    bedrock.enqueue(fb.ok(cache_read=40, cache_write=12))
    response = chat(app, [{"role": "user", "content": PROMPT}])
    assert response.status_code == 200
    body = response.get_json()
    sent = only_request(bedrock).body
    assert sent is not None
    total = count_input_tokens(sent)
    output = len(f"[FAKE-BEDROCK:{HAIKU}] {PROMPT}".split())
    expected = cost([(total - 52, "0.0008"), (40, "0.00008"), (12, "0.001"), (output, "0.004")])
    assert Decimal(response.headers["x-route-cost-usd"]) == expected
    assert response.headers["x-route-cost-usd"] == plain_decimal(expected)
    assert body["routing"]["actual_cost_usd"] == float(expected)
    assert body["usage"] == {"prompt_tokens": total, "completion_tokens": output, "total_tokens": total + output,
                             "prompt_tokens_details": {"cached_tokens": 40}}
    assert f"reported {total} prompt (40 read from cache) (12 written to cache) and {output} completion" in trace_of(body)


def test_a_missing_cache_rate_is_priced_at_the_input_rate_with_a_note(build: Callable[..., Flask],
                                                                      bedrock: FakeBedrock) -> None:
    app = build(registry(bedrock, [br_model(in_cost=0.0008, out_cost=0.004, cached_input_cost_per_1k=0.00008)]))
    bedrock.enqueue(fb.ok(cache_read=10, cache_write=20))
    response = app.test_client().post("/route", json={"input": PROMPT})
    body = response.get_json()
    assert response.status_code == 200, body
    total = count_input_tokens(body_of(only_request(bedrock)))
    output = len(f"[FAKE-BEDROCK:{HAIKU}] {PROMPT}".split())
    expected = cost([(total - 30, "0.0008"), (10, "0.00008"), (20, "0.0008"), (output, "0.004")])
    assert body["usage"]["cost_usd"] == float(expected) == body["actual_cost_usd"]
    assert (body["usage"]["cached_tokens"], body["usage"]["cache_write_tokens"]) == (10, 20)
    assert ("20 cache-write tokens priced at the full input price: the registry gives br:haiku no "
            "cache_write_cost_per_1k.") in body["decision_trace"]


def test_streamed_usage_comes_from_the_metadata_event(build: Callable[..., Flask], bedrock: FakeBedrock) -> None:
    app = build(registry(bedrock, [br_model(cached_input_cost_per_1k=0.00008, cache_write_cost_per_1k=0.001)]))
    bedrock.enqueue(fb.ok(cache_read=5, cache_write=3))
    response = chat(app, [{"role": "user", "content": PROMPT}], stream=True, stream_options={"include_usage": True})
    events = events_of(response)
    total = count_input_tokens(body_of(only_request(bedrock)))
    output = len(f"[FAKE-BEDROCK:{HAIKU}] {PROMPT}".split())
    final = events[-1]
    assert final["usage"] == {"prompt_tokens": total, "completion_tokens": output, "total_tokens": total + output,
                              "prompt_tokens_details": {"cached_tokens": 5}}
    expected = cost([(total - 8, "0.0008"), (5, "0.00008"), (3, "0.001"), (output, "0.004")])
    assert final["routing"]["actual_cost_usd"] == float(expected)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e.get("choices")) == (
        f"[FAKE-BEDROCK:{HAIKU}] {PROMPT}")


def test_the_ceiling_holds_against_spend_all_over_random_prompts(build: Callable[..., Flask],
                                                                 bedrock: FakeBedrock) -> None:
    prices = {"cheap": ("0.00025", "0.00125"), "mid": ("0.003", "0.015"), "odd": ("0.000123", "0.000987")}
    models = [br_model(name=name, upstream=f"anthropic.{name}-v1:0", in_cost=float(i), out_cost=float(o),
                       max_output_tokens=4096, quality=3) for name, (i, o) in prices.items()]
    app = build(registry(bedrock, models))
    bedrock.set_default(fb.spend_all())
    rng = random.Random(20261125)
    answered = 0
    for _ in range(40):
        messages: list[dict[str, Any]] = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": random_text(rng, 600)})
        for index in range(rng.randint(1, 3)):
            messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": random_text(rng, 2500)})
        messages[-1]["role"] = "user"
        budget = Decimal(f"{10 ** rng.uniform(-4, -1.5):.3g}")
        response = chat(app, messages, model=rng.choice(["auto", "br:cheap", "br:mid", "br:odd"]),
                        routing={"max_cost_usd": float(budget)})
        body = response.get_json()
        if response.status_code == 402:
            continue
        assert response.status_code == 200, body
        answered += 1
        actual = Decimal(response.headers["x-route-cost-usd"])
        assert actual <= budget
        sent = bedrock.converse_requests[-1]
        price_in, price_out = prices[str(sent.model_id).split(".")[1].split("-")[0]]
        body = body_of(sent)
        billed = cost([(count_input_tokens(body), price_in), (body["inferenceConfig"]["maxTokens"], price_out)])
        assert billed == actual <= budget
    assert answered >= 25


@pytest.mark.parametrize("upstream", [HAIKU, "meta.llama3-1-70b-instruct-v1:0"], ids=["anthropic", "other"])
def test_the_ceiling_holds_with_tools_that_grow_in_translation(build: Callable[..., Flask], bedrock: FakeBedrock,
                                                              upstream: str) -> None:
    # Functions without parameters are sent with an object schema: more bytes than the OpenAI JSON the bound counts.
    bare = [{"type": "function", "function": {"name": f"tool_{index}"}} for index in range(40)]
    app = build(registry(bedrock, [br_model(upstream=upstream, in_cost=0.003, out_cost=0.015, max_output_tokens=4096)]))
    bedrock.set_default(fb.spend_all())
    budget = Decimal("0.02")
    response = chat(app, [{"role": "user", "content": "Pick a tool."}], tools=bare, routing={"max_cost_usd": float(budget)})
    assert response.status_code == 200, response.get_json()
    sent = body_of(only_request(bedrock))
    billed = cost([(count_input_tokens(sent), "0.003"), (sent["inferenceConfig"]["maxTokens"], "0.015")])
    assert Decimal(response.headers["x-route-cost-usd"]) == billed <= budget
    assert response.get_json()["routing"]["over_budget"] is False


# ---------------------------------------------------------------------------------------------
# Failures


ERRORS = [
    ("ThrottlingException", "rate_limited", True, 503),
    ("ModelNotReadyException", "upstream", True, 502),
    ("ServiceUnavailableException", "upstream", True, 502),
    ("InternalServerException", "upstream", True, 502),
    ("ModelErrorException", "upstream", True, 502),
    ("ModelTimeoutException", "timeout", True, 504),
    ("ValidationException", "bad_request", False, 400),
    ("AccessDeniedException", "forbidden", False, 502),
    ("ResourceNotFoundException", "not_found", False, 502),
]


@pytest.mark.parametrize(("code", "outcome", "failover", "pinned_status"), ERRORS, ids=[e[0] for e in ERRORS])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_each_error_code(build: Callable[..., Flask], bedrock: FakeBedrock, code: str, outcome: str, failover: bool,
                         pinned_status: int, stream: bool) -> None:
    app = build()
    extra: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    bedrock.enqueue(fb.error(code))
    response = chat(app, **extra)
    assert len(bedrock.converse_requests) == 1  # boto3's own retries are off
    if failover:
        assert response.status_code == 200
        body = events_of(response)[-1] if stream else response.get_json()
        assert attempts_of(body) == [("br:haiku", outcome), ("mock:backup", "ok")]
    else:
        assert response.status_code == pinned_status
        error = response.get_json()["error"]
        assert attempts_of(response.get_json()) == [("br:haiku", outcome)]
        if code == "AccessDeniedException":
            action = "bedrock:InvokeModelWithResponseStream" if stream else "bedrock:InvokeModel"
            assert f"the function's role may not call {action} on {HAIKU} in us-east-1" in error["message"]
            assert "BedrockFoundationModelIds" in error["message"]
        if code == "ResourceNotFoundException":
            assert f"Bedrock has no model {HAIKU} in us-east-1: enable model access or check the id" in error["message"]
        if code == "ValidationException":
            assert "(ValidationException): ValidationException (scripted by FakeBedrock)" in error["message"]
    bedrock.reset()
    bedrock.enqueue(fb.error(code))
    pinned = chat(app, model="br:haiku", **extra)
    assert pinned.status_code == pinned_status, pinned.get_json()
    assert len(bedrock.converse_requests) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_throttling_fails_over_to_the_openai_compatible_server(build: Callable[..., Flask], bedrock: FakeBedrock,
                                                               compat: FakeOpenAI, stream: bool) -> None:
    app = build(registry(bedrock, [br_model(), compat_model(), mock_row()], compat))
    bedrock.enqueue(fb.error("ThrottlingException"))
    with sdk_for(app) as client:
        sdk: Any = client
        raw = sdk.chat.completions.with_raw_response.create(model="auto", messages=HI, stream=stream)
        assert raw.headers["x-route-attempts"] == "2"
        assert raw.headers["x-route-model"] == "compat:mini"
        parsed = raw.parse()
        text = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) if stream else \
            parsed.choices[0].message.content
    assert text == "[FAKE:mini] hi"
    assert len(bedrock.converse_requests) == 1 and len(compat.chat_requests) == 1


@pytest.mark.parametrize(
    "behaviour",
    [fb.malformed(), fb.cut_stream(0), fb.stream_exception(0, "modelStreamErrorException"), fb.error("ThrottlingException"),
     fb.invalid_utf8()],
    ids=["malformed", "cut-before-a-delta", "exception-before-a-delta", "throttled", "not-utf8"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_call_broken_before_its_first_piece_fails_over(build: Callable[..., Flask], bedrock: FakeBedrock,
                                                         behaviour: fb.Behaviour, stream: bool) -> None:
    bedrock.enqueue(behaviour)
    response = chat(build(), stream=stream, stream_options={"include_usage": True} if stream else None)
    assert response.status_code == 200
    body = events_of(response)[-1] if stream else response.get_json()
    assert "error" not in body
    assert attempts_of(body)[-1] == ("mock:backup", "ok")
    assert attempts_of(body)[0][0] == "br:haiku"
    assert len(bedrock.converse_requests) == 1


def worst_case(messages: list[dict[str, Any]], max_tokens: int, in_cost: str = "0.0008", out_cost: str = "0.004") -> Decimal:
    bound = parse_chat_body({"model": "auto", "messages": messages}).route.prompt_bound
    return cost([(bound, in_cost), (max_tokens, out_cost)])


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [(fb.stream_exception(3), "rate_limited"), (fb.stream_exception(2, "internalServerException"), "upstream"),
     (fb.stream_exception(2, "modelTimeoutException"), "upstream"), (fb.cut_stream(2), "connection"),
     (fb.cut_stream(2, graceful=True), "upstream"), (fb.invalid_utf8(2), "upstream")],
    ids=["throttling", "internal", "unnamed", "cut", "ended-early", "not-utf8"],
)
def test_a_stream_broken_mid_answer_ends_with_an_error_event_and_the_worst_case(
    build: Callable[..., Flask], bedrock: FakeBedrock, behaviour: fb.Behaviour, kind: str
) -> None:
    bedrock.enqueue(behaviour)
    messages = [{"role": "user", "content": "tell me a long story"}]
    response = chat(build(), messages, stream=True)
    events = events_of(response)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e.get("choices"))
    assert text.startswith("[FAKE-BEDROCK:")
    error = events[-1]["error"]
    assert (error["type"], error["code"]) == ("upstream_error", kind)
    routing = events[-1]["routing"]
    assert routing["actual_cost_usd"] == float(worst_case(messages, routing["max_tokens"]))
    assert "failed mid-stream without usage; settled on the whole worst case" in " ".join(routing["decision_trace"])
    assert len(bedrock.converse_requests) == 1


def test_a_slow_model_times_out_and_fails_over(build: Callable[..., Flask], bedrock: FakeBedrock) -> None:
    app = build(registry(bedrock, [br_model(), mock_row()], timeout_seconds=1))
    bedrock.enqueue(fb.slow(3))
    began = time.monotonic()
    response = chat(app)
    assert time.monotonic() - began < 2.5
    assert response.status_code == 200
    assert attempts_of(response.get_json()) == [("br:haiku", "timeout"), ("mock:backup", "ok")]


def test_an_endpoint_nobody_listens_on_fails_over(build: Callable[..., Flask], bedrock: FakeBedrock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = build(registry(bedrock, [br_model(), mock_row()], endpoint_url=f"http://127.0.0.1:{port}"))
    response = chat(app)
    assert response.status_code == 200
    assert attempts_of(response.get_json()) == [("br:haiku", "connection"), ("mock:backup", "ok")]


def test_no_aws_credentials_fail_over(build: Callable[..., Flask], bedrock: FakeBedrock, monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    response = chat(build())
    assert response.status_code == 200
    body = response.get_json()
    assert attempts_of(body) == [("br:haiku", "key_unavailable"), ("mock:backup", "ok")]
    assert "no usable AWS credentials for Bedrock (NoCredentialsError)" in trace_of(body)
    assert bedrock.requests == []


# ---------------------------------------------------------------------------------------------
# Keys, imports and health


def test_no_provider_ever_sees_anothers_credentials(build: Callable[..., Flask], bedrock: FakeBedrock,
                                                    compat: FakeOpenAI) -> None:
    app = build(registry(bedrock, [br_model(), compat_model(), mock_row()], compat))
    assert chat(app).get_json()["model"] == "br:haiku"
    bedrock.enqueue(fb.error("ServiceUnavailableException"))
    assert "error" not in events_of(chat(app, stream=True))[-1]
    assert chat(app, model="compat:mini").status_code == 200
    assert len(bedrock.converse_requests) == 2 and len(compat.chat_requests) == 2
    for sent in bedrock.requests:
        assert not any(COMPAT_KEY in value or "Bearer" in value for value in sent.headers.values())
        assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256")
    for seen in compat.requests:
        assert seen.headers["authorization"] == f"Bearer {COMPAT_KEY}"
        assert not any(name.startswith("x-amz") for name in seen.headers)
        assert not any("AWS4-HMAC" in value or "testing" in value for value in seen.headers.values())


def test_wire_logs_never_show_the_signature(build: Callable[..., Flask], bedrock: FakeBedrock,
                                            caplog: pytest.LogCaptureFixture) -> None:
    wire = [logging.getLogger(name) for name in ("botocore", "boto3", "urllib3")]
    levels = [logger.level for logger in wire]
    try:
        for logger in wire:
            logger.setLevel(logging.NOTSET)
        caplog.set_level(logging.DEBUG)
        assert chat(build()).status_code == 200
        assert all(logger.getEffectiveLevel() >= logging.INFO for logger in wire)
        signature = only_request(bedrock).headers["authorization"].rsplit("Signature=", 1)[1]
        assert not any(signature in record.getMessage() or "AWS4-HMAC-SHA256" in record.getMessage()
                       for record in caplog.records)
    finally:
        for logger, level in zip(wire, levels, strict=True):
            logger.setLevel(level)


def test_importing_the_adapter_imports_no_boto3() -> None:
    code = "import sys, costroute.providers.bedrock; print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root(), capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_an_app_whose_requests_go_to_the_mock_creates_no_bedrock_client(build: Callable[..., Flask],
                                                                        bedrock: FakeBedrock) -> None:
    document = registry(bedrock, [br_model(in_cost=0.01, out_cost=0.05), mock_row(0.0001, 0.0002)])
    script = (
        "import json, sys\n"
        "from costroute.bootstrap import build_runtime\n"
        "from costroute.config.settings import Settings\n"
        "from costroute.web import create_app\n"
        f"app = create_app(build_runtime(Settings(models_config_json={document!r})))\n"
        "client = app.test_client()\n"
        "r = client.post('/route', json={'input': 'hi'})\n"
        "assert r.status_code == 200 and r.get_json()['model'] == 'mock:backup', r.data\n"
        "health = client.get('/health').get_json()\n"
        "print(json.dumps([[p['name'], p.get('client')] for p in health['providers'] if p['kind'] == 'bedrock']))\n"
        "print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=repo_root(), capture_output=True, text=True, timeout=60,
                            check=False, env={"PATH": "/usr/bin:/bin", "AWS_REGION": "us-east-1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-2:] == ['[["br", false]]', "[]"]  # after the request's log line


def test_health_shows_the_region_and_whether_a_client_exists(build: Callable[..., Flask], bedrock: FakeBedrock) -> None:
    app = build(registry(bedrock, [br_model(), mock_row()], region="eu-central-1"))
    client = app.test_client()
    before = provider_entry(client.get("/health").get_json(), "br")
    assert before == {**before, "kind": "bedrock", "region": "eu-central-1", "region_source": "registry", "client": False,
                      "host": "127.0.0.1", "signing": "sigv4", "models": 1}
    assert chat(app, model="br:haiku").status_code == 200
    after = provider_entry(client.get("/health").get_json(), "br")
    assert (after["client"], after["clients"]) == (True, 1)
    assert "testing" not in json.dumps(after)


def test_clients_are_kept_per_whole_second_timeout(bedrock: FakeBedrock) -> None:
    clients = BedrockClients(BedrockSettings(region="us-east-1", endpoint_url=bedrock.endpoint_url), environ={})
    assert not clients.exists
    first = clients.for_timeout(0.2)
    assert clients.for_timeout(1.0) is first
    config = first.meta.config
    assert (config.read_timeout, config.connect_timeout) == (1, 1)
    assert config.retries == {"mode": "standard", "total_max_attempts": 1}
    assert config.signature_version == "v4"
    longer = clients.for_timeout(19.2)
    assert longer is not first
    assert (longer.meta.config.read_timeout, longer.meta.config.connect_timeout) == (20, 2.0)
    for seconds in range(2, 2 + MAX_CLIENTS + 3):
        clients.for_timeout(seconds)
    assert clients.count == MAX_CLIENTS


# ---------------------------------------------------------------------------------------------
# The Lambda handler


class Context:
    """A Lambda context with 30 s left."""

    function_name = "RouterFunction-test"
    aws_request_id = "test-invoke"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left."""
        return 30_000


@pytest.fixture
def cold_container(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No app built yet; the handler's cached app is dropped again afterwards."""
    monkeypatch.setattr(handler, "_app", None)
    yield
    handler._app = None


def invoke(name: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    event = json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))
    response = handler.lambda_handler(event, Context())
    return response["statusCode"], response["headers"], json.loads(response["body"])


@pytest.mark.parametrize("event", ["route.json", "chat_completions.json"])
@pytest.mark.parametrize("winner", sorted(PRICES_BY_WINNER))
def test_the_lambda_handler_routes_across_the_three(cold_container: None, monkeypatch: pytest.MonkeyPatch,
                                                    bedrock: FakeBedrock, compat: FakeOpenAI, winner: str,
                                                    event: str) -> None:
    monkeypatch.setenv("MODELS_CONFIG_JSON", priced_registry(bedrock, compat, winner))
    monkeypatch.setenv("TEST_OPENAI_KEY", COMPAT_KEY)
    status, headers, body = invoke(event)
    assert status == 200, body
    if event == "route.json":
        assert body["model"] == winner
        text = body["response"]
    else:
        assert headers["x-route-model"] == winner
        text = body["choices"][0]["message"]["content"]
    answered_by(winner, text, bedrock, compat)
    if winner == "br:haiku":
        assert signing_info(only_request(bedrock)) == ("testing", "us-east-1", "bedrock")


def test_the_lambda_handler_fails_over_from_throttled_bedrock(cold_container: None, monkeypatch: pytest.MonkeyPatch,
                                                               bedrock: FakeBedrock, compat: FakeOpenAI) -> None:
    monkeypatch.setenv("MODELS_CONFIG_JSON", priced_registry(bedrock, compat, "br:haiku"))
    monkeypatch.setenv("TEST_OPENAI_KEY", COMPAT_KEY)
    compat.enqueue(openai_status(503))
    bedrock.enqueue(fb.error("ThrottlingException"))
    status, headers, body = invoke("chat_completions.json")
    assert status == 200, body
    assert headers["x-route-model"] == "mock:backup"
    assert [(a["model"], a["outcome"]) for a in body["routing"]["attempts"]] == [
        ("br:haiku", "rate_limited"), ("compat:mini", "upstream"), ("mock:backup", "ok")]
