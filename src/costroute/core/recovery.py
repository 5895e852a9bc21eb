"""The recovery policy: after a failed call, wait and retry, fail over, or stop.

* A failure that is about this request or this deployment (400, 401, 403, 404, 413) stops the
  request at once: another model would only repeat it or hide it.
* A failure worth another model (timeout, connection, 429, 5xx, 529, an unreadable key, a
  provider's spend limit) fails over, except that a ``Retry-After`` which fits in what is left of
  the deadline (with the model's own latency) is waited out and the same model tried once more
  first: the cheapest model that meets the constraints is worth a short wait. A spend limit is
  never waited out (it does not lift in seconds), and a pinned request never fails over.
* The breaker counts a failure against the model, except a timeout that the request's own
  deadline forced (the model was not given its full time) and the caller's own errors.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import NamedTuple

from costroute.core.outcome import ErrorReason, FailureKind, ProviderError


class Retry(NamedTuple):
    """Wait, then call the same model once more."""

    wait_s: float
    why: str


class FailOver(NamedTuple):
    """Try the next model the ladder picks; ``why`` says why the same model was not retried, if worth saying."""

    why: str | None = None


class Stop(NamedTuple):
    """End the request with this reason."""

    reason: ErrorReason
    why: str | None = None


Step = Retry | FailOver | Stop


class Verdict(StrEnum):
    """What one call tells the model's circuit breaker."""

    SUCCESS = "success"
    FAILURE = "failure"
    NONE = "none"


def usable_wait(retry_after_s: float | None) -> float | None:
    """A Retry-After that can be waited: finite and not negative, else None."""
    if retry_after_s is None or not math.isfinite(retry_after_s) or retry_after_s < 0:
        return None
    return retry_after_s


def next_step(
    error: ProviderError,
    *,
    model_id: str,
    retried_already: bool,
    time_left_s: float,
    model_latency_s: float,
    pinned: bool,
) -> Step:
    """What to do after ``error`` ended a call to ``model_id``."""
    if not error.failover:
        return Stop(fatal_reason(error))
    wait = usable_wait(error.retry_after_s)
    fail_over_why = None
    if wait is not None and error.kind is not FailureKind.SPEND_LIMIT and not retried_already:
        if wait + model_latency_s <= time_left_s:
            return Retry(wait, f"Honouring Retry-After: waiting {wait:g} s, then trying {model_id} once more.")
        fail_over_why = (f"Retry-After {wait:g} s plus {model_id}'s {model_latency_s * 1000:.0f} ms does not fit the "
                         f"{max(time_left_s, 0.0):.1f} s left; not waiting.")
    if pinned:
        return Stop(exhausted_reason(error), "the pinned model failed and a pinned request does not fail over")
    return FailOver(fail_over_why)


def breaker_verdict(error: ProviderError, cut_by_deadline: bool) -> Verdict:
    """The breaker's verdict on a failed call."""
    if error.kind is FailureKind.TIMEOUT and cut_by_deadline:
        return Verdict.NONE  # the request's own deadline cut the call short: no verdict on the model
    return Verdict.FAILURE if error.failover else Verdict.NONE


_FATAL: dict[FailureKind, ErrorReason] = {
    FailureKind.AUTH: ErrorReason.UPSTREAM_AUTH_ERROR,
    FailureKind.FORBIDDEN: ErrorReason.UPSTREAM_FORBIDDEN,
    FailureKind.NOT_FOUND: ErrorReason.UPSTREAM_MODEL_NOT_FOUND,
    FailureKind.BAD_REQUEST: ErrorReason.UPSTREAM_BAD_REQUEST,
    FailureKind.TOO_LARGE: ErrorReason.UPSTREAM_REQUEST_TOO_LARGE,
}
_EXHAUSTED: dict[FailureKind, ErrorReason] = {
    FailureKind.TIMEOUT: ErrorReason.UPSTREAM_TIMEOUT,
    FailureKind.RATE_LIMITED: ErrorReason.UPSTREAM_RATE_LIMITED,
    FailureKind.KEY_UNAVAILABLE: ErrorReason.KEY_UNAVAILABLE,
    FailureKind.SPEND_LIMIT: ErrorReason.UPSTREAM_SPEND_LIMIT,
}


def fatal_reason(error: ProviderError) -> ErrorReason:
    """The reason a request ends on a failure that is not worth another model."""
    return _FATAL.get(error.kind, ErrorReason.UPSTREAM_ERROR)


def exhausted_reason(last: ProviderError | None) -> ErrorReason:
    """The reason a request ends when no model is left, by the last failure (None: no call was made)."""
    if last is None:
        return ErrorReason.NO_MODEL_AVAILABLE
    return _EXHAUSTED.get(last.kind, ErrorReason.UPSTREAM_ERROR)
