"""What the composition root hands the web layer: the wired service and what /health reports.

The web layer depends on this record, never on ``bootstrap`` (and so never on the adapters).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from costroute.config.cache import CachedValue
from costroute.config.settings import Settings
from costroute.core.registry import Registry
from costroute.observe.record import RequestObserver, RequestRecord
from costroute.service.router import RouterService

if TYPE_CHECKING:
    from costroute.service.spend import SpendGate


class MetricsExposition(Protocol):
    """What ``GET /metrics`` serves."""

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics as text, and its content type (by the request's Accept header)."""
        ...


class NoObserver:
    """Observes nothing."""

    def observe(self, record: RequestRecord) -> None:
        """Nothing to do."""


@dataclass
class Runtime:
    """The wired service, its registry source, the spend gate, the observers, and the health report."""

    settings: Settings
    service: RouterService
    registry: CachedValue[Registry]
    health: Callable[[], dict[str, Any]]
    spend: SpendGate | None = None
    observer: RequestObserver = field(default_factory=NoObserver)
    metrics: MetricsExposition | None = None
