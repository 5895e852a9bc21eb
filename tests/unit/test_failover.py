"""Failover, the one request deadline and the error after every candidate failed, with the mock provider.

The mock misbehaves per registry entry (mock_fail_status, mock_fail_rate + mock_seed, mock_delay_ms).
Its waits go through the runtime's ``sleep``, here a FakeClock's, so deadlines are exact and instant.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask

from tests.conftest import FakeClock

HI = [{"role": "user", "content": "hi"}]


def mock(name: str, quality: int, in_cost: float, out_cost: float, latency_ms: int = 300, **behaviour: Any) -> dict:
    return {"provider": "mock", "name": name, "quality": quality, "in_cost_per_1k": in_cost,
            "out_cost_per_1k": out_cost, "latency_ms": latency_ms, "max_output_tokens": 1024, **behaviour}


@pytest.fixture
def app_with(make_app: Callable[..., Flask], clock: FakeClock) -> Callable[..., Flask]:
    """An app over the given mock models, on the fake clock."""

    def build(*models: dict, **settings: Any) -> Flask:
        return make_app(runtime_kwargs={"clock": clock, "sleep": clock.sleep},
                        models_config_json=json.dumps(list(models)), **settings)

    return build


def post(app: Flask, endpoint: str, constraints: dict[str, Any], model: str = "auto") -> Any:
    """POST the same request to /route or /v1/chat/completions; returns (status, json, headers)."""
    client = app.test_client()
    if endpoint == "/route":
        response = client.post("/route", json={"input": "hi", "constraints": constraints})
    else:
        response = client.post("/v1/chat/completions", json={"model": model, "messages": HI, "routing": constraints})
    return response.status_code, response.get_json(), response.headers


def account(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """The routing account: /route's body, or /v1's ``routing`` object."""
    return body if endpoint == "/route" else body["routing"]


def outcomes(attempts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(attempt["model"], attempt["outcome"]) for attempt in attempts]


ENDPOINTS = pytest.mark.parametrize("endpoint", ["/route", "/v1/chat/completions"])


@ENDPOINTS
def test_5xx_fails_over_to_the_next_model_on_the_same_rung(app_with: Callable[..., Flask], endpoint: str) -> None:
    app = app_with(
        mock("a", 3, 0.001, 0.002, mock_fail_status=503),
        mock("b", 3, 0.002, 0.004),
        mock("c", 3, 0.003, 0.006),
        mock("cheap", 1, 0.0001, 0.0001),
    )
    status, body, headers = post(app, endpoint, {"min_quality": 3})
    assert status == 200, body
    routing = account(endpoint, body)
    assert outcomes(routing["attempts"]) == [("mock:a", "upstream"), ("mock:b", "ok")]
    assert routing["attempts"][0]["status"] == 503
    trace = routing["decision_trace"]
    failed = trace.index("Attempt 1: mock:a failed after 0 ms (upstream): mock model mock:a failed with status 503 "
                         "(as configured).")
    assert trace[failed + 1].startswith("Failover: the ladder runs again over the models not yet tried")
    assert "  Not available: mock:a (already tried: upstream)." in trace
    assert "  Chose mock:b on rung 1: estimated" in " ".join(trace[failed:])
    assert "Attempt 2: mock:b answered after 0 ms." in trace  # every attempt is in the trace
    if endpoint != "/route":
        assert headers["x-route-attempts"] == "2"
        assert headers["x-route-model"] == "mock:b"
        assert body["model"] == "mock:b"


@ENDPOINTS
def test_failover_stays_on_the_fired_rung_then_descends_as_the_ladder_would(
    app_with: Callable[..., Flask], endpoint: str
) -> None:
    app = app_with(
        mock("a", 3, 0.001, 0.002, mock_fail_status=500),
        mock("b", 4, 0.002, 0.004, mock_fail_status=502),
        mock("cheap", 1, 0.0001, 0.0001),
        mock("low", 2, 0.0002, 0.0003),
    )
    status, body, _ = post(app, endpoint, {"min_quality": 3})
    assert status == 200, body
    routing = account(endpoint, body)
    # a and b (rung 1) first, though cheaper models exist; then rung 3 (quality relaxed; with no budget
    # every model is within it): the highest quality left, not the cheapest.
    assert outcomes(routing["attempts"]) == [("mock:a", "upstream"), ("mock:b", "upstream"), ("mock:low", "ok")]
    trace = " ".join(routing["decision_trace"])
    assert "Chose mock:b on rung 1" in trace
    assert "Chose mock:low on rung 3" in trace


@ENDPOINTS
def test_failover_never_crosses_the_budget_under_strict_budget(app_with: Callable[..., Flask], endpoint: str) -> None:
    app = app_with(
        mock("a", 3, 0.001, 0.002, mock_fail_status=503),
        # Estimated far over the budget, but its input fits: rung 2 (budget relaxed) would pick it.
        mock("dear", 5, 0.05, 0.5),
        mock("low", 2, 0.0002, 0.0003),
    )
    constraints = {"min_quality": 3, "max_cost_usd": 0.01, "strict_budget": True}
    status, body, _ = post(app, endpoint, constraints)
    assert status == 200, body
    routing = account(endpoint, body)
    assert outcomes(routing["attempts"]) == [("mock:a", "upstream"), ("mock:low", "ok")]
    assert "  Chose mock:low on rung 3" in " ".join(routing["decision_trace"])

    # Without strict_budget the same failure may cross the estimated budget (rung 2 picks dear), and
    # the ceiling still holds the actual cost.
    status, body, _ = post(app, endpoint, {**constraints, "strict_budget": False})
    assert status == 200, body
    routing = account(endpoint, body)
    assert outcomes(routing["attempts"]) == [("mock:a", "upstream"), ("mock:dear", "ok")]
    assert Decimal(repr(routing["actual_cost_usd"])) <= Decimal("0.01")


@ENDPOINTS
def test_strict_budget_failover_with_nothing_left_in_budget_fails_listing_attempts(
    app_with: Callable[..., Flask], endpoint: str
) -> None:
    app = app_with(mock("a", 3, 0.001, 0.002, mock_fail_status=503), mock("dear", 5, 0.05, 0.5))
    status, body, _ = post(app, endpoint, {"min_quality": 3, "max_cost_usd": 0.01, "strict_budget": True})
    assert status == 502
    error = body["error"]
    assert error["type"] == "upstream_error"
    assert outcomes(error["attempts"]) == [("mock:a", "upstream")]
    assert "mock:dear" in " ".join(error["decision_trace"])  # why dear was not tried


@pytest.mark.parametrize(
    ("fail_status", "http_status", "error_type"),
    [(400, 400, "upstream_bad_request"), (401, 502, "upstream_auth_error"), (403, 502, "upstream_forbidden"),
     (404, 502, "upstream_model_not_found")],
)
@ENDPOINTS
def test_no_failover_on_400_401_403_404(
    app_with: Callable[..., Flask], endpoint: str, fail_status: int, http_status: int, error_type: str
) -> None:
    app = app_with(mock("a", 3, 0.001, 0.002, mock_fail_status=fail_status), mock("b", 3, 0.002, 0.004))
    status, body, _ = post(app, endpoint, {"min_quality": 3})
    assert status == http_status
    error = body["error"]
    assert error["type"] == error_type
    assert [attempt["model"] for attempt in error["attempts"]] == ["mock:a"]
    assert error["attempts"][0]["status"] == fail_status
    assert not any("Failover" in line for line in error["decision_trace"])


@pytest.mark.parametrize(
    ("behaviour", "http_status", "error_type"),
    [({"mock_fail_status": 503}, 502, "upstream_error"),
     ({"mock_fail_status": 429}, 503, "upstream_rate_limited"),
     ({"mock_delay_ms": 60_000}, 504, "upstream_timeout")],
)
@ENDPOINTS
def test_every_candidate_failing_is_an_error_listing_every_attempt(
    app_with: Callable[..., Flask], endpoint: str, behaviour: dict, http_status: int, error_type: str
) -> None:
    app = app_with(mock("a", 3, 0.001, 0.002, **behaviour), mock("b", 2, 0.002, 0.004, **behaviour),
                   mock("c", 1, 0.003, 0.006, **behaviour), provider_timeout_seconds=1.0)
    status, body, _ = post(app, endpoint, {"min_quality": 3})
    assert status == http_status
    error = body["error"]
    assert error["type"] == error_type
    assert [attempt["model"] for attempt in error["attempts"]] == ["mock:a", "mock:b", "mock:c"]
    assert "every attempt failed (mock:a: " in error["message"]
    assert error["decision_trace"][-1].startswith("No model left to try")


def test_pinned_model_does_not_fail_over(app_with: Callable[..., Flask]) -> None:
    app = app_with(mock("a", 3, 0.001, 0.002, mock_fail_status=503), mock("b", 3, 0.002, 0.004))
    status, body, _ = post(app, "/v1/chat/completions", {}, model="mock:a")
    assert status == 502
    assert [attempt["model"] for attempt in body["error"]["attempts"]] == ["mock:a"]
    assert "pinned" in body["error"]["decision_trace"][-1]


# ---------------------------------------------------------------------------------------------
# One deadline for the whole request


def test_each_attempt_gets_only_what_is_left_of_the_deadline(
    app_with: Callable[..., Flask], clock: FakeClock
) -> None:
    app = app_with(
        mock("a", 3, 0.001, 0.002, mock_delay_ms=10_000),
        mock("b", 3, 0.002, 0.004, mock_delay_ms=10_000),
        mock("c", 3, 0.003, 0.006),
        request_deadline_seconds=5.0,
        provider_timeout_seconds=2.0,
    )
    start = clock.now
    status, body, headers = post(app, "/v1/chat/completions", {"min_quality": 3})
    assert status == 200, body
    # a and b each waited out the provider timeout (2 s), c answered within the 1 s left.
    assert outcomes(body["routing"]["attempts"]) == [("mock:a", "timeout"), ("mock:b", "timeout"), ("mock:c", "ok")]
    assert clock.slept == [2.0, 2.0]
    assert clock.now - start == 4.0
    assert headers["x-route-attempts"] == "3"
    assert "latency limit of 1000 ms" in " ".join(body["routing"]["decision_trace"])


@ENDPOINTS
def test_the_deadline_covers_every_attempt(app_with: Callable[..., Flask], clock: FakeClock, endpoint: str) -> None:
    app = app_with(
        mock("a", 3, 0.001, 0.002, mock_delay_ms=10_000),
        mock("b", 3, 0.002, 0.004, mock_delay_ms=10_000),
        mock("c", 3, 0.003, 0.006),
        request_deadline_seconds=3.0,
        provider_timeout_seconds=2.0,
    )
    status, body, _ = post(app, endpoint, {"min_quality": 3})
    assert status == 504
    error = body["error"]
    # a took its 2 s, b only the 1 s left (not the provider's 2 s), then nothing was left for c.
    assert clock.slept == [2.0, 1.0]
    assert outcomes(error["attempts"]) == [("mock:a", "timeout"), ("mock:b", "timeout")]
    assert error["type"] == "deadline_exceeded"
    assert error["decision_trace"][-1] == "The request's deadline has passed; no further attempt."


def test_failover_prefers_a_model_that_fits_the_time_left(app_with: Callable[..., Flask], clock: FakeClock) -> None:
    app = app_with(
        mock("a", 3, 0.001, 0.002, mock_delay_ms=10_000),
        mock("slow", 3, 0.002, 0.004, latency_ms=4000),
        mock("quick", 3, 0.003, 0.006, latency_ms=200),
        request_deadline_seconds=5.0,
        provider_timeout_seconds=2.0,
    )
    status, body, _ = post(app, "/route", {"min_quality": 3})
    assert status == 200, body
    assert outcomes(body["attempts"]) == [("mock:a", "timeout"), ("mock:quick", "ok")]
    trace = " ".join(body["decision_trace"])
    assert "latency limit of 3000 ms" in trace
    assert "mock:slow (4000 ms)" in trace  # why the cheaper slow model was passed over


def test_seeded_fail_rate_fails_over_exactly_when_the_generator_says(app_with: Callable[..., Flask]) -> None:
    app = app_with(
        mock("flaky", 3, 0.001, 0.002, mock_fail_rate=0.5, mock_seed=11),
        mock("b", 3, 0.002, 0.004),
        breaker_failure_threshold=1000,
    )
    draws = random.Random(11)
    expected = [2 if draws.random() < 0.5 else 1 for _ in range(30)]
    seen = [int(post(app, "/v1/chat/completions", {"min_quality": 3})[2]["x-route-attempts"]) for _ in range(30)]
    assert seen == expected
    assert 1 in seen and 2 in seen


def test_stream_fails_over_before_the_first_piece(app_with: Callable[..., Flask]) -> None:
    app = app_with(mock("a", 3, 0.001, 0.002, mock_fail_status=503), mock("b", 3, 0.002, 0.004))
    response = app.test_client().post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": HI, "routing": {"min_quality": 3}, "stream": True,
              "stream_options": {"include_usage": True}},
    )
    assert response.status_code == 200
    assert response.headers["x-route-model"] == "mock:b"
    assert response.headers["x-route-attempts"] == "2"
    events = [json.loads(line[6:]) for line in response.get_data(as_text=True).splitlines()
              if line.startswith("data: {")]
    assert outcomes(events[-1]["routing"]["attempts"]) == [("mock:a", "upstream"), ("mock:b", "ok")]


def test_the_platforms_time_left_shortens_the_deadline(app_with: Callable[..., Flask], clock: FakeClock) -> None:
    """On Lambda the handler passes the invocation's time left; the router keeps 0.5 s of it spare."""
    app = app_with(mock("a", 3, 0.001, 0.002, mock_delay_ms=10_000), mock("b", 3, 0.002, 0.004),
                   request_deadline_seconds=25.0, provider_timeout_seconds=20.0)
    response = app.test_client().post("/route", json={"input": "hi", "constraints": {"min_quality": 3}},
                                      environ_overrides={"costroute.time_left_s": "2.5"})
    assert response.status_code == 504
    assert clock.slept == [2.0]
    assert [a["model"] for a in response.get_json()["error"]["attempts"]] == ["mock:a"]


def test_a_request_reads_the_registry_once_even_when_it_fails_over(clock: FakeClock) -> None:
    """The decision and every failover use the same registry (a refresh mid-request changes nothing)."""
    from costroute.breaker import CircuitBreakers
    from costroute.core.requests import parse_route_body
    from costroute.providers.mock import MockProvider
    from costroute.service import RouterService
    from tests.adapters import StaticLookup
    from tests.registries import parse_registry

    registry = parse_registry([mock("a", 3, 0.001, 0.002, mock_fail_status=503), mock("b", 3, 0.002, 0.004)])
    reads: list[int] = []

    def read_registry() -> Any:
        reads.append(1)
        return registry

    service = RouterService(registry=read_registry, providers=StaticLookup({"mock": MockProvider(sleep=clock.sleep)}),
                            breakers=CircuitBreakers(3, 30, clock), deadline_seconds=25, provider_timeout_seconds=20,
                            clock=clock, sleep=clock.sleep)
    result = service.route(parse_route_body({"input": "hi", "constraints": {"min_quality": 3}}))
    assert [attempt.model_id for attempt in result.attempts] == ["mock:a", "mock:b"]
    assert len(reads) == 1
