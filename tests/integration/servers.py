"""Helpers for integration tests: serve a Flask app over real HTTP on loopback, point the SDK at it.

Fixtures defined here are imported by the test modules that use them (not by a conftest), so
they stay visible where they are used.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest
from flask import Flask
from werkzeug.serving import make_server

from tests.fakes.fake_openai import FakeOpenAI

FAKE_KEY = "sk-test-costroute-0123456789abcdef"


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (an ephemeral port) in a daemon thread; yield the SDK base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def sdk_for(app: Flask) -> Iterator[openai.OpenAI]:
    """A real OpenAI SDK client talking to ``app`` over loopback HTTP, without retries."""
    with serving(app) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="anything", max_retries=0, timeout=20)
        try:
            yield client
        finally:
            client.close()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running FakeOpenAI that accepts ``FAKE_KEY``."""
    with FakeOpenAI(api_key=FAKE_KEY) as fake:
        yield fake


def registry_json(*entries: Any) -> str:
    """Registry JSON text from rows or objects."""
    return json.dumps(list(entries))


def model_entry(provider: str, name: str, quality: int, in_cost: float, out_cost: float, latency_ms: int = 400,
                max_output_tokens: int = 4096, **extra: Any) -> dict[str, Any]:
    """A registry object. json.dumps writes a float's shortest repr, so ``0.00015`` stays exactly that
    in the JSON text the registry parses (with Decimal); compare with ``Decimal(repr(price))``."""
    return {
        "provider": provider,
        "name": name,
        "quality": quality,
        "in_cost_per_1k": in_cost,
        "out_cost_per_1k": out_cost,
        "latency_ms": latency_ms,
        "max_output_tokens": max_output_tokens,
        **extra,
    }
