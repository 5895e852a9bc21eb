"""A circuit breaker per model: skip a model that keeps failing, then let one trial decide.

Closed: calls go through; ``threshold`` consecutive failures open it. Open: the model is skipped
until ``cooldown_seconds`` have passed. Half-open: exactly one trial call goes through; its success
closes the breaker, its failure opens it for another cooldown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple


class Permit(NamedTuple):
    """Whether a call may start now, whether it is the half-open trial, and why not when refused."""

    allowed: bool
    trial: bool = False
    reason: str | None = None


@dataclass
class _State:
    failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False


class CircuitBreakers:
    """The breakers of every model, keyed by model id; thread-safe."""

    def __init__(self, threshold: int, cooldown_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = threshold
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()

    def skip_reason(self, model_id: str) -> str | None:
        """Why the model must be skipped now, or None when it may be called."""
        with self._lock:
            return self._skip_reason(self._states.get(model_id))

    def _skip_reason(self, state: _State | None) -> str | None:
        if state is None or state.opened_at is None:
            return None
        waited = self._clock() - state.opened_at
        if waited < self._cooldown:
            return f"circuit open after {state.failures} consecutive failures; trial in {self._cooldown - waited:.1f} s"
        if state.trial_in_flight:
            return "circuit half-open; a trial request is in flight"
        return None

    def acquire(self, model_id: str) -> Permit:
        """Check and claim in one step: a call may start, as the half-open trial or not, or is refused.

        ``skip_reason`` is read when the ladder runs; between then and the call another request may
        have taken the one trial, so the call itself must claim it atomically.
        """
        with self._lock:
            state = self._states.get(model_id)
            reason = self._skip_reason(state)
            if reason is not None:
                return Permit(allowed=False, reason=reason)
            if state is None or state.opened_at is None:
                return Permit(allowed=True)
            state.trial_in_flight = True
            return Permit(allowed=True, trial=True)

    def record_success(self, model_id: str) -> None:
        """A call succeeded: the breaker closes."""
        with self._lock:
            self._states.pop(model_id, None)

    def record_failure(self, model_id: str) -> None:
        """A call failed: count it, and open (or re-open) the breaker when due."""
        with self._lock:
            state = self._states.setdefault(model_id, _State())
            state.failures += 1
            if state.trial_in_flight or state.failures >= self._threshold:
                state.opened_at = self._clock()
            state.trial_in_flight = False

    def release(self, model_id: str) -> None:
        """A call ended with neither verdict (the caller's error): free a trial slot."""
        with self._lock:
            state = self._states.get(model_id)
            if state is not None:
                state.trial_in_flight = False

    def open_models(self) -> dict[str, int]:
        """Models whose breaker is open, with their consecutive failures."""
        with self._lock:
            return {mid: s.failures for mid, s in self._states.items() if s.opened_at is not None}
