"""The native API: ``GET /health``, ``GET /models`` and ``POST /route``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, current_app, g, jsonify, request

from costroute.core.requests import decode_json_body, parse_route_body
from costroute.service.router import RouteOutcome
from costroute.web.account import candidates_json, routing_account, usage_json, usd
from costroute.web.context import route_context, runtime, time_left_s

native = Blueprint("native", __name__)


def read_json_body() -> Any:
    """The request body decoded as strict UTF-8 JSON, whatever the Content-Type; 400 when it is not.

    A body over the limit is a 413 however it arrives: with ``Content-Length`` werkzeug refuses
    it before reading; a chunked one is read to one byte past the limit, never cut and routed.
    """
    limit: int = current_app.config["COSTROUTE_MAX_BODY"]
    raw = request.get_data(cache=True)
    if len(raw) > limit:
        abort(413)
    return decode_json_body(raw)


@native.get("/health")
def health() -> Response:
    """Service health, version, the registry's source and every provider (never a key)."""
    return jsonify(runtime().health())


@native.get("/models")
def models() -> Response:
    """Every registered model with its prices, limits and availability."""
    wired = runtime()
    service = wired.service
    registry = service.registry()
    listed = []
    for model in registry.models:
        reason = service.availability(model, registry)
        routing = registry.routing_excluded.get(model.id)
        listed.append(
            {
                "id": model.id,
                "provider": model.provider,
                "kind": registry.providers[model.provider].kind,
                "name": model.name,
                "upstream_model": model.upstream,
                "quality": model.quality,
                "input_cost_per_1k": usd(model.input_cost_per_1k),
                "output_cost_per_1k": usd(model.output_cost_per_1k),
                "cached_input_cost_per_1k": usd(model.cached_input_cost_per_1k),
                "cache_write_cost_per_1k": usd(model.cache_write_cost_per_1k),
                "latency_ms": model.latency_ms,
                "max_output_tokens": model.max_output_tokens,
                "available": reason is None and routing is None,
                "unavailable_reason": reason or routing,
                "pinnable": reason is None,
            }
        )
    return jsonify({"models": listed, "count": len(listed), "source": wired.registry.source})


@native.post("/route")
def route() -> Response:
    """Pick the cheapest model that meets the constraints, call it, and explain the choice."""
    route_request = parse_route_body(read_json_body())
    outcome = runtime().service.route(route_request, time_left_s(), route_context())
    g.outcome = outcome
    return jsonify(route_result_json(outcome))


def route_result_json(outcome: RouteOutcome) -> dict[str, Any]:
    """The /route response: the seed's fields first, then the full account."""
    account = routing_account(outcome)
    completion = outcome.completion
    total, candidates = candidates_json(outcome)
    return {
        "model": account.pop("model"),
        "strategy": account.pop("strategy"),
        "decision_trace": account.pop("decision_trace"),
        "estimate": account.pop("estimate"),
        "response": completion.text if completion else None,
        "provider_latency_ms": round(completion.latency_ms, 3) if completion else None,
        "provider_latency_kind": completion.latency_kind if completion else None,
        "dry_run": outcome.request.dry_run,
        **account,
        "finish_reason": completion.finish_reason if completion else None,
        "usage": usage_json(outcome),
        "candidates_total": total,
        "candidates": candidates,
    }
