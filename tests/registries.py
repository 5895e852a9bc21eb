"""Building registries in tests through the same parser and built-in providers as production."""

from __future__ import annotations

import json
from typing import Any

from costroute.config.registry_source import builtin_providers
from costroute.config.settings import Settings
from costroute.core.registry import Registry, build_registry, parse_registry_text
from costroute.providers import KINDS


def parse_registry(document: str | Any, settings: Settings | None = None) -> Registry:
    """A registry from JSON text or decoded data, over the built-in providers of ``settings``."""
    builtins = builtin_providers(settings or Settings())
    if isinstance(document, str):
        return parse_registry_text(document, KINDS, builtins)
    return build_registry(json.loads(json.dumps(document)), KINDS, builtins)
