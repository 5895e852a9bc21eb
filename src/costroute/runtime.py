"""What the composition root hands the web layer: the wired service and what /health reports.

The web layer depends on this record, never on ``bootstrap`` (and so never on the adapters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from costroute.config.cache import CachedValue
from costroute.config.settings import Settings
from costroute.core.registry import Registry
from costroute.service.router import RouterService


@dataclass
class Runtime:
    """The wired service, its registry source, and the health report."""

    settings: Settings
    service: RouterService
    registry: CachedValue[Registry]
    health: Callable[[], dict[str, Any]]
