"""The OpenAI-compatible API: ``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /v1/models/{id}``.

Routing constraints come in the body's ``routing`` object (what the SDK sends with
``extra_body={"routing": {...}}``) or in ``x-route-*`` headers (``x-route-max-cost-usd``,
``x-route-min-quality``, ...). Per field, the body wins over the header. Header values are read
as JSON scalars (``0.002``, ``3``, ``true``), except ``prefer_provider`` and ``task_type``,
which are plain text. Every answer validates against the schema OpenAI publishes for it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, g, request, stream_with_context

from costroute.core.registry import AmbiguousModel
from costroute.core.requests import AUTO_MODEL, ROUTING_FIELDS, parse_chat_body
from costroute.providers.base import Completion, StreamPiece
from costroute.service.router import RouteOutcome, StreamEnd
from costroute.web.account import route_headers, routing_account
from costroute.web.context import elapsed_ms, observe, route_context, runtime, time_left_s
from costroute.web.errors import error_response
from costroute.web.native import read_json_body

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


def _model_object(model_id: str, owned_by: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owned_by}


@openai_compat.get("/models")
def list_models() -> Response:
    """The registry in OpenAI's list format, ``auto`` first; ``owned_by`` is each model's provider."""
    registry = runtime().service.registry()
    data = [_model_object(AUTO_MODEL, "costroute")]
    data += [_model_object(m.id, m.provider) for m in registry.models]
    return _json_response({"object": "list", "data": data})


@openai_compat.get("/models/<path:model_id>")
def retrieve_model(model_id: str) -> Response:
    """One model (the SDK's ``client.models.retrieve``), by id or by an unambiguous bare name."""
    if model_id == AUTO_MODEL:
        return _json_response(_model_object(AUTO_MODEL, "costroute"))
    registry = runtime().service.registry()
    try:
        model = registry.resolve(model_id)
    except AmbiguousModel as exc:
        return error_response(400, "invalid_request_error", f"model '{model_id}' names several models: "
                              f"{', '.join(exc.ids)}", param="model", code="model_ambiguous")
    if model is None:
        return error_response(404, "invalid_request_error", f"The model '{model_id}' does not exist",
                              param="model", code="model_not_found")
    return _json_response(_model_object(model.id, model.provider))


@openai_compat.post("/chat/completions")
def chat_completions() -> Response:
    """Route (model "auto") or call a pinned model, answering as OpenAI does."""
    body_json = read_json_body()
    if isinstance(body_json, dict) and isinstance(body_json.get("model"), str):
        g.requested_model = body_json["model"]
    chat = parse_chat_body(body_json, header_routing(), HEADER_NAMES)
    service = runtime().service
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if chat.stream:
        streamed = service.route_stream(chat.route, time_left_s(), route_context())
        opening = streamed.opening
        g.streaming = True
        headers = route_headers(opening, elapsed_ms() - opening.provider_ms, final=False)
        body = _sse(opening, streamed.pieces, completion_id, created, chat.include_usage)
        return Response(stream_with_context(body), mimetype="text/event-stream", headers=headers)
    outcome = service.route(chat.route, time_left_s(), route_context())
    g.outcome = outcome
    completion = outcome.completion
    assert completion is not None
    answer = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": outcome.model.id,
        "choices": [
            {"index": 0, "message": _message(completion), "logprobs": None, "finish_reason": completion.finish_reason}
        ],
        "usage": openai_usage(outcome),
        "routing": routing_account(outcome),
    }
    return _json_response(answer, headers=route_headers(outcome, elapsed_ms() - outcome.provider_ms, final=True))


def _message(completion: Completion) -> dict[str, Any]:
    """The assistant message as OpenAI shapes it: content null when the answer is only tool calls."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.text if completion.text or not completion.tool_calls else None,
        "refusal": completion.refusal,
    }
    if completion.tool_calls:
        message["tool_calls"] = list(completion.tool_calls)
    return message


def openai_usage(outcome: RouteOutcome) -> dict[str, Any] | None:
    """Usage as OpenAI reports it: every input token in prompt_tokens, the cached ones in its details."""
    settlement = outcome.settlement
    if settlement is None:
        return None
    usage = settlement.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
    }


def _sse(
    opening: RouteOutcome, pieces: Iterator[StreamPiece | StreamEnd], completion_id: str, created: int,
    include_usage: bool,
) -> Iterator[str]:
    def payload(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": opening.model.id,
            "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            # As OpenAI does with include_usage: every chunk carries "usage", null until the last.
            body["usage"] = None
        return body

    def event(body: dict[str, Any]) -> str:
        return f"data: {json.dumps(body)}\n\n"

    final, ended = opening, False
    try:
        yield event(payload({"role": "assistant", "content": ""}))
        for item in pieces:
            if isinstance(item, StreamEnd):
                final, ended = item.outcome, True
                yield from _closing_events(item.outcome, payload, event, include_usage)
                return
            delta: dict[str, Any] = {}
            if item.text:
                delta["content"] = item.text
            if item.tool_calls:
                delta["tool_calls"] = list(item.tool_calls)
            if item.refusal:
                delta["refusal"] = item.refusal
            if delta:
                yield event(payload(delta))
    finally:
        # A client that goes away closes this generator: close the provider's stream with it.
        close = getattr(pieces, "close", None)
        if callable(close):
            close()
        error = final.stream_error
        observe(200, "client_closed" if not ended else None if error is None else "upstream_error", final)


def _closing_events(outcome: RouteOutcome, payload: Any, event: Any, include_usage: bool) -> Iterator[str]:
    """The last events: the finish reason and usage, or the error event when the stream broke."""
    error = outcome.stream_error
    if error is not None:
        # The status line is already sent: report the failure in the stream, as OpenAI does.
        body = {"error": {"type": "upstream_error", "message": error.message, "param": None, "code": error.kind.value},
                "routing": routing_account(outcome)}
        yield event(body)
        yield "data: [DONE]\n\n"
        return
    completion = outcome.completion
    assert completion is not None
    yield event(payload({}, completion.finish_reason))
    if include_usage:
        final = payload(None)
        final["usage"] = openai_usage(outcome)
        final["routing"] = routing_account(outcome)
        yield event(final)
    yield "data: [DONE]\n\n"


def _json_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), mimetype="application/json", headers=headers)
