"""The routing service: a short loop over the pure core (selection, plan, recovery, settlement)."""

from costroute.service.router import RouteOutcome, RouterService, StreamedRoute, StreamEnd

__all__ = ["RouteOutcome", "RouterService", "StreamEnd", "StreamedRoute"]
