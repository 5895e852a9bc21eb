"""``GET /openapi.json``: an OpenAPI 3.1 description of every endpoint, native and OpenAI-compatible.

It says what the service really accepts, so that a schema-driven fuzzer gets past validation:
``null`` wherever null means "absent", ``minLength`` and a non-blank pattern where an empty or
blank string is refused, bounds where numbers are bounded, and chat messages by role with the
content each role requires. tests/unit/test_openapi.py keeps it in step with the app's URL rules.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from costroute import __version__
from costroute.core.registry import MAX_QUALITY, MIN_QUALITY
from costroute.core.requests import MAX_BUDGET_USD

openapi = Blueprint("openapi", __name__)

_ERROR = {"$ref": "#/components/schemas/Error"}
_TEXT = {"type": "string", "minLength": 1, "pattern": r"\S"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema, or null (which the service reads as "absent")."""
    return {"anyOf": [schema, {"type": "null"}]}


_ROUTING_PROPERTIES: dict[str, Any] = {
    "max_cost_usd": _nullable({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_BUDGET_USD,
                               "description": "Hard per-request ceiling in USD."}),
    "min_quality": _nullable({"type": "integer", "minimum": MIN_QUALITY, "maximum": MAX_QUALITY}),
    "max_latency_ms": _nullable({"type": "integer", "minimum": 1}),
    "prefer_provider": _nullable({**_TEXT, "description": "A provider that some model of the registry has."}),
    "strict_budget": _nullable({"type": "boolean", "description": "Never relax the budget; 402 when nothing fits."}),
    "strict_quality": _nullable({"type": "boolean",
                                 "description": "Never relax the quality floor; 422 when no model meets it."}),
}
_METADATA_PROPERTIES: dict[str, Any] = {
    "task_type": _nullable(_TEXT),
    "expected_output_tokens": _nullable({"type": "integer", "minimum": 1}),
}

# Routing fields may also come as x-route-* headers (the body wins per field); values are JSON scalars,
# except prefer_provider and task_type, which are plain text.
_ROUTING_HEADERS: list[dict[str, Any]] = [
    {
        "name": "x-route-" + name.replace("_", "-"),
        "in": "header",
        "required": False,
        "description": f"routing.{name}, for clients that cannot add body fields; the body's value wins.",
        "schema": schema["anyOf"][0],
    }
    for name, schema in {**_ROUTING_PROPERTIES, **_METADATA_PROPERTIES}.items()
]
_RETRY_HEADERS: dict[str, Any] = {
    "x-should-retry": {"description": "false when a client retry would only repeat this answer (the SDKs obey it)",
                       "schema": {"type": "string", "enum": ["true", "false"]}},
    "Retry-After": {"description": "Seconds after which a retry is worth it (429/503 from upstream, 402 budgets)",
                    "schema": {"type": "integer"}},
}
_ROUTE_RESPONSE_HEADERS: dict[str, Any] = {
    "x-route-model": {"description": "The model that served", "schema": {"type": "string"}},
    "x-route-estimated-cost-usd": {"description": "The chosen model's estimated cost, exact", "schema": {"type": "string"}},
    "x-route-cost-usd": {"description": "The actual cost, exact: from the reported usage, or the worst case when the "
                         "provider reported none (not on streams)", "schema": {"type": "string"}},
    "x-route-over-budget-usd": {"description": "By how much the actual cost passed the budget, when a provider "
                                "ignored max_tokens (not on streams)", "schema": {"type": "string"}},
    "x-route-attempts": {"description": "Provider calls made, failovers included", "schema": {"type": "integer"}},
    "x-route-overhead-ms": {"description": "Time spent in the router, not the provider", "schema": {"type": "number"}},
    "x-route-budget-remaining-usd": {"description": "With budgets: what the caller has left in its tightest window "
                                     "after this request (on a stream: after holding its worst case), exact",
                                     "schema": {"type": "string"}},
}

_TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {
        "type": {"const": "text"},
        "text": {"type": "string"},
        "cache_control": {"type": "object", "description": "A prompt-cache breakpoint (Anthropic and Bedrock models)",
                          "required": ["type"],
                          "properties": {"type": {"const": "ephemeral"}, "ttl": {"enum": ["5m", "1h"]}}},
    },
}
_CONTENT = {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}]}
_TOOL_CALL = {
    "type": "object",
    "required": ["id", "type", "function"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "function"},
        "function": {"type": "object", "required": ["name", "arguments"],
                     "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}}},
    },
}


def _message(role: str, required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["role", *required],
        "properties": {"role": {"const": role}, "name": {"type": "string"}, **properties},
    }


# anyOf, not oneOf: the roles are distinct constants, so at most one branch ever matches (and a
# schema-driven generator need not filter for exclusivity).
_MESSAGE = {
    "anyOf": [
        _message("system", ["content"], content=_CONTENT),
        _message("developer", ["content"], content=_CONTENT),
        _message("user", ["content"], content=_CONTENT),
        {
            **_message("assistant", [], content={"anyOf": [_CONTENT, {"type": "null"}]},
                       tool_calls={"type": "array", "items": _TOOL_CALL},
                       function_call={"type": "object", "required": ["name", "arguments"],
                                      "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}}},
                       refusal={"anyOf": [{"type": "string"}, {"type": "null"}]}),
            "anyOf": [{"required": ["content"], "properties": {"content": _CONTENT}},
                      {"required": ["tool_calls"], "properties": {"tool_calls": {"minItems": 1}}},
                      {"required": ["function_call"], "properties": {"function_call": {"minProperties": 1}}}],
        },
        _message("tool", ["content", "tool_call_id"], content=_CONTENT, tool_call_id={"type": "string"}),
        _message("function", ["content", "name"], content={"anyOf": [{"type": "string"}, {"type": "null"}]},
                 name={"type": "string", "minLength": 1}),
    ]
}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {"description": "Error", "headers": _RETRY_HEADERS,
                      "content": {"application/json": {"schema": _ERROR}}}
        for status in statuses
    }


def _ok(description: str, schema: dict[str, Any] | None = None, media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema or {"type": "object"}}}}


_MODEL_OBJECT = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {"id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
                   "owned_by": {"type": "string", "description": "The model's provider"}},
}

_AMOUNTS = {name: {"type": "number"} for name in ("cost_usd", "baseline_cost_usd", "saved_usd")}
_EXACT = {f"{name}_exact": {"type": "string", "description": "the exact amount, plain decimal"} for name in _AMOUNTS}
_TOTALS: dict[str, Any] = {"type": "object", "properties": {
    "requests": {"type": "integer"}, **_AMOUNTS, **_EXACT, "input_tokens": {"type": "integer"},
    "cached_input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}}}
_BUDGET = {"type": "object", "properties": {
    "caller": {"type": "string"}, "name": {"type": ["string", "null"]}, "remaining_usd": {"type": ["number", "null"]},
    "windows": {"type": "array", "items": {"type": "object", "properties": {
        "window": {"enum": ["day", "month"]}, "period": {"type": "string"}, "limit_usd": {"type": "number"},
        "spent_usd": {"type": "number", "description": "committed: settled spend plus what requests in flight hold"},
        "remaining_usd": {"type": "number"},
        "resets_at": {"type": "string", "format": "date-time"}}}}}}
_USAGE = {"type": "object", "required": ["caller", "scope", "from", "to", "group_by", "totals", "groups", "budget"],
          "properties": {
              "caller": {"type": "string"}, "scope": {"enum": ["caller", "all"]}, "from": {"type": "string"},
              "to": {"type": "string"}, "group_by": {"enum": ["day", "model", "caller"]},
              "baseline_model": {"type": ["string", "null"]}, "totals": _TOTALS,
              "groups": {"type": "array", "items": {**_TOTALS, "properties": {
                  **_TOTALS["properties"], "key": {"type": "string"},
                  "by_model": {"type": "object", "description": "group_by=day: cost and requests per model"}}}},
              "budget": _BUDGET}}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Costroute", "version": __version__, "description": "A cost-aware LLM router."},
    "paths": {
        "/health": {"get": {"summary": "Service health, the registry's source, every provider (never a key)",
                            "responses": {"200": _ok("Health")}}},
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
                                    "input": _TEXT,
                                    "constraints": _nullable({"type": "object", "properties": _ROUTING_PROPERTIES}),
                                    "metadata": _nullable({"type": "object", "properties": _METADATA_PROPERTIES}),
                                    "dry_run": _nullable({"type": "boolean"}),
                                    "max_candidates": _nullable({"type": "integer", "minimum": 0}),
                                },
                            }
                        }
                    },
                },
                "responses": {"200": _ok("The decision and the answer"),
                              **_errors(400, 401, 402, 413, 422, 502, 503, 504)},
            }
        },
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI Chat Completions; model 'auto' routes, an id 'provider:name' (or an unambiguous "
                           "bare name) pins",
                "parameters": _ROUTING_HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["model", "messages"],
                                "properties": {
                                    "model": _TEXT,
                                    "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
                                    "max_tokens": _nullable({"type": "integer", "minimum": 1}),
                                    "max_completion_tokens": _nullable({"type": "integer", "minimum": 1}),
                                    "stream": _nullable({"type": "boolean"}),
                                    "stream_options": _nullable({"type": "object", "properties": {
                                        "include_usage": _nullable({"type": "boolean"})}}),
                                    "n": _nullable({"const": 1}),
                                    "modalities": _nullable({"type": "array", "items": {"const": "text"}}),
                                    "service_tier": _nullable({"enum": ["auto", "default", "flex"]}),
                                    "audio": {"type": "null"},
                                    "prediction": {"type": "null"},
                                    "web_search_options": {"type": "null"},
                                    "routing": _nullable({
                                        "type": "object",
                                        "properties": {**_ROUTING_PROPERTIES, **_METADATA_PROPERTIES},
                                    }),
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
                    **_errors(400, 401, 402, 404, 413, 422, 502, 503, 504),
                },
            }
        },
        "/v1/models": {"get": {"summary": "Models in OpenAI's list format",
                               "responses": {"200": _ok("List", {"type": "object", "required": ["object", "data"],
                                                                 "properties": {"object": {"const": "list"},
                                                                                "data": {"type": "array",
                                                                                         "items": _MODEL_OBJECT}}})}}},
        "/v1/models/{model_id}": {
            "get": {
                "summary": "One model (client.models.retrieve), by id or unambiguous bare name",
                "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _ok("Model", _MODEL_OBJECT), **_errors(400, 404)},
            }
        },
        "/usage": {
            "get": {
                "summary": "Spend from the ledger's pre-aggregated counters: totals, groups, the savings against a "
                           "baseline model, and the caller's budget (a caller sees its own; an admin everyone's)",
                "parameters": [
                    {"name": "from", "in": "query", "required": False,
                     "schema": {"type": "string", "format": "date"}, "description": "First day (UTC), inclusive"},
                    {"name": "to", "in": "query", "required": False,
                     "schema": {"type": "string", "format": "date"}, "description": "Last day (UTC), inclusive"},
                    {"name": "group_by", "in": "query", "required": False,
                     "schema": {"enum": ["day", "model", "caller"]}},
                    {"name": "caller", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "Admins only: one caller's usage"},
                ],
                "responses": {"200": _ok("Usage", _USAGE), **_errors(400, 401, 403, 404, 503)},
            }
        },
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _ok("OpenAPI document")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (make serve); 404 where they are not enabled",
                             "responses": {"200": {"description": "Prometheus text format",
                                                   "content": {"text/plain": {}}}, **_errors(404)}}},
        "/": {"get": {"summary": "The playground page (HTML; holds no data, so no API key on API Gateway)",
                      "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}}},
        "/assets/{filename}": {"get": {
            "summary": "The playground's CSS and JavaScript",
            "parameters": [{"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The file"}, **_errors(404)}}},
    },
    "components": {
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["type", "message", "param", "code"],
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
