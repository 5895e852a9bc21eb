"""The shipped mock provider: no network, deterministic, and able to misbehave on request.

It answers ``[MOCK:<name>] Echo: <last user message>`` and reports usage counted with the same
heuristic the router estimates with. Its ``latency_ms`` is *simulated* (the model's registered
latency) unless ``MOCK_SIMULATE_LATENCY`` is on, when it really waits that long and reports the
measured time. Per-model registry fields make it fail or stall, for failover and breaker tests:
``mock_fail_status`` (always fail with that HTTP status), ``mock_fail_rate`` (fail that fraction of
calls with status 503, drawn from a generator seeded by ``mock_seed``) and ``mock_delay_ms``
(really wait that long, measured).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable, Iterator

from costroute.core.estimate import ChatMessage, CHARS_PER_TOKEN, estimate_prompt_tokens, estimate_text_tokens
from costroute.core.registry import Model
from costroute.core.requests import content_text
from costroute.providers.base import (
    AUTH,
    BAD_REQUEST,
    FORBIDDEN,
    NOT_FOUND,
    RATE_LIMITED,
    TIMEOUT,
    UPSTREAM,
    Completion,
    ProviderCall,
    ProviderError,
    StreamPiece,
)

_KIND_BY_STATUS = {400: BAD_REQUEST, 401: AUTH, 403: FORBIDDEN, 404: NOT_FOUND, 429: RATE_LIMITED}


class MockProvider:
    """A deterministic provider for development, tests and load tests."""

    def __init__(
        self,
        simulate_latency: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._simulate_latency = simulate_latency
        self._sleep = sleep
        self._clock = clock
        self._generators: dict[str, random.Random] = {}
        self._lock = threading.Lock()

    def availability(self, model: Model) -> str | None:
        """Mock models are always available."""
        return None

    def complete(self, model: Model, call: ProviderCall) -> Completion:
        """Answer with the echo, honouring max_tokens and the model's mock behaviour."""
        started = self._clock()
        self._misbehave(model, call)
        wait_ms = model.mock.delay_ms or (model.latency_ms if self._simulate_latency else 0)
        if wait_ms:
            self._wait(wait_ms, call.timeout_s, model)
        text, completion_tokens, finish = self._answer(model, call)
        measured = bool(wait_ms)
        return Completion(
            text=text,
            prompt_tokens=estimate_prompt_tokens(_chat_messages(call)),
            completion_tokens=completion_tokens,
            finish_reason=finish,
            latency_ms=(self._clock() - started) * 1000 if measured else float(model.latency_ms),
            latency_kind="measured" if measured else "simulated",
        )

    def stream(self, model: Model, call: ProviderCall) -> Iterator[StreamPiece]:
        """Yield the echo word by word, then the finish reason and usage."""
        completion = self.complete(model, call)
        return self._pieces(completion)

    @staticmethod
    def _pieces(completion: Completion) -> Iterator[StreamPiece]:
        words = completion.text.split(" ")
        for index, word in enumerate(words):
            yield StreamPiece(text=word if index == 0 else " " + word)
        yield StreamPiece(
            finish_reason=completion.finish_reason,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
        )

    def _misbehave(self, model: Model, call: ProviderCall) -> None:
        status = model.mock.fail_status
        if status is None and model.mock.fail_rate > 0:
            with self._lock:
                generator = self._generators.setdefault(model.id, random.Random(model.mock.seed))
                if generator.random() < model.mock.fail_rate:
                    status = 503
        if status is not None:
            kind = _KIND_BY_STATUS.get(status, UPSTREAM if status >= 500 else BAD_REQUEST)
            raise ProviderError(kind, f"mock model {model.id} failed with status {status} (as configured)", status=status)

    def _wait(self, wait_ms: int, timeout_s: float, model: Model) -> None:
        if wait_ms / 1000 > timeout_s:
            self._sleep(max(timeout_s, 0.0))
            raise ProviderError(TIMEOUT, f"mock model {model.id} took longer than the {timeout_s:.3f} s allowed")
        self._sleep(wait_ms / 1000)

    @staticmethod
    def _answer(model: Model, call: ProviderCall) -> tuple[str, int, str]:
        prompt = _last_user_text(call)
        text = f"[MOCK:{model.name}] Echo: {prompt}"
        tokens = estimate_text_tokens(text)
        limit = min(call.max_tokens or model.max_output_tokens, model.max_output_tokens)
        if tokens <= limit:
            return text, tokens, "stop"
        # Cut to the limit: keep characters while the heuristic count stays within it.
        cut = text[: limit * CHARS_PER_TOKEN]
        while cut and estimate_text_tokens(cut) > limit:
            cut = cut[:-1]
        return cut, estimate_text_tokens(cut), "length"


def _chat_messages(call: ProviderCall) -> list[ChatMessage]:
    return [ChatMessage(role=str(m.get("role", "")), content=content_text(m.get("content"))) for m in call.messages]


def _last_user_text(call: ProviderCall) -> str:
    for message in reversed(call.messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return content_text(call.messages[-1].get("content")) if call.messages else ""
