"""The composition root: the one place that picks concrete adapters from settings.

The entrypoints (``handler.py``, ``wsgi.py``, ``app.py``) call ``build_runtime`` and hand the
result to ``web.create_app``. Tests build the service through the same door as production,
swapping in fakes where they need to (a clock, AWS clients, provider adapters by name).
"""

from __future__ import annotations

import os
import threading
import time
from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from costroute import __version__
from costroute.breaker import CircuitBreakers
from costroute.config.aws import AwsClients
from costroute.config.cache import CachedValue, ConfigError
from costroute.config.credentials import Secrets, cache_status, key_source
from costroute.config.registry_source import registry_source
from costroute.config.settings import Settings
from costroute.core.registry import Model, ProviderSpec, Registry
from costroute.observe.record import RequestObserver
from costroute.providers import KINDS, KindCatalog
from costroute.providers.base import AdapterDeps, KeySource, Provider
from costroute.runtime import Runtime
from costroute.service.router import RouterService

if TYPE_CHECKING:
    from costroute.core.budgets import BudgetsDocument
    from costroute.observe.prometheus import PrometheusMetrics
    from costroute.service.spend import SpendGate
    from costroute.stores.base import SpendStore


class ProviderPool:
    """One adapter per configured provider, built on first use and rebuilt when its settings change."""

    def __init__(
        self,
        kinds: KindCatalog,
        secrets: Secrets,
        environ: Mapping[str, str],
        settings: Settings,
        sleep: Callable[[float], None],
        overrides: Mapping[str, Provider] | None = None,
    ) -> None:
        self._kinds = kinds
        self._secrets = secrets
        self._environ = environ
        self._settings = settings
        self._sleep = sleep
        self._overrides = dict(overrides or {})
        self._adapters: dict[str, tuple[ProviderSpec, Provider, KeySource]] = {}
        self._lock = threading.Lock()

    def for_model(self, model: Model, registry: Registry) -> Provider | None:
        """The adapter of the model's provider in this registry, or None when it has no such provider."""
        spec = registry.providers.get(model.provider)
        return None if spec is None else self.get(spec)

    def get(self, spec: ProviderSpec) -> Provider:
        """The adapter for a provider's settings."""
        override = self._overrides.get(spec.name)
        if override is not None:
            return override
        cached = self._adapters.get(spec.name)
        # The same registry hands over the same spec object: identity first, equality after a refresh.
        if cached is not None and (cached[0] is spec or cached[0] == spec):
            return cached[1]
        with self._lock:
            cached = self._adapters.get(spec.name)
            if cached is None or cached[0] != spec:
                keys = key_source(spec.name, spec.api_key, self._secrets, self._environ)
                deps = AdapterDeps(keys=keys, provider_timeout_s=self._settings.provider_timeout_seconds,
                                   environ=self._environ, sleep=self._sleep,
                                   mock_simulate_latency=self._settings.mock_simulate_latency)
                cached = (spec, self._kinds[spec.kind].build(spec, deps), keys)
                self._adapters[spec.name] = cached
            return cached[1]

    def keys(self, spec: ProviderSpec) -> KeySource | None:
        """The provider's key source (None for an adapter given by a test)."""
        self.get(spec)
        cached = self._adapters.get(spec.name)
        return cached[2] if cached is not None else None


def build_runtime(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    aws_clients: AwsClients | None = None,
    providers: Mapping[str, Provider] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    wall_clock: Callable[[], float] = time.time,
    spend_store: SpendStore | None = None,
) -> Runtime:
    """Wire the service from settings; nothing here touches the network.

    ``providers`` replaces the adapters of the providers so named (tests); ``environ`` is the
    process environment as the service sees it (default: the real one): where ``{"env": ...}`` keys
    are read, and what adapters read by standard (``AWS_REGION``). ``wall_clock`` is the time that
    budget windows and reservations are counted in; ``spend_store`` replaces the store the settings
    would choose (tests).
    """
    clients = aws_clients or AwsClients()
    registry = registry_source(settings, clients, clock, KINDS)
    secrets = Secrets(clients, settings.config_ttl_seconds, clock)
    # The settings' OPENAI_API_KEY is the built-in provider's key, whatever the environment says now.
    seed_key = {"OPENAI_API_KEY": settings.openai_api_key} if settings.openai_api_key else {}
    keys_environ = ChainMap(seed_key, dict(os.environ) if environ is None else dict(environ))
    pool = ProviderPool(KINDS, secrets, keys_environ, settings, sleep, providers)
    breakers = CircuitBreakers(settings.breaker_failure_threshold, settings.breaker_cooldown_seconds, clock)
    budgets: CachedValue[BudgetsDocument] | None = None
    gate: SpendGate | None = None
    if settings.budgets_configured:
        # Imported only with budgets: a deployment without them never loads spend control.
        from costroute.config.budgets_source import budgets_source
        from costroute.service.spend import SpendGate

        budgets = budgets_source(settings, clients, clock)
        if budgets is not None:
            gate = SpendGate(budgets.get, spend_store or _spend_store(settings, clients), wall_clock, sleep)
    service = RouterService(
        registry=registry.get,
        providers=pool,
        breakers=breakers,
        deadline_seconds=settings.request_deadline_seconds,
        provider_timeout_seconds=settings.provider_timeout_seconds,
        clock=clock,
        sleep=sleep,
        spend=gate,
    )

    def health() -> dict[str, Any]:
        """Status, version, the registry's source and age, every provider; never a secret."""
        status = "ok"
        listed: list[dict[str, Any]] = []
        open_breakers = breakers.open_models()
        try:
            current = registry.get()
        except ConfigError as exc:
            status = "degraded"
            registry_status = {**cache_status(registry.status()), "models": 0, "error": str(exc)}
            return {"status": status, "version": __version__, "registry": registry_status, "providers": listed,
                    "open_breakers": open_breakers}
        registry_status = {**cache_status(registry.status()), "models": len(current.models)}
        used = {model.provider for model in current.models}
        for name, spec in sorted(current.providers.items()):
            adapter = pool.get(spec)
            entry: dict[str, Any] = {"name": name, "kind": spec.kind, "builtin": spec.builtin,
                                     "models": sum(1 for m in current.models if m.provider == name)}
            if spec.base_url:
                entry["host"] = urlsplit(spec.base_url).hostname
            entry.update(adapter.status())
            keys = pool.keys(spec)
            if keys is not None:
                entry["key"] = key = keys.status()
                if key.get("last_error") and not key.get("loaded") and name in used:
                    status = "degraded"  # the key's first load failed: this provider's models cannot be served
            entry["open_breakers"] = {m: n for m, n in open_breakers.items() if m.startswith(f"{name}:")}
            listed.append(entry)
        report = {"status": status, "version": __version__, "registry": registry_status, "providers": listed,
                  "open_breakers": open_breakers}
        if budgets is not None:
            report["budgets"] = budgets_health(budgets, gate)
            if "error" in report["budgets"]:
                report["status"] = "degraded"  # requests are refused while the budgets cannot be read
        return report

    observer, metrics = _observers(settings)
    return Runtime(settings=settings, service=service, registry=registry, health=health, spend=gate,
                   observer=observer, metrics=metrics)


def _observers(settings: Settings) -> tuple[RequestObserver, PrometheusMetrics | None]:
    """One line per request (EMF on Lambda, readable or JSON locally), and Prometheus metrics when asked for."""
    from costroute.observe.sinks import CompositeObserver, EmfObserver, LogLineObserver

    if settings.log_format == "emf":
        # Alone: the EMF document is the request's log line (a second line would count twice in Logs Insights).
        return CompositeObserver([EmfObserver()]), None
    observers: list[RequestObserver] = [LogLineObserver("json" if settings.log_format == "json" else "readable")]
    metrics = None
    if settings.prometheus_metrics:
        from costroute.observe.prometheus import PrometheusMetrics, prometheus_available

        if prometheus_available():
            metrics = PrometheusMetrics()
            observers.append(metrics)
    return CompositeObserver(observers), metrics


def _spend_store(settings: Settings, clients: AwsClients) -> SpendStore:
    """DynamoDB when a table is named (Lambda), else the SQLite file (local)."""
    if settings.spend_table_name:
        from costroute.stores.dynamodb import DynamoDBStore

        return DynamoDBStore(settings.spend_table_name, lambda: clients.client("dynamodb"))
    from costroute.stores.sqlite import SQLiteStore

    return SQLiteStore(settings.spend_db_path)


def budgets_health(budgets: CachedValue[BudgetsDocument], gate: SpendGate | None) -> dict[str, Any]:
    """Where the budgets come from, how old, where spend is stored; never a caller's spend."""
    entry: dict[str, Any] = cache_status(budgets.status())
    try:
        document = budgets.get()
        entry.update(callers=len(document.callers), require_known_callers=document.require_known_callers)
    except ConfigError as exc:
        entry["error"] = str(exc)
    if gate is not None:
        entry["store"] = type(gate.store).__name__
    return entry
