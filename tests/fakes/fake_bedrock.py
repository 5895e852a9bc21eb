"""A local fake of the Amazon Bedrock runtime Converse API, for tests and benchmarks.

moto does not implement Converse, so ``FakeBedrock`` speaks its wire format
itself: a stdlib ``ThreadingHTTPServer`` on ``127.0.0.1`` (an ephemeral port)
in a daemon thread.  Point the real boto3 client at it with
``boto3.client("bedrock-runtime", endpoint_url=fake.endpoint_url)`` or with
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME=fake.endpoint_url``.  It speaks HTTP/1.1
with keep-alive: non-streamed responses carry an exact ``Content-Length``,
streamed ones use chunked transfer encoding with one event-stream frame per
chunk (close-delimited for HTTP/1.0 clients), and ``Connection: close`` is
honoured.  The wire details follow botocore 1.44.8's own service model
(``bedrock-runtime`` 2023-09-30) and parsers.

Endpoints
---------
``POST /model/{modelId}/converse`` and ``POST /model/{modelId}/converse-stream``
    botocore percent-encodes the model id as a plain (non-greedy) URI label:
    only ``A-Z a-z 0-9 - . _ ~`` stay literal, so ``:`` becomes ``%3A`` and
    ``/`` becomes ``%2F`` (an inference-profile ARN stays ONE path segment).
    The fake splits the raw path first and percent-decodes the id afterwards.
Anything else (other paths or methods)
    404 ``UnknownOperationException``.

Then, in this order:

1. Signing.  A request needs ``Authorization: AWS4-HMAC-SHA256
   Credential=<key id>/<yyyymmdd>/<region>/<service>/aws4_request,
   SignedHeaders=..., Signature=<hex>`` and an ``X-Amz-Date`` header; the
   signature's value is NOT verified.  Without an ``Authorization`` header the
   answer is what real Bedrock sends: 403, ``x-amzn-ErrorType:
   AccessDeniedException:http://internal.amazon.com/coral/com.amazon.coral.service/``,
   body ``{"Message": "Authorization header is missing"}`` (capital ``M``,
   as AWS's front end writes it; botocore reads either).  Another scheme, such
   as the ``Bearer`` API keys real Bedrock also accepts, is refused the same
   way: the code under test must sign with SigV4.  A SigV4 header missing a
   part, or a request without ``X-Amz-Date``, is 400
   ``IncompleteSignatureException``; a credential scoped to a service other
   than ``bedrock`` is 403 ``InvalidSignatureException``.  Use
   :func:`signing_info` to assert the key id, region and service.  (With
   ``AWS_BEARER_TOKEN_BEDROCK`` set, botocore 1.44.8 switches to bearer auth
   and refuses a plain-http endpoint before sending anything, raising
   ``InvalidEndpointConfigurationError``: keep that variable out of tests.)
2. The body, validated as Converse does (400 ``ValidationException`` whose
   message names the field): top level only ``messages``, ``system``,
   ``inferenceConfig``, ``toolConfig`` (the other members of botocore's
   ``ConverseRequest``, e.g. ``additionalModelRequestFields`` or
   ``guardrailConfig``, are accepted when they have the right JSON type, and
   ignored; anything else is refused).  ``messages``: a non-empty list of
   ``{"role", "content"}``, roles ``user``/``assistant``, the first ``user``,
   no two consecutive messages of the same role.  ``content``: a non-empty list
   of blocks, each exactly one of ``text`` (not blank), ``toolUse``
   (``toolUseId``, ``name``, ``input`` object; assistant only), ``toolResult``
   (``toolUseId``, ``content`` list of ``{"text"}``/``{"json"}``, optional
   ``status`` ``success``/``error``; user only; its id must be a ``toolUse`` of
   the preceding assistant message) or ``cachePoint`` (``{"type": "default"}``,
   optional ``ttl`` ``5m``/``1h``).  As real Bedrock does, a user message that
   follows an assistant ``toolUse`` must carry a ``toolResult`` for every such
   id, and ``toolUse``/``toolResult`` blocks need a ``toolConfig``.
   ``system``: a list of ``{"text"}`` / ``{"cachePoint"}``.  ``inferenceConfig``:
   only ``maxTokens`` (int >= 1), ``temperature`` and ``topP`` (numbers in
   [0, 1]), ``stopSequences`` (list of non-empty strings).  ``toolConfig``:
   ``tools`` (non-empty list of ``{"toolSpec": {"name", "description"?,
   "inputSchema": {"json": {...}}, "strict"?}}`` or ``{"cachePoint"}``; names
   unique) and optional ``toolChoice`` (exactly one of ``{"auto": {}}``,
   ``{"any": {}}``, ``{"tool": {"name"}}`` naming a defined tool).
3. The next scripted :class:`Behaviour` (see below).

Errors
------
Every error is its HTTP status, ``x-amzn-ErrorType: <Code>:<namespace URL>``
and a JSON body ``{"message": "..."}`` (``{"Message"}`` for the signing
refusals), with ``x-amzn-RequestId``.  A body that is not a JSON object is a
``ValidationException``; broken request framing is 400
``SerializationException`` and closes the connection.  That is the
form real Bedrock sends (``ValidationException:http://internal.amazon.com/
coral/com.amazon.bedrock/``); botocore's rest-json parser keeps the part
before the first ``:`` (and after a ``#``), so the plain code works too, and
``ClientError.response["Error"]["Code"]`` is the bare code either way.  The
codes of :func:`error`: ThrottlingException 429, ModelNotReadyException 429,
ServiceUnavailableException 503, InternalServerException 500,
ModelTimeoutException 408, ModelErrorException 424, ValidationException 400,
AccessDeniedException 403, ResourceNotFoundException 404.

Token accounting (deterministic, so tests can assert exact numbers)
-------------------------------------------------------------------
``canonical_json(v)`` is ``json.dumps(v, ensure_ascii=False)`` (Python's
default separators ``", "`` and ``": "``, keys in the order received).  The
total input, :func:`count_input_tokens`, is::

    3 + sum(4 + bytes(m) for m in messages) + bytes(system) + bytes(tools)

where ``bytes`` is a UTF-8 length: of each ``text`` block; of
``canonical_json(toolUse.input)``; of each ``text`` and
``canonical_json(json)`` inside a ``toolResult``; of the ``text`` blocks of
``system``; and of ``canonical_json(toolConfig.tools)`` when a ``toolConfig``
is present.  ``cachePoint`` blocks, names and ids count nothing.

``usage.inputTokens`` is that total, unless the behaviour declares cache use
with ``cache_read=N`` / ``cache_write=M`` (``ok``, ``reply``, ``spend_all`` and
``tool_use`` accept both).  Then ``cacheReadInputTokens = N``,
``cacheWriteInputTokens = M`` (an omitted one of the two is 0) and
``inputTokens = max(0, total - N - M)``: Converse's ``inputTokens`` EXCLUDES
cache reads and writes.  Without declared cache use both cache fields are
OMITTED, as Bedrock does for models without prompt caching (botocore's
``TokenUsage`` makes them optional), so a reader must treat absent as 0.
``totalTokens = inputTokens + N + M + outputTokens``.

``outputTokens`` is the number of whitespace-separated words of the answer:

* The first ``inferenceConfig.stopSequences`` entry found in a text answer
  (earliest position) cuts the answer just before it: ``stop_sequence``.
* Then, with ``maxTokens``, an answer with more words is cut after
  ``maxTokens`` words (keeping the original spacing): ``max_tokens``.  Without
  ``maxTokens`` there is no cap.
* ``tool_use``: the optional text counts as above, the tool call adds the
  words of ``canonical_json(input)`` (at least 1).  If the text was cut, or
  text plus call exceed ``maxTokens``, the call is dropped (a truncated call
  is useless), ``outputTokens = min(total words, maxTokens)`` and the stop
  reason is the text's or ``max_tokens``.
* ``spend_all``: exactly ``maxTokens`` (default 4096) words ``"tok"``,
  ``max_tokens``; stop sequences are ignored.

``metrics.latencyMs`` is the real time the fake took (including ``slow``).

Scripting
---------
Each signed, valid request consumes one behaviour from a FIFO queue
(:meth:`FakeBedrock.enqueue`); when it is empty the default
(:meth:`FakeBedrock.set_default`, initially :func:`ok`) is used.  Requests the
fake refuses itself (404, signing, validation) consume nothing.  Behaviours:

* ``ok(cache_read=None, cache_write=None)``: ``"[FAKE-BEDROCK:<modelId>] "`` +
  the text of the last user message, ``end_turn``.
* ``reply(text, cache_read=None, cache_write=None)``: that text, ``end_turn``.
* ``spend_all(cache_read=None, cache_write=None)``: see above.
* ``tool_use(name, input, text=None, tool_use_id=None, cache_read=None,
  cache_write=None, input_deltas=True)``: ``[{"text"}?, {"toolUse"}]``,
  ``tool_use``; the id defaults to ``tooluse_fake_NNNNNN``.  Streamed with
  ``input_deltas=False``, the tool use gets no input delta at all (as Bedrock
  may send a tool use without input).
* ``guardrail(text=GUARDRAIL_TEXT)``: ``guardrail_intervened``;
  ``content_filtered(text=CONTENT_FILTERED_TEXT)``: ``content_filtered``.
* ``error(code, message=None)``: the JSON error, also before a stream starts.
* ``slow(seconds, then=ok())``: wait, then behave as ``then``.
* ``malformed()``: non-streamed, 200 ``application/json`` whose body is
  truncated JSON; streamed, a valid ``messageStart`` frame then a frame whose
  message CRC is wrong.
* ``stream_exception(after_deltas, exception="throttlingException",
  message=None)``: the ``ok`` answer's first ``after_deltas`` text deltas (padded
  with ``" tok"`` deltas if it has fewer words), then an exception frame, then
  a cleanly ended HTTP body.  On a non-streamed request: the matching JSON
  error (``throttlingException`` -> ``ThrottlingException`` 429, ...).
* ``invalid_utf8(after_deltas=0)``: non-streamed, a 200 answer whose text holds
  the byte ``0xFF`` (not UTF-8); streamed, ``messageStart`` and ``after_deltas``
  text deltas (as ``stream_exception``), then a ``contentBlockDelta`` frame
  whose payload holds that byte, then a cleanly ended body.
* ``cut_stream(after_deltas, graceful=False)``: ``messageStart`` and the
  deltas, then the connection is dropped (no ``contentBlockStop``,
  ``messageStop`` or ``metadata``, no terminating chunk); with
  ``graceful=True`` the HTTP body is ended properly instead.  On a
  non-streamed request: the headers with the full ``Content-Length``, half
  the body, then the connection is dropped.

Streams
-------
``Content-Type: application/vnd.amazon.eventstream``.  A frame is
``[total u32][headers length u32][crc32 of those 8 bytes][headers][payload]
[crc32 of everything before]``; a header is ``[name length u8][name][7][value
length u16][value]`` (see :func:`encode_event_frame`).  Events carry
``:event-type``, ``:content-type: application/json`` and ``:message-type:
event``, in Converse's order: ``messageStart {"role": "assistant"}``; per
content block, ``contentBlockStart {"start": {"toolUse": {"toolUseId",
"name"}}, "contentBlockIndex"}`` for tool use only (Bedrock sends none for
text), ``contentBlockDelta`` (``{"text"}``, one word per delta with its leading
spacing; or ``{"toolUse": {"input": <partial JSON>}}`` in 2 or 3 pieces, or
none for ``tool_use(..., input_deltas=False)``),
``contentBlockStop``; then ``messageStop {"stopReason"}`` and ``metadata
{"usage", "metrics": {"latencyMs"}}``.  Exception frames carry ``:message-type:
exception``, ``:exception-type: <lowerCamel name>``, ``:content-type:
application/json`` and payload ``{"message"}``.

What botocore 1.44.8 does with these
------------------------------------
* Exception frame: ``botocore.exceptions.EventStreamError`` while iterating,
  after the earlier events were yielded, ``Error.Code`` = the lowerCamel name
  (e.g. ``throttlingException``).  ``modelTimeoutException`` is NOT a member
  of ``ConverseStreamOutput`` in this model, so botocore cannot match it: the
  error still raises, but with ``Error.Code == ""`` and ``Message == ""``.
* ``cut_stream()``: after the earlier events were yielded, iteration raises
  ``urllib3.exceptions.ProtocolError("Response ended prematurely")`` raw: not a
  botocore exception, and not a ``ClientError``.  ``cut_stream(graceful=True)``:
  the iteration just ENDS, quietly, without ``messageStop``/``metadata``, so
  the caller must notice the missing usage itself.  Non-streamed: NO exception
  either, because botocore reads bodies with ``enforce_content_length=False``:
  the half body is unparsable JSON and ``converse`` returns only
  ``ResponseMetadata``, exactly as for ``malformed()``.
* ``malformed()`` non-streamed: NO exception.  botocore's JSON parser turns an
  unparsable body into ``{"message": <text>}``, which has no member of
  ``ConverseResponse``, so ``converse`` returns only ``ResponseMetadata``
  (no ``output``, ``stopReason`` or ``usage``).  Streamed: iteration raises
  ``botocore.eventstream.ChecksumMismatch`` after ``messageStart``.
* ``invalid_utf8()``: botocore decodes bodies and event payloads as strict
  UTF-8, so ``converse`` raises ``UnicodeDecodeError`` (unwrapped) and a stream
  raises it while iterating, after the earlier events.
* ``slow(s)`` with a shorter ``read_timeout``: ``botocore.exceptions.ReadTimeoutError``.

Recording
---------
Every request (any path and outcome) is appended to :attr:`FakeBedrock.requests`
as a :class:`RecordedRequest` (raw path, decoded model id and operation when
the path is a Converse one, lower-cased headers, JSON-object body or None).
:meth:`FakeBedrock.reset` clears the record and the queue and restores the
default behaviour to :func:`ok`.
"""

from __future__ import annotations

import binascii
import json
import math
import re
import socket
import struct
import sys
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from tests.fakes.fakehttp import FakeHandler, FakeServer, FakeService

__all__ = [
    "CONTENT_FILTERED_TEXT",
    "DEFAULT_SPEND_ALL_TOKENS",
    "ERROR_STATUS",
    "GUARDRAIL_TEXT",
    "STREAM_EXCEPTIONS",
    "Behaviour",
    "BehaviourKind",
    "FakeBedrock",
    "RecordedRequest",
    "canonical_json",
    "content_filtered",
    "count_input_tokens",
    "cut_stream",
    "encode_event_frame",
    "error",
    "guardrail",
    "invalid_utf8",
    "malformed",
    "ok",
    "reply",
    "signing_info",
    "slow",
    "spend_all",
    "stream_exception",
    "tool_use",
]

BehaviourKind = Literal[
    "ok",
    "reply",
    "spend_all",
    "tool_use",
    "guardrail",
    "content_filtered",
    "error",
    "slow",
    "malformed",
    "stream_exception",
    "cut_stream",
    "invalid_utf8",
]
Operation = Literal["converse", "converse-stream"]

#: Output words produced by ``spend_all()`` when the request sets no ``maxTokens``.
DEFAULT_SPEND_ALL_TOKENS: int = 4096

#: Default answer of ``guardrail()`` (the Bedrock console's default blocked message).
GUARDRAIL_TEXT: str = "Sorry, the model cannot answer this question."

#: Default answer of ``content_filtered()``.
CONTENT_FILTERED_TEXT: str = "[FAKE-BEDROCK] The response was filtered."

#: Error codes accepted by ``error()`` and their HTTP status (botocore's bedrock-runtime model).
ERROR_STATUS: dict[str, int] = {
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "ServiceUnavailableException": 503,
    "InternalServerException": 500,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
}

#: Exception names accepted by ``stream_exception()`` -> (code, status) of the non-streamed equivalent.
STREAM_EXCEPTIONS: dict[str, tuple[str, int]] = {
    "throttlingException": ("ThrottlingException", 429),
    "modelStreamErrorException": ("ModelStreamErrorException", 424),
    "internalServerException": ("InternalServerException", 500),
    "serviceUnavailableException": ("ServiceUnavailableException", 503),
    "validationException": ("ValidationException", 400),
    "modelTimeoutException": ("ModelTimeoutException", 408),
}

# Namespaces real Bedrock appends to x-amzn-ErrorType: its own errors, and the front end's (auth, routing).
_BEDROCK_NS = "http://internal.amazon.com/coral/com.amazon.bedrock/"
_CORAL_NS = "http://internal.amazon.com/coral/com.amazon.coral.service/"

MALFORMED_BODY: bytes = b'{"output": {"message": {"role": "assistant", "content": [{"text": "trunc'

# A byte that is never part of UTF-8.
NOT_UTF8: bytes = b"\xff"

_WORD = re.compile(r"\S+")
_PATH = re.compile(r"^/model/([^/]+)/(converse|converse-stream)$")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_.:-]{1,64}$")
_SIGV4 = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request,\s*SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]+)$"
)

# Members of botocore's ConverseRequest besides the four the fake validates (modelId is in the path):
# accepted with their JSON type and ignored.
_IGNORED_FIELDS: dict[str, type] = {
    "guardrailConfig": dict,
    "additionalModelRequestFields": dict,
    "promptVariables": dict,
    "additionalModelResponseFieldPaths": list,
    "requestMetadata": dict,
    "performanceConfig": dict,
    "serviceTier": dict,
    "outputConfig": dict,
    "projectIdentifier": str,
}


def _check_cache(cache_read: int | None, cache_write: int | None) -> None:
    """Refuse negative or non-integer cache counts."""
    for name, value in (("cache_read", cache_read), ("cache_write", cache_write)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")


@dataclass(frozen=True)
class Behaviour:
    """One scripted way of answering a Converse request; build it with the helpers."""

    kind: BehaviourKind
    text: str | None = None
    tool_name: str | None = None
    tool_input_json: str | None = None
    tool_use_id: str | None = None
    code: str | None = None
    message: str | None = None
    seconds: float = 0.0
    then: Behaviour | None = None
    after_deltas: int = 0
    exception: str | None = None
    graceful: bool = False
    cache_read: int | None = None
    cache_write: int | None = None
    input_deltas: bool = True

    @staticmethod
    def ok(cache_read: int | None = None, cache_write: int | None = None) -> Behaviour:
        """Normal answer ``"[FAKE-BEDROCK:<modelId>] "`` + last user text, ``end_turn``."""
        _check_cache(cache_read, cache_write)
        return Behaviour("ok", cache_read=cache_read, cache_write=cache_write)

    @staticmethod
    def reply(text: str, cache_read: int | None = None, cache_write: int | None = None) -> Behaviour:
        """Normal answer with fixed ``text`` (still cut by stop sequences and ``maxTokens``)."""
        _check_cache(cache_read, cache_write)
        return Behaviour("reply", text=text, cache_read=cache_read, cache_write=cache_write)

    @staticmethod
    def spend_all(cache_read: int | None = None, cache_write: int | None = None) -> Behaviour:
        """Exactly ``maxTokens`` (default 4096) words ``"tok"``, stop reason ``max_tokens``."""
        _check_cache(cache_read, cache_write)
        return Behaviour("spend_all", cache_read=cache_read, cache_write=cache_write)

    @staticmethod
    def tool_use(
        name: str,
        input: Mapping[str, Any],
        text: str | None = None,
        tool_use_id: str | None = None,
        cache_read: int | None = None,
        cache_write: int | None = None,
        input_deltas: bool = True,
    ) -> Behaviour:
        """Answer with one tool call (after optional ``text``), stop reason ``tool_use``; streamed without input
        deltas when ``input_deltas`` is False."""
        if not _TOOL_NAME.match(name):
            raise ValueError(f"tool name must match [a-zA-Z0-9_-]{{1,64}}, got {name!r}")
        if not isinstance(input, Mapping):
            raise TypeError("input must be a JSON object (a mapping)")
        if tool_use_id is not None and not _TOOL_USE_ID.match(tool_use_id):
            raise ValueError(f"tool_use_id must match [a-zA-Z0-9_.:-]{{1,64}}, got {tool_use_id!r}")
        _check_cache(cache_read, cache_write)
        return Behaviour(
            "tool_use",
            text=text,
            tool_name=name,
            tool_input_json=canonical_json(dict(input)),
            tool_use_id=tool_use_id,
            cache_read=cache_read,
            cache_write=cache_write,
            input_deltas=input_deltas,
        )

    @staticmethod
    def guardrail(text: str = GUARDRAIL_TEXT) -> Behaviour:
        """Answer ``text`` with stop reason ``guardrail_intervened``."""
        return Behaviour("guardrail", text=text)

    @staticmethod
    def content_filtered(text: str = CONTENT_FILTERED_TEXT) -> Behaviour:
        """Answer ``text`` with stop reason ``content_filtered``."""
        return Behaviour("content_filtered", text=text)

    @staticmethod
    def error(code: str, message: str | None = None) -> Behaviour:
        """The JSON error ``code`` (one of :data:`ERROR_STATUS`) with its HTTP status."""
        if code not in ERROR_STATUS:
            raise ValueError(f"unknown Bedrock error code {code!r}; expected one of {sorted(ERROR_STATUS)}")
        return Behaviour("error", code=code, message=message)

    @staticmethod
    def slow(seconds: float, then: Behaviour | None = None) -> Behaviour:
        """Wait ``seconds`` before answering, then behave as ``then`` (default ``ok()``)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return Behaviour("slow", seconds=seconds, then=then if then is not None else Behaviour.ok())

    @staticmethod
    def malformed() -> Behaviour:
        """200 with a truncated JSON body, or (streamed) a frame with a bad CRC."""
        return Behaviour("malformed")

    @staticmethod
    def stream_exception(
        after_deltas: int, exception: str = "throttlingException", message: str | None = None
    ) -> Behaviour:
        """Stream ``after_deltas`` text deltas, then an exception frame named ``exception``."""
        if after_deltas < 0:
            raise ValueError("after_deltas must be >= 0")
        if exception not in STREAM_EXCEPTIONS:
            raise ValueError(f"unknown stream exception {exception!r}; expected one of {sorted(STREAM_EXCEPTIONS)}")
        return Behaviour("stream_exception", after_deltas=after_deltas, exception=exception, message=message)

    @staticmethod
    def invalid_utf8(after_deltas: int = 0) -> Behaviour:
        """An answer holding a byte that is not UTF-8 (streamed: after ``after_deltas`` text deltas)."""
        if after_deltas < 0:
            raise ValueError("after_deltas must be >= 0")
        return Behaviour("invalid_utf8", after_deltas=after_deltas)

    @staticmethod
    def cut_stream(after_deltas: int, graceful: bool = False) -> Behaviour:
        """Stream ``after_deltas`` text deltas, then drop the connection (or end the body, if graceful)."""
        if after_deltas < 0:
            raise ValueError("after_deltas must be >= 0")
        return Behaviour("cut_stream", after_deltas=after_deltas, graceful=graceful)


ok = Behaviour.ok
reply = Behaviour.reply
spend_all = Behaviour.spend_all
tool_use = Behaviour.tool_use
guardrail = Behaviour.guardrail
content_filtered = Behaviour.content_filtered
error = Behaviour.error
slow = Behaviour.slow
malformed = Behaviour.malformed
stream_exception = Behaviour.stream_exception
cut_stream = Behaviour.cut_stream
invalid_utf8 = Behaviour.invalid_utf8


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received; ``model_id``/``operation`` are None off the Converse paths."""

    path: str
    model_id: str | None
    operation: Operation | None
    headers: dict[str, str]
    body: dict[str, Any] | None
    method: str = "POST"
    raw_body: bytes = field(default=b"", repr=False)


def canonical_json(value: Any) -> str:
    """The JSON text the fake counts and streams: ``json.dumps(value, ensure_ascii=False)``."""
    return json.dumps(value, ensure_ascii=False)


def _utf8_len(text: str) -> int:
    """UTF-8 byte length of ``text``."""
    return len(text.encode("utf-8"))


def _block_bytes(block: Any) -> int:
    """Counted bytes of one message content block."""
    if not isinstance(block, Mapping):
        return 0
    if isinstance(block.get("text"), str):
        return _utf8_len(block["text"])
    tool = block.get("toolUse")
    if isinstance(tool, Mapping) and "input" in tool:
        return _utf8_len(canonical_json(tool["input"]))
    result = block.get("toolResult")
    if isinstance(result, Mapping) and isinstance(result.get("content"), list):
        total = 0
        for part in result["content"]:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                total += _utf8_len(part["text"])
            elif isinstance(part, Mapping) and "json" in part:
                total += _utf8_len(canonical_json(part["json"]))
        return total
    return 0


def count_input_tokens(body: Mapping[str, Any]) -> int:
    """Total input tokens of a Converse body, per the module's documented rule (cache included)."""
    total = 3
    system = body.get("system")
    if isinstance(system, list):
        total += sum(_utf8_len(b["text"]) for b in system if isinstance(b, Mapping) and isinstance(b.get("text"), str))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, Mapping) else None
            total += 4 + (sum(_block_bytes(b) for b in content) if isinstance(content, list) else 0)
    tool_config = body.get("toolConfig")
    if isinstance(tool_config, Mapping) and "tools" in tool_config:
        total += _utf8_len(canonical_json(tool_config["tools"]))
    return total


def signing_info(recorded: RecordedRequest) -> tuple[str, str, str]:
    """(access key id, region, service) from a recorded request's SigV4 ``Authorization`` scope."""
    match = _SIGV4.match(recorded.headers.get("authorization", "").strip())
    if match is None:
        raise ValueError("the request has no SigV4 Authorization header")
    return match["key"], match["region"], match["service"]


def encode_event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream frame with string (type 7) headers, as botocore's EventStreamBuffer reads it."""
    encoded = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode("utf-8"), value.encode("utf-8")
        if len(raw_name) > 255 or len(raw_value) > 65535:
            raise ValueError(f"header {name!r} too long for an event-stream frame")
        encoded += struct.pack("!B", len(raw_name)) + raw_name + struct.pack("!BH", 7, len(raw_value)) + raw_value
    total_length = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total_length, len(encoded))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    message = prelude + bytes(encoded) + payload
    return message + struct.pack("!I", binascii.crc32(message))


def _event(event_type: str, payload: Mapping[str, Any]) -> bytes:
    """An event frame of ``event_type`` with a JSON payload."""
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return encode_event_frame(headers, json.dumps(payload).encode("utf-8"))


def _exception_frame(exception: str, message: str) -> bytes:
    """An exception frame named ``exception`` (lowerCamel) with ``{"message"}``."""
    headers = {":exception-type": exception, ":content-type": "application/json", ":message-type": "exception"}
    return encode_event_frame(headers, json.dumps({"message": message}).encode("utf-8"))


def _stream_pieces(content: str) -> list[str]:
    """Split ``content`` into one piece per word whose concatenation is ``content``."""
    ends = [m.end() for m in _WORD.finditer(content)]
    if not ends:
        return [content]
    starts = [0] + ends[:-1]
    pieces = [content[s:e] for s, e in zip(starts, ends, strict=True)]
    pieces[-1] += content[ends[-1]:]
    return pieces


def _json_pieces(text: str) -> list[str]:
    """Split a JSON text into 2 or 3 partial pieces (it is at least ``{}``)."""
    size = max(1, math.ceil(len(text) / 3))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _truncate_words(content: str, limit: int | None) -> tuple[str, int, bool]:
    """Cut ``content`` after ``limit`` words; return (content, word count, was_truncated)."""
    words = list(_WORD.finditer(content))
    if limit is None or len(words) <= limit:
        return content, len(words), False
    return content[: words[limit - 1].end()], limit, True


def _cut_at_stop(content: str, stop_sequences: Sequence[str]) -> tuple[str, bool]:
    """Cut ``content`` before the earliest stop sequence; return (content, was_cut)."""
    positions = [content.find(s) for s in stop_sequences if s and s in content]
    if not positions:
        return content, False
    return content[: min(positions)], True


def _user_text(message: Mapping[str, Any]) -> str:
    """Concatenated text blocks of one message."""
    content = message.get("content")
    if not isinstance(content, list):
        return ""
    return "".join(b["text"] for b in content if isinstance(b, Mapping) and isinstance(b.get("text"), str))


# ---- request validation ---------------------------------------------------------


class _Invalid(Exception):
    """A Converse body that real Bedrock would refuse with ValidationException."""


def _is_int(value: Any) -> bool:
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """True for an int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _only_keys(obj: Any, where: str, allowed: Sequence[str], required: Sequence[str] = ()) -> Mapping[str, Any]:
    """Check ``obj`` is an object with only ``allowed`` keys and all ``required`` ones."""
    if not isinstance(obj, Mapping):
        raise _Invalid(f"{where} must be an object.")
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise _Invalid(f"{where}.{unknown[0]} is not a valid field (expected {', '.join(allowed)}).")
    for key in required:
        if key not in obj:
            raise _Invalid(f"{where}.{key} is required.")
    return obj


def _union(obj: Any, where: str, members: Sequence[str]) -> tuple[str, Any]:
    """Check ``obj`` is an object with exactly one of ``members`` set; return (member, value)."""
    if not isinstance(obj, Mapping):
        raise _Invalid(f"{where} must be an object.")
    set_keys = [k for k, v in obj.items() if v is not None]
    unknown = sorted(k for k in set_keys if k not in members)
    if unknown:
        raise _Invalid(f"{where}.{unknown[0]} is not supported (expected exactly one of {', '.join(members)}).")
    if len(set_keys) != 1:
        raise _Invalid(f"{where} must set exactly one of {', '.join(members)}, got {len(set_keys)}.")
    return set_keys[0], obj[set_keys[0]]


def _check_text(value: Any, where: str) -> None:
    """A text field must be a non-blank string."""
    if not isinstance(value, str):
        raise _Invalid(f"{where} must be a string.")
    if not value.strip():
        raise _Invalid(f"The text field at {where} is blank. Add text to the text field, and try again.")


def _check_cache_point(value: Any, where: str) -> None:
    """A cachePoint must be ``{"type": "default"}`` with an optional ttl."""
    obj = _only_keys(value, where, ("type", "ttl"), ("type",))
    if obj["type"] != "default":
        raise _Invalid(f"{where}.type must be 'default'.")
    if "ttl" in obj and obj["ttl"] not in ("5m", "1h"):
        raise _Invalid(f"{where}.ttl must be '5m' or '1h'.")


def _check_tool_use_id(value: Any, where: str) -> str:
    """A toolUseId must match botocore's ToolUseId pattern."""
    if not isinstance(value, str) or not _TOOL_USE_ID.match(value):
        raise _Invalid(f"{where} must match [a-zA-Z0-9_.:-]{{1,64}}.")
    return value


def _check_block(block: Any, where: str, role: str, previous_tool_ids: set[str]) -> tuple[str, str | None]:
    """Validate one content block; return (kind, toolUseId or None)."""
    kind, value = _union(block, where, ("text", "toolUse", "toolResult", "cachePoint"))
    inner = f"{where}.{kind}"
    if kind == "text":
        _check_text(value, inner)
        return kind, None
    if kind == "cachePoint":
        _check_cache_point(value, inner)
        return kind, None
    if kind == "toolUse":
        if role == "user":
            raise _Invalid(f"{inner}: toolUse blocks are allowed only in assistant messages.")
        obj = _only_keys(value, inner, ("toolUseId", "name", "input", "type"), ("toolUseId", "name", "input"))
        tool_id = _check_tool_use_id(obj["toolUseId"], f"{inner}.toolUseId")
        if not isinstance(obj["name"], str) or not _TOOL_NAME.match(obj["name"]):
            raise _Invalid(f"{inner}.name must match [a-zA-Z0-9_-]{{1,64}}.")
        if not isinstance(obj["input"], Mapping):
            raise _Invalid(f"{inner}.input must be a JSON object.")
        return kind, tool_id
    if role != "user":
        raise _Invalid(f"{inner}: toolResult blocks are allowed only in user messages.")
    obj = _only_keys(value, inner, ("toolUseId", "content", "status", "type"), ("toolUseId", "content"))
    tool_id = _check_tool_use_id(obj["toolUseId"], f"{inner}.toolUseId")
    if tool_id not in previous_tool_ids:
        raise _Invalid(
            f"{inner}.toolUseId {tool_id!r} does not match any toolUse block of the preceding assistant message."
        )
    parts = obj["content"]
    if not isinstance(parts, list):
        raise _Invalid(f"{inner}.content must be a list.")
    for j, part in enumerate(parts):
        part_kind, part_value = _union(part, f"{inner}.content.{j}", ("text", "json"))
        if part_kind == "text" and not isinstance(part_value, str):
            raise _Invalid(f"{inner}.content.{j}.text must be a string.")
    if "status" in obj and obj["status"] not in ("success", "error"):
        raise _Invalid(f"{inner}.status must be 'success' or 'error'.")
    return "toolResult", tool_id


def _check_messages(messages: Any) -> bool:
    """Validate ``messages``; return True when a toolUse or toolResult block is present."""
    if not isinstance(messages, list) or not messages:
        raise _Invalid("messages must be a non-empty list.")
    previous_role: str | None = None
    previous_tool_ids: set[str] = set()
    uses_tools = False
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        obj = _only_keys(message, where, ("role", "content"), ("role", "content"))
        role = obj["role"]
        if role not in ("user", "assistant"):
            raise _Invalid(f"{where}.role must be 'user' or 'assistant', got {role!r}.")
        if i == 0 and role != "user":
            raise _Invalid("messages.0.role: A conversation must start with a user message.")
        if role == previous_role:
            raise _Invalid(
                f"{where}.role: A conversation must alternate between user and assistant roles "
                f"(messages.{i - 1} and {where} are both {role!r})."
            )
        content = obj["content"]
        if not isinstance(content, list) or not content:
            raise _Invalid(f"{where}.content must be a non-empty list.")
        tool_ids: set[str] = set()
        for j, block in enumerate(content):
            kind, tool_id = _check_block(block, f"{where}.content.{j}", role, previous_tool_ids)
            if tool_id is not None:
                uses_tools = True
                if tool_id in tool_ids:
                    raise _Invalid(f"{where}.content.{j}.{kind}.toolUseId {tool_id!r} is repeated.")
                tool_ids.add(tool_id)
        if role == "user" and previous_tool_ids - tool_ids:
            missing = ", ".join(sorted(previous_tool_ids - tool_ids))
            raise _Invalid(f"{where}.content: Expected toolResult blocks for the following toolUseIds: {missing}.")
        previous_role = role
        previous_tool_ids = tool_ids if role == "assistant" else set()
    return uses_tools


def _check_system(system: Any) -> None:
    """Validate ``system``: a list of text or cachePoint blocks."""
    if not isinstance(system, list):
        raise _Invalid("system must be a list.")
    for i, block in enumerate(system):
        kind, value = _union(block, f"system.{i}", ("text", "cachePoint"))
        if kind == "text":
            _check_text(value, f"system.{i}.text")
        else:
            _check_cache_point(value, f"system.{i}.cachePoint")


def _check_inference_config(config: Any) -> None:
    """Validate ``inferenceConfig``."""
    obj = _only_keys(config, "inferenceConfig", ("maxTokens", "temperature", "topP", "stopSequences"))
    if "maxTokens" in obj and (not _is_int(obj["maxTokens"]) or obj["maxTokens"] < 1):
        raise _Invalid("inferenceConfig.maxTokens must be an integer >= 1.")
    for key in ("temperature", "topP"):
        if key in obj and (not _is_number(obj[key]) or not 0 <= obj[key] <= 1):
            raise _Invalid(f"inferenceConfig.{key} must be a number between 0 and 1.")
    if "stopSequences" in obj:
        stops = obj["stopSequences"]
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise _Invalid("inferenceConfig.stopSequences must be a list of non-empty strings.")


def _check_tool_config(config: Any) -> None:
    """Validate ``toolConfig``."""
    obj = _only_keys(config, "toolConfig", ("tools", "toolChoice"), ("tools",))
    tools = obj["tools"]
    if not isinstance(tools, list) or not tools:
        raise _Invalid("toolConfig.tools must be a non-empty list.")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"toolConfig.tools.{i}"
        kind, value = _union(tool, where, ("toolSpec", "cachePoint"))
        if kind == "cachePoint":
            _check_cache_point(value, f"{where}.cachePoint")
            continue
        spec = _only_keys(value, f"{where}.toolSpec", ("name", "description", "inputSchema", "strict"), ("name", "inputSchema"))
        name = spec["name"]
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise _Invalid(f"{where}.toolSpec.name must match [a-zA-Z0-9_-]{{1,64}}.")
        if name in names:
            raise _Invalid(f"{where}.toolSpec.name {name!r} is defined twice.")
        names.add(name)
        if "description" in spec and (not isinstance(spec["description"], str) or not spec["description"]):
            raise _Invalid(f"{where}.toolSpec.description must be a non-empty string.")
        if "strict" in spec and not isinstance(spec["strict"], bool):
            raise _Invalid(f"{where}.toolSpec.strict must be a boolean.")
        _, schema = _union(spec["inputSchema"], f"{where}.toolSpec.inputSchema", ("json",))
        if not isinstance(schema, Mapping):
            raise _Invalid(f"{where}.toolSpec.inputSchema.json must be a JSON object.")
    if "toolChoice" in obj:
        kind, value = _union(obj["toolChoice"], "toolConfig.toolChoice", ("auto", "any", "tool"))
        if kind in ("auto", "any"):
            _only_keys(value, f"toolConfig.toolChoice.{kind}", ())
        else:
            choice = _only_keys(value, "toolConfig.toolChoice.tool", ("name",), ("name",))
            if choice["name"] not in names:
                raise _Invalid(f"toolConfig.toolChoice.tool.name {choice['name']!r} is not one of toolConfig.tools.")


def _validate(body: dict[str, Any] | None) -> None:
    """Raise _Invalid when ``body`` is not a Converse request real Bedrock would accept."""
    if body is None:
        raise _Invalid("The request body must be a JSON object.")
    for key, value in body.items():
        if key in ("messages", "system", "inferenceConfig", "toolConfig"):
            continue
        expected = _IGNORED_FIELDS.get(key)
        if expected is None:
            raise _Invalid(f"{key} is not a valid field of a Converse request.")
        if not isinstance(value, expected):
            raise _Invalid(f"{key} must be a JSON {expected.__name__.replace('dict', 'object')}.")
    uses_tools = _check_messages(body.get("messages"))
    if "system" in body:
        _check_system(body["system"])
    if "inferenceConfig" in body:
        _check_inference_config(body["inferenceConfig"])
    if "toolConfig" in body:
        _check_tool_config(body["toolConfig"])
    elif uses_tools:
        raise _Invalid("toolConfig: The toolConfig field must be defined when using toolUse and toolResult content blocks.")


# ---- answers -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """What the model 'said', before rendering as JSON or as an event stream."""

    text: str | None
    tool: tuple[str, str, str] | None  # (toolUseId, name, canonical input JSON)
    stop_reason: str
    usage: dict[str, int]
    silent_input: bool = False  # streamed without any toolUse input delta


def _usage(body: Mapping[str, Any], output_tokens: int, behaviour: Behaviour) -> dict[str, int]:
    """The Converse TokenUsage for ``body`` and ``behaviour``'s cache declaration."""
    total = count_input_tokens(body)
    if behaviour.cache_read is None and behaviour.cache_write is None:
        return {"inputTokens": total, "outputTokens": output_tokens, "totalTokens": total + output_tokens}
    read, write = behaviour.cache_read or 0, behaviour.cache_write or 0
    uncached = max(0, total - read - write)
    return {
        "inputTokens": uncached,
        "outputTokens": output_tokens,
        "totalTokens": uncached + read + write + output_tokens,
        "cacheReadInputTokens": read,
        "cacheWriteInputTokens": write,
    }


def _ok_text(body: Mapping[str, Any], model_id: str) -> str:
    """The ``ok()`` answer: prefix plus the text of the last user message."""
    messages = body.get("messages") or []
    last_user = next((m for m in reversed(messages) if isinstance(m, Mapping) and m.get("role") == "user"), {})
    return f"[FAKE-BEDROCK:{model_id}] " + _user_text(last_user)


def _compose(body: Mapping[str, Any], model_id: str, behaviour: Behaviour, tool_use_id: str) -> _Answer:
    """Apply the token rules to ``behaviour``'s answer."""
    config = body.get("inferenceConfig") or {}
    limit: int | None = config.get("maxTokens")
    stops: list[str] = config.get("stopSequences") or []
    if behaviour.kind == "spend_all":
        n = limit if limit is not None else DEFAULT_SPEND_ALL_TOKENS
        return _Answer(" ".join(["tok"] * n), None, "max_tokens", _usage(body, n, behaviour))
    natural = {"guardrail": "guardrail_intervened", "content_filtered": "content_filtered", "tool_use": "tool_use"}
    stop_reason = natural.get(behaviour.kind, "end_turn")
    if behaviour.kind == "ok":
        full: str | None = _ok_text(body, model_id)
    else:
        full = behaviour.text
    text: str | None = None
    words = 0
    cut = False
    if full is not None:
        text, stopped = _cut_at_stop(full, stops)
        text, words, truncated = _truncate_words(text, limit)
        if truncated:
            stop_reason, cut = "max_tokens", True
        elif stopped:
            stop_reason, cut = "stop_sequence", True
    if behaviour.kind != "tool_use" or cut:
        return _Answer(text, None, stop_reason, _usage(body, words, behaviour))
    input_json = behaviour.tool_input_json or "{}"
    call_words = max(1, len(_WORD.findall(input_json)))
    if limit is not None and words + call_words > limit:
        return _Answer(text, None, "max_tokens", _usage(body, limit, behaviour))
    tool = (behaviour.tool_use_id or tool_use_id, behaviour.tool_name or "", input_json)
    return _Answer(text, tool, "tool_use", _usage(body, words + call_words, behaviour), not behaviour.input_deltas)


def _answer_content(answer: _Answer) -> list[dict[str, Any]]:
    """The Converse ``content`` blocks of ``answer``."""
    content: list[dict[str, Any]] = []
    if answer.text is not None:
        content.append({"text": answer.text})
    if answer.tool is not None:
        tool_id, name, input_json = answer.tool
        content.append({"toolUse": {"toolUseId": tool_id, "name": name, "input": json.loads(input_json)}})
    return content


def _answer_frames(answer: _Answer, latency_ms: int) -> list[bytes]:
    """The event-stream frames of ``answer``, in Converse's order."""
    frames = [_event("messageStart", {"role": "assistant"})]
    index = 0
    if answer.text is not None:
        for piece in _stream_pieces(answer.text):
            frames.append(_event("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": index}))
        frames.append(_event("contentBlockStop", {"contentBlockIndex": index}))
        index += 1
    if answer.tool is not None:
        tool_id, name, input_json = answer.tool
        start = {"start": {"toolUse": {"toolUseId": tool_id, "name": name}}, "contentBlockIndex": index}
        frames.append(_event("contentBlockStart", start))
        for piece in [] if answer.silent_input else _json_pieces(input_json):
            delta = {"delta": {"toolUse": {"input": piece}}, "contentBlockIndex": index}
            frames.append(_event("contentBlockDelta", delta))
        frames.append(_event("contentBlockStop", {"contentBlockIndex": index}))
    frames.append(_event("messageStop", {"stopReason": answer.stop_reason}))
    frames.append(_event("metadata", {"usage": answer.usage, "metrics": {"latencyMs": latency_ms}}))
    return frames


def _partial_frames(body: Mapping[str, Any], model_id: str, after_deltas: int) -> list[bytes]:
    """``messageStart`` and the first ``after_deltas`` text deltas of the ok answer (padded with " tok")."""
    pieces = _stream_pieces(_ok_text(body, model_id))
    pieces += [" tok"] * max(0, after_deltas - len(pieces))
    frames = [_event("messageStart", {"role": "assistant"})]
    for piece in pieces[:after_deltas]:
        frames.append(_event("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": 0}))
    return frames


# ---- HTTP server -----------------------------------------------------------------------


class _Handler(FakeHandler):
    """Request handler implementing the Converse endpoints."""

    server_version = "FakeBedrock/1.0"
    server: FakeServer[FakeBedrock]

    def _target(self) -> tuple[str | None, Operation | None]:
        """The decoded model id and operation of a POST to a Converse path; (None, None) for anything else."""
        match = _PATH.match(self.path.split("?", 1)[0]) if self.command == "POST" else None
        if not match:
            return None, None
        return unquote(match[1]), "converse" if match[2] == "converse" else "converse-stream"

    def _recorded(self, headers: dict[str, str], body: dict[str, Any] | None, raw: bytes) -> RecordedRequest:
        """This request as a RecordedRequest, with the model id and operation its path names."""
        model_id, operation = self._target()
        return RecordedRequest(self.path, model_id, operation, headers, body, self.command, raw)

    def _send_framing_error(self) -> None:
        """Answer a broken body framing with a Bedrock SerializationException (400)."""
        self._send_error(400, "SerializationException", "Malformed request body framing.", _CORAL_NS)

    def _common_headers(self) -> None:
        """Headers every response carries."""
        self.send_header("x-amzn-RequestId", self.server.fake._next_request_id())
        if self._wants_close() or self.close_connection:
            self.send_header("Connection", "close")

    def _send(self, code: int, payload: bytes, extra_headers: Mapping[str, str] | None = None) -> None:
        """Send a complete JSON response with an exact Content-Length."""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self._common_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _send_error(
        self, status: int, code: str, message: str, namespace: str = _BEDROCK_NS, message_key: str = "message"
    ) -> None:
        """Send a Bedrock error: status, ``x-amzn-ErrorType: Code:namespace`` and ``{"message"}``."""
        payload = json.dumps({message_key: message}).encode("utf-8")
        self._send(status, payload, {"x-amzn-ErrorType": f"{code}:{namespace}"})

    # ---- event streams ------------------------------------------------------------

    def _start_stream(self) -> bool:
        """Send the headers of an event-stream response; return True when the body is chunked."""
        chunked = self.request_version != "HTTP/1.0"
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.close_connection = True
        self._common_headers()
        self.end_headers()
        self.wfile.flush()
        return chunked

    def _write_frames(self, frames: list[bytes], chunked: bool) -> None:
        """Write each frame as its own HTTP chunk and flush it."""
        for frame in frames:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame) if chunked else frame)
            self.wfile.flush()

    def _end_stream(self, chunked: bool) -> None:
        """End a chunked body properly."""
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def _drop_connection(self) -> None:
        """End the TCP connection now, without finishing the HTTP message."""
        self.close_connection = True
        self.wfile.flush()
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ---- routing ---------------------------------------------------------------------

    def _route(self) -> None:
        """Route any request: the Converse paths, then signing, validation and the behaviour."""
        started = time.monotonic()
        route = self.path.split("?", 1)[0]
        model_id, operation = self._target()
        raw = self._read_body_or_400()
        if raw is None:
            return
        body = self._record(raw)
        if model_id is None or operation is None:
            self._send_error(404, "UnknownOperationException", f"Unknown operation {self.command} {route}.", _CORAL_NS)
            return
        if not self._signed():
            return
        try:
            _validate(body)
        except _Invalid as exc:
            self._send_error(400, "ValidationException", str(exc))
            return
        assert body is not None
        behaviour = self.server.fake._take_behaviour()
        try:
            self._answer(body, model_id, operation == "converse-stream", behaviour, started)
        except (TimeoutError, ConnectionError):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: make it loud but keep serving
            traceback.print_exc(file=sys.stderr)
            self._send_error(500, "InternalServerException", f"FakeBedrock internal error: {type(exc).__name__}")

    do_POST = _route
    do_GET = _route
    do_PUT = _route
    do_DELETE = _route

    def _signed(self) -> bool:
        """Check for a well-formed SigV4 Authorization header; answer the refusal and return False if not."""
        auth = self.headers.get("Authorization")
        if auth is None:
            self._send_error(403, "AccessDeniedException", "Authorization header is missing", _CORAL_NS, "Message")
            return False
        auth = auth.strip()
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            message = "FakeBedrock accepts only SigV4 (AWS4-HMAC-SHA256) signed requests"
            self._send_error(403, "AccessDeniedException", message, _CORAL_NS, "Message")
            return False
        match = _SIGV4.match(auth)
        if match is None:
            message = (
                "Authorization header requires 'Credential=<key>/<date>/<region>/<service>/aws4_request', "
                "'SignedHeaders' and 'Signature' parameters."
            )
            self._send_error(400, "IncompleteSignatureException", message, _CORAL_NS, "Message")
            return False
        if not self.headers.get("X-Amz-Date") and not self.headers.get("Date"):
            message = "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
            self._send_error(400, "IncompleteSignatureException", message, _CORAL_NS, "Message")
            return False
        if match["service"] != "bedrock":
            message = f"Credential should be scoped to correct service: 'bedrock'. (got {match['service']!r})"
            self._send_error(403, "InvalidSignatureException", message, _CORAL_NS, "Message")
            return False
        return True

    # ---- answers -------------------------------------------------------------------

    def _answer(self, body: dict[str, Any], model_id: str, stream: bool, behaviour: Behaviour, started: float) -> None:
        """Answer one valid Converse request according to ``behaviour``."""
        fake = self.server.fake
        while behaviour.kind == "slow":
            if fake._closing.wait(behaviour.seconds):
                self.close_connection = True
                return
            behaviour = behaviour.then or Behaviour.ok()

        if behaviour.kind == "error":
            code = behaviour.code or "InternalServerException"
            self._send_error(ERROR_STATUS[code], code, behaviour.message or f"{code} (scripted by FakeBedrock).")
            return
        if behaviour.kind in ("stream_exception", "cut_stream", "malformed", "invalid_utf8"):
            self._broken(body, model_id, stream, behaviour)
            return

        answer = _compose(body, model_id, behaviour, fake._next_id("tooluse_fake_"))
        latency_ms = int((time.monotonic() - started) * 1000)
        if stream:
            chunked = self._start_stream()
            self._write_frames(_answer_frames(answer, latency_ms), chunked)
            self._end_stream(chunked)
            return
        response = {
            "output": {"message": {"role": "assistant", "content": _answer_content(answer)}},
            "stopReason": answer.stop_reason,
            "usage": answer.usage,
            "metrics": {"latencyMs": latency_ms},
        }
        self._send(200, json.dumps(response).encode("utf-8"))

    def _broken(self, body: dict[str, Any], model_id: str, stream: bool, behaviour: Behaviour) -> None:
        """Answer a malformed, stream_exception, cut_stream or invalid_utf8 behaviour."""
        if behaviour.kind == "invalid_utf8":
            if not stream:
                answer = {"output": {"message": {"role": "assistant", "content": [{"text": "@"}]}}, "stopReason": "end_turn",
                          "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}}
                self._send(200, json.dumps(answer).encode("utf-8").replace(b'"@"', b'"' + NOT_UTF8 + b'"'))
                return
            headers = {":event-type": "contentBlockDelta", ":content-type": "application/json", ":message-type": "event"}
            payload = b'{"delta": {"text": "' + NOT_UTF8 + b'"}, "contentBlockIndex": 0}'
            chunked = self._start_stream()
            frames = _partial_frames(body, model_id, behaviour.after_deltas)
            self._write_frames(frames + [encode_event_frame(headers, payload)], chunked)
            self._end_stream(chunked)
            return
        if behaviour.kind == "malformed":
            if not stream:
                self._send(200, MALFORMED_BODY)
                return
            frame = bytearray(_event("contentBlockDelta", {"delta": {"text": "x"}, "contentBlockIndex": 0}))
            frame[-1] ^= 0xFF  # a wrong message CRC
            chunked = self._start_stream()
            self._write_frames([_event("messageStart", {"role": "assistant"}), bytes(frame)], chunked)
            self._end_stream(chunked)
            return
        if behaviour.kind == "stream_exception":
            exception = behaviour.exception or "throttlingException"
            code, status = STREAM_EXCEPTIONS[exception]
            message = behaviour.message or f"{code} (scripted by FakeBedrock)."
            if not stream:
                self._send_error(status, code, message)
                return
            chunked = self._start_stream()
            frames = _partial_frames(body, model_id, behaviour.after_deltas)
            self._write_frames(frames + [_exception_frame(exception, message)], chunked)
            self._end_stream(chunked)
            return
        if not stream:
            payload = json.dumps({"output": {"message": {"role": "assistant", "content": [{"text": "cut"}]}}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self._common_headers()
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self._drop_connection()
            return
        chunked = self._start_stream()
        self._write_frames(_partial_frames(body, model_id, behaviour.after_deltas), chunked)
        if behaviour.graceful:
            self._end_stream(chunked)
        else:
            self._drop_connection()


class FakeBedrock(FakeService[Behaviour, RecordedRequest]):
    """Local fake Bedrock runtime (Converse, ConverseStream) on 127.0.0.1; serves on construction."""

    def __init__(self) -> None:
        """Bind 127.0.0.1 on an ephemeral port and serve in a daemon thread."""
        super().__init__(_Handler, Behaviour.ok())

    # ---- addresses -----------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        """Endpoint for boto3 (``endpoint_url=`` or ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``)."""
        return f"http://127.0.0.1:{self.port}"

    # ---- recording -----------------------------------------------------------

    @property
    def converse_requests(self) -> list[RecordedRequest]:
        """Snapshot of the recorded requests to the converse and converse-stream paths."""
        return [r for r in self.requests if r.operation is not None]

    def _next_request_id(self) -> str:
        """A unique, UUID-shaped request id (real Bedrock sends a UUID)."""
        return str(uuid.UUID(int=next(self._ids)))

    def __repr__(self) -> str:
        """Show the address."""
        return f"FakeBedrock({self.endpoint_url!r})"
