"""Shared pieces of the benchmarks: the seed's request, synthetic registries, statistics, children.

Everything here is deterministic (registries come from a seeded generator) and needs no network.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# The seed's haiku request: what `events/route.json` sends to POST /route.
HAIKU_BODY: dict[str, Any] = {
    "input": "Write a haiku about the sea.",
    "constraints": {"max_cost_usd": 0.002, "min_quality": 3, "max_latency_ms": 1000, "prefer_provider": "mock"},
    "metadata": {"task_type": "summarization", "expected_output_tokens": 128},
}


def haiku_json(**extra: Any) -> str:
    """The haiku body as compact JSON text, with extra top-level fields."""
    return json.dumps({**HAIKU_BODY, **extra}, separators=(",", ":"))


def registry_rows(count: int, providers: Sequence[str] = ("mock",), seed: int | None = None) -> list[list[Any]]:
    """``count`` models in the seed's row format, deterministic for a given count.

    Quality 1-5 with prices that grow with quality (x2.2 a step, scattered 0.5-2x), output
    3-4x input, latency 100-3000 ms: a spread in which the haiku request's constraints keep some
    models and exclude others for every reason the ladder has.
    """
    rnd = random.Random(count if seed is None else seed)
    rows: list[list[Any]] = []
    for index in range(count):
        quality = rnd.randint(1, 5)
        input_price = 0.00005 * (2.2**quality) * rnd.uniform(0.5, 2.0)
        rows.append(
            [
                providers[index % len(providers)],
                f"model-{index:04d}",
                quality,
                round(input_price, 6) or 0.000001,
                round(input_price * rnd.choice((2, 3, 4)), 6),
                rnd.randrange(100, 3000, 10),
                rnd.choice((1024, 2048, 4096, 8192, 16384)),
            ]
        )
    return rows


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summarise_ns(samples_ns: Iterable[int]) -> dict[str, float]:
    """p50, p99, mean and count of timings given in nanoseconds, reported in microseconds."""
    values = sorted(samples_ns)
    return {
        "p50_us": round(percentile(values, 0.50) / 1000, 2),
        "p99_us": round(percentile(values, 0.99) / 1000, 2),
        "mean_us": round(statistics.fmean(values) / 1000, 2),
        "samples": len(values),
    }


def time_calls(function: Callable[[], Any], count: int) -> list[int]:
    """Call ``function`` ``count`` times; the duration of each call in nanoseconds."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(count):
        started = clock()
        function()
        samples.append(clock() - started)
    return samples


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: ours minus anything that configures the service or AWS.

    ``PYTHONPATH`` is kept: ``PYTHONPATH=/elsewhere/src make bench`` measures another copy of the
    package (a proposed change) with everything else equal.
    """
    # LOG_FORMAT, LOG_LEVEL, budgets and spend stores, Prometheus' directory and the Anthropic SDK's
    # own variables all change what a request does; each figure sets what it measures itself.
    drop_prefixes = ("AWS_", "OPENAI_", "ANTHROPIC_", "MODELS_CONFIG", "BUDGETS_CONFIG", "SPEND_", "PROMETHEUS_",
                     "LOG_", "GUNICORN_", "MOCK_", "BREAKER_")
    drop = {"WEB_CONCURRENCY", "PORT", "HOST", "CONFIG_TTL_SECONDS", "REQUEST_DEADLINE_SECONDS",
            "PROVIDER_TIMEOUT_SECONDS", "MAX_BODY_BYTES", "PYTHONPROFILEIMPORTTIME", "PYTHONSTARTUP",
            "prometheus_multiproc_dir"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(drop_prefixes)}
    # boto3 must never look for real credentials or the instance metadata service.
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    if extra:
        env.update(extra)
    return env


def run_child_json(args: Sequence[str], env: Mapping[str, str], timeout: float = 120) -> dict[str, Any]:
    """Run a child Python that prints one JSON object as its last stdout line; return it."""
    completed = subprocess.run(
        [PYTHON, *args], cwd=ROOT, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"child {' '.join(args)} printed nothing; stderr:\n{completed.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result.setdefault("_stderr", completed.stderr)
    return result


def discard_stdout() -> TextIO:
    """Point this process's stdout (file descriptor 1) at /dev/null; a stream on the old stdout for the result.

    The service writes one line per request to stdout (the ``costroute.requests`` logger, or the EMF
    line written to ``sys.stdout`` directly). A benchmark child calls this before building the app:
    every such line is still formatted and written (a real ``write`` to /dev/null, flushed as in
    production), but neither a terminal nor the parent's pipe pays for it, and the result line
    printed on the returned stream is the only thing the parent reads.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return os.fdopen(saved, "w", encoding="utf-8")


def print_result(stream: TextIO, result: Mapping[str, Any]) -> None:
    """The child's one JSON line, on the stream ``discard_stdout`` returned."""
    stream.write(json.dumps(result) + "\n")
    stream.flush()


def loadavg() -> float:
    """The 1-minute load average (other work on the machine skews every figure)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")
