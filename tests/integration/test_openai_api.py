"""The OpenAI-compatible API driven by the real openai SDK over loopback HTTP.

The app is served by werkzeug in a thread; the SDK talks to it as it would to OpenAI. Costs are
checked exactly: the registry's prices times the reported usage, in Decimal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from flask import Flask
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from costroute.core.registry import DEFAULT_REGISTRY_ROWS
from tests.fakes.fake_openai import FakeOpenAI, count_prompt_tokens
from tests.integration.servers import FAKE_KEY, fake_openai, model_entry, registry_json, sdk_for  # noqa: F401

HAIKU = [{"role": "user", "content": "Write a haiku about the sea."}]
PRICES = {f"{p}:{n}": (Decimal(i), Decimal(o)) for p, n, _q, i, o, _l, _m in DEFAULT_REGISTRY_ROWS}


def exact_cost(model_id: str, prompt_tokens: int, completion_tokens: int, prices: dict = PRICES) -> Decimal:
    """The cost from the registry's prices, exactly."""
    price_in, price_out = prices[model_id]
    return (prompt_tokens * price_in + completion_tokens * price_out) / 1000


@pytest.fixture
def sdk(make_app: Callable[..., Flask]) -> Iterator[openai.OpenAI]:
    """The SDK against the default app (built-in mock registry)."""
    with sdk_for(make_app()) as client:
        yield client


# ---------------------------------------------------------------------------------------------
# Non-streamed completions


def test_auto_returns_typed_completion_with_routing_and_headers(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="auto", messages=HAIKU, extra_body={"routing": {"max_cost_usd": 0.002, "min_quality": 3}}
    )
    completion = raw.parse()
    assert isinstance(completion, ChatCompletion)
    assert completion.object == "chat.completion"
    assert completion.model == "mock:advanced"
    assert completion.choices[0].message.content == "[MOCK:advanced] Echo: Write a haiku about the sea."
    assert completion.choices[0].finish_reason == "stop"

    routing = completion.model_extra["routing"]
    assert routing["strategy"] == "quality_then_cost_with_provider_bias"
    assert any("Chose mock:advanced on rung 1" in line for line in routing["decision_trace"])
    assert routing["estimate"]["cost_usd"] > 0
    assert routing["estimate"]["input_tokens"] > 0
    usage = completion.usage
    assert usage is not None
    cost = exact_cost("mock:advanced", usage.prompt_tokens, usage.completion_tokens)
    assert routing["actual_cost_usd"] == float(cost)
    assert [(a["model"], a["outcome"]) for a in routing["attempts"]] == [("mock:advanced", "ok")]

    headers = raw.headers
    assert headers["x-route-model"] == "mock:advanced"
    assert float(headers["x-route-estimated-cost-usd"]) == routing["estimate"]["cost_usd"]
    assert headers["x-route-cost-usd"] == format(cost.normalize(), "f")  # exact, plain notation
    assert "e" not in headers["x-route-estimated-cost-usd"]
    assert headers["x-route-attempts"] == "1"
    assert float(headers["x-route-overhead-ms"]) >= 0


def test_routing_from_x_route_headers(sdk: openai.OpenAI) -> None:
    """A client that cannot add body fields routes with x-route-* headers."""
    completion = sdk.chat.completions.create(
        model="auto",
        messages=HAIKU,
        extra_headers={"x-route-min-quality": "5", "x-route-max-cost-usd": "0.5", "x-route-strict-budget": "true"},
    )
    assert completion.model == "mock:premium"
    trace = completion.model_extra["routing"]["decision_trace"]
    assert trace[0] == "Required quality 5, from x-route-min-quality."  # named as the caller sent it
    assert any("$0.5" in line for line in trace)
    assert any(line.startswith("strict_budget") for line in trace)


def test_body_routing_wins_over_headers_per_field(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="auto",
        messages=HAIKU,
        extra_headers={"x-route-min-quality": "5", "x-route-max-cost-usd": "0.002"},
        extra_body={"routing": {"min_quality": 3}},
    )
    # min_quality 3 from the body, the budget still from the header: advanced, not premium.
    assert completion.model == "mock:advanced"
    trace = completion.model_extra["routing"]["decision_trace"]
    assert any("estimated cost <= $0.002" in line for line in trace)


@pytest.mark.parametrize(
    ("header", "value"),
    [("x-route-min-quality", "high"), ("x-route-min-quality", "9"), ("x-route-max-cost-usd", "-1"),
     ("x-route-strict-budget", "1"), ("x-route-prefer-provider", "nobody")],
)
def test_bad_header_value_is_a_bad_request_naming_the_header(sdk: openai.OpenAI, header: str, value: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="auto", messages=HAIKU, extra_headers={header: value})
    assert caught.value.param == header
    assert header in caught.value.message


def test_a_bad_header_value_is_ignored_when_the_body_sets_the_field(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="auto", messages=HAIKU, extra_headers={"x-route-min-quality": "9"}, extra_body={"routing": {"min_quality": 2}}
    )
    assert completion.model == "mock:standard"


def test_bad_body_routing_value_names_the_body_field(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="auto", messages=HAIKU, extra_body={"routing": {"prefer_provider": "nobody"}},
                                    extra_headers={"x-route-min-quality": "2"})
    assert caught.value.param == "routing.prefer_provider"


def test_pinned_model_is_called_with_the_same_estimate_and_ceiling(sdk: openai.OpenAI) -> None:
    routing = {"max_cost_usd": 0.002, "min_quality": 3}
    routed = sdk.chat.completions.create(model="auto", messages=HAIKU, extra_body={"routing": routing})
    pinned = sdk.chat.completions.create(
        model="mock:advanced", messages=HAIKU, extra_body={"routing": {"max_cost_usd": 0.002}}
    )
    assert routed.model == pinned.model == "mock:advanced"
    r_routing, p_routing = routed.model_extra["routing"], pinned.model_extra["routing"]
    assert p_routing["decision_trace"][0] == "Model pinned to mock:advanced by the request: no routing."
    assert p_routing["estimate"] == r_routing["estimate"]
    assert p_routing["max_tokens"] == r_routing["max_tokens"] < 4096
    assert p_routing["cost_ceiling_applied"] is r_routing["cost_ceiling_applied"] is True
    ceiling_lines = [line for line in p_routing["decision_trace"] if line.startswith("Cost ceiling")]
    assert ceiling_lines == [line for line in r_routing["decision_trace"] if line.startswith("Cost ceiling")]
    assert len(ceiling_lines) == 1


def test_pinned_model_without_routing(sdk: openai.OpenAI) -> None:
    """A pinned model is called even when it would never be routed to (quality 1 for any task)."""
    completion = sdk.chat.completions.create(model="mock:basic", messages=HAIKU)
    assert completion.model == "mock:basic"
    assert completion.choices[0].message.content.startswith("[MOCK:basic] Echo:")
    routing = completion.model_extra["routing"]
    assert routing["max_tokens"] == 1024  # no budget: the model's own cap
    assert routing["cost_ceiling_applied"] is False


def test_unknown_model_is_not_found(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="mock:nonexistent", messages=HAIKU)
    assert caught.value.param == "model"
    assert "mock:basic" in caught.value.message  # lists what exists


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "auto"}, "messages"),
        ({"model": "auto", "messages": HAIKU, "routing": {"min_quality": 9}}, "routing.min_quality"),
        (
            {
                "model": "auto",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is in this picture?"},
                            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                        ],
                    }
                ],
            },
            "messages[0].content",
        ),
        ({"model": "auto", "messages": HAIKU, "n": 2}, "n"),
        ({"model": "auto", "messages": HAIKU, "max_tokens": 0}, "max_tokens"),
    ],
    ids=["missing-messages", "min-quality-9", "image-part", "n-2", "max-tokens-0"],
)
def test_malformed_requests_are_bad_requests_with_param(sdk: openai.OpenAI, body: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        # The raw post: the typed create() would refuse some of these before sending.
        sdk.post("/chat/completions", body=body, cast_to=ChatCompletion)
    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"


def test_models_list_has_auto_and_every_registry_id(sdk: openai.OpenAI) -> None:
    ids = [model.id for model in sdk.models.list()]
    assert ids[0] == "auto"
    assert set(ids[1:]) == set(PRICES)
    assert len(ids) == len(PRICES) + 1


# ---------------------------------------------------------------------------------------------
# Streaming


def _collect(stream: Any) -> list[ChatCompletionChunk]:
    chunks = list(stream)  # iteration must end: the server sends [DONE]
    assert chunks and all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    return chunks


def _text(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)


def test_stream_chunks_join_to_the_answer_and_end(sdk: openai.OpenAI) -> None:
    whole = sdk.chat.completions.create(model="auto", messages=HAIKU, extra_body={"routing": {"min_quality": 3}})
    raw = sdk.chat.completions.with_raw_response.create(
        model="auto", messages=HAIKU, stream=True, extra_body={"routing": {"min_quality": 3}}
    )
    assert raw.headers["x-route-model"] == "mock:advanced"
    assert raw.headers["x-route-attempts"] == "1"
    chunks = _collect(raw.parse())
    assert _text(chunks) == whole.choices[0].message.content
    assert {chunk.model for chunk in chunks} == {"mock:advanced"}
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)  # usage only when asked for


def test_stream_with_include_usage_ends_with_usage_and_routing(sdk: openai.OpenAI) -> None:
    chunks = _collect(
        sdk.chat.completions.create(
            model="auto",
            messages=HAIKU,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"routing": {"min_quality": 3, "max_cost_usd": 0.002}},
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(chunk.usage is None for chunk in chunks[:-1])
    routing = last.model_extra["routing"]
    cost = exact_cost("mock:advanced", last.usage.prompt_tokens, last.usage.completion_tokens)
    assert routing["actual_cost_usd"] == float(cost)
    assert routing["attempts"][0]["outcome"] == "ok"
    assert any(line.startswith("Settled: mock:advanced") for line in routing["decision_trace"])


@pytest.fixture
def openai_app(make_app: Callable[..., Flask], fake_openai: FakeOpenAI) -> Flask:  # noqa: F811
    """An app whose registry has two mock models and one OpenAI model served by the fake."""
    return make_app(
        models_config_json=registry_json(
            model_entry("mock", "cheap", 1, 0.0001, 0.0002),
            model_entry("openai", "gpt-4o-mini", 3, 0.00015, 0.0006, latency_ms=800),
        ),
        openai_api_key=FAKE_KEY,
        openai_base_url=fake_openai.base_url,
    )


def test_stream_through_the_openai_provider(openai_app: Flask, fake_openai: FakeOpenAI) -> None:  # noqa: F811
    messages = [{"role": "user", "content": "stream me five words"}]
    with sdk_for(openai_app) as sdk:
        chunks = _collect(
            sdk.chat.completions.create(
                model="auto",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"routing": {"min_quality": 3, "max_cost_usd": 0.01}},
            )
        )
    assert _text(chunks) == "[FAKE:gpt-4o-mini] stream me five words"
    assert {chunk.model for chunk in chunks} == {"openai:gpt-4o-mini"}
    last = chunks[-1]
    assert last.usage is not None
    assert last.usage.prompt_tokens == count_prompt_tokens(messages)
    assert last.usage.completion_tokens == 5
    prices = {"openai:gpt-4o-mini": (Decimal("0.00015"), Decimal("0.0006"))}
    cost = exact_cost("openai:gpt-4o-mini", last.usage.prompt_tokens, 5, prices)
    assert last.model_extra["routing"]["actual_cost_usd"] == float(cost)
    (sent,) = fake_openai.chat_requests
    assert sent.body is not None
    assert sent.body["stream"] is True
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.body["max_tokens"] == last.model_extra["routing"]["max_tokens"]


def test_non_streamed_through_the_openai_provider(openai_app: Flask, fake_openai: FakeOpenAI) -> None:  # noqa: F811
    with sdk_for(openai_app) as sdk:
        completion = sdk.chat.completions.create(
            model="openai:gpt-4o-mini", messages=HAIKU, temperature=0.2, max_tokens=50
        )
    assert completion.model == "openai:gpt-4o-mini"
    assert completion.choices[0].message.content == "[FAKE:gpt-4o-mini] Write a haiku about the sea."
    (sent,) = fake_openai.chat_requests
    assert sent.body is not None
    assert sent.body["temperature"] == 0.2  # passed through
    assert sent.body["max_tokens"] == 50
    assert "routing" not in sent.body
