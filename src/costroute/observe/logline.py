"""One log line per request: the record's facts under OpenTelemetry's names, as JSON or as one human line.

Names follow OpenTelemetry's semantic conventions (GenAI and general HTTP attributes) where one
exists, and ``costroute.*`` for cost and routing. Strings, exact amounts and ids are left out when
the record has none for them (``None``: the fact does not apply, as OpenTelemetry leaves out an
attribute that does not apply); counts and flags are always there. Exact amounts are decimal
strings in plain notation (``"0.000113"``, ``"0.0000001"``, never a float, never ``1E-7``), so a
log line can be summed to the cent without binary rounding.

=============================================  ===============================================================
field                                          value (from ``RequestRecord``)
=============================================  ===============================================================
``event.name``                                 always ``costroute.request`` (filter on it in Logs Insights)
``timestamp``                                  arrival time, ISO 8601 UTC with milliseconds
``costroute.request_id``                       the request id
``costroute.dialect``                          ``route``, ``chat`` or ``other``
``http.request.method``                        ``method``
``url.path``                                   ``path``
``http.response.status_code``                  ``http_status`` (int)
``error.type``                                 ``error_type``; the status as a string for a 4xx/5xx without one
                                               (OpenTelemetry's rule); absent on success
``costroute.caller``                           ``caller``, when budgets name one
``gen_ai.operation.name``                      ``chat`` for both routing dialects; absent for ``other``
``gen_ai.request.model``                       what the client asked: ``requested_model``, or ``auto`` (absent for
                                               ``other``)
``gen_ai.response.model``                      ``model``: the model id that served (or was chosen)
``gen_ai.provider.name``                       the provider's kind under OpenTelemetry's name: ``openai``,
                                               ``anthropic``, ``aws.bedrock``; our mock is ``costroute.mock`` (it
                                               is no real provider, so it gets our prefix rather than a bare
                                               name OpenTelemetry might one day give to someone else); an
                                               unknown kind passes through as it is
``costroute.provider``                         ``provider``: the provider's configured name
``costroute.upstream_model``                   ``upstream_model``: the name the provider was sent
``costroute.rung``                             ``rung`` (absent for a pinned model)
``costroute.stream``                           ``stream`` (bool)
``costroute.dry_run``                          ``dry_run`` (bool)
``costroute.attempts``                         list of ``{model, provider, outcome, status, duration_ms}``
``costroute.failovers``                        ``failovers`` (int)
``gen_ai.usage.input_tokens``                  ``input_tokens``: every input token, cached ones included
``gen_ai.usage.cache_read.input_tokens``       ``cached_input_tokens``
``gen_ai.usage.cache_creation.input_tokens``   ``cache_write_tokens`` (OpenTelemetry has a name for it, so it is
                                               used instead of a ``costroute.cache_write.input_tokens``)
``gen_ai.usage.output_tokens``                 ``output_tokens``
``costroute.usage_reported``                   ``usage_reported`` (false: settled on the worst case)
``costroute.estimated_cost_usd``               ``estimated_cost_usd``, exact decimal string
``costroute.cost_usd``                         ``cost_usd``, exact decimal string
``costroute.ceiling_applied``                  ``ceiling_applied`` (bool)
``costroute.over_budget``                      ``over_budget`` (bool)
``costroute.over_budget_usd``                  ``over_budget_usd``, exact decimal string
``costroute.budget_refused``                   ``budget_refused`` (bool)
``costroute.router_overhead_ms``               ``router_overhead_ms`` (float, 3 decimals)
``costroute.provider_ms``                      ``provider_ms`` (float, 3 decimals)
=============================================  ===============================================================

Never prompt or answer text, never a key: the record holds neither, and nothing here adds any.
Strings a client can influence (path, requested model, caller, request id) are cut at
``MAX_TEXT`` characters, so one odd request cannot make a line too long for CloudWatch (whose
events stop at 256 KB) or for a terminal.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from costroute.core.selection import plain_decimal
from costroute.observe.record import AttemptRecord, RequestRecord

EVENT_NAME = "costroute.request"
MAX_TEXT = 256
# OpenTelemetry's gen_ai.provider.name for each provider kind; unknown kinds pass through.
OTEL_PROVIDER_NAMES: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "bedrock": "aws.bedrock",
    "mock": "costroute.mock",
}
ROUTING_DIALECTS = ("route", "chat")


def decimal_text(amount: Decimal) -> str:
    """An exact amount in plain notation without trailing zeros: ``Decimal("1E-7")`` -> ``"0.0000001"``."""
    return plain_decimal(amount)


def error_type(record: RequestRecord) -> str | None:
    """The record's error type; the status as a string for a 4xx/5xx without one; ``None`` on success."""
    if record.error_type:
        return record.error_type
    if record.http_status >= 400:
        return str(record.http_status)
    return None


def otel_provider_name(kind: str | None) -> str | None:
    """OpenTelemetry's ``gen_ai.provider.name`` for a provider kind."""
    if kind is None:
        return None
    return OTEL_PROVIDER_NAMES.get(kind, kind)


def _text(value: str | None) -> str | None:
    if value is None or len(value) <= MAX_TEXT:
        return value
    return value[: MAX_TEXT - 1] + "\u2026"


def _ms(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None


def _amount(value: Decimal | None) -> str | None:
    return None if value is None else decimal_text(value)


def _attempt(attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "model": _text(attempt.model),
        "provider": _text(attempt.provider),
        "outcome": attempt.outcome,
        "status": attempt.status,
        "duration_ms": _ms(attempt.duration_ms),
    }


def _iso(timestamp: float) -> str:
    try:
        moment = datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):  # not a time a clock gives: say what it was
        return str(timestamp)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def log_fields(record: RequestRecord) -> dict[str, Any]:
    """The record's facts under the names of the module's table; ``None`` values are left out."""
    routing = record.dialect in ROUTING_DIALECTS
    fields: dict[str, Any] = {
        "event.name": EVENT_NAME,
        "timestamp": _iso(record.timestamp),
        "costroute.request_id": _text(record.request_id),
        "costroute.dialect": record.dialect,
        "http.request.method": _text(record.method),
        "url.path": _text(record.path),
        "http.response.status_code": record.http_status,
        "error.type": _text(error_type(record)),
        "costroute.caller": _text(record.caller),
        "gen_ai.operation.name": "chat" if routing else None,
        "gen_ai.request.model": _text(record.requested_model or "auto") if routing else _text(record.requested_model),
        "gen_ai.response.model": _text(record.model),
        "gen_ai.provider.name": _text(otel_provider_name(record.provider_kind)),
        "costroute.provider": _text(record.provider),
        "costroute.upstream_model": _text(record.upstream_model),
        "costroute.rung": record.rung,
        "costroute.stream": record.stream,
        "costroute.dry_run": record.dry_run,
        "costroute.attempts": [_attempt(attempt) for attempt in record.attempts],
        "costroute.failovers": record.failovers,
        "gen_ai.usage.input_tokens": record.input_tokens,
        "gen_ai.usage.cache_read.input_tokens": record.cached_input_tokens,
        "gen_ai.usage.cache_creation.input_tokens": record.cache_write_tokens,
        "gen_ai.usage.output_tokens": record.output_tokens,
        "costroute.usage_reported": record.usage_reported,
        "costroute.estimated_cost_usd": _amount(record.estimated_cost_usd),
        "costroute.cost_usd": _amount(record.cost_usd),
        "costroute.ceiling_applied": record.ceiling_applied,
        "costroute.over_budget": record.over_budget,
        "costroute.over_budget_usd": _amount(record.over_budget_usd),
        "costroute.budget_refused": record.budget_refused,
        "costroute.router_overhead_ms": _ms(record.router_overhead_ms),
        "costroute.provider_ms": _ms(record.provider_ms),
    }
    return {name: value for name, value in fields.items() if value is not None}


def to_json(document: dict[str, Any]) -> str:
    """A document as one compact JSON line: ASCII only, so no character in it can break the line."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def json_line(record: RequestRecord) -> str:
    """The record's log fields as one compact JSON line (no newline inside, none at the end)."""
    return to_json(log_fields(record))


def _plain(value: str | None, limit: int = 80) -> str:
    """A string for the human line: control characters escaped, cut at ``limit``."""
    if value is None:
        return "-"
    # Nearly every value is printable already: checked in C before escaping character by character.
    clean = value if value.isprintable() else "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in value)
    return clean if len(clean) <= limit else clean[: limit - 1] + "\u2026"


def _ms_text(value: float) -> str:
    if not math.isfinite(value):
        return "?"
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _attempts_text(attempts: tuple[AttemptRecord, ...]) -> str:
    if not attempts:
        return "no call"
    if len(attempts) == 1 and attempts[0].outcome == "ok":
        return "1 attempt"
    steps = []
    for attempt in attempts:
        status = "" if attempt.status is None else f" {attempt.status}"
        steps.append(f"{_plain(attempt.model, 60)} {_plain(attempt.outcome, 24)}{status}")
    return f"{len(attempts)} attempt{'s' if len(attempts) > 1 else ''}: " + " > ".join(steps)


def readable_line(record: RequestRecord) -> str:
    """The same facts as one human line, e.g. ``POST /route 200 mock:advanced rung 1 $0.000113 ...``."""
    parts = [_plain(record.method, 10), _plain(record.path), str(record.http_status)]
    failure = error_type(record)
    if failure is not None:
        parts.append(_plain(failure, 48))
    if record.stream:
        parts.append("stream")
    if record.dry_run:
        parts.append("dry-run")
    if record.model is not None:
        # Registry ids already read provider:name; a bare name gets its provider in front.
        qualified = record.provider is None or record.model.startswith(f"{record.provider}:")
        parts.append(_plain(record.model if qualified else f"{record.provider}:{record.model}", 80))
    asked = record.requested_model
    if asked not in (None, "auto") and not (record.model is not None and record.model in (asked, f"{record.provider}:{asked}")):
        parts.append(f"(asked {_plain(asked, 60)})")
    if record.rung is not None:
        parts.append(f"rung {record.rung}")
    if record.cost_usd is not None:
        parts.append(f"${decimal_text(record.cost_usd)}")
    if record.estimated_cost_usd is not None:
        parts.append(f"(est ${decimal_text(record.estimated_cost_usd)})")
    if record.input_tokens or record.output_tokens:
        tokens = f"{record.input_tokens}+{record.output_tokens} tok"
        if record.cached_input_tokens:
            tokens += f" ({record.cached_input_tokens} cached)"
        if record.cost_usd is not None and not record.usage_reported:
            tokens += " (worst case: no usage reported)"
        parts.append(tokens)
    timing = f"{_ms_text(record.router_overhead_ms)} ms router"
    if record.attempts:
        timing += f", {_ms_text(record.provider_ms)} ms provider"
    parts.append(timing + ",")
    parts.append(_attempts_text(record.attempts))
    if record.ceiling_applied:
        parts.append("ceiling")
    if record.over_budget:
        over = f" +${decimal_text(record.over_budget_usd)}" if record.over_budget_usd is not None else ""
        parts.append(f"over-budget{over}")
    if record.budget_refused:
        parts.append("budget-refused")
    if record.caller is not None:
        parts.append(f"caller={_plain(record.caller, 40)}")
    # The whole id, not a prefix: it is what one greps for in the JSON lines and the client's headers.
    parts.append(f"req={_plain(record.request_id, 64)}")
    return " ".join(parts)
