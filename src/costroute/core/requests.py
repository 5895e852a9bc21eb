"""Typed requests from request bodies: decoding and validation with messages that name the field.

Rules shared by ``/route`` and ``/v1/chat/completions``:

* A body is UTF-8 JSON. Invalid UTF-8 (a raw lone surrogate ``\\xed\\xa0\\x80`` included), a
  ``\\ud800``-style escape that decodes to a lone surrogate, ``NaN``/``Infinity`` and a number that
  overflows to infinity (``1e400``) are refused anywhere in the body: no provider can be sent them.
* ``null`` for an optional field means the field is absent; unknown fields are ignored by
  ``/route`` and passed through to the provider by ``/v1``.
* Integers are JSON integers (``3``, not ``3.0`` or ``true``); prices are positive finite numbers,
  kept as the ``Decimal`` of their shortest decimal form, so ``0.002`` is exactly 0.002.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from costroute.core.estimate import ChatMessage, prompt_token_bound
from costroute.core.registry import MAX_QUALITY, MIN_QUALITY
from costroute.core.selection import Constraints

ROUTING_FIELDS: tuple[str, ...] = (
    "max_cost_usd",
    "min_quality",
    "max_latency_ms",
    "prefer_provider",
    "strict_budget",
    "strict_quality",
    "task_type",
    "expected_output_tokens",
)
# Routing fields that /route reads from ``metadata``; the others are in ``constraints``.
METADATA_FIELDS = frozenset({"task_type", "expected_output_tokens"})

# A per-request budget above this is a mistake, not a budget (and would make the ceiling meaningless).
MAX_BUDGET_USD = 1_000_000


class RequestProblem(StrEnum):
    """What is wrong with a request the service refuses; the web layer maps it to a status."""

    INVALID = "invalid"
    NOT_FOUND = "not_found"


class InvalidRequest(ValueError):
    """A request the service refuses; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None, problem: RequestProblem = RequestProblem.INVALID) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.problem = problem


@dataclass(frozen=True)
class RouteRequest:
    """One routing request, from /route or /v1/chat/completions."""

    messages: tuple[ChatMessage, ...]
    constraints: Constraints = field(default_factory=Constraints)
    task_type: str | None = None
    expected_output_tokens: int | None = None
    dry_run: bool = False
    pinned_model: str | None = None
    max_tokens: int | None = None
    max_tokens_field: str = "max_tokens"
    # How the caller named each routing field (constraints.x, routing.x or a header), for errors and the trace.
    param_names: Mapping[str, str] = field(default_factory=dict)
    max_candidates: int | None = None
    # The messages as the caller sent them (OpenAI's format), and the fields passed through to the provider.
    raw_messages: tuple[Mapping[str, Any], ...] = ()
    provider_params: Mapping[str, Any] = field(default_factory=dict)
    # Whether any text part asks the provider to write a prompt cache (``cache_control``).
    cache_breakpoints: bool = False
    # The prompt's worst-case token count (see estimate.prompt_token_bound), computed once.
    prompt_bound: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_bound", prompt_token_bound(self.messages))

    def param(self, name: str) -> str:
        """The routing field as the caller sent it: ``constraints.min_quality``, ``routing.min_quality``, a header."""
        return self.param_names.get(name, name)


def decode_json_body(raw: bytes) -> Any:
    """A request body decoded as strict UTF-8 JSON; InvalidRequest naming what is wrong."""
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"the request body is not valid UTF-8 (at byte {exc.start}): invalid byte sequences, lone surrogates "
            "included, are refused"
        ) from exc
    try:
        body = json.loads(text.removeprefix("\ufeff"), parse_constant=_reject_constant, parse_float=_finite_float)
    except InvalidRequest:
        raise
    except RecursionError as exc:
        raise InvalidRequest("the request body is nested too deeply") from exc
    except ValueError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from exc
    # A \uD800-style escape decodes to a lone surrogate, which no provider can be sent.
    if "\\ud" in text or "\\uD" in text:
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequest("the request body holds a lone surrogate (\\uD800-\\uDFFF), which is not text") from exc
    return body


def _reject_constant(name: str) -> Any:
    raise InvalidRequest(f"the request body contains {name}, which is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidRequest(f"the request body contains the number {text[:40]}, which overflows to infinity")
    return value


def parse_route_body(body: Any) -> RouteRequest:
    """Validate a decoded /route body."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    text = body.get("input")
    if text is None:
        raise InvalidRequest("'input' is required: the text to send to the model", "input")
    if not isinstance(text, str):
        raise InvalidRequest("'input' must be a string", "input")
    if not text.strip():
        raise InvalidRequest("'input' must not be empty", "input")
    constraints_obj = _optional_object(body, "constraints")
    metadata = _optional_object(body, "metadata")
    param_names = {
        name: f"metadata.{name}" if name in METADATA_FIELDS else f"constraints.{name}" for name in ROUTING_FIELDS
    }
    values = {name: (metadata if name in METADATA_FIELDS else constraints_obj).get(name) for name in ROUTING_FIELDS}
    constraints, task_type, expected = parse_routing(values, param_names)
    return RouteRequest(
        messages=(ChatMessage(role="user", content=text),),
        raw_messages=({"role": "user", "content": text},),
        constraints=constraints,
        task_type=task_type,
        expected_output_tokens=expected,
        dry_run=optional_bool(body, "dry_run") or False,
        max_candidates=optional_int(body, "max_candidates", minimum=0),
        param_names=param_names,
    )


def parse_routing(
    values: Mapping[str, Any], param_names: Mapping[str, str] | None = None
) -> tuple[Constraints, str | None, int | None]:
    """Validate the routing fields (constraints and metadata) from one flat mapping."""
    names = {name: name for name in ROUTING_FIELDS}
    names.update(param_names or {})
    budget = _optional_price(values.get("max_cost_usd"), names["max_cost_usd"])
    quality = _optional_int_value(values.get("min_quality"), names["min_quality"], minimum=None)
    if quality is not None and not MIN_QUALITY <= quality <= MAX_QUALITY:
        raise InvalidRequest(
            f"'{names['min_quality']}' must be an integer from {MIN_QUALITY} to {MAX_QUALITY}, got {quality}",
            names["min_quality"],
        )
    latency = _optional_int_value(values.get("max_latency_ms"), names["max_latency_ms"], minimum=1)
    provider = _optional_text(values.get("prefer_provider"), names["prefer_provider"])
    strict_budget = _optional_bool_value(values.get("strict_budget"), names["strict_budget"])
    strict_quality = _optional_bool_value(values.get("strict_quality"), names["strict_quality"])
    task_type = _optional_text(values.get("task_type"), names["task_type"])
    expected = _optional_int_value(values.get("expected_output_tokens"), names["expected_output_tokens"], minimum=1)
    constraints = Constraints(
        max_cost_usd=budget,
        min_quality=quality,
        max_latency_ms=latency,
        prefer_provider=provider,
        strict_budget=bool(strict_budget),
        strict_quality=bool(strict_quality),
    )
    return constraints, task_type, expected


def optional_bool(body: Mapping[str, Any], name: str) -> bool | None:
    """A boolean field, or None when absent."""
    return _optional_bool_value(body.get(name), name)


def optional_int(body: Mapping[str, Any], name: str, minimum: int) -> int | None:
    """An integer field of at least ``minimum``, or None when absent."""
    return _optional_int_value(body.get(name), name, minimum=minimum)


def _optional_object(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{name}' must be an object", name)
    return value


def _optional_price(value: Any, param: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"'{param}' must be a positive number of US dollars", param)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"'{param}' must be a finite number", param)
    if value <= 0:
        raise InvalidRequest(f"'{param}' must be greater than 0, got {value}", param)
    if value > MAX_BUDGET_USD:
        raise InvalidRequest(f"'{param}' must be at most {MAX_BUDGET_USD} US dollars, got {value}", param)
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _optional_int_value(value: Any, param: str, minimum: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{param}' must be an integer, got {_describe(value)}", param)
    if minimum is not None and value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        raise InvalidRequest(f"'{param}' must be {kind}, got {value}", param)
    return value


def _optional_bool_value(value: Any, param: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{param}' must be true or false", param)
    return value


def _optional_text(value: Any, param: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"'{param}' must be a non-empty string", param)
    return value.strip()


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return f"the non-integer number {value}"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__


# Chat Completions fields the service handles itself; every other field passes through.
_CHAT_OWN_FIELDS = frozenset(
    {"model", "messages", "routing", "max_tokens", "max_completion_tokens", "stream", "stream_options"}
)
# Pass-through fields that the provider turns into prompt tokens; they count towards the bound.
_PROMPT_BEARING_FIELDS: tuple[str, ...] = ("tools", "functions", "tool_choice", "response_format")
# Fields whose cost no text price and no max_tokens can bound (audio output, predicted outputs,
# web search fees): refused, because the router promises a per-request cost it can keep.
_UNBOUNDABLE_FIELDS: tuple[str, ...] = ("audio", "prediction", "web_search_options")
# Service tiers billed at the registry's (standard or lower) prices; "priority" and "scale" are not.
_BOUNDED_SERVICE_TIERS = frozenset({"auto", "default", "flex"})
AUTO_MODEL = "auto"
# The roles of OpenAI's Chat Completions; whether each must carry content.
# (OpenAI's function message carries content that may be null; an assistant's may be null when it calls tools.)
_CONTENT_REQUIRED = {"system": True, "developer": True, "user": True, "assistant": False, "tool": True,
                     "function": False}
MESSAGE_ROLES: tuple[str, ...] = tuple(_CONTENT_REQUIRED)


@dataclass(frozen=True)
class ChatRequest:
    """A parsed /v1/chat/completions request: the route request plus the stream settings."""

    route: RouteRequest
    stream: bool
    include_usage: bool


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def parse_chat_body(
    body: Any,
    header_routing: Mapping[str, Any] | None = None,
    header_names: Mapping[str, str] | None = None,
) -> ChatRequest:
    """Validate a decoded Chat Completions body; routing fields in the body win over headers.

    ``header_routing`` holds routing fields given as request headers and ``header_names`` the
    header each came in, so an error names what the caller actually sent.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required: 'auto' to route, or a registry id 'provider:name'", "model")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InvalidRequest("'messages' must be a non-empty array of messages", "messages")
    messages = tuple(_parse_message(index, message) for index, message in enumerate(raw_messages))

    routing_body = _optional_object(body, "routing")
    merged: dict[str, Any] = {}
    param_names: dict[str, str] = {}
    for name in ROUTING_FIELDS:
        if routing_body.get(name) is not None:
            merged[name], param_names[name] = routing_body[name], f"routing.{name}"
        elif (header_routing or {}).get(name) is not None:
            merged[name] = header_routing[name]  # type: ignore[index]
            param_names[name] = (header_names or {}).get(name, name)
        else:
            param_names[name] = f"routing.{name}"
    constraints, task_type, expected = parse_routing(merged, param_names)
    _refuse_unboundable_fields(body)
    _check_tool_shapes(body)

    # The newer field wins the name; when both are given, the smaller cap holds.
    legacy_cap = optional_int(body, "max_tokens", minimum=1)
    completion_cap = optional_int(body, "max_completion_tokens", minimum=1)
    max_tokens_field = "max_completion_tokens" if completion_cap is not None else "max_tokens"
    caps = [cap for cap in (legacy_cap, completion_cap) if cap is not None]
    max_tokens = min(caps) if caps else None
    stream = optional_bool(body, "stream") or False
    stream_options = _optional_object(body, "stream_options")
    include_usage = _optional_bool_value(stream_options.get("include_usage"), "stream_options.include_usage") or False
    count = body.get("n")
    if count is not None and (isinstance(count, bool) or count != 1):
        raise InvalidRequest("'n' must be 1: the router's cost ceiling and accounting cover one choice", "n")

    params = {key: value for key, value in body.items() if key not in _CHAT_OWN_FIELDS}
    prompt_bearing = {key: params[key] for key in _PROMPT_BEARING_FIELDS if key in params}
    estimation_messages = messages
    if prompt_bearing:
        estimation_messages += (ChatMessage(role="system", content=json.dumps(prompt_bearing)),)
    return ChatRequest(
        route=RouteRequest(
            messages=estimation_messages,
            raw_messages=tuple(raw_messages),
            constraints=constraints,
            task_type=task_type,
            expected_output_tokens=expected,
            pinned_model=None if model.strip() == AUTO_MODEL else model.strip(),
            max_tokens=max_tokens,
            max_tokens_field=max_tokens_field,
            provider_params=params,
            param_names=param_names,
            cache_breakpoints=any(_has_cache_breakpoint(message) for message in raw_messages),
        ),
        stream=stream,
        include_usage=include_usage,
    )


def _parse_message(index: int, message: Any) -> ChatMessage:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise InvalidRequest(f"'{param}' must be an object with 'role' and 'content'", param)
    role = message.get("role")
    if not isinstance(role, str) or not role.strip():
        raise InvalidRequest(f"'{param}.role' must be a non-empty string", f"{param}.role")
    if role not in _CONTENT_REQUIRED:
        raise InvalidRequest(f"'{param}.role' is '{role[:40]}', which is not a role; use one of "
                             f"{', '.join(MESSAGE_ROLES)}", f"{param}.role")
    content = message.get("content")
    if isinstance(content, list):
        for part_index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest(
                    f"'{param}.content[{part_index}]' must be a text part: only text content is routed, because "
                    "the cost of images and audio cannot be bounded before the call",
                    f"{param}.content",
                )
    elif content is not None and not isinstance(content, str):
        raise InvalidRequest(f"'{param}.content' must be a string or an array of text parts", f"{param}.content")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        _check_tool_calls(param, role, tool_calls)
    calls_a_tool = bool(tool_calls or message.get("function_call"))
    if content is None and (_CONTENT_REQUIRED[role] or (role == "assistant" and not calls_a_tool)):
        needs = "" if _CONTENT_REQUIRED[role] else " unless it carries 'tool_calls' or 'function_call'"
        raise InvalidRequest(f"'{param}.content' is required for a message of role '{role}'{needs}",
                             f"{param}.content")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise InvalidRequest(f"'{param}.tool_call_id' is required for a message of role 'tool'",
                             f"{param}.tool_call_id")
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise InvalidRequest(f"'{param}.name' must be a string", f"{param}.name")
    if role == "function" and not name:
        raise InvalidRequest(f"'{param}.name' is required for a message of role 'function'", f"{param}.name")
    text = content_text(content)
    extra = {key: message[key] for key in ("tool_calls", "function_call") if message.get(key) is not None}
    if extra:
        text += json.dumps(extra)
    return ChatMessage(role=role, content=text, name=name)


def _check_tool_calls(param: str, role: str, tool_calls: Any) -> None:
    if role != "assistant":
        raise InvalidRequest(f"'{param}.tool_calls' is allowed only in assistant messages", f"{param}.tool_calls")
    if not isinstance(tool_calls, list):
        raise InvalidRequest(f"'{param}.tool_calls' must be an array", f"{param}.tool_calls")
    for call_index, call in enumerate(tool_calls):
        where = f"{param}.tool_calls[{call_index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or not isinstance(call.get("id"), str)
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments"), str)
        ):
            raise InvalidRequest(f"'{where}' must be {{\"id\", \"type\": \"function\", \"function\": {{\"name\", "
                                 f"\"arguments\" (a JSON string)}}}}", where)


def _has_cache_breakpoint(message: Any) -> bool:
    content = message.get("content") if isinstance(message, dict) else None
    return isinstance(content, list) and any(isinstance(part, dict) and part.get("cache_control") for part in content)


def _check_tool_shapes(body: Mapping[str, Any]) -> None:
    """Tools as OpenAI defines them, before any adapter reads them: a wrong shape is the caller's 400."""
    for name in ("tools", "functions"):
        value = body.get(name)
        if value is not None and (not isinstance(value, list) or not all(isinstance(item, dict) for item in value)):
            raise InvalidRequest(f"'{name}' must be an array of objects", name)
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, (str, dict)):
        raise InvalidRequest("'tool_choice' must be a string or an object", "tool_choice")
    call = body.get("function_call")
    if call is not None and not isinstance(call, (str, dict)):
        raise InvalidRequest("'function_call' must be a string or an object", "function_call")


def _refuse_unboundable_fields(body: Mapping[str, Any]) -> None:
    modalities = body.get("modalities")
    if modalities is not None and (not isinstance(modalities, list) or any(m != "text" for m in modalities)):
        raise InvalidRequest(
            "'modalities' may only be [\"text\"]: the router prices text tokens only and cannot bound other output",
            "modalities",
        )
    tier = body.get("service_tier")
    if tier is not None and (not isinstance(tier, str) or tier not in _BOUNDED_SERVICE_TIERS):
        raise InvalidRequest(
            f"'service_tier' may be {', '.join(sorted(_BOUNDED_SERVICE_TIERS))}: other tiers are billed above "
            "the registry's prices, so the cost ceiling could not hold",
            "service_tier",
        )
    for name in _UNBOUNDABLE_FIELDS:
        if body.get(name) is not None:
            raise InvalidRequest(
                f"'{name}' is not supported: its cost cannot be bounded by text prices and max_tokens", name
            )
