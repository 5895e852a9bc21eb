"""A value fetched from a configuration source, cached with a TTL and an injectable clock.

A refresh that fails keeps the last good value and logs a warning; a first load that fails raises
``ConfigError`` and is retried no sooner than ``FAILED_LOAD_RETRY_SECONDS`` later, so a broken
source is not hammered by every request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")
FAILED_LOAD_RETRY_SECONDS = 5.0

logger = logging.getLogger("costroute.config")


class ConfigError(Exception):
    """A configuration value that could not be loaded; the message never holds a secret."""


class CacheStatus(NamedTuple):
    """What /health reports about one cached value."""

    source: str
    loaded: bool
    age_seconds: float | None
    last_error: str | None


class CachedValue(Generic[T]):
    """One cached ``get()`` over a fetch function."""

    def __init__(
        self,
        fetch: Callable[[], T],
        source: str,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.source = source
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()  # guards the fields below; never held during a fetch
        self._fetch_lock = threading.Lock()  # one fetch at a time
        self._value: T | None = None
        self._generation = 0  # how many loads succeeded: tells a waiting thread one happened
        # When the value was fetched (its age), and when the source was last tried (the TTL's start).
        self._loaded_at: float | None = None
        self._checked_at: float | None = None
        self._last_error: str | None = None
        self._failed_at: float | None = None

    def get(self) -> T:
        """The cached value, fetched again when older than the TTL.

        While one thread refreshes an expired value, the others keep serving the last good one
        instead of queueing behind a network call; only the first load makes callers wait.
        """
        with self._lock:
            now = self._clock()
            if self._checked_at is not None and now - self._checked_at < self._ttl:
                return self._value  # type: ignore[return-value]
            if self._loaded_at is None and self._failed_at is not None:
                if now - self._failed_at < min(self._ttl, FAILED_LOAD_RETRY_SECONDS):
                    raise ConfigError(self._last_error or f"{self.source} could not be loaded")
            have_value = self._loaded_at is not None
            generation = self._generation
        if not self._fetch_lock.acquire(blocking=not have_value):
            return self._value  # type: ignore[return-value]
        try:
            with self._lock:
                if self._generation != generation and self._loaded_at is not None:
                    # Another thread loaded it while this one waited.
                    return self._value  # type: ignore[return-value]
            return self._load()
        finally:
            self._fetch_lock.release()

    def refresh(self) -> T:
        """Fetch now, whatever the TTL says."""
        with self._fetch_lock:
            return self._load()

    def status(self) -> CacheStatus:
        """Source, age and last error, for /health."""
        with self._lock:
            age = None if self._loaded_at is None else max(0.0, self._clock() - self._loaded_at)
            return CacheStatus(self.source, self._loaded_at is not None, age, self._last_error)

    def load_failure(self) -> str | None:
        """The error of a failed first load while it is not yet due to be retried, else None.

        Lets a caller skip what cannot be loaded without a network call, and try it again (through
        ``get``) once the retry is due.
        """
        with self._lock:
            if self._loaded_at is not None or self._failed_at is None:
                return None
            if self._clock() - self._failed_at >= min(self._ttl, FAILED_LOAD_RETRY_SECONDS):
                return None
            return self._last_error or f"{self.source} could not be loaded"

    def _load(self) -> T:
        """Fetch (the caller holds the fetch lock, not the state lock) and record the outcome."""
        try:
            value = self._fetch()
        except ConfigError as exc:
            with self._lock:
                now = self._clock()
                self._last_error = str(exc)
                if self._loaded_at is not None:
                    logger.warning("refresh of %s failed, keeping the last good value: %s", self.source, exc)
                    # Try again after another TTL rather than on every request; the value keeps its age.
                    self._checked_at = now
                    return self._value  # type: ignore[return-value]
                self._failed_at = now
            raise
        with self._lock:
            self._value = value
            self._generation += 1
            self._loaded_at = self._checked_at = self._clock()
            self._last_error = None
            self._failed_at = None
        return value
