"""``GET /metrics``: the router's counters and histograms in Prometheus' text format (``make serve``).

Served when the runtime has Prometheus metrics (``PROMETHEUS_MULTIPROC_DIR`` set, as ``make serve``
does, or ``PROMETHEUS_METRICS=true``); otherwise 404. On Lambda the same metrics go to CloudWatch
as EMF log lines instead.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from costroute.web.context import runtime
from costroute.web.errors import error_response

metrics = Blueprint("metrics", __name__)


@metrics.get("/metrics")
def prometheus_metrics() -> Response:
    """Every request counted so far, by model, provider and status."""
    exposition = runtime().metrics
    if exposition is None:
        return error_response(404, "not_found_error", "metrics are not enabled here: set PROMETHEUS_MULTIPROC_DIR "
                              "(make serve does) or PROMETHEUS_METRICS=true")
    body, content_type = exposition.exposition(request.headers.get("Accept", ""))
    return Response(body, content_type=content_type)
