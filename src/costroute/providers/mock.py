"""The shipped mock provider: no network, deterministic, able to play an agent and to misbehave.

It answers ``[MOCK:<name>] Echo: <last user message>`` and reports usage counted with the same
heuristic the router estimates with. Asked like a model would be, it answers like one:

* with ``tools`` and a ``tool_choice`` that names a function (or ``"required"``: the first
  tool), one deterministic tool call whose ``arguments`` are valid against that tool's JSON
  schema (``finish_reason: "tool_calls"``);
* with ``response_format`` ``json_object``, the JSON ``{"answer": <the echo>}``; with
  ``json_schema``, deterministic JSON valid against the schema (every property filled, the
  first of each ``enum``/``anyOf``, minimum lengths and bounds honoured).

What it generates from a caller's schema is capped, so a tiny request cannot make it build a huge
answer: ``minItems`` and ``minLength`` are honoured up to ``MAX_REPEAT`` (16) items or characters,
schemas nest (and ``$ref`` resolves) at most ``MAX_SCHEMA_DEPTH`` (12) deep, and one answer holds
about ``MAX_EXAMPLE_CHARS`` (16,384) characters of JSON at most: past a cap, arrays and objects stop
growing and values become ``null``. Such an answer may then not validate against its schema.

Its ``latency_ms`` is *simulated* (the model's registered latency) unless ``MOCK_SIMULATE_LATENCY``
is on, when it really waits that long and reports the measured time. Model options make it fail or
stall, for failover and breaker tests: ``mock_fail_status`` (always fail with that HTTP status),
``mock_fail_rate`` (fail that fraction of calls with status 503, drawn from a generator seeded by
``mock_seed``) and ``mock_delay_ms`` (really wait that long, measured).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from costroute.core.estimate import CHARS_PER_TOKEN, ChatMessage, estimate_prompt_tokens, estimate_text_tokens
from costroute.core.fields import FieldReader
from costroute.core.registry import Model, ProviderSpec
from costroute.core.requests import content_text
from costroute.core.settle import Usage
from costroute.providers.base import (
    Adapter,
    AdapterDeps,
    Completion,
    FailureKind,
    FinishReason,
    ProviderCall,
    ProviderError,
    StreamPiece,
)

_KIND_BY_STATUS = {
    400: FailureKind.BAD_REQUEST,
    401: FailureKind.AUTH,
    403: FailureKind.FORBIDDEN,
    404: FailureKind.NOT_FOUND,
    413: FailureKind.TOO_LARGE,
    429: FailureKind.RATE_LIMITED,
}
# Deep enough for any real schema; a self-referencing one stops here instead of recursing forever.
MAX_SCHEMA_DEPTH = 12
# The most items or characters a minItems or minLength gets (a caller could ask for millions).
MAX_REPEAT = 16
# Roughly the most characters of JSON one generated value takes (nested repeats multiply otherwise).
MAX_EXAMPLE_CHARS = 16 * 1024


class MockOptions(NamedTuple):
    """How the mock misbehaves for one model: for failover and breaker tests."""

    fail_status: int | None = None
    fail_rate: float = 0.0
    delay_ms: int = 0
    seed: int = 0


class MockKind:
    """The ``mock`` kind: no endpoint, no key; its models may carry the ``mock_*`` options."""

    common_fields: frozenset[str] = frozenset()
    api_key_required = False
    own_fields: frozenset[str] = frozenset()
    model_fields = frozenset({"mock_fail_status", "mock_fail_rate", "mock_delay_ms", "mock_seed"})

    def parse_settings(self, fields: FieldReader) -> Any:
        """The mock has no settings."""
        return None

    def parse_model_options(self, fields: FieldReader) -> MockOptions:
        """The ``mock_*`` fields of one model."""
        status = fields.integer("mock_fail_status", minimum=400, maximum=599)
        rate = fields.number("mock_fail_rate", minimum=Decimal(0), maximum=Decimal(1))
        delay = fields.integer("mock_delay_ms", minimum=0)
        seed = fields.integer("mock_seed")
        return MockOptions(fail_status=status, fail_rate=float(rate or 0), delay_ms=delay or 0, seed=seed or 0)

    def build(self, spec: ProviderSpec, deps: AdapterDeps) -> MockProvider:
        """A mock provider."""
        return MockProvider(simulate_latency=deps.mock_simulate_latency, sleep=deps.sleep)


KIND = MockKind()


class MockProvider(Adapter):
    """A deterministic provider for development, tests and load tests."""

    def __init__(
        self,
        simulate_latency: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._simulate_latency = simulate_latency
        self._sleep = sleep
        self._clock = clock
        self._generators: dict[str, random.Random] = {}
        self._lock = threading.Lock()

    def availability(self, model: Model) -> str | None:
        """Mock models are always available."""
        return None

    def status(self) -> dict[str, Any]:
        """Whether it really waits its models' latency."""
        return {"simulate_latency": self._simulate_latency}

    def complete(self, model: Model, call: ProviderCall) -> Completion:
        """Answer, honouring max_tokens and the model's mock options."""
        started = self._clock()
        options = model.options if isinstance(model.options, MockOptions) else MockOptions()
        self._misbehave(model, options)
        wait_ms = options.delay_ms or (model.latency_ms if self._simulate_latency else 0)
        if wait_ms:
            self._wait(wait_ms, call.timeout_s, model)
        text, tool_calls, completion_tokens, finish = _answer(model, call)
        measured = bool(wait_ms)
        return Completion(
            text=text,
            usage=Usage(input_tokens=estimate_prompt_tokens(_chat_messages(call)), output_tokens=completion_tokens),
            finish_reason=finish,
            latency_ms=(self._clock() - started) * 1000 if measured else float(model.latency_ms),
            latency_kind="measured" if measured else "simulated",
            tool_calls=tool_calls,
        )

    def stream(self, model: Model, call: ProviderCall) -> Iterator[StreamPiece]:
        """Yield the answer word by word (a tool call in two deltas), then the finish reason and usage."""
        return _pieces(self.complete(model, call))

    def _misbehave(self, model: Model, options: MockOptions) -> None:
        status = options.fail_status
        if status is None and options.fail_rate > 0:
            with self._lock:
                generator = self._generators.setdefault(model.id, random.Random(options.seed))
                if generator.random() < options.fail_rate:
                    status = 503
        if status is not None:
            kind = _KIND_BY_STATUS.get(status, FailureKind.UPSTREAM if status >= 500 else FailureKind.BAD_REQUEST)
            raise ProviderError(kind, f"mock model {model.id} failed with status {status} (as configured)", status=status)

    def _wait(self, wait_ms: int, timeout_s: float, model: Model) -> None:
        if wait_ms / 1000 > timeout_s:
            self._sleep(max(timeout_s, 0.0))
            raise ProviderError(FailureKind.TIMEOUT, f"mock model {model.id} took longer than the {timeout_s:.3f} s allowed")
        self._sleep(wait_ms / 1000)


def _pieces(completion: Completion) -> Iterator[StreamPiece]:
    if completion.tool_calls:
        for index, call in enumerate(completion.tool_calls):
            function = call["function"]
            yield StreamPiece(tool_calls=({"index": index, "id": call["id"], "type": "function",
                                           "function": {"name": function["name"], "arguments": ""}},))
            yield StreamPiece(tool_calls=({"index": index, "function": {"arguments": function["arguments"]}},))
    else:
        words = completion.text.split(" ")
        for index, word in enumerate(words):
            yield StreamPiece(text=word if index == 0 else " " + word)
    yield StreamPiece(finish_reason=completion.finish_reason, usage=completion.usage)


def _answer(model: Model, call: ProviderCall) -> tuple[str, tuple[Mapping[str, Any], ...], int, FinishReason]:
    """The answer text, tool calls, completion tokens and finish reason."""
    limit = min(call.max_tokens, model.max_output_tokens)
    tool = _chosen_tool(call.params)
    if tool is not None:
        arguments = json.dumps(example_for_schema(tool.get("parameters") or {"type": "object"}))
        name = str(tool.get("name", "tool"))
        tool_call = {"id": "call_mock_0", "type": "function", "function": {"name": name, "arguments": arguments}}
        return "", (tool_call,), min(estimate_text_tokens(arguments), limit), "tool_calls"
    echo = f"[MOCK:{model.name}] Echo: {_last_user_text(call)}"
    text = _formatted(echo, call.params.get("response_format"))
    tokens = estimate_text_tokens(text)
    if tokens <= limit:
        return text, (), tokens, "stop"
    # Cut to the limit: keep characters while the heuristic count stays within it.
    cut = text[: limit * CHARS_PER_TOKEN]
    while cut and estimate_text_tokens(cut) > limit:
        cut = cut[:-1]
    return cut, (), estimate_text_tokens(cut), "length"


def _chosen_tool(params: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The function a request's tool_choice names (or the first tool for ``required``), else None."""
    tools = [t.get("function") for t in params.get("tools") or () if isinstance(t, dict)]
    functions = [f for f in tools if isinstance(f, dict)]
    choice = params.get("tool_choice")
    if not functions or choice in (None, "auto", "none"):
        return None
    if choice == "required":
        return functions[0]
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        for function in functions:
            if function.get("name") == wanted:
                return function
    return None


def _formatted(echo: str, response_format: Any) -> str:
    """The echo shaped as the response_format asks."""
    if not isinstance(response_format, dict):
        return echo
    if response_format.get("type") == "json_object":
        return json.dumps({"answer": echo})
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return json.dumps(example_for_schema(schema if isinstance(schema, dict) else {"type": "object"}))
    return echo


class _Room:
    """What is left of the characters one generated value may take."""

    def __init__(self, chars: int) -> None:
        self.left = chars

    @property
    def spent(self) -> bool:
        """Whether nothing is left."""
        return self.left <= 0

    def take(self, chars: int) -> bool:
        """Take that many characters if they are left; otherwise nothing more is generated."""
        if chars > self.left:
            self.left = 0
            return False
        self.left -= chars
        return True


def example_for_schema(schema: Mapping[str, Any]) -> Any:
    """A deterministic value valid against a JSON schema (the common subset tools and structured outputs use),
    within the caps of the module docstring."""
    return _example(schema, schema, 0, _Room(MAX_EXAMPLE_CHARS))


def _example(schema: Mapping[str, Any], root: Mapping[str, Any], depth: int, room: _Room) -> Any:
    if depth > MAX_SCHEMA_DEPTH or room.spent:
        room.take(len("null"))
        return None
    reference = schema.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/"):
        target: Any = root
        for part in reference[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _example(target, root, depth + 1, room)
    if "const" in schema:
        return _leaf(schema["const"], room)
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return _leaf(schema["enum"][0], room)
    for combinator in ("anyOf", "oneOf"):
        options = [o for o in schema.get(combinator) or () if isinstance(o, dict)]
        if options:
            usable = [o for o in options if o.get("type") != "null"] or options
            return _example(usable[0], root, depth + 1, room)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged.update(part)
        return _example(merged, root, depth + 1, room)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    return _example_of_type(str(kind), schema, root, depth, room)


def _leaf(value: Any, room: _Room) -> Any:
    """The value, or None when its JSON does not fit in what is left."""
    return value if room.take(len(json.dumps(value))) else None


def _example_of_type(kind: str, schema: Mapping[str, Any], root: Mapping[str, Any], depth: int, room: _Room) -> Any:
    if kind == "object":
        found = schema.get("properties")
        properties: Mapping[str, Any] = found if isinstance(found, dict) else {}
        room.take(2)
        filled: dict[str, Any] = {}
        for name, sub in properties.items():
            if not room.take(len(json.dumps(name)) + 4):
                break
            filled[name] = _example(sub if isinstance(sub, dict) else {}, root, depth + 1, room)
        return filled
    if kind == "array":
        found_items = schema.get("items")
        items: Mapping[str, Any] = found_items if isinstance(found_items, dict) else {}
        minimum = schema.get("minItems")
        count = min(minimum, MAX_REPEAT) if isinstance(minimum, int) and minimum >= 0 else 1
        room.take(2)
        values: list[Any] = []
        for _ in range(count):
            if not room.take(2):
                break
            values.append(_example(items, root, depth + 1, room))
        return values
    if kind in ("integer", "number"):
        return _leaf(_example_number(kind, schema), room)
    if kind == "boolean":
        return _leaf(False, room)
    if kind == "null":
        return None
    formats = {"date-time": "2026-01-01T00:00:00Z", "date": "2026-01-01", "time": "00:00:00", "email": "mock@example.com",
               "uri": "https://example.com/mock", "uuid": "00000000-0000-4000-8000-000000000000"}
    text = formats.get(str(schema.get("format")), "mock")
    minimum = schema.get("minLength")
    if isinstance(minimum, int) and len(text) < minimum:
        text += "m" * (min(minimum, MAX_REPEAT) - len(text))
    maximum = schema.get("maxLength")
    if isinstance(maximum, int) and len(text) > maximum:
        text = text[:maximum]
    return _leaf(text, room)


def _example_number(kind: str, schema: Mapping[str, Any]) -> int | float:
    def bound(name: str) -> float | None:
        value = schema.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        try:
            return float(value)
        except OverflowError:
            return None  # an integer beyond any float: a bound no generated number is held to

    value = 0.0
    low, high = bound("minimum"), bound("maximum")
    low_open, high_open = bound("exclusiveMinimum"), bound("exclusiveMaximum")
    if low is not None and value < low:
        value = low
    if low_open is not None and value <= low_open:
        value = low_open + 1
    if high is not None and value > high:
        value = high
    if high_open is not None and value >= high_open:
        value = high_open - 1
    return int(value) if kind == "integer" else value


def _chat_messages(call: ProviderCall) -> list[ChatMessage]:
    return [ChatMessage(role=str(m.get("role", "")), content=content_text(m.get("content"))) for m in call.messages]


def _last_user_text(call: ProviderCall) -> str:
    for message in reversed(call.messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return content_text(call.messages[-1].get("content")) if call.messages else ""
