"""The Provider protocol, the call and completion records, and the one provider error type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol

from costroute.core.registry import Model

# Failure kinds. The first group is worth trying another model for; the second is not.
TIMEOUT = "timeout"
CONNECTION = "connection"
RATE_LIMITED = "rate_limited"
UPSTREAM = "upstream"
KEY_UNAVAILABLE = "key_unavailable"
AUTH = "auth"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
BAD_REQUEST = "bad_request"

FAILOVER_KINDS = frozenset({TIMEOUT, CONNECTION, RATE_LIMITED, UPSTREAM, KEY_UNAVAILABLE})


class ProviderError(Exception):
    """A provider call that failed, translated from the SDK's or transport's own error."""

    def __init__(
        self, kind: str, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def failover(self) -> bool:
        """Whether another model may be tried after this failure."""
        return self.kind in FAILOVER_KINDS


@dataclass(frozen=True)
class ProviderCall:
    """What to send: OpenAI-format messages, the output cap and pass-through parameters."""

    messages: tuple[Mapping[str, Any], ...]
    max_tokens: int | None
    timeout_s: float
    max_tokens_field: str = "max_tokens"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    """A provider's answer with its reported usage.

    ``usage_reported`` is False when the provider sent no usage; the token counts are then
    placeholders, which the service replaces with worst-case counts before settling the cost.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    latency_ms: float
    latency_kind: str  # "measured" or "simulated"
    usage_reported: bool = True
    # OpenAI-format tool calls and refusal, passed back to /v1 callers as the provider sent them.
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    refusal: str | None = None


@dataclass(frozen=True)
class StreamPiece:
    """One piece of a streamed answer: text, or the closing finish reason and usage."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: tuple[Mapping[str, Any], ...] = ()


class ClosingStream:
    """A provider's pieces with a ``close()`` that releases the upstream even before the first piece.

    (Closing a generator that has not started runs none of its code, so a generator alone cannot
    promise that.)
    """

    def __init__(self, pieces: Iterator[StreamPiece], release: Callable[[], None]) -> None:
        self._pieces = pieces
        self._release = release

    def __iter__(self) -> "ClosingStream":
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
    """Calls one provider's models."""

    def availability(self, model: Model) -> str | None:
        """None when the model can be called now, else why not."""
        ...

    def complete(self, model: Model, call: ProviderCall) -> Completion:
        """Call the model and return its whole answer; raise ProviderError on failure."""
        ...

    def stream(self, model: Model, call: ProviderCall) -> Iterator[StreamPiece]:
        """Call the model and yield its answer as it comes; raise ProviderError on failure."""
        ...
