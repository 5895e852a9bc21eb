"""Reading the router's answers in tests: the attempts and the trace, from a success or an error."""

from __future__ import annotations

from typing import Any


def attempts_of(response: Any) -> list[tuple[str, str]]:
    """(model, outcome) of every attempt, from /route, /v1 (``routing``) or an error."""
    body = response.get_json()
    if "error" in body:
        attempts = body["error"]["attempts"]
    else:
        attempts = body["routing"]["attempts"] if "routing" in body else body["attempts"]
    return [(attempt["model"], attempt["outcome"]) for attempt in attempts]


def trace_of(response: Any) -> list[str]:
    """The decision trace, from /route, /v1 (``routing``) or an error."""
    body = response.get_json()
    if "error" in body:
        return list(body["error"]["decision_trace"])
    return list(body["routing"]["decision_trace"] if "routing" in body else body["decision_trace"])
