"""Streams end within the deadline, give the breaker its verdict at their end, close the upstream,
and settle what they cost; timeouts caused by the request's own deadline blame no model."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask

from costroute.core.outcome import FailureKind
from costroute.core.registry import Model
from costroute.core.settle import Usage
from costroute.providers.base import Adapter, ClosingStream, Completion, ProviderCall, ProviderError, StreamPiece
from costroute.providers.mock import MockProvider
from tests.conftest import FakeClock

REGISTRY = json.dumps([["mock", "only", 3, 0.001, 0.002, 100, 500]])
CHAT = {"model": "auto", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}]}


class ScriptedStream(Adapter):
    """A provider whose stream yields pieces, running a step (advance a clock, raise) before each."""

    def __init__(self, steps: list[Callable[[], None]], open_delay_s: float = 0.0) -> None:
        self.steps = steps
        self.open_delay_s = open_delay_s
        self.closed = False

    def availability(self, model: Model) -> str | None:
        """Always available."""
        return None

    def complete(self, model: Model, call: ProviderCall) -> Completion:
        """Not used by these tests."""
        raise AssertionError("streams only")

    def stream(self, model: Model, call: ProviderCall) -> Iterator[StreamPiece]:
        """Open (taking open_delay_s), then yield one word per step; closing marks it closed."""
        time.sleep(self.open_delay_s)
        return ClosingStream(self._pieces(), self._mark_closed)

    def _mark_closed(self) -> None:
        self.closed = True

    def _pieces(self) -> Iterator[StreamPiece]:
        for index, step in enumerate(self.steps):
            step()
            yield StreamPiece(text=f"w{index} ")
        yield StreamPiece(finish_reason="stop", usage=Usage(input_tokens=5, output_tokens=len(self.steps)))


def app_with(make_app: Callable[..., Flask], provider: ScriptedStream, clock: Any = time.monotonic, **settings: Any) -> Flask:
    """An app whose only model is served by the scripted provider."""
    return make_app(runtime_kwargs={"providers": {"mock": provider}, "clock": clock},
                    models_config_json=REGISTRY, breaker_failure_threshold=1, **settings)


def events(response: Any) -> list[Any]:
    """The SSE events of a response, decoded (the final [DONE] as a string)."""
    raw = [line.removeprefix("data: ") for line in response.get_data(as_text=True).split("\n\n") if line]
    return [item if item == "[DONE]" else json.loads(item) for item in raw]


def test_a_failure_mid_stream_ends_it_with_an_error_and_opens_the_breaker(make_app: Callable[..., Flask]) -> None:
    def fail() -> None:
        raise ProviderError(FailureKind.UPSTREAM, "connection reset mid-answer", status=502)

    provider = ScriptedStream([lambda: None, fail])
    client = app_with(make_app, provider).test_client()
    received = events(client.post("/v1/chat/completions", json=CHAT))
    assert received[-2]["error"]["code"] == "upstream" and received[-1] == "[DONE]"
    assert provider.closed
    assert client.get("/health").get_json()["open_breakers"] == {"mock:only": 1}


def test_the_deadline_ends_a_stream_that_keeps_going(make_app: Callable[..., Flask], clock: FakeClock) -> None:
    provider = ScriptedStream([lambda: None, lambda: clock.advance(10), lambda: None, lambda: None])
    client = app_with(make_app, provider, clock=clock, request_deadline_seconds=5).test_client()
    received = events(client.post("/v1/chat/completions", json=CHAT))
    texts = [e["choices"][0]["delta"].get("content") for e in received[:-2] if isinstance(e, dict) and e.get("choices")]
    assert "w3 " not in texts
    assert "deadline" in received[-2]["error"]["message"]
    assert provider.closed


def test_a_client_that_goes_away_closes_the_upstream_and_blames_no_model(make_app: Callable[..., Flask]) -> None:
    provider = ScriptedStream([lambda: None] * 5)
    client = app_with(make_app, provider).test_client()
    response = client.post("/v1/chat/completions", json=CHAT, buffered=False)
    next(iter(response.response))
    response.close()
    assert provider.closed
    assert client.get("/health").get_json()["open_breakers"] == {}


def test_a_finished_stream_is_settled_and_closes_the_breaker(make_app: Callable[..., Flask]) -> None:
    provider = ScriptedStream([lambda: None] * 3)
    client = app_with(make_app, provider).test_client()
    final = [e for e in events(client.post("/v1/chat/completions", json=CHAT)) if isinstance(e, dict) and "usage" in e and e["usage"]][-1]
    assert final["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8,
                              "prompt_tokens_details": {"cached_tokens": 0}}
    assert final["routing"]["actual_cost_usd"] == (5 * 0.001 + 3 * 0.002) / 1000


def test_opening_the_stream_counts_as_provider_time_not_overhead(make_app: Callable[..., Flask]) -> None:
    provider = ScriptedStream([lambda: None], open_delay_s=0.3)
    client = app_with(make_app, provider).test_client()
    response = client.post("/v1/chat/completions", json=CHAT)
    assert float(response.headers["x-route-overhead-ms"]) < 150


def test_a_timeout_forced_by_the_deadline_does_not_open_the_breaker(make_app: Callable[..., Flask], clock: FakeClock) -> None:
    registry = json.dumps([{"provider": "mock", "name": "slow", "quality": 3, "in_cost_per_1k": 0.001,
                            "out_cost_per_1k": 0.002, "latency_ms": 100, "max_output_tokens": 100, "mock_delay_ms": 3000}])
    app = make_app(runtime_kwargs={"clock": clock, "sleep": clock.sleep,
                                   "providers": {"mock": MockProvider(sleep=clock.sleep)}},
                   models_config_json=registry, request_deadline_seconds=2, provider_timeout_seconds=20,
                   breaker_failure_threshold=1)
    client = app.test_client()
    response = client.post("/route", json={"input": "hi"})
    assert response.status_code == 504
    assert client.get("/health").get_json()["open_breakers"] == {}
