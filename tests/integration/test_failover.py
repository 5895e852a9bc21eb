"""Failover, retries and the key with the OpenAI provider against FakeOpenAI (real HTTP on loopback)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from costroute.core.outcome import FailureKind
from costroute.providers.base import ProviderCall, ProviderError
from costroute.providers.mock import MockProvider
from tests.adapters import RotatingKeys, openai_provider
from tests.answers import attempts_of, trace_of
from tests.conftest import FakeClock
from tests.fakes.fake_openai import FakeOpenAI, malformed, slow, status
from tests.integration.servers import FAKE_KEY, fake_openai, model_entry, registry_json  # noqa: F401
from tests.registries import parse_registry

HI = [{"role": "user", "content": "hi"}]
REGISTRY = registry_json(
    model_entry("openai", "a", 3, 0.0001, 0.0004),
    model_entry("openai", "b", 3, 0.0002, 0.0008),
    model_entry("mock", "fallback", 3, 0.0003, 0.0009),
)


@pytest.fixture
def build(make_app: Callable[..., Flask], fake_openai: FakeOpenAI) -> Callable[..., Flask]:  # noqa: F811
    def factory(runtime_kwargs: dict[str, Any] | None = None, **settings: Any) -> Flask:
        merged = {"models_config_json": REGISTRY, "openai_api_key": FAKE_KEY, "openai_base_url": fake_openai.base_url,
                  **settings}
        return make_app(runtime_kwargs=runtime_kwargs, **merged)

    return factory


def chat(app: Flask, stream: bool = False, model: str = "auto") -> Any:
    body: dict[str, Any] = {"model": model, "messages": HI, "routing": {"min_quality": 3}}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return app.test_client().post("/v1/chat/completions", json=body)


def route(app: Flask) -> Any:
    return app.test_client().post("/route", json={"input": "hi", "constraints": {"min_quality": 3}})


def sent_models(fake: FakeOpenAI) -> list[str]:
    return [request.body["model"] for request in fake.chat_requests if request.body]


# ---------------------------------------------------------------------------------------------
# Failures worth another model


@pytest.mark.parametrize(
    ("behaviour", "outcome"),
    [(status(500), "upstream"), (status(503), "upstream"), (status(429), "rate_limited"), (malformed(), "upstream")],
    ids=["500", "503", "429-no-retry-after", "malformed"],
)
@pytest.mark.parametrize("endpoint", ["route", "chat"])
def test_failure_fails_over_to_the_next_openai_model(
    build: Callable[..., Flask], fake_openai: FakeOpenAI, behaviour: Any, outcome: str, endpoint: str  # noqa: F811
) -> None:
    fake_openai.enqueue(behaviour)
    response = (route if endpoint == "route" else chat)(build())
    assert response.status_code == 200, response.get_json()
    assert attempts_of(response) == [("openai:a", outcome), ("openai:b", "ok")]
    assert sent_models(fake_openai) == ["a", "b"]
    if endpoint == "chat":
        assert response.headers["x-route-attempts"] == "2"
        assert response.headers["x-route-model"] == "openai:b"
    assert "  Chose openai:b on rung 1: estimated" in " ".join(trace_of(response))


def test_timeout_fails_over(build: Callable[..., Flask], fake_openai: FakeOpenAI) -> None:  # noqa: F811
    fake_openai.enqueue(slow(5))
    began = time.monotonic()
    response = chat(build(provider_timeout_seconds=0.3))
    assert time.monotonic() - began < 2
    assert response.status_code == 200
    assert attempts_of(response) == [("openai:a", "timeout"), ("openai:b", "ok")]


def test_connection_error_fails_over_to_another_provider(make_app: Callable[..., Flask]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = make_app(models_config_json=REGISTRY, openai_api_key=FAKE_KEY, openai_base_url=f"http://127.0.0.1:{port}/v1")
    response = chat(app)
    assert response.status_code == 200
    assert attempts_of(response) == [("openai:a", "connection"), ("openai:b", "connection"), ("mock:fallback", "ok")]


@pytest.mark.parametrize("behaviour", [status(502), malformed(), status(429)], ids=["502", "malformed", "429"])
def test_stream_fails_over_before_the_first_chunk(
    build: Callable[..., Flask], fake_openai: FakeOpenAI, behaviour: Any  # noqa: F811
) -> None:
    fake_openai.enqueue(behaviour)
    response = chat(build(), stream=True)
    assert response.status_code == 200
    assert response.headers["x-route-model"] == "openai:b"
    events = [json.loads(line[6:]) for line in response.get_data(as_text=True).splitlines() if line.startswith("data: {")]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == "[FAKE:b] hi"
    assert [(a["model"], a["outcome"]) for a in events[-1]["routing"]["attempts"]] == [
        ("openai:a", "rate_limited" if behaviour.status_code == 429 else "upstream"), ("openai:b", "ok")]


# ---------------------------------------------------------------------------------------------
# Retry-After and the deadline


def test_retry_after_that_fits_the_deadline_is_waited_out(
    build: Callable[..., Flask], fake_openai: FakeOpenAI, clock: FakeClock  # noqa: F811
) -> None:
    fake_openai.enqueue(status(429, retry_after=2))
    response = chat(build(runtime_kwargs={"clock": clock, "sleep": clock.sleep}, request_deadline_seconds=10))
    assert response.status_code == 200
    assert clock.slept == [2.0]
    assert attempts_of(response) == [("openai:a", "rate_limited"), ("openai:a", "ok")]
    assert sent_models(fake_openai) == ["a", "a"]
    assert "Honouring Retry-After: waiting 2 s, then trying openai:a once more." in trace_of(response)


def test_retry_after_is_waited_out_only_once(
    build: Callable[..., Flask], fake_openai: FakeOpenAI, clock: FakeClock  # noqa: F811
) -> None:
    fake_openai.enqueue(status(429, retry_after=1), status(429, retry_after=1))
    response = chat(build(runtime_kwargs={"clock": clock, "sleep": clock.sleep}))
    assert response.status_code == 200
    assert clock.slept == [1.0]
    assert attempts_of(response) == [("openai:a", "rate_limited"), ("openai:a", "rate_limited"), ("openai:b", "ok")]


def test_retry_after_beyond_the_deadline_fails_over_at_once(
    build: Callable[..., Flask], fake_openai: FakeOpenAI, clock: FakeClock  # noqa: F811
) -> None:
    fake_openai.enqueue(status(429, retry_after=30))
    response = chat(build(runtime_kwargs={"clock": clock, "sleep": clock.sleep}, request_deadline_seconds=10))
    assert response.status_code == 200
    assert clock.slept == []
    assert attempts_of(response) == [("openai:a", "rate_limited"), ("openai:b", "ok")]
    assert any(line.startswith("Retry-After 30 s plus openai:a's 400 ms does not fit") for line in trace_of(response))


def test_every_model_rate_limited_is_503_listing_attempts(
    build: Callable[..., Flask], fake_openai: FakeOpenAI  # noqa: F811
) -> None:
    fake_openai.set_default(status(429))
    app = build(models_config_json=registry_json(model_entry("openai", "a", 3, 0.0001, 0.0004),
                                                 model_entry("openai", "b", 3, 0.0002, 0.0008)))
    response = chat(app)
    assert response.status_code == 503
    assert response.get_json()["error"]["type"] == "upstream_rate_limited"
    assert attempts_of(response) == [("openai:a", "rate_limited"), ("openai:b", "rate_limited")]


def test_one_deadline_for_the_whole_request(build: Callable[..., Flask], fake_openai: FakeOpenAI) -> None:  # noqa: F811
    """Real time: a 1 s deadline with a 0.6 s provider timeout; the second attempt gets only what is left."""
    fake_openai.set_default(slow(5))
    began = time.monotonic()
    response = chat(build(request_deadline_seconds=1.0, provider_timeout_seconds=0.6))
    elapsed = time.monotonic() - began
    assert response.status_code == 504  # not the mock fallback: no time was left for it
    assert 0.9 <= elapsed < 3
    error = response.get_json()["error"]
    a, b = error["attempts"]
    assert (a["model"], a["outcome"], b["model"], b["outcome"]) == ("openai:a", "timeout", "openai:b", "timeout")
    assert b["duration_ms"] < a["duration_ms"] - 100  # b had the 0.4 s left, not the provider's 0.6 s
    assert error["type"] == "deadline_exceeded"


# ---------------------------------------------------------------------------------------------
# Failures that end the request


@pytest.mark.parametrize(("code", "http_status"), [(400, 400), (401, 502), (403, 502), (404, 502)])
def test_no_retry_and_no_failover_on_client_errors(
    build: Callable[..., Flask], fake_openai: FakeOpenAI, code: int, http_status: int  # noqa: F811
) -> None:
    fake_openai.enqueue(status(code))
    response = chat(build())
    assert response.status_code == http_status
    assert attempts_of(response) == [("openai:a", response.get_json()["error"]["attempts"][0]["outcome"])]
    assert len(fake_openai.chat_requests) == 1  # not retried, not failed over (and a 401 re-read the same key)


MODEL = parse_registry([model_entry("openai", "gpt-4o-mini", 3, 0.00015, 0.0006)]).models[0]
CALL = ProviderCall(messages=tuple(HI), max_tokens=20, timeout_s=5)


def test_401_re_reads_the_key_once_and_retries_with_the_new_one(fake_openai: FakeOpenAI) -> None:  # noqa: F811
    keys = RotatingKeys("sk-test-stale-000000", FAKE_KEY)
    provider = openai_provider(keys, base_url=fake_openai.base_url)
    completion = provider.complete(MODEL, CALL)
    assert completion.text == "[FAKE:gpt-4o-mini] hi"
    assert keys.refreshes == 1
    assert [r.headers["authorization"] for r in fake_openai.chat_requests] == [
        "Bearer sk-test-stale-000000", f"Bearer {FAKE_KEY}"]
    provider.complete(MODEL, CALL)  # the new key is kept: no further 401, no further re-read
    assert keys.refreshes == 1
    assert len(fake_openai.chat_requests) == 3


def test_401_with_no_new_key_is_not_retried(fake_openai: FakeOpenAI) -> None:  # noqa: F811
    keys = RotatingKeys("sk-test-wrong-111111", "sk-test-wrong-111111")
    with pytest.raises(ProviderError) as caught:
        openai_provider(keys, base_url=fake_openai.base_url).complete(MODEL, CALL)
    assert caught.value.kind is FailureKind.AUTH
    assert keys.refreshes == 1
    assert len(fake_openai.chat_requests) == 1


def test_401_re_read_through_the_service(make_app: Callable[..., Flask], fake_openai: FakeOpenAI) -> None:  # noqa: F811
    keys = RotatingKeys("sk-test-stale-222222", FAKE_KEY)
    providers = {"openai": openai_provider(keys, base_url=fake_openai.base_url), "mock": MockProvider()}
    app = make_app(runtime_kwargs={"providers": providers}, models_config_json=REGISTRY)
    response = chat(app)
    assert response.status_code == 200
    assert attempts_of(response) == [("openai:a", "ok")]  # one attempt: the re-read is inside it
    assert len(fake_openai.chat_requests) == 2


# ---------------------------------------------------------------------------------------------
# The key never leaks


LEAKY_MESSAGE = f"Incorrect API key provided: {FAKE_KEY}. You can find your API key at https://example.com."


@pytest.mark.parametrize("code", [400, 401, 403, 404, 429, 500, 503])
@pytest.mark.parametrize("stream", [False, True])
def test_the_key_never_appears_in_responses_or_logs(
    build: Callable[..., Flask], fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture,  # noqa: F811
    code: int, stream: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_openai.set_default(status(code, message=LEAKY_MESSAGE))
    app = build(models_config_json=registry_json(model_entry("openai", "a", 3, 0.0001, 0.0004)))
    client = app.test_client()
    responses = [
        chat(app, stream=stream),
        route(app),
        client.get("/health"),
        client.get("/models"),
        client.get("/v1/models"),
    ]
    assert responses[0].status_code >= 400
    assert fake_openai.chat_requests, "the fake was called"
    for response in responses:
        text = response.get_data(as_text=True) + json.dumps(dict(response.headers))
        assert FAKE_KEY not in text
        assert FAKE_KEY[-8:] not in text
    logged = caplog.text + "".join(
        record.getMessage() + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
        for record in caplog.records
    )
    assert caplog.records, "DEBUG logging captured something"
    assert FAKE_KEY not in logged
    assert FAKE_KEY[-8:] not in logged


def test_the_key_is_redacted_from_an_upstream_message_that_echoes_it(
    build: Callable[..., Flask], fake_openai: FakeOpenAI  # noqa: F811
) -> None:
    fake_openai.enqueue(status(403, message=LEAKY_MESSAGE))
    response = chat(build())
    assert response.status_code == 502
    message = response.get_json()["error"]["attempts"][0]["message"]
    assert "[redacted]" in message and FAKE_KEY not in message


@pytest.mark.parametrize("value", ["-5", "nan", "inf", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"])
def test_an_unusable_retry_after_is_ignored(
    build: Callable[..., Flask], fake_openai: FakeOpenAI, value: str  # noqa: F811
) -> None:
    """Real sleep: a negative or NaN wait would make time.sleep raise (a 500) if it were honoured."""
    fake_openai.enqueue(status(429, retry_after=value))
    began = time.monotonic()
    response = chat(build())
    assert response.status_code == 200, response.get_json()
    assert time.monotonic() - began < 1
    assert attempts_of(response) == [("openai:a", "rate_limited"), ("openai:b", "ok")]


def test_retry_after_ms_is_read_before_retry_after() -> None:
    from costroute.providers.base import retry_after_seconds

    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "-1", "retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}) is None
    assert retry_after_seconds({"retry-after": "nan"}) is None
    assert retry_after_seconds({}) is None
