"""The native API: ``GET /health``, ``GET /models`` and ``POST /route``."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from costroute.bootstrap import Runtime
from costroute.core.estimate import Estimate
from costroute.core.requests import InvalidRequest, parse_route_body
from costroute.service import RouteResult
from costroute.web.errors import attempts_json

native = Blueprint("native", __name__)

# Set by handler.py's WSGI wrapper on Lambda: seconds the invocation has left.
TIME_LEFT_ENVIRON_KEY = "costroute.time_left_s"


def runtime() -> Runtime:
    """The runtime wired for this app."""
    return current_app.extensions["costroute"]


def usd(amount: Decimal | None) -> float | None:
    """A Decimal dollar amount as a JSON number (the nearest float to the exact value)."""
    return None if amount is None else float(amount)


def read_json_body() -> Any:
    """The request body decoded as JSON, whatever the Content-Type; 400 when it is not JSON."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except InvalidRequest:
        raise
    except RecursionError as exc:
        raise InvalidRequest("the request body is nested too deeply") from exc
    except ValueError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from exc
    # A \uD800-style escape decodes to a lone surrogate, which no provider can be sent.
    if b"\\ud" in raw or b"\\uD" in raw:
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequest("the request body holds a lone surrogate (\\uD800-\\uDFFF), which is not text") from exc
    return body


def _reject_constant(name: str) -> Any:
    raise InvalidRequest(f"the request body contains {name}, which is not a JSON number")


def time_left_s() -> float | None:
    """Seconds the platform gives this request, when it says (Lambda); else None."""
    value = request.environ.get(TIME_LEFT_ENVIRON_KEY)
    return float(value) if value is not None else None


@native.get("/health")
def health() -> Response:
    """Service health, version, and where the registry and key come from (never the key)."""
    return jsonify(runtime().health())


@native.get("/models")
def models() -> Response:
    """Every registered model with its prices, limits and availability."""
    service = runtime().service
    registry = service.registry()
    listed = []
    for model in registry.models:
        reason = service.availability(model)
        listed.append(
            {
                "id": model.id,
                "provider": model.provider,
                "name": model.name,
                "quality": model.quality,
                "input_cost_per_1k": usd(model.input_cost_per_1k),
                "output_cost_per_1k": usd(model.output_cost_per_1k),
                "latency_ms": model.latency_ms,
                "max_output_tokens": model.max_output_tokens,
                "available": reason is None,
                "unavailable_reason": reason,
            }
        )
    return jsonify({"models": listed, "count": len(listed), "source": runtime().registry.source})


@native.post("/route")
def route() -> Response:
    """Pick the cheapest model that meets the constraints, call it, and explain the choice."""
    route_request = parse_route_body(read_json_body())
    result = runtime().service.route(route_request, time_left_s())
    return jsonify(route_result_json(result))


def route_result_json(result: RouteResult) -> dict[str, Any]:
    """The /route response: the seed's fields first, then the full account."""
    decision = result.decision
    estimate = decision.estimate
    assert estimate is not None
    completion = result.completion
    limit = result.request.max_candidates
    candidates = decision.candidates if limit is None else decision.candidates[:limit]
    body: dict[str, Any] = {
        "model": result.model.id,
        "strategy": decision.strategy,
        "decision_trace": result.trace,
        "estimate": estimate_json(estimate),
        "response": completion.text if completion else None,
        "provider_latency_ms": round(completion.latency_ms, 3) if completion else None,
        "provider_latency_kind": completion.latency_kind if completion else None,
        "dry_run": result.request.dry_run,
        "required_quality": {"value": decision.required_quality, "source": decision.quality_source},
        "rung": {"number": decision.rung, "description": decision.rung_description},
        "latency_relaxed": decision.latency_relaxed,
        "max_tokens": result.plan.max_tokens,
        "cost_ceiling_applied": result.plan.ceiling_applied,
        "finish_reason": completion.finish_reason if completion else None,
        "usage": usage_json(result),
        "actual_cost_usd": usd(result.actual_cost_usd),
        "attempts": attempts_json(result.attempts),
        "candidates_total": len(decision.candidates),
        "candidates": [
            {
                "model": candidate.model.id,
                "provider": candidate.model.provider,
                "quality": candidate.model.quality,
                "estimated_cost_usd": usd(candidate.estimate.cost_usd),
                "estimated_latency_ms": candidate.estimate.latency_ms,
                "estimated_output_tokens": candidate.estimate.output_tokens,
                "verdict": candidate.verdict,
                "reason": candidate.reason,
            }
            for candidate in candidates
        ],
    }
    return body


def estimate_json(estimate: Estimate) -> dict[str, Any]:
    """An estimate as the seed's ``estimate`` object."""
    return {
        "input_tokens": estimate.input_tokens,
        "output_tokens": estimate.output_tokens,
        "cost_usd": usd(estimate.cost_usd),
        "latency_ms": estimate.latency_ms,
    }


def usage_json(result: RouteResult) -> dict[str, Any] | None:
    """The provider's reported usage with the actual cost computed from it."""
    completion = result.completion
    if completion is None:
        return None
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        "cost_usd": usd(result.actual_cost_usd),
    }
