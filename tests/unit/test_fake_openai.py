"""Self-test of tests/fakes/fake_openai.py, driven by the real openai SDK over loopback."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from tests.fakes.fake_openai import (
    Behaviour,
    FakeOpenAI,
    RecordedRequest,
    count_prompt_tokens,
    malformed,
    ok,
    raw_stream,
    reply,
    slow,
    spend_all,
    status,
)

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A running fake server, closed after the test."""
    with FakeOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[OpenAI]:
    """A real SDK client pointed at the fake, without retries."""
    sdk = OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0)
    yield sdk
    sdk.close()


def _ask(client: OpenAI, text: str = "hello world", **kwargs: object) -> openai.types.chat.ChatCompletion:
    """One non-streamed chat completion with a single user message."""
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], **kwargs  # type: ignore[arg-type]
    )


def test_base_url_is_loopback_v1(fake: FakeOpenAI) -> None:
    """The fake binds 127.0.0.1 on an ephemeral port and exposes the /v1 base URL."""
    assert fake.base_url == f"http://127.0.0.1:{fake.port}/v1"
    assert fake.port > 0


def test_plain_completion_and_usage(client: OpenAI) -> None:
    """A normal reply echoes model and last user message, with documented token counts."""
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "héllo wörld"},
    ]
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == "gpt-4o-mini"
    assert isinstance(resp.created, int)
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == "[FAKE:gpt-4o-mini] héllo wörld"
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    # bytes: 9 + 5 + 2 + 13 ("héllo wörld" is 13 UTF-8 bytes), + 4 per message, + 3 priming
    assert resp.usage.prompt_tokens == (9 + 5 + 2 + 13) + 4 * 4 + 3
    assert resp.usage.completion_tokens == 3
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 3


def test_prompt_tokens_count_text_parts() -> None:
    """List content counts the UTF-8 bytes of its text parts only."""
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "ab"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "€"}]},
        {"role": "assistant", "content": None},
    ]
    assert count_prompt_tokens(messages) == (2 + 3) + 4 * 2 + 3


def test_reply_truncated_by_max_completion_tokens(fake: FakeOpenAI, client: OpenAI) -> None:
    """A reply longer than the cap is cut to that many words with finish_reason length."""
    fake.enqueue(reply("one two  three four five"))
    resp = _ask(client, max_completion_tokens=3)
    assert resp.choices[0].message.content == "one two  three"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 3


def test_spend_all_with_max_tokens(fake: FakeOpenAI, client: OpenAI) -> None:
    """spend_all() uses exactly max_tokens completion tokens and finishes with length."""
    fake.enqueue(spend_all())
    resp = _ask(client, max_tokens=7)
    assert resp.usage is not None and resp.usage.completion_tokens == 7
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].message.content == " ".join(["tok"] * 7)


def test_spend_all_without_limit_uses_4096(fake: FakeOpenAI, client: OpenAI) -> None:
    """spend_all() without any limit produces 4096 completion tokens."""
    fake.set_default(spend_all())
    resp = _ask(client)
    assert resp.usage is not None and resp.usage.completion_tokens == 4096


def test_stream_with_include_usage(fake: FakeOpenAI, client: OpenAI) -> None:
    """Streaming yields a role chunk, one chunk per word, a finish chunk and a usage chunk."""
    fake.enqueue(reply("alpha beta gamma"))
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:4]]
    assert pieces == ["alpha", " beta", " gamma"]
    assert chunks[4].choices[0].finish_reason == "stop"
    assert chunks[5].choices == []
    assert chunks[5].usage is not None
    assert chunks[5].usage.completion_tokens == 3
    assert chunks[5].usage.prompt_tokens == 2 + 4 + 3
    assert len(chunks) == 6


def test_stream_without_usage_and_truncated(fake: FakeOpenAI, client: OpenAI) -> None:
    """Without include_usage there is no usage chunk; truncation still ends with length."""
    fake.enqueue(spend_all())
    chunks = list(
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True, max_tokens=2
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "tok tok"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)


def test_rate_limit_with_retry_after(fake: FakeOpenAI, client: OpenAI) -> None:
    """status(429, retry_after) raises RateLimitError exposing Retry-After and the error shape."""
    fake.enqueue(status(429, retry_after=3))
    with pytest.raises(openai.RateLimitError) as info:
        _ask(client)
    exc = info.value
    assert exc.status_code == 429
    assert exc.response.headers["retry-after"] == "3"
    assert isinstance(exc.body, dict)
    assert set(exc.body) == {"message", "type", "param", "code"}
    assert exc.body["code"] == "rate_limit_exceeded"


def test_server_error(fake: FakeOpenAI, client: OpenAI) -> None:
    """status(500) raises InternalServerError."""
    fake.enqueue(status(500, message="boom"))
    with pytest.raises(openai.InternalServerError) as info:
        _ask(client)
    assert "boom" in str(info.value)
    assert isinstance(info.value.body, dict) and info.value.body["type"] == "server_error"


@pytest.mark.parametrize(
    ("code", "exc_type"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (503, openai.InternalServerError),
    ],
)
def test_status_codes_map_to_sdk_errors(
    fake: FakeOpenAI, client: OpenAI, code: int, exc_type: type[openai.APIStatusError]
) -> None:
    """Scripted status codes surface as the matching SDK exception."""
    fake.enqueue(status(code))
    with pytest.raises(exc_type):
        _ask(client)


def test_wrong_key_is_401_without_echo(fake: FakeOpenAI) -> None:
    """A wrong key raises AuthenticationError that does not echo the key, and consumes nothing."""
    bad_key = "sk-wrong-SECRET-987654321"
    fake.enqueue(reply("kept"))
    with OpenAI(base_url=fake.base_url, api_key=bad_key, max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as info:
            _ask(bad)
    assert bad_key not in str(info.value)
    assert bad_key not in info.value.response.text
    assert KEY not in info.value.response.text
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "invalid_api_key"
    assert fake.queued == 1


def test_slow_times_out(fake: FakeOpenAI) -> None:
    """slow() longer than the client timeout raises APITimeoutError; the server keeps serving."""
    fake.enqueue(slow(3))
    with OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0, timeout=0.2) as impatient:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            _ask(impatient)
        assert time.monotonic() - started < 1.5
        assert _ask(impatient, "still up").choices[0].message.content == "[FAKE:gpt-4o-mini] still up"


def test_slow_then_behaviour(fake: FakeOpenAI, client: OpenAI) -> None:
    """slow(seconds, then=...) delays and then behaves as `then`."""
    fake.enqueue(slow(0.05, then=reply("late")))
    started = time.monotonic()
    assert _ask(client).choices[0].message.content == "late"
    assert time.monotonic() - started >= 0.05


def test_malformed_json_raises_json_decode_error(fake: FakeOpenAI, client: OpenAI) -> None:
    """The SDK (3.57) lets json.JSONDecodeError from an invalid JSON body escape unwrapped.

    With Content-Type application/json it calls ``httpx2.Response.json()`` and does
    not catch the error, so callers see ``json.JSONDecodeError`` (a ValueError), not
    an ``openai.APIError`` subclass. Streams behave the same while iterating.
    """
    fake.enqueue(malformed())
    with pytest.raises(json.JSONDecodeError) as info:
        _ask(client)
    assert not isinstance(info.value, openai.APIError)
    fake.enqueue(malformed())
    with pytest.raises(json.JSONDecodeError):
        list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True))


def test_raw_stream_sends_its_events_and_a_line_not_utf8_raises_unicode_decode_error(
    fake: FakeOpenAI, client: OpenAI
) -> None:
    """JSON events arrive as chunks; a line of bytes that are not UTF-8 fails the SDK's strict decoding, unwrapped."""
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    fake.enqueue(raw_stream(chunk, b'{"message": "\xff"}'))
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.content == "hi"
    with pytest.raises(UnicodeDecodeError) as info:
        next(chunks)
    assert not isinstance(info.value, openai.APIError)
    fake.enqueue(raw_stream({"not": "used"}))
    raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert json.loads(raw.text) == {"not": "used"}  # a non-streamed request gets the first event as its body


def test_queue_is_fifo_then_default(fake: FakeOpenAI, client: OpenAI) -> None:
    """Queued behaviours are used once each, in order, then the default applies."""
    fake.enqueue(reply("first"), reply("second"))
    fake.set_default(reply("default"))
    got = [_ask(client).choices[0].message.content for _ in range(4)]
    assert got == ["first", "second", "default", "default"]
    fake.set_default(ok())
    assert _ask(client, "x").choices[0].message.content == "[FAKE:gpt-4o-mini] x"


def test_concurrent_requests_consume_each_behaviour_once(fake: FakeOpenAI) -> None:
    """Concurrent clients consume every queued behaviour exactly once."""
    fake.enqueue(*(reply(f"r{i}") for i in range(20)))
    fake.set_default(status(500))
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0) as sdk:
            for _ in range(5):
                content = _ask(sdk).choices[0].message.content or ""
                with lock:
                    results.append(content)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(results) == sorted(f"r{i}" for i in range(20))
    assert fake.queued == 0


def test_requests_are_recorded_and_reset(fake: FakeOpenAI, client: OpenAI) -> None:
    """Every request is recorded with path, lower-cased headers and JSON body; reset() clears."""
    _ask(client, "remember me", max_tokens=5)
    client.models.list()
    recorded = fake.requests
    assert [r.path for r in recorded] == ["/v1/chat/completions", "/v1/models"]
    first = recorded[0]
    assert isinstance(first, RecordedRequest)
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.body is not None
    assert first.body["messages"] == [{"role": "user", "content": "remember me"}]
    assert first.body["max_tokens"] == 5
    assert recorded[1].method == "GET" and recorded[1].body is None
    assert len(fake.chat_requests) == 1
    fake.enqueue(reply("x"))
    fake.set_default(status(500))
    fake.reset()
    assert fake.requests == [] and fake.queued == 0
    assert _ask(client, "y").choices[0].message.content == "[FAKE:gpt-4o-mini] y"


def test_models_list(client: OpenAI) -> None:
    """GET /v1/models returns an OpenAI list of model objects."""
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in ids and len(ids) >= 3


def test_unknown_path_and_bad_body(fake: FakeOpenAI) -> None:
    """Unknown paths get 404 and non-JSON chat bodies get 400, both in OpenAI error shape."""
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=2)
    try:
        conn.request("POST", "/v1/nope", body=b"{}", headers={"Authorization": f"Bearer {KEY}"})
        resp = conn.getresponse()
        assert resp.status == 404
        assert set(json.loads(resp.read())["error"]) == {"message", "type", "param", "code"}
        conn.request("POST", "/v1/chat/completions", body=b"not json", headers={"Authorization": f"Bearer {KEY}"})
        resp = conn.getresponse()
        assert resp.status == 400
        assert json.loads(resp.read())["error"]["type"] == "invalid_request_error"
    finally:
        conn.close()


def test_keep_alive_and_connection_close(fake: FakeOpenAI) -> None:
    """Responses keep the connection alive with exact Content-Length unless the client says close."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=2)
    try:
        sockets = []
        for _ in range(2):  # the same socket serves both requests
            conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            assert resp.status == 200
            assert int(resp.headers["Content-Length"]) == len(payload)
            assert not resp.will_close
            sockets.append(conn.sock)
        assert sockets[0] is not None and sockets[0] is sockets[1]
    finally:
        conn.close()
    with socket.create_connection(("127.0.0.1", fake.port), timeout=2) as raw:
        request = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        raw.sendall(request)
        received = b""
        while chunk := raw.recv(65536):  # ends only because the server closes its end
            received += chunk
    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"\r\nConnection: close" in head
    assert json.loads(payload)["object"] == "chat.completion"


def test_bad_content_length_gets_400_and_close(fake: FakeOpenAI) -> None:
    """A request with unparsable framing gets a 400 error JSON and the connection is closed."""
    with socket.create_connection(("127.0.0.1", fake.port), timeout=2) as raw:
        raw.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        received = b""
        while chunk := raw.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 400")
    assert json.loads(received.partition(b"\r\n\r\n")[2])["error"]["type"] == "invalid_request_error"


def test_stream_with_connection_close_header(fake: FakeOpenAI) -> None:
    """The SDK reads a chunked stream fine when it asks for Connection: close."""
    with OpenAI(
        base_url=fake.base_url, api_key=KEY, max_retries=0, default_headers={"Connection": "close"}
    ) as sdk:
        for _ in range(2):
            chunks = list(
                sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "a b"}], stream=True)
            )
            assert "".join(c.choices[0].delta.content or "" for c in chunks) == "[FAKE:m] a b"


def test_behaviour_helpers_validate() -> None:
    """Helpers build frozen Behaviours and reject nonsense."""
    assert slow(0.1).then == ok()
    assert Behaviour.status(429, retry_after=2) == status(429, retry_after=2)
    with pytest.raises(ValueError):
        status(200)
    with pytest.raises(ValueError):
        slow(-1)
    with pytest.raises(AttributeError):  # dataclasses.FrozenInstanceError
        ok().kind = "status"  # type: ignore[misc]


def test_close_is_prompt_and_idempotent() -> None:
    """close() returns quickly even with a slow request in flight, and may be called twice."""
    server = FakeOpenAI(api_key=KEY)
    server.enqueue(slow(30))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    body = json.dumps({"model": "m", "messages": []}).encode()
    conn.request("POST", "/v1/chat/completions", body=body, headers={"Authorization": f"Bearer {KEY}"})
    time.sleep(0.05)
    started = time.monotonic()
    server.close()
    server.close()
    assert time.monotonic() - started < 1.0
    conn.close()
