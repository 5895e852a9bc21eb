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
