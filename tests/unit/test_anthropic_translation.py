"""The Anthropic adapter's translation, both ways, without a network: requests, answers, streams, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from costroute.core.outcome import FailureKind
from costroute.core.registry import Model, ProviderSpec, RegistryError
from costroute.core.settle import Usage
from costroute.providers.anthropic import (
    KIND,
    TOOL_PROMPT_TOKENS_ANY,
    TOOL_PROMPT_TOKENS_AUTO,
    AnthropicProvider,
    StreamReader,
    finish_reason,
    read_message,
    read_pieces,
    read_usage,
    request_body,
    tool_prompt_overhead,
    translate_error,
    unsupported_reason,
)
from costroute.providers.base import AdapterDeps, ProviderCall, ProviderError, StreamPiece
from tests.adapters import StaticKey
from tests.payloads import repo_root
from tests.registries import parse_registry

MODEL = Model("claude", "sonnet", 4, Decimal("0.003"), Decimal("0.015"), 600, 8192, upstream_model="claude-sonnet-4-5")
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def body_for(messages: list[dict[str, Any]], max_tokens: int = 77, **params: Any) -> dict[str, Any]:
    """The messages.create arguments the adapter builds."""
    return request_body(MODEL, ProviderCall(messages=tuple(messages), max_tokens=max_tokens, timeout_s=5, params=params))


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": value, **extra}


# ---- requests --------------------------------------------------------------------------------------


def test_the_minimal_request_always_carries_max_tokens_and_the_upstream_model() -> None:
    body = body_for([{"role": "user", "content": "hi"}], max_tokens=123)
    assert body == {"model": "claude-sonnet-4-5", "max_tokens": 123,
                    "messages": [{"role": "user", "content": [text("hi")]}]}


def test_system_and_developer_messages_become_system_blocks_keeping_cache_control() -> None:
    cached = {"type": "ephemeral", "ttl": "1h"}
    body = body_for([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": [text("Policy.", cache_control=cached), text("More.")]},
        {"role": "user", "content": "again"},
    ])
    assert body["system"] == [text("Be brief."), text("Policy.", cache_control=cached), text("More.")]
    # The two user messages around the developer message are one turn now.
    assert body["messages"] == [{"role": "user", "content": [text("hi"), text("again")]}]


def test_consecutive_messages_of_one_role_are_merged_and_cache_control_is_kept() -> None:
    body = body_for([
        {"role": "user", "content": [text("a", cache_control={"type": "ephemeral"})]},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
        {"role": "assistant", "content": "d"},
        {"role": "user", "content": "e"},
    ])
    assert body["messages"] == [
        {"role": "user", "content": [text("a", cache_control={"type": "ephemeral"}), text("b")]},
        {"role": "assistant", "content": [text("c"), text("d")]},
        {"role": "user", "content": [text("e")]},
    ]


@pytest.mark.parametrize(("stop", "sent"), [("END", ["END"]), (["a", "b"], ["a", "b"]), ([], None), (None, None)])
def test_stop_becomes_stop_sequences(stop: Any, sent: list[str] | None) -> None:
    body = body_for([{"role": "user", "content": "hi"}], stop=stop)
    assert body.get("stop_sequences") == sent


def test_user_becomes_metadata_user_id() -> None:
    assert body_for([{"role": "user", "content": "hi"}], user="caller-42")["metadata"] == {"user_id": "caller-42"}


def test_function_tools_become_anthropic_tools() -> None:
    no_type = {"type": "function", "function": {"name": "ping", "parameters": {"properties": {}}}}
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    body = body_for([{"role": "user", "content": "hi"}], tools=[WEATHER, no_type, strict])
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather in a city.",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
        {"name": "get_weather", "description": "Weather in a city.",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": True},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "parallel", "sent"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "get_time"}}, None, {"type": "tool", "name": "get_time"}),
        (None, None, None),
        (None, True, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ({"type": "function", "function": {"name": "get_time"}}, False,
         {"type": "tool", "name": "get_time", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),  # nothing runs in parallel when nothing runs
        ("required", True, {"type": "any"}),
    ],
)
def test_tool_choice_and_parallel_tool_calls(choice: Any, parallel: bool | None, sent: dict[str, Any] | None) -> None:
    params: dict[str, Any] = {"tools": [WEATHER, TIME]}
    if choice is not None:
        params["tool_choice"] = choice
    if parallel is not None:
        params["parallel_tool_calls"] = parallel
    assert body_for([{"role": "user", "content": "hi"}], **params).get("tool_choice") == sent


def test_tool_choice_auto_or_none_without_tools_sends_nothing() -> None:
    for choice in ("auto", "none"):
        body = body_for([{"role": "user", "content": "hi"}], tool_choice=choice)
        assert "tool_choice" not in body and "tools" not in body


def test_a_tool_round_trip_becomes_tool_use_and_tool_result_blocks() -> None:
    body = body_for([
        {"role": "user", "content": "Weather and time in Oslo?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [text("09:00")]},
        {"role": "user", "content": "Thanks, and tomorrow?"},
    ], tools=[WEATHER, TIME])
    assert body["messages"] == [
        {"role": "user", "content": [text("Weather and time in Oslo?")]},
        {"role": "assistant", "content": [
            text("Checking."),
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "12 C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "09:00"},
            text("Thanks, and tomorrow?"),
        ]},
    ]


def test_tool_results_come_before_text_in_their_user_turn() -> None:
    body = body_for([
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "user", "content": "first"},
        {"role": "tool", "tool_call_id": "c", "content": ""},
    ], tools=[TIME])
    assert body["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "c"}, text("first")]


# ---- what cannot be sent ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"logit_bias": {"1": 2}, "seed": 7}, "'logit_bias', 'seed' have no Anthropic equivalent"),
        ({"response_format": {"type": "json_object"}}, "'response_format' has no Anthropic equivalent"),
        ({"temperature": 0.2}, "'temperature' is not accepted by Anthropic API version 2026-10-21"),
        ({"top_p": 0.9, "top_k": 5, "temperature": 1},
         "'temperature', 'top_p', 'top_k' are not accepted by Anthropic API version 2026-10-21"),
        ({"temperature": 0, "seed": 1},
         "'temperature' is not accepted by Anthropic API version 2026-10-21; 'seed' has no Anthropic equivalent"),
        ({"presence_penalty": 0.5, "frequency_penalty": 1}, "'frequency_penalty', 'presence_penalty' have no"),
        ({"logprobs": True, "top_logprobs": 2}, "'logprobs', 'top_logprobs' have no"),
        ({"reasoning_effort": "low", "verbosity": "low"}, "'reasoning_effort', 'verbosity' have no"),
        ({"prompt_cache_key": "k", "safety_identifier": "s"}, "'prompt_cache_key', 'safety_identifier' have no"),
        ({"service_tier": "flex"}, "'service_tier' has no Anthropic equivalent"),
        ({"functions": [{"name": "f"}], "function_call": "auto"}, "'function_call', 'functions' have no"),
        ({"n": 2}, "'n' has no Anthropic equivalent"),
        ({"tool_choice": "required"}, "'tool_choice' names a tool or requires one, but the request has no 'tools'"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "'tool_choice' names the function 'nope', which is not in 'tools'"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "'tools[0]' must be a function tool"),
        ({"tools": [{"type": "function", "function": {"name": "s", "parameters": {"type": "string"}}}]},
         "'tools[0].function.parameters' must be a JSON schema of type 'object'"),
        ({"parallel_tool_calls": "no"}, "'parallel_tool_calls' must be true or false"),
        ({"stop": 3}, "'stop' must be a string or an array of strings"),
        ({"user": 42}, "'user' must be a string"),
    ],
)
def test_unsupported_names_what_cannot_be_sent(params: dict[str, Any], reason: str) -> None:
    refused = unsupported_reason(params)
    assert refused is not None and refused.startswith(reason), refused


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"store": True, "metadata": {"tag": "x"}, "service_tier": "auto"},
        {"service_tier": "default", "n": 1, "logprobs": False, "modalities": ["text"]},
        {"response_format": {"type": "text"}, "presence_penalty": 0, "frequency_penalty": 0.0},
        {"stop": ["x"], "user": "u", "tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False},
        {"temperature": None, "seed": None},  # null means absent
    ],
)
def test_translated_and_harmless_fields_are_accepted(params: dict[str, Any]) -> None:
    assert unsupported_reason(params) is None


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}],
         "'messages[1].tool_calls[0].function.arguments' is not JSON"),
        ([{"role": "user", "content": "q"}, {"role": "function", "name": "f", "content": "r"}],
         "'messages[1].role' 'function' (deprecated) has no equivalent"),
        ([{"role": "system", "content": "only a system prompt"}], "'messages' holds no user or assistant content"),
    ],
)
def test_an_untranslatable_conversation_is_refused(messages: list[dict[str, Any]], reason: str) -> None:
    refused = unsupported_reason({}, messages)
    assert refused is not None and refused.startswith(reason), refused
    provider = AnthropicProvider(ProviderSpec(name="claude", kind="anthropic"),
                                 AdapterDeps(keys=StaticKey("sk-ant-x"), provider_timeout_s=5))
    # Before any client exists (no SDK, no network): the call is refused as the caller's error.
    with pytest.raises(ProviderError) as caught:
        provider.complete(MODEL, ProviderCall(messages=tuple(messages), max_tokens=5, timeout_s=5))
    assert caught.value.kind is FailureKind.BAD_REQUEST and caught.value.status == 400
    assert reason in caught.value.message
    assert provider.status() == {"host": "api.anthropic.com", "client": False}


# ---- the tool-use system prompt -----------------------------------------------------------------


def test_documented_constants_are_the_largest_for_each_choice() -> None:
    # auto/none, any/tool: Claude 4 family, 3.5 Sonnet (June), 3.5 Haiku and 3 Haiku, 3 Opus, 3 Sonnet.
    documented = [(346, 313), (294, 261), (264, 340), (530, 281), (159, 235)]
    assert TOOL_PROMPT_TOKENS_AUTO == max(auto for auto, _ in documented) == 530
    assert TOOL_PROMPT_TOKENS_ANY == max(named for _, named in documented) == 340


@pytest.mark.parametrize(
    ("params", "overhead"),
    [
        ({}, 0),
        ({"tools": []}, 0),
        ({"tool_choice": "required"}, 0),
        ({"tools": [WEATHER]}, 530),
        ({"tools": [WEATHER], "tool_choice": "auto"}, 530),
        ({"tools": [WEATHER], "tool_choice": "none"}, 530),
        ({"tools": [WEATHER], "tool_choice": "required"}, 340),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, 340),
    ],
)
def test_prompt_overhead(params: dict[str, Any], overhead: int) -> None:
    assert tool_prompt_overhead(params) == overhead


def test_prompt_overhead_covers_tools_that_grow_in_translation() -> None:
    # A function without parameters gets an object schema: Anthropic's tool is longer than the OpenAI JSON.
    bare = [{"type": "function", "function": {"name": "f"}} for _ in range(20)]
    counted = len(json.dumps(bare).encode())
    sent = len(json.dumps(body_for([{"role": "user", "content": "x"}], tools=bare)["tools"], ensure_ascii=False).encode())
    assert sent > counted
    assert tool_prompt_overhead({"tools": bare}) == TOOL_PROMPT_TOKENS_AUTO + sent - counted


# ---- answers ---------------------------------------------------------------------------------------


def message(content: Any, stop_reason: Any = "end_turn", usage: Any = None) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": usage if usage is not None else {"input_tokens": 10, "output_tokens": 3}}


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter"), ("pause_turn", "length"), ("model_context_window_exceeded", "length"),
     ("a_reason_from_the_future", "stop"), (None, "stop")],
)
def test_stop_reason_maps_to_finish_reason(stop_reason: str | None, finish: str) -> None:
    assert finish_reason(stop_reason, MODEL) == finish
    assert read_message(message([text("x")], stop_reason), MODEL, 1.0).finish_reason == finish


def test_a_text_answer() -> None:
    completion = read_message(message([text("Hello"), text(", world")]), MODEL, 12.5)
    assert (completion.text, completion.tool_calls, completion.refusal) == ("Hello, world", (), None)
    assert completion.usage == Usage(input_tokens=10, output_tokens=3)
    assert completion.latency_ms == 12.5


def test_a_tool_use_answer_becomes_tool_calls() -> None:
    answer = message([text("Let me look."), {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                              "input": {"city": "Oslo"}}], "tool_use")
    completion = read_message(answer, MODEL, 1.0)
    assert completion.finish_reason == "tool_calls"
    assert completion.text == "Let me look."
    assert completion.tool_calls == ({"id": "toolu_1", "type": "function",
                                      "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},)


def test_a_refusal_moves_its_text_to_refusal() -> None:
    completion = read_message(message([text("I can't help with that.")], "refusal"), MODEL, 1.0)
    assert (completion.text, completion.refusal, completion.finish_reason) == (
        "", "I can't help with that.", "content_filter")
    assert read_message(message([], "refusal"), MODEL, 1.0).refusal is None


def test_blocks_of_other_types_are_skipped() -> None:
    answer = message([{"type": "thinking", "thinking": "hmm", "signature": "s"}, text("ok")])
    assert read_message(answer, MODEL, 1.0).text == "ok"


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        ([], "the body is not a JSON object"),
        (message(None), "'content' is not an array of blocks"),
        (message("just text"), "'content' is not an array of blocks"),
        (message([{"text": "no type"}]), "'content[0]' is not a content block"),
        (message(["text"]), "'content[0]' is not a content block"),
        (message([{"type": "text", "text": 5}]), "'content[0].text' is not a string"),
        (message([{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]), "'content[0].input' is not an object"),
        (message([{"type": "tool_use", "name": "f", "input": {}}]), "without a string id and name"),
        (message([text("x")], stop_reason=3), "'stop_reason' is not a string"),
        (message([text("x")], usage="lots"), "'usage' is not an object"),
        (message([text("x")], usage={"input_tokens": "10", "output_tokens": 3}), "'usage.input_tokens' is not a"),
        (message([text("x")], usage={"input_tokens": 10, "output_tokens": -1}), "'usage.output_tokens' is not a"),
        (message([text("x")], usage={"input_tokens": 10, "output_tokens": True}), "'usage.output_tokens' is not a"),
        (message([text("x")], usage={"input_tokens": 1.5, "output_tokens": 3}), "'usage.input_tokens' is not a"),
        (message([text("x")], usage={"output_tokens": 3}), "'usage' lacks input_tokens or output_tokens"),
        (message([text("x")], usage={"input_tokens": 1, "output_tokens": 3, "cache_read_input_tokens": -2}),
         "'usage.cache_read_input_tokens'"),
        (message([text("x")], usage={"input_tokens": 1, "output_tokens": 3, "cache_creation_input_tokens": 5,
                                     "cache_creation": {"ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 1}}),
         "does not add up"),
        (message([text("x")], usage={"input_tokens": 1, "output_tokens": 3, "cache_creation": [1]}),
         "'usage.cache_creation' is not an object"),
    ],
)
def test_a_malformed_answer_is_an_upstream_failure(answer: Any, what: str) -> None:
    with pytest.raises(ProviderError) as caught:
        read_message(answer, MODEL, 1.0)
    assert caught.value.kind is FailureKind.UPSTREAM and caught.value.status == 502
    assert what in caught.value.message


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"input_tokens": 7, "output_tokens": 2}, Usage(7, 2)),
        ({"input_tokens": 7, "output_tokens": 2, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 30,
          "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20}},
         Usage(7, 2, cache_read_tokens=100, cache_write_tokens=10, cache_write_1h_tokens=20)),
        # Without the split, every creation token is a 5-minute write.
        ({"input_tokens": 7, "output_tokens": 2, "cache_creation_input_tokens": 30},
         Usage(7, 2, cache_write_tokens=30)),
        ({"input_tokens": 7, "output_tokens": 2, "cache_creation_input_tokens": 30, "cache_creation": None},
         Usage(7, 2, cache_write_tokens=30)),
        ({"input_tokens": 7, "output_tokens": 2, "cache_creation": {"ephemeral_1h_input_tokens": 4}},
         Usage(7, 2, cache_write_1h_tokens=4)),
        ({"input_tokens": 7, "output_tokens": 2, "cache_read_input_tokens": None, "service_tier": "standard"},
         Usage(7, 2)),
    ],
)
def test_usage_classes(usage: dict[str, Any], expected: Usage) -> None:
    assert read_usage(usage, MODEL) == expected
    assert read_usage(None, MODEL) is None


# ---- streams ---------------------------------------------------------------------------------------


def event(name: str, **data: Any) -> tuple[str, str]:
    return name, json.dumps({"type": name, **data})


START_USAGE = {"input_tokens": 20, "cache_read_input_tokens": 50, "cache_creation_input_tokens": 8,
               "cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 3}, "output_tokens": 1}


def message_start(usage: Any = None, content: Any = ()) -> tuple[str, str]:
    return event("message_start", message={"id": "msg_1", "type": "message", "role": "assistant",
                                           "content": list(content) if content is not None else None,
                                           "stop_reason": None, "usage": START_USAGE if usage is None else usage})


def tool_stream() -> list[tuple[str, str]]:
    return [
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        ("ping", '{"type": "ping"}'),
        event("content_block_delta", index=0, delta={"type": "text_delta", "text": "Let me"}),
        event("content_block_delta", index=0, delta={"type": "text_delta", "text": " look."}),
        event("content_block_stop", index=0),
        event("content_block_start", index=1, content_block={"type": "tool_use", "id": "toolu_9", "name": "get_weather",
                                                              "input": {}}),
        event("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": ""}),
        event("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": '{"city":'}),
        event("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": ' "Oslo"}'}),
        event("content_block_stop", index=1),
        event("content_block_start", index=2, content_block={"type": "tool_use", "id": "toolu_10", "name": "get_time",
                                                              "input": {}}),
        event("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": "{}"}),
        event("content_block_stop", index=2),
        event("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None}, usage={"output_tokens": 31}),
        event("message_stop"),
    ]


def read_all(events: list[tuple[str, str]], key: str | None = None) -> list[StreamPiece]:
    """Drive a StreamReader over events as the adapter does: start at message_start, then feed."""
    reader = StreamReader(MODEL, key)
    stream: Iterator[tuple[str, str]] = iter(events)
    reader.start(stream)
    return list(read_pieces(reader, stream, key))


def test_a_streamed_tool_use_becomes_openai_tool_call_deltas() -> None:
    pieces = read_all([message_start(), *tool_stream()])
    assert [p.text for p in pieces if p.text] == ["Let me", " look."]
    assert [call for p in pieces for call in p.tool_calls] == [
        {"index": 0, "id": "toolu_9", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city":'}},
        {"index": 0, "function": {"arguments": ' "Oslo"}'}},
        {"index": 1, "id": "toolu_10", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        {"index": 1, "function": {"arguments": "{}"}},
    ]
    last = pieces[-1]
    assert last.finish_reason == "tool_calls"
    # Input and cache classes from message_start, output from message_delta.
    assert last.usage == Usage(input_tokens=20, output_tokens=31, cache_read_tokens=50, cache_write_tokens=5,
                               cache_write_1h_tokens=3)
    assert all(p.finish_reason is None for p in pieces[:-1])


def empty_tool_use(index: int, use_id: str, stop: bool = True) -> list[tuple[str, str]]:
    """A tool use streamed without input, as Anthropic sends one: a single partial_json ""."""
    events = [event("content_block_start", index=index, content_block={"type": "tool_use", "id": use_id,
                                                                        "name": "get_time", "input": {}}),
              event("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": ""})]
    return [*events, event("content_block_stop", index=index)] if stop else events


def test_a_streamed_tool_use_without_input_gets_the_arguments_of_an_empty_object() -> None:
    closing = [event("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 5}),
               event("message_stop")]
    # The second block never gets its content_block_stop: its "{}" comes with message_stop.
    pieces = read_all([message_start(), *empty_tool_use(0, "toolu_1"), *empty_tool_use(1, "toolu_2", stop=False),
                       *closing])
    calls = [call for p in pieces for call in p.tool_calls]
    assert calls == [
        {"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        {"index": 0, "function": {"arguments": "{}"}},
        {"index": 1, "id": "toolu_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        {"index": 1, "function": {"arguments": "{}"}},
    ]
    assert pieces[-1].finish_reason == "tool_calls" and not pieces[-1].tool_calls
    # Accumulated as the client does, each call's arguments are what the unstreamed answer has.
    unstreamed = read_message(message([{"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}],
                                      "tool_use"), MODEL, 1).tool_calls[0]["function"]["arguments"]
    assert "".join(c["function"]["arguments"] for c in calls if c["index"] == 0) == unstreamed == "{}"


def test_message_delta_counts_are_cumulative_and_replace_message_start() -> None:
    pieces = read_all([
        message_start({"input_tokens": 20, "output_tokens": 1}),
        event("content_block_start", index=0, content_block={"type": "text", "text": "Hi"}),
        event("message_delta", delta={"stop_reason": "max_tokens"},
              usage={"output_tokens": 9, "input_tokens": 25, "cache_read_input_tokens": None}),
        event("message_stop"),
    ])
    assert [p.text for p in pieces] == ["Hi", ""]
    assert (pieces[-1].finish_reason, pieces[-1].usage) == ("length", Usage(input_tokens=25, output_tokens=9))


def test_a_stream_without_an_output_count_reports_no_usage() -> None:
    pieces = read_all([message_start(), event("message_delta", delta={"stop_reason": "end_turn"}),
                       event("message_stop")])
    assert pieces == [StreamPiece(finish_reason="stop", usage=None)]


def test_unknown_events_and_deltas_are_skipped() -> None:
    pieces = read_all([
        message_start(),
        event("content_block_start", index=0, content_block={"type": "thinking", "thinking": ""}),
        event("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "hmm"}),
        event("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "x"}),
        event("a_new_event", anything=1),
        ("another_new_event", "not even JSON"),
        event("content_block_stop", index=0),
        event("content_block_start", index=1, content_block={"type": "text", "text": ""}),
        event("content_block_delta", index=1, delta={"type": "text_delta", "text": "ok"}),
        event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 4}),
        event("message_stop"),
    ])
    assert [p.text for p in pieces] == ["ok", ""]


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [("overloaded_error", FailureKind.UPSTREAM), ("rate_limit_error", FailureKind.RATE_LIMITED),
     ("api_error", FailureKind.UPSTREAM), ("invalid_request_error", FailureKind.UPSTREAM)],
)
def test_an_error_event_mid_stream_raises_while_iterating(error_type: str, kind: FailureKind) -> None:
    key = "sk-ant-secret-123456"
    events = [message_start(), event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
              event("content_block_delta", index=0, delta={"type": "text_delta", "text": "par"}),
              event("error", error={"type": error_type, "message": f"broke, key {key}"})]
    reader = StreamReader(MODEL, key)
    stream = iter(events)
    reader.start(stream)
    pieces = read_pieces(reader, stream, key)
    assert next(pieces).text == "par"
    with pytest.raises(ProviderError) as caught:
        next(pieces)
    assert caught.value.kind is kind
    assert "mid-stream" in caught.value.message and key not in caught.value.message


@pytest.mark.parametrize(
    ("events", "what"),
    [
        ([message_start()], "ended before message_stop"),
        ([message_start(), event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 1})],
         "ended before message_stop"),
        ([message_start(), event("message_stop")], "message_stop came before message_delta"),
        ([message_start(), message_start()], "a second message_start"),
        ([message_start(), event("content_block_delta", index=0, delta={"type": "text_delta", "text": "x"})],
         "never started"),
        ([message_start(), event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
          event("content_block_delta", index=0, delta={"type": "input_json_delta", "partial_json": "{"})],
         "is not tool input"),
        ([message_start(), event("content_block_start", index=0, content_block={"type": "text", "text": 3})],
         "is not a string"),
        ([message_start(), event("content_block_start", content_block={"type": "text", "text": ""})],
         "without a valid index"),
        ([message_start(), ("content_block_start", "{not json")], "a streamed event is not JSON"),
        ([message_start(), event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": "9"})],
         "'usage.output_tokens' is not a non-negative integer"),
    ],
)
def test_a_broken_stream_fails_mid_stream(events: list[tuple[str, str]], what: str) -> None:
    with pytest.raises(ProviderError) as caught:
        read_all(events)
    assert caught.value.kind is FailureKind.UPSTREAM and what in caught.value.message


@pytest.mark.parametrize(
    ("events", "what"),
    [
        ([], "the stream ended before message_start"),
        ([("message_start", "{this is not json")], "a streamed event is not JSON"),
        ([message_start(content=None)], "message_start's 'content' is not an array of blocks"),
        ([message_start(usage={"output_tokens": 1})], "lacks input_tokens"),
        ([event("content_block_start", index=0, content_block={"type": "text", "text": ""})], "not message_start"),
    ],
)
def test_a_stream_broken_before_message_start_fails_at_start(events: list[tuple[str, str]], what: str) -> None:
    with pytest.raises(ProviderError) as caught:
        StreamReader(MODEL).start(iter(events))
    assert caught.value.kind is FailureKind.UPSTREAM and what in caught.value.message


def test_an_error_event_before_message_start_fails_at_start() -> None:
    with pytest.raises(ProviderError) as caught:
        StreamReader(MODEL).start(iter([("ping", "{}"), event("error", error={"type": "overloaded_error",
                                                                              "message": "Overloaded"})]))
    assert caught.value.kind is FailureKind.UPSTREAM and caught.value.status == 529


# ---- errors ----------------------------------------------------------------------------------------


def sdk_error(code: int, error_type: str, error_code: str | None = None, headers: dict[str, str] | None = None,
              message: str = "scripted") -> Exception:
    """The SDK's own exception for a status, built as the SDK builds it (no network)."""
    import anthropic
    import httpx2
    from anthropic._error_classes import make_status_error

    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code:
        error["details"] = {"error_code": error_code}
    body = {"type": "error", "error": error}
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    response = httpx2.Response(code, headers=headers or {}, json=body, request=request)
    exc = make_status_error(f"Error code: {code} - {body}", body=body, response=response)
    assert isinstance(exc, anthropic.APIStatusError)
    return exc


@pytest.mark.parametrize(
    ("code", "error_type", "error_code", "kind", "status"),
    [
        (429, "rate_limit_error", None, FailureKind.RATE_LIMITED, 429),
        (529, "overloaded_error", None, FailureKind.UPSTREAM, 529),
        (429, "rate_limit_error", "enforced_spend_limit_reached", FailureKind.SPEND_LIMIT, 429),
        (429, "rate_limit_error", "contract_spend_limit_reached", FailureKind.SPEND_LIMIT, 429),
        (402, "billing_error", None, FailureKind.SPEND_LIMIT, 402),
        (402, "billing_error", "linked_organization_spend_limit_reached", FailureKind.SPEND_LIMIT, 402),
        (401, "authentication_error", None, FailureKind.AUTH, 401),
        (400, "invalid_request_error", None, FailureKind.BAD_REQUEST, 400),
        (413, "request_too_large", None, FailureKind.TOO_LARGE, 413),
        (403, "permission_error", None, FailureKind.FORBIDDEN, 403),
        (404, "not_found_error", None, FailureKind.NOT_FOUND, 404),
        (408, "timeout_error", None, FailureKind.TIMEOUT, 504),
        (422, "invalid_request_error", None, FailureKind.BAD_REQUEST, 422),
        (500, "api_error", None, FailureKind.UPSTREAM, 500),
        (504, "timeout_error", None, FailureKind.UPSTREAM, 504),
    ],
)
def test_sdk_status_errors_are_translated(code: int, error_type: str, error_code: str | None, kind: FailureKind,
                                          status: int) -> None:
    key = "sk-ant-abcdef-0123456789"
    translated = translate_error(sdk_error(code, error_type, error_code, message=f"bad key {key}"), key)
    assert (translated.kind, translated.status) == (kind, status)
    assert key not in translated.message


def test_retry_after_is_read_for_rate_limits_and_overloads_only_when_usable() -> None:
    assert translate_error(sdk_error(429, "rate_limit_error", headers={"retry-after": "3"}), None).retry_after_s == 3.0
    assert translate_error(sdk_error(529, "overloaded_error", headers={"retry-after-ms": "1500"}), None).retry_after_s == 1.5
    assert translate_error(sdk_error(429, "rate_limit_error", headers={"retry-after": "soon"}), None).retry_after_s is None
    for value in ("-5", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT"):
        assert translate_error(sdk_error(429, "rate_limit_error", headers={"retry-after": value}), None).retry_after_s is None


def test_transport_errors_are_translated_and_programming_errors_are_not() -> None:
    import anthropic
    import httpx2

    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    assert translate_error(anthropic.APITimeoutError(request=request), None).kind is FailureKind.TIMEOUT
    assert translate_error(anthropic.APIConnectionError(request=request), None).kind is FailureKind.CONNECTION
    assert translate_error(httpx2.RemoteProtocolError("incomplete chunked read"), None).kind is FailureKind.UPSTREAM
    assert translate_error(httpx2.ReadError("reset"), None).kind is FailureKind.UPSTREAM
    assert translate_error(httpx2.ReadTimeout("slow"), None).kind is FailureKind.TIMEOUT
    assert translate_error(anthropic.AnthropicError("odd"), None).kind is FailureKind.UPSTREAM
    for error in (KeyError("x"), TypeError("bug"), json.JSONDecodeError("x", "y", 0), httpx2.StreamClosed()):
        with pytest.raises(type(error)):
            translate_error(error, None)


def test_unicode_errors_are_told_apart_by_direction() -> None:
    # Encoding the request fails on the caller's text; decoding a streamed line on Anthropic's bytes.
    encoding = translate_error(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), None)
    decoding = translate_error(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), None)
    assert (encoding.kind, encoding.status) == (FailureKind.BAD_REQUEST, 400)
    assert (decoding.kind, decoding.status, decoding.failover) == (FailureKind.UPSTREAM, 502, True)
    assert "not valid UTF-8" in decoding.message


# ---- the kind in the registry ------------------------------------------------------------------------


def document(provider: dict[str, Any], **model: Any) -> dict[str, Any]:
    entry = {"provider": "claude", "name": "haiku", "quality": 3, "in_cost_per_1k": 0.001, "out_cost_per_1k": 0.005,
             "latency_ms": 500, "max_output_tokens": 4096, "upstream_model": "claude-haiku-4-5", **model}
    return {"providers": {"claude": provider}, "models": [entry]}


def test_the_kind_in_a_registry_document() -> None:
    registry = parse_registry(document({"kind": "anthropic", "api_key": {"env": "K"}, "base_url": "http://127.0.0.1:9",
                                        "timeout_seconds": 12}))
    spec = registry.providers["claude"]
    assert (spec.kind, spec.base_url, spec.timeout_seconds, spec.api_key.describe()) == (
        "anthropic", "http://127.0.0.1:9", 12.0, "env:K")
    assert registry.models[0].upstream == "claude-haiku-4-5"
    assert KIND.common_fields == {"base_url", "api_key", "timeout_seconds"} and KIND.api_key_required
    assert KIND.own_fields == frozenset() and KIND.model_fields == frozenset()


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        (document({"kind": "anthropic"}), "provider 'claude': field 'api_key' is missing"),
        (document({"kind": "anthropic", "api_key": {"env": "K"}, "region": "us-east-1"}), "unknown field 'region'"),
        (document({"kind": "anthropic", "api_key": {"env": "K"}}, max_tokens_field="max_tokens"),
         "unknown field 'max_tokens_field'"),
    ],
)
def test_the_kind_refuses_what_it_does_not_take(doc: dict[str, Any], error: str) -> None:
    with pytest.raises(RegistryError) as caught:
        parse_registry(doc)
    assert error in str(caught.value)


def test_importing_the_adapter_does_not_import_the_sdk() -> None:
    script = (
        "import sys\n"
        "import costroute.providers.anthropic as adapter\n"
        "from costroute.providers import load_kind\n"
        "assert load_kind('anthropic') is adapter.KIND\n"
        "print(sorted(m for m in ('anthropic', 'httpx2') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, cwd=repo_root(), timeout=60,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "src"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
