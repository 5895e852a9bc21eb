"""Clients must not multiply paid attempts: x-should-retry and Retry-After, with the real SDK's default retries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from flask import Flask

from tests.fakes.fake_openai import FakeOpenAI, status
from tests.integration.servers import FAKE_KEY, fake_openai, model_entry, registry_json, serving  # noqa: F401

HI = [{"role": "user", "content": "hi"}]
TWO = registry_json(model_entry("openai", "a", 3, 0.0001, 0.0004), model_entry("openai", "b", 3, 0.0002, 0.0008))


@pytest.fixture
def app(make_app: Callable[..., Flask], fake_openai: FakeOpenAI) -> Flask:  # noqa: F811
    return make_app(models_config_json=TWO, openai_api_key=FAKE_KEY, openai_base_url=fake_openai.base_url)


@pytest.mark.parametrize("code", [500, 503, 502])
def test_a_failed_request_reaches_the_upstream_once_per_model_with_the_sdks_default_retries(
    app: Flask, fake_openai: FakeOpenAI, code: int  # noqa: F811
) -> None:
    fake_openai.set_default(status(code))
    with serving(app) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused")  # default: max_retries=2
        assert client.max_retries == 2
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="auto", messages=HI)  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert [r.body["model"] for r in fake_openai.chat_requests if r.body] == ["a", "b"]


def test_a_4xx_is_never_retried_by_the_sdk(app: Flask, fake_openai: FakeOpenAI) -> None:  # noqa: F811
    with serving(app) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused")
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="auto", messages=HI, extra_body={"routing": {"min_quality": 9}})
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_a_rate_limit_beyond_the_deadline_says_when_to_come_back(
    app: Flask, fake_openai: FakeOpenAI  # noqa: F811
) -> None:
    fake_openai.set_default(status(429, retry_after=120))
    response = app.test_client().post("/v1/chat/completions", json={"model": "auto", "messages": HI})
    assert response.status_code == 503
    assert response.get_json()["error"]["type"] == "upstream_rate_limited"
    assert response.headers["Retry-After"] == "120"
    assert response.headers["x-should-retry"] == "true"


@pytest.mark.parametrize(
    ("path", "body"),
    [("/route", {"input": ""}), ("/v1/chat/completions", {"model": "nope:x", "messages": HI}),
     ("/v1/chat/completions", {"model": "auto", "messages": HI, "routing": {"max_cost_usd": 1e-12}})],
)
def test_every_4xx_says_a_retry_would_only_repeat_it(client: Any, path: str, body: dict[str, Any]) -> None:
    response = client.post(path, json=body)
    assert 400 <= response.status_code < 500
    assert response.headers["x-should-retry"] == "false"
