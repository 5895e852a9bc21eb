"""Planning one call: the worst case of its input, and the output cap that keeps the hard ceiling.

The ceiling rests on two bounds the provider can never exceed:

* the prompt's tokens: ``RouteRequest.prompt_bound`` (UTF-8 bytes plus framing, see
  ``estimate.prompt_token_bound``) plus what the provider itself adds to every such request
  (Anthropic's tool-use system prompt), handed in by the adapter;
* the rate they are billed at: the full input price, or, when the prompt asks the provider to
  write a cache (``cache_control`` breakpoints), the highest cache-write price the registry gives
  for the model. Never the cache-read price: a read is cheaper, and a worst case may not assume it.

``plan_call`` then gives the most output tokens whose cost, added to that worst-case input, stays
within the budget. Money is exact ``Decimal`` arithmetic at 100 digits.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Literal, NamedTuple

from costroute.core.estimate import EXACT
from costroute.core.registry import Model

# Which price the worst case of an input is counted at.
RateName = Literal["input", "cache write", "1-hour cache write"]


class WorstInput(NamedTuple):
    """The most a request's input can count and cost on one model."""

    tokens: int
    rate_per_token: Decimal
    # Which price that rate is.
    rate_name: RateName = "input"

    @property
    def cost_usd(self) -> Decimal:
        """The input's worst-case cost, exact."""
        with localcontext(EXACT):
            return self.tokens * self.rate_per_token


def worst_input(model: Model, prompt_bound: int, provider_extra_tokens: int = 0,
                cache_breakpoints: bool = False) -> WorstInput:
    """The input's worst case on ``model``: every token counted, at the highest rate it may be billed."""
    tokens = prompt_bound + provider_extra_tokens
    rate = model.input_cost_per_token
    name: RateName = "input"
    if cache_breakpoints:
        writes: tuple[tuple[Decimal | None, RateName], ...] = (
            (model.cache_write_cost_per_1k, "cache write"), (model.cache_write_1h_cost_per_1k, "1-hour cache write"))
        for price, label in writes:
            if price is not None and price / 1000 > rate:
                rate, name = price / 1000, label
    return WorstInput(tokens=tokens, rate_per_token=rate, rate_name=name)


class CallPlan(NamedTuple):
    """The output cap sent with a call, whether the cost ceiling set it, and the call's worst case."""

    max_tokens: int
    ceiling_applied: bool
    budget_usd: Decimal | None
    worst_input: WorstInput
    # The most this call can cost if the provider honours max_tokens: what a budget reserves.
    worst_case_usd: Decimal


def output_cost(model: Model, tokens: int) -> Decimal:
    """Exact cost of ``tokens`` output tokens."""
    with localcontext(EXACT):
        return tokens * model.output_cost_per_token


def least_call_cost(model: Model, worst: WorstInput) -> Decimal:
    """The least a call could be held for: its worst-case input and one output token."""
    with localcontext(EXACT):
        return worst.cost_usd + model.output_cost_per_token


def input_alone_exceeds(model: Model, worst: WorstInput, budget_usd: Decimal) -> bool:
    """Whether the worst-case input leaves no room for one output token within the budget."""
    if model.output_cost_per_1k == 0:
        return worst.cost_usd >= budget_usd
    with localcontext(EXACT):
        return worst.cost_usd + model.output_cost_per_token > budget_usd


def plan_call(model: Model, worst: WorstInput, caller_cap: int | None, budget_usd: Decimal | None) -> CallPlan | None:
    """The plan for one call: the smaller of the model's and the caller's caps, lowered to the ceiling.

    None when the ceiling cannot hold: the worst-case input alone could reach the budget.
    """
    cap = model.max_output_tokens if caller_cap is None else min(caller_cap, model.max_output_tokens)
    applied = False
    if budget_usd is not None:
        ceiling = _output_ceiling(model, worst, budget_usd)
        if ceiling == 0:
            return None
        if ceiling < cap:
            cap, applied = ceiling, True
    with localcontext(EXACT):
        worst_case = worst.cost_usd + output_cost(model, cap)
    return CallPlan(max_tokens=cap, ceiling_applied=applied, budget_usd=budget_usd, worst_input=worst,
                    worst_case_usd=worst_case)


def _output_ceiling(model: Model, worst: WorstInput, budget_usd: Decimal) -> int:
    """The most output tokens whose cost, on top of the worst-case input, stays within the budget."""
    with localcontext(EXACT):
        remaining = budget_usd - worst.cost_usd
        if remaining <= 0:
            return 0
        if model.output_cost_per_1k == 0:
            return model.max_output_tokens
        quotient = (remaining / model.output_cost_per_token).to_integral_value(rounding=ROUND_FLOOR)
        allowed = model.max_output_tokens if quotient >= model.max_output_tokens else int(quotient)
        # Only a price with more digits than EXACT holds could round the quotient up: check the answer.
        while allowed > 0 and worst.cost_usd + allowed * model.output_cost_per_token > budget_usd:
            allowed -= 1
    return allowed
