"""Planning a call: the worst-case input and the output cap that keeps the hard ceiling (pure, no clock)."""

from __future__ import annotations

from decimal import Decimal

from costroute.core.estimate import cost_usd
from costroute.core.plan import input_alone_exceeds, plan_call, worst_input
from costroute.core.registry import Model


def model(in_price: str = "0.001", out_price: str = "0.002", max_out: int = 1000, write: str | None = None,
          write_1h: str | None = None, read: str | None = None) -> Model:
    """A test model with the given prices (USD per 1k tokens)."""
    return Model("mock", "m", 3, Decimal(in_price), Decimal(out_price), 300, max_out,
                 cached_input_cost_per_1k=Decimal(read) if read else None,
                 cache_write_cost_per_1k=Decimal(write) if write else None,
                 cache_write_1h_cost_per_1k=Decimal(write_1h) if write_1h else None)


def test_ceiling_is_the_largest_output_that_fits() -> None:
    m = model("0.001", "0.002", max_out=10_000)
    budget = Decimal("0.002")
    plan = plan_call(m, worst_input(m, 100), None, budget)
    assert plan is not None and plan.ceiling_applied
    assert cost_usd(m, 100, plan.max_tokens) <= budget < cost_usd(m, 100, plan.max_tokens + 1)
    assert plan.worst_case_usd == cost_usd(m, 100, plan.max_tokens)


def test_no_plan_when_input_alone_reaches_the_budget_and_the_cap_is_the_models() -> None:
    m = model("0.01", "0.002", max_out=50)
    assert plan_call(m, worst_input(m, 100), None, Decimal("0.001")) is None
    plan = plan_call(m, worst_input(m, 10), None, Decimal("1"))
    assert plan is not None and (plan.max_tokens, plan.ceiling_applied) == (50, False)
    free = model("0.001", "0", max_out=77)
    plan = plan_call(free, worst_input(free, 10), None, Decimal("1"))
    assert plan is not None and plan.max_tokens == 77


def test_the_callers_smaller_cap_wins_and_no_budget_means_no_ceiling() -> None:
    m = model(max_out=1000)
    plan = plan_call(m, worst_input(m, 10), 64, None)
    assert plan is not None and (plan.max_tokens, plan.ceiling_applied, plan.budget_usd) == (64, False, None)


def test_input_alone_exceeds_agrees_with_a_missing_plan() -> None:
    prices = ["0", "0.00001", "0.0003", "0.002", "0.03"]
    budgets = [Decimal(b) for b in ("0.000001", "0.00005", "0.0004", "0.002", "0.01")]
    for in_price in prices:
        for out_price in prices:
            m = model(in_price, out_price, max_out=500)
            for budget in budgets:
                for bound in (1, 7, 120, 3000):
                    worst = worst_input(m, bound)
                    assert input_alone_exceeds(m, worst, budget) == (plan_call(m, worst, None, budget) is None)


def test_provider_overhead_counts_in_the_worst_case() -> None:
    m = model()
    assert worst_input(m, 100, provider_extra_tokens=346).tokens == 446


def test_cache_breakpoints_price_the_input_at_the_highest_write_rate_never_the_read_rate() -> None:
    m = model("0.003", "0.015", write="0.00375", write_1h="0.006", read="0.0003")
    plain = worst_input(m, 1000)
    assert (plain.rate_per_token, plain.rate_name) == (Decimal("0.000003"), "input")
    cached = worst_input(m, 1000, cache_breakpoints=True)
    assert (cached.rate_per_token, cached.rate_name) == (Decimal("0.000006"), "1-hour cache write")
    assert cached.cost_usd == Decimal("0.006")
    # A write price below the input price (or none) never lowers the worst case.
    cheap = model("0.003", "0.015", write="0.001")
    assert worst_input(cheap, 1000, cache_breakpoints=True).rate_name == "input"
