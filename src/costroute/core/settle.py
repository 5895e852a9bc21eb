"""Settling a call: the provider's usage, normalised by its adapter, priced exactly.

Every adapter reports one ``Usage`` record whatever its provider's own fields (OpenAI counts
cached tokens inside ``prompt_tokens``; Anthropic and Bedrock count them beside ``input_tokens``):
uncached input, cache reads, cache writes (5-minute or unspecified TTL), 1-hour cache writes and
output. Each class is priced at the model's rate for it; a class the provider reported whose rate
the registry lacks is priced at the full input price, and the settlement says so.

A provider that reports no usage is settled on a worst case that is never below the truth: the
prompt's bound at the worst-case input rate, and for the answer its UTF-8 bytes (no byte-level
tokenizer makes more tokens than bytes) at most the cap sent. A call that failed after it started
(a stream cut or broken mid-way) is settled on the plan's whole worst case: the provider may bill
tokens it generated but never delivered.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import NamedTuple

from costroute.core.estimate import EXACT
from costroute.core.plan import CallPlan
from costroute.core.registry import Model


class Usage(NamedTuple):
    """What a call consumed, by billing class."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """Every input token, cached or not (what OpenAI calls ``prompt_tokens``)."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens + self.cache_write_1h_tokens

class Settlement(NamedTuple):
    """The settled usage and its exact cost, and what the trace should say about them."""

    usage: Usage
    reported: bool
    cost_usd: Decimal
    notes: tuple[str, ...] = ()
    # How much the cost passed the plan's budget (a provider that ignored max_tokens); None when within.
    over_budget_usd: Decimal | None = None


def usage_cost(model: Model, usage: Usage) -> tuple[Decimal, tuple[str, ...]]:
    """The exact cost of a usage record on a model, and a note for every class priced at the input rate."""
    notes = []
    rates = []
    for tokens, price, label, field_name in (
        (usage.cache_read_tokens, model.cached_input_cost_per_1k, "cache-read", "cached_input_cost_per_1k"),
        (usage.cache_write_tokens, model.cache_write_cost_per_1k, "cache-write", "cache_write_cost_per_1k"),
        (usage.cache_write_1h_tokens, model.cache_write_1h_cost_per_1k, "1-hour cache-write",
         "cache_write_1h_cost_per_1k"),
    ):
        if tokens and price is None:
            notes.append(f"{tokens} {label} tokens priced at the full input price: the registry gives {model.id} "
                         f"no {field_name}.")
        rates.append((tokens, model.input_cost_per_1k if price is None else price))
    with localcontext(EXACT):
        cost = usage.input_tokens * model.input_cost_per_token + usage.output_tokens * model.output_cost_per_token
        for tokens, price in rates:
            cost += tokens * price / 1000
    return cost, tuple(notes)


def settle(model: Model, plan: CallPlan, usage: Usage | None, answer_bytes: int, complete: bool) -> Settlement:
    """Price the call: the reported usage, or the worst case when there is none."""
    if usage is not None:
        cost, notes = usage_cost(model, usage)
        reported = True
    else:
        output = min(plan.max_tokens, answer_bytes) if complete else plan.max_tokens
        usage = Usage(input_tokens=plan.worst_input.tokens, output_tokens=output)
        with localcontext(EXACT):
            cost = plan.worst_input.cost_usd + output * model.output_cost_per_token
        notes = ()
        reported = False
    over = None
    if plan.budget_usd is not None and cost > plan.budget_usd:
        with localcontext(EXACT):
            over = cost - plan.budget_usd
    return Settlement(usage=usage, reported=reported, cost_usd=cost, notes=notes, over_budget_usd=over)
