"""Prometheus metrics for ``GET /metrics``: the same facts as the EMF metrics, as counters and histograms.

=======================================  =========  ===========================  =============================
metric                                   type       labels                       value
=======================================  =========  ===========================  =============================
``costroute_requests_total``             counter    model, provider, status      requests (status: HTTP status)
``costroute_errors_total``               counter    type                         failed requests by error type
``costroute_cost_usd_total``             counter    model, provider              actual cost, dollars
``costroute_estimated_cost_usd_total``   counter    model, provider              estimated cost, dollars
``costroute_over_budget_usd_total``      counter    model, provider              dollars spent over budgets
``costroute_tokens_total``               counter    model, provider, kind        tokens; kind: ``input`` (every
                                                                                 input token, cached included),
                                                                                 ``cached_input``,
                                                                                 ``cache_write_input``, ``output``
``costroute_failovers_total``            counter    (none)                       failovers
``costroute_ceiling_clamped_total``      counter    (none)                       calls the budget ceiling lowered
``costroute_over_budget_total``          counter    (none)                       calls that went over a budget
``costroute_budget_refused_total``       counter    (none)                       requests an exhausted budget
                                                                                 refused
``costroute_router_overhead_seconds``    histogram  (none)                       the router's own time
``costroute_provider_latency_seconds``   histogram  provider                     time in provider calls, for
                                                                                 requests that called one
=======================================  =========  ===========================  =============================

``model`` and ``provider`` are the registry's names (``none`` when the request had no model): a
bounded set, as labels must be. Callers, request ids and paths are never labels. Dollars are
floats here (a Prometheus sample is a float); the exact amounts are in the log line.

Across gunicorn workers: when ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's own variable) is
set, each worker writes its samples to files in that directory and ``exposition`` merges every
worker's files with ``MultiProcessCollector`` into a fresh registry, so a scrape answered by any
worker sees the whole server. The directory must exist before the workers start, be emptied
between runs, and be set before prometheus_client is first imported (it picks its storage at
import). A dead worker's counters and histograms stay in the directory on purpose, so totals never
go backwards; ``mark_process_dead`` (``gunicorn.conf.py``'s ``child_exit``) removes only a dead
worker's live gauges, and these metrics have none. Without the variable, each ``PrometheusMetrics``
has a private registry, never the global default one, so tests and several apps in one process do
not collide. In multiprocess mode the samples are per process by nature, so every
``PrometheusMetrics`` of a process shares one set of metric objects (two sets would overwrite each
other's files).

prometheus_client is imported on the first construction, never by importing this module.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from typing import TYPE_CHECKING

from costroute.observe.emf import dimension_value
from costroute.observe.logline import error_type
from costroute.observe.record import RequestRecord

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The router's own time is well under a millisecond to a few: buckets from 0.1 ms to 250 ms.
ROUTER_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
# A provider call is 100 ms (a fast model) to tens of seconds (a long answer), up to the deadline.
PROVIDER_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)


class _Instruments:
    """The metric objects, registered in ``registry`` (``None``: in multiprocess mode, registered nowhere)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        from prometheus_client import Counter, Histogram

        model_provider = ("model", "provider")
        self.requests = Counter("costroute_requests", "Requests served, by model, provider and HTTP status.",
                                ("model", "provider", "status"), registry=registry)
        self.errors = Counter("costroute_errors", "Failed requests, by error type.", ("type",), registry=registry)
        self.cost = Counter("costroute_cost_usd", "Actual cost in US dollars.", model_provider, registry=registry)
        self.estimated_cost = Counter("costroute_estimated_cost_usd", "Estimated cost in US dollars.", model_provider,
                                      registry=registry)
        self.over_budget_usd = Counter("costroute_over_budget_usd", "US dollars spent over a budget.", model_provider,
                                       registry=registry)
        self.tokens = Counter("costroute_tokens", "Tokens, by kind: input (cached included), cached_input, "
                              "cache_write_input, output.", ("model", "provider", "kind"), registry=registry)
        self.failovers = Counter("costroute_failovers", "Failovers to another model.", registry=registry)
        self.ceiling_clamped = Counter("costroute_ceiling_clamped", "Calls whose max_tokens the budget ceiling lowered.",
                                       registry=registry)
        self.over_budget = Counter("costroute_over_budget", "Calls whose settled cost went over a budget.",
                                   registry=registry)
        self.budget_refused = Counter("costroute_budget_refused",
                                      "Requests the caller's budget refused (exhausted, or too small for any call).",
                                      registry=registry)
        self.router_overhead = Histogram("costroute_router_overhead_seconds", "The router's own time per request.",
                                         buckets=ROUTER_OVERHEAD_BUCKETS, registry=registry)
        self.provider_latency = Histogram("costroute_provider_latency_seconds", "Time in provider calls per request.",
                                          ("provider",), buckets=PROVIDER_LATENCY_BUCKETS, registry=registry)


_shared_lock = threading.Lock()
_shared: dict[str, _Instruments] = {}


def _multiprocess_instruments(directory: str) -> _Instruments:
    with _shared_lock:
        if directory not in _shared:
            # No registry: the samples live in the directory's files, and exposition() reads them all.
            _shared[directory] = _Instruments(None)
        return _shared[directory]


def _check_multiprocess_storage(directory: str | None) -> None:
    """Refuse a process whose prometheus_client picked its storage under another setting of the variable."""
    from prometheus_client import values

    in_memory = values.ValueClass is values.MutexValue
    if directory is not None and in_memory:
        raise RuntimeError(f"{MULTIPROC_ENV} was set after prometheus_client was imported: this process would count "
                           "only in its own memory; set it before the server starts")
    if directory is None and not in_memory:
        raise RuntimeError(f"{MULTIPROC_ENV} was unset after prometheus_client was imported in multiprocess mode "
                           "(or the deprecated prometheus_multiproc_dir is set)")
    if directory is not None and not os.path.isdir(directory):
        raise ValueError(f"{MULTIPROC_ENV}={directory!r} is not a directory; create it before the server starts")


def _amount(value: float) -> float:
    """A value a counter or histogram can take: finite and not negative (else 0, which changes no total)."""
    return value if math.isfinite(value) and value > 0 else 0.0


def prometheus_available() -> bool:
    """Whether prometheus_client is installed (a dev and server dependency, not in the Lambda artifact)."""
    return importlib.util.find_spec("prometheus_client") is not None


class PrometheusMetrics:
    """Counters and histograms of every request, and their exposition for ``GET /metrics``."""

    def __init__(self) -> None:
        directory = os.environ.get(MULTIPROC_ENV, "").strip() or None
        _check_multiprocess_storage(directory)
        self.multiprocess_dir = directory
        self._registry: CollectorRegistry | None
        if directory is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry()
            self._metrics = _Instruments(self._registry)
        else:
            self._registry = None
            self._metrics = _multiprocess_instruments(directory)

    def observe(self, record: RequestRecord) -> None:
        """Count the record."""
        metrics = self._metrics
        model = dimension_value(record.model)
        provider = dimension_value(record.provider)
        metrics.requests.labels(model, provider, str(record.http_status)).inc()
        failure = error_type(record)
        if failure is not None:
            metrics.errors.labels(dimension_value(failure)).inc()
        for counter, amount in ((metrics.cost, record.cost_usd), (metrics.estimated_cost, record.estimated_cost_usd),
                                (metrics.over_budget_usd, record.over_budget_usd if record.over_budget else None)):
            # A counter only goes up; a missing amount adds 0 (the series still appears, so rates start at 0).
            counter.labels(model, provider).inc(_amount(float(amount)) if amount is not None else 0.0)
        for kind, count in (("input", record.input_tokens), ("cached_input", record.cached_input_tokens),
                            ("cache_write_input", record.cache_write_tokens), ("output", record.output_tokens)):
            metrics.tokens.labels(model, provider, kind).inc(max(count, 0))
        if record.failovers > 0:
            metrics.failovers.inc(record.failovers)
        if record.ceiling_applied:
            metrics.ceiling_clamped.inc()
        if record.over_budget:
            metrics.over_budget.inc()
        if record.budget_refused:
            metrics.budget_refused.inc()
        metrics.router_overhead.observe(_amount(record.router_overhead_ms) / 1000)
        if record.attempts:
            metrics.provider_latency.labels(provider).observe(_amount(record.provider_ms) / 1000)

    def registry(self) -> CollectorRegistry:
        """The registry to read: the private one, or a fresh one merging every process's files."""
        if self._registry is not None:
            return self._registry
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        merged = CollectorRegistry()
        # prometheus_client ships types, but not for this constructor.
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return merged

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The body and content type of ``GET /metrics`` (text format 0.0.4; OpenMetrics when ``accept`` asks)."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry()), content_type
