"""The Bedrock adapter's pure translation: OpenAI requests to Converse, Converse answers and errors back."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from costroute.core.outcome import FailureKind, ProviderError
from costroute.core.registry import Model, RegistryError
from costroute.core.settle import Usage
from costroute.providers.base import ProviderCall, StreamPiece
from costroute.providers.bedrock import (
    TOOL_PROMPT_TOKENS_CLAUDE_4,
    TOOL_PROMPT_TOKENS_LARGEST,
    BedrockSettings,
    asks_one_hour_cache,
    converse_request,
    finish_reason,
    read_response,
    read_usage,
    stream_pieces,
    tool_prompt_overhead,
    translate_error,
    unsupported_params,
)
from costroute.providers.chat_translation import Untranslatable
from tests.registries import parse_registry

HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"
TOOLS: list[dict[str, Any]] = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
WEATHER_SPEC = {"toolSpec": {"name": "get_weather", "description": "Weather now",
                             "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}


def model(upstream: str = HAIKU) -> Model:
    return Model(provider="br", name="m", quality=3, input_cost_per_1k=Decimal("0.001"),
                 output_cost_per_1k=Decimal("0.002"), latency_ms=300, max_output_tokens=1000, upstream_model=upstream)


def request(messages: list[dict[str, Any]], max_tokens: int = 77, **params: Any) -> dict[str, Any]:
    call = ProviderCall(messages=tuple(messages), max_tokens=max_tokens, timeout_s=10, params=params)
    return converse_request(model(), call)


USER = {"role": "user", "content": "hi"}


# ---------------------------------------------------------------------------------------------
# The registry document


def provider_doc(**settings: Any) -> dict[str, Any]:
    return {"providers": {"br": {"kind": "bedrock", **settings}},
            "models": [{"provider": "br", "name": "haiku", "upstream_model": HAIKU, "quality": 3, "in_cost_per_1k": 0.001,
                        "out_cost_per_1k": 0.002, "latency_ms": 300, "max_output_tokens": 1000}]}


def test_settings_parse_region_endpoint_and_timeout() -> None:
    registry = parse_registry(provider_doc(region="eu-west-1", endpoint_url="https://bedrock.example:8443",
                                           timeout_seconds=7))
    spec = registry.providers["br"]
    assert spec.settings == BedrockSettings(region="eu-west-1", endpoint_url="https://bedrock.example:8443")
    assert spec.timeout_seconds == 7.0
    assert registry.by_id["br:haiku"].upstream == HAIKU


def test_settings_default_to_boto3s_own_resolution() -> None:
    assert parse_registry(provider_doc()).providers["br"].settings == BedrockSettings()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"region": "US East"}, "field 'region' must be an AWS region such as 'us-east-1', got 'US East'"),
        ({"region": "useast1"}, "field 'region' must be an AWS region"),
        ({"endpoint_url": "ftp://x"}, "field 'endpoint_url' must be an http or https URL with a host"),
        ({"api_key": {"env": "X"}}, "unknown field 'api_key'"),
        ({"base_url": "https://x"}, "unknown field 'base_url'"),
    ],
)
def test_settings_are_refused_naming_the_field(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistryError) as raised:
        parse_registry(provider_doc(**settings))
    assert message in str(raised.value)
    assert "provider 'br'" in str(raised.value)


@pytest.mark.parametrize("region", ["us-east-1", "eu-central-2", "ap-southeast-4", "us-gov-west-1", "il-central-1"])
def test_real_region_shapes_are_accepted(region: str) -> None:
    assert parse_registry(provider_doc(region=region)).providers["br"].settings.region == region


# ---------------------------------------------------------------------------------------------
# Requests


def test_text_and_max_tokens() -> None:
    body = request([USER], max_tokens=123)
    assert body == {"modelId": HAIKU, "messages": [{"role": "user", "content": [{"text": "hi"}]}],
                    "inferenceConfig": {"maxTokens": 123}}


def test_system_and_developer_messages_become_system_blocks() -> None:
    body = request([{"role": "system", "content": "be brief"}, {"role": "developer", "content": "use metric"}, USER])
    assert body["system"] == [{"text": "be brief"}, {"text": "use metric"}]
    assert body["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]


def test_text_parts_become_content_blocks() -> None:
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    assert request([{"role": "user", "content": parts}])["messages"][0]["content"] == [{"text": "one"}, {"text": "two"}]


def test_cache_control_is_followed_by_a_cache_point_in_system_and_content() -> None:
    body = request([
        {"role": "system", "content": [{"type": "text", "text": "long rules", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": [{"type": "text", "text": "doc", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                                     {"type": "text", "text": "question"}]},
    ])
    assert body["system"] == [{"text": "long rules"}, {"cachePoint": {"type": "default"}}]
    assert body["messages"][0]["content"] == [{"text": "doc"}, {"cachePoint": {"type": "default", "ttl": "1h"}},
                                              {"text": "question"}]
    assert asks_one_hour_cache(body)
    assert not asks_one_hour_cache(request([USER]))


def test_a_cache_ttl_converse_lacks_is_refused() -> None:
    with pytest.raises(Untranslatable, match="'cache_control.ttl' must be '5m' or '1h'"):
        request([{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"ttl": "2d"}}]}])


def test_consecutive_messages_of_one_role_are_merged() -> None:
    body = request([USER, {"role": "user", "content": "again"}, {"role": "assistant", "content": "a"},
                    {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}])
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "hi"}, {"text": "again"}]},
        {"role": "assistant", "content": [{"text": "a"}, {"text": "b"}]},
        {"role": "user", "content": [{"text": "c"}]},
    ]


def test_temperature_top_p_and_stop_go_to_inference_config() -> None:
    assert request([USER], temperature=0.2, top_p=1, stop="END")["inferenceConfig"] == {
        "maxTokens": 77, "temperature": 0.2, "topP": 1, "stopSequences": ["END"]}
    assert request([USER], stop=["a", "b"])["inferenceConfig"]["stopSequences"] == ["a", "b"]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"tool": {"name": "get_weather"}}),
    ],
    ids=["absent", "auto", "required", "named"],
)
def test_tools_and_tool_choice(choice: Any, expected: Any) -> None:
    params: dict[str, Any] = {"tools": TOOLS}
    if choice is not None:
        params["tool_choice"] = choice
    config = request([USER], **params)["toolConfig"]
    assert config["tools"] == [WEATHER_SPEC]
    assert config.get("toolChoice") == expected


def test_strict_is_passed_on_and_an_empty_description_left_out() -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "", "strict": True, "parameters": {}}}]
    assert request([USER], tools=tools)["toolConfig"]["tools"] == [
        {"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object", "properties": {}}}, "strict": True}}]


def test_tool_choice_none_without_tool_history_leaves_the_tools_out() -> None:
    assert "toolConfig" not in request([USER], tools=TOOLS, tool_choice="none")


ROUND_TRIP: list[dict[str, Any]] = [
    USER,
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
    {"role": "user", "content": "and tomorrow?"},
]


def test_tool_calls_and_results_become_tool_use_and_tool_result_blocks() -> None:
    body = request(ROUND_TRIP, tools=TOOLS)
    assert body["messages"] == [
        {"role": "user", "content": [{"text": "hi"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "call_1", "name": "get_weather",
                                                       "input": {"city": "Oslo"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "call_1", "content": [{"text": "12 C"}]}},
                                     {"text": "and tomorrow?"}]},
    ]


@pytest.mark.parametrize(
    ("messages", "params", "message"),
    [
        (ROUND_TRIP, {"tools": TOOLS, "tool_choice": "none"}, "'tool_choice' 'none' has no Bedrock equivalent"),
        (ROUND_TRIP, {}, "'tools' is required"),
        ([{"role": "assistant", "content": "first"}], {}, "must have a user message before the first assistant"),
        ([USER, {"role": "function", "name": "f", "content": "x"}], {}, "'function' (deprecated)"),
        ([USER, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call 1!", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}],
         {"tools": TOOLS}, "the tool call id 'call 1!' is not one Bedrock takes"),
        ([USER], {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "names the function 'nope', which is not in 'tools'"),
    ],
    ids=["none-with-history", "history-without-tools", "assistant-first", "function-role", "tool-id", "unknown-choice"],
)
def test_what_converse_cannot_express_is_refused(messages: list[dict[str, Any]], params: dict[str, Any],
                                                 message: str) -> None:
    with pytest.raises(Untranslatable) as raised:
        request(messages, **params)
    assert message in str(raised.value)


# ---------------------------------------------------------------------------------------------
# Fields that cannot be translated


@pytest.mark.parametrize("name", ["response_format", "logit_bias", "seed", "top_logprobs", "reasoning_effort",
                                  "prediction_tokens", "functions"])
def test_untranslatable_fields_are_refused_by_name(name: str) -> None:
    reason = unsupported_params({name: {"type": "json_object"}, "temperature": 0.5})
    assert reason == f"Bedrock Converse has no equivalent of '{name}', and leaving it out would change the answer or its cost"


def test_several_refused_fields_are_all_named() -> None:
    assert unsupported_params({"seed": 1, "logprobs": True, "presence_penalty": 0.5, "parallel_tool_calls": False}) == (
        "Bedrock Converse has no equivalent of 'logprobs', 'parallel_tool_calls', 'presence_penalty', 'seed', and "
        "leaving them out would change the answer or its cost")


def test_harmless_fields_and_default_values_are_left_out() -> None:
    params: dict[str, Any] = {"user": "u1", "safety_identifier": "s", "store": False, "metadata": {"a": "b"}, "n": 1,
              "prompt_cache_key": "tenant-7",
              "modalities": ["text"], "service_tier": "auto", "logprobs": False, "parallel_tool_calls": True,
              "presence_penalty": 0, "frequency_penalty": 0.0, "temperature": 0, "top_p": 0.9, "stop": ["x"],
              "tools": TOOLS, "tool_choice": "required"}
    assert unsupported_params(params) is None
    assert request([USER], **params)["inferenceConfig"] == {"maxTokens": 77, "temperature": 0, "topP": 0.9,
                                                            "stopSequences": ["x"]}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"service_tier": "flex"}, "no equivalent of 'service_tier'"),
        ({"temperature": 1.5}, "Bedrock Converse takes 'temperature' from 0 to 1, got 1.5"),
        ({"top_p": -0.1}, "Bedrock Converse takes 'top_p' from 0 to 1"),
        ({"temperature": True}, "takes 'temperature' from 0 to 1"),
        ({"stop": [""]}, "no empty 'stop' sequence"),
        ({"stop": 3}, "'stop' must be a string or an array of strings"),
        ({"tool_choice": "required"}, "'tool_choice' asks for a tool call, but the request has no 'tools'"),
        ({"tools": [{"type": "function", "function": {"name": "has.dot"}}]}, "'tools[0].function.name' 'has.dot'"),
        ({"tools": [{"type": "web_search"}]}, "'tools[0]' must be a function tool"),
    ],
)
def test_values_converse_refuses_are_refused(params: dict[str, Any], message: str) -> None:
    reason = unsupported_params(params)
    assert reason is not None and message in reason


def test_given_the_messages_unsupported_names_what_converse_cannot_express() -> None:
    assert unsupported_params({"tools": TOOLS}, ROUND_TRIP) is None
    assert unsupported_params({}, [USER]) is None
    reason = unsupported_params({"tools": TOOLS, "tool_choice": "none"}, ROUND_TRIP)
    assert reason is not None and "'tool_choice' 'none' has no Bedrock equivalent" in reason
    reason = unsupported_params({}, [{"role": "assistant", "content": "first"}])
    assert reason is not None and "must have a user message before the first assistant message" in reason


def test_tool_choice_without_tools_asks_for_nothing() -> None:
    assert unsupported_params({"tool_choice": "none"}) is None
    assert "toolConfig" not in request([USER], tool_choice="auto")


# ---------------------------------------------------------------------------------------------
# Anthropic's tool-use system prompt


@pytest.mark.parametrize(
    ("upstream", "choice", "tokens"),
    [
        (HAIKU, None, TOOL_PROMPT_TOKENS_LARGEST["auto"]),
        (HAIKU, "none", 530),
        (HAIKU, "required", 340),
        ("us.anthropic.claude-3-opus-20240229-v1:0", {"type": "function", "function": {"name": "f"}}, 340),
        ("anthropic.claude-sonnet-4-20250514-v1:0", "auto", TOOL_PROMPT_TOKENS_CLAUDE_4["auto"]),
        ("us.anthropic.claude-opus-4-1-20250805-v1:0", "required", 313),
        ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-haiku-4-5-20251001-v1:0",
         None, 346),
        ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3", None, 530),
        ("meta.llama3-1-70b-instruct-v1:0", "auto", 0),
        ("amazon.nova-pro-v1:0", "required", 0),
    ],
)
def test_prompt_overhead(upstream: str, choice: Any, tokens: int) -> None:
    params: dict[str, Any] = {"tools": TOOLS}
    if choice is not None:
        params["tool_choice"] = choice
    assert tool_prompt_overhead(upstream, params) == tokens


def test_no_tools_no_overhead() -> None:
    assert tool_prompt_overhead(HAIKU, {}) == 0
    assert tool_prompt_overhead(HAIKU, {"tools": []}) == 0


@pytest.mark.parametrize(("upstream", "prompt"), [(HAIKU, 530), ("meta.llama3-1-70b-instruct-v1:0", 0)],
                         ids=["anthropic", "other"])
def test_prompt_overhead_covers_tools_that_grow_in_translation(upstream: str, prompt: int) -> None:
    # A function without parameters is sent with an object schema: the toolSpec is longer than the OpenAI JSON.
    bare = [{"type": "function", "function": {"name": f"f{index}"}} for index in range(20)]
    counted = len(json.dumps(bare).encode())
    sent = len(json.dumps(request([USER], tools=bare)["toolConfig"]["tools"], ensure_ascii=False).encode())
    assert sent > counted
    assert tool_prompt_overhead(upstream, {"tools": bare}) == prompt + sent - counted
    # A tool whose Converse form is shorter adds nothing beyond the system prompt.
    assert tool_prompt_overhead(upstream, {"tools": TOOLS}) == prompt


# ---------------------------------------------------------------------------------------------
# Answers


def answer(content: list[Any], stop: str = "end_turn", usage: Any = None) -> dict[str, Any]:
    return {"ResponseMetadata": {"HTTPStatusCode": 200},
            "output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
            "usage": usage if usage is not None else {"inputTokens": 10, "outputTokens": 3, "totalTokens": 13}}


def test_a_text_answer() -> None:
    completion = read_response(answer([{"text": "Hello "}, {"text": "there"}]), model(), 12.5)
    assert (completion.text, completion.finish_reason, completion.latency_ms) == ("Hello there", "stop", 12.5)
    assert completion.usage == Usage(input_tokens=10, output_tokens=3)
    assert completion.tool_calls == ()


def test_tool_use_answers_as_tool_calls() -> None:
    content = [{"text": "Checking."}, {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Oslo"}}}]
    completion = read_response(answer(content, "tool_use"), model(), 1)
    assert completion.finish_reason == "tool_calls"
    assert completion.text == "Checking."
    assert completion.tool_calls == ({"id": "tooluse_1", "type": "function",
                                      "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},)


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("model_context_window_exceeded", "length"),
     ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter"), ("some_future_reason", "stop")],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    assert finish_reason(stop, model()) == finish
    assert read_response(answer([{"text": "x"}], stop), model(), 1).finish_reason == finish


@pytest.mark.parametrize("stop", ["malformed_model_output", "malformed_tool_use"])
def test_a_broken_answer_is_an_upstream_failure(stop: str) -> None:
    with pytest.raises(ProviderError) as raised:
        read_response(answer([{"text": "x"}], stop), model(), 1)
    assert raised.value.kind is FailureKind.UPSTREAM and raised.value.failover
    assert stop in raised.value.message


def test_cache_counts_are_beside_input_tokens() -> None:
    usage = {"inputTokens": 7, "outputTokens": 3, "totalTokens": 130, "cacheReadInputTokens": 100,
             "cacheWriteInputTokens": 20}
    assert read_usage(usage, model()) == Usage(input_tokens=7, output_tokens=3, cache_read_tokens=100,
                                               cache_write_tokens=20)


def test_cache_details_split_one_hour_writes() -> None:
    usage = {"inputTokens": 7, "outputTokens": 3, "totalTokens": 40, "cacheWriteInputTokens": 30,
             "cacheDetails": [{"ttl": "1h", "inputTokens": 25}, {"ttl": "5m", "inputTokens": 5}]}
    assert read_usage(usage, model()) == Usage(input_tokens=7, output_tokens=3, cache_write_tokens=5,
                                               cache_write_1h_tokens=25)


@pytest.mark.parametrize(("one_hour_cache", "five", "hour"), [(True, 5, 25), (False, 25, 5)],
                         ids=["one-hour-asked", "not-asked"])
def test_writes_the_cache_details_leave_out_take_the_ttl_asked_for(one_hour_cache: bool, five: int, hour: int) -> None:
    # 30 written, 10 of them split (5 of each TTL): the other 20 are 1-hour writes when a 1-hour cache was asked for.
    usage = {"inputTokens": 7, "outputTokens": 3, "totalTokens": 40, "cacheWriteInputTokens": 30,
             "cacheDetails": [{"ttl": "1h", "inputTokens": 5}, {"ttl": "5m", "inputTokens": 5}]}
    assert read_usage(usage, model(), one_hour_cache=one_hour_cache) == Usage(
        input_tokens=7, output_tokens=3, cache_write_tokens=five, cache_write_1h_tokens=hour)


def test_one_hour_writes_without_details_are_priced_as_one_hour() -> None:
    usage = {"inputTokens": 7, "outputTokens": 3, "totalTokens": 40, "cacheWriteInputTokens": 30}
    assert read_usage(usage, model(), one_hour_cache=True) == Usage(input_tokens=7, output_tokens=3,
                                                                     cache_write_1h_tokens=30)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        ({"ResponseMetadata": {"HTTPStatusCode": 200}}, "no 'output.message'"),
        ({"output": {"message": "text"}}, "no 'output.message'"),
        ({"output": {"message": {"content": "hi"}}}, "'output.message.content' is not an array"),
        (answer(["hi"]), "a content block is not an object"),
        (answer([{"text": 3}]), "a 'text' block is not a string"),
        (answer([{"toolUse": {"name": "f", "input": {}}}], "tool_use"), "lacks a string toolUseId"),
        (answer([{"text": "x"}], "tool_use"), "stopReason 'tool_use' without a toolUse block"),
        ({**answer([{"text": "x"}]), "stopReason": None}, "'stopReason' is not a string"),
        ({**answer([{"text": "x"}]), "usage": None}, "'usage' is missing"),
        (answer([{"text": "x"}], usage={"inputTokens": "10", "outputTokens": 3}), "'usage.inputTokens'"),
        (answer([{"text": "x"}], usage={"inputTokens": 10, "outputTokens": -1}), "'usage.outputTokens'"),
        (answer([{"text": "x"}], usage={"inputTokens": True, "outputTokens": 1}), "'usage.inputTokens'"),
        (answer([{"text": "x"}], usage={"inputTokens": 1, "outputTokens": 1, "cacheReadInputTokens": 1.5}),
         "'usage.cacheReadInputTokens'"),
        (answer([{"text": "x"}], usage={"inputTokens": 1, "outputTokens": 1, "cacheWriteInputTokens": 1,
                                        "cacheDetails": [{"ttl": "1h", "inputTokens": 5}]}), "counts more tokens"),
    ],
)
def test_malformed_answers_are_upstream_failures(data: Any, what: str) -> None:
    with pytest.raises(ProviderError) as raised:
        read_response(data, model(), 1)
    assert raised.value.kind is FailureKind.UPSTREAM and raised.value.status == 502
    assert what in raised.value.message


def test_reasoning_blocks_are_not_passed_on() -> None:
    content = [{"reasoningContent": {"reasoningText": {"text": "hmm"}}}, {"text": "42"}]
    assert read_response(answer(content), model(), 1).text == "42"


# ---------------------------------------------------------------------------------------------
# Streams

METADATA = {"metadata": {"usage": {"inputTokens": 9, "outputTokens": 2, "totalTokens": 11}, "metrics": {"latencyMs": 5}}}


def test_stream_text_then_finish_and_usage_last() -> None:
    events = [{"messageStart": {"role": "assistant"}},
              {"contentBlockDelta": {"delta": {"text": "Hel"}, "contentBlockIndex": 0}},
              {"contentBlockDelta": {"delta": {"text": "lo"}, "contentBlockIndex": 0}},
              {"contentBlockStop": {"contentBlockIndex": 0}},
              {"messageStop": {"stopReason": "max_tokens"}}, METADATA]
    assert list(stream_pieces(events, model())) == [
        StreamPiece(text="Hel"), StreamPiece(text="lo"),
        StreamPiece(finish_reason="length", usage=Usage(input_tokens=9, output_tokens=2))]


def test_stream_tool_use_becomes_openai_tool_call_deltas() -> None:
    events = [{"messageStart": {"role": "assistant"}},
              {"contentBlockDelta": {"delta": {"text": "Let me see."}, "contentBlockIndex": 0}},
              {"contentBlockStop": {"contentBlockIndex": 0}},
              {"contentBlockStart": {"start": {"toolUse": {"toolUseId": "t1", "name": "get_weather"}}, "contentBlockIndex": 1}},
              {"contentBlockDelta": {"delta": {"toolUse": {"input": '{"city": '}}, "contentBlockIndex": 1}},
              {"contentBlockDelta": {"delta": {"toolUse": {"input": '"Oslo"}'}}, "contentBlockIndex": 1}},
              {"contentBlockStop": {"contentBlockIndex": 1}},
              {"contentBlockStart": {"start": {"toolUse": {"toolUseId": "t2", "name": "f"}}, "contentBlockIndex": 2}},
              {"contentBlockDelta": {"delta": {"toolUse": {"input": "{}"}}, "contentBlockIndex": 2}},
              {"messageStop": {"stopReason": "tool_use"}}, METADATA]
    pieces = list(stream_pieces(events, model()))
    assert [piece.tool_calls for piece in pieces[1:-1]] == [
        ({"index": 0, "id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": ""}},),
        ({"index": 0, "function": {"arguments": '{"city": '}},),
        ({"index": 0, "function": {"arguments": '"Oslo"}'}},),
        ({"index": 1, "id": "t2", "type": "function", "function": {"name": "f", "arguments": ""}},),
        ({"index": 1, "function": {"arguments": "{}"}},),
    ]
    assert pieces[0] == StreamPiece(text="Let me see.")
    assert pieces[-1].finish_reason == "tool_calls"


def test_a_streamed_tool_use_without_input_gets_the_arguments_of_an_empty_object() -> None:
    def start(index: int) -> dict[str, Any]:
        return {"contentBlockStart": {"start": {"toolUse": {"toolUseId": f"t{index}", "name": "f"}},
                                      "contentBlockIndex": index}}

    # t0: no delta at all; t1: an empty delta; t2: no delta and no contentBlockStop (its "{}" comes with metadata).
    events = [{"messageStart": {"role": "assistant"}},
              start(0), {"contentBlockStop": {"contentBlockIndex": 0}},
              start(1), {"contentBlockDelta": {"delta": {"toolUse": {"input": ""}}, "contentBlockIndex": 1}},
              {"contentBlockStop": {"contentBlockIndex": 1}},
              start(2), {"messageStop": {"stopReason": "tool_use"}}, METADATA]
    pieces = list(stream_pieces(events, model()))
    arguments = {0: "", 1: "", 2: ""}
    for piece in pieces:
        for call in piece.tool_calls:
            arguments[call["index"]] += call["function"]["arguments"]
    unstreamed = read_response(answer([{"toolUse": {"toolUseId": "t0", "name": "f", "input": {}}}], "tool_use"),
                               model(), 1).tool_calls[0]["function"]["arguments"]
    assert arguments == {0: unstreamed, 1: unstreamed, 2: unstreamed} and unstreamed == "{}"
    assert pieces[-1].finish_reason == "tool_calls" and not pieces[-1].tool_calls


@pytest.mark.parametrize(
    ("events", "what"),
    [
        ([{"messageStart": {"role": "assistant"}}, {"contentBlockDelta": {"delta": {"text": "x"}, "contentBlockIndex": 0}}],
         "ended without messageStop and metadata"),
        ([{"messageStop": {"stopReason": "end_turn"}}], "ended without metadata"),
        ([METADATA], "metadata came before messageStop"),
        ([{"messageStop": {"stopReason": "end_turn"}}, {"metadata": {"metrics": {}}}], "'usage' is missing"),
        ([{"contentBlockDelta": {"delta": {"toolUse": {"input": "{}"}}, "contentBlockIndex": 3}}], "no tool use was started"),
        (["not an event"], "not an object with one member"),
        ([{"messageStop": {"stopReason": "malformed_tool_use"}}], "produced no usable answer"),
    ],
)
def test_broken_streams_raise_while_iterating(events: list[Any], what: str) -> None:
    with pytest.raises(ProviderError) as raised:
        list(stream_pieces(events, model()))
    assert raised.value.kind is FailureKind.UPSTREAM
    assert what in raised.value.message


# ---------------------------------------------------------------------------------------------
# Errors


def client_error(code: str, status: int | None, message: str = "it went wrong.", stream: bool = False) -> Exception:
    from botocore.exceptions import ClientError, EventStreamError

    response: dict[str, Any] = {"Error": {"Code": code, "Message": message}}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status, "HTTPHeaders": {}}
    return (EventStreamError if stream else ClientError)(response, "ConverseStream" if stream else "Converse")


def translated(exc: Exception, action: str = "bedrock:InvokeModel") -> ProviderError:
    return translate_error(exc, model(), "eu-west-1", action)


@pytest.mark.parametrize(
    ("code", "status", "kind", "failover"),
    [
        ("ThrottlingException", 429, FailureKind.RATE_LIMITED, True),
        ("ServiceUnavailableException", 503, FailureKind.UPSTREAM, True),
        ("InternalServerException", 500, FailureKind.UPSTREAM, True),
        ("ModelNotReadyException", 429, FailureKind.UPSTREAM, True),
        ("ModelErrorException", 424, FailureKind.UPSTREAM, True),
        ("ModelTimeoutException", 408, FailureKind.TIMEOUT, True),
        ("ValidationException", 400, FailureKind.BAD_REQUEST, False),
        ("AccessDeniedException", 403, FailureKind.FORBIDDEN, False),
        ("ResourceNotFoundException", 404, FailureKind.NOT_FOUND, False),
        ("UnrecognizedClientException", 403, FailureKind.AUTH, False),
        ("SomethingNewException", 503, FailureKind.UPSTREAM, True),
        ("SomethingNewException", 429, FailureKind.RATE_LIMITED, True),
        ("SomethingNewException", 409, FailureKind.BAD_REQUEST, False),
    ],
)
def test_client_errors(code: str, status: int, kind: FailureKind, failover: bool) -> None:
    error = translated(client_error(code, status))
    assert (error.kind, error.status, error.failover) == (kind, status, failover)


def test_access_denied_names_the_permission_model_and_region_but_not_the_role() -> None:
    aws_text = "User: arn:aws:sts::123456789012:assumed-role/RouterRole/fn is not authorized to perform bedrock:InvokeModel"
    error = translated(client_error("AccessDeniedException", 403, aws_text), "bedrock:InvokeModelWithResponseStream")
    assert error.message.startswith(f"Bedrock refused access (AccessDeniedException): the function's role may not call "
                                    f"bedrock:InvokeModelWithResponseStream on {HAIKU} in eu-west-1")
    assert "template.yaml's BedrockFoundationModelIds" in error.message
    assert "123456789012" not in error.message and "RouterRole" not in error.message


def test_not_found_names_the_model_and_region() -> None:
    error = translated(client_error("ResourceNotFoundException", 404, "Model not found."))
    assert error.message == (f"Bedrock has no model {HAIKU} in eu-west-1: enable model access or check the id "
                             "(ResourceNotFoundException: Model not found)")


def test_validation_passes_bedrocks_words_on() -> None:
    error = translated(client_error("ValidationException", 400, "messages.0.content.0.text is blank."))
    assert error.message == "Bedrock error for br:m (ValidationException): messages.0.content.0.text is blank"


@pytest.mark.parametrize(
    ("code", "kind"),
    [("throttlingException", FailureKind.RATE_LIMITED), ("modelStreamErrorException", FailureKind.UPSTREAM),
     ("internalServerException", FailureKind.UPSTREAM), ("serviceUnavailableException", FailureKind.UPSTREAM),
     ("validationException", FailureKind.BAD_REQUEST), ("", FailureKind.UPSTREAM)],
)
def test_in_stream_exceptions_are_named_by_their_lower_camel_code(code: str, kind: FailureKind) -> None:
    error = translated(client_error(code, None, "" if not code else "x", stream=True))
    assert error.kind is kind
    if not code:
        assert "an exception botocore could not name" in error.message


def test_botocore_and_urllib3_errors() -> None:
    from botocore.eventstream import ChecksumMismatch
    from botocore.exceptions import (
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        ProfileNotFound,
        ReadTimeoutError,
    )
    from urllib3.exceptions import ProtocolError
    from urllib3.exceptions import ReadTimeoutError as RawReadTimeout

    url = "https://bedrock-runtime.eu-west-1.amazonaws.com"
    cases: list[tuple[Exception, FailureKind]] = [
        (ReadTimeoutError(endpoint_url=url), FailureKind.TIMEOUT),
        (ConnectTimeoutError(endpoint_url=url), FailureKind.TIMEOUT),
        (RawReadTimeout(None, url, "Read timed out."), FailureKind.TIMEOUT),
        (EndpointConnectionError(endpoint_url=url), FailureKind.CONNECTION),
        (ProtocolError("Response ended prematurely"), FailureKind.CONNECTION),
        (ChecksumMismatch(1, 2), FailureKind.UPSTREAM),
        (NoCredentialsError(), FailureKind.KEY_UNAVAILABLE),
        (ProfileNotFound(profile="nope"), FailureKind.KEY_UNAVAILABLE),
        (NoRegionError(), FailureKind.UPSTREAM),
        (ParamValidationError(report="Invalid length for parameter modelId"), FailureKind.BAD_REQUEST),
    ]
    for exc, kind in cases:
        assert translated(exc).kind is kind, type(exc).__name__


def test_unicode_errors_are_told_apart_by_direction() -> None:
    # botocore decodes Bedrock's bytes as strict UTF-8: a failure there is Bedrock's malformed answer.
    decoding = translated(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    encoding = translated(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
    assert (decoding.kind, decoding.status, decoding.failover) == (FailureKind.UPSTREAM, 502, True)
    assert "not valid UTF-8" in decoding.message
    assert (encoding.kind, encoding.status) == (FailureKind.BAD_REQUEST, 400)


@pytest.mark.parametrize("exc", [KeyError("oops"), TypeError("bad call"), ValueError("no")])
def test_programming_errors_are_not_swallowed(exc: Exception) -> None:
    with pytest.raises(type(exc)):
        translated(exc)


def test_messages_never_carry_a_key_shaped_text() -> None:
    error = translated(client_error("ValidationException", 400, "bad value sk-live-0123456789abcdef here"))
    assert "sk-live-0123456789abcdef" not in error.message
    assert json.dumps(error.message)
