"""An upstream that answers badly is an upstream failure, never our 500 (issue: never a 500, never a silent cut).

Every case runs against FakeOpenAI over real HTTP through the real SDK inside the adapter.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask

from tests.fakes.fake_openai import FakeOpenAI, cut_stream, overspend, raw_json, raw_stream
from tests.integration.servers import FAKE_KEY, fake_openai, model_entry, registry_json  # noqa: F401

HI = [{"role": "user", "content": "hi"}]
TWO = registry_json(model_entry("openai", "a", 3, 0.0001, 0.0004), model_entry("openai", "b", 3, 0.0002, 0.0008))
ONE = registry_json(model_entry("openai", "a", 3, 0.0001, 0.0004))

GOOD_CHOICE = {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
GOOD_USAGE = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
BAD_BODIES = {
    "message-null": {"choices": [{**GOOD_CHOICE, "message": None}], "usage": GOOD_USAGE},
    "message-string": {"choices": [{**GOOD_CHOICE, "message": "hi"}], "usage": GOOD_USAGE},
    "choices-empty": {"choices": [], "usage": GOOD_USAGE},
    "choices-missing": {"usage": GOOD_USAGE},
    "usage-strings": {"choices": [GOOD_CHOICE], "usage": {**GOOD_USAGE, "prompt_tokens": "5"}},
    "usage-negative": {"choices": [GOOD_CHOICE], "usage": {**GOOD_USAGE, "completion_tokens": -3}},
    "content-number": {"choices": [{**GOOD_CHOICE, "message": {"role": "assistant", "content": 7}}], "usage": GOOD_USAGE},
    "not-an-object": [1, 2, 3],
    "cached-beyond-prompt": {"choices": [GOOD_CHOICE],
                             "usage": {**GOOD_USAGE, "prompt_tokens_details": {"cached_tokens": 99}}},
}


@pytest.fixture
def build(make_app: Callable[..., Flask], fake_openai: FakeOpenAI) -> Callable[[str], Flask]:  # noqa: F811
    def factory(registry: str) -> Flask:
        return make_app(models_config_json=registry, openai_api_key=FAKE_KEY, openai_base_url=fake_openai.base_url)

    return factory


def chat(app: Flask, **extra: Any) -> Any:
    return app.test_client().post("/v1/chat/completions", json={"model": "auto", "messages": HI,
                                                                "routing": {"min_quality": 3}, **extra})


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
@pytest.mark.parametrize("endpoint", ["/route", "/v1/chat/completions"])
def test_a_200_that_is_not_a_chat_completion_fails_over_like_a_5xx(
    build: Callable[[str], Flask], fake_openai: FakeOpenAI, name: str, endpoint: str  # noqa: F811
) -> None:
    fake_openai.enqueue(raw_json(BAD_BODIES[name]))
    client = build(TWO).test_client()
    if endpoint == "/route":
        response = client.post("/route", json={"input": "hi", "constraints": {"min_quality": 3}})
        account = response.get_json()
    else:
        response = client.post("/v1/chat/completions", json={"model": "auto", "messages": HI,
                                                             "routing": {"min_quality": 3}})
        account = response.get_json()["routing"]
    assert response.status_code == 200, response.get_json()
    assert [(a["model"], a["outcome"]) for a in account["attempts"]] == [("openai:a", "upstream"), ("openai:b", "ok")]
    assert "malformed response" in account["attempts"][0]["message"]


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_with_nothing_left_a_bad_200_is_a_502_upstream_error(
    build: Callable[[str], Flask], fake_openai: FakeOpenAI, name: str  # noqa: F811
) -> None:
    fake_openai.set_default(raw_json(BAD_BODIES[name]))
    response = chat(build(ONE))
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["type"] == "upstream_error"
    assert [a["outcome"] for a in error["attempts"]] == ["upstream"]
    assert response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("graceful", [False, True], ids=["connection-dropped", "body-ended"])
def test_a_stream_cut_without_finish_reason_or_done_is_a_failure_settled_on_the_worst_case(
    build: Callable[[str], Flask], fake_openai: FakeOpenAI, graceful: bool  # noqa: F811
) -> None:
    fake_openai.enqueue(cut_stream(after_words=2, graceful=graceful))
    response = chat(build(ONE), stream=True, stream_options={"include_usage": True}, max_tokens=50)
    assert response.status_code == 200
    events = [line[6:] for line in response.get_data(as_text=True).split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert "error" in last, "a cut stream must end with the error event, not a finish reason"
    assert not any('"finish_reason": "stop"' in event for event in events)
    routing = last["routing"]
    (attempt,) = routing["attempts"]
    assert attempt["outcome"] != "ok"
    # Settled on the plan's whole worst case: the prompt bound and every token it was allowed.
    bound = routing["decision_trace"][-1]
    assert "failed mid-stream without usage; settled on the whole worst case" in bound
    assert Decimal(repr(routing["actual_cost_usd"])) > 0


def test_a_provider_that_ignores_max_tokens_is_reported_over_budget(
    build: Callable[[str], Flask], fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    caplog.set_level(logging.WARNING, logger="costroute")
    fake_openai.set_default(overspend(5000))
    app = build(ONE)
    response = app.test_client().post("/v1/chat/completions", json={"model": "auto", "messages": HI,
                                                                    "routing": {"max_cost_usd": 0.0005}})
    assert response.status_code == 200
    body = response.get_json()
    routing = body["routing"]
    sent = fake_openai.chat_requests[-1].body
    assert sent is not None and sent["max_tokens"] < 5000  # the ceiling was sent, and ignored
    assert routing["over_budget"] is True
    actual = Decimal(response.headers["x-route-cost-usd"])
    over = Decimal(response.headers["x-route-over-budget-usd"])
    assert actual - over == Decimal("0.0005")
    sentence = next(line for line in routing["decision_trace"] if line.startswith("Over budget:"))
    assert "openai did not honour max_tokens" in sentence and f"by ${over}" in sentence
    assert any(record.levelno == logging.WARNING and "Over budget" in record.getMessage() for record in caplog.records)
    native = app.test_client().post("/route", json={"input": "hi", "constraints": {"max_cost_usd": 0.0005}}).get_json()
    assert native["over_budget"] is True and native["over_budget_usd"] == float(over)


def test_within_budget_the_answer_says_so(build: Callable[[str], Flask]) -> None:
    response = build(ONE).test_client().post("/route", json={"input": "hi", "constraints": {"max_cost_usd": 0.01}})
    body = response.get_json()
    assert (body["over_budget"], body["over_budget_usd"]) == (False, None)
    assert "x-route-over-budget-usd" not in response.headers


def test_a_value_the_sdk_cannot_encode_is_the_callers_400_before_any_call(
    build: Callable[[str], Flask], fake_openai: FakeOpenAI  # noqa: F811
) -> None:
    raw = '{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}'
    response = build(ONE).test_client().post("/v1/chat/completions", data=raw)
    assert response.status_code == 400
    assert "overflows to infinity" in response.get_json()["error"]["message"]
    assert fake_openai.chat_requests == []


def chunk(content: str | None = None, finish: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """A chat.completion.chunk: one choice with this content and finish reason, or (with usage) none."""
    body: dict[str, Any] = {"id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": 1, "model": "a"}
    if usage is not None:
        return {**body, "choices": [], "usage": usage}
    delta = {"content": content} if content is not None else {}
    return {**body, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


NOT_UTF8 = b'{"message": "\xff"}'


def streamed(app: Flask) -> tuple[Any, list[dict[str, Any]]]:
    """A streamed /v1 answer and its JSON events."""
    response = chat(app, stream=True, stream_options={"include_usage": True})
    text = response.get_data(as_text=True)
    return response, [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def test_a_streamed_line_that_is_not_utf8_fails_over_before_the_first_piece(
    build: Callable[[str], Flask], fake_openai: FakeOpenAI  # noqa: F811
) -> None:
    fake_openai.enqueue(raw_stream(NOT_UTF8))
    response, events = streamed(build(TWO))
    assert response.status_code == 200
    routing = events[-1]["routing"]
    assert [(a["model"], a["outcome"]) for a in routing["attempts"]] == [("openai:a", "upstream"), ("openai:b", "ok")]
    assert "not valid UTF-8" in routing["attempts"][0]["message"]


def test_with_nothing_left_a_streamed_line_that_is_not_utf8_is_a_502(
    build: Callable[[str], Flask], fake_openai: FakeOpenAI  # noqa: F811
) -> None:
    fake_openai.set_default(raw_stream(NOT_UTF8))
    response = chat(build(ONE), stream=True)
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["type"] == "upstream_error"
    assert [a["outcome"] for a in error["attempts"]] == ["upstream"]


def test_a_streamed_line_that_is_not_utf8_mid_answer_is_an_upstream_failure(
    build: Callable[[str], Flask], fake_openai: FakeOpenAI  # noqa: F811
) -> None:
    fake_openai.enqueue(raw_stream(chunk("par"), NOT_UTF8))
    response, events = streamed(build(TWO))
    assert response.status_code == 200
    assert [e["choices"][0]["delta"].get("content") for e in events if e.get("choices")][1:] == ["par"]
    error = events[-1]["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "upstream")
    assert "not valid UTF-8" in error["message"]
    assert len(fake_openai.chat_requests) == 1  # a stream that started does not fail over


FAILED_PARTWAY = {"choices": [{**GOOD_CHOICE, "finish_reason": "error"}], "usage": GOOD_USAGE}


def test_a_generation_that_failed_partway_fails_over(build: Callable[[str], Flask],
                                                     fake_openai: FakeOpenAI) -> None:  # noqa: F811
    fake_openai.enqueue(raw_json(FAILED_PARTWAY))
    response = chat(build(TWO))
    assert response.status_code == 200
    attempts = response.get_json()["routing"]["attempts"]
    assert [(a["model"], a["outcome"]) for a in attempts] == [("openai:a", "upstream"), ("openai:b", "ok")]
    assert "finish_reason 'error'" in attempts[0]["message"]


def test_with_nothing_left_a_generation_that_failed_partway_is_a_502(
    build: Callable[[str], Flask], fake_openai: FakeOpenAI  # noqa: F811
) -> None:
    fake_openai.set_default(raw_json(FAILED_PARTWAY))
    response = chat(build(ONE))
    assert response.status_code == 502
    assert response.get_json()["error"]["type"] == "upstream_error"


def test_a_streamed_generation_that_failed_partway_ends_with_an_upstream_error(
    build: Callable[[str], Flask], fake_openai: FakeOpenAI  # noqa: F811
) -> None:
    fake_openai.enqueue(raw_stream(chunk("par"), chunk(finish="error"), chunk(usage=GOOD_USAGE)))
    response, events = streamed(build(ONE))
    assert response.status_code == 200
    assert not any(e["choices"][0].get("finish_reason") for e in events if e.get("choices"))
    error = events[-1]["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "upstream")
    assert events[-1]["routing"]["attempts"][0]["outcome"] == "upstream"


# A Gemini OpenAI-compatible gateway: reasoning tokens in total_tokens only.
UNDERSTATED_USAGE = {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 81,
                     "completion_tokens_details": {"reasoning_tokens": 60}}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_tokens_beyond_prompt_and_completion_in_total_tokens_are_priced_as_output(
    build: Callable[[str], Flask], fake_openai: FakeOpenAI, stream: bool  # noqa: F811
) -> None:
    if stream:
        fake_openai.enqueue(raw_stream(chunk("hi"), chunk(finish="stop"), chunk(usage=UNDERSTATED_USAGE)))
        response, events = streamed(build(ONE))
        usage, routing = events[-1]["usage"], events[-1]["routing"]
    else:
        fake_openai.enqueue(raw_json({"choices": [GOOD_CHOICE], "usage": UNDERSTATED_USAGE}))
        response = chat(build(ONE))
        usage, routing = response.get_json()["usage"], response.get_json()["routing"]
    assert response.status_code == 200
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (5, 76)
    expected = (5 * Decimal("0.0001") + 76 * Decimal("0.0004")) / 1000
    assert Decimal(repr(routing["actual_cost_usd"])) == expected
