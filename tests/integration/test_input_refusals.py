"""Bad input is refused, never truncated or smuggled: body limits over real HTTP, UTF-8, numbers, roles."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from tests.integration.servers import serving

LIMIT = 4096


@pytest.fixture
def base_url(make_app: Callable[..., Flask]) -> Iterator[str]:
    """The service over real HTTP (werkzeug, as flask run serves it) with a 4 KiB body limit."""
    with serving(make_app(max_body_bytes=LIMIT)) as url:
        yield url.removesuffix("/v1")


def _post(base_url: str, path: str, body: bytes, chunked: bool) -> tuple[int, dict[str, Any]]:
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        if chunked:
            connection.putrequest("POST", path)
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            for start in range(0, len(body), 1000):
                piece = body[start:start + 1000]
                connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            connection.send(b"0\r\n\r\n")
        else:
            connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _padded_route(size: int) -> bytes:
    """A valid /route body of exactly ``size`` bytes whose first LIMIT bytes also parse as JSON."""
    head = b'{"input": "hi", "dry_run": true}'
    return head + b" " * (size - len(head))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_a_413_however_it_arrives(base_url: str, chunked: bool) -> None:
    status, body = _post(base_url, "/route", _padded_route(LIMIT * 3), chunked)
    assert status == 413, body
    assert body["error"]["type"] == "request_too_large"
    assert str(LIMIT) in body["error"]["message"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_at_the_limit_is_routed(base_url: str, chunked: bool) -> None:
    status, body = _post(base_url, "/route", _padded_route(LIMIT), chunked)
    assert status == 200, body
    status, body = _post(base_url, "/route", _padded_route(LIMIT + 1), chunked)
    assert status == 413, body


LONE_SURROGATE_RAW = b"\xed\xa0\x80"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/route", b'{"input": "hi \\ud800 there"}'),
        ("/route", b'{"input": "hi ' + LONE_SURROGATE_RAW + b' there"}'),
        ("/v1/chat/completions", b'{"model": "auto", "messages": [{"role": "user", "content": "a\\udfff"}]}'),
        ("/v1/chat/completions", b'{"model": "auto", "messages": [{"role": "user", "content": "a' + LONE_SURROGATE_RAW + b'"}]}'),
        ("/v1/chat/completions", b'{"model": "auto", "messages": [{"role": "us' + LONE_SURROGATE_RAW + b'er", "content": "a"}]}'),
        ("/v1/chat/completions", b'{"model": "auto", "messages": [{"role": "\\ud83d", "content": "a"}]}'),
    ],
    ids=["route-escape", "route-raw", "v1-content-escape", "v1-content-raw", "v1-role-raw", "v1-role-escape"],
)
def test_a_lone_surrogate_is_a_400_as_an_escape_or_as_raw_bytes(client: Any, path: str, body: bytes) -> None:
    response = client.post(path, data=body)
    assert response.status_code == 400, response.get_data(as_text=True)
    message = response.get_json()["error"]["message"]
    assert "surrogate" in message or "not valid UTF-8" in message


def test_invalid_utf8_is_named_with_its_position(client: Any) -> None:
    response = client.post("/route", data=b'{"input": "caf\xe9"}')
    assert response.status_code == 400
    assert "not valid UTF-8 (at byte 14)" in response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/route", '{"input": "hi", "constraints": {"max_cost_usd": 1e400}}'),
        ("/route", '{"input": "hi", "ignored": {"deep": [-1e999]}}'),
        ("/v1/chat/completions", '{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "top_p": 1e400}'),
    ],
)
def test_a_number_that_overflows_to_infinity_is_refused_anywhere(client: Any, path: str, raw: str) -> None:
    response = client.post(path, data=raw)
    assert response.status_code == 400
    assert "overflows to infinity" in response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "wizard", "content": "abracadabra"}, "messages[0].role"),
        ({"role": "user"}, "messages[0].content"),
        ({"role": "user", "content": None}, "messages[0].content"),
        ({"role": "system", "content": None}, "messages[0].content"),
        ({"role": "assistant", "content": None}, "messages[0].content"),
        ({"role": "tool", "content": "42"}, "messages[0].tool_call_id"),
        ({"role": "tool", "tool_call_id": "c1"}, "messages[0].content"),
        ({"role": "function", "content": "x"}, "messages[0].name"),
        ({"role": "user", "content": "hi", "tool_calls": []}, "messages[0].tool_calls"),
        ({"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]}, "messages[0].tool_calls[0]"),
    ],
)
def test_v1_refuses_an_unknown_role_and_missing_content_naming_the_field(
    client: Any, message: dict[str, Any], param: str
) -> None:
    response = client.post("/v1/chat/completions", json={"model": "auto", "messages": [message]})
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["param"] == param
    assert f"'{param}" in error["message"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("service_tier", []),
        ("service_tier", {"tier": "auto"}),
        ("tools", 1),
        ("tools", True),
        ("tools", [1]),
        ("functions", "f"),
        ("tool_choice", 3),
        ("function_call", []),
    ],
)
@pytest.mark.parametrize("model", ["auto", "mock:basic"])
def test_v1_refuses_a_field_of_the_wrong_type_naming_it(client: Any, field: str, value: Any, model: str) -> None:
    """Every adapter reads these fields: a wrong type is the caller's 400, never an adapter's TypeError."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], field: value}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["param"] == field


def test_v1_accepts_every_role_in_its_valid_form(client: Any) -> None:
    messages = [
        {"role": "developer", "content": "be brief"},
        {"role": "system", "content": [{"type": "text", "text": "really"}]},
        {"role": "user", "content": "call it"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "user", "content": "thanks"},
    ]
    response = client.post("/v1/chat/completions", json={"model": "auto", "messages": messages})
    assert response.status_code == 200, response.get_json()
