"""The selection ladder ``quality_then_cost_with_provider_bias``; a decision that explains itself.

Order of work:

1. Required quality: ``min_quality``, else the task type's default, else 1.
2. Unavailable models (no key, already tried, breaker open) leave the pool with their reason.
3. Latency: with a limit, slower models leave the pool; if that empties it, the limit is relaxed
   and the ladder runs on every available model.
4. The ladder, first rung with any model wins:
   1. quality >= required and estimated cost <= budget: the cheapest;
   2. quality >= required (budget relaxed): the cheapest;
   3. estimated cost <= budget (quality relaxed): the highest quality, then the cheapest;
   4. any model: the cheapest.
   No budget means every model is within budget. ``strict_budget`` removes rungs 2 and 4 (the
   budget is never relaxed); ``strict_quality`` removes rungs 3 and 4 (the quality floor is
   never relaxed).
5. Ties are explicit, never registry order: equal cost goes to the higher quality, then the
   lower latency, then the lexically smaller id.
6. Provider bias: a model of ``prefer_provider`` on the same rung replaces the pick when it is as
   good on the rung's quality objective (rungs 1 and 2: meets the floor, which every model there
   does; rung 3: the same quality as the pick; rung 4: none) and costs at most
   ``PROVIDER_BIAS_TOLERANCE`` (10%) more than the pick.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import NamedTuple

from costroute.core.estimate import Estimate, estimates_for, expected_output_tokens, required_quality
from costroute.core.registry import Model

STRATEGY = "quality_then_cost_with_provider_bias"
PROVIDER_BIAS_TOLERANCE = Decimal("0.10")
# The trace names at most this many models per list; candidates carry the full account.
TRACE_LISTED = 5

CHOSEN = "chosen"
ELIGIBLE = "eligible"
EXCLUDED = "excluded"


class UnknownProviderError(ValueError):
    """``prefer_provider`` names a provider that no model in the registry has."""

    def __init__(self, provider: str, known: Sequence[str]) -> None:
        super().__init__(
            f"prefer_provider '{provider}' has no model in the registry; providers: {', '.join(known)}"
        )
        self.provider = provider
        self.known = tuple(known)


@dataclass(frozen=True)
class Constraints:
    """What the caller requires of the model."""

    max_cost_usd: Decimal | None = None
    min_quality: int | None = None
    max_latency_ms: int | None = None
    prefer_provider: str | None = None
    strict_budget: bool = False
    strict_quality: bool = False


@dataclass(frozen=True)
class SelectionRequest:
    """Everything selection needs to know about one request."""

    constraints: Constraints
    input_tokens: int
    task_type: str | None = None
    expected_output_tokens: int | None = None
    # How the caller named min_quality and expected_output_tokens, for the trace.
    quality_param: str = "constraints.min_quality"
    output_param: str = "metadata.expected_output_tokens"


class Candidate(NamedTuple):
    """One model's estimate and verdict for one request (a tuple: built per model per request)."""

    model: Model
    estimate: Estimate
    verdict: str
    reason: str


class Rung(NamedTuple):
    """One rung of the ladder: which constraints it keeps and what it optimises."""

    number: int
    needs_quality: bool
    needs_budget: bool
    objective: str  # "cost" (the cheapest) or "quality" (the best, then the cheapest)

    def describe(self, quality: int, budget: Decimal | None) -> str:
        """The rung in words, with this request's numbers."""
        budget_text = f"estimated cost <= {format_usd(budget)}" if budget is not None else "any cost (no budget)"
        parts = []
        if self.needs_quality:
            parts.append(f"quality >= {quality}")
        if self.needs_budget:
            parts.append(budget_text)
        condition = " and ".join(parts) if parts else "any model"
        relaxed = {1: "", 2: ", budget relaxed", 3: ", quality relaxed", 4: ", everything relaxed"}[self.number]
        goal = "the cheapest" if self.objective == "cost" else "the highest quality, then the cheapest"
        return f"rung {self.number} ({condition}{relaxed}; pick {goal})"


RUNGS: tuple[Rung, ...] = (
    Rung(1, needs_quality=True, needs_budget=True, objective="cost"),
    Rung(2, needs_quality=True, needs_budget=False, objective="cost"),
    Rung(3, needs_quality=False, needs_budget=True, objective="quality"),
    Rung(4, needs_quality=False, needs_budget=False, objective="cost"),
)


@dataclass(frozen=True)
class Decision:
    """The outcome of selection and the reasons for it."""

    strategy: str
    model: Model | None
    estimate: Estimate | None
    rung: int | None
    rung_description: str | None
    required_quality: int
    quality_source: str
    output_tokens_source: str
    latency_relaxed: bool
    candidates: tuple[Candidate, ...]
    trace: tuple[str, ...]
    failure: str | None = None
    budget_refused: bool = False
    quality_refused: bool = False


def plain_decimal(amount: Decimal) -> str:
    """An exact amount in plain decimal notation, without trailing zeros (``0.000036``, never ``3.6E-5``)."""
    if not amount.is_finite():
        return str(amount)
    if amount.is_zero():
        return "0"
    # A context as precise as the amount itself: normalize() under the default 28 digits would round.
    return format(amount.normalize(Context(prec=len(amount.as_tuple().digits))), "f")


def format_usd(amount: Decimal | None) -> str:
    """A dollar amount for the trace: ``$0.000036``, or ``none``."""
    return "none" if amount is None else f"${plain_decimal(amount)}"


def select_model(
    models: Sequence[Model],
    request: SelectionRequest,
    unavailable: Mapping[str, str] | None = None,
) -> Decision:
    """Run the ladder over the models; ``unavailable`` maps model ids to why they cannot be used."""
    unavailable = unavailable or {}
    constraints = request.constraints
    preferred = constraints.prefer_provider
    if preferred is not None and not any(model.provider == preferred for model in models):
        raise UnknownProviderError(preferred, sorted({model.provider for model in models}))

    quality, quality_source = required_quality(constraints.min_quality, request.task_type, request.quality_param)
    output_tokens, output_source = expected_output_tokens(
        request.expected_output_tokens, request.task_type, request.output_param
    )
    budget = constraints.max_cost_usd
    estimates = estimates_for(models, request.input_tokens, output_tokens)
    trace: list[str] = [
        f"Required quality {quality}, from {quality_source}.",
        f"Estimated {request.input_tokens} input tokens (heuristic) and {output_tokens} output tokens, "
        f"from {output_source}, capped at each model's max_output_tokens.",
    ]
    exclusions: dict[str, str] = {}

    available = []
    for model in models:
        if model.id in unavailable:
            exclusions[model.id] = unavailable[model.id]
        else:
            available.append(model)
    if exclusions:
        trace.append(
            "Not available: " + "; ".join(f"{model_id} ({why})" for model_id, why in sorted(exclusions.items())) + "."
        )

    pool, latency_relaxed = _apply_latency_limit(available, constraints.max_latency_ms, exclusions, trace)
    strict_budget = constraints.strict_budget and budget is not None
    rungs = [
        rung for rung in RUNGS
        if not (strict_budget and not rung.needs_budget) and not (constraints.strict_quality and not rung.needs_quality)
    ]
    if strict_budget:
        trace.append("strict_budget: the budget is never relaxed, so rungs 2 and 4 are not used.")
    if constraints.strict_quality:
        trace.append("strict_quality: the quality floor is never relaxed, so rungs 3 and 4 are not used.")

    # One sort serves every cost-objective rung (filtering keeps the order) and the candidates.
    by_cost = sorted(models, key=_sort_key(RUNGS[0], estimates))
    pool_ids = {model.id for model in pool}
    pool_by_cost = [model for model in by_cost if model.id in pool_ids]

    def decide(
        pick: Model | None,
        rung: Rung | None,
        description: str | None,
        failure: str | None = None,
        budget_refused: bool = False,
        quality_refused: bool = False,
    ) -> Decision:
        return Decision(
            strategy=STRATEGY,
            model=pick,
            estimate=estimates[pick.id] if pick else None,
            rung=rung.number if rung else None,
            rung_description=description,
            required_quality=quality,
            quality_source=quality_source,
            output_tokens_source=output_source,
            latency_relaxed=latency_relaxed,
            candidates=_verdicts(by_cost, pick, rung, pool_ids, exclusions, estimates, quality, budget),
            trace=tuple(trace),
            failure=failure,
            budget_refused=budget_refused,
            quality_refused=quality_refused,
        )

    good = {model.id for model in pool if model.quality >= quality}
    cheap = {model.id for model in pool if budget is None or estimates[model.id].cost_usd <= budget}

    def meets_quality(model: Model) -> bool:
        return model.id in good

    def within_budget(model: Model) -> bool:
        return model.id in cheap

    for rung in rungs:
        ordered = [
            model
            for model in pool_by_cost
            if (not rung.needs_quality or model.id in good) and (not rung.needs_budget or model.id in cheap)
        ]
        members = ordered
        description = rung.describe(quality, budget)
        if not members:
            trace.append(f"{sentence(description)}: empty. {_why_empty(rung, pool, meets_quality, within_budget)}")
            continue
        if rung.objective != "cost":
            ordered = sorted(members, key=_sort_key(rung, estimates))
        pick = ordered[0]
        shown = ", ".join(f"{m.id} ({format_usd(estimates[m.id].cost_usd)}, quality {m.quality})" for m in ordered[:TRACE_LISTED])
        more = f" and {len(ordered) - TRACE_LISTED} more" if len(ordered) > TRACE_LISTED else ""
        count = "1 model qualifies" if len(members) == 1 else f"{len(members)} models qualify, best first"
        trace.append(f"{sentence(description)}: {count}: {shown}{more}.")
        _explain_ties(rung, ordered, estimates, trace)
        pick = _apply_provider_bias(rung, ordered, pick, constraints.prefer_provider, estimates, trace)
        trace.append(
            f"Chose {pick.id} on rung {rung.number}: estimated {format_usd(estimates[pick.id].cost_usd)}, "
            f"{estimates[pick.id].latency_ms} ms, quality {pick.quality}."
        )
        return decide(pick, rung, description)

    quality_refused = bool(pool) and constraints.strict_quality and not good
    budget_refused = bool(pool) and strict_budget and not quality_refused
    if not pool:
        failure = "no model is available"
    elif quality_refused:
        failure = f"no available model meets the quality floor of {quality} and strict_quality forbids relaxing it"
    elif budget_refused:
        failure = f"no model fits the budget of {format_usd(budget)} and strict_budget forbids relaxing it"
    else:
        failure = "no model qualifies"
    trace.append(f"No model chosen: {failure}.")
    return decide(None, None, None, failure, budget_refused, quality_refused)


def _apply_latency_limit(
    available: list[Model], limit: int | None, exclusions: dict[str, str], trace: list[str]
) -> tuple[list[Model], bool]:
    if limit is None:
        return available, False
    fast = [model for model in available if model.latency_ms <= limit]
    slow = sorted((model for model in available if model.latency_ms > limit), key=_model_id)
    if not fast and available:
        trace.append(
            f"Latency limit {limit} ms: no available model meets it (fastest is "
            f"{min(m.latency_ms for m in available)} ms), so the limit is relaxed and every available model stays."
        )
        return available, True
    if slow:
        for model in slow:
            exclusions[model.id] = f"estimated latency {model.latency_ms} ms > limit {limit} ms"
        shown = ", ".join(f"{m.id} ({m.latency_ms} ms)" for m in slow[:TRACE_LISTED])
        more = f" and {len(slow) - TRACE_LISTED} more" if len(slow) > TRACE_LISTED else ""
        trace.append(f"Latency limit {limit} ms removed {len(slow)} of {len(available)} available model(s): {shown}{more}.")
    else:
        trace.append(f"Latency limit {limit} ms: every available model meets it.")
    return fast, False


def _model_id(model: Model) -> str:
    return model.id


def _sort_key(rung: Rung, estimates: Mapping[str, Estimate]) -> Callable[[Model], tuple[object, ...]]:
    if rung.objective == "quality":
        return lambda m: (-m.quality, estimates[m.id].cost_usd, m.latency_ms, m.id)
    return lambda m: (estimates[m.id].cost_usd, -m.quality, m.latency_ms, m.id)


def _explain_ties(rung: Rung, ordered: list[Model], estimates: Mapping[str, Estimate], trace: list[str]) -> None:
    pick = ordered[0]

    def primary(model: Model) -> tuple[object, ...]:
        if rung.objective == "quality":
            return (model.quality, estimates[model.id].cost_usd)
        return (estimates[model.id].cost_usd,)

    tied = [model for model in ordered if primary(model) == primary(pick)]
    if len(tied) > 1:
        what = "quality and cost" if rung.objective == "quality" else f"cost {format_usd(estimates[pick.id].cost_usd)}"
        trace.append(
            f"Tie on {what} between {', '.join(m.id for m in tied)}: settled by higher quality, "
            f"then lower latency, then id; {pick.id} wins."
        )


def _apply_provider_bias(
    rung: Rung,
    ordered: list[Model],
    pick: Model,
    provider: str | None,
    estimates: Mapping[str, Estimate],
    trace: list[str],
) -> Model:
    if provider is None:
        return pick
    if pick.provider == provider:
        trace.append(f"Provider preference '{provider}': the pick is already a {provider} model.")
        return pick
    same_provider = [model for model in ordered if model.provider == provider]
    if not same_provider:
        trace.append(f"Provider preference '{provider}': no {provider} model on rung {rung.number}; kept {pick.id}.")
        return pick
    pick_cost = estimates[pick.id].cost_usd
    ceiling = pick_cost * (1 + PROVIDER_BIAS_TOLERANCE)
    as_good = [model for model in same_provider if rung.objective != "quality" or model.quality == pick.quality]
    winners = [model for model in as_good if estimates[model.id].cost_usd <= ceiling]
    tolerance = f"{PROVIDER_BIAS_TOLERANCE * 100:.0f}%"
    if winners:
        winner = winners[0]
        trace.append(
            f"Provider preference '{provider}': {winner.id} costs {format_usd(estimates[winner.id].cost_usd)}, "
            f"within {tolerance} of {pick.id}'s {format_usd(pick_cost)}, so it replaces {pick.id}."
        )
        return winner
    best = as_good[0] if as_good else same_provider[0]
    trace.append(
        f"Provider preference '{provider}': the best {provider} model on rung {rung.number}, {best.id} "
        f"({format_usd(estimates[best.id].cost_usd)}, quality {best.quality}), is not as good or costs more than "
        f"{tolerance} over {pick.id}'s {format_usd(pick_cost)}; kept {pick.id}."
    )
    return pick


def _why_empty(
    rung: Rung, pool: list[Model], meets_quality: Callable[[Model], bool], within_budget: Callable[[Model], bool]
) -> str:
    if not pool:
        return "No model is in the pool."
    good = sum(1 for m in pool if meets_quality(m))
    cheap = sum(1 for m in pool if within_budget(m))
    if rung.needs_quality and rung.needs_budget:
        both = sum(1 for m in pool if meets_quality(m) and within_budget(m))
        return f"Of {len(pool)} model(s), {good} meet the quality floor, {cheap} fit the budget, {both} do both."
    if rung.needs_quality:
        return f"None of {len(pool)} model(s) meets the quality floor."
    return f"None of {len(pool)} model(s) fits the budget."


def _verdicts(
    by_cost: Sequence[Model],
    pick: Model | None,
    rung: Rung | None,
    pool_ids: set[str],
    exclusions: Mapping[str, str],
    estimates: Mapping[str, Estimate],
    quality: int,
    budget: Decimal | None,
) -> tuple[Candidate, ...]:
    verdicts = []
    for model in by_cost:
        estimate = estimates[model.id]
        if pick is not None and model.id == pick.id:
            verdicts.append(Candidate(model, estimate, CHOSEN, f"chosen on rung {rung.number if rung else '?'}"))
            continue
        if model.id not in pool_ids:
            verdicts.append(Candidate(model, estimate, EXCLUDED, exclusions.get(model.id, "not in the pool")))
            continue
        reasons = []
        if (rung is None or rung.needs_quality) and model.quality < quality:
            reasons.append(f"quality {model.quality} < required {quality}")
        if (rung is None or rung.needs_budget) and budget is not None and estimate.cost_usd > budget:
            reasons.append(f"estimated {format_usd(estimate.cost_usd)} > budget {format_usd(budget)}")
        if reasons:
            verdicts.append(Candidate(model, estimate, EXCLUDED, "; ".join(reasons)))
        elif pick is None:
            verdicts.append(Candidate(model, estimate, EXCLUDED, "no rung could use it"))
        else:
            rung_number = rung.number if rung else "?"
            verdicts.append(Candidate(model, estimate, ELIGIBLE, f"qualifies on rung {rung_number} but {pick.id} ranks first"))
    return tuple(verdicts)


def sentence(text: str) -> str:
    """The text with its first letter capitalised, to open a sentence."""
    return text[:1].upper() + text[1:]
