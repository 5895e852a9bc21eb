"""The ``anthropic`` kind: Anthropic's Messages API, through the official SDK.

Registry settings: ``{"kind": "anthropic", "api_key": {...}}`` (required), an optional
``base_url`` (as the SDK takes it, without ``/v1``; default Anthropic's API) and an optional
``timeout_seconds``. Models name Anthropic's model id in ``upstream_model``; they take no options
of their own. Only this module imports ``anthropic`` (and its transport, ``httpx2``), and only
when one of its models is first called: the import takes seconds (about 2.7 s on a development
machine, mostly ``anthropic.types``), and that time is taken from the first call's timeout.

* The SDK's own retries are off (``max_retries=0``): retries and failover belong to the router.
* Each client is built so that the SDK reads nothing from the environment that reaches the
  upstream: the key and base URL are explicit (so ``ANTHROPIC_API_KEY``, ``ANTHROPIC_AUTH_TOKEN``,
  ``ANTHROPIC_BASE_URL``, ``ANTHROPIC_PROFILE``, ``ANTHROPIC_CONFIG_DIR`` and the workload-identity
  variables are never consulted), the headers of ``ANTHROPIC_CUSTOM_HEADERS`` are dropped, the
  webhook key is explicit (``ANTHROPIC_WEBHOOK_SIGNING_KEY``), and the SDK's OpenTelemetry spans
  are off (``ANTHROPIC_OPEN_TELEMETRY_*`` could otherwise put prompts into spans): the router keeps
  its own trace. Proxy variables (``HTTPS_PROXY``...) still apply, as for every HTTP client.
* Requests are translated from OpenAI's Chat Completions with ``chat_translation``: system and
  developer messages become ``system`` text blocks (keeping ``cache_control``), consecutive
  messages of one role are merged, tool calls and results become ``tool_use`` / ``tool_result``
  blocks (results first in their user turn, as the API requires), function tools and
  ``tool_choice`` become Anthropic's, ``parallel_tool_calls: false`` becomes
  ``disable_parallel_tool_use``, ``stop`` becomes ``stop_sequences`` and ``user`` becomes
  ``metadata.user_id``. ``max_tokens`` is always sent: the router's cap for the call.
* A field with no Anthropic equivalent is refused by ``unsupported``, naming it, never dropped.
  Left out because they change neither the answer nor its cost: ``store``, OpenAI's
  ``metadata``, ``service_tier`` ``auto``/``default``, and fields at their no-op value (``n: 1``,
  ``logprobs: false``, ``modalities: ["text"]``, ``response_format: {"type": "text"}``,
  ``presence_penalty`` / ``frequency_penalty`` 0). ``temperature``, ``top_p`` and ``top_k`` are
  refused: API version 2026-10-21 (the one SDK 2.x speaks) does not accept them. A conversation
  the wire cannot express (tool-call arguments that are not JSON, a deprecated function message,
  no user turn first) is refused by ``unsupported`` when it is handed the messages, and otherwise
  by ``complete`` / ``stream`` as the caller's error (400) before any call.
* ``stop_reason`` becomes OpenAI's ``finish_reason``: ``end_turn`` and ``stop_sequence`` ->
  ``stop``, ``max_tokens`` -> ``length``, ``tool_use`` -> ``tool_calls``, ``refusal`` ->
  ``content_filter`` (the text, if any, moves to ``refusal``; in a stream the text already sent
  stays sent), ``pause_turn`` and ``model_context_window_exceeded`` -> ``length`` (the answer is
  incomplete, as if cut), an unknown or missing reason -> ``stop`` (an answer that ended; a new
  reason must not fail an answer already paid for).
* Answers are read strictly from the JSON the server sent, never from the SDK's lenient models:
  a 200 whose body is not a message (content not an array of blocks, text not a string, usage
  with non-integers or negatives, a cache split that does not add up, malformed JSON) is an
  ``upstream`` failure, failed over like a 5xx. Streams are read from the raw server-sent events
  the same way; a stream that ends before ``message_stop`` is a failure mid-stream, and so is
  a streamed line that is not UTF-8. A streamed tool use without input (``partial_json: ""``)
  gets the arguments ``{}``, as the same answer unstreamed has.
* Usage: Anthropic's ``input_tokens`` excludes cached tokens; ``cache_read_input_tokens`` are
  cache reads and ``cache_creation_input_tokens`` cache writes, split into 5-minute and 1-hour
  writes by ``cache_creation`` where reported (without the split, all are 5-minute writes).
* Anthropic adds a tool-use system prompt to every request with tools. Its size depends on the
  model and on ``tool_choice``; the figures Anthropic documents (docs.anthropic.com, "Tool use
  with Claude", Pricing; and the earlier "Tool use pricing and tokens" page) are, for
  ``auto``/``none`` and ``any``/``tool``: Claude 4 family 346/313, Claude 3.5 Sonnet (June) 294/261,
  Claude 3.5 Haiku and Claude 3 Haiku 264/340, Claude 3 Opus 530/281, Claude 3 Sonnet 159/235.
  The cost ceiling must hold on any model, so ``prompt_overhead`` takes the largest figure for
  each choice: 530 (``TOOL_PROMPT_TOKENS_AUTO``) and 340 (``TOOL_PROMPT_TOKENS_ANY``), plus the
  bytes by which Anthropic's form of the tools outgrows the OpenAI form the router counted.
* Every SDK and transport error becomes a ``ProviderError`` whose message is scrubbed of the key:
  429 -> ``rate_limited`` and 529 (overloaded) -> ``upstream``, both with the server's
  ``retry-after-ms`` / ``retry-after``; a spend limit (``error_code`` ``*spend_limit_reached``,
  or a 402) -> ``spend_limit``; 401 -> ``auth``; 403 -> ``forbidden``; 404 -> ``not_found``;
  408 -> ``timeout``; 413 -> ``too_large``; other 4xx -> ``bad_request``; other 5xx -> ``upstream``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from costroute.core.registry import Model, ProviderSpec
from costroute.core.settle import Usage
from costroute.providers.base import (
    AdapterDeps,
    ClosingStream,
    Completion,
    FailureKind,
    FinishReason,
    KeyedAdapter,
    NoOptions,
    ProviderCall,
    ProviderError,
    StreamPiece,
    malformed,
    redact,
    retry_after_seconds,
    token_count,
)
from costroute.providers.chat_translation import (
    Block,
    Conversation,
    Text,
    ToolResult,
    ToolUse,
    Turn,
    Untranslatable,
    function_tools,
    read_conversation,
    refused_fields,
    reserialised_growth,
    stop_sequences,
    tool_call_json,
    tool_choice,
)
from costroute.wirelogs import ANTHROPIC_WIRE_LOGGERS, hold_at_info

ANTHROPIC_API_BASE_URL = "https://api.anthropic.com"
# The Messages API version the pinned SDK (2.x) sends in ``anthropic-version``.
ANTHROPIC_API_VERSION = "2026-10-21"
# The largest tool-use system prompt Anthropic documents for any model (see the module docstring).
TOOL_PROMPT_TOKENS_AUTO = 530  # tool_choice absent, auto or none: Claude 3 Opus
TOOL_PROMPT_TOKENS_ANY = 340  # tool_choice any or a named tool: Claude 3 Haiku and 3.5 Haiku

# Pass-through fields this adapter turns into Anthropic's own.
TRANSLATED_FIELDS = frozenset({"stop", "tools", "tool_choice", "parallel_tool_calls", "user"})
# Fields that change neither the answer nor its cost, whatever their value.
HARMLESS_FIELDS = frozenset({"store", "metadata"})
# Sampling fields that API version 2026-10-21 refuses (and the SDK no longer takes).
SAMPLING_FIELDS: tuple[str, ...] = ("temperature", "top_p", "top_k")

_FINISH_REASONS: Mapping[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "length",
    "model_context_window_exceeded": "length",
}


def _harmless_value(name: str, value: Any) -> bool:
    """Whether a field holds the value that changes nothing (OpenAI's default, or a tier billed at list price)."""
    if name == "service_tier":
        return isinstance(value, str) and value in ("auto", "default")
    if name == "n":
        return value == 1 and not isinstance(value, bool)
    if name == "logprobs":
        return value is False
    if name == "modalities":
        return bool(value == ["text"])
    if name == "response_format":
        return bool(value == {"type": "text"})
    if name in ("presence_penalty", "frequency_penalty"):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0
    return False


class AnthropicKind(NoOptions):
    """The ``anthropic`` kind: ``api_key`` (required), ``base_url`` and ``timeout_seconds``; no model options."""

    common_fields = frozenset({"base_url", "api_key", "timeout_seconds"})
    api_key_required = True

    def build(self, spec: ProviderSpec, deps: AdapterDeps) -> AnthropicProvider:
        """An adapter for one Anthropic upstream."""
        return AnthropicProvider(spec, deps)


KIND = AnthropicKind()


class AnthropicProvider(KeyedAdapter):
    """Calls Anthropic's Messages API through the official SDK, one client per key."""

    default_base_url = ANTHROPIC_API_BASE_URL

    def unsupported(self, model: Model, params: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> str | None:
        """Why these pass-through fields or messages cannot be sent to Anthropic, or None."""
        return unsupported_reason(params, messages)

    def prompt_overhead(self, model: Model, params: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> int:
        """The tool-use system prompt Anthropic adds to a request with tools (the largest documented), and what
        re-sending past tool calls' arguments as JSON input adds."""
        return tool_prompt_overhead(params) + reserialised_growth(messages)


    def _make_client(self, key: str | None) -> Any:
        import anthropic  # deferred: the SDK and its types are paid for only when an Anthropic model is called

        hold_at_info(ANTHROPIC_WIRE_LOGGERS)  # at DEBUG the SDK logs each request's messages

        # An explicit api_key and base_url keep the SDK from its environment variables and profiles.
        client = anthropic.Anthropic(api_key=key or "", base_url=self._base_url, max_retries=0, webhook_key="",
                                     open_telemetry=False)
        # The SDK merges ANTHROPIC_CUSTOM_HEADERS into every request: never let them reach the upstream.
        client._custom_headers = {}
        return client

    def _prepare(self, key: str | None, model: Model, call: ProviderCall) -> tuple[Any, dict[str, Any]]:
        """The client for the key and the SDK's arguments, the timeout being what is left of the call's."""
        try:
            body = request_body(model, call)
        except Untranslatable as exc:
            # The router asks ``unsupported`` first; this catches what it could not see (the messages).
            raise ProviderError(FailureKind.BAD_REQUEST, f"cannot be sent to Anthropic: {exc}", status=400) from exc
        began = self._deps.clock()
        # The first client imports the SDK, which takes seconds on a cold start: that time is the call's too.
        client = self._clients.for_key(key)
        left = call.timeout_s - (self._deps.clock() - began)
        if left <= 0:
            raise ProviderError(FailureKind.TIMEOUT, "loading the Anthropic SDK used up the time allowed for the call",
                                status=504)
        return client, {**body, "timeout": left}

    def _complete_once(self, key: str | None, model: Model, call: ProviderCall) -> Completion:
        client, args = self._prepare(key, model, call)
        started = self._deps.clock()
        try:
            raw = client.messages.with_raw_response.create(**args)
            text = raw.text()
        except Exception as exc:  # translated precisely by translate_error, which re-raises anything else
            raise translate_error(exc, key) from exc
        elapsed_ms = (self._deps.clock() - started) * 1000
        return read_message(_decode(text, model), model, elapsed_ms)

    def _open_stream(self, key: str | None, model: Model, call: ProviderCall) -> Iterator[StreamPiece]:
        client, args = self._prepare(key, model, call)
        raw: Any = None
        reader = StreamReader(model, key)
        try:
            raw = client.messages.with_raw_response.create(**args, stream=True)
            events = _server_sent_events(raw.http_response)
            reader.start(events)
        except ProviderError:
            _close(raw)
            raise
        except Exception as exc:  # translated by translate_error, which re-raises anything else
            _close(raw)
            raise translate_error(exc, key) from exc
        return ClosingStream(read_pieces(reader, events, key), lambda: _close(raw))


# ---- requests ------------------------------------------------------------------------------------


def unsupported_reason(params: Mapping[str, Any], messages: Sequence[Mapping[str, Any]] | None = None) -> str | None:
    """Why a request with these pass-through fields (and messages, when given) cannot go to Anthropic, or None."""
    sampling = [name for name in SAMPLING_FIELDS if params.get(name) is not None]
    others = [name for name in refused_fields(params, TRANSLATED_FIELDS | frozenset(SAMPLING_FIELDS), HARMLESS_FIELDS)
              if not _harmless_value(name, params[name])]
    reasons = []
    if sampling:
        verb = "is" if len(sampling) == 1 else "are"
        reasons.append(f"{_names(sampling)} {verb} not accepted by Anthropic API version {ANTHROPIC_API_VERSION}")
    if others:
        verb = "has" if len(others) == 1 else "have"
        reasons.append(f"{_names(others)} {verb} no Anthropic equivalent")
    if reasons:
        return "; ".join(reasons)
    try:
        translate_params(params)
        if messages is not None:
            read_conversation(messages)
    except Untranslatable as exc:
        return str(exc)
    return None


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)


def tool_prompt_overhead(params: Mapping[str, Any]) -> int:
    """Tokens Anthropic adds to a request with these fields: its tool-use system prompt, 0 without tools.

    Anthropic's form of the tools is usually shorter than the OpenAI JSON the router counted; where
    it is longer (a function without parameters is given an object schema), the difference is added too.
    """
    tools = params.get("tools")
    if not isinstance(tools, list) or not tools:
        return 0
    choice = params.get("tool_choice")
    named = isinstance(choice, dict) or choice == "required"
    overhead = TOOL_PROMPT_TOKENS_ANY if named else TOOL_PROMPT_TOKENS_AUTO
    try:
        translated = anthropic_tools(params)
    except Untranslatable:
        return max(TOOL_PROMPT_TOKENS_AUTO, TOOL_PROMPT_TOKENS_ANY)  # refused by ``unsupported`` anyway
    counted = len(json.dumps(tools).encode("utf-8"))
    sent = len(json.dumps(translated, ensure_ascii=False).encode("utf-8"))
    return overhead + max(0, sent - counted)


def request_body(model: Model, call: ProviderCall) -> dict[str, Any]:
    """The ``messages.create`` arguments for a call (without the timeout); Untranslatable when it cannot be sent."""
    conversation = read_conversation(call.messages)
    body: dict[str, Any] = {
        "model": model.upstream,
        "max_tokens": call.max_tokens,
        "messages": [_message(turn) for turn in conversation.turns],
    }
    system = _system(conversation)
    if system:
        body["system"] = system
    body.update(translate_params(call.params))
    return body


def translate_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The Anthropic fields for the translated pass-through fields: tools, tool_choice, stop_sequences, metadata."""
    body: dict[str, Any] = {}
    tools = anthropic_tools(params)
    if tools:
        body["tools"] = tools
    choice = anthropic_tool_choice(params, [tool["name"] for tool in tools])
    if choice is not None:
        body["tool_choice"] = choice
    stops = stop_sequences(params)
    if stops:
        body["stop_sequences"] = stops
    user = params.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise Untranslatable("'user' must be a string to be sent as Anthropic's metadata.user_id")
        body["metadata"] = {"user_id": user}
    return body


def anthropic_tools(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """OpenAI function tools as Anthropic tools: name, description, input_schema (and ``strict``)."""
    raw_tools = params.get("tools") or []
    translated = []
    for index, tool in enumerate(function_tools(params)):
        schema = dict(tool.parameters)
        if "type" not in schema:
            schema = {"type": "object", **schema}
        elif schema["type"] != "object":
            raise Untranslatable(f"'tools[{index}].function.parameters' must be a JSON schema of type 'object' "
                                 "for Anthropic's input_schema")
        entry: dict[str, Any] = {"name": tool.name}
        if tool.description is not None:
            entry["description"] = tool.description
        entry["input_schema"] = schema
        strict = raw_tools[index]["function"].get("strict")
        if strict is True:
            entry["strict"] = True
        elif strict not in (None, False):
            raise Untranslatable(f"'tools[{index}].function.strict' must be true or false")
        translated.append(entry)
    return translated


def anthropic_tool_choice(params: Mapping[str, Any], tool_names: Sequence[str]) -> dict[str, Any] | None:
    """OpenAI's tool_choice and parallel_tool_calls as Anthropic's tool_choice; None to send none."""
    choice = tool_choice(params)
    parallel = params.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise Untranslatable("'parallel_tool_calls' must be true or false")
    if not tool_names:
        if choice is not None and choice.kind in ("any", "tool"):
            raise Untranslatable("'tool_choice' names a tool or requires one, but the request has no 'tools'")
        return None  # without tools, auto and none mean what sending nothing means
    if choice is None and parallel is not False:
        return None
    kind = choice.kind if choice is not None else "auto"
    body: dict[str, Any] = {"type": kind}
    if choice is not None and choice.kind == "tool":
        if choice.name not in tool_names:
            raise Untranslatable(f"'tool_choice' names the function '{choice.name}', which is not in 'tools'")
        body["name"] = choice.name
    if parallel is False and kind != "none":
        body["disable_parallel_tool_use"] = True
    return body


def _system(conversation: Conversation) -> list[dict[str, Any]]:
    return [_text_block(text) for text in conversation.system]


def _text_block(text: Text) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text.text}
    if text.cache_control is not None:
        block["cache_control"] = dict(text.cache_control)
    return block


def _message(turn: Turn) -> dict[str, Any]:
    blocks: Sequence[Block] = turn.blocks
    if turn.role == "user":
        # Anthropic wants a user turn's tool results before its text.
        blocks = sorted(blocks, key=lambda block: not isinstance(block, ToolResult))
    return {"role": turn.role, "content": [_block(block) for block in blocks]}


def _block(block: Block) -> dict[str, Any]:
    if isinstance(block, Text):
        return _text_block(block)
    if isinstance(block, ToolUse):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": block.tool_use_id}
    if block.text:
        result["content"] = block.text
    return result


# ---- answers -------------------------------------------------------------------------------------


def _decode(text: str, model: Model) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _malformed(model, "not JSON") from exc


def finish_reason(stop_reason: Any, model: Model) -> FinishReason:
    """Anthropic's stop_reason as OpenAI's finish_reason (see the module docstring)."""
    if stop_reason is None:
        return "stop"
    if not isinstance(stop_reason, str):
        raise _malformed(model, "'stop_reason' is not a string")
    return _FINISH_REASONS.get(stop_reason, "stop")


def read_message(data: Any, model: Model, elapsed_ms: float) -> Completion:
    """A Messages API answer, checked field by field."""
    if not isinstance(data, dict):
        raise _malformed(model, "the body is not a JSON object")
    content = data.get("content")
    if not isinstance(content, list):
        raise _malformed(model, "'content' is not an array of blocks")
    texts: list[str] = []
    calls: list[Mapping[str, Any]] = []
    for index, item in enumerate(content):
        where = f"content[{index}]"
        kind, block = _typed(item, model, where)
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str):
                raise _malformed(model, f"'{where}.text' is not a string")
            texts.append(text)
        elif kind == "tool_use":
            calls.append(tool_call_json(_tool_use(block, model, where, input_required=True)))
        # Other blocks (thinking, never asked for) carry nothing a Chat Completions answer can hold.
    reason = finish_reason(data.get("stop_reason"), model)
    text = "".join(texts)
    refusal = None
    if reason == "content_filter":
        text, refusal = "", text or None
    return Completion(text=text, usage=read_usage(data.get("usage"), model), finish_reason=reason,
                      latency_ms=elapsed_ms, tool_calls=tuple(calls), refusal=refusal)


def _typed(block: Any, model: Model, where: str) -> tuple[str, dict[str, Any]]:
    """A content block (or delta) and its type; malformed unless it is an object with a string ``type``."""
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise _malformed(model, f"'{where}' is not a content block")
    return block["type"], block


def _tool_use(block: Mapping[str, Any], model: Model, where: str, input_required: bool) -> ToolUse:
    use_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
    if not isinstance(use_id, str) or not use_id or not isinstance(name, str) or not name:
        raise _malformed(model, f"'{where}' is a tool_use block without a string id and name")
    if not isinstance(arguments, dict) and (input_required or arguments is not None):
        raise _malformed(model, f"'{where}.input' is not an object")
    return ToolUse(id=use_id, name=name, input=arguments if arguments is not None else {})


def read_usage(value: Any, model: Model) -> Usage | None:
    """Anthropic's usage as one Usage record (input excludes the cached classes); None when there is none."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _malformed(model, "'usage' is not an object")
    uncached = _count(value, "input_tokens", model)
    output = _count(value, "output_tokens", model)
    if uncached is None or output is None:
        raise _malformed(model, "'usage' lacks input_tokens or output_tokens")
    read = _count(value, "cache_read_input_tokens", model) or 0
    created = _count(value, "cache_creation_input_tokens", model)
    split = value.get("cache_creation")
    five = hour = None
    if isinstance(split, dict):
        five = _count(split, "ephemeral_5m_input_tokens", model, "usage.cache_creation")
        hour = _count(split, "ephemeral_1h_input_tokens", model, "usage.cache_creation")
    elif split is not None:
        raise _malformed(model, "'usage.cache_creation' is not an object")
    if five is None and hour is None:
        five, hour = created or 0, 0
    else:
        five, hour = five or 0, hour or 0
        if created is not None and created != five + hour:
            raise _malformed(model, "'usage.cache_creation' does not add up to cache_creation_input_tokens")
    return Usage(input_tokens=uncached, output_tokens=output, cache_read_tokens=read, cache_write_tokens=five,
                 cache_write_1h_tokens=hour)


# ---- streams -------------------------------------------------------------------------------------


def _server_sent_events(response: Any) -> Iterator[tuple[str, str]]:
    """The raw server-sent events of a streamed response, as (event, data), before any JSON parsing."""
    import anthropic

    for event in anthropic.Stream.raw_events(response):
        yield event.event or "", event.data


class StreamReader:
    """Reads the events of one streamed answer into StreamPieces, strictly (raises ProviderError)."""

    def __init__(self, model: Model, key: str | None = None) -> None:
        self.model = model
        self._key = key
        self._usage: dict[str, Any] = {}
        self._output_reported = False
        self._blocks: dict[int, tuple[str, int | None]] = {}  # Anthropic block index -> (type, OpenAI tool index)
        self._tools = 0
        # Anthropic block index -> OpenAI tool index, for tool uses no input has arrived for yet.
        self._without_input: dict[int, int] = {}
        self._stop_reason: Any = None
        self._delta_seen = False
        self.stopped = False

    def start(self, events: Iterator[tuple[str, str]]) -> None:
        """Read up to ``message_start``: until then the call has not started, and may fail over."""
        for name, data in events:
            if name == "ping":
                continue
            if name == "error":
                raise self._error(data)
            if name != "message_start":
                raise _malformed(self.model, f"the stream began with '{name}', not message_start")
            self._message_start(self._json(data))
            return
        raise _malformed(self.model, "the stream ended before message_start")

    def feed(self, name: str, data: str) -> StreamPiece | None:
        """One event after ``message_start``: the piece it makes, if any."""
        if name == "ping":
            return None
        if name == "error":
            raise self._error(data)
        if name == "message_stop":
            if not self._delta_seen:
                raise _malformed(self.model, "message_stop came before message_delta")
            self.stopped = True
            return self._empty_inputs(list(self._without_input))
        if name == "content_block_start":
            return self._block_start(self._json(data))
        if name == "content_block_delta":
            return self._block_delta(self._json(data))
        if name == "content_block_stop" and self._without_input:
            return self._empty_inputs([self._index(self._json(data))])
        if name == "message_delta":
            self._message_delta(self._json(data))
        elif name == "message_start":
            raise _malformed(self.model, "a second message_start")
        # content_block_stop otherwise, and event types added after this was written, carry nothing to pass on.
        return None

    def final(self) -> StreamPiece:
        """The closing piece: the finish reason and the usage (None when the output count never came)."""
        usage = read_usage(self._usage, self.model) if self._output_reported else None
        return StreamPiece(finish_reason=finish_reason(self._stop_reason, self.model), usage=usage)

    def _json(self, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise _malformed(self.model, "a streamed event is not JSON") from exc
        if not isinstance(event, dict):
            raise _malformed(self.model, "a streamed event is not a JSON object")
        return event

    def _error(self, data: str) -> ProviderError:
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        error_type, message = error.get("type"), error.get("message")
        details = error.get("details")
        code = details.get("error_code") if isinstance(details, dict) else None
        text = message if isinstance(message, str) else data[:200]
        return _classify(None, error_type if isinstance(error_type, str) else None,
                         code if isinstance(code, str) else None, f"Anthropic reported an error mid-stream: {text}",
                         None, self._key)

    def _message_start(self, event: Mapping[str, Any]) -> None:
        message = event.get("message")
        if not isinstance(message, dict):
            raise _malformed(self.model, "message_start has no message object")
        if not isinstance(message.get("content"), list):
            raise _malformed(self.model, "message_start's 'content' is not an array of blocks")
        usage = message.get("usage")
        if not isinstance(usage, dict):
            raise _malformed(self.model, "message_start has no usage object")
        read_usage({"output_tokens": 0, **usage}, self.model)  # checked now, before any piece is passed on
        self._usage = dict(usage)

    def _block_start(self, event: Mapping[str, Any]) -> StreamPiece | None:
        index = self._index(event)
        if index in self._blocks:
            raise _malformed(self.model, f"content block {index} started twice")
        where = f"content_block_start[{index}]"
        kind, block = _typed(event.get("content_block"), self.model, where)
        if kind == "tool_use":
            use = _tool_use(block, self.model, where, input_required=False)
            tool_index = self._tools
            self._tools += 1
            self._blocks[index] = (kind, tool_index)
            self._without_input[index] = tool_index
            opening = {"index": tool_index, "id": use.id, "type": "function",
                       "function": {"name": use.name, "arguments": ""}}
            return StreamPiece(tool_calls=(opening,))
        self._blocks[index] = (kind, None)
        if kind == "text":
            text = block.get("text", "")
            if not isinstance(text, str):
                raise _malformed(self.model, f"'{where}.text' is not a string")
            return StreamPiece(text=text) if text else None
        return None

    def _block_delta(self, event: Mapping[str, Any]) -> StreamPiece | None:
        index = self._index(event)
        started = self._blocks.get(index)
        if started is None:
            raise _malformed(self.model, f"a delta for content block {index}, which never started")
        kind, delta = _typed(event.get("delta"), self.model, f"content_block_delta[{index}].delta")
        block_kind, tool_index = started
        if kind == "text_delta":
            text = delta.get("text")
            if block_kind != "text" or not isinstance(text, str):
                raise _malformed(self.model, f"a text_delta for content block {index} is not text")
            return StreamPiece(text=text) if text else None
        if kind == "input_json_delta":
            partial = delta.get("partial_json")
            if block_kind != "tool_use" or not isinstance(partial, str):
                raise _malformed(self.model, f"an input_json_delta for content block {index} is not tool input")
            if not partial:
                return None
            self._without_input.pop(index, None)
            return StreamPiece(tool_calls=({"index": tool_index, "function": {"arguments": partial}},))
        return None  # thinking, signature and citation deltas: nothing for a Chat Completions answer

    def _empty_inputs(self, indexes: Sequence[int]) -> StreamPiece | None:
        """The arguments ``{}`` for the tool uses of these blocks that ended without any input, if any."""
        calls = tuple({"index": self._without_input.pop(index), "function": {"arguments": "{}"}}
                      for index in indexes if index in self._without_input)
        return StreamPiece(tool_calls=calls) if calls else None

    def _message_delta(self, event: Mapping[str, Any]) -> None:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            raise _malformed(self.model, "message_delta has no delta object")
        self._stop_reason = delta.get("stop_reason")
        finish_reason(self._stop_reason, self.model)
        usage = event.get("usage")
        if usage is not None:
            if not isinstance(usage, dict):
                raise _malformed(self.model, "message_delta's 'usage' is not an object")
            # Its counts are cumulative: they replace message_start's (output_tokens there is a placeholder).
            self._usage.update({name: value for name, value in usage.items() if value is not None})
            self._output_reported = self._output_reported or usage.get("output_tokens") is not None
            read_usage(self._usage, self.model)
        self._delta_seen = True

    def _index(self, event: Mapping[str, Any]) -> int:
        index = event.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise _malformed(self.model, "a content block event without a valid index")
        return index


def read_pieces(reader: StreamReader, events: Iterator[tuple[str, str]], key: str | None) -> Iterator[StreamPiece]:
    """The pieces of a stream whose ``message_start`` the reader has read; ProviderError when it breaks."""
    try:
        for name, data in events:
            piece = reader.feed(name, data)
            if piece is not None:
                yield piece
            if reader.stopped:
                yield reader.final()
                return
    except ProviderError:
        raise
    except Exception as exc:  # the SDK's and transport's errors while reading, translated; others re-raised
        raise translate_error(exc, key) from exc
    raise ProviderError(FailureKind.UPSTREAM, f"the stream from {reader.model.id} ended before message_stop "
                        "(the connection closed mid-answer)", status=502)


def _close(raw: Any) -> None:
    close: Callable[[], None] | None = getattr(raw, "close", None)
    if callable(close):
        close()


# ---- errors --------------------------------------------------------------------------------------


def _classify(status: int | None, error_type: str | None, error_code: str | None, message: str,
              retry: float | None, key: str | None) -> ProviderError:
    """A ProviderError from an HTTP status (None mid-stream), Anthropic's error type and code."""
    text = redact(message, key)
    if (error_code or "").endswith("spend_limit_reached") or status == 402 or error_type == "billing_error":
        return ProviderError(FailureKind.SPEND_LIMIT, f"Anthropic refused the call: a spend limit was reached: {text}",
                             status=status or 402)
    if status == 429 or (status is None and error_type == "rate_limit_error"):
        return ProviderError(FailureKind.RATE_LIMITED, f"rate limited by Anthropic: {text}", status=429,
                             retry_after_s=retry)
    if status == 529 or error_type == "overloaded_error":
        return ProviderError(FailureKind.UPSTREAM, f"Anthropic is overloaded: {text}", status=status or 529,
                             retry_after_s=retry)
    if status is None:
        return ProviderError(FailureKind.UPSTREAM, text, status=502)
    if status == 401:
        return ProviderError(FailureKind.AUTH, "Anthropic rejected the API key (401)", status=401)
    if status == 403:
        return ProviderError(FailureKind.FORBIDDEN, f"Anthropic refused access (403): {text}", status=403)
    if status == 404:
        return ProviderError(FailureKind.NOT_FOUND, f"Anthropic does not know this model (404): {text}", status=404)
    if status == 408:
        return ProviderError(FailureKind.TIMEOUT, f"Anthropic timed out reading the request (408): {text}", status=504)
    if status == 413:
        return ProviderError(FailureKind.TOO_LARGE, f"Anthropic refused the request as too large (413): {text}",
                             status=413)
    if status >= 500:
        return ProviderError(FailureKind.UPSTREAM, f"Anthropic error ({status}): {text}", status=status,
                             retry_after_s=retry)
    return ProviderError(FailureKind.BAD_REQUEST, f"Anthropic refused the request ({status}): {text}", status=status)


def translate_error(exc: Exception, key: str | None) -> ProviderError:
    """Map an SDK or transport exception to a ProviderError; anything else (a programming error) is re-raised."""
    import anthropic
    import httpx2

    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderError(FailureKind.TIMEOUT, "Anthropic timed out", status=504)
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError(FailureKind.CONNECTION, "could not connect to Anthropic", status=502)
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code if exc.status_code >= 400 else None  # a 200 carries an error event mid-stream
        message = exc.api_message if isinstance(exc.api_message, str) else str(exc)
        error_type = exc.type if isinstance(exc.type, str) else None
        return _classify(status, error_type, exc.error_code, message, retry_after_seconds(exc.response.headers), key)
    if isinstance(exc, anthropic.APIResponseValidationError):
        return ProviderError(FailureKind.UPSTREAM, "Anthropic sent a malformed response", status=502)
    if isinstance(exc, anthropic.AnthropicError):
        return ProviderError(FailureKind.UPSTREAM, redact(f"the Anthropic call failed: {exc}", key), status=502)
    if isinstance(exc, httpx2.TimeoutException):
        return ProviderError(FailureKind.TIMEOUT, "Anthropic timed out mid-answer", status=504)
    if isinstance(exc, httpx2.RequestError):
        # Raised while reading a stream (the SDK wraps them only inside send()): a cut or broken connection.
        return ProviderError(FailureKind.UPSTREAM, redact(f"the connection to Anthropic broke mid-answer: {exc}", key),
                             status=502)
    if isinstance(exc, UnicodeEncodeError):
        # Raised while encoding the request: the caller's text, not the provider, is at fault.
        return ProviderError(FailureKind.BAD_REQUEST, "the request holds text that cannot be encoded as UTF-8",
                             status=400)
    if isinstance(exc, UnicodeDecodeError):
        # Raised while decoding a streamed line: Anthropic's bytes are not UTF-8.
        return ProviderError(FailureKind.UPSTREAM, "Anthropic sent a malformed response: not valid UTF-8", status=502)
    raise exc


def _malformed(model: Model, what: str) -> ProviderError:
    return malformed(model, what, "Anthropic")


def _count(usage: Mapping[str, Any], name: str, model: Model, where: str = "usage") -> int | None:
    return token_count(usage, name, model, where, "Anthropic")
