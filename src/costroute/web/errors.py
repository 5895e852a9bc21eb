"""One JSON error shape for every failure: ``{"error": {"type", "message", "param", "code"}}``.

It is OpenAI's error shape (``type`` and ``message`` as the seed's clients expect, ``param`` and
``code`` as the OpenAI SDK expects), so the same body serves the native API and ``/v1``.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from costroute.config.cache import ConfigError
from costroute.core.requests import InvalidRequest
from costroute.service import RoutingFailed

logger = logging.getLogger("costroute.web")

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    402: "budget_exceeded",
    404: "not_found_error",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "invalid_request_error",
}


def error_response(
    status: int, error_type: str, message: str, param: str | None = None, code: str | None = None, **extra: Any
) -> Response:
    """A JSON error response in the one shape."""
    body: dict[str, Any] = {"error": {"type": error_type, "message": message, "param": param, "code": code or error_type}}
    body["error"].update(extra)
    response = jsonify(body)
    response.status_code = status
    return response


def attempts_json(attempts: Any) -> list[dict[str, Any]]:
    """Attempts as JSON-ready dicts."""
    return [
        {
            "model": attempt.model_id,
            "outcome": attempt.outcome,
            "status": attempt.status,
            "duration_ms": attempt.duration_ms,
            "message": attempt.message,
        }
        for attempt in attempts
    ]


def register_error_handlers(app: Flask) -> None:
    """Map our error types and every HTTP error to the one JSON shape."""

    @app.errorhandler(InvalidRequest)
    def _invalid(exc: InvalidRequest) -> Response:
        error_type = "not_found_error" if exc.status == 404 else _TYPE_BY_STATUS.get(exc.status, "invalid_request_error")
        return error_response(exc.status, error_type, exc.message, param=exc.param)

    @app.errorhandler(ConfigError)
    def _config(exc: ConfigError) -> Response:
        return error_response(503, "config_unavailable", str(exc))

    @app.errorhandler(RoutingFailed)
    def _routing(exc: RoutingFailed) -> Response:
        return error_response(
            exc.status,
            exc.error_type,
            exc.message,
            attempts=attempts_json(exc.attempts),
            decision_trace=list(exc.trace),
        )

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"the request body is larger than the limit of {limit} bytes"
        response = error_response(status, _TYPE_BY_STATUS.get(status, "http_error"), message)
        if status == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # A programming error: logged with its traceback (which holds no request secrets), answered plainly.
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "the router failed unexpectedly; see the service's logs")
