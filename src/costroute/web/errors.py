"""One JSON error shape for every failure: ``{"error": {"type", "message", "param", "code"}}``.

It is OpenAI's error shape (``type`` and ``message`` as the seed's clients expect, ``param`` and
``code`` as the OpenAI SDK expects), so the same body serves the native API and ``/v1``. This is
the one place that maps typed failure reasons to HTTP statuses.

Clients must not multiply paid attempts: the official SDKs retry 408, 409, 429 and 5xx on their
own, so an answer a client retry would only repeat (failover already exhausted, any 4xx) carries
``x-should-retry: false``, which the SDKs obey; an answer worth retrying later carries the
upstream's ``Retry-After`` and ``x-should-retry: true``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, g, jsonify
from werkzeug.exceptions import HTTPException

from costroute.config.cache import ConfigError
from costroute.core.outcome import Attempt, ErrorReason, RoutingFailed
from costroute.core.requests import InvalidRequest, RequestProblem
from costroute.stores import STORE_RETRY_AFTER_SECONDS, StoreUnavailable

if TYPE_CHECKING:
    from costroute.service.spend import BudgetView

logger = logging.getLogger("costroute.web")

STATUS_BY_REASON: dict[ErrorReason, int] = {
    ErrorReason.BUDGET_EXCEEDED: 402,
    ErrorReason.BUDGET_EXHAUSTED: 402,
    ErrorReason.UNKNOWN_CALLER: 401,
    ErrorReason.QUALITY_UNMET: 422,
    ErrorReason.MODEL_UNAVAILABLE: 503,
    ErrorReason.NO_MODEL_AVAILABLE: 503,
    ErrorReason.DEADLINE_EXCEEDED: 504,
    ErrorReason.UPSTREAM_ERROR: 502,
    ErrorReason.UPSTREAM_AUTH_ERROR: 502,
    ErrorReason.UPSTREAM_FORBIDDEN: 502,
    ErrorReason.UPSTREAM_MODEL_NOT_FOUND: 502,
    ErrorReason.UPSTREAM_BAD_REQUEST: 400,
    ErrorReason.UPSTREAM_REQUEST_TOO_LARGE: 413,
    ErrorReason.UPSTREAM_TIMEOUT: 504,
    ErrorReason.UPSTREAM_RATE_LIMITED: 503,
    ErrorReason.UPSTREAM_SPEND_LIMIT: 503,
    ErrorReason.KEY_UNAVAILABLE: 503,
    ErrorReason.SPEND_STORE_UNAVAILABLE: 503,
}
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "budget_exceeded",
    404: "not_found_error",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "invalid_request_error",
}


def error_response(
    status: int, error_type: str, message: str, param: str | None = None, code: str | None = None,
    retry_after_s: float | None = None, extra: Mapping[str, Any] | None = None,
) -> Response:
    """A JSON error response in the one shape (``extra`` fields added inside ``error``), with the retry advice
    its status calls for."""
    body: dict[str, Any] = {"error": {"type": error_type, "message": message, "param": param, "code": code or error_type}}
    body["error"].update(extra or {})
    g.error_type = error_type
    response = jsonify(body)
    response.status_code = status
    if retry_after_s is not None and math.isfinite(retry_after_s) and retry_after_s >= 0:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
        response.headers["x-should-retry"] = "true" if status in (429, 503) else "false"
    else:
        response.headers["x-should-retry"] = "false"
    return response


def attempts_json(attempts: tuple[Attempt, ...] | list[Attempt]) -> list[dict[str, Any]]:
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


def budget_json(view: BudgetView) -> dict[str, Any]:
    """Where a caller stands, as the answer's ``budget`` object."""
    left = view.tightest_remaining_usd
    return {
        "caller": view.caller,
        "name": view.name,
        "remaining_usd": None if left is None else float(left),
        "windows": [
            {"window": w.window.value, "period": w.period, "limit_usd": float(w.limit_usd),
             "spent_usd": float(w.committed_usd), "remaining_usd": float(w.remaining_usd), "resets_at": w.resets_at}
            for w in view.windows
        ],
    }


def register_error_handlers(app: Flask) -> None:
    """Map our error types and every HTTP error to the one JSON shape."""

    @app.errorhandler(InvalidRequest)
    def _invalid(exc: InvalidRequest) -> Response:
        if exc.problem is RequestProblem.NOT_FOUND:
            return error_response(404, "not_found_error", exc.message, param=exc.param, code="model_not_found")
        return error_response(400, "invalid_request_error", exc.message, param=exc.param)

    @app.errorhandler(ConfigError)
    def _config(exc: ConfigError) -> Response:
        return error_response(503, "config_unavailable", str(exc))

    @app.errorhandler(StoreUnavailable)
    def _store(exc: StoreUnavailable) -> Response:
        return error_response(503, ErrorReason.SPEND_STORE_UNAVAILABLE.value, f"the spend store is unavailable: {exc}",
                              retry_after_s=STORE_RETRY_AFTER_SECONDS)

    @app.errorhandler(RoutingFailed)
    def _routing(exc: RoutingFailed) -> Response:
        g.failure = exc
        details: dict[str, Any] = {}
        if exc.details:
            from costroute.service.spend import BudgetView  # details exist only with budgets

            details = {name: budget_json(value) if isinstance(value, BudgetView) else value
                       for name, value in exc.details.items()}
        return error_response(
            STATUS_BY_REASON[exc.reason],
            exc.reason.value,
            exc.message,
            retry_after_s=exc.retry_after_s,
            extra={"attempts": attempts_json(exc.attempts), "decision_trace": list(exc.trace), **details},
        )

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = f"the request body is larger than the limit of {current_app.config['COSTROUTE_MAX_BODY']} bytes"
        response = error_response(status, _TYPE_BY_STATUS.get(status, "http_error"), message)
        if status == 405 and getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # A programming error: logged with its traceback (which holds no request secrets), answered plainly.
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "the router failed unexpectedly; see the service's logs")
