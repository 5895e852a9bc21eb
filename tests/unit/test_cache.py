"""The TTL cache: one fetch at a time, stale values served while a refresh is under way."""

from __future__ import annotations

import threading

import pytest

from costroute.config.cache import CachedValue, ConfigError
from tests.conftest import FakeClock


def test_others_get_the_last_good_value_while_one_thread_refreshes(clock: FakeClock) -> None:
    release = threading.Event()
    started = threading.Event()
    values = iter(["first", "second"])

    def fetch() -> str:
        value = next(values)
        if value == "second":
            started.set()
            assert release.wait(5)
        return value

    cache: CachedValue[str] = CachedValue(fetch, "test", ttl_seconds=10, clock=clock)
    assert cache.get() == "first"
    clock.advance(11)
    refresher = threading.Thread(target=cache.get)
    refresher.start()
    assert started.wait(5)
    assert cache.get() == "first"  # answered at once, not queued behind the slow fetch
    release.set()
    refresher.join(5)
    assert cache.get() == "second"


def test_concurrent_first_loads_fetch_once(clock: FakeClock) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def fetch() -> str:
        calls.append(1)
        assert gate.wait(5)
        return "value"

    cache: CachedValue[str] = CachedValue(fetch, "test", ttl_seconds=10, clock=clock)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get())) for _ in range(4)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(5)
    assert results == ["value"] * 4 and len(calls) == 1


def test_a_zero_ttl_fetches_every_time(clock: FakeClock) -> None:
    counter = iter(range(100))
    cache: CachedValue[int] = CachedValue(lambda: next(counter), "test", ttl_seconds=0, clock=clock)
    assert [cache.get() for _ in range(3)] == [0, 1, 2]


def test_a_failed_first_load_is_not_retried_at_once(clock: FakeClock) -> None:
    calls: list[int] = []

    def fetch() -> str:
        calls.append(1)
        raise ConfigError("SSM parameter '/x' could not be read: ParameterNotFound")

    cache: CachedValue[str] = CachedValue(fetch, "test", ttl_seconds=300, clock=clock)
    for _ in range(3):
        with pytest.raises(ConfigError, match="ParameterNotFound"):
            cache.get()
    assert len(calls) == 1
    clock.advance(6)
    with pytest.raises(ConfigError):
        cache.get()
    assert len(calls) == 2
