"""The OpenAI provider through /route against a local fake OpenAI server, driven by the real SDK."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from tests.fakes.fake_openai import FakeOpenAI, malformed, reply, slow, status

KEY = "sk-test-provider-key-5f2c9a"
REGISTRY = json.dumps(
    [
        ["mock", "basic", 1, 0.0001, 0.0002, 150, 1024],
        {"provider": "openai", "name": "gpt-4o-mini", "quality": 4, "in_cost_per_1k": 0.00015,
         "out_cost_per_1k": 0.0006, "latency_ms": 800, "max_output_tokens": 4096},
    ]
)
TO_OPENAI = {"input": "Write a haiku about the sea.", "constraints": {"min_quality": 4}}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A fake OpenAI server that accepts KEY."""
    server = FakeOpenAI(api_key=KEY)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def openai_client(make_app: Callable[..., Flask], fake: FakeOpenAI) -> Any:
    """The app with the mock tier and one OpenAI model served by the fake."""
    app = make_app(models_config_json=REGISTRY, openai_api_key=KEY, openai_base_url=fake.base_url,
                   provider_timeout_seconds=2.0)
    return app.test_client()


def route(client: Any, body: dict[str, Any]) -> Any:
    """POST /route."""
    return client.post("/route", data=json.dumps(body))


def test_routes_to_openai_and_settles_actual_cost_from_usage(openai_client: Any, fake: FakeOpenAI) -> None:
    response = route(openai_client, TO_OPENAI)
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["model"] == "openai:gpt-4o-mini"
    assert body["response"] == "[FAKE:gpt-4o-mini] Write a haiku about the sea."
    assert body["provider_latency_kind"] == "measured"
    usage = body["usage"]
    assert usage["prompt_tokens"] == len("Write a haiku about the sea.") + 4 + 3
    assert usage["cost_usd"] == pytest.approx((usage["prompt_tokens"] * 0.00015 + usage["completion_tokens"] * 0.0006) / 1000)
    (recorded,) = fake.chat_requests
    assert recorded.headers["authorization"] == f"Bearer {KEY}"
    assert recorded.body["model"] == "gpt-4o-mini"
    assert recorded.body["messages"] == [{"role": "user", "content": "Write a haiku about the sea."}]
    assert recorded.body["max_tokens"] == 4096


@pytest.mark.parametrize(
    ("behaviour", "outcome"),
    [(status(500), "upstream"), (status(402, message="Insufficient credits"), "spend_limit"),
     (status(402, message="Insufficient Balance"), "spend_limit"), (status(408), "timeout")],
    ids=["500", "402-openrouter", "402-deepseek", "408"],
)
def test_upstream_failures_fail_over_down_the_ladder(openai_client: Any, fake: FakeOpenAI, behaviour: Any,
                                                     outcome: str) -> None:
    fake.set_default(behaviour)
    body = route(openai_client, TO_OPENAI)
    # Failover re-runs the ladder without the failed model: only mock:basic is left, below the
    # quality floor, so the ladder descends (quality relaxed) as it would have without OpenAI.
    payload = body.get_json()
    assert body.status_code == 200
    assert payload["model"] == "mock:basic"
    assert [a["outcome"] for a in payload["attempts"]] == [outcome, "ok"]
    assert len(fake.chat_requests) == 1


def test_upstream_failure_with_no_fallback_is_502(make_app: Callable[..., Flask], fake: FakeOpenAI) -> None:
    only_openai = json.dumps([json.loads(REGISTRY)[1]])
    client = make_app(models_config_json=only_openai, openai_api_key=KEY, openai_base_url=fake.base_url).test_client()
    fake.set_default(status(500, message="the upstream broke"))
    response = route(client, TO_OPENAI)
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["type"] == "upstream_error" and "500" in error["message"]
    assert [a["model"] for a in error["attempts"]] == ["openai:gpt-4o-mini"]


@pytest.mark.parametrize(
    ("behaviour", "status_code", "error_type"),
    [
        (status(401), 502, "upstream_auth_error"),
        (status(429, retry_after=60), 503, "upstream_rate_limited"),
        (slow(3.0), 504, "upstream_timeout"),
        (malformed(), 502, "upstream_error"),
        (status(400, message="bad temperature"), 400, "upstream_bad_request"),
        (status(402, message="Insufficient credits"), 503, "upstream_spend_limit"),
        (status(408), 504, "upstream_timeout"),
    ],
)
def test_sdk_errors_are_translated_and_never_leak_the_key(
    make_app: Callable[..., Flask], fake: FakeOpenAI, caplog: pytest.LogCaptureFixture,
    behaviour: Any, status_code: int, error_type: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    only_openai = json.dumps([json.loads(REGISTRY)[1]])
    client = make_app(models_config_json=only_openai, openai_api_key=KEY, openai_base_url=fake.base_url,
                      provider_timeout_seconds=0.5).test_client()
    fake.set_default(behaviour)
    response = route(client, TO_OPENAI)
    assert response.status_code == status_code, response.get_data(as_text=True)
    assert response.get_json()["error"]["type"] == error_type
    assert KEY not in response.get_data(as_text=True)
    assert KEY not in caplog.text


def test_wrong_key_is_reported_without_echoing_it(make_app: Callable[..., Flask], fake: FakeOpenAI) -> None:
    wrong = "sk-test-wrong-key-77aa"
    only_openai = json.dumps([json.loads(REGISTRY)[1]])
    client = make_app(models_config_json=only_openai, openai_api_key=wrong, openai_base_url=fake.base_url).test_client()
    response = route(client, TO_OPENAI)
    assert response.status_code == 502
    assert wrong not in response.get_data(as_text=True) and KEY not in response.get_data(as_text=True)


def test_answer_text_comes_from_the_provider(openai_client: Any, fake: FakeOpenAI) -> None:
    fake.enqueue(reply("The sea breathes."))
    assert route(openai_client, TO_OPENAI).get_json()["response"] == "The sea breathes."


def test_a_model_can_insist_on_max_completion_tokens(make_app: Callable[..., Flask], fake: FakeOpenAI) -> None:
    reasoning = {**json.loads(REGISTRY)[1], "name": "o-mini", "max_tokens_field": "max_completion_tokens"}
    client = make_app(models_config_json=json.dumps([reasoning]), openai_api_key=KEY,
                      openai_base_url=fake.base_url).test_client()
    assert route(client, {**TO_OPENAI, "constraints": {"max_cost_usd": 0.001}}).status_code == 200
    (recorded,) = fake.chat_requests
    assert "max_tokens" not in recorded.body
    assert 0 < recorded.body["max_completion_tokens"] < 4096


def test_max_tokens_field_must_be_one_of_the_two_names(make_app: Callable[..., Flask]) -> None:
    entry = {**json.loads(REGISTRY)[1], "max_tokens_field": "limit"}
    response = make_app(models_config_json=json.dumps([entry])).test_client().get("/models")
    assert response.status_code == 503
    assert "max_tokens_field" in response.get_json()["error"]["message"]


def test_unicode_errors_are_told_apart_by_direction() -> None:
    from costroute.core.outcome import FailureKind
    from costroute.providers.openai import _translate

    # Encoding the request fails on the caller's text; decoding a streamed line on the upstream's bytes.
    encoding = _translate(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), KEY)
    decoding = _translate(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), KEY)
    assert (encoding.kind, encoding.status) == (FailureKind.BAD_REQUEST, 400)
    assert (decoding.kind, decoding.status, decoding.failover) == (FailureKind.UPSTREAM, 502, True)
