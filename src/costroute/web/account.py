"""One routing account, two dialects: what was chosen, why, what it was expected to cost and did cost.

``/route`` answers with the account plus the seed's fields and the candidates; ``/v1`` carries it
in the answer's ``routing`` object. Dollar amounts are JSON numbers (the nearest double to the
exact value); the ``x-route-*`` headers carry them as exact plain decimals.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from costroute.core.estimate import Estimate
from costroute.core.selection import plain_decimal
from costroute.core.settle import Usage
from costroute.service.router import RouteOutcome
from costroute.web.errors import attempts_json, budget_json


def usd(amount: Decimal | None) -> float | None:
    """A Decimal dollar amount as a JSON number (the nearest float to the exact value)."""
    return None if amount is None else float(amount)


def usd_text(amount: Decimal | None) -> str:
    """An exact amount as a plain decimal (``0.000113``), empty for none: for headers."""
    return "" if amount is None else plain_decimal(amount)


def estimate_json(estimate: Estimate) -> dict[str, Any]:
    """An estimate as the seed's ``estimate`` object."""
    return {
        "input_tokens": estimate.input_tokens,
        "output_tokens": estimate.output_tokens,
        "cost_usd": usd(estimate.cost_usd),
        "latency_ms": estimate.latency_ms,
    }


def usage_json(outcome: RouteOutcome) -> dict[str, Any] | None:
    """The settled usage with its exact cost; None for a dry run."""
    settlement = outcome.settlement
    if settlement is None:
        return None
    usage: Usage = settlement.usage
    body: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.prompt_tokens + usage.output_tokens,
        "cached_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens + usage.cache_write_1h_tokens,
        "reported": settlement.reported,
        "cost_usd": usd(settlement.cost_usd),
    }
    return body


def routing_account(outcome: RouteOutcome) -> dict[str, Any]:
    """The account both dialects share."""
    decision = outcome.decision
    estimate = decision.estimate
    assert estimate is not None
    settlement = outcome.settlement
    over = settlement.over_budget_usd if settlement else None
    return {
        "model": outcome.model.id,
        "strategy": decision.strategy,
        "decision_trace": list(outcome.trace),
        "estimate": estimate_json(estimate),
        "required_quality": {"value": decision.required_quality, "source": decision.quality_source},
        "rung": {"number": decision.rung, "description": decision.rung_description},
        "latency_relaxed": decision.latency_relaxed,
        "max_tokens": outcome.plan.max_tokens,
        "cost_ceiling_applied": outcome.plan.ceiling_applied,
        "actual_cost_usd": usd(outcome.actual_cost_usd),
        "over_budget": over is not None,
        "over_budget_usd": usd(over),
        "attempts": attempts_json(outcome.attempts),
        "budget": budget_json(outcome.budget) if outcome.budget is not None else None,
    }


def candidates_json(outcome: RouteOutcome) -> tuple[int, list[dict[str, Any]]]:
    """Every candidate's estimate and verdict (trimmed to ``max_candidates``), and how many there were."""
    candidates = outcome.decision.candidates
    limit = outcome.request.max_candidates
    shown = candidates if limit is None else candidates[:limit]
    return len(candidates), [
        {
            "model": candidate.model.id,
            "provider": candidate.model.provider,
            "quality": candidate.model.quality,
            "estimated_cost_usd": usd(candidate.estimate.cost_usd),
            "estimated_latency_ms": candidate.estimate.latency_ms,
            "estimated_output_tokens": candidate.estimate.output_tokens,
            "verdict": candidate.verdict,
            "reason": candidate.reason,
        }
        for candidate in shown
    ]


def route_headers(outcome: RouteOutcome, overhead_ms: float, final: bool) -> dict[str, str]:
    """The ``x-route-*`` response headers; the actual cost only once it is known."""
    estimate = outcome.decision.estimate
    headers = {
        "x-route-model": outcome.model.id,
        "x-route-estimated-cost-usd": usd_text(estimate.cost_usd if estimate else None),
        "x-route-attempts": str(len(outcome.attempts)),
        "x-route-overhead-ms": f"{max(0.0, overhead_ms):.3f}",
    }
    left = outcome.budget.tightest_remaining_usd if outcome.budget is not None else None
    if left is not None:
        # After this request when final; with a stream, after holding its worst case.
        headers["x-route-budget-remaining-usd"] = usd_text(left)
    if final:
        headers["x-route-cost-usd"] = usd_text(outcome.actual_cost_usd)
        settlement = outcome.settlement
        if settlement is not None and settlement.over_budget_usd is not None:
            headers["x-route-over-budget-usd"] = usd_text(settlement.over_budget_usd)
    return headers
