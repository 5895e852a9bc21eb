"""``GET /openapi.json``: an OpenAPI 3.1 description of every endpoint, native and OpenAI-compatible.

tests/unit/test_openapi.py keeps it in step with the app's URL rules.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from costroute import __version__
from costroute.core.registry import MAX_QUALITY, MIN_QUALITY

openapi = Blueprint("openapi", __name__)

_ERROR = {"$ref": "#/components/schemas/Error"}
_ROUTING_PROPERTIES: dict[str, Any] = {
    "max_cost_usd": {"type": "number", "exclusiveMinimum": 0, "description": "Hard per-request ceiling in USD."},
    "min_quality": {"type": "integer", "minimum": MIN_QUALITY, "maximum": MAX_QUALITY},
    "max_latency_ms": {"type": "integer", "minimum": 1},
    "prefer_provider": {"type": "string"},
    "strict_budget": {"type": "boolean", "description": "Never relax the budget; 402 when nothing fits."},
}
_METADATA_PROPERTIES: dict[str, Any] = {
    "task_type": {"type": "string"},
    "expected_output_tokens": {"type": "integer", "minimum": 1},
}


# Routing fields may also come as x-route-* headers (the body wins per field); values are JSON scalars,
# except prefer_provider and task_type, which are plain text.
_ROUTING_HEADERS: list[dict[str, Any]] = [
    {
        "name": "x-route-" + name.replace("_", "-"),
        "in": "header",
        "required": False,
        "description": f"routing.{name}, for clients that cannot add body fields; the body's value wins.",
        "schema": schema,
    }
    for name, schema in {**_ROUTING_PROPERTIES, **_METADATA_PROPERTIES}.items()
]
_ROUTE_RESPONSE_HEADERS: dict[str, Any] = {
    "x-route-model": {"description": "The model that served", "schema": {"type": "string"}},
    "x-route-estimated-cost-usd": {"description": "The chosen model's estimated cost, exact", "schema": {"type": "string"}},
    "x-route-cost-usd": {"description": "The actual cost from the reported usage (not on streams)",
                         "schema": {"type": "string"}},
    "x-route-attempts": {"description": "Provider calls made, failovers included", "schema": {"type": "integer"}},
    "x-route-overhead-ms": {"description": "Time spent in the router, not the provider", "schema": {"type": "number"}},
}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {"description": "Error", "content": {"application/json": {"schema": _ERROR}}} for status in statuses
    }


def _ok(description: str, schema: dict[str, Any] | None = None, media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema or {"type": "object"}}}}


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Costroute", "version": __version__, "description": "A cost-aware LLM router."},
    "paths": {
        "/health": {"get": {"summary": "Service health", "responses": {"200": _ok("Health")}}},
        "/models": {"get": {"summary": "Registered models", "responses": {"200": _ok("Models"), **_errors(503)}}},
        "/route": {
            "post": {
                "summary": "Pick the cheapest model that meets the constraints and call it",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["input"],
                                "properties": {
                                    "input": {"type": "string", "minLength": 1},
                                    "constraints": {"type": "object", "properties": _ROUTING_PROPERTIES},
                                    "metadata": {"type": "object", "properties": _METADATA_PROPERTIES},
                                    "dry_run": {"type": "boolean"},
                                    "max_candidates": {"type": "integer", "minimum": 0},
                                },
                            }
                        }
                    },
                },
                "responses": {"200": _ok("The decision and the answer"), **_errors(400, 402, 413, 502, 503, 504)},
            }
        },
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI Chat Completions; model 'auto' routes, 'provider:name' pins",
                "parameters": _ROUTING_HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["model", "messages"],
                                "properties": {
                                    "model": {"type": "string"},
                                    "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
                                    "max_tokens": {"type": "integer", "minimum": 1},
                                    "max_completion_tokens": {"type": "integer", "minimum": 1},
                                    "stream": {"type": "boolean"},
                                    "stream_options": {"type": "object"},
                                    "routing": {
                                        "type": "object",
                                        "properties": {**_ROUTING_PROPERTIES, **_METADATA_PROPERTIES},
                                    },
                                },
                                "additionalProperties": True,
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "A chat.completion, or chat.completion.chunk events when streaming",
                        "headers": _ROUTE_RESPONSE_HEADERS,
                        "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {}},
                    },
                    **_errors(400, 402, 404, 413, 502, 503, 504),
                },
            }
        },
        "/v1/models": {"get": {"summary": "Models in OpenAI's list format", "responses": {"200": _ok("List")}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _ok("OpenAPI document")}}},
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["type", "message"],
                        "properties": {
                            "type": {"type": "string"},
                            "message": {"type": "string"},
                            "param": {"type": ["string", "null"]},
                            "code": {"type": ["string", "null"]},
                        },
                    }
                },
            }
        }
    },
}


@openapi.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI description of this service."""
    return jsonify(SPEC)
