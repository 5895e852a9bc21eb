"""Figure 1: selection alone (``select_model``) over registries of 10, 100 and 1,000 models.

The request is the seed's haiku (min quality 3, budget $0.002, latency limit 1000 ms, prefer
mock, 128 output tokens), its input tokens estimated as the service does. The registry mixes
``mock`` and ``openai`` models so the provider preference has work to do; every model is
available (selection alone knows nothing of keys).
"""

from __future__ import annotations

import functools
import gc
import math
from decimal import Decimal
from typing import Any

from bench.common import HAIKU_BODY, registry_rows, summarise_ns, time_calls

SIZES = (10, 100, 1000)
# About 0.3-1 s per size on the reference machine.
CALLS = {10: 20000, 100: 3000, 1000: 300}
ROUNDS = 3


def run(quick: bool = False) -> dict[str, Any]:
    """p50/p99 per registry size, the time per model, and the growth between sizes."""
    from costroute.config.registry_source import builtin_providers
    from costroute.config.settings import Settings
    from costroute.core.estimate import ChatMessage, estimate_prompt_tokens
    from costroute.core.registry import build_registry
    from costroute.core.selection import Constraints, SelectionRequest, select_model
    from costroute.providers import KINDS

    constraints = HAIKU_BODY["constraints"]
    metadata = HAIKU_BODY["metadata"]
    request = SelectionRequest(
        constraints=Constraints(
            max_cost_usd=Decimal(str(constraints["max_cost_usd"])),
            min_quality=constraints["min_quality"],
            max_latency_ms=constraints["max_latency_ms"],
            prefer_provider=constraints["prefer_provider"],
        ),
        input_tokens=estimate_prompt_tokens([ChatMessage(role="user", content=HAIKU_BODY["input"])]),
        task_type=metadata["task_type"],
        expected_output_tokens=metadata["expected_output_tokens"],
    )
    results: dict[str, Any] = {"input_tokens": request.input_tokens, "sizes": {}}
    for size in SIZES:
        rows = registry_rows(size, providers=("mock", "openai"))
        models = build_registry(rows, KINDS, builtin_providers(Settings())).models
        decision = select_model(models, request)
        calls = max(CALLS[size] // (10 if quick else 1), 20)
        samples: list[int] = []
        gc.collect()
        for _ in range(ROUNDS):
            samples += time_calls(functools.partial(select_model, models, request), calls // ROUNDS)
        summary: dict[str, Any] = dict(summarise_ns(samples))
        summary["per_model_us"] = round(summary["p50_us"] / size, 3)
        summary["chosen"] = decision.model.id if decision.model else None
        summary["rung"] = decision.rung
        results["sizes"][str(size)] = summary
    p50 = {size: results["sizes"][str(size)]["p50_us"] for size in SIZES}
    # Log-log slope of p50 against size: 1.0 is linear, 2.0 quadratic, 0 constant.
    results["growth"] = {
        "x10_to_x100": round(p50[100] / p50[10], 2),
        "x100_to_x1000": round(p50[1000] / p50[100], 2),
        "slope_10_100": round(math.log10(p50[100] / p50[10]), 2),
        "slope_100_1000": round(math.log10(p50[1000] / p50[100]), 2),
    }
    return results
