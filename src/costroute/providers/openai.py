"""The OpenAI provider: the only module that imports the ``openai`` SDK, and only on first call.

Any OpenAI-compatible server works: ``OPENAI_BASE_URL`` (the SDK's own variable) is passed as
``base_url``. The SDK's own retries are off (``max_retries=0``): retries and failover belong to
the service, which knows the deadline and the budget. Every SDK error is translated into a
``ProviderError`` whose message is scrubbed of the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

from costroute.core.registry import Model
from costroute.providers.base import (
    AUTH,
    BAD_REQUEST,
    CONNECTION,
    FORBIDDEN,
    KEY_UNAVAILABLE,
    NOT_FOUND,
    RATE_LIMITED,
    TIMEOUT,
    UPSTREAM,
    ClosingStream,
    Completion,
    ProviderCall,
    ProviderError,
    StreamPiece,
)

if TYPE_CHECKING:
    from openai import OpenAI

_SECRET_PATTERN = re.compile(r"(sk|key|Bearer)[-_ ][A-Za-z0-9_\-*.]{3,}", re.IGNORECASE)


class KeySource(Protocol):
    """Where the OpenAI key comes from (environment or Secrets Manager)."""

    def configured(self) -> bool:
        """Whether any key source is set up at all."""
        ...

    def get_key(self) -> str:
        """The current key; raise KeyUnavailable when it cannot be read."""
        ...

    def refresh_key(self) -> str:
        """Re-read the key from its source now (after a 401, in case it was rotated)."""
        ...


class KeyUnavailable(Exception):
    """The key could not be read; the message names the source and never holds a secret."""


def redact(text: str, *secrets: str) -> str:
    """Remove the given secrets and anything shaped like an API key from a message."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _SECRET_PATTERN.sub("[redacted]", text)


class OpenAIProvider:
    """Calls models through the official SDK, creating one client per key and reusing it."""

    def __init__(self, keys: KeySource, base_url: str | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self._keys = keys
        self._base_url = base_url
        self._clock = clock
        self._client: OpenAI | None = None
        self._client_key: str | None = None
        self._lock = threading.Lock()

    def availability(self, model: Model) -> str | None:
        """Unavailable when no key source is configured."""
        if not self._keys.configured():
            return "no OpenAI API key is configured (set OPENAI_API_KEY or OPENAI_API_KEY_SECRET_ID)"
        return None

    def complete(self, model: Model, call: ProviderCall) -> Completion:
        """Call chat.completions.create; a 401 re-reads the key once before giving up."""
        return self._with_key_retry(call, lambda client, key, timed: self._complete_once(client, key, model, timed))

    def stream(self, model: Model, call: ProviderCall) -> Iterator[StreamPiece]:
        """Start a streamed call; errors before the first piece are raised here, not mid-stream."""
        return self._with_key_retry(call, lambda client, key, timed: self._open_stream(client, key, model, timed))

    def _with_key_retry(self, call: ProviderCall, attempt: Callable[[Any, str, ProviderCall], Any]) -> Any:
        # call.timeout_s covers everything here: reading the key, the call, and a retry after a 401.
        started = self._clock()
        client, key = self._client_for(refresh=False)
        try:
            return attempt(client, key, self._time_left(call, started))
        except ProviderError as exc:
            if exc.kind != AUTH:
                raise
            rejected = exc
        client, fresh = self._client_for(refresh=True)
        if fresh == key:
            raise rejected
        return attempt(client, fresh, self._time_left(call, started))

    def _time_left(self, call: ProviderCall, started: float) -> ProviderCall:
        left = call.timeout_s - (self._clock() - started)
        if left <= 0:
            raise ProviderError(TIMEOUT, "reading the OpenAI key used up the time allowed for the call", status=504)
        return dataclasses.replace(call, timeout_s=left)

    def _client_for(self, refresh: bool) -> tuple[Any, str]:
        try:
            key = self._keys.refresh_key() if refresh else self._keys.get_key()
        except KeyUnavailable as exc:
            raise ProviderError(KEY_UNAVAILABLE, str(exc), status=503) from exc
        with self._lock:
            if self._client is None or self._client_key != key:
                from openai import OpenAI  # deferred: ~0.5 s of imports, paid only by OpenAI users

                self._client = OpenAI(api_key=key, base_url=self._base_url, max_retries=0)
                self._client_key = key
            return self._client, key

    def _request_args(self, model: Model, call: ProviderCall) -> dict[str, Any]:
        """The SDK's arguments. The caller's pass-through fields go in ``extra_body``, never as
        keyword arguments: an unknown field would be a TypeError, and the SDK's own ``extra_body``,
        ``extra_headers`` or ``timeout`` from a request body could override the output cap (and so
        the cost ceiling) or the deadline. Fields the router sets itself are dropped from them."""
        own = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens"}
        passthrough = {key: value for key, value in call.params.items() if key not in own}
        args: dict[str, Any] = {"model": model.name, "messages": list(call.messages), "timeout": call.timeout_s}
        if call.max_tokens is not None:
            args[call.max_tokens_field] = call.max_tokens
        if passthrough:
            args["extra_body"] = passthrough
        return args

    def _complete_once(self, client: Any, key: str, model: Model, call: ProviderCall) -> Completion:
        started = self._clock()
        try:
            response = client.chat.completions.create(**self._request_args(model, call))
        except Exception as exc:  # noqa: BLE001 - translated precisely below, anything else re-raised
            raise _translate(exc, key) from exc
        elapsed_ms = (self._clock() - started) * 1000
        if not getattr(response, "choices", None):
            raise ProviderError(UPSTREAM, f"OpenAI-compatible server returned no choices for {model.id}", status=502)
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            tool_calls=_tool_calls(choice.message),
            refusal=getattr(choice.message, "refusal", None),
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason or "stop",
            latency_ms=elapsed_ms,
            latency_kind="measured",
            usage_reported=usage is not None,
        )

    def _open_stream(self, client: Any, key: str, model: Model, call: ProviderCall) -> Iterator[StreamPiece]:
        args = self._request_args(model, call)
        args.update(stream=True, stream_options={"include_usage": True})
        stream = None
        try:
            stream = client.chat.completions.create(**args)
            chunks = iter(stream)
            first = next(chunks, None)
        except Exception as exc:  # noqa: BLE001
            _close(stream)
            raise _translate(exc, key) from exc
        return ClosingStream(self._read_pieces(first, chunks, key), lambda: _close(stream))

    @staticmethod
    def _read_pieces(first: Any, chunks: Iterator[Any], key: str) -> Iterator[StreamPiece]:
        finish: str | None = None
        chunk = first
        try:
            while chunk is not None:
                for choice in chunk.choices or ():
                    text = getattr(choice.delta, "content", None) or ""
                    tool_calls = _tool_calls(choice.delta)
                    if text or tool_calls:
                        yield StreamPiece(text=text, tool_calls=tool_calls)
                    if choice.finish_reason:
                        finish = choice.finish_reason
                if chunk.usage is not None:
                    yield StreamPiece(
                        finish_reason=finish or "stop",
                        prompt_tokens=chunk.usage.prompt_tokens,
                        completion_tokens=chunk.usage.completion_tokens,
                    )
                    return
                chunk = next(chunks, None)
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, key) from exc
        yield StreamPiece(finish_reason=finish or "stop")


def _tool_calls(message: Any) -> tuple[dict[str, Any], ...]:
    """A message's or delta's tool calls as plain OpenAI-format dicts."""
    calls = getattr(message, "tool_calls", None) or ()
    return tuple(call.model_dump(exclude_none=True) for call in calls)


def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if callable(close):
        close()


def _translate(exc: Exception, key: str) -> ProviderError:
    """Map an SDK exception to a ProviderError; programming errors are not swallowed."""
    import openai

    def message(prefix: str) -> str:
        return redact(f"{prefix}: {exc}", key)

    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(TIMEOUT, "OpenAI-compatible server timed out", status=504)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(CONNECTION, "could not connect to the OpenAI-compatible server", status=502)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return ProviderError(
                RATE_LIMITED, message("rate limited by the provider"), status=429, retry_after_s=_retry_after(exc)
            )
        if status == 401:
            return ProviderError(AUTH, "the provider rejected the API key (401)", status=401)
        if status == 403:
            return ProviderError(FORBIDDEN, message("the provider refused access (403)"), status=403)
        if status == 404:
            return ProviderError(NOT_FOUND, message("the provider does not know this model (404)"), status=404)
        if status >= 500:
            return ProviderError(UPSTREAM, message(f"provider error ({status})"), status=status)
        return ProviderError(BAD_REQUEST, message(f"the provider refused the request ({status})"), status=status)
    if isinstance(exc, UnicodeError):
        # Raised while encoding the request: the caller's text, not the provider, is at fault.
        return ProviderError(BAD_REQUEST, "the request holds text that cannot be encoded as UTF-8", status=400)
    if isinstance(exc, (openai.APIResponseValidationError, json.JSONDecodeError)):
        return ProviderError(UPSTREAM, "the provider sent a malformed response", status=502)
    if isinstance(exc, openai.OpenAIError):
        return ProviderError(UPSTREAM, message("provider call failed"), status=502)
    raise exc


def _retry_after(exc: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (as the SDK reads them); None when
    absent or unusable (an HTTP date, negative, NaN or infinite)."""
    try:
        headers = exc.response.headers
    except AttributeError:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except (TypeError, ValueError):
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None
