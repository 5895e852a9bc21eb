"""The OpenAI-compatible API: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Routing constraints come in the body's ``routing`` object (what the SDK sends with
``extra_body={"routing": {...}}``) or in ``x-route-*`` headers (``x-route-max-cost-usd``,
``x-route-min-quality``, ...). Per field, the body wins over the header. Header values are read
as JSON scalars (``0.002``, ``3``, ``true``), except ``prefer_provider`` and ``task_type``,
which are plain text.
"""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal
from typing import Any, Iterator

from flask import Blueprint, Response, request, stream_with_context

from costroute.core.requests import AUTO_MODEL, ROUTING_FIELDS, parse_chat_body
from costroute.core.selection import plain_decimal
from costroute.providers.base import Completion, ProviderError
from costroute.service import RouteResult
from costroute.web.errors import attempts_json
from costroute.web.native import estimate_json, read_json_body, runtime, time_left_s, usage_json, usd

openai_compat = Blueprint("openai_compat", __name__, url_prefix="/v1")

_TEXT_HEADER_FIELDS = frozenset({"prefer_provider", "task_type"})


def header_name(field_name: str) -> str:
    """The request header that carries a routing field: ``x-route-max-cost-usd`` and so on."""
    return "x-route-" + field_name.replace("_", "-")


HEADER_NAMES: dict[str, str] = {field_name: header_name(field_name) for field_name in ROUTING_FIELDS}


def header_routing() -> dict[str, Any]:
    """Routing fields given as ``x-route-*`` headers, decoded as JSON scalars where they parse.

    A value that does not parse is kept as text, so validation refuses it naming the header, and
    only when the body does not set the same field.
    """
    values: dict[str, Any] = {}
    for field_name in ROUTING_FIELDS:
        raw = request.headers.get(header_name(field_name))
        if raw is None:
            continue
        if field_name in _TEXT_HEADER_FIELDS:
            values[field_name] = raw
            continue
        try:
            values[field_name] = json.loads(raw)
        except (ValueError, RecursionError):
            values[field_name] = raw
    return values


@openai_compat.get("/models")
def list_models() -> Response:
    """The registry in OpenAI's list format, with ``auto`` first."""
    registry = runtime().service.registry()
    data = [{"id": AUTO_MODEL, "object": "model", "created": 0, "owned_by": "costroute"}]
    data += [{"id": m.id, "object": "model", "created": 0, "owned_by": m.provider} for m in registry.models]
    return _json_response({"object": "list", "data": data})


@openai_compat.post("/chat/completions")
def chat_completions() -> Response:
    """Route (model "auto") or call a pinned model, answering as OpenAI does."""
    began = time.perf_counter()
    chat = parse_chat_body(read_json_body(), header_routing(), HEADER_NAMES)
    service = runtime().service
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if chat.stream:
        streamed = service.route_stream(chat.route, time_left_s())
        headers = _route_headers(streamed.result, began, final=False)
        body = _sse(streamed.result, streamed.pieces, completion_id, created, chat.include_usage)
        return Response(stream_with_context(body), mimetype="text/event-stream", headers=headers)
    result = service.route(chat.route, time_left_s())
    completion = result.completion
    assert completion is not None
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": result.model.id,
        "choices": [
            {
                "index": 0,
                "message": _message(completion),
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": _openai_usage(result),
        "routing": routing_summary(result),
    }
    return _json_response(body, headers=_route_headers(result, began, final=True))


def _message(completion: Completion) -> dict[str, Any]:
    """The assistant message as OpenAI shapes it: content null when the answer is only tool calls."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.text if completion.text or not completion.tool_calls else None,
    }
    if completion.tool_calls:
        message["tool_calls"] = list(completion.tool_calls)
    if completion.refusal:
        message["refusal"] = completion.refusal
    return message


def routing_summary(result: RouteResult) -> dict[str, Any]:
    """The routing account carried beside an OpenAI answer (the /route account without candidates)."""
    decision = result.decision
    estimate = decision.estimate
    assert estimate is not None
    return {
        "model": result.model.id,
        "strategy": decision.strategy,
        "decision_trace": result.trace,
        "estimate": estimate_json(estimate),
        "required_quality": {"value": decision.required_quality, "source": decision.quality_source},
        "rung": {"number": decision.rung, "description": decision.rung_description},
        "max_tokens": result.plan.max_tokens,
        "cost_ceiling_applied": result.plan.ceiling_applied,
        "actual_cost_usd": usd(result.actual_cost_usd),
        "attempts": attempts_json(result.attempts),
    }


def _openai_usage(result: RouteResult) -> dict[str, Any] | None:
    usage = usage_json(result)
    if usage is None:
        return None
    return {key: usage[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")}


def _route_headers(result: RouteResult, began: float, final: bool) -> dict[str, str]:
    estimate = result.decision.estimate
    headers = {
        "x-route-model": result.model.id,
        "x-route-estimated-cost-usd": _usd_text(estimate.cost_usd if estimate else None),
        "x-route-attempts": str(len(result.attempts)),
        "x-route-overhead-ms": f"{max(0.0, (time.perf_counter() - began) * 1000 - result.provider_ms):.3f}",
    }
    if final:
        headers["x-route-cost-usd"] = _usd_text(result.actual_cost_usd)
    return headers


def _usd_text(amount: Decimal | None) -> str:
    return "" if amount is None else plain_decimal(amount)


def _sse(
    result: RouteResult, pieces: Iterator[Any], completion_id: str, created: int, include_usage: bool
) -> Iterator[str]:
    def payload(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": result.model.id,
            "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            # As OpenAI does with include_usage: every chunk carries "usage", null until the last.
            body["usage"] = None
        return body

    def event(body: dict[str, Any]) -> str:
        return f"data: {json.dumps(body)}\n\n"

    try:
        yield event(payload({"role": "assistant", "content": ""}))
        try:
            for piece in pieces:
                delta: dict[str, Any] = {}
                if piece.text:
                    delta["content"] = piece.text
                if piece.tool_calls:
                    delta["tool_calls"] = list(piece.tool_calls)
                if delta:
                    yield event(payload(delta))
        except ProviderError as exc:
            # The status line is already sent: report the failure in the stream, as OpenAI does.
            error = {"error": {"type": "upstream_error", "message": exc.message, "param": None, "code": exc.kind}}
            yield event(error)
            yield "data: [DONE]\n\n"
            return
        completion = result.completion
        assert completion is not None
        yield event(payload({}, completion.finish_reason))
        if include_usage:
            final = payload(None)
            final["usage"] = _openai_usage(result)
            final["routing"] = routing_summary(result)
            yield event(final)
        yield "data: [DONE]\n\n"
    finally:
        # A client that goes away closes this generator: close the provider's stream with it.
        close = getattr(pieces, "close", None)
        if callable(close):
            close()


def _json_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), mimetype="application/json", headers=headers)
