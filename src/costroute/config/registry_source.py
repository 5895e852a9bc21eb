"""Where the registry comes from, in this order: ``MODELS_CONFIG_JSON``, ``MODELS_CONFIG_SSM_PARAMETER``,
``MODELS_CONFIG_FILE``, else the built-in registry.

Two providers are built in and always present unless a document redefines their names: ``mock``,
and ``openai`` (OpenAI's API or ``OPENAI_BASE_URL``, keyed by ``OPENAI_API_KEY`` or the secret
``OPENAI_API_KEY_SECRET_ID``). The built-in registry is the four mock tiers plus, when a key is
configured, the seed's ``OPENAI_*`` model; a user who set a key then gets real answers: the mock
tiers stay listed but routing skips them (they can still be pinned by id).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from costroute.config.aws import AwsClients
from costroute.config.cache import CachedValue, ConfigError
from costroute.config.documents import inline_or_ssm, located
from costroute.config.settings import Settings
from costroute.core.registry import (
    CredentialRef,
    CredentialSource,
    ProviderKindRules,
    ProviderSpec,
    Registry,
    RegistryError,
    build_registry,
    default_registry_rows,
    parse_registry_text,
)

# The JSON field of OPENAI_API_KEY_SECRET_ID that holds the key, when the secret is JSON.
OPENAI_SECRET_FIELD = "OPENAI_API_KEY"
MOCK_NOT_ROUTED = (
    "not routed to: a real provider is configured (an OpenAI key), so the built-in mock models answer only when "
    "pinned by id"
)


def builtin_providers(settings: Settings) -> dict[str, ProviderSpec]:
    """The ``mock`` and ``openai`` providers, the latter from the seed's variables."""
    if settings.openai_api_key:
        key = CredentialRef(CredentialSource.ENV, name="OPENAI_API_KEY")
    elif settings.openai_api_key_secret_id:
        key = CredentialRef(CredentialSource.SECRET, name=settings.openai_api_key_secret_id,
                            field=OPENAI_SECRET_FIELD, field_optional=True)
    else:
        key = CredentialRef(CredentialSource.MISSING, hint="set OPENAI_API_KEY or OPENAI_API_KEY_SECRET_ID")
    return {
        "mock": ProviderSpec(name="mock", kind="mock", builtin=True),
        "openai": ProviderSpec(name="openai", kind="openai", base_url=settings.openai_base_url, api_key=key,
                               builtin=True),
    }


def registry_source(
    settings: Settings, clients: AwsClients, clock: Callable[[], float], kinds: Mapping[str, ProviderKindRules]
) -> CachedValue[Registry]:
    """The cached registry, from the first source that is set."""
    builtins = builtin_providers(settings)
    parse = located(lambda text: parse_registry_text(text, kinds, builtins), "the registry")
    found = inline_or_ssm(parse, settings.models_config_json, "MODELS_CONFIG_JSON", settings.models_config_ssm_parameter,
                          settings, clients, clock)
    if found is not None:
        return found
    if settings.models_config_file is not None:
        path = settings.models_config_file
        return CachedValue(lambda: parse(read_registry_file(path), f"file '{path}'"), f"file:{path}",
                           settings.config_ttl_seconds, clock)
    source = "builtin+openai" if settings.openai_key_configured else "builtin"
    return CachedValue(lambda: default_registry(settings, kinds), source, math.inf, clock)


def read_registry_file(path: str) -> str:
    """The text of a registry file (a relative path is relative to the working directory: on Lambda, the artifact)."""
    try:
        with open(path, encoding="utf-8") as registry_file:
            return registry_file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"MODELS_CONFIG_FILE '{path}' could not be read: {exc}") from exc


def default_registry(settings: Settings, kinds: Mapping[str, ProviderKindRules]) -> Registry:
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
        registry = build_registry(entries, kinds, builtin_providers(settings))
    except RegistryError as exc:
        raise ConfigError(f"the built-in registry with the OPENAI_* model is invalid: {exc}") from exc
    if not settings.openai_key_configured:
        return registry
    excluded = {model.id: MOCK_NOT_ROUTED for model in registry.models if model.provider == "mock"}
    return Registry(models=registry.models, providers=registry.providers, routing_excluded=excluded)


def _env_number(variable: str, raw: str) -> Any:
    try:
        return json.loads(raw, parse_float=Decimal)
    except ValueError as exc:  # not JSON, or an integer of over 4,300 digits
        raise ConfigError(f"{variable} must be a number, got {raw[:40]!r}") from exc
