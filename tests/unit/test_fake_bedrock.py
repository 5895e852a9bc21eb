"""Self-test of tests/fakes/fake_bedrock.py, driven by the real boto3 bedrock-runtime client over loopback."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.config
import botocore.eventstream
import botocore.exceptions
import botocore.retries.standard
import pytest
import urllib3.exceptions

from tests.fakes.fake_bedrock import (
    DEFAULT_SPEND_ALL_TOKENS,
    ERROR_STATUS,
    GUARDRAIL_TEXT,
    Behaviour,
    FakeBedrock,
    RecordedRequest,
    canonical_json,
    content_filtered,
    count_input_tokens,
    cut_stream,
    encode_event_frame,
    error,
    guardrail,
    invalid_utf8,
    malformed,
    ok,
    reply,
    signing_info,
    slow,
    spend_all,
    stream_exception,
    tool_use,
)

HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"
PROFILE_ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0"
ONE_ATTEMPT = botocore.config.Config(retries={"total_max_attempts": 1})
WEATHER_TOOLS: dict[str, Any] = {
    "tools": [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "Weather for a city.",
                "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}},
            }
        }
    ]
}
# A syntactically valid SigV4 header for raw requests (the fake does not check the signature's value).
SIGNED = {
    "Authorization": (
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, Signature=" + "0" * 64
    ),
    "X-Amz-Date": "20260101T000000Z",
    "Content-Type": "application/json",
}


@pytest.fixture(autouse=True)
def no_bedrock_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep settings that would redirect or re-authenticate the client out of these tests."""
    monkeypatch.delenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", raising=False)
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)


@pytest.fixture
def fake() -> Iterator[FakeBedrock]:
    """A running fake server, closed after the test."""
    with FakeBedrock() as server:
        yield server


@pytest.fixture
def client(fake: FakeBedrock) -> Any:
    """A real boto3 client pointed at the fake, with a single attempt."""
    return boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=fake.endpoint_url, config=ONE_ATTEMPT)


def _user(text: str) -> dict[str, Any]:
    """A user message with one text block."""
    return {"role": "user", "content": [{"text": text}]}


def _assistant(text: str) -> dict[str, Any]:
    """An assistant message with one text block."""
    return {"role": "assistant", "content": [{"text": text}]}


def _ask(client: Any, text: str = "hello world", model_id: str = HAIKU, **kwargs: Any) -> dict[str, Any]:
    """One converse call with a single user message."""
    result: dict[str, Any] = client.converse(modelId=model_id, messages=[_user(text)], **kwargs)
    return result


def _stream(client: Any, text: str = "hello world", model_id: str = HAIKU, **kwargs: Any) -> list[dict[str, Any]]:
    """One converse_stream call, fully iterated."""
    response = client.converse_stream(modelId=model_id, messages=[_user(text)], **kwargs)
    return list(response["stream"])


def _iterate_until_error(client: Any, text: str = "hello world") -> tuple[list[dict[str, Any]], BaseException | None]:
    """Iterate a converse_stream, returning the events received and the exception that ended it (or None)."""
    events: list[dict[str, Any]] = []
    iterator = iter(client.converse_stream(modelId=HAIKU, messages=[_user(text)])["stream"])
    while True:
        try:
            events.append(next(iterator))
        except StopIteration:
            return events, None
        except Exception as exc:  # noqa: BLE001 - the point is to see which exception botocore raises
            return events, exc


def _raw(
    fake: FakeBedrock,
    body: Any,
    path: str = "/model/m/converse",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request; returns (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request(method, path, body=payload, headers=SIGNED if headers is None else headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _text_of(events: list[dict[str, Any]]) -> str:
    """Concatenated text deltas of a stream."""
    return "".join(e["contentBlockDelta"]["delta"].get("text", "") for e in events if "contentBlockDelta" in e)


# ---- basics --------------------------------------------------------------------------


def test_endpoint_url_is_loopback(fake: FakeBedrock) -> None:
    """The fake binds 127.0.0.1 on an ephemeral port."""
    assert fake.endpoint_url == f"http://127.0.0.1:{fake.port}"
    assert fake.port > 0
    assert repr(fake) == f"FakeBedrock({fake.endpoint_url!r})"


def test_converse_ok_with_exact_usage(fake: FakeBedrock, client: Any) -> None:
    """The ok answer echoes model id and last user text; usage follows the documented byte rule."""
    messages = [_user("first"), _assistant("ok"), _user("héllo wörld")]
    resp = client.converse(modelId=HAIKU, messages=messages, system=[{"text": "Be brief."}])
    assert resp["output"]["message"] == {
        "role": "assistant",
        "content": [{"text": f"[FAKE-BEDROCK:{HAIKU}] héllo wörld"}],
    }
    assert resp["stopReason"] == "end_turn"
    # 3 + system 9 + (5 + 4) + (2 + 4) + (13 + 4): "héllo wörld" is 13 UTF-8 bytes
    assert resp["usage"] == {"inputTokens": 44, "outputTokens": 3, "totalTokens": 47}
    assert isinstance(resp["metrics"]["latencyMs"], int)
    assert resp["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/json"
    assert resp["ResponseMetadata"]["RequestId"]
    [recorded] = fake.converse_requests
    assert recorded.operation == "converse"
    assert recorded.method == "POST"
    assert recorded.body is not None and recorded.body["messages"] == messages
    assert json.loads(recorded.raw_body) == recorded.body


def test_count_input_tokens_rules() -> None:
    """toolUse input, toolResult parts and the tools list count as canonical JSON bytes; cachePoint counts 0."""
    body = {
        "system": [{"text": "sys"}, {"cachePoint": {"type": "default"}}],
        "messages": [
            _user("€"),
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "22 C"}, {"json": {"t": 22}}]}}]},
        ],
        "toolConfig": WEATHER_TOOLS,
    }
    expected = (
        3
        + 3  # "sys"
        + (3 + 4)  # "€" is 3 bytes
        + (len('{"city": "Paris"}') + 4)
        + (len("22 C") + len('{"t": 22}') + 4)
        + len(json.dumps(WEATHER_TOOLS["tools"]))
    )
    assert count_input_tokens(body) == expected
    assert canonical_json({"a": "é"}) == '{"a": "é"}'


def test_model_id_with_colon_is_percent_decoded(fake: FakeBedrock, client: Any) -> None:
    """botocore sends ':' as %3A; the fake records and echoes the decoded id."""
    resp = _ask(client, "hi", model_id=HAIKU)
    [recorded] = fake.requests
    assert recorded.path == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    assert recorded.model_id == HAIKU
    assert resp["output"]["message"]["content"][0]["text"] == f"[FAKE-BEDROCK:{HAIKU}] hi"


def test_inference_profile_arn_stays_one_path_segment(fake: FakeBedrock, client: Any) -> None:
    """botocore encodes ':' and '/' of an ARN (%3A, %2F): one segment, decoded by the fake."""
    _stream(client, "hi", model_id=PROFILE_ARN)
    [recorded] = fake.requests
    assert recorded.path == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
        "us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream"
    )
    assert recorded.model_id == PROFILE_ARN
    assert recorded.operation == "converse-stream"


def test_endpoint_from_environment(fake: FakeBedrock, monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS_ENDPOINT_URL_BEDROCK_RUNTIME sends a client built without endpoint_url to the fake."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", fake.endpoint_url)
    env_client = boto3.client("bedrock-runtime", region_name="us-east-1", config=ONE_ATTEMPT)
    resp = _ask(env_client, "from env")
    assert resp["output"]["message"]["content"][0]["text"].endswith("from env")
    assert len(fake.converse_requests) == 1


# ---- signing -------------------------------------------------------------------------


def test_signing_info_from_boto3(fake: FakeBedrock, client: Any) -> None:
    """boto3 signs for service bedrock in the client's region with the conftest key id."""
    _ask(client)
    [recorded] = fake.requests
    assert signing_info(recorded) == ("testing", "us-east-1", "bedrock")
    assert "x-amz-date" in recorded.headers


def test_signing_info_other_region(fake: FakeBedrock) -> None:
    """The region in the credential scope is the client's."""
    west = boto3.client("bedrock-runtime", region_name="eu-west-3", endpoint_url=fake.endpoint_url, config=ONE_ATTEMPT)
    _ask(west)
    assert signing_info(fake.requests[0]) == ("testing", "eu-west-3", "bedrock")


def test_signing_info_needs_sigv4() -> None:
    """signing_info refuses a request without a SigV4 header."""
    unsigned = RecordedRequest("/model/m/converse", "m", "converse", {"authorization": "Bearer x"}, None)
    with pytest.raises(ValueError):
        signing_info(unsigned)


def test_missing_authorization_refused(fake: FakeBedrock) -> None:
    """Without Authorization: 403 AccessDeniedException as real Bedrock sends it; nothing consumed."""
    fake.enqueue(reply("never"))
    status, headers, body = _raw(fake, {"messages": [_user("hi")]}, headers={"Content-Type": "application/json"})
    assert status == 403
    assert headers["x-amzn-errortype"] == "AccessDeniedException:http://internal.amazon.com/coral/com.amazon.coral.service/"
    assert json.loads(body) == {"Message": "Authorization header is missing"}
    assert headers["content-length"] == str(len(body))
    assert fake.queued == 1
    assert len(fake.requests) == 1


def test_bearer_token_refused(fake: FakeBedrock) -> None:
    """A Bearer API key is refused: the router must sign with SigV4."""
    status, headers, _ = _raw(fake, {"messages": [_user("hi")]}, headers={"Authorization": "Bearer ABSKxyz"})
    assert status == 403
    assert headers["x-amzn-errortype"].startswith("AccessDeniedException:")


def test_botocore_bearer_env_refuses_http(fake: FakeBedrock, monkeypatch: pytest.MonkeyPatch) -> None:
    """With AWS_BEARER_TOKEN_BEDROCK set, botocore uses bearer auth and will not send it over http."""
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "ABSKfake")
    bearer = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=fake.endpoint_url, config=ONE_ATTEMPT)
    with pytest.raises(botocore.exceptions.InvalidEndpointConfigurationError):
        _ask(bearer)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("authorization", "date", "status", "code"),
    [
        ("AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/bedrock/aws4_request", True, 400, "IncompleteSignatureException"),
        (SIGNED["Authorization"], False, 400, "IncompleteSignatureException"),
        (SIGNED["Authorization"].replace("/bedrock/", "/s3/"), True, 403, "InvalidSignatureException"),
    ],
)
def test_bad_signatures_refused(fake: FakeBedrock, authorization: str, date: bool, status: int, code: str) -> None:
    """A SigV4 header missing parts, a missing date or a wrong service scope is refused."""
    headers = {"Authorization": authorization, "Content-Type": "application/json"}
    if date:
        headers["X-Amz-Date"] = "20260101T000000Z"
    got, response_headers, body = _raw(fake, {"messages": [_user("hi")]}, headers=headers)
    assert got == status
    assert response_headers["x-amzn-errortype"].split(":", 1)[0] == code
    assert json.loads(body)["Message"]


def test_unknown_path_is_404(fake: FakeBedrock) -> None:
    """Other paths and methods get 404 UnknownOperationException and are recorded without a model id."""
    for method, path in [("POST", "/model/m/invoke"), ("GET", "/model/m/converse"), ("POST", "/")]:
        status, headers, body = _raw(fake, b"", path=path, method=method)
        assert status == 404
        assert headers["x-amzn-errortype"].startswith("UnknownOperationException:")
        assert "message" in json.loads(body)
    assert [r.operation for r in fake.requests] == [None, None, None]
    assert fake.converse_requests == []


# ---- validation ----------------------------------------------------------------------

_TOOL_TURN = [
    _user("weather?"),
    {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}}]},
]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "system", "content": [{"text": "x"}]}]}, "messages.0.role"),
        ({"messages": [_assistant("hi")]}, "messages.0.role"),
        ({"messages": [_user("a"), _user("b")]}, "messages.1.role"),
        ({"messages": [_user("a"), _assistant("b"), _assistant("c")]}, "messages.2.role"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": []}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"text": "hi"}], "name": "x"}]}, "messages.0.name"),
        ({"messages": [{"role": "user", "content": [{}]}]}, "messages.0.content.0"),
        ({"messages": [{"role": "user", "content": [{"text": "a", "cachePoint": {"type": "default"}}]}]}, "messages.0.content.0"),
        ({"messages": [{"role": "user", "content": [{"image": {}}]}]}, "messages.0.content.0.image"),
        ({"messages": [{"role": "user", "content": [{"text": "  "}]}]}, "messages.0.content.0.text"),
        ({"messages": [{"role": "user", "content": [{"text": 3}]}]}, "messages.0.content.0.text"),
        ({"messages": [{"role": "user", "content": [{"cachePoint": {"type": "ephemeral"}}]}]}, "messages.0.content.0.cachePoint.type"),
        (
            {"messages": [{"role": "user", "content": [{"toolUse": {"toolUseId": "t", "name": "n", "input": {}}}]}],
             "toolConfig": WEATHER_TOOLS},
            "messages.0.content.0.toolUse",
        ),
        (
            {"messages": [_user("q"), {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t", "name": "n"}}]}],
             "toolConfig": WEATHER_TOOLS},
            "messages.1.content.0.toolUse.input",
        ),
        (
            {"messages": [_user("q"), {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t", "name": "n", "input": []}}]}],
             "toolConfig": WEATHER_TOOLS},
            "messages.1.content.0.toolUse.input",
        ),
        (
            {"messages": [*_TOOL_TURN, {"role": "user", "content": [{"toolResult": {"toolUseId": "zz", "content": [{"text": "x"}]}}]}],
             "toolConfig": WEATHER_TOOLS},
            "messages.2.content.0.toolResult.toolUseId",
        ),
        (
            {"messages": [*_TOOL_TURN, {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"img": 1}]}}]}],
             "toolConfig": WEATHER_TOOLS},
            "messages.2.content.0.toolResult.content.0.img",
        ),
        (
            {"messages": [*_TOOL_TURN, {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [], "status": "ok"}}]}],
             "toolConfig": WEATHER_TOOLS},
            "messages.2.content.0.toolResult.status",
        ),
        (
            {"messages": [*_TOOL_TURN, {"role": "assistant", "content": [{"toolResult": {"toolUseId": "t1", "content": []}}]}],
             "toolConfig": WEATHER_TOOLS},
            "messages.2.role",
        ),
        (
            {"messages": [*_TOOL_TURN, _user("no result")], "toolConfig": WEATHER_TOOLS},
            "messages.2.content",
        ),
        ({"messages": _TOOL_TURN}, "toolConfig"),
        ({"messages": [_user("hi")], "system": {"text": "x"}}, "system"),
        ({"messages": [_user("hi")], "system": [{"image": {}}]}, "system.0.image"),
        ({"messages": [_user("hi")], "system": [{"text": ""}]}, "system.0.text"),
        ({"messages": [_user("hi")], "inferenceConfig": {"maxTokens": 0}}, "inferenceConfig.maxTokens"),
        ({"messages": [_user("hi")], "inferenceConfig": {"maxTokens": 1.5}}, "inferenceConfig.maxTokens"),
        ({"messages": [_user("hi")], "inferenceConfig": {"maxTokens": True}}, "inferenceConfig.maxTokens"),
        ({"messages": [_user("hi")], "inferenceConfig": {"temperature": 2}}, "inferenceConfig.temperature"),
        ({"messages": [_user("hi")], "inferenceConfig": {"topP": "1"}}, "inferenceConfig.topP"),
        ({"messages": [_user("hi")], "inferenceConfig": {"stopSequences": [""]}}, "inferenceConfig.stopSequences"),
        ({"messages": [_user("hi")], "inferenceConfig": {"topK": 5}}, "inferenceConfig.topK"),
        ({"messages": [_user("hi")], "toolConfig": {}}, "toolConfig.tools"),
        ({"messages": [_user("hi")], "toolConfig": {"tools": []}}, "toolConfig.tools"),
        ({"messages": [_user("hi")], "toolConfig": {"tools": [{"toolSpec": {"name": "x"}}]}}, "toolConfig.tools.0.toolSpec.inputSchema"),
        (
            {"messages": [_user("hi")], "toolConfig": {"tools": [{"toolSpec": {"name": "bad name", "inputSchema": {"json": {}}}}]}},
            "toolConfig.tools.0.toolSpec.name",
        ),
        (
            {"messages": [_user("hi")], "toolConfig": {"tools": [{"toolSpec": {"name": "x", "inputSchema": {"yaml": {}}}}]}},
            "toolConfig.tools.0.toolSpec.inputSchema.yaml",
        ),
        (
            {"messages": [_user("hi")], "toolConfig": {"tools": WEATHER_TOOLS["tools"] * 2}},
            "toolConfig.tools.1.toolSpec.name",
        ),
        ({"messages": [_user("hi")], "toolConfig": {**WEATHER_TOOLS, "toolChoice": {}}}, "toolConfig.toolChoice"),
        (
            {"messages": [_user("hi")], "toolConfig": {**WEATHER_TOOLS, "toolChoice": {"auto": {}, "any": {}}}},
            "toolConfig.toolChoice",
        ),
        (
            {"messages": [_user("hi")], "toolConfig": {**WEATHER_TOOLS, "toolChoice": {"tool": {"name": "nope"}}}},
            "toolConfig.toolChoice.tool.name",
        ),
        ({"messages": [_user("hi")], "toolConfig": {**WEATHER_TOOLS, "toolChoice": {"none": {}}}}, "toolConfig.toolChoice.none"),
        ({"messages": [_user("hi")], "max_tokens": 5}, "max_tokens"),
        ({"messages": [_user("hi")], "modelId": "m"}, "modelId"),
        ({"messages": [_user("hi")], "additionalModelRequestFields": []}, "additionalModelRequestFields"),
    ],
)
def test_validation_refusals(fake: FakeBedrock, body: dict[str, Any], field: str) -> None:
    """Each invalid body is 400 ValidationException naming the field, and consumes no behaviour."""
    fake.enqueue(reply("never"))
    status, headers, raw = _raw(fake, body)
    assert status == 400
    assert headers["x-amzn-errortype"] == "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    message = json.loads(raw)["message"]
    assert field in message, message
    assert fake.queued == 1


def test_body_that_is_not_a_json_object(fake: FakeBedrock) -> None:
    """Unparsable or non-object JSON is a ValidationException too."""
    for payload in (b"{not json", b"[1, 2]", b""):
        status, headers, _ = _raw(fake, payload)
        assert status == 400
        assert headers["x-amzn-errortype"].startswith("ValidationException:")
    assert [r.body for r in fake.requests] == [None, None, None]


def test_consecutive_roles_refused_through_boto3(client: Any) -> None:
    """botocore does not check role alternation; the fake does, like Bedrock."""
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.converse(modelId=HAIKU, messages=[_user("a"), _user("b")])
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "messages.1.role" in info.value.response["Error"]["Message"]


def test_valid_tool_round_trip_and_ignored_fields(fake: FakeBedrock, client: Any) -> None:
    """A toolUse/toolResult conversation with cache points, a named toolChoice and extra model fields is accepted."""
    messages = [
        {"role": "user", "content": [{"text": "weather?"}, {"cachePoint": {"type": "default"}}]},
        _TOOL_TURN[1],
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"json": {"t": 22}}], "status": "success"}}]},
    ]
    tool_config = {**WEATHER_TOOLS, "toolChoice": {"tool": {"name": "get_weather"}}}
    resp = client.converse(
        modelId=HAIKU,
        messages=messages,
        system=[{"text": "sys"}, {"cachePoint": {"type": "default"}}],
        inferenceConfig={"maxTokens": 50, "temperature": 0, "topP": 1, "stopSequences": []},
        toolConfig=tool_config,
        additionalModelRequestFields={"top_k": 5},
    )
    assert resp["stopReason"] == "end_turn"
    # the last user message has no text blocks
    assert resp["output"]["message"]["content"] == [{"text": f"[FAKE-BEDROCK:{HAIKU}] "}]
    assert fake.requests[0].body is not None
    assert resp["usage"]["inputTokens"] == count_input_tokens(fake.requests[0].body)


# ---- token rules ---------------------------------------------------------------------


def test_max_tokens_cut(fake: FakeBedrock, client: Any) -> None:
    """An answer longer than maxTokens is cut after that many words with stopReason max_tokens."""
    fake.enqueue(reply("one two  three four five"), reply("one two  three four five"))
    resp = _ask(client, inferenceConfig={"maxTokens": 3})
    assert resp["output"]["message"]["content"] == [{"text": "one two  three"}]
    assert resp["stopReason"] == "max_tokens"
    assert resp["usage"]["outputTokens"] == 3
    events = _stream(client, inferenceConfig={"maxTokens": 3})
    assert _text_of(events) == "one two  three"
    assert events[-2] == {"messageStop": {"stopReason": "max_tokens"}}
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 3


def test_exact_fit_is_end_turn(fake: FakeBedrock, client: Any) -> None:
    """An answer of exactly maxTokens words is not cut."""
    fake.enqueue(reply("one two three"))
    resp = _ask(client, inferenceConfig={"maxTokens": 3})
    assert resp["stopReason"] == "end_turn"
    assert resp["usage"]["outputTokens"] == 3


def test_stop_sequences(fake: FakeBedrock, client: Any) -> None:
    """The earliest stop sequence cuts the answer before it; max_tokens still wins when reached first."""
    fake.enqueue(reply("alpha beta STOP gamma END delta"), reply("alpha beta STOP gamma"), reply("a b c STOP d"))
    resp = _ask(client, inferenceConfig={"stopSequences": ["END", "STOP"]})
    assert resp["output"]["message"]["content"] == [{"text": "alpha beta "}]
    assert resp["stopReason"] == "stop_sequence"
    assert resp["usage"]["outputTokens"] == 2
    events = _stream(client, inferenceConfig={"stopSequences": ["STOP"]})
    assert _text_of(events) == "alpha beta "
    assert events[-2] == {"messageStop": {"stopReason": "stop_sequence"}}
    resp = _ask(client, inferenceConfig={"stopSequences": ["STOP"], "maxTokens": 2})
    assert resp["output"]["message"]["content"] == [{"text": "a b"}]
    assert resp["stopReason"] == "max_tokens"


def test_spend_all(fake: FakeBedrock, client: Any) -> None:
    """spend_all() produces exactly maxTokens words "tok" (4096 without a limit), stopReason max_tokens."""
    fake.enqueue(spend_all(), spend_all())
    resp = _ask(client, inferenceConfig={"maxTokens": 7})
    assert resp["output"]["message"]["content"] == [{"text": " ".join(["tok"] * 7)}]
    assert resp["stopReason"] == "max_tokens"
    assert resp["usage"]["outputTokens"] == 7
    resp = _ask(client)
    assert resp["usage"]["outputTokens"] == DEFAULT_SPEND_ALL_TOKENS


def test_ok_stream_events_in_converse_order(fake: FakeBedrock, client: Any) -> None:
    """A text stream: messageStart, one delta per word, contentBlockStop, messageStop, metadata."""
    response = client.converse_stream(modelId="m", messages=[_user("a  b")])
    assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/vnd.amazon.eventstream"
    events = list(response["stream"])
    assert events[0] == {"messageStart": {"role": "assistant"}}
    deltas = [e["contentBlockDelta"] for e in events if "contentBlockDelta" in e]
    assert [d["delta"]["text"] for d in deltas] == ["[FAKE-BEDROCK:m]", " a", "  b"]
    assert {d["contentBlockIndex"] for d in deltas} == {0}
    assert [next(iter(e)) for e in events] == (
        ["messageStart"] + ["contentBlockDelta"] * 3 + ["contentBlockStop", "messageStop", "metadata"]
    )
    assert events[4] == {"contentBlockStop": {"contentBlockIndex": 0}}
    assert events[5] == {"messageStop": {"stopReason": "end_turn"}}
    total = 3 + 4 + 4
    assert events[6]["metadata"]["usage"] == {"inputTokens": total, "outputTokens": 3, "totalTokens": total + 3}
    assert isinstance(events[6]["metadata"]["metrics"]["latencyMs"], int)


# ---- tool use ------------------------------------------------------------------------


def test_tool_use_non_streamed(fake: FakeBedrock, client: Any) -> None:
    """tool_use answers text then a toolUse block, stopReason tool_use; output counts the JSON words."""
    fake.enqueue(tool_use("get_weather", {"city": "Paris", "unit": "C"}, text="Let me check.", tool_use_id="tooluse_abc"))
    resp = _ask(client, "weather?", toolConfig=WEATHER_TOOLS)
    assert resp["stopReason"] == "tool_use"
    assert resp["output"]["message"]["content"] == [
        {"text": "Let me check."},
        {"toolUse": {"toolUseId": "tooluse_abc", "name": "get_weather", "input": {"city": "Paris", "unit": "C"}}},
    ]
    # 3 text words + 4 words of '{"city": "Paris", "unit": "C"}'
    assert resp["usage"]["outputTokens"] == 7


def test_tool_use_streamed_reassembles(fake: FakeBedrock, client: Any) -> None:
    """Streamed tool use: contentBlockStart with id and name, input JSON in 2+ pieces that reassemble."""
    arguments = {"city": "São Paulo", "days": [1, 2, 3], "nested": {"deep": True}}
    fake.enqueue(tool_use("get_weather", arguments))
    events = _stream(client, "weather?", toolConfig=WEATHER_TOOLS)
    assert events[0] == {"messageStart": {"role": "assistant"}}
    start = events[1]["contentBlockStart"]
    assert start["contentBlockIndex"] == 0
    assert start["start"]["toolUse"]["name"] == "get_weather"
    assert start["start"]["toolUse"]["toolUseId"].startswith("tooluse_fake_")
    pieces = [e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e]
    assert len(pieces) >= 2
    assert json.loads("".join(pieces)) == arguments
    assert events[-3] == {"contentBlockStop": {"contentBlockIndex": 0}}
    assert events[-2] == {"messageStop": {"stopReason": "tool_use"}}
    assert events[-1]["metadata"]["usage"]["outputTokens"] == len(canonical_json(arguments).split())


def test_tool_use_with_text_streams_two_blocks(fake: FakeBedrock, client: Any) -> None:
    """Text is block 0 (no contentBlockStart), the tool call block 1."""
    fake.enqueue(tool_use("get_weather", {}, text="ok then"))
    events = _stream(client, "weather?", toolConfig=WEATHER_TOOLS)
    kinds = [next(iter(e)) for e in events]
    assert kinds[:5] == ["messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop", "contentBlockStart"]
    assert events[4]["contentBlockStart"]["contentBlockIndex"] == 1
    pieces = [e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events[5:] if "contentBlockDelta" in e]
    assert pieces == ["{", "}"]
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 2 + 1


def test_tool_use_without_input_deltas_streams_none(fake: FakeBedrock, client: Any) -> None:
    """input_deltas=False: contentBlockStart then contentBlockStop, no toolUse delta; unstreamed, the input is there."""
    fake.enqueue(tool_use("get_weather", {}, input_deltas=False), tool_use("get_weather", {}, input_deltas=False))
    events = _stream(client, "weather?", toolConfig=WEATHER_TOOLS)
    assert [next(iter(e)) for e in events] == ["messageStart", "contentBlockStart", "contentBlockStop", "messageStop",
                                               "metadata"]
    content = _ask(client, "weather?", toolConfig=WEATHER_TOOLS)["output"]["message"]["content"]
    assert content[0]["toolUse"]["input"] == {}


def test_invalid_utf8_raises_unicode_decode_error_from_botocore(fake: FakeBedrock, client: Any) -> None:
    """botocore decodes bodies and event payloads as strict UTF-8: the bad byte escapes as UnicodeDecodeError."""
    fake.enqueue(invalid_utf8(), invalid_utf8(after_deltas=2))
    with pytest.raises(UnicodeDecodeError):
        _ask(client)
    response = client.converse_stream(modelId=HAIKU, messages=[_user("hello world")])
    seen: list[str] = []
    with pytest.raises(UnicodeDecodeError):
        for event in response["stream"]:
            seen.append(next(iter(event)))
    assert seen == ["messageStart", "contentBlockDelta", "contentBlockDelta"]


def test_tool_use_dropped_over_max_tokens(fake: FakeBedrock, client: Any) -> None:
    """A call that does not fit maxTokens is dropped: the text stays, stopReason max_tokens, output = the cap."""
    fake.enqueue(tool_use("get_weather", {"city": "Paris"}, text="one two"))
    resp = _ask(client, "weather?", toolConfig=WEATHER_TOOLS, inferenceConfig={"maxTokens": 3})
    assert resp["output"]["message"]["content"] == [{"text": "one two"}]
    assert resp["stopReason"] == "max_tokens"
    assert resp["usage"]["outputTokens"] == 3


@pytest.mark.parametrize(
    ("behaviour", "stop_reason", "text"),
    [
        (guardrail(), "guardrail_intervened", GUARDRAIL_TEXT),
        (content_filtered("partial"), "content_filtered", "partial"),
    ],
)
def test_guardrail_and_content_filtered(
    fake: FakeBedrock, client: Any, behaviour: Behaviour, stop_reason: str, text: str
) -> None:
    """guardrail() and content_filtered() end with their stop reasons, in both modes."""
    fake.enqueue(behaviour, behaviour)
    resp = _ask(client)
    assert resp["stopReason"] == stop_reason
    assert resp["output"]["message"]["content"] == [{"text": text}]
    assert resp["usage"]["outputTokens"] == len(text.split())
    events = _stream(client)
    assert _text_of(events) == text
    assert events[-2] == {"messageStop": {"stopReason": stop_reason}}


# ---- cache accounting ----------------------------------------------------------------


def test_cache_counts_both_modes(fake: FakeBedrock, client: Any) -> None:
    """inputTokens excludes cache read and write; totalTokens includes them."""
    system = [{"text": "x" * 100}, {"cachePoint": {"type": "default"}}]
    fake.enqueue(ok(cache_read=60, cache_write=20), reply("a b c", cache_read=60, cache_write=20))
    total = 3 + 100 + (2 + 4)
    resp = client.converse(modelId="m", messages=[_user("hi")], system=system)
    assert resp["usage"] == {
        "inputTokens": total - 80,
        "outputTokens": 2,
        "cacheReadInputTokens": 60,
        "cacheWriteInputTokens": 20,
        "totalTokens": total + 2,
    }
    response = client.converse_stream(modelId="m", messages=[_user("hi")], system=system)
    usage = list(response["stream"])[-1]["metadata"]["usage"]
    assert usage == {
        "inputTokens": total - 80,
        "outputTokens": 3,
        "cacheReadInputTokens": 60,
        "cacheWriteInputTokens": 20,
        "totalTokens": total + 3,
    }


def test_cache_fields_omitted_without_cache_and_zero_filled(fake: FakeBedrock, client: Any) -> None:
    """Without declared cache use both fields are absent; declaring one fills the other with 0; clamp at 0."""
    resp = _ask(client, "hi")
    assert "cacheReadInputTokens" not in resp["usage"] and "cacheWriteInputTokens" not in resp["usage"]
    fake.enqueue(spend_all(cache_write=5), tool_use("get_weather", {}, cache_read=10_000))
    resp = _ask(client, "hi", inferenceConfig={"maxTokens": 2})
    assert resp["usage"] == {
        "inputTokens": (3 + 2 + 4) - 5,
        "outputTokens": 2,
        "totalTokens": (3 + 2 + 4) + 2,
        "cacheReadInputTokens": 0,
        "cacheWriteInputTokens": 5,
    }
    resp = _ask(client, "hi", toolConfig=WEATHER_TOOLS)
    assert resp["usage"]["inputTokens"] == 0
    assert resp["usage"]["totalTokens"] == 10_000 + 1


# ---- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "status"), sorted(ERROR_STATUS.items()))
def test_error_codes(fake: FakeBedrock, client: Any, code: str, status: int) -> None:
    """Every error raises ClientError with that code and status, after exactly one request."""
    fake.set_default(error(code, f"scripted {code}"))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        _ask(client)
    response = info.value.response
    assert response["Error"] == {"Code": code, "Message": f"scripted {code}"}
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    header = response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"]
    assert header == f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    assert len(fake.requests) == 1


def test_error_before_stream_starts(fake: FakeBedrock, client: Any) -> None:
    """On converse_stream an error is a plain JSON error, raised by the call itself."""
    fake.enqueue(error("ThrottlingException"))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.converse_stream(modelId=HAIKU, messages=[_user("hi")])
    assert info.value.response["Error"]["Code"] == "ThrottlingException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert info.value.response["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/json"


def test_default_retries_would_repeat(fake: FakeBedrock, monkeypatch: pytest.MonkeyPatch) -> None:
    """For contrast: botocore's default standard mode makes 3 attempts on a throttle."""
    # Standard mode backs off up to seconds between attempts; the count is what matters here.
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)
    fake.set_default(error("ThrottlingException"))
    retrying = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=fake.endpoint_url)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        _ask(retrying)
    assert info.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    assert len(fake.requests) == 3


def test_behaviour_helpers_validate(fake: FakeBedrock) -> None:
    """Unknown codes and bad arguments are refused when building behaviours."""
    with pytest.raises(ValueError):
        error("TooManyRequests")
    with pytest.raises(ValueError):
        stream_exception(1, "modelErrorException")
    with pytest.raises(ValueError):
        stream_exception(-1)
    with pytest.raises(ValueError):
        cut_stream(-1)
    with pytest.raises(ValueError):
        slow(-1)
    with pytest.raises(ValueError):
        ok(cache_read=-1)
    with pytest.raises(ValueError):
        tool_use("bad name", {})
    with pytest.raises(TypeError):
        tool_use("t", [])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fake.enqueue("ok")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fake.set_default(None)  # type: ignore[arg-type]


# ---- broken streams ------------------------------------------------------------------


@pytest.mark.parametrize(
    "exception",
    ["throttlingException", "modelStreamErrorException", "internalServerException", "serviceUnavailableException", "validationException"],
)
def test_stream_exception_after_deltas(fake: FakeBedrock, client: Any, exception: str) -> None:
    """An exception frame raises EventStreamError while iterating, after the earlier deltas, with its code."""
    fake.enqueue(stream_exception(2, exception, message="boom"))
    events, exc = _iterate_until_error(client, "hello world")
    assert isinstance(exc, botocore.exceptions.EventStreamError)
    assert exc.response["Error"] == {"Code": exception, "Message": "boom"}
    assert events[0] == {"messageStart": {"role": "assistant"}}
    assert _text_of(events) == f"[FAKE-BEDROCK:{HAIKU}] hello"
    assert len(events) == 3


def test_stream_exception_pads_deltas_and_unmodelled_timeout(fake: FakeBedrock, client: Any) -> None:
    """Deltas beyond the answer are " tok"; modelTimeoutException is not in botocore's stream shape: empty code."""
    fake.enqueue(stream_exception(5, "modelTimeoutException"))
    events, exc = _iterate_until_error(client, "hi")
    assert _text_of(events) == f"[FAKE-BEDROCK:{HAIKU}] hi tok tok tok"
    assert isinstance(exc, botocore.exceptions.EventStreamError)
    assert exc.response["Error"] == {"Code": "", "Message": ""}


def test_stream_exception_on_non_stream_request(fake: FakeBedrock, client: Any) -> None:
    """On converse, stream_exception answers the matching JSON error."""
    fake.enqueue(stream_exception(1, "serviceUnavailableException"))
    with pytest.raises(botocore.exceptions.ClientError) as info:
        _ask(client)
    assert info.value.response["Error"]["Code"] == "ServiceUnavailableException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503


def test_cut_stream_raises_urllib3_protocol_error(fake: FakeBedrock, client: Any) -> None:
    """A dropped connection mid-stream surfaces as urllib3's ProtocolError, after the earlier deltas."""
    fake.enqueue(cut_stream(2))
    events, exc = _iterate_until_error(client, "hello world")
    assert isinstance(exc, urllib3.exceptions.ProtocolError)
    assert not isinstance(exc, botocore.exceptions.BotoCoreError)
    assert len(events) == 3 and _text_of(events) == f"[FAKE-BEDROCK:{HAIKU}] hello"


def test_cut_stream_graceful_ends_quietly(fake: FakeBedrock, client: Any) -> None:
    """A properly ended body without messageStop/metadata just ends the iteration."""
    fake.enqueue(cut_stream(1, graceful=True))
    events, exc = _iterate_until_error(client)
    assert exc is None
    assert [next(iter(e)) for e in events] == ["messageStart", "contentBlockDelta"]


def test_cut_non_streamed_returns_only_metadata(fake: FakeBedrock, client: Any) -> None:
    """botocore does not enforce Content-Length: a half body parses to a response without output or usage."""
    fake.enqueue(cut_stream(0))
    resp = _ask(client)
    assert set(resp) == {"ResponseMetadata"}


def test_malformed_non_streamed(fake: FakeBedrock, client: Any) -> None:
    """Invalid JSON with 200 raises nothing: botocore returns only ResponseMetadata."""
    fake.enqueue(malformed())
    resp = _ask(client)
    assert set(resp) == {"ResponseMetadata"}
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_malformed_stream_checksum_mismatch(fake: FakeBedrock, client: Any) -> None:
    """A frame with a wrong CRC raises botocore's ChecksumMismatch after messageStart."""
    fake.enqueue(malformed())
    events, exc = _iterate_until_error(client)
    assert isinstance(exc, botocore.eventstream.ChecksumMismatch)
    assert events == [{"messageStart": {"role": "assistant"}}]


# ---- timing ------------------------------------------------------------------------


def test_slow_read_timeout(fake: FakeBedrock) -> None:
    """slow() longer than botocore's read_timeout raises ReadTimeoutError after one attempt."""
    fake.enqueue(slow(0.5))
    impatient = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=fake.endpoint_url,
        config=botocore.config.Config(retries={"total_max_attempts": 1}, read_timeout=0.1),
    )
    started = time.monotonic()
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        _ask(impatient)
    assert time.monotonic() - started < 0.45
    assert len(fake.requests) == 1


def test_slow_then_behaviour(fake: FakeBedrock, client: Any) -> None:
    """slow(s, then) waits, then behaves as then; latencyMs includes the wait."""
    fake.enqueue(slow(0.05, reply("late")))
    resp = _ask(client)
    assert resp["output"]["message"]["content"] == [{"text": "late"}]
    assert resp["metrics"]["latencyMs"] >= 50


# ---- scripting and recording -------------------------------------------------------


def test_queue_is_fifo_then_default_and_reset(fake: FakeBedrock, client: Any) -> None:
    """Queued behaviours are used once in order, then the default; reset() clears everything."""
    fake.set_default(reply("default"))
    fake.enqueue(reply("first"), reply("second"))
    assert fake.queued == 2
    texts = [_ask(client)["output"]["message"]["content"][0]["text"] for _ in range(3)]
    assert texts == ["first", "second", "default"]
    assert fake.queued == 0
    assert len(fake.requests) == 3
    snapshot = fake.requests
    fake.enqueue(reply("dropped"))
    fake.reset()
    assert fake.requests == [] and fake.queued == 0
    assert len(snapshot) == 3
    assert _ask(client, "x")["output"]["message"]["content"][0]["text"] == f"[FAKE-BEDROCK:{HAIKU}] x"


def test_concurrent_requests(fake: FakeBedrock, client: Any) -> None:
    """Requests from threads are served in parallel and each gets its own answer."""
    fake.set_default(slow(0.2))
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            results[i] = _ask(client, f"thread {i}")["output"]["message"]["content"][0]["text"]
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    elapsed = time.monotonic() - started
    assert errors == []
    assert results == {i: f"[FAKE-BEDROCK:{HAIKU}] thread {i}" for i in range(8)}
    assert len(fake.converse_requests) == 8
    assert elapsed < 1.0  # 8 x 0.2 s served one after another would take 1.6 s


def test_keep_alive_connection_reused(fake: FakeBedrock) -> None:
    """Two requests on one HTTP/1.1 connection both succeed (exact Content-Length, keep-alive)."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        for word in ("one", "two"):
            conn.request("POST", "/model/m/converse", body=json.dumps({"messages": [_user(word)]}), headers=SIGNED)
            response = conn.getresponse()
            body = json.loads(response.read())
            assert response.status == 200
            assert body["output"]["message"]["content"][0]["text"] == f"[FAKE-BEDROCK:m] {word}"
    finally:
        conn.close()


def test_close_is_idempotent_and_wakes_slow_handlers() -> None:
    """close() returns promptly even with a slow request in flight, and can be called twice."""
    server = FakeBedrock()
    server.set_default(slow(30))

    def call() -> None:
        try:
            _raw(server, {"messages": [_user("hi")]})
        except (ConnectionError, http.client.HTTPException):
            pass  # the server went away mid-request, as intended

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.close()
    server.close()
    assert time.monotonic() - started < 2
    thread.join(timeout=5)


# ---- the frame encoder -------------------------------------------------------------


def test_encode_event_frame_decodes_with_botocore() -> None:
    """botocore's own EventStreamBuffer decodes the frames, headers, payloads and CRCs."""
    first = encode_event_frame({":event-type": "messageStart", ":message-type": "event"}, b'{"role":"assistant"}')
    second = encode_event_frame({":exception-type": "throttlingException", "x-é": "ü"}, b"")
    buffer = botocore.eventstream.EventStreamBuffer()
    data = first + second
    buffer.add_data(data[:7])  # a frame split across reads still decodes
    assert list(buffer) == []
    buffer.add_data(data[7:])
    one, two = list(buffer)
    assert one.headers == {":event-type": "messageStart", ":message-type": "event"}
    assert one.payload == b'{"role":"assistant"}'
    assert one.prelude.total_length == len(first)
    assert two.headers == {":exception-type": "throttlingException", "x-é": "ü"}
    assert two.payload == b""
    corrupted = bytearray(first)
    corrupted[-5] ^= 1
    broken = botocore.eventstream.EventStreamBuffer()
    broken.add_data(bytes(corrupted))
    with pytest.raises(botocore.eventstream.ChecksumMismatch):
        list(broken)
