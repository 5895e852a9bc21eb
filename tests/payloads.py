"""Request bodies and paths shared by tests: the seed's examples."""

from __future__ import annotations

import os
from typing import Any

HAIKU_REQUEST: dict[str, Any] = {
    "input": "Write a haiku about the sea.",
    "constraints": {"max_cost_usd": 0.002, "min_quality": 3, "max_latency_ms": 1000, "prefer_provider": "mock"},
    "metadata": {"task_type": "summarization", "expected_output_tokens": 128},
}

SEED_CURL_REQUEST: dict[str, Any] = {
    "input": "Explain recursion to a child.",
    "constraints": {"min_quality": 3, "max_cost_usd": 0.005},
    "metadata": {"task_type": "qa"},
}


def repo_root() -> str:
    """The repository's top folder."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# A registry with two mock tiers and one OpenAI model, the only one of quality 5.
MOCK_ROWS: list[list[Any]] = [
    ["mock", "basic", 1, 0.0001, 0.0002, 150, 1024],
    ["mock", "advanced", 4, 0.0025, 0.006, 500, 4096],
]
OPENAI_MODEL: dict[str, Any] = {
    "provider": "openai",
    "name": "gpt-4o-mini",
    "quality": 5,
    "in_cost_per_1k": 0.00015,
    "out_cost_per_1k": 0.0006,
    "latency_ms": 800,
    "max_output_tokens": 4096,
}
# Only the OpenAI model has quality 5, so this request can be served by nothing else.
OPENAI_ROUTE: dict[str, Any] = {"input": "Say hello to the sea.", "constraints": {"min_quality": 5}}
