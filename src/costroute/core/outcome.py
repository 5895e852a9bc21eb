"""Typed outcomes: how a provider call failed, how a request failed, and one attempt's record.

Only the web layer knows HTTP statuses: it maps an ``ErrorReason`` to one. The core and the
adapters speak these types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class FailureKind(StrEnum):
    """Why one provider call failed, as the adapter translated its SDK's error."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    RATE_LIMITED = "rate_limited"
    UPSTREAM = "upstream"
    KEY_UNAVAILABLE = "key_unavailable"
    SPEND_LIMIT = "spend_limit"
    AUTH = "auth"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"


# Worth trying another model for; the others end the request (they are about this request or
# this deployment, and another model would only repeat them or hide them).
FAILOVER_KINDS = frozenset(
    {
        FailureKind.TIMEOUT,
        FailureKind.CONNECTION,
        FailureKind.RATE_LIMITED,
        FailureKind.UPSTREAM,
        FailureKind.KEY_UNAVAILABLE,
        FailureKind.SPEND_LIMIT,
    }
)


class ProviderError(Exception):
    """A provider call that failed, translated from the SDK's or transport's own error."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
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


class ErrorReason(StrEnum):
    """Why a request could not be served; the web layer maps each to its HTTP status."""

    BUDGET_EXCEEDED = "budget_exceeded"
    BUDGET_EXHAUSTED = "budget_exhausted"
    UNKNOWN_CALLER = "unknown_caller"
    QUALITY_UNMET = "quality_unmet"
    MODEL_UNAVAILABLE = "model_unavailable"
    NO_MODEL_AVAILABLE = "no_model_available"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_AUTH_ERROR = "upstream_auth_error"
    UPSTREAM_FORBIDDEN = "upstream_forbidden"
    UPSTREAM_MODEL_NOT_FOUND = "upstream_model_not_found"
    UPSTREAM_BAD_REQUEST = "upstream_bad_request"
    UPSTREAM_REQUEST_TOO_LARGE = "upstream_request_too_large"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_RATE_LIMITED = "upstream_rate_limited"
    UPSTREAM_SPEND_LIMIT = "upstream_spend_limit"
    KEY_UNAVAILABLE = "key_unavailable"
    SPEND_STORE_UNAVAILABLE = "spend_store_unavailable"


@dataclass(frozen=True)
class Attempt:
    """One provider call: which model, how it ended, how long it took."""

    model_id: str
    failure: FailureKind | None
    duration_ms: float
    status: int | None = None
    message: str | None = None

    @property
    def outcome(self) -> str:
        """``ok``, or the failure kind."""
        return "ok" if self.failure is None else self.failure.value


class RoutingFailed(Exception):
    """A request that could not be served: the typed reason, the attempts made and the trace."""

    def __init__(
        self,
        reason: ErrorReason,
        message: str,
        attempts: tuple[Attempt, ...] = (),
        trace: tuple[str, ...] = (),
        *,
        retry_after_s: float | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.attempts = attempts
        self.trace = trace
        self.retry_after_s = retry_after_s
        self.details: Mapping[str, Any] = details or {}
