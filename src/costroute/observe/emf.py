"""CloudWatch metrics on Lambda through the Embedded Metric Format: the log line, with ``_aws`` metadata.

One JSON document per request: every field of ``logline.log_fields``, the metric members, the
dimension members and ``_aws``. CloudWatch Logs extracts the metrics from it, in namespace
``Costroute`` by default, and the same line stays searchable as the request's log line. It must be
written to stdout whole, on one line, by ``sys.stdout.write`` (``sinks.EmfObserver``), not through
``logging``: with the function's JSON log format the Lambda runtime wraps a logging record in its
own JSON object, and CloudWatch extracts no metric from a wrapped document.

Directives (``_aws.CloudWatchMetrics``):

1. Every metric below, with dimension sets ``[[], ["Model"], ["Provider"]]``: totals, per model,
   per provider. ``Model`` is the model that served (or was chosen), ``Provider`` its configured
   provider name, and ``none`` when the request had none (refused before any choice).
2. Only when the request failed: ``Errors`` with dimension set ``[["ErrorType"]]``. Error types are
   a bounded set (our reasons and error types, or an HTTP status).
3. Only when a provider was called: ``ProviderFailurePercent`` with dimension set ``[["Provider"]]``,
   one value per call (100 when the call failed, 0 when it answered), so that its Average per
   provider is that provider's failure rate and its SampleCount its number of calls: what the
   template's provider-failure alarm reads. A request's calls can reach several providers, and a
   document holds one value per dimension, so the calls to the provider that served go in this
   document and the calls to each other provider in a small document of their own
   (``event.name`` ``costroute.provider_calls``, the request id, the provider and the values):
   ``emf_documents`` gives them all. A call refused as the caller's mistake (``bad_request``,
   ``too_large``) counts as answered: the provider did its part.

``Errors`` is one root member named by both directives: 0 or 1 in the first (so its Average is the
error rate), and by type in the second. Callers and request ids stay plain fields, never
dimensions: each distinct dimension value is a metric CloudWatch bills for.

=======================  ============  ======================================================
metric                   unit          value
=======================  ============  ======================================================
Requests                 Count         1
Errors                   Count         1 on a 4xx/5xx or an error event in a stream, else 0
CostUSD                  None          the actual cost as a float (when there is one)
EstimatedCostUSD         None          the estimate as a float (when there is one)
OverBudgetUSD            None          by how much a call went over the budget (when it did)
InputTokens              Count         every input token, cached ones included
CachedInputTokens        Count         input tokens read from a prompt cache
CacheWriteInputTokens    Count         input tokens written to a prompt cache
OutputTokens             Count         output tokens
RouterOverheadMs         Milliseconds  the router's own time
ProviderLatencyMs        Milliseconds  time in provider calls (only when a provider was called)
Failovers                Count         failovers of the request
CeilingClamped           Count         1 when the budget ceiling lowered max_tokens
OverBudget               Count         1 when the settled cost went over the budget
BudgetRefused            Count         1 when the caller's budget refused the request (402)
ProviderFailurePercent   Percent       per provider call: 100 failed, 0 answered (directive 3)
=======================  ============  ======================================================

Dollars have no CloudWatch unit, so they are ``None``. A metric value must be a JSON number, so
the dollar metrics carry the float of the exact amount; the exact decimal string stays in
``costroute.cost_usd`` (a different member: metric names are CamelCase, fields dotted lowercase).
A metric whose value does not apply (no cost yet, no provider call) is left out of both the root
and the directive, rather than sent as a 0 that would drag an average down.

Why not Powertools' Metrics: ``python -X importtime -c "import aws_lambda_powertools.metrics"``
(aws-lambda-powertools 3.37.0, Python 3.11, .pyc files compiled, 5 runs) took 39-46 ms on its
own and 10-16 ms (11.5 typical) on top of Flask and ``costroute.entry`` already imported (it
brings its logger, jmespath and typing_extensions). The cold start to the first mock ``/route``
is ~110 ms against a floor of ~93 ms and a target of at most x1.25 (~116 ms): Powertools alone
would spend twice the headroom. This module needs ``json`` and the log fields only (well under
a millisecond to import), writes several dimension sets in one document, which Powertools'
``Metrics`` does not, and emits per request rather than per flushed invocation.
"""

from __future__ import annotations

import math
import time
from decimal import Decimal
from typing import Any

from costroute.core.outcome import FailureKind
from costroute.observe.logline import MAX_TEXT, error_type, log_fields, to_json
from costroute.observe.record import RequestRecord

NAMESPACE = "Costroute"
NO_VALUE = "none"
# CloudWatch refuses dimension values over 1024 characters; ours are registry names, far shorter.
MAX_DIMENSION_VALUE = 250
_YEAR_3000 = 32_503_680_000.0
DIMENSION_SETS: tuple[tuple[str, ...], ...] = ((), ("Model",), ("Provider",))
ERROR_DIMENSION_SETS: tuple[tuple[str, ...], ...] = (("ErrorType",),)
PROVIDER_DIMENSION_SETS: tuple[tuple[str, ...], ...] = (("Provider",),)
PROVIDER_FAILURE_METRIC = "ProviderFailurePercent"
PROVIDER_CALLS_EVENT = "costroute.provider_calls"
# Attempts that ended as the caller's mistake: the provider answered as it should.
CALLER_MISTAKES = frozenset({FailureKind.BAD_REQUEST.value, FailureKind.TOO_LARGE.value})
# The specification allows at most 100 values in one metric's array.
MAX_VALUES = 100
# Every metric the first directive may name, with its CloudWatch unit.
METRIC_UNITS: dict[str, str] = {
    "Requests": "Count",
    "Errors": "Count",
    "CostUSD": "None",
    "EstimatedCostUSD": "None",
    "OverBudgetUSD": "None",
    "InputTokens": "Count",
    "CachedInputTokens": "Count",
    "CacheWriteInputTokens": "Count",
    "OutputTokens": "Count",
    "RouterOverheadMs": "Milliseconds",
    "ProviderLatencyMs": "Milliseconds",
    "Failovers": "Count",
    "CeilingClamped": "Count",
    "OverBudget": "Count",
    "BudgetRefused": "Count",
}


def dimension_value(value: str | None) -> str:
    """A dimension value: the name, or ``none`` when there is none (CloudWatch refuses an empty one).

    CloudWatch takes printable ASCII only in a dimension value and drops the metrics of a document
    that breaks the rule, so any other character (a registry name may hold any) becomes ``?``.
    """
    if value is None or not value.strip():
        return NO_VALUE
    value = value[:MAX_DIMENSION_VALUE]
    if value.isascii() and value.isprintable():
        return value
    return "".join(char if char.isascii() and char.isprintable() else "?" for char in value)


def _dollars(amount: Decimal | None) -> float | None:
    if amount is None:
        return None
    value = float(amount)
    return value if math.isfinite(value) else None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def metric_values(record: RequestRecord) -> dict[str, float | int]:
    """The record's metric members (name -> number); metrics that do not apply are left out."""
    failed = error_type(record) is not None
    values: dict[str, float | int | None] = {
        "Requests": 1,
        "Errors": 1 if failed else 0,
        "CostUSD": _dollars(record.cost_usd),
        "EstimatedCostUSD": _dollars(record.estimated_cost_usd),
        "OverBudgetUSD": _dollars(record.over_budget_usd) if record.over_budget else None,
        "InputTokens": record.input_tokens,
        "CachedInputTokens": record.cached_input_tokens,
        "CacheWriteInputTokens": record.cache_write_tokens,
        "OutputTokens": record.output_tokens,
        "RouterOverheadMs": _finite(record.router_overhead_ms),
        "ProviderLatencyMs": _finite(record.provider_ms) if record.attempts else None,
        "Failovers": record.failovers,
        "CeilingClamped": int(record.ceiling_applied),
        "OverBudget": int(record.over_budget),
        "BudgetRefused": int(record.budget_refused),
    }
    return {name: value for name, value in values.items() if value is not None}


def emf_document(record: RequestRecord, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The record's log fields, metric and dimension members, and the ``_aws`` metadata that names them."""
    metrics = metric_values(record)
    document: dict[str, Any] = log_fields(record)
    document["Model"] = dimension_value(record.model)
    document["Provider"] = dimension_value(record.provider)
    document.update(metrics)
    directives: list[dict[str, Any]] = [
        {
            "Namespace": namespace,
            "Dimensions": [list(names) for names in DIMENSION_SETS],
            "Metrics": [{"Name": name, "Unit": METRIC_UNITS[name]} for name in metrics],
        }
    ]
    failure = error_type(record)
    if failure is not None:
        document["ErrorType"] = dimension_value(failure)
        directives.append(
            {"Namespace": namespace, "Dimensions": [list(names) for names in ERROR_DIMENSION_SETS],
             "Metrics": [{"Name": "Errors", "Unit": "Count"}]}
        )
    calls = provider_calls(record)
    served = calls.pop(document["Provider"], None)
    if served:
        document[PROVIDER_FAILURE_METRIC] = served
        directives.append(_provider_directive(namespace))
    document["_aws"] = {"Timestamp": _milliseconds(record), "CloudWatchMetrics": directives}
    return document


def provider_calls(record: RequestRecord) -> dict[str, list[int]]:
    """Each provider called (as a dimension value) -> one value per call: 100 failed, 0 answered."""
    calls: dict[str, list[int]] = {}
    for attempt in record.attempts:
        failed = attempt.outcome != "ok" and attempt.outcome not in CALLER_MISTAKES
        values = calls.setdefault(dimension_value(attempt.provider), [])
        if len(values) < MAX_VALUES:
            values.append(100 if failed else 0)
    return calls


def emf_documents(record: RequestRecord, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The request's document, then one small document per other provider its calls reached."""
    main = emf_document(record, namespace)
    others = provider_calls(record)
    others.pop(main["Provider"], None)
    documents = [main]
    for provider, values in others.items():
        documents.append({
            "event.name": PROVIDER_CALLS_EVENT,
            "costroute.request_id": record.request_id[:MAX_TEXT],
            "Provider": provider,
            PROVIDER_FAILURE_METRIC: values,
            "_aws": {"Timestamp": _milliseconds(record), "CloudWatchMetrics": [_provider_directive(namespace)]},
        })
    return documents


def _provider_directive(namespace: str) -> dict[str, Any]:
    return {"Namespace": namespace, "Dimensions": [list(names) for names in PROVIDER_DIMENSION_SETS],
            "Metrics": [{"Name": PROVIDER_FAILURE_METRIC, "Unit": "Percent"}]}


def _milliseconds(record: RequestRecord) -> int:
    # CloudWatch drops metrics stamped far from now, so an impossible clock reading falls back to now.
    timestamp = record.timestamp if 0 < record.timestamp < _YEAR_3000 else time.time()
    return int(timestamp * 1000)


def emf_line(record: RequestRecord, namespace: str = NAMESPACE) -> str:
    """The request's EMF document as one compact JSON line (no newline inside, none at the end)."""
    return to_json(emf_document(record, namespace))


def emf_lines(record: RequestRecord, namespace: str = NAMESPACE) -> list[str]:
    """Every EMF document of the request (``emf_documents``), each as one compact JSON line."""
    return [to_json(document) for document in emf_documents(record, namespace)]
