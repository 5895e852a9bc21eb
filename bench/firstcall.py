"""Figure 8: the first call to each kind of provider in a fresh interpreter, against a local fake.

Each run is ``python bench/cold_child.py first-call KIND`` (see that file) with a registry
document in ``MODELS_CONFIG_JSON`` naming one provider of that kind and one model, the provider
pointing at a fake served by this process on 127.0.0.1 (``tests/fakes``: ``FakeOpenAI``,
``FakeAnthropic``, ``FakeBedrock``); ``mock`` (the built-in mock provider, one model) is the
baseline with no SDK at all. The kinds alternate run by run, after one warm-up run each that fills
the private bytecode cache (as figure 4 does); each figure is the median of the runs.

The Bedrock child has fake AWS credentials in its environment (``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` ``testing``, ``AWS_REGION`` ``us-east-1``; the shared config and
credential files point at /dev/null and the instance metadata service is disabled, as for every
child): the SigV4 signature is computed for real, the fake does not check it.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from collections import defaultdict
from typing import Any

from bench.common import HAIKU_BODY, ROOT, clean_env, run_child_json

CHILD = str(ROOT / "bench" / "cold_child.py")
KINDS = ("mock", "openai", "anthropic", "bedrock")
# One model per registry: the haiku request's constraints (quality 3, $0.002, 1000 ms) all fit it.
MODEL = {"name": "bench", "quality": 3, "in_cost_per_1k": 0.0008, "out_cost_per_1k": 0.004, "latency_ms": 500,
         "max_output_tokens": 1024}
UPSTREAM = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5",
            "bedrock": "anthropic.claude-3-5-haiku-20241022-v1:0"}
KEYS = ("import_ms", "app_build_ms", "first_request_ms", "import_sdk_ms", "session_ms", "client_ms", "call_ms",
        "router_ms", "cold_ms", "warm_request_ms", "warm_complete_ms", "second_client_ms", "second_client_call_ms",
        "second_client_request_ms", "total_ms")


def registry(kind: str, fakes: dict[str, Any]) -> dict[str, Any]:
    """The registry document of one kind's run: one provider (``bench``) and its one model."""
    if kind == "mock":
        return {"providers": {}, "models": [{"provider": "mock", **MODEL}]}
    provider: dict[str, Any] = {"kind": kind}
    if kind == "openai":
        provider.update(base_url=fakes["openai"].base_url, api_key={"env": "K"})
    elif kind == "anthropic":
        provider.update(base_url=fakes["anthropic"].base_url, api_key={"env": "K"})
    else:
        provider.update(region="us-east-1", endpoint_url=fakes["bedrock"].endpoint_url)
    return {"providers": {"bench": provider}, "models": [{"provider": "bench", "upstream_model": UPSTREAM[kind], **MODEL}]}


def environments(cache: str, fakes: dict[str, Any]) -> dict[str, dict[str, str]]:
    # The haiku, without its preference for the mock provider.
    constraints = {k: v for k, v in HAIKU_BODY["constraints"].items() if k != "prefer_provider"}
    body = json.dumps({**HAIKU_BODY, "constraints": constraints})
    envs: dict[str, dict[str, str]] = {}
    for kind in KINDS:
        extra = {"PYTHONPYCACHEPREFIX": cache, "LOG_FORMAT": "emf", "BENCH_ROUTE_BODY": body,
                 "MODELS_CONFIG_JSON": json.dumps(registry(kind, fakes))}
        if kind in ("openai", "anthropic"):
            extra["K"] = fakes[kind].api_key
        if kind == "bedrock":
            extra.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1")
        env = clean_env(extra)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # the private cache must fill, whatever the caller's setting
        envs[kind] = env
    return envs


def _child(kind: str, env: dict[str, str]) -> dict[str, Any]:
    result = run_child_json([CHILD, "first-call", kind], env)
    result.pop("_stderr", None)
    return result


def run(quick: bool = False, log: Any = sys.stderr) -> dict[str, Any]:
    from tests.fakes.fake_anthropic import FakeAnthropic
    from tests.fakes.fake_bedrock import FakeBedrock
    from tests.fakes.fake_openai import FakeOpenAI

    runs = 3 if quick else 9
    cache = tempfile.TemporaryDirectory(prefix="costroute-bench-pyc-")
    fakes: dict[str, Any] = {"openai": FakeOpenAI(), "anthropic": FakeAnthropic(), "bedrock": FakeBedrock()}
    collected: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        envs = environments(cache.name, fakes)
        print(f"bench: first calls ({', '.join(KINDS)}): one warm-up each, then {runs} rounds", file=log)
        for kind in KINDS:
            _child(kind, envs[kind])
        for _ in range(runs):
            for kind in KINDS:
                collected[kind].append(_child(kind, envs[kind]))
        served = {kind: len(fake.requests) for kind, fake in fakes.items()}
    finally:
        for fake in fakes.values():
            fake.close()
        cache.cleanup()
    results: dict[str, Any] = {"runs": runs, "upstream_requests": served}
    for kind, kind_runs in collected.items():
        summary: dict[str, Any] = {
            key: round(statistics.median(run[key] for run in kind_runs), 2) for key in KEYS if key in kind_runs[0]
        }
        summary["cold_ms_all"] = sorted(run["cold_ms"] for run in kind_runs)
        summary["max_rss_mb"] = max(run["max_rss_mb"] for run in kind_runs)
        summary["heavy_imported"] = kind_runs[-1]["heavy_imported"]
        summary["models"] = kind_runs[-1]["models"]
        if "clients" in kind_runs[-1]:
            summary["clients"] = kind_runs[-1]["clients"]
        results[kind] = summary
    for kind in KINDS:
        if kind != "mock":
            results[kind]["cold_minus_mock_ms"] = round(results[kind]["cold_ms"] - results["mock"]["cold_ms"], 2)
    return results
