"""The ``openai`` kind: any server that speaks OpenAI's Chat Completions, through the official SDK.

One adapter serves OpenAI, Groq, Together, Fireworks, DeepSeek, Mistral, Gemini's OpenAI endpoint,
OpenRouter, vLLM, Ollama and LM Studio: each configured provider has its own base URL, its own key
(or none, for a local server) and its own SDK client. Only this module imports ``openai``, and
only when one of its models is first called.

* The SDK's own retries are off (``max_retries=0``): retries and failover belong to the router,
  which knows the deadline and the budget.
* Each client is built with every credential given explicitly, so the SDK never fills one in
  from the environment (``OPENAI_API_KEY``, ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``,
  ``OPENAI_CUSTOM_HEADERS``): an upstream receives its own key and no other. The built-in
  ``openai`` provider keeps the SDK's organization, project and custom headers from the
  environment, as OpenAI's own users expect.
* Answers are read strictly from the JSON the server sent: a 200 whose body is not a chat
  completion (no choices, ``message`` null or a string, ``content`` not a string, usage with
  strings or negative numbers) is an ``upstream`` failure, failed over like a 5xx, and so is a
  streamed line that is not UTF-8. A stream that ends without a finish reason (the connection
  simply closed) is a failure mid-stream. ``finish_reason: "error"`` (OpenRouter: the generation
  failed partway) is an ``upstream`` failure too, never a finished answer.
* Usage is normalised: ``prompt_tokens_details.cached_tokens`` (a subset of ``prompt_tokens``)
  and DeepSeek's ``prompt_cache_hit_tokens`` are cache reads, ``cache_write_tokens`` cache writes.
  A ``total_tokens`` above ``prompt_tokens + completion_tokens`` (gateways that leave reasoning
  tokens out of ``completion_tokens``) has its excess counted as output, the dearer class.
* Every SDK error becomes a ``ProviderError`` whose message is scrubbed of the key: 429 ->
  ``rate_limited``, 402 (OpenRouter's and DeepSeek's exhausted credit) -> ``spend_limit``, 401 ->
  ``auth``, 403 -> ``forbidden``, 404 -> ``not_found``, 408 -> ``timeout``, 413 -> ``too_large``,
  other 4xx -> ``bad_request``, 5xx -> ``upstream``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from costroute.core.fields import FieldReader
from costroute.core.registry import Model, ProviderSpec
from costroute.core.settle import Usage
from costroute.providers.base import (
    AdapterDeps,
    ClosingStream,
    Completion,
    FailureKind,
    FinishReason,
    KeyedAdapter,
    ProviderCall,
    ProviderError,
    StreamPiece,
    malformed,
    redact,
    retry_after_seconds,
    token_count,
)
from costroute.wirelogs import OPENAI_WIRE_LOGGERS, hold_at_info

OPENAI_API_BASE_URL = "https://api.openai.com/v1"
MAX_TOKENS_FIELDS: tuple[str, ...] = ("max_tokens", "max_completion_tokens")
_FINISH_REASONS: frozenset[str] = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
# OpenRouter's finish reason for a generation that failed partway: the answer is not whole.
_FAILED_FINISH_REASON = "error"
# Fields the router sets itself; a caller's copy of them is never passed through.
_OWN_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens"})


@dataclass(frozen=True)
class OpenAIOptions:
    """Per-model options: the request field that carries the output cap, when the model insists on one."""

    max_tokens_field: str | None = None


class OpenAIKind:
    """The ``openai`` kind: ``base_url``, an optional ``api_key`` and ``timeout_seconds``; models may set ``max_tokens_field``."""

    common_fields = frozenset({"base_url", "api_key", "timeout_seconds"})
    api_key_required = False
    own_fields: frozenset[str] = frozenset()
    # OpenAI's reasoning models refuse "max_tokens" and want "max_completion_tokens".
    model_fields = frozenset({"max_tokens_field"})

    def parse_settings(self, fields: FieldReader) -> Any:
        """No settings beyond the common ones."""
        return None

    def parse_model_options(self, fields: FieldReader) -> OpenAIOptions:
        """The ``max_tokens_field`` of one model."""
        return OpenAIOptions(max_tokens_field=fields.choice("max_tokens_field", MAX_TOKENS_FIELDS))

    def build(self, spec: ProviderSpec, deps: AdapterDeps) -> OpenAIProvider:
        """An adapter for one OpenAI-compatible upstream."""
        return OpenAIProvider(spec, deps)


KIND = OpenAIKind()


class OpenAIProvider(KeyedAdapter):
    """Calls one OpenAI-compatible upstream through the official SDK, one client per key."""

    default_base_url = OPENAI_API_BASE_URL

    def _make_client(self, key: str | None) -> Any:
        import openai  # deferred: ~0.5 s of imports, paid only when an OpenAI-compatible model is called

        hold_at_info(OPENAI_WIRE_LOGGERS)  # at DEBUG the SDK logs each request's messages

        client = openai.OpenAI(api_key=key or "", admin_api_key="", base_url=self._base_url, max_retries=0)
        if not self._spec.builtin:
            # What the SDK read from the environment is meant for OpenAI itself, never for another upstream.
            client.organization = None
            client.project = None
            client._custom_headers = {}
        return client

    def _request_args(self, model: Model, call: ProviderCall, key: str | None) -> dict[str, Any]:
        """The SDK's arguments. The caller's pass-through fields go in ``extra_body``, never as
        keyword arguments: an unknown field would be a TypeError, and the SDK's own ``extra_body``,
        ``extra_headers`` or ``timeout`` from a request body could override the output cap (and so
        the cost ceiling) or the deadline. Fields the router sets itself are dropped from them."""
        passthrough = {key: value for key, value in call.params.items() if key not in _OWN_FIELDS}
        options = model.options if isinstance(model.options, OpenAIOptions) else OpenAIOptions()
        args: dict[str, Any] = {"model": model.upstream, "messages": list(call.messages), "timeout": call.timeout_s}
        args[options.max_tokens_field or call.max_tokens_field] = call.max_tokens
        if passthrough:
            args["extra_body"] = passthrough
        if not key:
            # A local server that takes no key: send no Authorization header at all.
            from openai import Omit

            args["extra_headers"] = {"Authorization": Omit()}
        return args

    def _complete_once(self, key: str | None, model: Model, call: ProviderCall) -> Completion:
        client = self._clients.for_key(key)
        started = self._deps.clock()
        try:
            raw = client.chat.completions.with_raw_response.create(**self._request_args(model, call, key))
            text = raw.text
        except Exception as exc:
            raise _translate(exc, key) from exc
        elapsed_ms = (self._deps.clock() - started) * 1000
        return _read_completion(_decode(text), model, elapsed_ms)

    def _open_stream(self, key: str | None, model: Model, call: ProviderCall) -> Iterator[StreamPiece]:
        client = self._clients.for_key(key)
        args = self._request_args(model, call, key)
        args.update(stream=True, stream_options={"include_usage": True})
        stream = None
        try:
            stream = client.chat.completions.create(**args)
            chunks = iter(stream)
            first = next(chunks, None)
        except Exception as exc:
            _close(stream)
            raise _translate(exc, key) from exc
        return ClosingStream(_read_pieces(first, chunks, key, model), lambda: _close(stream))


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ProviderError(FailureKind.UPSTREAM, "the provider sent a malformed response: not JSON", status=502) from exc


def _read_completion(data: Any, model: Model, elapsed_ms: float) -> Completion:
    """A chat.completion body, checked field by field."""
    if not isinstance(data, dict):
        raise _malformed(model, "the body is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _malformed(model, "'choices' is missing or empty")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _malformed(model, "'choices[0].message' is not an object")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise _malformed(model, "'message.content' is not a string")
    refusal = message.get("refusal")
    if refusal is not None and not isinstance(refusal, str):
        raise _malformed(model, "'message.refusal' is not a string")
    return Completion(
        text=content or "",
        usage=_read_usage(data.get("usage"), model),
        finish_reason=_finish_reason(choice.get("finish_reason"), model) or "stop",
        latency_ms=elapsed_ms,
        tool_calls=_tool_calls(message.get("tool_calls"), model, "message.tool_calls"),
        refusal=refusal,
    )


def _finish_reason(value: Any, model: Model) -> FinishReason | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _malformed(model, "'finish_reason' is not a string")
    if value == _FAILED_FINISH_REASON:
        raise ProviderError(FailureKind.UPSTREAM, f"the provider reported that the generation for {model.id} failed "
                            "partway (finish_reason 'error')", status=502)
    # Some servers send their own words ("eos", "end_turn"): an answer that ended on its own.
    return value if value in _FINISH_REASONS else "stop"  # type: ignore[return-value]


def _tool_calls(value: Any, model: Model, where: str) -> tuple[Mapping[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(call, dict) for call in value):
        raise _malformed(model, f"'{where}' is not an array of objects")
    return tuple(value)


def _read_usage(value: Any, model: Model) -> Usage | None:
    """OpenAI's usage as one Usage record; None when the server reported none."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _malformed(model, "'usage' is not an object")
    hit = _count(value, "prompt_cache_hit_tokens", model)
    miss = _count(value, "prompt_cache_miss_tokens", model)
    prompt = _count(value, "prompt_tokens", model)
    completion = _count(value, "completion_tokens", model)
    if prompt is None and hit is not None and miss is not None:
        prompt = hit + miss
    if prompt is None or completion is None:
        raise _malformed(model, "'usage' lacks prompt_tokens or completion_tokens")
    total = _count(value, "total_tokens", model)
    if total is not None and total > prompt + completion:
        # Tokens the total bills but neither count names (reasoning, on some gateways): priced as output.
        completion = total - prompt
    details = value.get("prompt_tokens_details")
    cached = written = None
    if isinstance(details, dict):
        cached = _count(details, "cached_tokens", model)
        written = _count(details, "cache_write_tokens", model)
    elif details is not None:
        raise _malformed(model, "'usage.prompt_tokens_details' is not an object")
    cached = cached if cached is not None else (hit or 0)
    written = written or 0
    if cached + written > prompt:
        raise _malformed(model, "cached tokens exceed prompt_tokens")
    return Usage(input_tokens=prompt - cached - written, output_tokens=completion, cache_read_tokens=cached,
                 cache_write_tokens=written)


def _chunk_data(chunk: Any, model: Model) -> Mapping[str, Any]:
    from pydantic import BaseModel  # the SDK's own dependency, already imported with it

    if not isinstance(chunk, BaseModel):
        raise _malformed(model, "a streamed chunk is not a JSON object")
    data = chunk.model_dump(warnings=False)
    return data


def _read_pieces(first: Any, chunks: Iterator[Any], key: str | None, model: Model) -> Iterator[StreamPiece]:
    finish: FinishReason | None = None
    chunk = first
    try:
        while chunk is not None:
            data = _chunk_data(chunk, model)
            choices = data.get("choices") or []
            if not isinstance(choices, list):
                raise _malformed(model, "a chunk's 'choices' is not an array")
            for choice in choices:
                if not isinstance(choice, dict):
                    raise _malformed(model, "a chunk's choice is not an object")
                delta = choice.get("delta") or {}
                if not isinstance(delta, dict):
                    raise _malformed(model, "a chunk's 'delta' is not an object")
                text = delta.get("content")
                if text is not None and not isinstance(text, str):
                    raise _malformed(model, "a chunk's 'delta.content' is not a string")
                tool_calls = _tool_calls(delta.get("tool_calls"), model, "delta.tool_calls")
                refusal = delta.get("refusal") if isinstance(delta.get("refusal"), str) else None
                if text or tool_calls or refusal:
                    yield StreamPiece(text=text or "", tool_calls=tool_calls, refusal=refusal)
                finish = _finish_reason(choice.get("finish_reason"), model) or finish
            usage = _read_usage(data.get("usage"), model)
            if usage is not None:
                if finish is None:
                    raise _malformed(model, "the stream reported usage before any finish reason")
                yield StreamPiece(finish_reason=finish, usage=usage)
                return
            chunk = next(chunks, None)
    except ProviderError:
        raise
    except Exception as exc:
        raise _translate(exc, key) from exc
    if finish is None:
        raise ProviderError(FailureKind.UPSTREAM, f"the stream from {model.id} ended without a finish reason "
                            "(the connection closed mid-answer)", status=502)
    yield StreamPiece(finish_reason=finish)


def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if callable(close):
        close()


def _translate(exc: Exception, key: str | None) -> ProviderError:
    """Map an SDK exception to a ProviderError; programming errors are not swallowed."""
    import openai

    def message(prefix: str) -> str:
        return redact(f"{prefix}: {exc}", key)

    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(FailureKind.TIMEOUT, "the OpenAI-compatible server timed out", status=504)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(FailureKind.CONNECTION, "could not connect to the OpenAI-compatible server", status=502)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return ProviderError(FailureKind.RATE_LIMITED, message("rate limited by the provider"), status=429,
                                 retry_after_s=retry_after_seconds(exc.response.headers))
        if status == 401:
            return ProviderError(FailureKind.AUTH, "the provider rejected the API key (401)", status=401)
        if status == 403:
            return ProviderError(FailureKind.FORBIDDEN, message("the provider refused access (403)"), status=403)
        if status == 402:
            return ProviderError(FailureKind.SPEND_LIMIT,
                                 message("the provider refused the call: the account's credit or spend limit is "
                                         "exhausted (402)"), status=402)
        if status == 404:
            return ProviderError(FailureKind.NOT_FOUND, message("the provider does not know this model (404)"),
                                 status=404)
        if status == 408:
            return ProviderError(FailureKind.TIMEOUT, message("the provider timed out reading the request (408)"),
                                 status=504)
        if status == 413:
            return ProviderError(FailureKind.TOO_LARGE, message("the provider refused the request as too large (413)"),
                                 status=413)
        if status >= 500:
            return ProviderError(FailureKind.UPSTREAM, message(f"provider error ({status})"), status=status,
                                 retry_after_s=retry_after_seconds(exc.response.headers))
        return ProviderError(FailureKind.BAD_REQUEST, message(f"the provider refused the request ({status})"),
                             status=status)
    if isinstance(exc, UnicodeEncodeError):
        # Raised while encoding the request: the caller's text, not the provider, is at fault.
        return ProviderError(FailureKind.BAD_REQUEST, "the request holds text that cannot be encoded as UTF-8",
                             status=400)
    if isinstance(exc, UnicodeDecodeError):
        # Raised while decoding a streamed line: the provider's bytes are not UTF-8.
        return ProviderError(FailureKind.UPSTREAM, "the provider sent a malformed response: not valid UTF-8",
                             status=502)
    if isinstance(exc, (openai.APIResponseValidationError, json.JSONDecodeError)):
        return ProviderError(FailureKind.UPSTREAM, "the provider sent a malformed response", status=502)
    if isinstance(exc, openai.APIError):
        # An ``error`` event in the middle of a stream.
        return ProviderError(FailureKind.UPSTREAM, message("the provider reported an error mid-stream"), status=502)
    if isinstance(exc, openai.OpenAIError):
        return ProviderError(FailureKind.UPSTREAM, message("provider call failed"), status=502)
    raise exc


def _malformed(model: Model, what: str) -> ProviderError:
    return malformed(model, what)


def _count(usage: Mapping[str, Any], name: str, model: Model) -> int | None:
    return token_count(usage, name, model)
