"""The ladder, table-driven: every rung, latency relaxation, ties, order independence, provider bias."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest

from costroute.core.registry import Model
from costroute.core.selection import (
    CHOSEN,
    ELIGIBLE,
    EXCLUDED,
    STRATEGY,
    Constraints,
    SelectionRequest,
    UnknownProviderError,
    select_model,
)

# With 100 input and 100 output tokens, a model priced p per 1k (in and out) costs p / 5.
TOKENS = 100


def m(name: str, quality: int, price: str, latency: int = 300, provider: str = "mock", max_out: int = 4096) -> Model:
    """A model whose request cost is price/5 for the standard 100+100 tokens."""
    return Model(provider, name, quality, Decimal(price), Decimal(price), latency, max_out)


REGISTRY = (
    m("q2", 2, "0.001"),  # $0.0002
    m("q3", 3, "0.002"),  # $0.0004
    m("q4", 4, "0.004"),  # $0.0008
    m("q5", 5, "0.010", latency=2000),  # $0.002
)


def request(**constraints: Any) -> SelectionRequest:
    """A request of 100 input and 100 output tokens with the given constraints."""
    budget = constraints.pop("max_cost_usd", None)
    return SelectionRequest(
        constraints=Constraints(max_cost_usd=Decimal(budget) if budget else None, **constraints),
        input_tokens=TOKENS,
        expected_output_tokens=TOKENS,
    )


@pytest.mark.parametrize(
    ("registry", "constraints", "model", "rung"),
    [
        # Rung 1: quality and budget both met: the cheapest of those.
        (REGISTRY, {"min_quality": 3, "max_cost_usd": "0.01"}, "mock:q3", 1),
        (REGISTRY, {"min_quality": 4, "max_cost_usd": "0.0008"}, "mock:q4", 1),
        # No budget means every model is within budget.
        (REGISTRY, {"min_quality": 4}, "mock:q4", 1),
        # Rung 2: nothing of quality >= 4 within $0.0005, so the budget is relaxed: the cheapest q >= 4.
        (REGISTRY, {"min_quality": 4, "max_cost_usd": "0.0005"}, "mock:q4", 2),
        # Rung 3: no model of quality 5 outside q5 ... drop q5 so quality cannot be met: best within budget.
        (REGISTRY[:3], {"min_quality": 5, "max_cost_usd": "0.0005"}, "mock:q3", 3),
        # Rung 4: nothing meets quality, nothing fits the budget: the cheapest of all.
        (REGISTRY[:3], {"min_quality": 5, "max_cost_usd": "0.0001"}, "mock:q2", 4),
        # Latency filter removes q5; quality 5 then cannot be met: rung 3 picks the best within budget.
        (REGISTRY, {"min_quality": 5, "max_cost_usd": "0.01", "max_latency_ms": 1000}, "mock:q4", 3),
    ],
)
def test_each_rung(registry: tuple[Model, ...], constraints: dict[str, Any], model: str, rung: int) -> None:
    decision = select_model(registry, request(**constraints))
    assert decision.strategy == STRATEGY
    assert (decision.model.id, decision.rung) == (model, rung)


def test_rung_3_prefers_quality_then_cost() -> None:
    registry = (m("a", 3, "0.001"), m("b", 4, "0.003"), m("c", 4, "0.002"), m("d", 4, "0.009"))
    decision = select_model(registry, request(min_quality=5, max_cost_usd="0.001"))
    assert (decision.model.id, decision.rung) == ("mock:c", 3)


def test_latency_filter_is_relaxed_when_no_model_meets_it() -> None:
    decision = select_model(REGISTRY, request(min_quality=3, max_latency_ms=10))
    assert decision.latency_relaxed
    assert decision.model.id == "mock:q3"
    assert any("relaxed" in line and "10 ms" in line for line in decision.trace)


def test_latency_filter_excludes_slow_models_with_reason() -> None:
    decision = select_model(REGISTRY, request(min_quality=5, max_latency_ms=1000))
    verdicts = {c.model.id: c for c in decision.candidates}
    assert verdicts["mock:q5"].verdict == EXCLUDED
    assert "2000 ms > limit 1000 ms" in verdicts["mock:q5"].reason
    assert any("removed 1 of 4" in line for line in decision.trace)


@pytest.mark.parametrize(
    ("registry", "winner"),
    [
        # Equal cost: the higher quality wins.
        ((m("a", 3, "0.002"), m("b", 4, "0.002")), "mock:b"),
        # Equal cost and quality: the lower latency wins.
        ((m("a", 3, "0.002", latency=500), m("b", 3, "0.002", latency=200)), "mock:b"),
        # Equal in everything: the lexically smaller id wins.
        ((m("zeta", 3, "0.002"), m("alpha", 3, "0.002")), "mock:alpha"),
    ],
)
def test_ties_are_broken_explicitly(registry: tuple[Model, ...], winner: str) -> None:
    for ordering in (registry, tuple(reversed(registry))):
        decision = select_model(ordering, request(min_quality=1))
        assert decision.model.id == winner
        assert any(line.startswith("Tie on") and winner in line for line in decision.trace)


def test_shuffling_the_registry_never_changes_a_choice() -> None:
    rng = random.Random(7)
    registry = [
        m(f"m{i}", rng.randint(1, 5), str(Decimal(rng.choice([1, 2, 2, 3, 5, 8])) / 1000), latency=rng.choice([100, 300, 300, 900]))
        for i in range(30)
    ]
    requests = [
        request(min_quality=q, max_cost_usd=b, max_latency_ms=lat, prefer_provider=None)
        for q in (1, 3, 5)
        for b in (None, "0.0004", "0.001")
        for lat in (None, 300)
    ]
    baseline = [select_model(registry, r).model.id for r in requests]
    for _ in range(20):
        rng.shuffle(registry)
        assert [select_model(registry, r).model.id for r in requests] == baseline


def test_provider_bias_wins_within_tolerance() -> None:
    registry = (m("cheap", 3, "0.0100", provider="openai"), m("near", 3, "0.0109"))
    decision = select_model(registry, request(min_quality=3, prefer_provider="mock"))
    assert decision.model.id == "mock:near"
    assert any("within 10%" in line and "replaces openai:cheap" in line for line in decision.trace)


def test_provider_bias_loses_beyond_tolerance() -> None:
    registry = (m("cheap", 3, "0.0100", provider="openai"), m("far", 3, "0.0111"))
    decision = select_model(registry, request(min_quality=3, prefer_provider="mock"))
    assert decision.model.id == "openai:cheap"
    assert any("kept openai:cheap" in line for line in decision.trace)


def test_provider_bias_on_rung_3_needs_the_same_quality() -> None:
    registry = (m("best", 4, "0.001", provider="openai"), m("worse", 3, "0.001"))
    decision = select_model(registry, request(min_quality=5, max_cost_usd="0.01", prefer_provider="mock"))
    assert (decision.model.id, decision.rung) == ("openai:best", 3)


def test_provider_bias_stays_within_the_rung() -> None:
    # The mock model is within 10% but below the quality floor: it is not on rung 1.
    registry = (m("good", 3, "0.0100", provider="openai"), m("weak", 2, "0.0100"))
    decision = select_model(registry, request(min_quality=3, prefer_provider="mock"))
    assert decision.model.id == "openai:good"


def test_unknown_preferred_provider_lists_the_known_ones() -> None:
    with pytest.raises(UnknownProviderError, match="providers: mock"):
        select_model(REGISTRY, request(prefer_provider="acme"))


def test_strict_budget_never_relaxes_the_budget() -> None:
    decision = select_model(REGISTRY, request(min_quality=4, max_cost_usd="0.0005", strict_budget=True))
    assert (decision.model.id, decision.rung) == ("mock:q3", 3)
    refused = select_model(REGISTRY, request(min_quality=4, max_cost_usd="0.0001", strict_budget=True))
    assert refused.model is None and refused.budget_refused
    assert "strict_budget" in refused.failure


def test_unavailable_models_leave_the_pool_with_their_reason() -> None:
    decision = select_model(REGISTRY, request(min_quality=3), unavailable={"mock:q3": "no key"})
    assert decision.model.id == "mock:q4"
    assert {c.model.id: c.reason for c in decision.candidates}["mock:q3"] == "no key"


def test_candidates_cover_every_model_with_a_verdict() -> None:
    decision = select_model(REGISTRY, request(min_quality=3, max_cost_usd="0.01"))
    verdicts = {c.model.id: c.verdict for c in decision.candidates}
    assert verdicts == {"mock:q2": EXCLUDED, "mock:q3": CHOSEN, "mock:q4": ELIGIBLE, "mock:q5": ELIGIBLE}


def test_trace_lets_a_reader_follow_the_decision() -> None:
    decision = select_model(REGISTRY, request(min_quality=4, max_cost_usd="0.0005", max_latency_ms=1000))
    text = "\n".join(decision.trace)
    assert "Required quality 4, from constraints.min_quality" in text
    assert "100 input tokens" in text and "100 output tokens" in text
    assert "removed 1 of 4" in text
    assert "Rung 1 (quality >= 4 and estimated cost <= $0.0005" in text and "empty" in text
    assert "Rung 2" in text and "Chose mock:q4 on rung 2" in text
