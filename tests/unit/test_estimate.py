"""Token, cost and latency estimates (the ceiling built on them is tested in test_plan.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costroute.core.estimate import (
    DEFAULT_OUTPUT_TOKENS,
    TASK_DEFAULTS,
    ChatMessage,
    cost_usd,
    estimate_for,
    estimate_prompt_tokens,
    estimate_text_tokens,
    expected_output_tokens,
    prompt_token_bound,
    required_quality,
)
from costroute.core.registry import Model


def model(in_price: str = "0.001", out_price: str = "0.002", max_out: int = 1000, latency: int = 300) -> Model:
    """A test model with the given prices (USD per 1k tokens)."""
    return Model("mock", "m", 3, Decimal(in_price), Decimal(out_price), latency, max_out)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("abcd", 1), ("abcde", 2), ("Write a haiku about the sea.", 7), ("héllo", 2), ("日本語", 3)],
)
def test_text_tokens_heuristic(text: str, tokens: int) -> None:
    assert estimate_text_tokens(text) == tokens


def test_prompt_tokens_add_chat_overhead_per_message() -> None:
    one = estimate_prompt_tokens([ChatMessage("user", "abcd")])
    two = estimate_prompt_tokens([ChatMessage("system", "abcd"), ChatMessage("user", "abcd")])
    assert one == 1 + 4 + 3
    assert two == one + 1 + 4


def test_bound_is_utf8_bytes_plus_framing_and_never_below_the_estimate() -> None:
    texts = ["Write a haiku.", "naïve café", "日本語のテキスト", "🙂" * 10, "x = [1, 2, 3]  # code", "https://a.b/c?d=1"]
    for text in texts:
        messages = [ChatMessage("user", text)]
        bound = prompt_token_bound(messages)
        assert bound >= len(text.encode("utf-8")) + len("user") + 8 + 8
        assert bound >= estimate_prompt_tokens(messages)


@pytest.mark.parametrize(
    ("requested", "task", "expected", "source"),
    [
        (128, "qa", 128, "metadata.expected_output_tokens"),
        (None, "classification", TASK_DEFAULTS["classification"].output_tokens, "task_type 'classification'"),
        (None, "astrology", DEFAULT_OUTPUT_TOKENS, "not in the table"),
        (None, None, DEFAULT_OUTPUT_TOKENS, "global default"),
    ],
)
def test_output_tokens_precedence(requested: int | None, task: str | None, expected: int, source: str) -> None:
    tokens, where = expected_output_tokens(requested, task)
    assert tokens == expected and source in where


@pytest.mark.parametrize(
    ("min_quality", "task", "expected", "source"),
    [
        (2, "reasoning", 2, "constraints.min_quality"),
        (None, "reasoning", TASK_DEFAULTS["reasoning"].quality, "task_type 'reasoning'"),
        (None, "astrology", 2, "unknown task_type"),
        (None, None, 1, "no min_quality and no task_type"),
    ],
)
def test_required_quality_precedence(min_quality: int | None, task: str | None, expected: int, source: str) -> None:
    quality, where = required_quality(min_quality, task)
    assert quality == expected and source in where


def test_cost_is_exact_decimal_arithmetic() -> None:
    assert cost_usd(model("0.0025", "0.006"), 14, 128) == Decimal("0.000803")
    # 0.1 + 0.2 style drift cannot happen: a thousand tokens at $0.0001 is exactly $0.0001.
    assert cost_usd(model("0.0001", "0"), 1000, 0) == Decimal("0.0001")


def test_estimate_caps_output_at_max_output_tokens_and_keeps_latency() -> None:
    estimate = estimate_for(model(max_out=100, latency=450), 10, 5000)
    assert estimate.output_tokens == 100
    assert estimate.latency_ms == 450
    assert estimate.cost_usd == cost_usd(model(max_out=100), 10, 100)


def test_text_tokens_count_ascii_and_other_characters_alike_on_long_text() -> None:
    text = ("naïve café 日本 " * 2000) + "plain ascii " * 1000
    ascii_chars = sum(1 for char in text if ord(char) < 128)
    assert estimate_text_tokens(text) == -(-ascii_chars // 4) + (len(text) - ascii_chars)


def test_estimates_for_many_models_equal_one_by_one() -> None:
    from costroute.core.estimate import estimates_for

    models = [Model("mock", f"m{i}", 3, Decimal(f"0.000{i}1"), Decimal(f"0.00{i}3"), 100 + i, 50 * (i + 1)) for i in range(8)]
    assert estimates_for(models, 37, 180) == {m.id: estimate_for(m, 37, 180) for m in models}
