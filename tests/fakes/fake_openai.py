"""A local fake of the OpenAI HTTP API, for tests and benchmarks.

``FakeOpenAI`` starts a stdlib ``ThreadingHTTPServer`` on ``127.0.0.1`` (an
ephemeral port) in a daemon thread.  Point the real ``openai`` SDK at it with
``OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0)``.  It
speaks HTTP/1.1 with keep-alive: every non-streamed response carries an exact
``Content-Length``, streamed responses use chunked transfer encoding (which the
SDK reads fine; HTTP/1.0 clients get a close-delimited stream instead), and a
request carrying ``Connection: close`` gets ``Connection: close`` back and the
socket is closed after the response.

Endpoints
---------
``POST /v1/chat/completions``
    Needs ``Authorization: Bearer <api_key>`` (any request when ``api_key`` is None, as a local
    server that takes no key); otherwise 401 with the OpenAI
    error shape ``{"error": {"message", "type", "param", "code"}}`` (the
    message never echoes the key sent).  A body that is not a JSON object with
    a string ``model`` and a list ``messages`` gets 400.  Anything else is
    answered by the next scripted :class:`Behaviour` (see below), as a
    ``chat.completion`` object, or as a ``text/event-stream`` of
    ``chat.completion.chunk`` objects when ``"stream": true``.
``GET /v1/models``
    Needs the same key; returns an OpenAI ``list`` of a few model objects.
Anything else
    404 with the OpenAI error shape.

Token accounting (deterministic, so tests can assert exact numbers)
-------------------------------------------------------------------
``prompt_tokens`` is a WORST-CASE count for byte-level BPE tokenizers (no
such tokenizer emits more tokens than input bytes)::

    sum(len(text_of(m).encode("utf-8")) + 4 for m in messages) + 3

where ``text_of(m)`` is ``m["content"]`` when it is a string, the
concatenation of the ``text`` of every ``{"type": "text", "text": ...}`` part
when it is a list, and ``""`` otherwise (``None``, image parts, tool calls and
``name`` fields count only through the flat 4 per message; the 3 is the reply
priming).

``completion_tokens`` is the number of whitespace-separated words of the reply
content, capped at the request's limit: ``max_completion_tokens`` if given,
else ``max_tokens``.  A reply longer than the limit is cut after that many
words (keeping its original spacing) and ends with ``finish_reason
"length"``; otherwise ``"stop"``.  ``total_tokens`` is the sum.

Default reply content is ``"[FAKE:<model>] " + <text of the last user
message>``.  Only one choice is ever returned (``n`` is ignored).

Scripting
---------
Each authenticated, well-formed chat request consumes one behaviour from a
FIFO queue (:meth:`FakeOpenAI.enqueue`); when the queue is empty the default
behaviour (:meth:`FakeOpenAI.set_default`, initially :func:`ok`) is used.
Requests rejected with 401/400 by the fake itself consume nothing.  Both may
be changed at any time from any thread.  Behaviours are built with
:func:`ok`, :func:`reply`, :func:`spend_all`, :func:`status`, :func:`slow`,
:func:`malformed`, :func:`tool_call`, :func:`raw_json`, :func:`raw_stream`,
:func:`cut_stream` and :func:`overspend` (also available as ``Behaviour.ok()`` etc.).

``raw_stream(*events)`` answers a stream request with exactly those ``data:`` events (a JSON
value is encoded, ``bytes`` are sent verbatim, so a line need not even be UTF-8), then
``[DONE]``; a non-streamed request gets the first event as its whole body.  The SDK decodes
every streamed line as strict UTF-8: a line that is not raises ``UnicodeDecodeError``
(unwrapped) while iterating.  A non-streamed body that is not UTF-8 raises the same from
``create`` (it ``json.loads`` the bytes), while a raw response's ``text`` is decoded
leniently (bad bytes become U+FFFD).

On a stream request, ``ok``/``reply``/``spend_all`` stream their content one
word per chunk; ``status`` answers with the plain JSON error (as OpenAI does
before a stream starts); ``malformed`` sends one ``data:`` event that is not
JSON, then ``[DONE]``.

What the SDK (openai 3.57) does with ``malformed()``
----------------------------------------------------
For a non-streamed request the SDK sees ``Content-Type: application/json``
and calls ``httpx2.Response.json()``, i.e. ``json.loads``; the resulting
``json.JSONDecodeError`` (a ``ValueError``) propagates to the caller
UNWRAPPED: it is not an ``openai.APIError``, nor ``APIResponseValidationError``
(that one is only raised for schema/Content-Type mismatches under
``_strict_response_validation``).  No retry happens.  For a streamed request
the same ``json.JSONDecodeError`` is raised while iterating the stream.

Recording
---------
Every request (any path and outcome) is appended to :attr:`FakeOpenAI.requests`
as a :class:`RecordedRequest` with lower-cased header names and the JSON body
(``None`` when absent or not a JSON object).  :meth:`FakeOpenAI.reset` clears
the record and the queue and restores the default behaviour to :func:`ok`.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.fakes.fakehttp import FakeHandler, FakeServer, FakeService

__all__ = [
    "Behaviour",
    "BehaviourKind",
    "FakeOpenAI",
    "RecordedRequest",
    "DEFAULT_SPEND_ALL_TOKENS",
    "FAKE_MODELS",
    "count_prompt_tokens",
    "message_text",
    "malformed",
    "ok",
    "raw_stream",
    "reply",
    "slow",
    "spend_all",
    "status",
]

BehaviourKind = Literal[
    "ok", "reply", "spend_all", "status", "slow", "malformed", "tool_call", "raw_json", "raw_stream", "cut_stream",
    "overspend",
]

#: Completion tokens produced by ``spend_all()`` when the request sets no limit.
DEFAULT_SPEND_ALL_TOKENS: int = 4096

#: Model ids listed by ``GET /v1/models``.
FAKE_MODELS: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-nano", "o4-mini")

MALFORMED_BODY: bytes = b'{"id": "chatcmpl-fake", "object": "chat.completion", "choices": [{'

_ERROR_TYPES: dict[int, tuple[str, str | None, str]] = {
    # code -> (error.type, error.code, default message)
    400: ("invalid_request_error", None, "Invalid request (scripted by FakeOpenAI)."),
    401: ("authentication_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to do that (scripted by FakeOpenAI)."),
    404: ("not_found_error", "model_not_found", "The model does not exist (scripted by FakeOpenAI)."),
    409: ("conflict_error", None, "Conflict (scripted by FakeOpenAI)."),
    422: ("invalid_request_error", None, "Unprocessable entity (scripted by FakeOpenAI)."),
    429: ("rate_limit_exceeded", "rate_limit_exceeded", "Rate limit reached (scripted by FakeOpenAI)."),
    500: ("server_error", None, "The server had an error (scripted by FakeOpenAI)."),
    502: ("server_error", "bad_gateway", "Bad gateway (scripted by FakeOpenAI)."),
    503: ("server_error", "service_unavailable", "The engine is currently overloaded (scripted by FakeOpenAI)."),
    504: ("server_error", "gateway_timeout", "Gateway timeout (scripted by FakeOpenAI)."),
}

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Behaviour:
    """One scripted way of answering a chat request; build it with the helpers."""

    kind: BehaviourKind
    text: str | None = None
    status_code: int = 200
    retry_after: float | int | str | None = None
    message: str | None = None
    seconds: float = 0.0
    then: Behaviour | None = None
    events: tuple[bytes, ...] = ()

    @staticmethod
    def ok() -> Behaviour:
        """Normal reply: ``"[FAKE:<model>] "`` + last user message."""
        return Behaviour("ok")

    @staticmethod
    def reply(text: str) -> Behaviour:
        """Normal reply with fixed content ``text`` (still capped by the token limit)."""
        return Behaviour("reply", text=text)

    @staticmethod
    def spend_all() -> Behaviour:
        """Use exactly the allowed completion tokens (default 4096): "tok tok ...", finish "length"."""
        return Behaviour("spend_all")

    @staticmethod
    def status(
        code: int, retry_after: float | int | str | None = None, message: str | None = None
    ) -> Behaviour:
        """HTTP error ``code`` with an OpenAI error body and optional ``Retry-After`` header."""
        if not 400 <= code <= 599:
            raise ValueError(f"status() needs a 4xx/5xx code, got {code}")
        return Behaviour("status", status_code=code, retry_after=retry_after, message=message)

    @staticmethod
    def slow(seconds: float, then: Behaviour | None = None) -> Behaviour:
        """Sleep ``seconds`` before answering, then behave as ``then`` (default ``ok()``)."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return Behaviour("slow", seconds=seconds, then=then if then is not None else Behaviour.ok())

    @staticmethod
    def tool_call(name: str, arguments: str) -> Behaviour:
        """Answer with one function tool call (content null, finish "tool_calls"), streamed as deltas."""
        return Behaviour("tool_call", text=json.dumps({"name": name, "arguments": arguments}))

    @staticmethod
    def malformed() -> Behaviour:
        """200 with ``Content-Type: application/json`` but a body that is not valid JSON."""
        return Behaviour("malformed")

    @staticmethod
    def raw_json(body: Any) -> Behaviour:
        """200 with exactly this JSON body (valid JSON that need not be a chat completion), streamed or not."""
        return Behaviour("raw_json", text=json.dumps(body))

    @staticmethod
    def raw_stream(*events: Any) -> Behaviour:
        """200 streaming exactly these ``data:`` events (JSON values encoded, bytes verbatim), then [DONE]."""
        if not events:
            raise ValueError("raw_stream() needs at least one event")
        encoded = tuple(e if isinstance(e, bytes) else json.dumps(e).encode("utf-8") for e in events)
        return Behaviour("raw_stream", events=encoded)

    @staticmethod
    def cut_stream(after_words: int = 2, graceful: bool = False) -> Behaviour:
        """Stream that many words of the answer, then close the connection: no finish reason, no [DONE].

        By default the connection drops mid-body (no terminating chunk); ``graceful`` ends the
        chunked body cleanly first, so the client sees an orderly end without [DONE].
        """
        return Behaviour("cut_stream", seconds=float(after_words), message="graceful" if graceful else None)

    @staticmethod
    def overspend(tokens: int) -> Behaviour:
        """Ignore the request's token limit and answer exactly ``tokens`` completion tokens, finish "stop"."""
        return Behaviour("overspend", seconds=float(tokens))


ok = Behaviour.ok
reply = Behaviour.reply
spend_all = Behaviour.spend_all
status = Behaviour.status
slow = Behaviour.slow
malformed = Behaviour.malformed
tool_call = Behaviour.tool_call
raw_json = Behaviour.raw_json
raw_stream = Behaviour.raw_stream
cut_stream = Behaviour.cut_stream
overspend = Behaviour.overspend


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: path (with query), lower-cased headers, JSON-object body or None."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    method: str = "POST"
    raw_body: bytes = field(default=b"", repr=False)


def message_text(message: Mapping[str, Any]) -> str:
    """Text of one chat message: string content, or the joined text parts of list content."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def count_prompt_tokens(messages: list[Any]) -> int:
    """Worst-case byte-level BPE prompt tokens: UTF-8 bytes + 4 per message + 3."""
    total = 3
    for message in messages:
        text = message_text(message) if isinstance(message, Mapping) else ""
        total += len(text.encode("utf-8")) + 4
    return total


def _error_body(code: int, message: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error JSON for HTTP status ``code``."""
    default_type = "server_error" if code >= 500 else "invalid_request_error"
    err_type, err_code, default_message = _ERROR_TYPES.get(code, (default_type, None, f"Error {code} (FakeOpenAI)."))
    return {"error": {"message": message or default_message, "type": err_type, "param": param, "code": err_code}}


def _truncate_words(content: str, limit: int | None) -> tuple[str, int, bool]:
    """Cut ``content`` after ``limit`` words; return (content, word count, was_truncated)."""
    words = list(_WORD.finditer(content))
    if limit is None or len(words) <= limit:
        return content, len(words), False
    if limit <= 0:
        return "", 0, True
    return content[: words[limit - 1].end()], limit, True


def _stream_pieces(content: str) -> list[str]:
    """Split ``content`` into one piece per word whose concatenation is ``content``."""
    ends = [m.end() for m in _WORD.finditer(content)]
    if not ends:
        return [content] if content else []
    starts = [0] + ends[:-1]
    pieces = [content[s:e] for s, e in zip(starts, ends, strict=True)]
    pieces[-1] += content[ends[-1]:]
    return pieces


class _Handler(FakeHandler):
    """Request handler implementing the fake endpoints."""

    server_version = "FakeOpenAI/1.0"
    server: FakeServer[FakeOpenAI]

    def _recorded(self, headers: dict[str, str], body: dict[str, Any] | None, raw: bytes) -> RecordedRequest:
        """This request as a RecordedRequest."""
        return RecordedRequest(self.path, headers, body, self.command, raw)

    def _send(
        self,
        code: int,
        payload: bytes,
        content_type: str = "application/json",
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send a complete response with an exact Content-Length."""
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-request-id", self.server.fake._next_id("req_fake_"))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        if self._wants_close() or self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _send_json(self, code: int, obj: Any, extra_headers: Mapping[str, str] | None = None) -> None:
        """Send ``obj`` as a JSON response."""
        self._send(code, json.dumps(obj).encode("utf-8"), extra_headers=extra_headers)

    def _send_error_json(
        self, code: int, message: str | None = None, extra_headers: Mapping[str, str] | None = None
    ) -> None:
        """Send an OpenAI-shaped error."""
        self._send_json(code, _error_body(code, message), extra_headers)

    def _authorized(self) -> bool:
        """Check the bearer token against the fake's key."""
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if self.server.fake.api_key is None:
            return True  # a local server that takes no key (Ollama, vLLM)
        return scheme.lower() == "bearer" and token.strip() == self.server.fake.api_key

    # ---- routing -------------------------------------------------------------

    def _send_framing_error(self) -> None:
        """Answer a broken body framing with an OpenAI-shaped 400."""
        self._send_error_json(400, "Malformed request body framing.")

    def do_GET(self) -> None:
        """Route GET requests."""
        raw = self._read_body_or_400()
        if raw is None:
            return
        self._record(raw)
        route = self.path.split("?", 1)[0].rstrip("/")
        if route != "/v1/models":
            self._send_error_json(404, f"Unknown path {route!r} (FakeOpenAI).")
            return
        if not self._authorized():
            self._send_error_json(401)
            return
        created = 1_700_000_000
        data = [{"id": m, "object": "model", "created": created, "owned_by": "fake-openai"} for m in FAKE_MODELS]
        self._send_json(200, {"object": "list", "data": data})

    def do_POST(self) -> None:
        """Route POST requests."""
        raw = self._read_body_or_400()
        if raw is None:
            return
        body = self._record(raw)
        route = self.path.split("?", 1)[0].rstrip("/")
        if route != "/v1/chat/completions":
            self._send_error_json(404, f"Unknown path {route!r} (FakeOpenAI).")
            return
        if not self._authorized():
            self._send_error_json(401)
            return
        if body is None:
            self._send_error_json(400, "We could not parse the JSON body of your request.")
            return
        if not isinstance(body.get("model"), str) or not isinstance(body.get("messages"), list):
            self._send_error_json(400, "'model' (string) and 'messages' (array) are required.")
            return
        behaviour = self.server.fake._take_behaviour()
        try:
            self._chat(body, behaviour)
        except (TimeoutError, ConnectionError):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: make it loud but keep serving
            traceback.print_exc(file=sys.stderr)
            self._send_error_json(500, f"FakeOpenAI internal error: {type(exc).__name__}")

    # ---- chat completions ----------------------------------------------------

    def _chat(self, body: dict[str, Any], behaviour: Behaviour) -> None:
        """Answer one chat request according to ``behaviour``."""
        fake = self.server.fake
        while behaviour.kind == "slow":
            if fake._closing.wait(behaviour.seconds):
                self.close_connection = True
                return
            behaviour = behaviour.then or Behaviour.ok()

        stream = body.get("stream") is True
        if behaviour.kind == "status":
            headers: dict[str, str] = {}
            if behaviour.retry_after is not None:
                headers["Retry-After"] = str(behaviour.retry_after)
            self._send_error_json(behaviour.status_code, behaviour.message, headers)
            return
        if behaviour.kind == "malformed":
            if stream:
                self._stream_events([b"data: {this is not json\n\n", b"data: [DONE]\n\n"])
            else:
                self._send(200, MALFORMED_BODY)
            return
        if behaviour.kind == "raw_stream":
            if stream:
                self._stream_events([b"data: " + event + b"\n\n" for event in behaviour.events] + [b"data: [DONE]\n\n"])
            else:
                self._send(200, behaviour.events[0])
            return
        if behaviour.kind == "raw_json":
            payload = (behaviour.text or "null").encode("utf-8")
            if stream:
                self._stream_events([b"data: " + payload + b"\n\n", b"data: [DONE]\n\n"])
            else:
                self._send(200, payload)
            return

        model: str = body["model"]
        messages: list[Any] = body["messages"]
        if behaviour.kind == "tool_call":
            self._tool_call(body, json.loads(behaviour.text or "{}"), stream)
            return
        limit = self._token_limit(body)
        if behaviour.kind == "spend_all":
            n = limit if limit is not None else DEFAULT_SPEND_ALL_TOKENS
            content, completion_tokens, finish = " ".join(["tok"] * n), n, "length"
        elif behaviour.kind == "overspend":
            n = int(behaviour.seconds)
            content, completion_tokens, finish = " ".join(["tok"] * n), n, "stop"
        else:
            if behaviour.kind == "reply":
                full = behaviour.text or ""
            else:
                last_user = next(
                    (m for m in reversed(messages) if isinstance(m, Mapping) and m.get("role") == "user"), {}
                )
                full = f"[FAKE:{model}] " + message_text(last_user)
            content, completion_tokens, truncated = _truncate_words(full, limit)
            finish = "length" if truncated else "stop"

        prompt_tokens = count_prompt_tokens(messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        completion_id = fake._next_id("chatcmpl-fake-")
        created = int(time.time())
        if stream:
            options = body.get("stream_options")
            include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
            cut = int(behaviour.seconds) if behaviour.kind == "cut_stream" else None
            self._stream_completion(completion_id, created, model, content, finish, usage if include_usage else None,
                                    cut_after=cut, graceful=behaviour.message == "graceful")
            return
        self._send_json(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
            },
        )

    def _tool_call(self, body: dict[str, Any], function: dict[str, str], stream: bool) -> None:
        """Answer with one tool call; completion tokens are the words of its arguments."""
        fake = self.server.fake
        call_id = fake._next_id("call_fake_")
        prompt_tokens = count_prompt_tokens(body["messages"])
        completion_tokens = len(_WORD.findall(function["arguments"])) or 1
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        base = {"id": fake._next_id("chatcmpl-fake-"), "created": int(time.time()), "model": body["model"]}
        call = {"id": call_id, "type": "function", "function": function}
        if not stream:
            message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
            self._send_json(200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
            return

        def chunk(delta: dict[str, Any], finish: str | None = None, choices: bool = True) -> bytes:
            obj = {**base, "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}] if choices else []}
            if not choices:
                obj["usage"] = usage
            return b"data: " + json.dumps(obj).encode("utf-8") + b"\n\n"

        opening = {"index": 0, "id": call_id, "type": "function", "function": {"name": function["name"], "arguments": ""}}
        events = [
            chunk({"role": "assistant", "content": None}),
            chunk({"tool_calls": [opening]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": function["arguments"]}}]}),
            chunk({}, "tool_calls"),
            chunk({}, choices=False),
            b"data: [DONE]\n\n",
        ]
        self._stream_events(events)

    @staticmethod
    def _token_limit(body: Mapping[str, Any]) -> int | None:
        """The request's completion-token cap: max_completion_tokens, else max_tokens, else None."""
        for key in ("max_completion_tokens", "max_tokens"):
            value = body.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return max(value, 0)
        return None

    def _stream_completion(
        self,
        completion_id: str,
        created: int,
        model: str,
        content: str,
        finish: str,
        usage: dict[str, int] | None,
        cut_after: int | None = None,
        graceful: bool = False,
    ) -> None:
        """Stream a completion as SSE chat.completion.chunk events; ``cut_after`` words, then close the connection."""
        include_usage = usage is not None

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            obj: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                obj["usage"] = None
            return b"data: " + json.dumps(obj).encode("utf-8") + b"\n\n"

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": piece}) for piece in _stream_pieces(content)]
        if cut_after is not None:
            self._stream_events(events[: 1 + cut_after], terminate=graceful)
            self.close_connection = True
            if not graceful:
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return
        events.append(chunk({}, finish))
        if usage is not None:
            final = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": usage,
            }
            events.append(b"data: " + json.dumps(final).encode("utf-8") + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        self._stream_events(events)

    def _stream_events(self, events: list[bytes], terminate: bool = True) -> None:
        """Send ``events`` as a text/event-stream body (chunked; close-delimited for HTTP/1.0)."""
        chunked = self.request_version != "HTTP/1.0"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.close_connection = True
        self.send_header("x-request-id", self.server.fake._next_id("req_fake_"))
        if self._wants_close() or self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        for event in events:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event) if chunked else event)
            self.wfile.flush()
        if chunked and terminate:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()


class FakeOpenAI(FakeService[Behaviour, RecordedRequest]):
    """Local fake OpenAI-compatible server on 127.0.0.1; starts serving on construction."""

    def __init__(self, api_key: str | None = "sk-test-fake-openai") -> None:
        """Bind 127.0.0.1 on an ephemeral port and serve in a daemon thread."""
        self.api_key: str | None = api_key
        super().__init__(_Handler, Behaviour.ok())

    # ---- addresses -----------------------------------------------------------

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI SDK base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    # ---- recording -----------------------------------------------------------

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """Snapshot of the recorded POSTs to /v1/chat/completions."""
        return [
            r
            for r in self.requests
            if r.method == "POST" and r.path.split("?", 1)[0].rstrip("/") == "/v1/chat/completions"
        ]

    def __repr__(self) -> str:
        """Show the address."""
        return f"FakeOpenAI({self.base_url!r})"
