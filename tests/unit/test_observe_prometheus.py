"""Prometheus metrics: counts, buckets, a parseable exposition, private registries, and gunicorn's worker processes."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from costroute.observe.prometheus import (
    MULTIPROC_ENV,
    PROVIDER_LATENCY_BUCKETS,
    ROUTER_OVERHEAD_BUCKETS,
    PrometheusMetrics,
    prometheus_available,
)
from costroute.observe.record import RequestRecord
from tests.payloads import repo_root
from tests.unit.test_observe_logline import SCENARIOS

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples_of(body: bytes) -> Samples:
    """Every sample of a text exposition, by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> PrometheusMetrics:
    """A PrometheusMetrics with its private registry (this process counts in memory)."""
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    from prometheus_client import values

    if values.ValueClass is not values.MutexValue:
        pytest.skip("prometheus_client was imported in multiprocess mode in this process")
    return PrometheusMetrics()


def observe(metrics: PrometheusMetrics, *names: str) -> None:
    for name in names:
        metrics.observe(SCENARIOS[name])


def test_counts_after_n_records(metrics: PrometheusMetrics) -> None:
    observe(metrics, "routed", "routed", "routed", "504", "504", "402_budget_exhausted", "stream", "failover")
    body, content_type = metrics.exposition()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    s = samples_of(body)
    assert value(s, "costroute_requests_total", model="mock:advanced", provider="mock", status="200") == 3
    assert value(s, "costroute_requests_total", model="anthropic:claude-haiku", provider="anthropic", status="504") == 2
    assert value(s, "costroute_requests_total", model="none", provider="none", status="402") == 1
    assert value(s, "costroute_errors_total", type="deadline_exceeded") == 2
    assert value(s, "costroute_errors_total", type="budget_exhausted") == 1
    assert value(s, "costroute_cost_usd_total", model="mock:advanced", provider="mock") == pytest.approx(3 * 0.000113)
    assert value(s, "costroute_estimated_cost_usd_total", model="mock:advanced", provider="mock") == pytest.approx(3 * 0.000803)
    assert value(s, "costroute_cost_usd_total", model="bedrock:nova-micro", provider="bedrock") == pytest.approx(1e-7)
    assert value(s, "costroute_over_budget_usd_total", model="bedrock:nova-micro", provider="bedrock") == pytest.approx(2.5e-8)
    assert value(s, "costroute_tokens_total", model="mock:advanced", provider="mock", kind="input") == 3 * 14
    assert value(s, "costroute_tokens_total", model="mock:advanced", provider="mock", kind="output") == 3 * 13
    assert value(s, "costroute_tokens_total", model="mock:advanced", provider="mock", kind="cached_input") == 0
    assert value(s, "costroute_tokens_total", model="anthropic:claude-haiku", provider="anthropic", kind="cache_write_input") == 300
    assert value(s, "costroute_failovers_total") == 2 + 1
    assert value(s, "costroute_ceiling_clamped_total") == 1
    assert value(s, "costroute_over_budget_total") == 1
    assert value(s, "costroute_budget_refused_total") == 1
    assert sum(v for (name, _), v in s.items() if name == "costroute_requests_total") == 8


def test_histogram_buckets(metrics: PrometheusMetrics) -> None:
    observe(metrics, "routed", "routed", "504", "402_budget_exhausted")
    s = samples_of(metrics.exposition()[0])
    overhead = "costroute_router_overhead_seconds_bucket"
    bounds = {dict(labels)["le"] for name, labels in s if name == overhead}
    assert bounds == {str(b) for b in ROUTER_OVERHEAD_BUCKETS} | {"+Inf"}
    # 0.3 ms twice, and 0.3 ms (the 504 and the refusal keep the default) twice more.
    assert value(s, overhead, le="0.00025") == 0 and value(s, overhead, le="0.0005") == 4
    assert value(s, "costroute_router_overhead_seconds_count") == 4
    assert value(s, "costroute_router_overhead_seconds_sum") == pytest.approx(4 * 0.0003)
    latency = "costroute_provider_latency_seconds_bucket"
    assert {dict(labels)["le"] for name, labels in s if name == latency} == {
        str(b) for b in PROVIDER_LATENCY_BUCKETS} | {"+Inf"}
    assert value(s, latency, provider="mock", le="0.25") == 0 and value(s, latency, provider="mock", le="0.5") == 2
    assert value(s, latency, provider="anthropic", le="20.0") == 0 and value(s, latency, provider="anthropic", le="30.0") == 1
    assert value(s, "costroute_provider_latency_seconds_sum", provider="anthropic") == pytest.approx(25.0)
    # A request that called no provider has no latency to tell.
    assert not [labels for name, labels in s if name == latency and ("provider", "none") in labels]


def test_openmetrics_when_the_scraper_asks(metrics: PrometheusMetrics) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    observe(metrics, "routed")
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    assert families["costroute_requests"].samples[0].value == 1


def test_private_registries_do_not_collide(metrics: PrometheusMetrics) -> None:
    from prometheus_client import REGISTRY, generate_latest

    other = PrometheusMetrics()
    observe(metrics, "routed")
    observe(other, "routed", "routed")
    assert value(samples_of(metrics.exposition()[0]), "costroute_requests_total", model="mock:advanced", provider="mock",
                 status="200") == 1
    assert value(samples_of(other.exposition()[0]), "costroute_requests_total", model="mock:advanced", provider="mock",
                 status="200") == 2
    assert b"costroute_" not in generate_latest(REGISTRY)


def test_odd_amounts_never_break_a_counter(metrics: PrometheusMetrics) -> None:
    from decimal import Decimal

    from tests.unit.test_observe_logline import record

    metrics.observe(record(cost_usd=Decimal("NaN"), router_overhead_ms=float("inf"), provider_ms=-5.0))
    s = samples_of(metrics.exposition()[0])
    assert value(s, "costroute_cost_usd_total", model="mock:advanced", provider="mock") == 0
    assert value(s, "costroute_router_overhead_seconds_sum") == 0


def test_a_multiprocess_directory_set_after_the_import_is_refused(metrics: PrometheusMetrics,
                                                                  monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="set after prometheus_client was imported"):
        PrometheusMetrics()


# ---------------------------------------------------------------------------------------------
# Several processes, as gunicorn's workers

WORKER = """
import os, sys
from prometheus_client import Gauge
from costroute.observe.prometheus import PrometheusMetrics
from tests.unit.test_observe_logline import SCENARIOS

first, second = PrometheusMetrics(), PrometheusMetrics()
for _ in range(int(sys.argv[1])):
    first.observe(SCENARIOS["routed"])
    second.observe(SCENARIOS["routed"])
    first.observe(SCENARIOS["504"])
# A live gauge, to see what mark_process_dead removes (these metrics have none).
Gauge("probe_live", "A live gauge.", multiprocess_mode="livesum", registry=None).set(1)
print(os.getpid())
"""

READER = """
import sys
from costroute.observe.prometheus import PrometheusMetrics
body, content_type = PrometheusMetrics().exposition()
sys.stdout.write(content_type + "\\n" + body.decode())
"""


def run_python(script: str, *args: str, directory: Path | None) -> str:
    env = {key: val for key, val in os.environ.items() if key != MULTIPROC_ENV}
    env["PYTHONPATH"] = os.pathsep.join([repo_root(), str(Path(repo_root()) / "src")])
    if directory is not None:
        env[MULTIPROC_ENV] = str(directory)
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=repo_root(),
                            env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def exposition_of(directory: Path) -> Samples:
    content_type, _, body = run_python(READER, directory=directory).partition("\n")
    assert content_type.startswith("text/plain")
    return samples_of(body.encode())


@pytest.fixture
def multiproc_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    yield directory


@pytest.mark.slow
def test_workers_counts_are_summed_and_survive_the_workers(multiproc_dir: Path) -> None:
    pid_a = int(run_python(WORKER, "3", directory=multiproc_dir))
    pid_b = int(run_python(WORKER, "5", directory=multiproc_dir))
    s = exposition_of(multiproc_dir)
    # Two PrometheusMetrics in one process share one set of metric objects: both counts are kept.
    assert value(s, "costroute_requests_total", model="mock:advanced", provider="mock", status="200") == 2 * (3 + 5)
    assert value(s, "costroute_errors_total", type="deadline_exceeded") == 3 + 5
    assert value(s, "costroute_failovers_total") == 3 + 5
    assert value(s, "costroute_cost_usd_total", model="mock:advanced", provider="mock") == pytest.approx(16 * 0.000113)
    assert value(s, "costroute_router_overhead_seconds_count") == 3 * (3 + 5)
    assert value(s, "costroute_provider_latency_seconds_bucket", provider="mock", le="0.5") == 2 * (3 + 5)
    assert value(s, "probe_live") == 2

    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid_a, str(multiproc_dir))  # type: ignore[no-untyped-call]
    after = exposition_of(multiproc_dir)
    # Counters and histograms of a dead worker stay (totals never go backwards); its live gauge goes.
    assert value(after, "costroute_requests_total", model="mock:advanced", provider="mock", status="200") == 16
    assert value(after, "costroute_router_overhead_seconds_count") == 24
    assert value(after, "probe_live") == 1
    files = {path.name for path in multiproc_dir.iterdir()}
    assert {f"counter_{pid_a}.db", f"histogram_{pid_a}.db", f"counter_{pid_b}.db"} <= files
    assert f"gauge_livesum_{pid_a}.db" not in files and f"gauge_livesum_{pid_b}.db" in files


@pytest.mark.slow
def test_a_missing_multiprocess_directory_is_refused_at_construction(tmp_path: Path) -> None:
    script = ("from costroute.observe.prometheus import PrometheusMetrics\n"
              "try:\n    PrometheusMetrics()\nexcept ValueError as exc:\n    print(exc)\n")
    assert "is not a directory" in run_python(script, directory=tmp_path / "missing")


class FakeWorker:
    def __init__(self, pid: int) -> None:
        self.pid = pid


def gunicorn_child_exit() -> Any:
    return runpy.run_path(str(Path(repo_root()) / "gunicorn.conf.py"))["child_exit"]


def test_gunicorn_marks_a_dead_worker_when_the_directory_is_set(multiproc_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("gauge_livesum_4242.db", "gauge_liveall_4242.db", "counter_4242.db", "gauge_livesum_4343.db"):
        (multiproc_dir / name).write_bytes(b"")
    child_exit = gunicorn_child_exit()
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    child_exit(None, FakeWorker(4242))
    assert len(list(multiproc_dir.iterdir())) == 4  # without the variable the hook does nothing
    monkeypatch.setenv(MULTIPROC_ENV, str(multiproc_dir))
    child_exit(None, FakeWorker(4242))
    assert {path.name for path in multiproc_dir.iterdir()} == {"counter_4242.db", "gauge_livesum_4343.db"}


# ---------------------------------------------------------------------------------------------
# Import cost


@pytest.mark.slow
def test_importing_the_observe_modules_imports_nothing_heavy() -> None:
    script = (
        "import sys\n"
        "import costroute.observe.logline, costroute.observe.emf, costroute.observe.sinks, costroute.observe.prometheus\n"
        "heavy = ('prometheus_client', 'flask', 'werkzeug', 'boto3', 'botocore', 'openai', 'anthropic', 'httpx',\n"
        "         'jsonschema', 'aws_lambda_powertools', 'http.server', 'wsgiref')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    assert run_python(script, directory=None).strip() == "[]"


def test_prometheus_is_available_here() -> None:
    assert prometheus_available()


def test_observe_accepts_every_scenario(metrics: PrometheusMetrics) -> None:
    records: list[RequestRecord] = list(SCENARIOS.values())
    for record in records:
        metrics.observe(record)
    s = samples_of(metrics.exposition()[0])
    assert sum(v for (name, _), v in s.items() if name == "costroute_requests_total") == len(records)
