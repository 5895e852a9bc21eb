"""Self-test of tests/fakes/fake_anthropic.py, driven by the real anthropic SDK over loopback."""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic import Anthropic, Omit
from anthropic.types import (
    InputJSONDelta,
    Message,
    MessageParam,
    RawContentBlockDeltaEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStreamEvent,
    TextBlock,
    TextBlockParam,
    TextDelta,
    ToolParam,
    ToolUseBlock,
)

from tests.fakes.fake_anthropic import (
    TOOL_USE_SYSTEM_PROMPT_TOKENS_ANY,
    TOOL_USE_SYSTEM_PROMPT_TOKENS_AUTO,
    Behaviour,
    FakeAnthropic,
    RecordedRequest,
    count_input_tokens,
    cut_stream,
    invalid_message,
    invalid_utf8,
    malformed,
    ok,
    refusal,
    reply,
    slow,
    spend_all,
    status,
    stream_error,
    tool_use,
    validation_error,
)

KEY = "sk-ant-test-0123456789abcdef"
MODEL = "claude-sonnet-4-5"
HI: list[MessageParam] = [{"role": "user", "content": "hi"}]
WEATHER_TOOLS: list[ToolParam] = [
    {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def _bytes(value: Any) -> int:
    """UTF-8 size of a string, or of the fake's canonical JSON of any other value."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return len(text.encode("utf-8"))


@pytest.fixture(autouse=True)
def _sdk_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep ANTHROPIC_CUSTOM_HEADERS from adding headers to what the SDK sends."""
    monkeypatch.delenv("ANTHROPIC_CUSTOM_HEADERS", raising=False)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    """A running fake server, closed after the test."""
    with FakeAnthropic(api_key=KEY) as server:
        yield server


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[Anthropic]:
    """A real SDK client pointed at the fake, without retries."""
    sdk = Anthropic(api_key=KEY, base_url=fake.base_url, max_retries=0)
    yield sdk
    sdk.close()


def _ask(client: Anthropic, text: str = "hello world", max_tokens: int = 64, **kwargs: Any) -> Message:
    """One non-streamed message with a single user turn."""
    return client.messages.create(
        model=MODEL, max_tokens=max_tokens, messages=[{"role": "user", "content": text}], **kwargs
    )


def _text(message: Message, index: int = 0) -> str:
    """The text of one content block, which must be a text block."""
    block = message.content[index]
    assert isinstance(block, TextBlock)
    return block.text


def _deltas(events: Iterable[RawMessageStreamEvent]) -> list[str]:
    """The text of the text deltas among raw stream events (consuming them)."""
    return [e.delta.text for e in events if isinstance(e, RawContentBlockDeltaEvent) and isinstance(e.delta, TextDelta)]


def _post(client: Anthropic, body: dict[str, Any]) -> Message:
    """POST a raw body to /v1/messages through the SDK (for bodies its typed signature would not build)."""
    return client.post("/v1/messages", cast_to=Message, body=body)


# ---- basics ------------------------------------------------------------------------------------


def test_urls_are_loopback_roots(fake: FakeAnthropic) -> None:
    """The fake binds 127.0.0.1 on an ephemeral port; base_url is the root the SDK appends /v1/messages to."""
    assert fake.port > 0
    assert fake.url == fake.base_url == f"http://127.0.0.1:{fake.port}"


def test_ok_answer_and_exact_usage(client: Anthropic) -> None:
    """ok() echoes model and last user text; usage follows the documented byte rules."""
    resp = client.messages.create(
        model=MODEL,
        max_tokens=64,
        system="Be brief.",
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
            {"role": "user", "content": "héllo wörld"},
        ],
    )
    assert resp.id.startswith("msg_fake_")
    assert (resp.type, resp.role, resp.model) == ("message", "assistant", MODEL)
    assert [block.type for block in resp.content] == ["text"]
    assert resp.content[0].type == "text" and _text(resp) == f"[FAKE-ANTHROPIC:{MODEL}] héllo wörld"
    assert (resp.stop_reason, resp.stop_sequence, resp.stop_details) == ("end_turn", None, None)
    usage = resp.usage
    # system 9 bytes; messages 5 + 2 + 13 ("héllo wörld" is 13 UTF-8 bytes); 4 per message; 3
    assert usage.input_tokens == 9 + (5 + 2 + 13) + 4 * 3 + 3
    assert usage.output_tokens == 3
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (0, 0)
    assert usage.cache_creation is not None
    assert (usage.cache_creation.ephemeral_5m_input_tokens, usage.cache_creation.ephemeral_1h_input_tokens) == (0, 0)


def test_count_input_tokens_rules() -> None:
    """System blocks, text, tool_use input JSON and tool_result text count; images do not; tools add JSON + prompt."""
    tool_input = {"city": "Zürich"}
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "ab"}, {"type": "image", "source": {"type": "url", "url": "u"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": tool_input}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                {"type": "text", "text": "€"},
            ],
        },
    ]
    body: dict[str, Any] = {"system": [{"type": "text", "text": "sys"}], "messages": messages}
    plain = 3 + (2 + _bytes(tool_input) + 5 + 3) + 4 * 3 + 3
    assert count_input_tokens(body) == plain
    assert count_input_tokens({**body, "tools": WEATHER_TOOLS}) == plain + _bytes(WEATHER_TOOLS) + 346
    any_tool = {**body, "tools": WEATHER_TOOLS, "tool_choice": {"type": "tool", "name": "get_weather"}}
    assert count_input_tokens(any_tool) == plain + _bytes(WEATHER_TOOLS) + 313
    assert count_input_tokens({**body, "tools": [], "tool_choice": {"type": "none"}}) == plain
    assert (TOOL_USE_SYSTEM_PROMPT_TOKENS_AUTO, TOOL_USE_SYSTEM_PROMPT_TOKENS_ANY) == (346, 313)


def test_queue_is_fifo_then_default(fake: FakeAnthropic, client: Anthropic) -> None:
    """Queued behaviours are used once each, in order, then the default applies."""
    fake.enqueue(reply("first"), reply("second"))
    fake.set_default(reply("default"))
    got = [_text(_ask(client)) for _ in range(4)]
    assert got == ["first", "second", "default", "default"]
    assert fake.queued == 0


# ---- authentication and headers ----------------------------------------------------------------


def test_bearer_and_x_api_key_are_both_accepted(fake: FakeAnthropic, client: Anthropic) -> None:
    """The SDK sends api_key as Bearer; a client sending only x-api-key is accepted as well."""
    assert _ask(client).stop_reason == "end_turn"
    assert _ask(client, extra_headers={"x-api-key": KEY, "Authorization": Omit()}).stop_reason == "end_turn"
    bearer, keyed_request = fake.message_requests
    assert bearer.headers["authorization"] == f"Bearer {KEY}" and "x-api-key" not in bearer.headers
    assert keyed_request.headers["x-api-key"] == KEY and "authorization" not in keyed_request.headers


@pytest.mark.parametrize("form", ["bearer", "x-api-key", "none"])
def test_bad_or_missing_key_is_401_without_echo(fake: FakeAnthropic, form: str) -> None:
    """A wrong or missing key raises AuthenticationError that never echoes a key, and consumes nothing."""
    bad_key = "sk-ant-wrong-SECRET-987654321"
    headers: dict[str, str | Omit] = {} if form == "bearer" else {"Authorization": Omit()}
    if form == "x-api-key":
        headers["x-api-key"] = bad_key
    fake.enqueue(reply("kept"))
    with (
        Anthropic(api_key=bad_key if form == "bearer" else "unused", base_url=fake.base_url, max_retries=0) as bad,
        pytest.raises(anthropic.AuthenticationError) as info,
    ):
        _ask(bad, extra_headers=headers)
    exc = info.value
    assert exc.status_code == 401 and exc.type == "authentication_error"
    assert bad_key not in exc.response.text and KEY not in exc.response.text
    assert exc.api_message == ("x-api-key header is required" if form == "none" else "invalid x-api-key")
    assert fake.queued == 1


def test_missing_anthropic_version_is_400(fake: FakeAnthropic, client: Anthropic) -> None:
    """Without anthropic-version the request is refused, naming the header; the SDK normally sends 2026-10-21."""
    with pytest.raises(anthropic.BadRequestError) as info:
        _ask(client, extra_headers={"anthropic-version": Omit()})
    assert info.value.type == "invalid_request_error"
    assert info.value.api_message == "anthropic-version: header is required"
    _ask(client)
    without, with_version = fake.message_requests
    assert without.anthropic_version is None
    assert with_version.anthropic_version == "2026-10-21"


# ---- validation --------------------------------------------------------------------------------

_TOOL_USE_TURN = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {}}]}


def _result(tool_use_id: str) -> dict[str, Any]:
    """A user turn answering one tool use."""
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use_id, "content": "sunny"}]}


def _cached_text(n: int) -> list[dict[str, Any]]:
    """``n`` text blocks, each with a cache breakpoint."""
    return [{"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}} for i in range(n)]


_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("consecutive-user", {"messages": [*HI, *HI]}, 'found multiple "user" roles in a row'),
    (
        "consecutive-assistant",
        {"messages": [*HI, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]},
        'found multiple "assistant" roles in a row',
    ),
    ("system-role", {"messages": [{"role": "system", "content": "Be brief."}, *HI]}, 'messages.0.role: Unexpected role "system"'),
    ("first-assistant", {"messages": [{"role": "assistant", "content": "a"}, *HI]}, 'first message must use the "user" role'),
    ("unknown-role", {"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role:"),
    ("stop", {"stop": ["x"]}, "stop: Extra inputs are not permitted"),
    ("max_completion_tokens", {"max_completion_tokens": 5}, "max_completion_tokens: Extra inputs are not permitted"),
    ("n", {"n": 2}, "n: Extra inputs are not permitted"),
    ("thinking", {"thinking": {"type": "adaptive"}}, "thinking: Extra inputs are not permitted"),
    ("max_tokens-missing", {"max_tokens": None}, "max_tokens: Field required"),
    ("max_tokens-zero", {"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
    ("max_tokens-string", {"max_tokens": "16"}, "max_tokens: Input should be a valid integer"),
    ("model-not-string", {"model": 4}, "model:"),
    ("messages-empty", {"messages": []}, "messages: at least one message is required"),
    ("content-empty", {"messages": [{"role": "user", "content": ""}]}, "messages.0: all messages must have non-empty content"),
    ("text-block-empty", {"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}, "text content blocks must be non-empty"),
    ("block-type", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages.0.content.0.type:"),
    (
        "tool_result-unmatched",
        {"messages": [*HI, _TOOL_USE_TURN, _result("toolu_B")]},
        "messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_B",
    ),
    ("tool_result-without-tool_use", {"messages": [_result("toolu_A")]}, "unexpected `tool_use_id`"),
    (
        "tool_use-unanswered",
        {"messages": [*HI, _TOOL_USE_TURN, {"role": "user", "content": "and?"}]},
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_A",
    ),
    ("tool_use-in-user", {"messages": [{"role": "user", "content": _TOOL_USE_TURN["content"]}]}, "`tool_use` blocks can only be in `assistant`"),
    (
        "tool_result-in-assistant",
        {"messages": [*HI, {"role": "assistant", "content": _result("x")["content"]}]},
        "`tool_result` blocks can only be in `user`",
    ),
    ("tool_choice-openai-type", {"tools": WEATHER_TOOLS, "tool_choice": {"type": "required"}}, "tool_choice.type:"),
    ("tool_choice-string", {"tools": WEATHER_TOOLS, "tool_choice": "auto"}, "tool_choice: Input should be a valid dictionary"),
    ("tool_choice-unknown-tool", {"tools": WEATHER_TOOLS, "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name:"),
    ("tool_choice-any-without-tools", {"tool_choice": {"type": "any"}}, "tool_choice: tool_choice may only be specified"),
    (
        "tool-openai-shape",
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        "tools.0.type: Input should be 'custom'",
    ),
    ("tool-no-schema", {"tools": [{"name": "f"}]}, "tools.0.input_schema: Field required"),
    ("tool-duplicate", {"tools": WEATHER_TOOLS * 2}, "tools: Tool names must be unique."),
    (
        "cache-ttl",
        {"system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "10m"}}]},
        "system.0.cache_control.ttl:",
    ),
    ("cache-breakpoints", {"system": _cached_text(5)}, "A maximum of 4 blocks with cache_control may be provided. Found 5."),
    ("system-dict", {"system": {"text": "s"}}, "system: Input should be a valid string or a list of text blocks"),
    ("stop_sequences-string", {"stop_sequences": "x"}, "stop_sequences:"),
    ("metadata-extra", {"metadata": {"user_id": "u", "foo": 1}}, "metadata.foo: Extra inputs are not permitted"),
    ("stream-not-bool", {"stream": "yes"}, "stream: Input should be a valid boolean"),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in _REFUSALS], ids=[c[0] for c in _REFUSALS])
def test_validation_refusals(fake: FakeAnthropic, client: Anthropic, change: dict[str, Any], expected: str) -> None:
    """Each invalid body is a 400 invalid_request_error naming the field, and consumes no behaviour."""
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 16, "messages": HI}
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    fake.enqueue(reply("kept"))
    with pytest.raises(anthropic.BadRequestError) as info:
        _post(client, body)
    exc = info.value
    assert exc.type == "invalid_request_error"
    assert exc.api_message is not None and expected in exc.api_message
    assert isinstance(exc.body, dict) and exc.body["request_id"] == exc.request_id
    assert validation_error(body) == exc.api_message
    assert fake.queued == 1


@pytest.mark.parametrize("field", ["temperature", "top_p", "top_k"])
def test_sampling_parameters_are_refused(client: Anthropic, field: str) -> None:
    """temperature/top_p/top_k (no longer SDK keywords) sent with extra_body are refused by name."""
    with pytest.raises(anthropic.BadRequestError) as info:
        _ask(client, extra_body={field: 1})
    assert info.value.api_message == f"{field}: Extra inputs are not permitted"


def test_valid_tool_round_trip_and_prefill_are_accepted(client: Anthropic) -> None:
    """tool_use answered by a matching tool_result is accepted, as is an empty final assistant prefill."""
    messages: list[Any] = [*HI, _TOOL_USE_TURN, _result("toolu_A"), {"role": "assistant", "content": ""}]
    resp = client.messages.create(model=MODEL, max_tokens=16, messages=messages, tools=WEATHER_TOOLS)
    expected = 3 + (2 + _bytes({}) + 5 + 0) + 4 * 4 + _bytes(WEATHER_TOOLS) + TOOL_USE_SYSTEM_PROMPT_TOKENS_AUTO
    assert resp.usage.input_tokens == expected


def test_bad_json_body_and_unknown_paths(fake: FakeAnthropic, client: Anthropic) -> None:
    """A non-JSON body is a 400; other paths and GETs are 404 not_found_error; all are recorded."""
    with pytest.raises(anthropic.NotFoundError) as info:
        client.post("/v1/complete", cast_to=Message, body={"prompt": "x"})
    assert info.value.type == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        client.get("/v1/models", cast_to=object)
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=2)
    try:
        conn.request("POST", "/v1/messages", body=b"not json", headers={"x-api-key": KEY, "anthropic-version": "2026-10-21"})
        resp = conn.getresponse()
        error = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 400
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert [(r.method, r.path) for r in fake.requests] == [("POST", "/v1/complete"), ("GET", "/v1/models"), ("POST", "/v1/messages")]
    assert len(fake.message_requests) == 1 and fake.message_requests[0].body is None


# ---- answers -----------------------------------------------------------------------------------


def test_reply_cut_by_max_tokens(fake: FakeAnthropic, client: Anthropic) -> None:
    """A reply longer than max_tokens is cut after that many words, keeping spacing, with stop_reason max_tokens."""
    fake.enqueue(reply("one two  three four five"))
    resp = _ask(client, max_tokens=3)
    assert _text(resp) == "one two  three"
    assert resp.stop_reason == "max_tokens" and resp.usage.output_tokens == 3


def test_spend_all_uses_exactly_max_tokens(fake: FakeAnthropic, client: Anthropic) -> None:
    """spend_all() answers max_tokens words "tok", non-streamed and streamed."""
    fake.enqueue(spend_all(), spend_all())
    resp = _ask(client, max_tokens=7)
    assert _text(resp) == " ".join(["tok"] * 7)
    assert resp.stop_reason == "max_tokens" and resp.usage.output_tokens == 7
    with client.messages.stream(model=MODEL, max_tokens=3, messages=HI) as stream:
        final = stream.get_final_message()
    assert _text(final) == "tok tok tok"
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 3


def test_stop_sequences_cut_before_the_earliest(fake: FakeAnthropic, client: Anthropic) -> None:
    """The text stops before the earliest stop sequence, reported with stop_reason stop_sequence."""
    fake.enqueue(reply("alpha beta STOP gamma END"), reply("alpha beta STOP gamma END"))
    resp = _ask(client, stop_sequences=["END", "STOP"])
    assert _text(resp) == "alpha beta "
    assert (resp.stop_reason, resp.stop_sequence, resp.usage.output_tokens) == ("stop_sequence", "STOP", 2)
    with client.messages.stream(model=MODEL, max_tokens=16, messages=HI, stop_sequences=["END", "STOP"]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["alpha", " beta "]
    assert (final.stop_reason, final.stop_sequence, final.usage.output_tokens) == ("stop_sequence", "STOP", 2)


def test_tool_use_non_streamed(fake: FakeAnthropic, client: Anthropic) -> None:
    """tool_use() answers a text block then a tool_use block; tokens count the tools and the 'any' prompt."""
    tool_input = {"city": "Paris", "days": 3}
    fake.enqueue(tool_use("get_weather", tool_input, text="Let me check."))
    resp = client.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=WEATHER_TOOLS,
        tool_choice={"type": "any"},
    )
    assert [b.type for b in resp.content] == ["text", "tool_use"]
    block = resp.content[1]
    assert isinstance(block, ToolUseBlock)
    assert block.id.startswith("toolu_fake_") and block.name == "get_weather" and block.input == tool_input
    assert resp.stop_reason == "tool_use"
    assert resp.usage.input_tokens == 3 + 17 + 4 + _bytes(WEATHER_TOOLS) + TOOL_USE_SYSTEM_PROMPT_TOKENS_ANY
    # "Let me check." is 3 words; '{"city": "Paris", "days": 3}' is 4
    assert resp.usage.output_tokens == 3 + 4


def test_tool_use_that_does_not_fit_is_dropped(fake: FakeAnthropic, client: Anthropic) -> None:
    """A tool use beyond max_tokens is dropped and the answer ends with max_tokens."""
    fake.enqueue(tool_use("get_weather", {"city": "Paris"}, text="Checking now."))
    resp = client.messages.create(model=MODEL, max_tokens=3, messages=HI, tools=WEATHER_TOOLS)
    assert [b.type for b in resp.content] == ["text"]
    assert resp.stop_reason == "max_tokens" and resp.usage.output_tokens == 3


def test_tool_use_streamed_reassembles_input(fake: FakeAnthropic, client: Anthropic) -> None:
    """Streamed tool input arrives as 2+ input_json deltas that the SDK helper reassembles."""
    tool_input = {"city": "São Paulo", "units": ["C", "F"]}
    fake.enqueue(tool_use("get_weather", tool_input))
    with client.messages.stream(model=MODEL, max_tokens=64, messages=HI, tools=WEATHER_TOOLS) as stream:
        events = list(stream)
        final = stream.get_final_message()
    partials = [e.delta.partial_json for e in events if isinstance(e, RawContentBlockDeltaEvent) and isinstance(e.delta, InputJSONDelta)]
    assert len(partials) >= 2 and json.loads("".join(partials)) == tool_input
    assert [b.type for b in final.content] == ["tool_use"]
    block = final.content[0]
    assert isinstance(block, ToolUseBlock) and block.input == tool_input and block.name == "get_weather"
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == len(json.dumps(tool_input, ensure_ascii=False).split())


def test_stream_events_in_order(fake: FakeAnthropic, client: Anthropic) -> None:
    """A raw stream yields Anthropic's event order, one word per text delta, usage at start and delta."""
    fake.enqueue(reply("alpha beta gamma"))
    events = list(client.messages.create(model=MODEL, max_tokens=16, messages=HI, stream=True))
    types = [e.type for e in events]
    assert types == ["message_start", "content_block_start"] + ["content_block_delta"] * 3 + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0]
    assert isinstance(start, RawMessageStartEvent)
    assert start.message.content == [] and start.message.stop_reason is None
    assert start.message.usage.input_tokens == 2 + 4 + 3 and start.message.usage.output_tokens == 1
    assert _deltas(events[2:5]) == ["alpha", " beta", " gamma"]
    delta = events[6]
    assert isinstance(delta, RawMessageDeltaEvent)
    assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens == 3


def test_stream_wire_format(fake: FakeAnthropic) -> None:
    """On the wire: chunked text/event-stream, 'event:' + 'data:' lines, a ping after the first block start."""
    body = json.dumps({"model": MODEL, "max_tokens": 16, "messages": HI, "stream": True}).encode()
    headers = {"x-api-key": KEY, "anthropic-version": "2026-10-21", "content-type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=2)
    try:
        conn.request("POST", "/v1/messages", body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read().decode()
    finally:
        conn.close()
    assert resp.status == 200
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["request-id"].startswith("req_")
    events = [chunk.split("\n") for chunk in raw.split("\n\n") if chunk]
    names = [lines[0].removeprefix("event: ") for lines in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    for lines in events:
        assert len(lines) == 2 and lines[1].startswith("data: ")
        assert json.loads(lines[1].removeprefix("data: "))["type"] == lines[0].removeprefix("event: ")


def test_refusal(fake: FakeAnthropic, client: Anthropic) -> None:
    """refusal() ends with stop_reason refusal and refusal stop_details, non-streamed and streamed."""
    fake.enqueue(refusal(), refusal(text="I can't"))
    resp = _ask(client)
    assert resp.content == [] and resp.stop_reason == "refusal" and resp.usage.output_tokens == 0
    assert resp.stop_details is not None and resp.stop_details.type == "refusal"
    with client.messages.stream(model=MODEL, max_tokens=16, messages=HI) as stream:
        final = stream.get_final_message()
    assert _text(final) == "I can't" and final.stop_reason == "refusal"
    assert final.stop_details is not None and final.stop_details.type == "refusal"


# ---- cache accounting --------------------------------------------------------------------------


def test_cache_counts_non_streamed(fake: FakeAnthropic, client: Anthropic) -> None:
    """with_cache() reports reads and writes; input_tokens excludes every cached token."""
    system: list[TextBlockParam] = [{"type": "text", "text": "s" * 500, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    fake.enqueue(ok().with_cache(read=300, write_5m=100, write_1h=50))
    resp = client.messages.create(model=MODEL, max_tokens=16, system=system, messages=HI)
    total = 500 + 2 + 4 + 3
    usage = resp.usage
    assert usage.input_tokens == total - 300 - 100 - 50
    assert usage.cache_read_input_tokens == 300
    assert usage.cache_creation_input_tokens == 150
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 100 and usage.cache_creation.ephemeral_1h_input_tokens == 50
    assert usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens == total


def test_cache_counts_streamed(fake: FakeAnthropic, client: Anthropic) -> None:
    """Streamed, the cache counts come in message_start and survive into the final message."""
    fake.enqueue(reply("cached answer").with_cache(read=10, write_5m=3))
    with client.messages.stream(model=MODEL, max_tokens=16, system="x" * 40, messages=HI) as stream:
        start = next(iter(stream))
        final = stream.get_final_message()
    total = 40 + 2 + 4 + 3
    assert start.type == "message_start"
    assert start.message.usage.cache_read_input_tokens == 10 and start.message.usage.input_tokens == total - 13
    usage = final.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (total - 13, 10, 3)
    assert usage.cache_creation is not None and usage.cache_creation.ephemeral_5m_input_tokens == 3
    assert usage.output_tokens == 2


def test_cache_counts_beyond_the_total_fail_loudly(fake: FakeAnthropic, client: Anthropic, capsys: pytest.CaptureFixture[str]) -> None:
    """Cache counts larger than the request's input tokens make the fake answer 500 naming the ValueError."""
    fake.enqueue(ok().with_cache(read=10_000))
    with pytest.raises(anthropic.InternalServerError) as info:
        _ask(client)
    assert info.value.api_message is not None and "ValueError" in info.value.api_message
    assert "ValueError" in capsys.readouterr().err


# ---- scripted errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "exc_type", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (402, anthropic.PaymentRequiredError, "billing_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (413, anthropic.RequestTooLargeError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_status_maps_to_sdk_exception(
    fake: FakeAnthropic, client: Anthropic, code: int, exc_type: type[anthropic.APIStatusError], error_type: str
) -> None:
    """status(code) raises the SDK's class for that status, with Anthropic's error shape and request id."""
    fake.enqueue(status(code))
    with pytest.raises(anthropic.APIStatusError) as info:
        _ask(client)
    exc = info.value
    assert type(exc) is exc_type and exc.status_code == code
    assert exc.type == error_type and exc.error_code is None
    assert isinstance(exc.body, dict) and set(exc.body) == {"type", "error", "request_id"}
    assert exc.body["type"] == "error" and set(exc.body["error"]) == {"type", "message"}
    assert exc.request_id is not None and exc.request_id == exc.body["request_id"]


def test_rate_limit_retry_after_and_message(fake: FakeAnthropic, client: Anthropic) -> None:
    """retry_after becomes a retry-after header on the exception's response; message and type are scripted."""
    fake.enqueue(status(429, retry_after=7, message="slow down"), status(400, error_type="billing_error"))
    with pytest.raises(anthropic.RateLimitError) as info:
        _ask(client)
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.api_message == "slow down"
    with pytest.raises(anthropic.BadRequestError) as bad:
        _ask(client)
    assert bad.value.type == "billing_error"


def test_error_code_selects_spend_limit_class(fake: FakeAnthropic, client: Anthropic) -> None:
    """error.details.error_code makes the SDK raise its specific class, here a RateLimitError subclass."""
    fake.enqueue(status(429, error_code="enforced_spend_limit_reached"))
    with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as info:
        _ask(client)
    exc = info.value
    assert isinstance(exc, anthropic.RateLimitError)
    assert exc.error_code == "enforced_spend_limit_reached"
    assert isinstance(exc.body, dict) and exc.body["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}


def test_stream_error_raises_mid_iteration(fake: FakeAnthropic, client: Anthropic) -> None:
    """The SDK yields the earlier deltas, then raises a bare APIStatusError (HTTP status 200) of the error type."""
    fake.enqueue(stream_error(2, text="alpha beta gamma delta"), stream_error(1, error_type="api_error"))
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        for event in client.messages.create(model=MODEL, max_tokens=16, messages=HI, stream=True):
            if isinstance(event, RawContentBlockDeltaEvent) and isinstance(event.delta, TextDelta):
                received.append(event.delta.text)
    assert received == ["alpha", " beta"]
    exc = info.value
    assert type(exc) is anthropic.APIStatusError and exc.status_code == 200
    assert exc.type == "overloaded_error"
    pieces: list[str] = []
    with (
        client.messages.stream(model=MODEL, max_tokens=16, messages=HI) as stream,
        pytest.raises(anthropic.APIStatusError) as helper,
    ):
        pieces.extend(stream.text_stream)
    assert pieces == ["[FAKE-ANTHROPIC:claude-sonnet-4-5]"] and helper.value.type == "api_error"
    assert _ask(client).stop_reason == "end_turn"


def test_stream_error_without_stream_is_plain_error(fake: FakeAnthropic, client: Anthropic) -> None:
    """On a non-streamed request stream_error() is the plain JSON error of its type: 529 OverloadedError."""
    fake.enqueue(stream_error(1))
    with pytest.raises(anthropic.OverloadedError):
        _ask(client)


def test_cut_stream_raises_remote_protocol_error(fake: FakeAnthropic, client: Anthropic) -> None:
    """A cut stream is not ended quietly: httpx2.RemoteProtocolError escapes unwrapped after the earlier deltas."""
    fake.enqueue(cut_stream(3, text="one two three four five"), cut_stream(1), cut_stream(1))
    received: list[str] = []
    with pytest.raises(httpx2.RemoteProtocolError) as info:
        for event in client.messages.create(model=MODEL, max_tokens=16, messages=HI, stream=True):
            if isinstance(event, RawContentBlockDeltaEvent) and isinstance(event.delta, TextDelta):
                received.append(event.delta.text)
    assert received == ["one", " two", " three"]
    assert not isinstance(info.value, anthropic.APIError)
    with (
        client.messages.stream(model=MODEL, max_tokens=16, messages=HI) as stream,
        pytest.raises(httpx2.RemoteProtocolError),
    ):
        stream.get_final_message()
    with pytest.raises(anthropic.APIConnectionError):  # non-streamed: a truncated body
        _ask(client)
    assert _text(_ask(client, "still up")) == f"[FAKE-ANTHROPIC:{MODEL}] still up"


def test_malformed_json_escapes_unwrapped(fake: FakeAnthropic, client: Anthropic) -> None:
    """An invalid JSON body raises json.JSONDecodeError (not an anthropic.APIError), streamed or not."""
    fake.enqueue(malformed(), malformed())
    with pytest.raises(json.JSONDecodeError) as info:
        _ask(client)
    assert not isinstance(info.value, anthropic.APIError)
    with pytest.raises(json.JSONDecodeError):
        list(client.messages.create(model=MODEL, max_tokens=16, messages=HI, stream=True))


@pytest.mark.parametrize("after_deltas", [None, 0, 2], ids=["in-message-start", "after-ping", "after-two-deltas"])
def test_invalid_utf8_streamed_raises_unicode_decode_error_after_the_earlier_events(
    fake: FakeAnthropic, after_deltas: int | None
) -> None:
    """The SDK's SSE decoder decodes each line as strict UTF-8: the bad byte raises UnicodeDecodeError, unwrapped."""
    fake.enqueue(invalid_utf8(after_deltas, text="one two three"))
    with Anthropic(api_key=KEY, base_url=fake.base_url, max_retries=0) as sdk:
        raw = sdk.messages.with_raw_response.create(model=MODEL, max_tokens=16, messages=HI, stream=True)
        seen: list[str] = []
        with pytest.raises(UnicodeDecodeError) as info:
            for event in anthropic.Stream.raw_events(raw.http_response):
                seen.append(event.event or "")
    assert not isinstance(info.value, anthropic.APIError)
    if after_deltas is None:
        assert seen == []
    else:
        assert seen[0] == "message_start" and seen.count("content_block_delta") == after_deltas


def test_invalid_utf8_non_streamed(fake: FakeAnthropic, client: Anthropic) -> None:
    """Non-streamed, the SDK's parsing json.loads the bytes (UnicodeDecodeError, unwrapped); the raw text is lenient."""
    fake.enqueue(invalid_utf8(), invalid_utf8())
    with pytest.raises(UnicodeDecodeError):
        _ask(client)
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=16, messages=HI)
    assert json.loads(raw.text())["content"] == [{"type": "text", "text": "\ufffd"}]


def test_a_tool_use_without_input_streams_one_empty_partial_json(fake: FakeAnthropic, client: Anthropic) -> None:
    """As the real API does: one input_json_delta with partial_json "", not the JSON text {}."""
    fake.enqueue(tool_use("get_weather", {}))
    events = list(client.messages.create(model=MODEL, max_tokens=64, messages=HI, tools=WEATHER_TOOLS, stream=True))
    partials = [e.delta.partial_json for e in events if isinstance(e, RawContentBlockDeltaEvent)
                and isinstance(e.delta, InputJSONDelta)]
    assert partials == [""]
    fake.enqueue(tool_use("get_weather", {}))
    (block,) = _ask(client, tools=WEATHER_TOOLS).content
    assert isinstance(block, ToolUseBlock) and block.input == {}


def test_invalid_message(fake: FakeAnthropic) -> None:
    """content null passes unvalidated by default (content is None) and fails strict response validation."""
    fake.enqueue(invalid_message(), invalid_message(), invalid_message())
    with Anthropic(api_key=KEY, base_url=fake.base_url, max_retries=0) as lenient:
        assert _ask(lenient).content is None
        events = list(lenient.messages.create(model=MODEL, max_tokens=16, messages=HI, stream=True))
    assert [e.type for e in events] == ["message_start", "message_delta", "message_stop"]
    assert isinstance(events[0], RawMessageStartEvent) and events[0].message.content is None
    with (
        Anthropic(api_key=KEY, base_url=fake.base_url, max_retries=0, _strict_response_validation=True) as strict,
        pytest.raises(anthropic.APIResponseValidationError),
    ):
        _ask(strict)


def test_slow_times_out_and_server_keeps_serving(fake: FakeAnthropic) -> None:
    """slow() longer than the client timeout raises APITimeoutError; the server keeps serving."""
    fake.enqueue(slow(3))
    with Anthropic(api_key=KEY, base_url=fake.base_url, max_retries=0, timeout=0.2) as impatient:
        started = time.monotonic()
        with pytest.raises(anthropic.APITimeoutError):
            _ask(impatient)
        assert time.monotonic() - started < 1.5
        assert _ask(impatient, "still up").stop_reason == "end_turn"


def test_slow_then_behaviour(fake: FakeAnthropic, client: Anthropic) -> None:
    """slow(seconds, then=...) delays and then behaves as ``then``, cache counts included."""
    fake.enqueue(slow(0.05, then=reply("late")).with_cache(read=1))
    started = time.monotonic()
    resp = _ask(client)
    assert time.monotonic() - started >= 0.05
    assert _text(resp) == "late" and resp.usage.cache_read_input_tokens == 1


# ---- recording, concurrency, lifecycle ---------------------------------------------------------


def test_requests_are_recorded_and_reset(fake: FakeAnthropic, client: Anthropic) -> None:
    """Every request is recorded with path, lower-cased headers and JSON body; reset() clears everything."""
    _ask(client, "remember me", max_tokens=5, metadata={"user_id": "u-1"})
    with pytest.raises(anthropic.NotFoundError):
        client.post("/v1/other", cast_to=Message, body={})
    recorded = fake.requests
    assert [r.path for r in recorded] == ["/v1/messages", "/v1/other"]
    first = recorded[0]
    assert isinstance(first, RecordedRequest) and first.method == "POST"
    assert all(name == name.lower() for name in first.headers)
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.headers["content-type"] == "application/json"
    assert first.anthropic_version == "2026-10-21"
    assert first.body == {
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "remember me"}],
        "model": MODEL,
        "metadata": {"user_id": "u-1"},
    }
    assert json.loads(first.raw_body) == first.body
    assert fake.message_requests == [first]
    fake.enqueue(reply("x"))
    fake.set_default(status(500))
    fake.reset()
    assert fake.requests == [] and fake.queued == 0
    assert _text(_ask(client, "y")) == f"[FAKE-ANTHROPIC:{MODEL}] y"


def test_concurrent_requests_consume_each_behaviour_once(fake: FakeAnthropic) -> None:
    """Concurrent SDK clients in threads consume every queued behaviour exactly once."""
    fake.enqueue(*(reply(f"r{i}") for i in range(20)))
    fake.set_default(status(500))
    results: list[str] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            with Anthropic(api_key=KEY, base_url=fake.base_url, max_retries=0) as sdk:
                for _ in range(5):
                    text = _text(_ask(sdk))
                    with lock:
                        results.append(text)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert failures == []
    assert sorted(results) == sorted(f"r{i}" for i in range(20))
    assert fake.queued == 0 and len(fake.message_requests) == 20


def test_keep_alive_with_exact_content_length(fake: FakeAnthropic) -> None:
    """Non-streamed responses keep the connection alive and carry an exact Content-Length."""
    body = json.dumps({"model": MODEL, "max_tokens": 8, "messages": HI}).encode()
    headers = {"x-api-key": KEY, "anthropic-version": "2026-10-21", "content-type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=2)
    try:
        sockets = []
        for _ in range(2):
            conn.request("POST", "/v1/messages", body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(payload)
            assert json.loads(payload)["type"] == "message" and not resp.will_close
            sockets.append(conn.sock)
        assert sockets[0] is not None and sockets[0] is sockets[1]
    finally:
        conn.close()


def test_behaviour_helpers_validate(fake: FakeAnthropic) -> None:
    """Helpers build frozen, comparable Behaviours and reject nonsense."""
    assert slow(0.1).then == ok()
    assert Behaviour.status(429, retry_after=2) == status(429, retry_after=2)
    tool_input = {"a": 1}
    behaviour = tool_use("t", tool_input)
    tool_input["a"] = 2
    assert behaviour.tool_input_json == '{"a": 1}'
    assert ok().with_cache(read=1, write_5m=2, write_1h=3).cache_write_1h == 3
    for bad in (lambda: status(200), lambda: slow(-1), lambda: stream_error(-1), lambda: cut_stream(-1),
                lambda: ok().with_cache(read=-1), lambda: status(500).with_cache(read=1), lambda: malformed().with_cache(read=1)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ok().kind = "status"  # type: ignore[misc]
    with pytest.raises(TypeError):
        fake.enqueue("ok")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fake.set_default(None)  # type: ignore[arg-type]


def test_close_is_prompt_and_idempotent() -> None:
    """close() returns quickly even with a slow request in flight, and may be called twice."""
    server = FakeAnthropic(api_key=KEY)
    server.enqueue(slow(30))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    body = json.dumps({"model": MODEL, "max_tokens": 8, "messages": HI}).encode()
    conn.request("POST", "/v1/messages", body=body, headers={"x-api-key": KEY, "anthropic-version": "2026-10-21"})
    deadline = time.monotonic() + 2
    while server.queued and time.monotonic() < deadline:  # wait until the handler has taken the slow behaviour
        time.sleep(0.005)
    started = time.monotonic()
    server.close()
    server.close()
    assert time.monotonic() - started < 1.0
    conn.close()
