"""Provider adapters built in tests as the composition root builds them, and small key sources."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costroute.core.registry import Model, ProviderSpec, Registry
from costroute.providers.base import AdapterDeps, KeySource, Provider
from costroute.providers.openai import OpenAIProvider


class StaticKey:
    """A key that is always there."""

    def __init__(self, key: str | None) -> None:
        self.key = key

    def configured(self) -> bool:
        return True

    def get_key(self) -> str | None:
        return self.key

    def refresh_key(self) -> str | None:
        return self.key

    def problem(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"source": "test", "configured": True}


class RotatingKeys(StaticKey):
    """A key source whose key was rotated: the cached key is stale, a re-read gets the new one."""

    def __init__(self, stale: str, fresh: str) -> None:
        super().__init__(stale)
        self.stale, self.fresh = stale, fresh
        self.refreshes = 0

    def get_key(self) -> str:
        return self.fresh if self.refreshes else self.stale

    def refresh_key(self) -> str:
        self.refreshes += 1
        return self.fresh


def openai_provider(keys: KeySource, base_url: str | None = None, name: str = "openai",
                    builtin: bool = False) -> OpenAIProvider:
    """An OpenAI-compatible adapter for one provider, as the composition root builds it."""
    spec = ProviderSpec(name=name, kind="openai", base_url=base_url, builtin=builtin)
    return OpenAIProvider(spec, AdapterDeps(keys=keys, provider_timeout_s=20))


class StaticLookup:
    """Adapters by provider name, for building a RouterService directly."""

    def __init__(self, adapters: Mapping[str, Provider]) -> None:
        self.adapters = dict(adapters)

    def for_model(self, model: Model, registry: Registry) -> Provider | None:
        return self.adapters.get(model.provider)
