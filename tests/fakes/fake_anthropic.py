"""A local fake of Anthropic's Messages API, for tests and benchmarks.

``FakeAnthropic`` starts a stdlib ``ThreadingHTTPServer`` on ``127.0.0.1`` (an
ephemeral port) in a daemon thread.  Point the real ``anthropic`` SDK at it with
``Anthropic(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)``; the
SDK appends ``/v1/messages`` itself.  It speaks HTTP/1.1 with keep-alive: every
non-streamed response carries an exact ``Content-Length``, streamed responses
use chunked transfer encoding (HTTP/1.0 clients get a close-delimited stream
instead), and a request carrying ``Connection: close`` gets ``Connection:
close`` back.  Every response carries a ``request-id`` header.

Endpoint ``POST /v1/messages``
------------------------------
Checked in this order; every refusal is Anthropic's error shape
``{"type": "error", "error": {"type", "message"[, "details": {"error_code"}]},
"request_id": "req_..."}`` with the same id in the ``request-id`` header:

1. Authentication: the key is accepted from ``x-api-key: KEY`` or from
   ``Authorization: Bearer KEY`` (either header may carry it; the SDK 2.x sends
   ``api_key`` as ``Bearer``).  Otherwise 401 ``authentication_error``; the
   message never echoes the key sent.
2. ``anthropic-version``: required, any non-empty value (the SDK sends
   ``2026-10-21``); without it 400 ``invalid_request_error``.
3. The body must be a JSON object, and it is validated as Anthropic does
   (:func:`validation_error`); a refusal is a 400 ``invalid_request_error``
   whose message starts with the path of the offending field:

   * only these top-level fields: ``model`` (string), ``max_tokens`` (integer
     >= 1, required), ``messages``, ``system``, ``stop_sequences``, ``tools``,
     ``tool_choice``, ``metadata`` (``{"user_id"}``), ``stream`` (bool).  Any
     other field is refused by name: the sampling parameters ``temperature``,
     ``top_p`` and ``top_k`` (refused under API version 2026-10-21), OpenAI
     fields such as ``stop``, ``max_completion_tokens`` or ``n``, and also the
     real API's other optional features (``thinking``, ``service_tier``...)
     the fake does not model;
   * ``messages``: a non-empty list of ``{"role", "content"}``; ``role`` is
     ``user`` or ``assistant`` (a ``system`` role is refused: system text goes
     in the top-level ``system``, a string or a list of text blocks); the
     first message is ``user``; two consecutive messages with the same role
     are REFUSED (stricter than the real API, which merges them: the router
     under test must merge them itself); ``content`` is a string or a list of
     ``text`` / ``image`` / ``tool_use`` / ``tool_result`` blocks, non-empty
     except in a final assistant message, and text blocks are non-empty;
   * ``tool_use`` blocks (``id``, ``name``, ``input`` object) only in assistant
     messages; ``tool_result`` blocks (``tool_use_id``, ``content`` string or
     text/image blocks, ``is_error`` bool) only in user messages, each
     ``tool_use_id`` matching a ``tool_use`` of the immediately preceding
     assistant message, and every such ``tool_use`` answered there;
   * ``tools``: ``{"name", "description"?, "input_schema": {"type":
     "object", ...}, "cache_control"?, "type"?: "custom"}`` with unique names
     matching ``^[a-zA-Z0-9_-]{1,64}$``; ``tool_choice``: ``{"type": "auto" |
     "any" | "none"}`` or ``{"type": "tool", "name"}`` naming one of the
     tools (``any`` and ``tool`` need tools), optionally with
     ``disable_parallel_tool_use``;
   * ``cache_control``: ``{"type": "ephemeral", "ttl"?: "5m" | "1h"}``, on at
     most 4 blocks in all.

Anything else (any path other than ``/v1/messages``, any GET) is a 404
``not_found_error``.  Requests refused by the fake itself consume no behaviour.

Token accounting (deterministic, so tests can assert exact numbers)
-------------------------------------------------------------------
``JSON(x)`` below means ``json.dumps(x, ensure_ascii=False)`` and every size
is a UTF-8 byte count.  The TOTAL input tokens (:func:`count_input_tokens`)::

    bytes(system text)                      # the string, or its text blocks
    + sum over messages of (4 + bytes(content))
    + 3
    + (when "tools" is non-empty) bytes(JSON(tools)) + tool-use system prompt

where ``bytes(content)`` is the string content, or the sum over its blocks of:
a ``text`` block's text, ``JSON(input)`` of a ``tool_use`` block, and the
text of a ``tool_result`` (its string content, or its text blocks); images
count 0.  The tool-use system prompt is :data:`TOOL_USE_SYSTEM_PROMPT_TOKENS_AUTO`
(346) when ``tool_choice`` is absent, ``auto`` or ``none``, and
:data:`TOOL_USE_SYSTEM_PROMPT_TOKENS_ANY` (313) for ``any`` or ``tool`` (the
figures Anthropic documents for Claude 4 family models).

Cache use is declared on the behaviour with :meth:`Behaviour.with_cache`
(``read=N, write_5m=M, write_1h=K``).  Then, as Anthropic reports it,
``input_tokens`` EXCLUDES cached tokens::

    cache_read_input_tokens     = N
    cache_creation_input_tokens = M + K
    cache_creation              = {"ephemeral_5m_input_tokens": M, "ephemeral_1h_input_tokens": K}
    input_tokens                = TOTAL - N - M - K

Without cache use all the cache fields are 0.  When ``N + M + K`` exceeds the
total the fake raises ``ValueError`` internally (printed to stderr) and
answers 500 ``api_error`` naming it.  ``usage.service_tier`` is ``"standard"``.

``output_tokens`` is the number of whitespace-separated words of the answer
text; a ``tool_use`` block adds the words of ``JSON(input)`` (at least 1).  It
is capped at ``max_tokens``: a longer text is cut after ``max_tokens`` words
(keeping its spacing) and ends with ``stop_reason "max_tokens"``; a tool use
that does not fit after its text is dropped (``stop_reason "max_tokens"``,
``output_tokens == max_tokens``).  If a ``stop_sequences`` entry occurs in the
answer text, the text is cut just before the earliest one (the tool use, if
any, is dropped) and ends with ``stop_reason "stop_sequence"`` and
``stop_sequence`` set to it.  Otherwise ``end_turn`` (or ``tool_use`` /
``refusal``).  A text block is sent only when the (cut) text is non-empty.

Answers
-------
Non-streamed: ``{"id": "msg_fake_...", "type": "message", "role": "assistant",
"model", "content", "stop_reason", "stop_sequence", "stop_details", "usage"}``
(``stop_details`` is null except for a refusal).  Streamed (``"stream": true``):
``text/event-stream``, each event ``event: <type>\\ndata: <json>\\n\\n``, in the
real order ``message_start`` (content ``[]``, ``stop_reason`` null, the input
and cache usage and ``output_tokens: 1``, as the real API sends), then per
content block ``content_block_start`` / ``content_block_delta``... /
``content_block_stop`` with one ``ping`` after the first block start, then
``message_delta`` (``delta: {stop_reason, stop_sequence, stop_details}``,
``usage: {output_tokens}``) and ``message_stop``.  Text streams one word per
``text_delta`` (leading spaces kept); a tool use streams ``input_json_delta``
pieces, one word of its JSON each (a one-word JSON is split in two), so at
least 2, except a tool use without input, which streams one ``input_json_delta``
with ``partial_json: ""`` as the real API does.  Errors before a stream starts are plain JSON errors with their
status, as the real API does.

Scripting
---------
Each accepted request consumes one behaviour from a FIFO queue
(:meth:`FakeAnthropic.enqueue`); when it is empty the default
(:meth:`FakeAnthropic.set_default`, initially :func:`ok`) is used.  Helpers
(also ``Behaviour.<name>``): :func:`ok`, :func:`reply`, :func:`spend_all`,
:func:`tool_use`, :func:`refusal`, :func:`status`, :func:`slow`,
:func:`malformed`, :func:`invalid_message`, :func:`stream_error`,
:func:`cut_stream` and :func:`invalid_utf8`.  The default answer text is ``"[FAKE-ANTHROPIC:<model>] "``
+ the text of the last user message.

``stream_error(n)`` and ``cut_stream(n)`` stream the ``ok()`` answer (or
``text=``) and stop after ``n`` content deltas (after the last one when there
are fewer; ``n == 0`` stops right after the ``ping``).  ``stream_error`` then
sends ``event: error`` with the error shape and ends the response (and the
connection, announced by ``Connection: close``); ``cut_stream`` just closes the
socket without ending the chunked body (over HTTP/1.0 that looks like a normal
end).  ``invalid_utf8(n)`` streams the same way, then one ``content_block_delta``
whose data holds the byte ``0xFF`` (not UTF-8), then ends the stream properly;
``invalid_utf8()`` (no ``n``) puts that byte in the ``message_start`` event
itself.  On a non-streamed request,
``stream_error`` answers the plain JSON error with the status of its type (529
for ``overloaded_error``) and ``cut_stream`` sends the headers with the full
``Content-Length`` but only half the body before closing.

What the SDK (anthropic 2.15.0 over httpx2) does with the broken answers
-------------------------------------------------------------------------
* ``malformed()``: non-streamed, the SDK calls ``json.loads`` on the body and
  lets ``json.JSONDecodeError`` (a ``ValueError``) escape UNWRAPPED: it is not
  an ``anthropic.APIError``.  Streamed (a ``message_start`` event whose data
  is not JSON), the same ``json.JSONDecodeError`` is raised while iterating.
* ``invalid_message()``: without ``_strict_response_validation`` the SDK
  builds the ``Message`` unvalidated, so ``message.content`` is ``None`` and
  the caller must cope; with it, ``anthropic.APIResponseValidationError``.
  Streamed, ``message_start`` carries ``content: null`` (then
  ``message_delta`` and ``message_stop``), and the SDK passes it on as is.
* ``stream_error()``: the SDK raises mid-iteration, after yielding the earlier
  events, a bare ``anthropic.APIStatusError`` with ``status_code == 200`` (it
  picks the class from the HTTP status, which was 200, not from the error
  type: a mid-stream overload is NOT an ``OverloadedError``); ``.type`` is the
  error type and ``.body`` the whole event data.
* ``invalid_utf8()``: streamed, the SDK's SSE decoder decodes each line as
  strict UTF-8 and raises ``UnicodeDecodeError`` (unwrapped) while iterating,
  after the earlier events.  Non-streamed (the answer's text then holds the byte),
  ``messages.create`` raises the same, unwrapped (it ``json.loads`` the bytes),
  while the raw response's ``text()`` is decoded leniently (the byte becomes U+FFFD).
* ``cut_stream()``: the SDK does NOT end quietly: iterating raises
  ``httpx2.RemoteProtocolError`` ("incomplete chunked read"), unwrapped (not
  an ``anthropic.APIError``), after the earlier events; the ``messages.stream``
  helper raises the same.  Non-streamed, the truncated body raises
  ``anthropic.APIConnectionError``: httpx2 reads a non-streamed body inside
  ``send()``, where the SDK wraps every transport error.

Recording
---------
Every request (any path and outcome) is appended to
:attr:`FakeAnthropic.requests` as a :class:`RecordedRequest` with lower-cased
header names and the JSON body (``None`` when absent or not a JSON object).
:meth:`FakeAnthropic.reset` clears the record and the queue and restores the
default behaviour to :func:`ok`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import socket
import sys
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.fakes.fakehttp import FakeHandler, FakeServer, FakeService

__all__ = [
    "ALLOWED_FIELDS",
    "MESSAGES_PATH",
    "TOOL_USE_SYSTEM_PROMPT_TOKENS_ANY",
    "TOOL_USE_SYSTEM_PROMPT_TOKENS_AUTO",
    "Behaviour",
    "BehaviourKind",
    "FakeAnthropic",
    "RecordedRequest",
    "count_input_tokens",
    "cut_stream",
    "invalid_message",
    "invalid_utf8",
    "malformed",
    "message_text",
    "ok",
    "refusal",
    "reply",
    "slow",
    "spend_all",
    "status",
    "stream_error",
    "tool_use",
    "validation_error",
]

BehaviourKind = Literal[
    "ok",
    "reply",
    "spend_all",
    "tool_use",
    "refusal",
    "status",
    "slow",
    "malformed",
    "invalid_message",
    "stream_error",
    "cut_stream",
    "invalid_utf8",
]

#: Tool-use system prompt tokens Anthropic documents for Claude 4 models, tool_choice auto/none (or absent).
TOOL_USE_SYSTEM_PROMPT_TOKENS_AUTO: int = 346

#: Tool-use system prompt tokens Anthropic documents for Claude 4 models, tool_choice any/tool.
TOOL_USE_SYSTEM_PROMPT_TOKENS_ANY: int = 313

#: The only endpoint served.
MESSAGES_PATH: str = "/v1/messages"

#: Top-level request fields the fake accepts; any other is refused by name.
ALLOWED_FIELDS: frozenset[str] = frozenset(
    {"model", "max_tokens", "messages", "system", "stop_sequences", "tools", "tool_choice", "metadata", "stream"}
)

MAX_CACHE_BREAKPOINTS: int = 4

MALFORMED_BODY: bytes = b'{"id": "msg_fake", "type": "message", "content": [{"type": "text", "text": "'

# HTTP status -> (error.type, default message), as the real API answers them.
_ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request (scripted by FakeAnthropic)."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low (scripted by FakeAnthropic)."),
    403: ("permission_error", "Your API key does not have permission (scripted by FakeAnthropic)."),
    404: ("not_found_error", "Not Found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes (scripted by FakeAnthropic)."),
    429: ("rate_limit_error", "Rate limit exceeded (scripted by FakeAnthropic)."),
    500: ("api_error", "Internal server error (scripted by FakeAnthropic)."),
    504: ("timeout_error", "Request timed out (scripted by FakeAnthropic)."),
    529: ("overloaded_error", "Overloaded"),
}

# error.type -> HTTP status, for stream_error() answered without a stream.
_STATUS_OF_TYPE: dict[str, int] = {error_type: code for code, (error_type, _) in _ERROR_TYPES.items()}

_ANSWER_KINDS: frozenset[str] = frozenset(
    {"ok", "reply", "spend_all", "tool_use", "refusal", "invalid_message", "stream_error", "cut_stream", "invalid_utf8"}
)

# A byte that is never part of UTF-8.
NOT_UTF8: bytes = b"\xff"

_WORD = re.compile(r"\S+")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Behaviour:
    """One scripted way of answering a Messages request; build it with the helpers."""

    kind: BehaviourKind
    text: str | None = None
    tool_name: str | None = None
    # Kept as JSON text so the frozen behaviour stays hashable and cannot be mutated after enqueueing.
    tool_input_json: str | None = None
    status_code: int = 200
    error_type: str | None = None
    message: str | None = None
    retry_after: float | int | str | None = None
    error_code: str | None = None
    seconds: float = 0.0
    then: Behaviour | None = None
    after_deltas: int = 0
    at_start: bool = False
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0

    @staticmethod
    def ok() -> Behaviour:
        """Normal answer: ``"[FAKE-ANTHROPIC:<model>] "`` + last user message, stop_reason end_turn."""
        return Behaviour("ok")

    @staticmethod
    def reply(text: str) -> Behaviour:
        """Normal answer with fixed text (still cut by max_tokens and stop_sequences)."""
        return Behaviour("reply", text=text)

    @staticmethod
    def spend_all() -> Behaviour:
        """Exactly ``max_tokens`` words "tok", stop_reason max_tokens."""
        return Behaviour("spend_all")

    @staticmethod
    def tool_use(name: str, input: Mapping[str, Any], text: str | None = None) -> Behaviour:
        """One tool_use block (id ``toolu_fake_...``), optionally after a text block; stop_reason tool_use."""
        if not isinstance(input, Mapping):
            raise TypeError("tool_use input must be a mapping")
        return Behaviour("tool_use", text=text, tool_name=name, tool_input_json=json.dumps(dict(input), ensure_ascii=False))

    @staticmethod
    def refusal(text: str | None = None) -> Behaviour:
        """stop_reason refusal with refusal stop_details; content empty unless ``text`` is given."""
        return Behaviour("refusal", text=text)

    @staticmethod
    def status(
        code: int,
        error_type: str | None = None,
        message: str | None = None,
        retry_after: float | str | None = None,
        error_code: str | None = None,
    ) -> Behaviour:
        """HTTP error ``code`` in Anthropic's error shape; optional retry-after and error.details.error_code."""
        if not 400 <= code <= 599:
            raise ValueError(f"status() needs a 4xx/5xx code, got {code}")
        return Behaviour(
            "status", status_code=code, error_type=error_type, message=message, retry_after=retry_after, error_code=error_code
        )

    @staticmethod
    def slow(seconds: float, then: Behaviour | None = None) -> Behaviour:
        """Sleep ``seconds`` before answering, then behave as ``then`` (default ``ok()``)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return Behaviour("slow", seconds=seconds, then=then if then is not None else Behaviour.ok())

    @staticmethod
    def malformed() -> Behaviour:
        """200 with ``Content-Type: application/json`` but a body that is not valid JSON."""
        return Behaviour("malformed")

    @staticmethod
    def invalid_message() -> Behaviour:
        """200 with valid JSON that is not a valid message (``content`` is null)."""
        return Behaviour("invalid_message")

    @staticmethod
    def stream_error(after_deltas: int, error_type: str = "overloaded_error", text: str | None = None) -> Behaviour:
        """Stream the answer, then an ``event: error`` of ``error_type`` after ``after_deltas`` deltas."""
        if after_deltas < 0:
            raise ValueError("after_deltas must be >= 0")
        return Behaviour("stream_error", text=text, error_type=error_type, after_deltas=after_deltas)

    @staticmethod
    def cut_stream(after_deltas: int, text: str | None = None) -> Behaviour:
        """Stream the answer and drop the connection after ``after_deltas`` deltas (no message_delta/stop)."""
        if after_deltas < 0:
            raise ValueError("after_deltas must be >= 0")
        return Behaviour("cut_stream", text=text, after_deltas=after_deltas)

    @staticmethod
    def invalid_utf8(after_deltas: int | None = None, text: str | None = None) -> Behaviour:
        """Stream the answer, then an event holding a byte that is not UTF-8 after ``after_deltas`` deltas
        (None: in message_start itself)."""
        if after_deltas is not None and after_deltas < 0:
            raise ValueError("after_deltas must be >= 0")
        return Behaviour("invalid_utf8", text=text, after_deltas=after_deltas or 0, at_start=after_deltas is None)

    def with_cache(self, read: int = 0, write_5m: int = 0, write_1h: int = 0) -> Behaviour:
        """The same behaviour reporting cache reads and 5-minute / 1-hour cache writes (see module docstring)."""
        for name, value in (("read", read), ("write_5m", write_5m), ("write_1h", write_1h)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0")
        if self.kind == "slow" and self.then is not None:
            return dataclasses.replace(self, then=self.then.with_cache(read, write_5m, write_1h))
        if self.kind not in _ANSWER_KINDS:
            raise ValueError(f"{self.kind}() produces no usage; cache counts do not apply")
        return dataclasses.replace(self, cache_read=read, cache_write_5m=write_5m, cache_write_1h=write_1h)


ok = Behaviour.ok
reply = Behaviour.reply
spend_all = Behaviour.spend_all
tool_use = Behaviour.tool_use
refusal = Behaviour.refusal
status = Behaviour.status
slow = Behaviour.slow
malformed = Behaviour.malformed
invalid_message = Behaviour.invalid_message
stream_error = Behaviour.stream_error
cut_stream = Behaviour.cut_stream
invalid_utf8 = Behaviour.invalid_utf8


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: path (with query), lower-cased headers, JSON-object body or None."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    method: str = "POST"
    raw_body: bytes = field(default=b"", repr=False)

    @property
    def anthropic_version(self) -> str | None:
        """The ``anthropic-version`` header sent, if any."""
        return self.headers.get("anthropic-version")


# ---- token accounting ----------------------------------------------------------------------------


def _json(value: Any) -> str:
    """The canonical JSON text used for token accounting and tool input deltas."""
    return json.dumps(value, ensure_ascii=False)


def _size(text: str) -> int:
    """UTF-8 byte count."""
    return len(text.encode("utf-8"))


def _text_blocks(blocks: Any) -> str:
    """Joined text of the ``text`` blocks in ``blocks`` (a string is its own text)."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        return ""
    return "".join(
        b["text"] for b in blocks if isinstance(b, Mapping) and b.get("type") == "text" and isinstance(b.get("text"), str)
    )


def message_text(message: Mapping[str, Any]) -> str:
    """Text of one message: string content, or the joined text blocks of list content."""
    return _text_blocks(message.get("content"))


def _content_size(content: Any) -> int:
    """Counted bytes of one message's content (text, tool_use input JSON, tool_result text)."""
    if isinstance(content, str):
        return _size(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for block in content:
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            total += _size(block["text"])
        elif kind == "tool_use":
            total += _size(_json(block.get("input")))
        elif kind == "tool_result":
            total += _size(_text_blocks(block.get("content")))
    return total


def count_input_tokens(body: Mapping[str, Any]) -> int:
    """Total input tokens of a request body, cached or not (see the module docstring)."""
    total = 3 + _size(_text_blocks(body.get("system")))
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        total += 4 + (_content_size(message.get("content")) if isinstance(message, Mapping) else 0)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        choice = body.get("tool_choice")
        choice_type = choice.get("type") if isinstance(choice, Mapping) else None
        total += _size(_json(tools))
        total += TOOL_USE_SYSTEM_PROMPT_TOKENS_ANY if choice_type in ("any", "tool") else TOOL_USE_SYSTEM_PROMPT_TOKENS_AUTO
    return total


# ---- validation ----------------------------------------------------------------------------------


class _Invalid(Exception):
    """A validation failure carrying Anthropic's message."""


def _fail(message: str) -> _Invalid:
    """Build the exception for one refusal."""
    return _Invalid(message)


def _require_keys(obj: Mapping[str, Any], where: str, allowed: Iterable[str], required: Iterable[str]) -> None:
    """Refuse unknown keys and missing required keys of ``obj``."""
    allowed_set = set(allowed)
    for key in obj:
        if key not in allowed_set:
            raise _fail(f"{where}.{key}: Extra inputs are not permitted")
    for key in required:
        if key not in obj:
            raise _fail(f"{where}.{key}: Field required")


class _Validator:
    """Anthropic-style validation of one Messages request body."""

    def __init__(self) -> None:
        self.cache_breakpoints = 0

    def cache_control(self, block: Mapping[str, Any], where: str) -> None:
        """Validate an optional cache_control of ``block`` and count it."""
        if "cache_control" not in block or block["cache_control"] is None:
            return
        value = block["cache_control"]
        where = f"{where}.cache_control"
        if not isinstance(value, Mapping):
            raise _fail(f"{where}: Input should be a valid dictionary")
        _require_keys(value, where, ("type", "ttl"), ("type",))
        if value["type"] != "ephemeral":
            raise _fail(f"{where}.type: Input should be 'ephemeral'")
        if "ttl" in value and value["ttl"] not in ("5m", "1h"):
            raise _fail(f"{where}.ttl: Input should be '5m' or '1h'")
        self.cache_breakpoints += 1

    def text_block(self, block: Mapping[str, Any], where: str) -> None:
        """Validate a text block."""
        _require_keys(block, where, ("type", "text", "cache_control", "citations"), ("text",))
        if not isinstance(block["text"], str):
            raise _fail(f"{where}.text: Input should be a valid string")
        if not block["text"]:
            raise _fail(f"{where}: text content blocks must be non-empty")
        self.cache_control(block, where)

    def image_block(self, block: Mapping[str, Any], where: str) -> None:
        """Validate an image block (counted as no text)."""
        _require_keys(block, where, ("type", "source", "cache_control"), ("source",))
        source = block["source"]
        if not isinstance(source, Mapping) or source.get("type") not in ("base64", "url"):
            raise _fail(f"{where}.source: Input should be a base64 or url image source")
        self.cache_control(block, where)

    def block(self, block: Any, where: str, role: str) -> tuple[str | None, str | None]:
        """Validate one content block; return (tool_use id, tool_result tool_use_id)."""
        if not isinstance(block, Mapping):
            raise _fail(f"{where}: Input should be a valid dictionary")
        kind = block.get("type")
        if kind == "text":
            self.text_block(block, where)
        elif kind == "image":
            self.image_block(block, where)
        elif kind == "tool_use":
            if role != "assistant":
                raise _fail(f"{where}: `tool_use` blocks can only be in `assistant` messages")
            _require_keys(block, where, ("type", "id", "name", "input", "cache_control"), ("id", "name", "input"))
            for key in ("id", "name"):
                if not isinstance(block[key], str) or not block[key]:
                    raise _fail(f"{where}.{key}: Input should be a non-empty string")
            if not isinstance(block["input"], Mapping):
                raise _fail(f"{where}.input: Input should be a valid dictionary")
            self.cache_control(block, where)
            return str(block["id"]), None
        elif kind == "tool_result":
            if role != "user":
                raise _fail(f"{where}: `tool_result` blocks can only be in `user` messages")
            _require_keys(block, where, ("type", "tool_use_id", "content", "is_error", "cache_control"), ("tool_use_id",))
            if not isinstance(block["tool_use_id"], str):
                raise _fail(f"{where}.tool_use_id: Input should be a valid string")
            content = block.get("content", "")
            if isinstance(content, list):
                for k, inner in enumerate(content):
                    inner_where = f"{where}.content.{k}"
                    if not isinstance(inner, Mapping) or inner.get("type") not in ("text", "image"):
                        raise _fail(f"{inner_where}: Input should be a text or image block")
                    (self.text_block if inner["type"] == "text" else self.image_block)(inner, inner_where)
            elif not isinstance(content, str):
                raise _fail(f"{where}.content: Input should be a valid string or a list of text blocks")
            if "is_error" in block and not isinstance(block["is_error"], bool):
                raise _fail(f"{where}.is_error: Input should be a valid boolean")
            self.cache_control(block, where)
            return None, str(block["tool_use_id"])
        else:
            raise _fail(
                f"{where}.type: Input tag {kind!r} found using 'type' does not match any of the expected tags: "
                "'text', 'image', 'tool_use', 'tool_result'"
            )
        return None, None

    def messages(self, messages: Any) -> None:
        """Validate the messages list: roles, alternation, content blocks and tool pairing."""
        if not isinstance(messages, list):
            raise _fail("messages: Input should be a valid list")
        if not messages:
            raise _fail("messages: at least one message is required")
        previous_role: str | None = None
        pending_tool_ids: list[str] = []
        for i, message in enumerate(messages):
            where = f"messages.{i}"
            if not isinstance(message, Mapping):
                raise _fail(f"{where}: Input should be a valid dictionary")
            role = message.get("role")
            if role == "system":
                raise _fail(
                    f'{where}.role: Unexpected role "system". The Messages API accepts a top-level `system` parameter, '
                    'not "system" as an input message role.'
                )
            if role not in ("user", "assistant"):
                raise _fail(f"{where}.role: Input should be 'user' or 'assistant'")
            _require_keys(message, where, ("role", "content"), ("content",))
            if i == 0 and role != "user":
                raise _fail('messages: first message must use the "user" role')
            if role == previous_role:
                raise _fail(
                    f'messages: roles must alternate between "user" and "assistant", but found multiple "{role}" roles in a row'
                )
            content = message["content"]
            final_assistant = role == "assistant" and i == len(messages) - 1
            tool_use_ids: list[str] = []
            tool_result_ids: list[tuple[int, str]] = []
            if isinstance(content, str):
                blocks: list[Any] = []
                empty = content == ""
            elif isinstance(content, list):
                blocks = content
                empty = not content
            else:
                raise _fail(f"{where}.content: Input should be a valid string or a list of content blocks")
            if empty and not final_assistant:
                raise _fail(f"{where}: all messages must have non-empty content except for the optional final assistant message")
            for j, block in enumerate(blocks):
                used, answered = self.block(block, f"{where}.content.{j}", role)
                if used is not None:
                    tool_use_ids.append(used)
                if answered is not None:
                    tool_result_ids.append((j, answered))
            for j, answered in tool_result_ids:
                if answered not in pending_tool_ids:
                    raise _fail(
                        f"{where}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {answered}. "
                        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                    )
            missing = [t for t in pending_tool_ids if t not in {answered for _, answered in tool_result_ids}]
            if missing:
                raise _fail(
                    f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block in the next message."
                )
            pending_tool_ids = tool_use_ids
            previous_role = role

    def system(self, system: Any) -> None:
        """Validate the top-level system prompt: a string or a list of text blocks."""
        if isinstance(system, str):
            return
        if not isinstance(system, list):
            raise _fail("system: Input should be a valid string or a list of text blocks")
        for j, block in enumerate(system):
            where = f"system.{j}"
            if not isinstance(block, Mapping) or block.get("type") != "text":
                raise _fail(f"{where}.type: Input should be 'text'")
            self.text_block(block, where)

    def tools(self, tools: Any) -> list[str]:
        """Validate the tool definitions; return their names."""
        if not isinstance(tools, list):
            raise _fail("tools: Input should be a valid list")
        names: list[str] = []
        for k, tool in enumerate(tools):
            where = f"tools.{k}"
            if not isinstance(tool, Mapping):
                raise _fail(f"{where}: Input should be a valid dictionary")
            if "type" in tool and tool["type"] not in ("custom", None):
                raise _fail(f"{where}.type: Input should be 'custom'")
            _require_keys(tool, where, ("name", "description", "input_schema", "cache_control", "type"), ("name", "input_schema"))
            name = tool["name"]
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
                raise _fail(f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
            if "description" in tool and not isinstance(tool["description"], str):
                raise _fail(f"{where}.description: Input should be a valid string")
            schema = tool["input_schema"]
            if not isinstance(schema, Mapping):
                raise _fail(f"{where}.input_schema: Input should be a valid dictionary")
            if schema.get("type") != "object":
                raise _fail(f"{where}.input_schema.type: Input should be 'object'")
            if name in names:
                raise _fail("tools: Tool names must be unique.")
            names.append(name)
            self.cache_control(tool, where)
        return names

    @staticmethod
    def tool_choice(choice: Any, tool_names: list[str]) -> None:
        """Validate tool_choice against the declared tools."""
        if not isinstance(choice, Mapping):
            raise _fail("tool_choice: Input should be a valid dictionary")
        kind = choice.get("type")
        if kind in ("auto", "any"):
            _require_keys(choice, "tool_choice", ("type", "disable_parallel_tool_use"), ())
        elif kind == "none":
            _require_keys(choice, "tool_choice", ("type",), ())
        elif kind == "tool":
            _require_keys(choice, "tool_choice", ("type", "name", "disable_parallel_tool_use"), ("name",))
        else:
            raise _fail(
                f"tool_choice.type: Input tag {kind!r} found using 'type' does not match any of the expected tags: "
                "'auto', 'any', 'tool', 'none'"
            )
        if "disable_parallel_tool_use" in choice and not isinstance(choice["disable_parallel_tool_use"], bool):
            raise _fail("tool_choice.disable_parallel_tool_use: Input should be a valid boolean")
        if kind in ("any", "tool") and not tool_names:
            raise _fail("tool_choice: tool_choice may only be specified while providing tools")
        if kind == "tool" and choice["name"] not in tool_names:
            raise _fail(f"tool_choice.name: Tool {choice['name']!r} not found in the provided tools")

    def body(self, body: Mapping[str, Any]) -> None:
        """Validate a whole request body."""
        for key in body:
            if key not in ALLOWED_FIELDS:
                raise _fail(f"{key}: Extra inputs are not permitted")
        for key in ("model", "max_tokens", "messages"):
            if key not in body:
                raise _fail(f"{key}: Field required")
        if not isinstance(body["model"], str) or not body["model"]:
            raise _fail("model: Input should be a non-empty string")
        max_tokens = body["max_tokens"]
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise _fail("max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise _fail("max_tokens: Input should be greater than or equal to 1")
        if "system" in body:
            self.system(body["system"])
        self.messages(body["messages"])
        if "stop_sequences" in body:
            stops = body["stop_sequences"]
            if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
                raise _fail("stop_sequences: Input should be a valid list of strings")
        tool_names = self.tools(body["tools"]) if "tools" in body else []
        if "tool_choice" in body:
            self.tool_choice(body["tool_choice"], tool_names)
        if "metadata" in body:
            metadata = body["metadata"]
            if not isinstance(metadata, Mapping):
                raise _fail("metadata: Input should be a valid dictionary")
            _require_keys(metadata, "metadata", ("user_id",), ())
            if metadata.get("user_id") is not None and not isinstance(metadata["user_id"], str):
                raise _fail("metadata.user_id: Input should be a valid string")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise _fail("stream: Input should be a valid boolean")
        if self.cache_breakpoints > MAX_CACHE_BREAKPOINTS:
            raise _fail(
                f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {self.cache_breakpoints}."
            )


def validation_error(body: Mapping[str, Any]) -> str | None:
    """Anthropic's 400 message for an invalid Messages request body, or None when the body is valid."""
    try:
        _Validator().body(body)
    except _Invalid as exc:
        return str(exc)
    return None


# ---- answers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """Everything a message answer contains, computed before any byte is sent."""

    message_id: str
    model: str
    text: str
    tool: dict[str, Any] | None
    tool_json: str
    stop_reason: str
    stop_sequence: str | None
    stop_details: dict[str, Any] | None
    usage: dict[str, Any]

    def content(self) -> list[dict[str, Any]]:
        """The content blocks of the complete message."""
        blocks: list[dict[str, Any]] = []
        if self.text:
            blocks.append({"type": "text", "text": self.text})
        if self.tool is not None:
            blocks.append(self.tool)
        return blocks

    def message(self) -> dict[str, Any]:
        """The complete non-streamed message object."""
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.content(),
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "stop_details": self.stop_details,
            "usage": self.usage,
        }


def _cut_words(text: str, limit: int) -> tuple[str, bool]:
    """Cut ``text`` after ``limit`` words, keeping its spacing; return (text, was_cut)."""
    words = list(_WORD.finditer(text))
    if len(words) <= limit:
        return text, False
    return text[: words[limit - 1].end()], True


def _word_pieces(text: str) -> list[str]:
    """Split ``text`` into one piece per word (leading whitespace kept) that concatenate back to it."""
    ends = [m.end() for m in _WORD.finditer(text)]
    if not ends:
        return [text] if text else []
    pieces = [text[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]
    pieces[-1] += text[ends[-1]:]
    return pieces


def _json_pieces(text: str) -> list[str]:
    """Split tool input JSON into at least two partial_json pieces."""
    pieces = _word_pieces(text)
    if len(pieces) >= 2:
        return pieces
    middle = max(1, len(text) // 2)
    return [text[:middle], text[middle:]]


def _compose(body: Mapping[str, Any], behaviour: Behaviour, ids: itertools.count[int]) -> _Answer:
    """Compute the answer to an accepted request; raise ValueError when its cache counts are impossible."""
    model: str = body["model"]
    limit: int = body["max_tokens"]
    stops = [s for s in body.get("stop_sequences") or [] if s]
    kind = behaviour.kind
    tool: dict[str, Any] | None = None
    tool_json = ""
    stop_sequence: str | None = None
    stop_details: dict[str, Any] | None = None
    if kind == "spend_all":
        text, output_tokens, stop_reason = " ".join(["tok"] * limit), limit, "max_tokens"
    else:
        if kind in ("reply", "tool_use", "refusal"):
            full = behaviour.text or ""
        elif behaviour.text is not None:
            full = behaviour.text
        else:
            last_user: Mapping[str, Any] = next((m for m in reversed(body["messages"]) if m.get("role") == "user"), {})
            full = f"[FAKE-ANTHROPIC:{model}] " + message_text(last_user)
        hits = [(full.find(s), n, s) for n, s in enumerate(stops) if s in full]
        first_hit = min(hits) if hits else None
        text = full[: first_hit[0]] if first_hit else full
        text, was_cut = _cut_words(text, limit)
        output_tokens = len(_WORD.findall(text))
        if was_cut:
            stop_reason = "max_tokens"
        elif first_hit is not None:
            stop_reason, stop_sequence = "stop_sequence", first_hit[2]
        elif kind == "tool_use":
            tool_json = behaviour.tool_input_json or "{}"
            tool_words = max(1, len(_WORD.findall(tool_json)))
            if output_tokens + tool_words > limit:
                output_tokens, stop_reason = limit, "max_tokens"
            else:
                output_tokens += tool_words
                stop_reason = "tool_use"
                tool = {
                    "type": "tool_use",
                    "id": f"toolu_fake_{next(ids):06d}",
                    "name": behaviour.tool_name,
                    "input": json.loads(tool_json),
                }
        elif kind == "refusal":
            stop_reason = "refusal"
            stop_details = {"type": "refusal", "category": None, "explanation": None}
        else:
            stop_reason = "end_turn"

    total = count_input_tokens(body)
    cached = behaviour.cache_read + behaviour.cache_write_5m + behaviour.cache_write_1h
    if cached > total:
        raise ValueError(f"cache tokens ({cached}) exceed the request's total input tokens ({total})")
    usage = {
        "input_tokens": total - cached,
        "cache_creation_input_tokens": behaviour.cache_write_5m + behaviour.cache_write_1h,
        "cache_read_input_tokens": behaviour.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": behaviour.cache_write_5m,
            "ephemeral_1h_input_tokens": behaviour.cache_write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }
    return _Answer(
        message_id=f"msg_fake_{next(ids):06d}",
        model=model,
        text=text,
        tool=tool,
        tool_json=tool_json,
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        stop_details=stop_details,
        usage=usage,
    )


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    """One server-sent event in Anthropic's framing."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _stream_events(answer: _Answer) -> tuple[list[bytes], list[int]]:
    """The SSE events of a full streamed answer, and the index just past the ping and past each delta."""
    start_message = {**answer.message(), "content": [], "stop_reason": None, "stop_sequence": None, "stop_details": None}
    start_message["usage"] = {**answer.usage, "output_tokens": 1}
    events = [_sse("message_start", {"type": "message_start", "message": start_message})]
    marks: list[int] = []
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if answer.text:
        deltas = [{"type": "text_delta", "text": piece} for piece in _word_pieces(answer.text)]
        blocks.append(({"type": "text", "text": ""}, deltas))
    if answer.tool is not None:
        pieces = _json_pieces(answer.tool_json) if answer.tool["input"] else [""]
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
        blocks.append(({**answer.tool, "input": {}}, deltas))
    for index, (opening, deltas) in enumerate(blocks):
        events.append(_sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}))
        if index == 0:
            events.append(_sse("ping", {"type": "ping"}))
            marks.append(len(events))
        for delta in deltas:
            events.append(_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
            marks.append(len(events))
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    if not blocks:
        events.append(_sse("ping", {"type": "ping"}))
        marks.append(len(events))
    delta_body = {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence, "stop_details": answer.stop_details}
    usage = {"output_tokens": answer.usage["output_tokens"]}
    events.append(_sse("message_delta", {"type": "message_delta", "delta": delta_body, "usage": usage}))
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events, marks


def _error_body(error_type: str, message: str, request_id: str, error_code: str | None = None) -> dict[str, Any]:
    """Anthropic's error JSON."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return {"type": "error", "error": error, "request_id": request_id}


# ---- HTTP server ---------------------------------------------------------------------------------


class _Handler(FakeHandler):
    """Request handler implementing the fake Messages endpoint."""

    server_version = "FakeAnthropic/1.0"
    server: FakeServer[FakeAnthropic]

    def _recorded(self, headers: dict[str, str], body: dict[str, Any] | None, raw: bytes) -> RecordedRequest:
        """This request as a RecordedRequest."""
        return RecordedRequest(self.path, headers, body, self.command, raw)

    def _start(self, code: int, content_type: str, request_id: str, headers: Mapping[str, str]) -> None:
        """Send the status line and headers common to every response."""
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("request-id", request_id)
        for name, value in headers.items():
            self.send_header(name, value)
        if self._wants_close() or self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _send(
        self,
        code: int,
        payload: bytes,
        request_id: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send a complete JSON response with an exact Content-Length."""
        headers = {"Content-Length": str(len(payload)), **(extra_headers or {})}
        self._start(code, "application/json", request_id or self.server.fake._next_id("req_fake_"), headers)
        self.wfile.write(payload)
        self.wfile.flush()

    def _send_error(
        self,
        code: int,
        message: str | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send an Anthropic-shaped error whose request_id matches the request-id header."""
        default_type = "api_error" if code >= 500 else "invalid_request_error"
        known_type, default_message = _ERROR_TYPES.get(code, (default_type, f"Error {code} (scripted by FakeAnthropic)."))
        request_id = self.server.fake._next_id("req_fake_")
        body = _error_body(error_type or known_type, message or default_message, request_id, error_code)
        self._send(code, json.dumps(body).encode("utf-8"), request_id, extra_headers)

    def _authorized(self) -> bool:
        """True when x-api-key or the bearer token carries the fake's key."""
        key = self.server.fake.api_key
        if self.headers.get("x-api-key", "").strip() == key:
            return True
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token.strip() == key

    def _has_credentials(self) -> bool:
        """True when the request carries any credential header."""
        return bool(self.headers.get("x-api-key") or self.headers.get("Authorization"))

    # ---- routing -------------------------------------------------------------

    def _send_framing_error(self) -> None:
        """Answer a broken body framing with an Anthropic-shaped 400."""
        self._send_error(400, "Malformed request body framing.")

    def do_GET(self) -> None:
        """No GET endpoint exists: 404."""
        raw = self._read_body_or_400()
        if raw is None:
            return
        self._record(raw)
        self._send_error(404)

    def do_POST(self) -> None:
        """Route POST requests."""
        raw = self._read_body_or_400()
        if raw is None:
            return
        body = self._record(raw)
        route = self.path.split("?", 1)[0].rstrip("/")
        if route != MESSAGES_PATH:
            self._send_error(404)
            return
        if not self._authorized():
            self._send_error(401, None if self._has_credentials() else "x-api-key header is required")
            return
        if not self.headers.get("anthropic-version", "").strip():
            self._send_error(400, "anthropic-version: header is required")
            return
        if body is None:
            self._send_error(400, "There was an error parsing the body of your request: it must be a JSON object.")
            return
        problem = validation_error(body)
        if problem is not None:
            self._send_error(400, problem)
            return
        behaviour = self.server.fake._take_behaviour()
        try:
            self._answer(body, behaviour)
        except (TimeoutError, ConnectionError):
            raise
        except Exception as exc:  # noqa: BLE001 - a scripting error or a bug in the fake: make it loud but keep serving
            traceback.print_exc(file=sys.stderr)
            self._send_error(500, f"FakeAnthropic internal error: {type(exc).__name__}: {exc}")

    # ---- answers -------------------------------------------------------------

    def _answer(self, body: dict[str, Any], behaviour: Behaviour) -> None:
        """Answer one accepted request according to ``behaviour``."""
        fake = self.server.fake
        while behaviour.kind == "slow":
            if fake._closing.wait(behaviour.seconds):
                self.close_connection = True
                return
            behaviour = behaviour.then or Behaviour.ok()

        stream = body.get("stream") is True
        if behaviour.kind == "status":
            headers = {"retry-after": str(behaviour.retry_after)} if behaviour.retry_after is not None else {}
            self._send_error(behaviour.status_code, behaviour.message, behaviour.error_type, behaviour.error_code, headers)
            return
        if behaviour.kind == "malformed":
            if stream:
                self._stream([b"event: message_start\ndata: {this is not json\n\n"])
            else:
                self._send(200, MALFORMED_BODY)
            return

        answer = _compose(body, behaviour, fake._ids)
        if behaviour.kind == "invalid_message":
            message = {**answer.message(), "content": None}
            if stream:
                delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 0}}
                self._stream([
                    _sse("message_start", {"type": "message_start", "message": {**message, "stop_reason": None}}),
                    _sse("message_delta", delta),
                    _sse("message_stop", {"type": "message_stop"}),
                ])
            else:
                self._send_json(200, message)
            return
        if behaviour.kind == "stream_error" and not stream:
            error_type = behaviour.error_type or "overloaded_error"
            self._send_error(_STATUS_OF_TYPE.get(error_type, 500), None, error_type)
            return
        if behaviour.kind == "invalid_utf8" and not stream:
            message = {**answer.message(), "content": [{"type": "text", "text": "@"}]}
            self._send(200, json.dumps(message).encode("utf-8").replace(b'"@"', b'"' + NOT_UTF8 + b'"'))
            return
        if behaviour.kind == "cut_stream" and not stream:
            payload = json.dumps(answer.message()).encode("utf-8")
            self._start(200, "application/json", fake._next_id("req_fake_"), {"Content-Length": str(len(payload))})
            self.wfile.write(payload[: len(payload) // 2])
            self._drop_connection()
            return
        if not stream:
            self._send_json(200, answer.message())
            return

        events, marks = _stream_events(answer)
        if behaviour.kind in ("stream_error", "cut_stream", "invalid_utf8"):
            cut = marks[min(behaviour.after_deltas, len(marks) - 1)]
            events = events[:cut]
        if behaviour.kind == "invalid_utf8":
            if behaviour.at_start:
                events = [events[0].replace(b'"role": "assistant"', b'"role": "assistant' + NOT_UTF8 + b'"')]
            else:
                bad = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "@"}}
                events.append(_sse("content_block_delta", bad).replace(b'"@"', b'"' + NOT_UTF8 + b'"'))
            self._stream(events)
            return
        if behaviour.kind == "stream_error":
            error_type = behaviour.error_type or "overloaded_error"
            request_id = fake._next_id("req_fake_")
            default_message = _ERROR_TYPES[_STATUS_OF_TYPE.get(error_type, 500)][1]
            events.append(_sse("error", _error_body(error_type, default_message, request_id)))
            self.close_connection = True
            self._stream(events, request_id)
        elif behaviour.kind == "cut_stream":
            self._stream(events, terminate=False)
            self._drop_connection()
        else:
            self._stream(events)

    def _send_json(self, code: int, obj: Any) -> None:
        """Send ``obj`` as a JSON response."""
        self._send(code, json.dumps(obj, ensure_ascii=False).encode("utf-8"))

    def _drop_connection(self) -> None:
        """Flush what was written and close the socket mid-response."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _stream(self, events: list[bytes], request_id: str | None = None, terminate: bool = True) -> None:
        """Send ``events`` as a text/event-stream body (chunked; close-delimited for HTTP/1.0)."""
        chunked = self.request_version != "HTTP/1.0"
        headers = {"Cache-Control": "no-cache"}
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            self.close_connection = True
        self._start(200, "text/event-stream; charset=utf-8", request_id or self.server.fake._next_id("req_fake_"), headers)
        for event in events:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event) if chunked else event)
            self.wfile.flush()
        if chunked and terminate:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()


class FakeAnthropic(FakeService[Behaviour, RecordedRequest]):
    """Local fake of Anthropic's Messages API on 127.0.0.1; starts serving on construction."""

    def __init__(self, api_key: str = "sk-ant-test-fake") -> None:
        """Bind 127.0.0.1 on an ephemeral port and serve in a daemon thread."""
        self.api_key: str = api_key
        super().__init__(_Handler, Behaviour.ok())

    # ---- addresses -----------------------------------------------------------

    @property
    def url(self) -> str:
        """Root URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """Anthropic SDK base URL (the root URL: the SDK appends ``/v1/messages``)."""
        return self.url

    # ---- recording -----------------------------------------------------------

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """Snapshot of the recorded POSTs to /v1/messages."""
        return [r for r in self.requests if r.method == "POST" and r.path.split("?", 1)[0].rstrip("/") == MESSAGES_PATH]

    def __repr__(self) -> str:
        """Show the address."""
        return f"FakeAnthropic({self.base_url!r})"
