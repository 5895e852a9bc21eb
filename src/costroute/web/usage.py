"""``GET /usage``: what callers spent, from the pre-aggregated counters, and what a baseline model would have cost.

Query: ``from`` and ``to`` (dates, ``YYYY-MM-DD``, UTC, inclusive; default: the first of this month
to today), ``group_by`` = ``day`` (default) | ``model`` | ``caller``, and for admins ``caller`` to
look at one caller. A caller sees only its own usage; an admin of the budgets document sees
everyone's. Amounts come as JSON numbers and, exactly, as ``*_exact`` strings. Without a budgets
document there is no ledger: 404.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, jsonify, request

from costroute.core.requests import InvalidRequest
from costroute.core.selection import plain_decimal
from costroute.web.context import caller_id, runtime
from costroute.web.errors import budget_json, error_response

if TYPE_CHECKING:
    from costroute.stores.base import UsageRow

usage = Blueprint("usage", __name__)

GROUPINGS = ("day", "model", "caller")
MAX_DAYS = 366
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _date(name: str, default: date) -> date:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        if not _DATE.match(raw):
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidRequest(f"'{name}' must be a date YYYY-MM-DD, got {raw[:40]!r}", name) from exc


def _totals(rows: list[UsageRow]) -> dict[str, Any]:
    cost = sum((row.cost_usd for row in rows), Decimal(0))
    baseline = sum((row.baseline_cost_usd for row in rows), Decimal(0))
    return {
        "requests": sum(row.requests for row in rows),
        "cost_usd": float(cost),
        "cost_usd_exact": plain_decimal(cost),
        "baseline_cost_usd": float(baseline),
        "baseline_cost_usd_exact": plain_decimal(baseline),
        "saved_usd": float(baseline - cost),
        "saved_usd_exact": plain_decimal(baseline - cost),
        "input_tokens": sum(row.input_tokens for row in rows),
        "cached_input_tokens": sum(row.cached_input_tokens for row in rows),
        "output_tokens": sum(row.output_tokens for row in rows),
    }


@usage.get("/usage")
def usage_report() -> Response:
    """Totals of cost, tokens and requests, grouped, with the savings against the baseline model."""
    wired = runtime()
    gate = wired.spend
    if gate is None:
        return error_response(404, "budgets_not_configured", "no budgets document is configured "
                              "(BUDGETS_CONFIG_JSON or BUDGETS_CONFIG_SSM_PARAMETER), so there is no ledger")
    from costroute.service.spend import baseline_model  # spend control is loaded only with budgets

    caller = caller_id()
    budget = gate.admit(caller)
    today = datetime.fromtimestamp(gate.now(), tz=UTC).date()
    first = _date("from", today.replace(day=1))
    last = _date("to", today)
    if first > last:
        raise InvalidRequest(f"'from' ({first}) is after 'to' ({last})", "from")
    if (last - first).days >= MAX_DAYS:
        raise InvalidRequest(f"at most {MAX_DAYS} days can be asked at once", "to")
    group_by = request.args.get("group_by") or "day"
    if group_by not in GROUPINGS:
        raise InvalidRequest(f"'group_by' must be one of {', '.join(GROUPINGS)}, got {group_by[:40]!r}", "group_by")
    wanted = request.args.get("caller")
    if wanted is not None and not budget.admin and wanted != caller:
        return error_response(403, "permission_error", "only an admin of the budgets document may see another "
                              "caller's usage", param="caller")
    scope_caller = (wanted or None) if budget.admin else caller
    rows = gate.store.usage(scope_caller, first.isoformat(), last.isoformat())
    groups: dict[str, list[UsageRow]] = {}
    for row in rows:
        groups.setdefault(getattr(row, group_by), []).append(row)
    listed = []
    for key in sorted(groups):
        entry = {"key": key, **_totals(groups[key])}
        if group_by == "day":
            by_model: dict[str, list[UsageRow]] = {}
            for row in groups[key]:
                by_model.setdefault(row.model, []).append(row)
            entry["by_model"] = {model: {"requests": sum(r.requests for r in model_rows),
                                         "cost_usd": float(sum((r.cost_usd for r in model_rows), Decimal(0)))}
                                 for model, model_rows in sorted(by_model.items())}
        listed.append(entry)
    baseline = baseline_model(gate.document(), wired.service.registry())
    return jsonify({
        "caller": caller,
        "scope": "all" if scope_caller is None else "caller",
        "from": first.isoformat(),
        "to": last.isoformat(),
        "group_by": group_by,
        "baseline_model": baseline.id if baseline is not None else None,
        "totals": _totals(rows),
        "groups": listed,
        "budget": budget_json(gate.view(budget)),
    })
