"""The ``bedrock`` kind: Amazon Bedrock's Converse API (``bedrock-runtime``) through boto3.

A provider of this kind is ``{"kind": "bedrock", "region": "us-east-1"}`` with an optional
``endpoint_url`` and ``timeout_seconds``, and no ``api_key``: every request is signed with SigV4
by the standard AWS credential chain (on Lambda, the function's role). ``region`` defaults to the
function's own: ``AWS_REGION``, then ``AWS_DEFAULT_REGION``, then boto3's profile configuration.
Without ``endpoint_url`` boto3 resolves the endpoint itself, honouring
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``. A model's ``upstream_model`` is the Bedrock model id,
inference-profile id or ARN (``anthropic.claude-3-5-haiku-20241022-v1:0``, ``us.anthropic...``);
botocore percent-encodes it into the path.

Clients
-------
* boto3 is imported, and a client created, on the first Bedrock call only (or, when neither the
  registry nor the environment names a region, when availability first asks boto3 for one).
* boto3's own retries are off (``total_max_attempts`` 1; ``max_attempts`` 1 would still mean one
  retry): retries and failover belong to the router, which knows the deadline and the budget.
* botocore fixes connect and read timeouts per client, not per call, while each call's
  ``timeout_s`` is what is left of the request's deadline. So each provider has one boto3
  ``Session`` (the service model is loaded and the credentials resolved once) and a client per
  timeout rounded up to whole seconds, at most ``MAX_CLIENTS`` of them, the least recently used
  dropped first (not closed: a stream may still be reading through it). Measured on the project's
  kind of machine (2 cores, botocore 1.44.8): the first client costs about 60 to 120 ms (the
  service model; a provider's first call, with the Session and its credentials, about 140 ms),
  each further client of the same Session about 2.5 ms and 136 KiB, a client of a fresh Session
  about 50 to 70 ms. A new client has its own connection pool, so its first call opens a new TLS
  connection. The read timeout is the rounded timeout, the connect timeout the smaller of it and
  ``CONNECT_TIMEOUT_SECONDS`` (2 s), so a call can outlive its ``timeout_s`` by the rounding (under
  a second) plus the time connecting took.
* SigV4 is pinned (``signature_version="v4"``): with ``AWS_BEARER_TOKEN_BEDROCK`` set and no auth
  setting in code, botocore 1.44.8 would switch to bearer auth with that long-lived key. It is
  ignored on purpose: the function's role, scoped by IAM to the registry's models, is the only
  credential this router uses; a key in the environment would bypass that policy.
* ``awswire.install_log_redaction()`` keeps botocore's and urllib3's wire logs (signatures, session
  tokens) at INFO or above before the first client exists, as for every boto3 client of the service.

Translation
-----------
The OpenAI messages are read by ``chat_translation``: system and developer messages become
``system`` text blocks, a text part with ``cache_control`` is followed by a ``cachePoint`` block
(its ``ttl`` passed on), consecutive messages of one role are merged, assistant ``tool_calls``
become ``toolUse`` blocks and ``role: "tool"`` results ``toolResult`` blocks in a user message.
``max_tokens`` (always the router's cap), ``temperature``, ``top_p`` and ``stop`` go to
``inferenceConfig``; function ``tools`` (``strict`` included) and ``tool_choice`` to ``toolConfig``.
``tool_choice: "none"`` has no Converse equivalent: the tools are left out when no tool blocks are
in the history (so the model cannot call one), and the request is refused when there are (Converse
then needs the tools, and the model could call them).

Fields harmless to leave out: ``user``, ``safety_identifier``, ``store``, ``metadata`` and
``prompt_cache_key`` (they identify, tag or cache-route the request for OpenAI; none changes the
answer or its cost on Bedrock), and fields set to what Bedrock does anyway: ``n`` 1,
``modalities`` ``["text"]``, ``service_tier`` ``auto``/``default``, ``logprobs`` false,
``parallel_tool_calls`` true, ``presence_penalty``/``frequency_penalty`` 0. Every other field
(``response_format``, ``logprobs`` true, ``seed``, ``logit_bias``, penalties, ``reasoning_effort``,
``parallel_tool_calls`` false, ...) is refused by ``unsupported``, naming it, as are values
Converse refuses (``temperature`` or ``top_p`` outside 0 to 1, a tool name Converse cannot take).
A conversation Converse cannot express (an assistant message first, a ``function`` role, a tool
call id Bedrock cannot take, tool blocks without ``tools``) is named by ``unsupported`` when it is
given the messages; the router gives it only the pass-through fields today, so such a request is
refused when the call is made: the caller's 400.

Answers are read strictly: an answer without ``output.message`` (botocore returns only
``ResponseMetadata`` for a body that is not JSON), with wrong types, or without usage is an
``upstream`` failure, failed over like a 5xx. ``stopReason``: ``end_turn``/``stop_sequence`` ->
``stop``, ``max_tokens``/``model_context_window_exceeded`` -> ``length``, ``tool_use`` ->
``tool_calls``, ``guardrail_intervened``/``content_filtered`` -> ``content_filter``;
``malformed_model_output``/``malformed_tool_use`` are failures (the model produced no usable
answer; another model may); any other reason is an answer that ended on its own, ``stop``.

Usage: Converse's ``inputTokens`` excludes cache reads and writes, so it is the uncached input;
``cacheDetails`` splits writes by TTL (1-hour writes are billed apart). A request that asked for a
1-hour cache point whose answer writes without that split, or with writes the split leaves out,
counts those writes as 1-hour ones, the dearer rate: a settlement is never below the truth. A
stream's usage is its last event, ``metadata``. A streamed tool use that ends without input (no
delta, or empty ones) gets the arguments ``{}``, as the same answer unstreamed has.

Errors become ``ProviderError`` (never a credential in a message): throttling is ``rate_limited``;
unavailable, internal, model-not-ready and model errors ``upstream``; a model timeout and
botocore's read and connect timeouts ``timeout``, an answer or event that is not UTF-8 (botocore
decodes strictly) ``upstream`` (all failed over); ``ValidationException`` is the caller's 400;
access denied and unknown model end the request with a 502 naming the permission or the model. An
exception event mid-stream, a cut connection, a checksum error, bytes that are not UTF-8, or a
stream that ends without ``messageStop`` and ``metadata`` raise while iterating.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from costroute.awswire import CONNECT_TIMEOUT_SECONDS, install_log_redaction
from costroute.core.fields import FieldReader
from costroute.core.registry import Model, ProviderSpec
from costroute.core.settle import Usage
from costroute.providers.base import (
    Adapter,
    AdapterDeps,
    ClosingStream,
    Completion,
    FailureKind,
    FinishReason,
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
    Untranslatable,
    function_tools,
    read_conversation,
    refused_fields,
    reserialised_growth,
    stop_sequences,
    tool_call_json,
    tool_choice,
)

SERVICE = "bedrock-runtime"
# Connecting never needs long; the rest of a call's time is for the answer (as config/aws.py bounds it).
# botocore's, boto3's and urllib3's DEBUG lines carry request headers: SigV4 signatures, session tokens.
# At most this many clients (distinct whole-second timeouts) per provider; see the module docstring.
MAX_CLIENTS = 8
REGION_PATTERN = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$")
# Converse's ToolName and ToolUseId patterns (botocore's bedrock-runtime model).
TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_USE_ID_PATTERN = re.compile(r"^[a-zA-Z0-9_.:-]{1,64}$")
CACHE_TTLS = ("5m", "1h")

# Pass-through fields translated into the Converse request.
TRANSLATED_FIELDS = frozenset({"stop", "temperature", "top_p", "tools", "tool_choice"})
# Pass-through fields harmless to leave out: they identify, tag or cache-route the request for OpenAI.
HARMLESS_FIELDS = frozenset({"user", "safety_identifier", "store", "metadata", "prompt_cache_key"})


def _is_zero(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value == 0


# Fields harmless only at these values: OpenAI's defaults, or what Bedrock does anyway.
HARMLESS_VALUES: Mapping[str, Callable[[Any], bool]] = {
    "n": lambda value: not isinstance(value, bool) and value == 1,
    "modalities": lambda value: value == ["text"],
    "service_tier": lambda value: value in ("auto", "default"),
    "logprobs": lambda value: value is False,
    "parallel_tool_calls": lambda value: value is True,
    "presence_penalty": _is_zero,
    "frequency_penalty": _is_zero,
}

# Anthropic's tool-use system prompt, which Anthropic models add to every request with tools (from
# Anthropic's "Tool use" pricing table): for Claude 4 models 346 tokens with tool_choice auto or
# none and 313 with any or tool; for older models the largest figures of the table, 530 (Claude 3
# Opus, auto/none) and 340 (Claude 3 Haiku and 3.5 Haiku, any/tool).
TOOL_PROMPT_TOKENS_CLAUDE_4 = {"auto": 346, "forced": 313}
TOOL_PROMPT_TOKENS_LARGEST = {"auto": 530, "forced": 340}
_CLAUDE_4 = re.compile(r"claude-(?:opus|sonnet|haiku)-4")
# ARNs that do not name the model behind them (it may be an Anthropic one).
_OPAQUE_MODEL_ID = re.compile(r"application-inference-profile/|provisioned-model/|custom-model|imported-model/")

_FINISH_REASONS: Mapping[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# Stop reasons that mean the model produced no usable answer.
_BROKEN_STOP_REASONS = frozenset({"malformed_model_output", "malformed_tool_use"})

# Bedrock's error codes (in-stream ones are lowerCamel: normalised first) -> failure kind.
_ERROR_KINDS: Mapping[str, FailureKind] = {
    "ThrottlingException": FailureKind.RATE_LIMITED,
    "ServiceUnavailableException": FailureKind.UPSTREAM,
    "InternalServerException": FailureKind.UPSTREAM,
    "ModelNotReadyException": FailureKind.UPSTREAM,
    "ModelErrorException": FailureKind.UPSTREAM,
    "ModelStreamErrorException": FailureKind.UPSTREAM,
    "ModelTimeoutException": FailureKind.TIMEOUT,
    "ValidationException": FailureKind.BAD_REQUEST,
    "AccessDeniedException": FailureKind.FORBIDDEN,
    "ResourceNotFoundException": FailureKind.NOT_FOUND,
    # AWS's front end refusing the credential itself.
    "UnrecognizedClientException": FailureKind.AUTH,
    "InvalidSignatureException": FailureKind.AUTH,
    "IncompleteSignatureException": FailureKind.AUTH,
    "ExpiredTokenException": FailureKind.AUTH,
    "InvalidClientTokenId": FailureKind.AUTH,
    "MissingAuthenticationTokenException": FailureKind.AUTH,
}
_DEFAULT_STATUS: Mapping[FailureKind, int] = {
    FailureKind.RATE_LIMITED: 429,
    FailureKind.TIMEOUT: 504,
    FailureKind.BAD_REQUEST: 400,
    FailureKind.FORBIDDEN: 403,
    FailureKind.NOT_FOUND: 404,
    FailureKind.AUTH: 401,
}
# botocore's credential failures: the AWS credential chain is this provider's "key".
_CREDENTIAL_ERRORS = (
    "NoCredentialsError",
    "PartialCredentialsError",
    "CredentialRetrievalError",
    "ProfileNotFound",
    "TokenRetrievalError",
    "NoAuthTokenError",
    "SSOError",
)


# ---- the kind --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BedrockSettings:
    """A Bedrock provider's own settings: its region and endpoint, None for boto3's default."""

    region: str | None = None
    endpoint_url: str | None = None


class BedrockKind:
    """The ``bedrock`` kind: ``region``, ``endpoint_url`` and ``timeout_seconds``; no key (the AWS role)."""

    common_fields = frozenset({"timeout_seconds"})
    api_key_required = False
    own_fields = frozenset({"region", "endpoint_url"})
    model_fields: frozenset[str] = frozenset()

    def parse_settings(self, fields: FieldReader) -> BedrockSettings:
        """The region (an AWS region's shape) and the endpoint (an http or https URL)."""
        region = fields.text("region")
        if region is not None and not REGION_PATTERN.match(region):
            fields.error(f"field 'region' must be an AWS region such as 'us-east-1', got {region!r}")
            region = None
        return BedrockSettings(region=region, endpoint_url=fields.url("endpoint_url"))

    def parse_model_options(self, fields: FieldReader) -> Any:
        """No model options of its own."""
        return None

    def build(self, spec: ProviderSpec, deps: AdapterDeps) -> BedrockProvider:
        """An adapter for one Bedrock provider; no SDK import."""
        return BedrockProvider(spec, deps)


KIND = BedrockKind()


# ---- clients ---------------------------------------------------------------------------------


class BedrockClients:
    """One provider's boto3 Session and its clients, one per whole-second timeout (see the module docstring)."""

    def __init__(self, settings: BedrockSettings, environ: Mapping[str, str]) -> None:
        self._settings = settings
        self._environ = environ
        self._session: Any = None
        self._clients: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def exists(self) -> bool:
        """Whether a client was created."""
        return bool(self._clients)

    @property
    def count(self) -> int:
        """How many clients are kept."""
        return len(self._clients)

    def known_region(self) -> tuple[str | None, str | None]:
        """The region and where it comes from, without importing boto3 (None when only boto3 could say)."""
        if self._settings.region:
            return self._settings.region, "registry"
        for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            value = self._environ.get(variable, "").strip()
            if value:
                return value, variable
        session = self._session
        if session is not None and session.region_name:
            return str(session.region_name), "aws config"
        return None, None

    def region(self) -> str | None:
        """The region calls go to, asking boto3's configuration when neither the registry nor the environment says."""
        region, _ = self.known_region()
        if region is not None:
            return region
        with self._lock:
            session = self._get_session()
        return str(session.region_name) if session.region_name else None

    def endpoint_host(self) -> str | None:
        """The endpoint's host when one is set (the registry, else AWS_ENDPOINT_URL_BEDROCK_RUNTIME)."""
        url = self._settings.endpoint_url or self._environ.get("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "").strip()
        return urlsplit(url).hostname if url else None

    def for_timeout(self, timeout_s: float) -> Any:
        """The client whose read timeout is ``timeout_s`` rounded up to whole seconds."""
        seconds = max(1, math.ceil(timeout_s))
        with self._lock:
            client = self._clients.get(seconds)
            if client is not None:
                self._clients.move_to_end(seconds)
                return client
            session = self._get_session()
            region, _ = self.known_region()
            region = region or session.region_name
            if not region:
                raise ProviderError(FailureKind.UPSTREAM, _NO_REGION, status=503)
            from botocore.config import Config

            config = Config(
                connect_timeout=min(float(seconds), CONNECT_TIMEOUT_SECONDS),
                read_timeout=seconds,
                retries={"mode": "standard", "total_max_attempts": 1},
                signature_version="v4",
            )
            client = session.client(SERVICE, region_name=region, endpoint_url=self._settings.endpoint_url,
                                    config=config)
            self._clients[seconds] = client
            while len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
            return client

    def _get_session(self) -> Any:
        """The Session, created on first use; the caller holds the lock."""
        if self._session is None:
            import boto3  # deferred: ~165 ms, paid only when a Bedrock model is first called

            install_log_redaction()
            self._session = boto3.session.Session()
        return self._session


_NO_REGION = ("no AWS region for Bedrock: set 'region' on the provider in the registry, or AWS_REGION "
              "(Lambda sets it)")


# ---- the adapter -----------------------------------------------------------------------------


class BedrockProvider(Adapter):
    """Calls one Bedrock provider's models through Converse and ConverseStream."""

    def __init__(self, spec: ProviderSpec, deps: AdapterDeps) -> None:
        self._spec = spec
        self._deps = deps
        settings = spec.settings if isinstance(spec.settings, BedrockSettings) else BedrockSettings()
        self._clients = BedrockClients(settings, deps.environ)

    def availability(self, model: Model) -> str | None:
        """None, unless no region can be resolved."""
        try:
            region = self._clients.region()
        except Exception as exc:  # noqa: BLE001 - botocore's own errors (a missing profile) are said; others re-raised
            return translate_error(exc, model, "the function's region", "bedrock:InvokeModel").message
        return None if region else _NO_REGION

    def unsupported(self, model: Model, params: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> str | None:
        """Why Converse cannot take these pass-through fields or messages, or None."""
        return unsupported_params(params, messages)

    def prompt_overhead(self, model: Model, params: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> int:
        """Anthropic's tool-use system prompt, for Anthropic models with tools, what the Converse form of the tools
        adds to the OpenAI form, and what re-sending past tool calls' arguments as JSON input adds."""
        return tool_prompt_overhead(model.upstream, params) + reserialised_growth(messages)

    def status(self) -> dict[str, Any]:
        """The region, the endpoint's host when set, and whether a client exists; never a credential."""
        region, source = self._clients.known_region()
        status: dict[str, Any] = {"region": region, "region_source": source, "client": self._clients.exists,
                                  "clients": self._clients.count, "signing": "sigv4"}
        host = self._clients.endpoint_host()
        if host:
            status["host"] = host
        return status

    def complete(self, model: Model, call: ProviderCall) -> Completion:
        """Call Converse and return the whole answer."""
        request = _request_or_refuse(model, call)
        try:
            client = self._clients.for_timeout(call.timeout_s)
            started = self._deps.clock()
            response = client.converse(**request)
        except Exception as exc:  # translated precisely by translate_error, anything else re-raised
            raise self._translate(exc, model, "bedrock:InvokeModel") from exc
        elapsed_ms = (self._deps.clock() - started) * 1000
        return read_response(response, model, elapsed_ms, one_hour_cache=asks_one_hour_cache(request))

    def stream(self, model: Model, call: ProviderCall) -> Iterator[StreamPiece]:
        """Start ConverseStream; errors before the first piece are raised here, so the router can fail over."""
        request = _request_or_refuse(model, call)
        action = "bedrock:InvokeModelWithResponseStream"
        events: Any = None
        try:
            client = self._clients.for_timeout(call.timeout_s)
            response = client.converse_stream(**request)
            events = response.get("stream") if isinstance(response, dict) else None
        except Exception as exc:  # as in complete()
            raise self._translate(exc, model, action) from exc
        if events is None:
            raise _malformed(model, "the stream response has no event stream")
        pieces = self._read_stream(events, model, asks_one_hour_cache(request), action)
        try:
            # Read up to the first piece for the caller (messageStart carries none): a stream that is
            # broken from the start fails over instead of failing mid-answer.
            first = next(pieces)
        except BaseException:
            _close(events)
            raise
        return ClosingStream(_prepend(first, pieces), lambda: _close(events))

    def _read_stream(self, events: Iterable[Any], model: Model, one_hour_cache: bool,
                     action: str) -> Iterator[StreamPiece]:
        try:
            yield from stream_pieces(events, model, one_hour_cache)
        except ProviderError:
            raise
        except Exception as exc:  # botocore's and urllib3's errors while reading, translated; others re-raised
            raise self._translate(exc, model, action) from exc

    def _translate(self, exc: Exception, model: Model, action: str) -> ProviderError:
        region, _ = self._clients.known_region()
        return translate_error(exc, model, region or "the function's region", action)


def _request_or_refuse(model: Model, call: ProviderCall) -> dict[str, Any]:
    try:
        return converse_request(model, call)
    except Untranslatable as exc:
        raise ProviderError(FailureKind.BAD_REQUEST, f"Bedrock Converse cannot take this request: {exc}",
                            status=400) from exc


def _prepend(first: StreamPiece, rest: Iterator[StreamPiece]) -> Iterator[StreamPiece]:
    try:
        yield first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if callable(close):
            close()


def _close(events: Any) -> None:
    close = getattr(events, "close", None)
    if callable(close):
        close()


# ---- requests --------------------------------------------------------------------------------


def converse_request(model: Model, call: ProviderCall) -> dict[str, Any]:
    """The keyword arguments of ``converse``/``converse_stream`` for a call; Untranslatable when Converse cannot say it."""
    return {"modelId": model.upstream, **converse_body(call.messages, call.params, call.max_tokens)}


def converse_body(messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], max_tokens: int) -> dict[str, Any]:
    """The Converse request for OpenAI messages and pass-through fields (without the model id)."""
    conversation = read_conversation(messages)
    body: dict[str, Any] = {
        "messages": [{"role": turn.role, "content": _content(turn.blocks)} for turn in conversation.turns],
    }
    if conversation.system:
        body["system"] = _content(conversation.system)
    body["inferenceConfig"] = inference_config(params, max_tokens)
    tools = tool_config(params, conversation)
    if tools is not None:
        body["toolConfig"] = tools
    return body


def _content(blocks: Iterable[Block]) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, Text):
            content.append({"text": block.text})
            if block.cache_control is not None:
                content.append({"cachePoint": _cache_point(block.cache_control)})
        elif isinstance(block, ToolUse):
            content.append({"toolUse": {"toolUseId": _tool_use_id(block.id), "name": block.name, "input": block.input}})
        else:
            result = [{"text": block.text}] if block.text else []
            content.append({"toolResult": {"toolUseId": _tool_use_id(block.tool_use_id), "content": result}})
    return content


def _cache_point(control: Mapping[str, Any]) -> dict[str, Any]:
    point: dict[str, Any] = {"type": "default"}
    ttl = control.get("ttl")
    if ttl is not None:
        if ttl not in CACHE_TTLS:
            raise Untranslatable(f"'cache_control.ttl' must be '5m' or '1h' for Bedrock, got {ttl!r}")
        point["ttl"] = ttl
    return point


def _tool_use_id(value: str) -> str:
    if not TOOL_USE_ID_PATTERN.match(value):
        raise Untranslatable(f"the tool call id {value[:80]!r} is not one Bedrock takes (letters, digits, '_', '.', "
                             "':' and '-', at most 64)")
    return value


def asks_one_hour_cache(request: Mapping[str, Any]) -> bool:
    """Whether a Converse request holds a cache point with a one-hour TTL."""
    blocks = list(request.get("system") or [])
    for message in request.get("messages") or []:
        blocks.extend(message.get("content") or [])
    return any(isinstance(block.get("cachePoint"), dict) and block["cachePoint"].get("ttl") == "1h" for block in blocks)


def _unit_interval(params: Mapping[str, Any], name: str) -> float | int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise Untranslatable(f"Bedrock Converse takes '{name}' from 0 to 1, got {value!r}")
    return value


def inference_config(params: Mapping[str, Any], max_tokens: int) -> dict[str, Any]:
    """``inferenceConfig``: the output cap, and the caller's temperature, top_p and stop."""
    config: dict[str, Any] = {"maxTokens": max_tokens}
    temperature = _unit_interval(params, "temperature")
    if temperature is not None:
        config["temperature"] = temperature
    top_p = _unit_interval(params, "top_p")
    if top_p is not None:
        config["topP"] = top_p
    stops = stop_sequences(params)
    if any(not stop for stop in stops):
        raise Untranslatable("Bedrock Converse takes no empty 'stop' sequence")
    if stops:
        config["stopSequences"] = stops
    return config


def _uses_tools(conversation: Conversation | None) -> bool:
    if conversation is None:
        return False
    return any(isinstance(block, (ToolUse, ToolResult)) for turn in conversation.turns for block in turn.blocks)


def tool_config(params: Mapping[str, Any], conversation: Conversation | None) -> dict[str, Any] | None:
    """``toolConfig`` from the function tools and the tool choice, None when no tools are sent.

    ``conversation`` None (only the pass-through fields are known) checks what the fields alone decide.
    """
    tools = function_tools(params)
    choice = tool_choice(params)
    in_history = _uses_tools(conversation)
    if not tools:
        if choice is not None and choice.kind in ("any", "tool"):
            raise Untranslatable("'tool_choice' asks for a tool call, but the request has no 'tools'")
        if in_history:
            raise Untranslatable("'tools' is required: Bedrock needs the tools defined when 'messages' hold tool "
                                 "calls or tool results")
        return None
    if choice is not None and choice.kind == "none":
        if in_history:
            raise Untranslatable("'tool_choice' 'none' has no Bedrock equivalent when 'messages' hold tool calls or "
                                 "results: Bedrock then needs the tools defined, and the model could call them")
        return None  # tools left out: the model cannot call any, as "none" asks
    raw_tools = params.get("tools") or []
    specs: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        if not TOOL_NAME_PATTERN.match(tool.name):
            raise Untranslatable(f"'tools[{index}].function.name' {tool.name[:80]!r} is not a name Bedrock takes "
                                 "(letters, digits, '_' and '-', at most 64)")
        # An empty schema means "no parameters"; Anthropic's models on Bedrock want that said as an object.
        schema = dict(tool.parameters) or {"type": "object", "properties": {}}
        spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": schema}}
        if tool.description:
            spec["description"] = tool.description
        strict = raw_tools[index]["function"].get("strict")
        if strict is not None:
            if not isinstance(strict, bool):
                raise Untranslatable(f"'tools[{index}].function.strict' must be true or false")
            spec["strict"] = strict
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    if choice is not None:
        if choice.kind == "tool":
            if choice.name not in {tool.name for tool in tools}:
                raise Untranslatable(f"'tool_choice' names the function {choice.name!r}, which is not in 'tools'")
            config["toolChoice"] = {"tool": {"name": choice.name}}
        else:
            config["toolChoice"] = {choice.kind: {}}
    return config


def unsupported_params(params: Mapping[str, Any], messages: Sequence[Mapping[str, Any]] | None = None) -> str | None:
    """Why Converse cannot take these pass-through fields (naming them), or these messages when given, or None."""
    meaningful = {name: value for name, value in params.items()
                  if not (name in HARMLESS_VALUES and HARMLESS_VALUES[name](value))}
    refused = refused_fields(meaningful, TRANSLATED_FIELDS, HARMLESS_FIELDS)
    if refused:
        named = ", ".join(f"'{name}'" for name in refused)
        return (f"Bedrock Converse has no equivalent of {named}, and leaving "
                f"{'it' if len(refused) == 1 else 'them'} out would change the answer or its cost")
    try:
        if messages is None:
            inference_config(params, 1)
            tool_config(params, None)
        else:
            converse_body(messages, params, 1)
    except Untranslatable as exc:
        return str(exc)
    return None


def tool_prompt_overhead(upstream: str, params: Mapping[str, Any]) -> int:
    """Tokens a request with tools has on Bedrock beyond the OpenAI JSON the router counted (0 without tools).

    That is Anthropic's tool-use system prompt, for Anthropic models, and for any model the bytes by
    which the Converse ``toolSpec`` form outgrows the OpenAI form (a function without parameters is
    sent with an object schema).
    """
    tools = params.get("tools")
    if not isinstance(tools, list) or not tools:
        return 0
    prompt = 0
    if "anthropic." in upstream or _OPAQUE_MODEL_ID.search(upstream):
        choice = params.get("tool_choice")
        forced = "forced" if choice == "required" or isinstance(choice, dict) else "auto"
        table = TOOL_PROMPT_TOKENS_CLAUDE_4 if _CLAUDE_4.search(upstream) else TOOL_PROMPT_TOKENS_LARGEST
        prompt = table[forced]
    try:
        config = tool_config(params, None)
    except Untranslatable:
        return prompt  # refused by ``unsupported`` before any call
    if config is None:
        return prompt
    counted = len(json.dumps(tools).encode("utf-8"))
    sent = len(json.dumps(config["tools"], ensure_ascii=False).encode("utf-8"))
    return prompt + max(0, sent - counted)


# ---- answers ---------------------------------------------------------------------------------


def finish_reason(value: Any, model: Model) -> FinishReason:
    """OpenAI's finish reason for a Converse ``stopReason``; a failure for a broken answer."""
    if not isinstance(value, str):
        raise _malformed(model, "'stopReason' is not a string")
    if value in _BROKEN_STOP_REASONS:
        raise ProviderError(FailureKind.UPSTREAM, f"Bedrock's {model.id} produced no usable answer (stopReason "
                            f"'{value}')", status=502)
    return _FINISH_REASONS.get(value, "stop")


def read_usage(value: Any, model: Model, one_hour_cache: bool = False) -> Usage:
    """Converse's usage as one Usage record: ``inputTokens`` is the uncached input."""
    if not isinstance(value, dict):
        raise _malformed(model, "'usage' is missing or not an object")
    written = _count(value, "cacheWriteInputTokens", model)
    details = value.get("cacheDetails")
    one_hour = 0
    if details is not None:
        if not isinstance(details, list):
            raise _malformed(model, "'usage.cacheDetails' is not an array")
        split = 0
        for detail in details:
            if not isinstance(detail, dict) or detail.get("ttl") not in CACHE_TTLS:
                raise _malformed(model, "a 'usage.cacheDetails' entry has no ttl of '5m' or '1h'")
            tokens = _count(detail, "inputTokens", model, required=True)
            split += tokens
            one_hour += tokens if detail["ttl"] == "1h" else 0
        if split > written:
            raise _malformed(model, "'usage.cacheDetails' counts more tokens than 'cacheWriteInputTokens'")
        if one_hour_cache:
            one_hour += written - split  # writes the split leaves out: the dearer rate, never below the truth
    elif one_hour_cache:
        one_hour = written  # the TTL of these writes is not said: the dearer rate, never below the truth
    return Usage(
        input_tokens=_count(value, "inputTokens", model, required=True),
        output_tokens=_count(value, "outputTokens", model, required=True),
        cache_read_tokens=_count(value, "cacheReadInputTokens", model),
        cache_write_tokens=written - one_hour,
        cache_write_1h_tokens=one_hour,
    )


def _tool_use(value: Any, model: Model) -> ToolUse:
    if not isinstance(value, dict):
        raise _malformed(model, "a 'toolUse' block is not an object")
    use_id, name = value.get("toolUseId"), value.get("name")
    if not isinstance(use_id, str) or not isinstance(name, str) or "input" not in value:
        raise _malformed(model, "a 'toolUse' block lacks a string toolUseId or name, or its input")
    return ToolUse(id=use_id, name=name, input=value["input"])


def read_response(data: Any, model: Model, elapsed_ms: float, one_hour_cache: bool = False) -> Completion:
    """A Converse answer, checked field by field."""
    if not isinstance(data, dict):
        raise _malformed(model, "the answer is not an object")
    output = data.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    if not isinstance(message, dict):
        raise _malformed(model, "it has no 'output.message' (the body was not a Converse answer)")
    content = message.get("content")
    if not isinstance(content, list):
        raise _malformed(model, "'output.message.content' is not an array")
    texts: list[str] = []
    calls: list[Mapping[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            raise _malformed(model, "a content block is not an object")
        if "text" in block:
            if not isinstance(block["text"], str):
                raise _malformed(model, "a 'text' block is not a string")
            texts.append(block["text"])
        elif "toolUse" in block:
            calls.append(tool_call_json(_tool_use(block["toolUse"], model)))
        # Other blocks (reasoning, citations) have no place in an OpenAI answer.
    finish = finish_reason(data.get("stopReason"), model)
    if finish == "tool_calls" and not calls:
        raise _malformed(model, "stopReason 'tool_use' without a toolUse block")
    return Completion(text="".join(texts), usage=read_usage(data.get("usage"), model, one_hour_cache),
                      finish_reason=finish, latency_ms=elapsed_ms, tool_calls=tuple(calls))


def _event_body(event: Any, model: Model) -> tuple[str, Mapping[str, Any]]:
    if not isinstance(event, dict) or len(event) != 1:
        raise _malformed(model, "a stream event is not an object with one member")
    ((kind, body),) = event.items()
    if not isinstance(body, dict):
        raise _malformed(model, f"the '{kind}' event is not an object")
    return kind, body


def stream_pieces(events: Iterable[Any], model: Model, one_hour_cache: bool = False) -> Iterator[StreamPiece]:
    """ConverseStream events as pieces; the last carries the finish reason and the usage of ``metadata``."""
    tool_index: dict[Any, int] = {}
    without_input: set[int] = set()  # tool uses no input has arrived for yet, by OpenAI tool index
    finish: FinishReason | None = None
    for event in events:
        kind, body = _event_body(event, model)
        if kind == "contentBlockStart":
            start = body.get("start")
            if isinstance(start, dict) and "toolUse" in start:
                opened = start["toolUse"]
                if not isinstance(opened, dict) or not isinstance(opened.get("toolUseId"), str) \
                        or not isinstance(opened.get("name"), str):
                    raise _malformed(model, "a tool-use start lacks a string toolUseId or name")
                position = tool_index[body.get("contentBlockIndex")] = len(tool_index)
                without_input.add(position)
                yield StreamPiece(tool_calls=({"index": position, "id": opened["toolUseId"], "type": "function",
                                               "function": {"name": opened["name"], "arguments": ""}},))
        elif kind == "contentBlockDelta":
            delta = body.get("delta")
            if not isinstance(delta, dict):
                raise _malformed(model, "a 'contentBlockDelta' has no delta object")
            if "text" in delta:
                if not isinstance(delta["text"], str):
                    raise _malformed(model, "a text delta is not a string")
                if delta["text"]:
                    yield StreamPiece(text=delta["text"])
            elif "toolUse" in delta:
                partial = delta["toolUse"].get("input") if isinstance(delta["toolUse"], dict) else None
                started = tool_index.get(body.get("contentBlockIndex"))
                if not isinstance(partial, str) or started is None:
                    raise _malformed(model, "a tool-use delta has no string input, or no tool use was started")
                if partial:
                    without_input.discard(started)
                    yield StreamPiece(tool_calls=({"index": started, "function": {"arguments": partial}},))
            # Other deltas (reasoning, citations) have no place in an OpenAI answer.
        elif kind == "contentBlockStop":
            ended = tool_index.get(body.get("contentBlockIndex"))
            if ended in without_input:
                without_input.discard(ended)
                yield _empty_inputs([ended])
        elif kind == "messageStop":
            finish = finish_reason(body.get("stopReason"), model)
            if finish == "tool_calls" and not tool_index:
                raise _malformed(model, "stopReason 'tool_use' without a tool use")
        elif kind == "metadata":
            if finish is None:
                raise _malformed(model, "the stream's metadata came before messageStop")
            if without_input:
                yield _empty_inputs(sorted(without_input))
            yield StreamPiece(finish_reason=finish, usage=read_usage(body.get("usage"), model, one_hour_cache))
            return
        # messageStart, and contentBlockStop otherwise, carry nothing to pass on.
    raise ProviderError(FailureKind.UPSTREAM, f"the stream from {model.id} ended without "
                        f"{'metadata' if finish else 'messageStop and metadata'} (the connection closed mid-answer)",
                        status=502)


def _empty_inputs(positions: Iterable[int]) -> StreamPiece:
    """The arguments ``{}`` for tool uses that ended without any input."""
    return StreamPiece(tool_calls=tuple({"index": position, "function": {"arguments": "{}"}} for position in positions))


# ---- errors ----------------------------------------------------------------------------------


def _retry_after(response: Mapping[str, Any]) -> float | None:
    return retry_after_seconds((response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {})


def _client_error(exc: Any, model: Model, region: str, action: str) -> ProviderError:
    error = exc.response.get("Error") or {}
    raw_code = str(error.get("Code") or "")
    code = raw_code[:1].upper() + raw_code[1:]
    said = redact(str(error.get("Message") or "")).strip().rstrip(".")
    http_status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    kind = _ERROR_KINDS.get(code)
    if kind is None:
        if not isinstance(http_status, int):
            kind = FailureKind.UPSTREAM  # an in-stream exception botocore could not name
        elif http_status == 429:
            kind = FailureKind.RATE_LIMITED
        elif http_status == 404:
            kind = FailureKind.NOT_FOUND
        elif http_status == 413:
            kind = FailureKind.TOO_LARGE
        elif 400 <= http_status < 500:
            kind = FailureKind.BAD_REQUEST
        else:
            kind = FailureKind.UPSTREAM
    status = http_status if isinstance(http_status, int) else _DEFAULT_STATUS.get(kind, 502)
    label = code or "an exception botocore could not name"
    if kind is FailureKind.FORBIDDEN:
        # AWS's own text names the role and the account: ours names what to grant.
        message = (f"Bedrock refused access ({label}): the function's role may not call {action} on {model.upstream} "
                   f"in {region}, or model access is not enabled there; grant it in template.yaml's "
                   "BedrockFoundationModelIds, or for an inference profile BedrockInferenceProfileIds (and the regions "
                   "it routes to in BedrockProfileRegions)")
    elif kind is FailureKind.NOT_FOUND:
        message = (f"Bedrock has no model {model.upstream} in {region}: enable model access or check the id "
                   f"({label}: {said})")
    elif kind is FailureKind.AUTH:
        message = f"AWS refused the function's credentials for Bedrock ({label})"
    else:
        message = f"Bedrock error for {model.id} ({label}): {said}" if said else f"Bedrock error for {model.id} ({label})"
    return ProviderError(kind, message, status=status,
                         retry_after_s=_retry_after(exc.response) if kind is FailureKind.RATE_LIMITED else None)


def translate_error(exc: Exception, model: Model, region: str, action: str) -> ProviderError:
    """Map a botocore or urllib3 exception to a ProviderError; anything else (a programming error) is re-raised."""
    if isinstance(exc, ProviderError):
        return exc
    from botocore import exceptions as aws
    from botocore.eventstream import ParserError
    from urllib3 import exceptions as http

    if isinstance(exc, aws.ClientError):  # EventStreamError (an exception event mid-stream) included
        return _client_error(exc, model, region, action)
    if isinstance(exc, (aws.ReadTimeoutError, aws.ConnectTimeoutError, http.TimeoutError)):
        return ProviderError(FailureKind.TIMEOUT, f"Bedrock did not answer in time for {model.id}", status=504)
    if isinstance(exc, (aws.ConnectionError, aws.HTTPClientError, http.HTTPError)):
        # EndpointConnectionError, a connection closed or cut mid-answer (urllib3's ProtocolError).
        return ProviderError(FailureKind.CONNECTION, f"the connection to Bedrock failed for {model.id}: "
                             f"{type(exc).__name__}", status=502)
    if isinstance(exc, ParserError):
        return ProviderError(FailureKind.UPSTREAM, f"Bedrock sent a malformed event stream for {model.id} "
                             f"({type(exc).__name__})", status=502)
    if isinstance(exc, tuple(getattr(aws, name) for name in _CREDENTIAL_ERRORS if hasattr(aws, name))):
        return ProviderError(FailureKind.KEY_UNAVAILABLE, f"no usable AWS credentials for Bedrock "
                             f"({type(exc).__name__}): the function's role, or the AWS credential chain, gave none",
                             status=503)
    if isinstance(exc, aws.NoRegionError):
        return ProviderError(FailureKind.UPSTREAM, _NO_REGION, status=503)
    if isinstance(exc, aws.ParamValidationError):
        return ProviderError(FailureKind.BAD_REQUEST, redact(f"Bedrock Converse cannot take this request: {exc}"),
                             status=400)
    if isinstance(exc, aws.BotoCoreError):
        return ProviderError(FailureKind.UPSTREAM, redact(f"the Bedrock call failed for {model.id}: {exc}"), status=502)
    if isinstance(exc, UnicodeDecodeError):
        # botocore decodes bodies and event payloads as strict UTF-8: Bedrock's bytes are at fault.
        return _malformed(model, "not valid UTF-8")
    if isinstance(exc, UnicodeEncodeError):
        # Raised while encoding the request: the caller's text, not the provider, is at fault.
        return ProviderError(FailureKind.BAD_REQUEST, "the request holds text that cannot be encoded as UTF-8",
                             status=400)
    raise exc


def _malformed(model: Model, what: str) -> ProviderError:
    return malformed(model, what, "Bedrock")


def _count(usage: Mapping[str, Any], name: str, model: Model, required: bool = False) -> int:
    value = token_count(usage, name, model, sender="Bedrock")
    if value is None and required:
        raise _malformed(model, f"'usage.{name}' is missing")
    return value or 0
