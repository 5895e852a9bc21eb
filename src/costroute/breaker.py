"""A circuit breaker per model: skip a model that keeps failing, then let one trial decide.

Closed: calls go through; ``threshold`` consecutive failures open it. Open: the model is skipped
until ``cooldown_seconds`` have passed. Half-open: exactly one trial call goes through; its success
closes the breaker, its failure opens it for another cooldown.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable


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
            state = self._states.get(model_id)
            if state is None or state.opened_at is None:
                return None
            waited = self._clock() - state.opened_at
            if waited < self._cooldown:
                return (
                    f"circuit open after {state.failures} consecutive failures; "
                    f"trial in {self._cooldown - waited:.1f} s"
                )
            if state.trial_in_flight:
                return "circuit half-open; a trial request is in flight"
            return None

    def before_call(self, model_id: str) -> bool:
        """Note that a call starts; True when it is the half-open trial."""
        with self._lock:
            state = self._states.get(model_id)
            if state is None or state.opened_at is None:
                return False
            state.trial_in_flight = True
            return True

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
