"""Circuit breakers: open after the threshold, skip while open, one trial after the cooldown decides."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from costroute.breaker import CircuitBreakers
from tests.conftest import FakeClock

# ---------------------------------------------------------------------------------------------
# The breakers alone


@pytest.fixture
def breakers(clock: FakeClock) -> CircuitBreakers:
    return CircuitBreakers(threshold=2, cooldown_seconds=30, clock=clock)


def test_opens_after_threshold_consecutive_failures(breakers: CircuitBreakers) -> None:
    breakers.record_failure("m")
    assert breakers.skip_reason("m") is None
    breakers.record_failure("m")
    assert breakers.skip_reason("m") == "circuit open after 2 consecutive failures; trial in 30.0 s"
    assert breakers.open_models() == {"m": 2}
    assert breakers.skip_reason("other") is None


def test_a_success_resets_the_consecutive_count(breakers: CircuitBreakers) -> None:
    breakers.record_failure("m")
    breakers.record_success("m")
    breakers.record_failure("m")
    assert breakers.skip_reason("m") is None


def test_after_the_cooldown_one_trial_goes_through_and_success_closes(
    breakers: CircuitBreakers, clock: FakeClock
) -> None:
    breakers.record_failure("m")
    breakers.record_failure("m")
    clock.advance(29.9)
    assert breakers.skip_reason("m") is not None
    clock.advance(0.1)
    assert breakers.skip_reason("m") is None
    assert breakers.acquire("m").trial is True  # the trial
    assert breakers.skip_reason("m") == "circuit half-open; a trial request is in flight"
    breakers.record_success("m")
    assert breakers.skip_reason("m") is None
    assert breakers.open_models() == {}
    assert breakers.acquire("m").trial is False
    breakers.record_failure("m")  # counting starts again from zero
    assert breakers.skip_reason("m") is None


def test_a_failed_trial_reopens_for_a_whole_cooldown(breakers: CircuitBreakers, clock: FakeClock) -> None:
    breakers.record_failure("m")
    breakers.record_failure("m")
    clock.advance(30)
    assert breakers.acquire("m").trial is True
    breakers.record_failure("m")  # one failure is enough in half-open
    assert breakers.skip_reason("m") is not None
    clock.advance(29)
    assert breakers.skip_reason("m") is not None
    clock.advance(1)
    assert breakers.skip_reason("m") is None


def test_release_frees_the_trial_without_a_verdict(breakers: CircuitBreakers, clock: FakeClock) -> None:
    breakers.record_failure("m")
    breakers.record_failure("m")
    clock.advance(30)
    breakers.acquire("m")
    breakers.release("m")
    assert breakers.skip_reason("m") is None
    assert breakers.open_models() == {"m": 2}


def test_only_one_of_concurrent_callers_gets_the_half_open_trial(breakers: CircuitBreakers, clock: FakeClock) -> None:
    breakers.record_failure("m")
    breakers.record_failure("m")
    clock.advance(30)
    start = threading.Barrier(8)
    results: list[Any] = []

    def caller() -> None:
        start.wait()
        results.append(breakers.acquire("m"))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trials = [r for r in results if r.allowed and r.trial]
    refused = [r for r in results if not r.allowed]
    assert len(trials) == 1 and len(refused) == 7
    assert refused[0].reason == "circuit half-open; a trial request is in flight"


# ---------------------------------------------------------------------------------------------
# Through the app


def mock(name: str, quality: int, in_cost: float, out_cost: float, **behaviour: Any) -> dict:
    return {"provider": "mock", "name": name, "quality": quality, "in_cost_per_1k": in_cost,
            "out_cost_per_1k": out_cost, "latency_ms": 300, "max_output_tokens": 1024, **behaviour}


def seed_for(pattern: list[bool], rate: float = 0.5) -> int:
    """A mock_seed whose generator fails (True) and succeeds (False) in this order."""
    for seed in range(10_000):
        draws = random.Random(seed)
        if [draws.random() < rate for _ in pattern] == pattern:
            return seed
    raise AssertionError("no seed found")


@pytest.fixture
def app_with(make_app: Callable[..., Flask], clock: FakeClock) -> Callable[..., Flask]:
    def build(*models: dict) -> Flask:
        return make_app(runtime_kwargs={"clock": clock, "sleep": clock.sleep}, models_config_json=json.dumps(list(models)),
                        breaker_failure_threshold=2, breaker_cooldown_seconds=30)

    return build


def route(app: Flask) -> dict[str, Any]:
    response = app.test_client().post("/route", json={"input": "hi", "constraints": {"min_quality": 3}})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def attempted(body: dict[str, Any]) -> list[str]:
    return [attempt["model"] for attempt in body["attempts"]]


def test_open_breaker_skips_the_model_and_says_why(app_with: Callable[..., Flask], clock: FakeClock) -> None:
    app = app_with(mock("a", 3, 0.001, 0.002, mock_fail_status=503), mock("b", 3, 0.002, 0.004))
    assert attempted(route(app)) == ["mock:a", "mock:b"]
    assert attempted(route(app)) == ["mock:a", "mock:b"]
    body = route(app)  # a's breaker is open: not even tried
    assert attempted(body) == ["mock:b"]
    (a,) = [c for c in body["candidates"] if c["model"] == "mock:a"]
    assert a["verdict"] == "excluded"
    assert a["reason"].startswith("circuit open after 2 consecutive failures")
    assert any(line.startswith("Not available: mock:a (circuit open after 2 consecutive failures")
               for line in body["decision_trace"])
    health = app.test_client().get("/health").get_json()
    assert health["open_breakers"] == {"mock:a": 2}

    # After the cooldown, one trial: it fails, so the breaker re-opens at once.
    clock.advance(30)
    body = route(app)
    assert attempted(body) == ["mock:a", "mock:b"]
    assert "mock:a: its breaker is half-open; this call is the trial." in body["decision_trace"]
    assert attempted(route(app)) == ["mock:b"]


def test_a_successful_trial_closes_the_breaker(app_with: Callable[..., Flask], clock: FakeClock) -> None:
    seed = seed_for([True, True, False, True])
    app = app_with(mock("a", 3, 0.001, 0.002, mock_fail_rate=0.5, mock_seed=seed), mock("b", 3, 0.002, 0.004))
    assert attempted(route(app)) == ["mock:a", "mock:b"]
    assert attempted(route(app)) == ["mock:a", "mock:b"]
    assert attempted(route(app)) == ["mock:b"]  # open
    clock.advance(30)
    body = route(app)
    assert attempted(body) == ["mock:a"]  # the trial succeeds
    assert body["model"] == "mock:a"
    assert app.test_client().get("/health").get_json()["open_breakers"] == {}
    # Closed again: one more failure does not open it (the threshold is 2 again).
    assert attempted(route(app)) == ["mock:a", "mock:b"]
    assert attempted(route(app))[0] == "mock:a"


def test_caller_errors_do_not_count_towards_the_breaker(app_with: Callable[..., Flask]) -> None:
    app = app_with(mock("a", 3, 0.001, 0.002, mock_fail_status=400), mock("b", 3, 0.002, 0.004))
    client = app.test_client()
    for _ in range(3):
        response = client.post("/route", json={"input": "hi", "constraints": {"min_quality": 3}})
        assert response.status_code == 400
        assert [a["model"] for a in response.get_json()["error"]["attempts"]] == ["mock:a"]
    assert client.get("/health").get_json()["open_breakers"] == {}
