"""The Provider protocol, a provider kind's protocol, and the records a call sends and gets back.

A provider kind (``mock``, ``openai``, ``anthropic``, ``bedrock``) is one module holding a
``KIND`` object: the rules of its settings and model options in the registry document, and
``build``, which makes the adapter for one configured provider. Adapters import their SDK only
when their first model is called, translate every SDK error into a ``ProviderError`` whose kind
the recovery policy understands, and report usage as one ``Usage`` record.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol
from urllib.parse import urlsplit

from costroute.core.fields import FieldReader
from costroute.core.outcome import FailureKind, ProviderError
from costroute.core.registry import Model, ProviderKindRules, ProviderSpec
from costroute.core.settle import Usage

__all__ = [
    "Adapter",
    "AdapterDeps",
    "ClosingStream",
    "Completion",
    "FailureKind",
    "FinishReason",
    "KeySource",
    "KeyUnavailable",
    "NoOptions",
    "Provider",
    "ProviderCall",
    "ProviderError",
    "ProviderKind",
    "StreamPiece",
    "redact",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
LatencyKind = Literal["measured", "simulated"]


@dataclass(frozen=True)
class ProviderCall:
    """What to send: OpenAI-format messages, the output cap and pass-through parameters."""

    messages: tuple[Mapping[str, Any], ...]
    max_tokens: int
    timeout_s: float
    # The name the caller used for the output cap (an OpenAI-compatible upstream is sent the same).
    max_tokens_field: str = "max_tokens"
    params: Mapping[str, Any] = field(default_factory=dict)


class Completion(NamedTuple):
    """A provider's whole answer; ``usage`` is None when the provider reported none."""

    text: str
    usage: Usage | None
    finish_reason: FinishReason
    latency_ms: float
    latency_kind: LatencyKind = "measured"
    # OpenAI-format tool calls and refusal, passed back to /v1 callers.
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    refusal: str | None = None


class StreamPiece(NamedTuple):
    """One piece of a streamed answer: text or tool-call deltas, or the closing finish reason and usage."""

    text: str = ""
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    refusal: str | None = None


class ClosingStream:
    """A provider's pieces with a ``close()`` that releases the upstream even before the first piece.

    (Closing a generator that has not started runs none of its code, so a generator alone cannot
    promise that.)
    """

    def __init__(self, pieces: Iterator[StreamPiece], release: Callable[[], None]) -> None:
        self._pieces = pieces
        self._release = release

    def __iter__(self) -> ClosingStream:
        return self

    def __next__(self) -> StreamPiece:
        return next(self._pieces)

    def close(self) -> None:
        """Stop reading and release the upstream connection."""
        try:
            close = getattr(self._pieces, "close", None)
            if callable(close):
                close()
        finally:
            self._release()


class Provider(Protocol):
    """Calls one configured provider's models."""

    def availability(self, model: Model) -> str | None:
        """None when the model can be called now, else why not."""
        ...

    def unsupported(self, model: Model, params: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> str | None:
        """Why this model cannot take a request with these pass-through fields and messages, or None."""
        ...

    def prompt_overhead(self, model: Model, params: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> int:
        """Input tokens the provider itself adds to such a request (beyond the messages and tools)."""
        ...

    def complete(self, model: Model, call: ProviderCall) -> Completion:
        """Call the model and return its whole answer; raise ProviderError on failure."""
        ...

    def stream(self, model: Model, call: ProviderCall) -> Iterator[StreamPiece]:
        """Call the model and yield its answer as it comes; raise ProviderError on failure."""
        ...

    def status(self) -> dict[str, Any]:
        """What /health shows about this provider; never a secret."""
        ...


class KeyUnavailable(Exception):
    """The key could not be read; the message names the source and never holds a secret."""


class KeySource(Protocol):
    """One provider's key: where it comes from, cached; it knows nothing of any SDK."""

    def configured(self) -> bool:
        """Whether the provider has a key to send (or needs none)."""
        ...

    def get_key(self) -> str | None:
        """The current key, None for a provider that takes none; KeyUnavailable when it cannot be read."""
        ...

    def refresh_key(self) -> str | None:
        """Re-read the key from its source now (after a 401, in case it was rotated)."""
        ...

    def problem(self) -> str | None:
        """Why the key cannot be used now (not configured, or its source failed to load), or None."""
        ...

    def status(self) -> dict[str, Any]:
        """Where the key comes from and how old it is; never the key."""
        ...


@dataclass(frozen=True)
class AdapterDeps:
    """What the composition root gives every adapter."""

    keys: KeySource
    provider_timeout_s: float
    # The process environment, for what an SDK reads from it by standard (AWS_REGION and the like).
    environ: Mapping[str, str] = field(default_factory=dict)
    clock: Callable[[], float] = time.perf_counter
    sleep: Callable[[float], None] = time.sleep
    mock_simulate_latency: bool = False


class ProviderKind(ProviderKindRules, Protocol):
    """One provider kind: its registry rules (see ``core.registry.ProviderKindRules``) and its adapters' factory."""

    def build(self, spec: ProviderSpec, deps: AdapterDeps) -> Provider:
        """The adapter for one configured provider; no network, no SDK import."""
        ...


class NoOptions:
    """Mixin for a kind with no settings or model options of its own."""

    own_fields: frozenset[str] = frozenset()
    model_fields: frozenset[str] = frozenset()

    def parse_settings(self, fields: FieldReader) -> Any:
        """No settings of its own."""
        return None

    def parse_model_options(self, fields: FieldReader) -> Any:
        """No model options of its own."""
        return None


class Adapter:
    """Defaults shared by the adapters: every field supported, nothing added to the prompt, nothing to report."""

    def status(self) -> dict[str, Any]:
        """Nothing beyond the kind."""
        return {}

    def unsupported(self, model: Model, params: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> str | None:
        """Every pass-through field and message is supported."""
        return None

    def prompt_overhead(self, model: Model, params: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> int:
        """The provider adds nothing to the prompt."""
        return 0


def retry_after_seconds(headers: Mapping[str, Any]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (as the SDKs read them, milliseconds first);
    None when absent or unusable (an HTTP date, negative, NaN or infinite)."""
    for name, per_second in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / per_second
        except (TypeError, ValueError):
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


class KeyedAdapter(Adapter):
    """An adapter for an HTTP API reached with a key: one SDK client per key, a 401 re-reads the key once.

    Subclasses set ``default_base_url`` and implement ``_make_client``, ``_complete_once`` and ``_open_stream``.
    """

    default_base_url = ""

    def __init__(self, spec: ProviderSpec, deps: AdapterDeps) -> None:
        self._spec = spec
        self._deps = deps
        self._base_url = spec.base_url or self.default_base_url
        self._clients = KeyedClient(self._make_client)

    def availability(self, model: Model) -> str | None:
        """Unavailable when the provider's key is not configured or cannot be read."""
        return self._deps.keys.problem()

    def status(self) -> dict[str, Any]:
        """The upstream's host and whether a client exists."""
        return {"host": urlsplit(self._base_url).hostname, "client": self._clients.exists}

    def complete(self, model: Model, call: ProviderCall) -> Completion:
        """The whole answer; a 401 re-reads the key once before giving up."""
        answer: Completion = with_key_retry(self._deps.keys, call, self._deps.clock,
                                            lambda key, timed: self._complete_once(key, model, timed), self._spec.name)
        return answer

    def stream(self, model: Model, call: ProviderCall) -> Iterator[StreamPiece]:
        """Start a streamed call; errors before the first piece are raised here, not mid-stream."""
        pieces: Iterator[StreamPiece] = with_key_retry(self._deps.keys, call, self._deps.clock,
                                                       lambda key, timed: self._open_stream(key, model, timed),
                                                       self._spec.name)
        return pieces

    def _make_client(self, key: str | None) -> Any:
        raise NotImplementedError

    def _complete_once(self, key: str | None, model: Model, call: ProviderCall) -> Completion:
        raise NotImplementedError

    def _open_stream(self, key: str | None, model: Model, call: ProviderCall) -> Iterator[StreamPiece]:
        raise NotImplementedError


def malformed(model: Model, what: str, sender: str = "the provider") -> ProviderError:
    """An answer that is not what the wire promises: an ``upstream`` failure, failed over like a 5xx."""
    return ProviderError(FailureKind.UPSTREAM, f"{sender} sent a malformed response for {model.id}: {what}", status=502)


def token_count(usage: Mapping[str, Any], name: str, model: Model, where: str = "usage",
                sender: str = "the provider") -> int | None:
    """A usage field: a non-negative integer, None when absent; anything else makes the answer malformed."""
    value = usage.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise malformed(model, f"'{where}.{name}' is not a non-negative integer", sender)
    return value


_SECRET_PATTERN = re.compile(r"(sk|key|Bearer)[-_ ][A-Za-z0-9_\-*.]{3,}", re.IGNORECASE)


def redact(text: str, *secrets: str | None) -> str:
    """Remove the given secrets and anything shaped like an API key from a message."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _SECRET_PATTERN.sub("[redacted]", text)


class KeyedClient:
    """One SDK client per key, created on first use and replaced when the key changes (rotation)."""

    def __init__(self, make: Callable[[str | None], Any]) -> None:
        self._make = make
        self._client: Any = None
        self._client_key: str | None = None
        self._made = False
        self._lock = threading.Lock()

    def for_key(self, key: str | None) -> Any:
        """The client for this key."""
        with self._lock:
            if not self._made or self._client_key != key:
                self._client = self._make(key)
                self._client_key = key
                self._made = True
            return self._client

    @property
    def exists(self) -> bool:
        """Whether a client was created."""
        return self._made


def with_key_retry(
    keys: KeySource,
    call: ProviderCall,
    clock: Callable[[], float],
    attempt: Callable[[str | None, ProviderCall], Any],
    what: str,
) -> Any:
    """Run ``attempt`` with the key; after a 401, re-read the key once and retry if it changed.

    ``call.timeout_s`` covers everything here: reading the key, the call, and a retry after a 401.
    """
    started = clock()
    key = _read_key(keys, refresh=False)
    try:
        return attempt(key, _time_left(call, started, clock, what))
    except ProviderError as exc:
        if exc.kind is not FailureKind.AUTH:
            raise
        rejected = exc
    fresh = _read_key(keys, refresh=True)
    if fresh == key:
        raise rejected
    return attempt(fresh, _time_left(call, started, clock, what))


def _read_key(keys: KeySource, refresh: bool) -> str | None:
    try:
        return keys.refresh_key() if refresh else keys.get_key()
    except KeyUnavailable as exc:
        raise ProviderError(FailureKind.KEY_UNAVAILABLE, str(exc), status=503) from exc


def _time_left(call: ProviderCall, started: float, clock: Callable[[], float], what: str) -> ProviderCall:
    left = call.timeout_s - (clock() - started)
    if left <= 0:
        raise ProviderError(FailureKind.TIMEOUT, f"reading the {what} key used up the time allowed for the call",
                            status=504)
    return ProviderCall(messages=call.messages, max_tokens=call.max_tokens, timeout_s=left,
                        max_tokens_field=call.max_tokens_field, params=call.params)
