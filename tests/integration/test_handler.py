"""The Lambda entry (handler.lambda_handler) with every file in events/ and with hand-written events."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import handler
from tests.payloads import HAIKU_REQUEST, repo_root

EVENTS_DIR = Path(repo_root()) / "events"
ERROR_FIELDS = {"type", "message", "param", "code"}


class FakeContext:
    """A Lambda context with a fixed amount of time left."""

    function_name = "RouterFunction-test"
    aws_request_id = "test-invoke"

    def __init__(self, remaining_ms: int = 30_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left in this invocation."""
        return self.remaining_ms


@pytest.fixture(autouse=True)
def fresh_container(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a cold container: no app built yet (restored afterwards)."""
    monkeypatch.setattr(handler, "_app", None)


def load_event(name: str) -> dict[str, Any]:
    """One event file from events/."""
    return json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))


def invoke(event: Any, context: Any = None) -> tuple[dict[str, Any], Any]:
    """Call the handler; return the raw response and its JSON-decoded body."""
    response = handler.lambda_handler(event, context if context is not None else FakeContext())
    assert isinstance(response["statusCode"], int)
    assert response["isBase64Encoded"] is False
    return response, json.loads(response["body"])


def assert_error_shape(body: dict[str, Any]) -> dict[str, Any]:
    """The one JSON error shape: {"error": {"type", "message", "param", "code"}}."""
    assert set(body) == {"error"}
    assert set(body["error"]) >= ERROR_FIELDS
    assert isinstance(body["error"]["type"], str) and body["error"]["type"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def check_health(status: int, body: dict[str, Any]) -> None:
    """GET /health: 200, status ok."""
    assert status == 200
    assert body["status"] == "ok"


def check_models(status: int, body: dict[str, Any]) -> None:
    """GET /models: 200 with the built-in registry."""
    assert status == 200
    assert "mock:advanced" in [model["id"] for model in body["models"]]
    assert body["count"] == len(body["models"])


def check_route(status: int, body: dict[str, Any]) -> None:
    """POST /route with the seed's haiku request: mock:advanced, answered."""
    assert status == 200
    assert body["model"] == "mock:advanced"
    assert body["strategy"] == "quality_then_cost_with_provider_bias"
    assert isinstance(body["response"], str) and body["response"]


def check_dry_run(status: int, body: dict[str, Any]) -> None:
    """POST /route with dry_run: the decision without a call."""
    assert status == 200
    assert body["model"] == "mock:advanced"
    assert body["response"] is None
    assert body["dry_run"] is True


def check_invalid(status: int, body: dict[str, Any]) -> None:
    """POST /route without input and with min_quality 9: 400 in the one error shape."""
    assert status == 400
    error = assert_error_shape(body)
    assert error["type"] == "invalid_request_error"


def check_chat(status: int, body: dict[str, Any]) -> None:
    """POST /v1/chat/completions: an OpenAI chat.completion."""
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"]


EVENT_CHECKS: dict[str, Callable[[int, dict[str, Any]], None]] = {
    "health.json": check_health,
    "models.json": check_models,
    "route.json": check_route,
    "route_base64.json": check_route,
    "route_dry_run.json": check_dry_run,
    "route_invalid.json": check_invalid,
    "chat_completions.json": check_chat,
}


def test_every_event_file_has_a_check() -> None:
    assert {path.name for path in EVENTS_DIR.glob("*.json")} == set(EVENT_CHECKS)


@pytest.mark.parametrize("name", sorted(EVENT_CHECKS))
def test_event_file(name: str) -> None:
    response, body = invoke(load_event(name))
    EVENT_CHECKS[name](response["statusCode"], body)
    assert response["headers"]["Content-Type"].startswith("application/json")


def test_base64_event_answers_like_the_plain_one() -> None:
    plain = invoke(load_event("route.json"))[1]
    encoded = invoke(load_event("route_base64.json"))[1]
    assert encoded["model"] == plain["model"]
    assert encoded["estimate"] == plain["estimate"]
    assert encoded["response"] == plain["response"]


def test_status_code_is_an_int_not_awsgi_string() -> None:
    response = handler.lambda_handler(load_event("health.json"), FakeContext())
    assert type(response["statusCode"]) is int
    assert response["statusCode"] == 200


# --------------------------------------------------------------------------- hand-written events


def test_minimal_get_without_optional_keys() -> None:
    """No queryStringParameters, headers, multiValueHeaders, requestContext or body."""
    response, body = invoke({"httpMethod": "GET", "path": "/health"})
    check_health(response["statusCode"], body)


def test_request_context_null() -> None:
    event = {"httpMethod": "GET", "path": "/models", "requestContext": None, "headers": None}
    response, body = invoke(event)
    check_models(response["statusCode"], body)


def test_headers_and_multi_value_headers_null() -> None:
    event = {
        "httpMethod": "GET",
        "path": "/health",
        "headers": None,
        "multiValueHeaders": None,
        "queryStringParameters": None,
    }
    response, body = invoke(event)
    check_health(response["statusCode"], body)


def test_query_string_parameters_are_passed_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the app receives: the query string, the path and the method, as API Gateway sent them."""
    seen: dict[str, Any] = {}

    def probe(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.update(query=environ.get("QUERY_STRING"), path=environ.get("PATH_INFO"),
                    method=environ.get("REQUEST_METHOD"))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"ok": true}']

    monkeypatch.setattr(handler, "_app", probe)
    event = {"httpMethod": "GET", "path": "/usage", "queryStringParameters": {"group_by": "model", "from": "2026-12-01"}}
    response, body = invoke(event)
    assert (response["statusCode"], body) == (200, {"ok": True})
    assert seen["path"] == "/usage" and seen["method"] == "GET"
    assert sorted(seen["query"].split("&")) == ["from=2026-12-01", "group_by=model"]


def test_only_multi_value_query_parameters_are_read_last_value_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def probe(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen["query"] = environ.get("QUERY_STRING")
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    monkeypatch.setattr(handler, "_app", probe)
    invoke({"httpMethod": "GET", "path": "/usage", "multiValueQueryStringParameters": {"group_by": ["day", "model"]}})
    assert seen["query"] == "group_by=model"


@pytest.mark.parametrize(
    "event",
    [
        {"version": "2.0", "rawPath": "/route", "requestContext": {"http": {"method": "POST", "path": "/route"}},
         "body": "{}"},
        {"rawPath": "/health", "requestContext": {"http": {"method": "GET", "path": "/health"}}},
    ],
    ids=["http-api", "function-url-without-version"],
)
def test_a_payload_2_event_is_told_the_function_expects_rest_events(event: dict[str, Any]) -> None:
    response, body = invoke(event)
    assert response["statusCode"] == 400
    error = assert_error_shape(body)
    assert error["type"] == "unsupported_event"
    assert "payload format 1.0" in error["message"] and "payload format 2.0" in error["message"]
    assert response["headers"]["x-should-retry"] == "false"


def test_only_multi_value_headers_are_read_last_value_wins() -> None:
    """An event with multiValueHeaders but no headers: the routing header still reaches the app."""
    event = {
        "httpMethod": "POST",
        "path": "/v1/chat/completions",
        "multiValueHeaders": {"Content-Type": ["application/json"], "x-route-min-quality": ["1", "5"]},
        "body": json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}),
    }
    response, body = invoke(event)
    assert response["statusCode"] == 200, body
    assert body["model"] == "mock:premium"  # the only built-in model of quality 5
    assert response["headers"]["x-route-model"] == "mock:premium"


def test_only_multi_value_query_string_parameters_are_read() -> None:
    seen: list[dict[str, str]] = []
    event = {"httpMethod": "GET", "path": "/health", "multiValueQueryStringParameters": {"a": ["1", "2"]}}
    with AppInstaller(lambda app: app.before_request(lambda: seen.append(dict(_request_args())))):
        response, _ = invoke(event)
    assert response["statusCode"] == 200
    assert seen == [{"a": "2"}]


def test_the_response_is_closed_so_call_on_close_hooks_run() -> None:
    """aws-wsgi never closes the WSGI response; the handler does."""
    closed: list[str] = []

    def install(app: Any) -> None:
        @app.after_request
        def _hook(response: Any) -> Any:
            response.call_on_close(lambda: closed.append("closed"))
            return response

    with AppInstaller(install):
        response, _ = invoke(load_event("route.json"))
    assert response["statusCode"] == 200
    assert closed == ["closed"]


def _request_args() -> Any:
    """The current Flask request's query arguments."""
    from flask import request

    return request.args.to_dict()


class AppInstaller:
    """Context manager: the handler's next app gets ``install(app)`` applied to it."""

    def __init__(self, install: Callable[[Any], None]) -> None:
        self.install = install
        self.patch = pytest.MonkeyPatch()

    def __enter__(self) -> None:
        import costroute.web

        real = costroute.web.create_app

        def create_app(*args: Any, **kwargs: Any) -> Any:
            app = real(*args, **kwargs)
            self.install(app)
            return app

        self.patch.setattr(costroute.web, "create_app", create_app)

    def __exit__(self, *exc: object) -> None:
        self.patch.undo()


def test_post_without_headers() -> None:
    response, body = invoke({"httpMethod": "POST", "path": "/route", "body": json.dumps(HAIKU_REQUEST)})
    check_route(response["statusCode"], body)


def test_post_without_body_is_a_json_400() -> None:
    response, body = invoke({"httpMethod": "POST", "path": "/route"})
    assert response["statusCode"] == 400
    error = assert_error_shape(body)
    assert "empty" in error["message"]


def test_post_with_null_body_is_a_json_400() -> None:
    response, body = invoke({"httpMethod": "POST", "path": "/route", "body": None, "isBase64Encoded": None})
    assert response["statusCode"] == 400
    assert_error_shape(body)


def test_unknown_path_is_a_json_404() -> None:
    response, body = invoke({"httpMethod": "GET", "path": "/nope"})
    assert response["statusCode"] == 404
    assert_error_shape(body)


def test_no_context_at_all() -> None:
    response = handler.lambda_handler({"httpMethod": "GET", "path": "/health"}, None)
    assert response["statusCode"] == 200


def test_time_left_from_the_context_bounds_the_request() -> None:
    """A context with almost no time left: the router gives up instead of calling a model."""
    route = {"httpMethod": "POST", "path": "/route", "body": json.dumps(HAIKU_REQUEST)}
    ok, _ = invoke(route, FakeContext(30_000))
    assert ok["statusCode"] == 200
    late, body = invoke(route, FakeContext(1))
    assert late["statusCode"] >= 500
    assert_error_shape(body)


# --------------------------------------------------------------------------- container lifetime


def test_app_is_built_once_per_container(monkeypatch: pytest.MonkeyPatch) -> None:
    import costroute.web

    built: list[Any] = []
    real_create_app = costroute.web.create_app

    def counting_create_app(*args: Any, **kwargs: Any) -> Any:
        app = real_create_app(*args, **kwargs)
        built.append(app)
        return app

    monkeypatch.setattr(costroute.web, "create_app", counting_create_app)
    assert handler._app is None
    invoke(load_event("health.json"))
    first = handler._app
    assert first is not None
    invoke(load_event("route.json"))
    invoke(load_event("models.json"))
    assert handler._app is first
    assert len(built) == 1


def test_invalid_environment_is_a_json_error_and_the_next_invocation_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONFIG_TTL_SECONDS", "five minutes")
    response, body = invoke(load_event("route.json"))
    assert response["statusCode"] == 500
    error = assert_error_shape(body)
    assert error["type"] == "config_invalid"
    assert "CONFIG_TTL_SECONDS" in error["message"]
    assert response["headers"]["x-should-retry"] == "false"  # an SDK would retry a 500 that must fail alike
    assert handler._app is None

    monkeypatch.setenv("CONFIG_TTL_SECONDS", "300")
    response, body = invoke(load_event("route.json"))
    check_route(response["statusCode"], body)


def test_importing_handler_imports_neither_boto3_nor_openai() -> None:
    code = "import handler, sys; print('boto3' in sys.modules, 'openai' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root(), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    ("body", "base64", "why"),
    [("%%%not-base64", True, "not base64"), ("hi \ud800", False, "not valid text"), ({"input": "hi"}, False, "not a string")],
)
def test_an_unreadable_event_body_is_a_400_not_a_crash(body: object, base64: bool, why: str) -> None:
    event = {**load_event("route.json"), "body": body, "isBase64Encoded": base64}
    response = handler.lambda_handler(event, None)
    assert response["statusCode"] == 400
    error = json.loads(response["body"])["error"]
    assert error["type"] == "invalid_event" and why in error["message"]
    assert response["headers"]["x-should-retry"] == "false"
