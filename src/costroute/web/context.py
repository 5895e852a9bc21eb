"""Per-request facts the web layer knows: the request id, the caller, the timing, and the request's record.

* The request id is API Gateway's (``requestContext.requestId``, set by handler.py) on Lambda,
  else generated; every answer carries it as ``x-request-id``.
* The caller, for budgets: on Lambda the API key's id (``requestContext.identity.apiKeyId``, set
  by handler.py from the event API Gateway wrote, never from a header a client can set); locally
  the SHA-256 (hex) of the ``Authorization: Bearer`` token, written ``sha256:<hex>``, so a budgets
  document can name local callers without holding their tokens; no token: ``anonymous``.
* Once an answer is complete (a stream: once it ended) its ``RequestRecord`` goes to the runtime's
  observer (the log line, EMF, Prometheus).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

from flask import Flask, Response, current_app, g, request

from costroute.core.outcome import ErrorReason, RoutingFailed
from costroute.observe.record import AttemptRecord, Dialect, RequestRecord
from costroute.runtime import Runtime
from costroute.service.router import ANONYMOUS, RequestContext, RouteOutcome

# Set by handler.py's WSGI wrapper on Lambda (from the event, never from a header).
TIME_LEFT_ENVIRON_KEY = "costroute.time_left_s"
CALLER_ENVIRON_KEY = "costroute.caller"
REQUEST_ID_ENVIRON_KEY = "costroute.request_id"
ON_LAMBDA_ENVIRON_KEY = "costroute.on_lambda"


def caller_id() -> str:
    """Who the request comes from (see the module docstring)."""
    if request.environ.get(ON_LAMBDA_ENVIRON_KEY):
        return str(request.environ.get(CALLER_ENVIRON_KEY) or ANONYMOUS)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "sha256:" + hashlib.sha256(token.strip().encode("utf-8")).hexdigest()
    return ANONYMOUS


def request_id() -> str:
    """This request's id."""
    found: str = g.request_id
    return found


def route_context() -> RequestContext:
    """What the router records about this request."""
    return RequestContext(request_id=request_id(), caller=caller_id())


def time_left_s() -> float | None:
    """Seconds the platform gives this request, when it says (Lambda); else None."""
    value = request.environ.get(TIME_LEFT_ENVIRON_KEY)
    return float(value) if value is not None else None


# Probes and scrapes are not traffic: counted, a load balancer's health checks and Prometheus' own
# scrapes would swamp the request and error counts, and write a line every few seconds.
UNOBSERVED_PATHS = frozenset({"/health", "/metrics"})


def elapsed_ms() -> float:
    """Milliseconds since the request arrived."""
    started: float = g.started
    return (time.perf_counter() - started) * 1000


def install(app: Flask) -> None:
    """Request ids on every answer, and one record per request for the observers."""

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.received_at = time.time()
        g.request_id = str(request.environ.get(REQUEST_ID_ENVIRON_KEY) or uuid.uuid4().hex)

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["x-request-id"] = request_id()
        if not g.get("streaming") and request.path not in UNOBSERVED_PATHS:
            observe(response.status_code, g.get("error_type"))
        return response


def runtime() -> Runtime:
    """The runtime wired for this app."""
    found: Runtime = current_app.extensions["costroute"]
    return found


def dialect() -> Dialect:
    """Which API the request speaks."""
    if request.path == "/route":
        return "route"
    if request.path.startswith("/v1/chat/"):
        return "chat"
    return "other"


def observe(status: int, error_type: str | None, outcome: RouteOutcome | None = None) -> None:
    """Build this request's record and hand it to the observers."""
    outcome = outcome if outcome is not None else g.get("outcome")
    failure: RoutingFailed | None = g.get("failure")
    record = build_record(status, error_type, outcome, failure)
    runtime().observer.observe(record)


def build_record(status: int, error_type: str | None, outcome: RouteOutcome | None,
                 failure: RoutingFailed | None) -> RequestRecord:
    """The record of this request from what routing produced (or why it failed)."""
    attempts = outcome.attempts if outcome is not None else (failure.attempts if failure is not None else ())
    provider_ms = outcome.provider_ms if outcome is not None else sum(a.duration_ms for a in attempts)
    fields: dict[str, Any] = {}
    if outcome is not None:
        model = outcome.model
        settlement = outcome.settlement
        usage = settlement.usage if settlement is not None else None
        estimate = outcome.decision.estimate
        fields.update(
            model=model.id, provider=model.provider, upstream_model=model.upstream, rung=outcome.decision.rung,
            dry_run=outcome.request.dry_run, ceiling_applied=outcome.plan.ceiling_applied,
            estimated_cost_usd=estimate.cost_usd if estimate is not None else None,
            cost_usd=settlement.cost_usd if settlement is not None else None,
            over_budget=bool(settlement and settlement.over_budget_usd is not None),
            over_budget_usd=settlement.over_budget_usd if settlement is not None else None,
            usage_reported=bool(settlement and settlement.reported),
            failovers=outcome.failovers,
        )
        if usage is not None:
            fields.update(input_tokens=usage.prompt_tokens, cached_input_tokens=usage.cache_read_tokens,
                          cache_write_tokens=usage.cache_write_tokens + usage.cache_write_1h_tokens,
                          output_tokens=usage.output_tokens)
        fields["provider_kind"] = outcome.provider_kind
    elif attempts:
        last = attempts[-1]
        fields.update(model=last.model_id, provider=last.model_id.split(":", 1)[0])
    if failure is not None and outcome is None:
        fields["failovers"] = sum(1 for a, b in zip(attempts, attempts[1:], strict=False) if a.model_id != b.model_id)
    spend = runtime().spend
    return RequestRecord(
        request_id=request_id(),
        timestamp=float(g.get("received_at", time.time())),
        dialect=dialect(),
        method=request.method,
        path=request.path,
        http_status=status,
        error_type=error_type,
        caller=caller_id() if spend is not None else None,
        requested_model=g.get("requested_model"),
        stream=bool(g.get("streaming")),
        attempts=tuple(AttemptRecord(model=a.model_id, provider=a.model_id.split(":", 1)[0], outcome=a.outcome,
                                     status=a.status, duration_ms=a.duration_ms) for a in attempts),
        router_overhead_ms=max(0.0, elapsed_ms() - provider_ms),
        provider_ms=provider_ms,
        budget_refused=failure is not None and (failure.reason is ErrorReason.BUDGET_EXHAUSTED or (
            # The caller's whole limit could not hold the cheapest call: refused by its budget too.
            failure.reason is ErrorReason.BUDGET_EXCEEDED and "budget" in failure.details)),
        **fields,
    )
