"""The composition root: the one place that picks concrete adapters from settings.

Tests build the service through the same door as production, swapping in fakes where they
need to (a clock, AWS clients, providers).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Mapping

from costroute import __version__
from costroute.breaker import CircuitBreakers
from costroute.config.aws import AwsClients, read_openai_key_secret, read_ssm_parameter
from costroute.config.cache import CachedValue, CacheStatus, ConfigError
from costroute.config.settings import Settings
from costroute.core.registry import Registry, RegistryError, build_registry, default_registry_rows, parse_registry_json
from costroute.providers.base import Provider
from costroute.providers.mock import MockProvider
from costroute.providers.openai import KeyUnavailable, OpenAIProvider
from costroute.service import RouterService

KNOWN_PROVIDERS: tuple[str, ...] = ("mock", "openai")
# After a 401, the secret is re-read (a rotated key) at most once in this many seconds.
KEY_REFRESH_INTERVAL_SECONDS = 10.0


class OpenAIKeySource:
    """The OpenAI key: ``OPENAI_API_KEY`` if set, else the Secrets Manager secret, cached."""

    def __init__(
        self, env_key: str | None, secret: CachedValue[str] | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._env_key = env_key
        self._secret = secret
        self._clock = clock
        self._forced_at: float | None = None

    def configured(self) -> bool:
        """Whether any key source is set up."""
        return bool(self._env_key) or self._secret is not None

    def get_key(self) -> str:
        """The key; raise KeyUnavailable naming the source when it cannot be read."""
        if self._env_key:
            return self._env_key
        if self._secret is None:
            raise KeyUnavailable("no OpenAI API key is configured (set OPENAI_API_KEY or OPENAI_API_KEY_SECRET_ID)")
        try:
            return self._secret.get()
        except ConfigError as exc:
            raise KeyUnavailable(f"the OpenAI key is unavailable: {exc}") from exc

    def refresh_key(self) -> str:
        """Re-read the key from Secrets Manager now; the environment's key cannot change."""
        if self._env_key or self._secret is None:
            return self.get_key()
        now = self._clock()
        if self._forced_at is not None and now - self._forced_at < KEY_REFRESH_INTERVAL_SECONDS:
            # A revoked key makes every request a 401: re-read the secret at most this often.
            return self.get_key()
        self._forced_at = now
        try:
            return self._secret.refresh()
        except ConfigError as exc:
            raise KeyUnavailable(f"the OpenAI key is unavailable: {exc}") from exc

    def status(self) -> dict[str, Any]:
        """Where the key comes from and how old it is; never the key."""
        if self._env_key:
            return {"source": "env:OPENAI_API_KEY", "configured": True}
        if self._secret is None:
            return {"source": None, "configured": False}
        return {"configured": True, **_cache_status(self._secret.status())}


@dataclass
class Runtime:
    """The wired service and what /health needs to describe it."""

    settings: Settings
    service: RouterService
    registry: CachedValue[Registry]
    keys: OpenAIKeySource
    breakers: CircuitBreakers

    def health(self) -> dict[str, Any]:
        """Status, version, registry and key sources with their ages; never a secret."""
        status = "ok"
        try:
            models: int = len(self.registry.get().models)
            error = None
        except ConfigError as exc:
            status, models, error = "degraded", 0, str(exc)
        registry: dict[str, Any] = {**_cache_status(self.registry.status()), "models": models}
        if error is not None:
            registry["error"] = error
        key = self.keys.status()
        if key.get("last_error") and not key.get("loaded"):
            status = "degraded"  # the key's first load failed: OpenAI models cannot be served
        return {
            "status": status,
            "version": __version__,
            "registry": registry,
            "openai_key": key,
            "open_breakers": self.breakers.open_models(),
        }


def build_runtime(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.monotonic,
    aws_clients: AwsClients | None = None,
    providers: Mapping[str, Provider] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Runtime:
    """Wire the service from settings; nothing here touches the network."""
    clients = aws_clients or AwsClients()
    registry = _registry_source(settings, clients, clock)
    secret = None
    if not settings.openai_api_key and settings.openai_api_key_secret_id:
        secret_id = settings.openai_api_key_secret_id
        secret = CachedValue(
            lambda: read_openai_key_secret(clients, secret_id),
            f"secretsmanager:{secret_id}",
            settings.config_ttl_seconds,
            clock,
        )
    keys = OpenAIKeySource(settings.openai_api_key, secret, clock)
    if providers is None:
        providers = {
            "mock": MockProvider(simulate_latency=settings.mock_simulate_latency, sleep=sleep),
            "openai": OpenAIProvider(keys, base_url=settings.openai_base_url),
        }
    breakers = CircuitBreakers(settings.breaker_failure_threshold, settings.breaker_cooldown_seconds, clock)
    service = RouterService(
        registry=registry.get,
        providers=providers,
        breakers=breakers,
        deadline_seconds=settings.request_deadline_seconds,
        provider_timeout_seconds=settings.provider_timeout_seconds,
        clock=clock,
        sleep=sleep,
    )
    return Runtime(settings=settings, service=service, registry=registry, keys=keys, breakers=breakers)


def _registry_source(settings: Settings, clients: AwsClients, clock: Callable[[], float]) -> CachedValue[Registry]:
    if settings.models_config_json is not None:
        text = settings.models_config_json
        return CachedValue(lambda: _parse(text, "MODELS_CONFIG_JSON"), "env:MODELS_CONFIG_JSON", math.inf, clock)
    if settings.models_config_ssm_parameter is not None:
        name = settings.models_config_ssm_parameter
        return CachedValue(
            lambda: _parse(read_ssm_parameter(clients, name), f"SSM parameter '{name}'"),
            f"ssm:{name}",
            settings.config_ttl_seconds,
            clock,
        )
    source = "builtin+openai" if settings.openai_key_configured else "builtin"
    return CachedValue(lambda: default_registry(settings), source, math.inf, clock)


def _parse(text: str, where: str) -> Registry:
    try:
        return parse_registry_json(text, KNOWN_PROVIDERS)
    except RegistryError as exc:
        raise ConfigError(f"the registry in {where} is invalid: {exc}") from exc


def default_registry(settings: Settings) -> Registry:
    """The built-in mock tiers, plus the seed's OpenAI model when a key is configured."""
    entries: list[Any] = default_registry_rows()
    if settings.openai_key_configured:
        model = settings.openai_model
        entries.append(
            {
                "provider": "openai",
                "name": model.name,
                "quality": _env_number("OPENAI_MODEL_QUALITY", model.quality),
                "in_cost_per_1k": _env_number("OPENAI_INPUT_COST_PER_1K", model.input_cost_per_1k),
                "out_cost_per_1k": _env_number("OPENAI_OUTPUT_COST_PER_1K", model.output_cost_per_1k),
                "latency_ms": _env_number("OPENAI_MODEL_LATENCY_MS", model.latency_ms),
                "max_output_tokens": _env_number("OPENAI_MODEL_MAX_TOKENS", model.max_output_tokens),
            }
        )
    try:
        return build_registry(entries, KNOWN_PROVIDERS)
    except RegistryError as exc:
        raise ConfigError(f"the built-in registry with the OPENAI_* model is invalid: {exc}") from exc


def _env_number(variable: str, raw: str) -> Any:
    try:
        return json.loads(raw, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{variable} must be a number, got {raw!r}") from exc


def _cache_status(status: CacheStatus) -> dict[str, Any]:
    result: dict[str, Any] = {"source": status.source, "loaded": status.loaded}
    if status.age_seconds is not None:
        result["age_seconds"] = round(status.age_seconds, 3)
    if status.last_error:
        result["last_error"] = status.last_error
    return result
