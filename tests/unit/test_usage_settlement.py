"""Settling the cost when a provider reports no usage: on a worst case, never on zero or a guess."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from costroute.core.estimate import ChatMessage, prompt_token_bound
from costroute.providers.base import Adapter, Completion, ProviderCall, StreamPiece
from tests.registries import parse_registry

ANSWER = "héllo wörld 🌊"
ANSWER_BYTES = len(ANSWER.encode("utf-8"))  # 18: é, ö and the wave take 2, 2 and 4
HI = [{"role": "user", "content": "hi"}]
BOUND = prompt_token_bound([ChatMessage(role="user", content="hi")])


class NoUsageProvider(Adapter):
    """Answers without reporting usage, like some OpenAI-compatible servers."""

    def availability(self, model: Any) -> None:
        return None

    def complete(self, model: Any, call: ProviderCall) -> Completion:
        return Completion(text=ANSWER, usage=None, finish_reason="stop", latency_ms=1.0)

    def stream(self, model: Any, call: ProviderCall) -> Iterator[StreamPiece]:
        return iter([StreamPiece(text="héllo "), StreamPiece(text="wörld 🌊"), StreamPiece(finish_reason="stop")])


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(runtime_kwargs={"providers": {"mock": NoUsageProvider()}})


@pytest.mark.parametrize("stream", [False, True])
def test_missing_usage_is_settled_on_the_worst_case(app: Flask, stream: bool) -> None:
    body: dict[str, Any] = {"model": "mock:advanced", "messages": HI}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    response = app.test_client().post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    if stream:
        import json

        events = [json.loads(line[6:]) for line in response.get_data(as_text=True).splitlines()
                  if line.startswith("data: {")]
        final = events[-1]
    else:
        final = response.get_json()
    usage, routing = final["usage"], final["routing"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (BOUND, ANSWER_BYTES)
    # mock:advanced costs $0.0025 in and $0.006 out per 1k tokens.
    assert routing["actual_cost_usd"] == pytest.approx((BOUND * 0.0025 + ANSWER_BYTES * 0.006) / 1000, rel=1e-12)
    assert any("reported no usage; settled on the worst case" in line for line in routing["decision_trace"])


def test_missing_usage_never_settles_above_the_output_cap(app: Flask) -> None:
    response = app.test_client().post(
        "/v1/chat/completions", json={"model": "mock:advanced", "messages": HI, "max_tokens": 5})
    assert response.get_json()["usage"]["completion_tokens"] == 5


def test_openai_provider_marks_a_response_without_usage() -> None:
    from costroute.providers.openai import _read_completion

    model = parse_registry([["openai", "m", 3, 0.001, 0.002, 100, 100]]).models[0]
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}]}
    completion = _read_completion(body, model, 1.0)
    assert completion.usage is None
    assert completion.text == ANSWER
