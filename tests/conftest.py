"""Shared fixtures. moto is imported first, before anything can create a boto3 client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import moto  # noqa: F401  (imported before boto3 clients exist, so they can be mocked)
import pytest
from flask import Flask

from costroute.bootstrap import build_runtime
from costroute.config.settings import Settings
from costroute.runtime import Runtime
from costroute.web import create_app

# Variables the service reads, plus AWS settings that would send tests to a real endpoint.
_SERVICE_VARIABLES = (
    "MODELS_CONFIG_JSON",
    "MODELS_CONFIG_SSM_PARAMETER",
    "MODELS_CONFIG_FILE",
    "OPENAI_API_KEY",
    "OPENAI_API_KEY_SECRET_ID",
    "OPENAI_BASE_URL",
    "OPENAI_MODEL_NAME",
    "OPENAI_INPUT_COST_PER_1K",
    "OPENAI_OUTPUT_COST_PER_1K",
    "OPENAI_MODEL_QUALITY",
    "OPENAI_MODEL_LATENCY_MS",
    "OPENAI_MODEL_MAX_TOKENS",
    "CONFIG_TTL_SECONDS",
    "MOCK_SIMULATE_LATENCY",
    "REQUEST_DEADLINE_SECONDS",
    "PROVIDER_TIMEOUT_SECONDS",
    "MAX_BODY_BYTES",
    "BREAKER_FAILURE_THRESHOLD",
    "BREAKER_COOLDOWN_SECONDS",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SSM",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_BEARER_TOKEN_BEDROCK",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_ADMIN_KEY",
    "OPENAI_CUSTOM_HEADERS",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "FLASK_APP",
)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts without service settings and with fake AWS credentials and a region."""
    for name in _SERVICE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    yield


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """A sleep that only moves this clock."""
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A controllable clock."""
    return FakeClock()


@pytest.fixture
def make_app() -> Callable[..., Flask]:
    """Build a fresh app from keyword settings (and optional build_runtime arguments)."""

    def factory(runtime_kwargs: dict[str, Any] | None = None, **settings: Any) -> Flask:
        runtime: Runtime = build_runtime(Settings(**settings), **(runtime_kwargs or {}))
        app = create_app(runtime)
        app.testing = True
        return app

    return factory


@pytest.fixture
def client(make_app: Callable[..., Flask]) -> Any:
    """A test client of the default app (built-in registry, mock provider)."""
    return make_app().test_client()
