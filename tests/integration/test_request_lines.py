"""One line per request, from the app itself: the documented fields and values on every path, EMF on
Lambda, /metrics across two gunicorn workers, and no prompt text and no key anywhere in a full run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from costroute.observe.emf import emf_document
from costroute.observe.logline import log_fields
from costroute.observe.record import RequestRecord
from tests.fakes.fake_anthropic import FakeAnthropic
from tests.fakes.fake_anthropic import status as anthropic_status
from tests.fakes.fake_bedrock import FakeBedrock
from tests.fakes.fake_bedrock import error as bedrock_error
from tests.fakes.fake_openai import FakeOpenAI, cut_stream, status
from tests.integration.servers import FAKE_KEY, fake_openai  # noqa: F401
from tests.payloads import HAIKU_REQUEST, repo_root

HI = [{"role": "user", "content": "hi"}]


class Collect:
    """An observer that keeps every record."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def observe(self, record: RequestRecord) -> None:
        self.records.append(record)

    def last(self) -> dict[str, Any]:
        return log_fields(self.records[-1])


@pytest.fixture
def observed(make_app: Callable[..., Flask], fake_openai: FakeOpenAI) -> Callable[..., tuple[Any, Collect]]:  # noqa: F811
    def build(**settings: Any) -> tuple[Any, Collect]:
        registry = json.dumps([
            ["mock", "basic", 1, 0.0001, 0.0002, 150, 1024],
            {"provider": "mock", "name": "down", "quality": 4, "in_cost_per_1k": 0.001, "out_cost_per_1k": 0.001,
             "latency_ms": 100, "max_output_tokens": 100, "mock_fail_status": 503},
            {"provider": "mock", "name": "backup", "quality": 4, "in_cost_per_1k": 0.002, "out_cost_per_1k": 0.004,
             "latency_ms": 100, "max_output_tokens": 100},
            {"provider": "openai", "name": "gpt-4o-mini", "quality": 5, "in_cost_per_1k": 0.00015,
             "out_cost_per_1k": 0.0006, "latency_ms": 800, "max_output_tokens": 4096},
        ])
        settings = {"models_config_json": registry} | settings
        app = make_app(openai_api_key=FAKE_KEY, openai_base_url=fake_openai.base_url, **settings)
        collect = Collect()
        app.extensions["costroute"].observer = collect
        return app.test_client(), collect

    return build


def test_a_routed_request_line_has_the_documented_fields(observed: Callable[..., tuple[Any, Collect]]) -> None:
    client, collect = observed()
    response = client.post("/route", json=HAIKU_REQUEST | {"constraints": {"min_quality": 1}})
    line = collect.last()
    assert line["event.name"] == "costroute.request"
    assert line["costroute.request_id"] == response.headers["x-request-id"]
    assert (line["costroute.dialect"], line["http.request.method"], line["url.path"]) == ("route", "POST", "/route")
    assert line["http.response.status_code"] == 200 and "error.type" not in line
    assert (line["gen_ai.response.model"], line["gen_ai.provider.name"], line["costroute.provider"]) == (
        "mock:basic", "costroute.mock", "mock")
    assert line["gen_ai.request.model"] == "auto" and line["costroute.rung"] == 1
    assert line["costroute.cost_usd"] == format(Decimal(repr(response.get_json()["actual_cost_usd"])).normalize(), "f")
    assert line["gen_ai.usage.input_tokens"] == response.get_json()["usage"]["prompt_tokens"]
    assert line["gen_ai.usage.output_tokens"] == response.get_json()["usage"]["completion_tokens"]
    assert line["costroute.ceiling_applied"] is False and line["costroute.over_budget"] is False
    assert [a["outcome"] for a in line["costroute.attempts"]] == ["ok"] and line["costroute.failovers"] == 0
    assert line["costroute.router_overhead_ms"] >= 0


def test_a_pinned_request_names_the_model_asked_for(observed: Callable[..., tuple[Any, Collect]]) -> None:
    client, collect = observed()
    client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI})
    line = collect.last()
    assert (line["gen_ai.request.model"], line["gen_ai.response.model"]) == ("gpt-4o-mini", "openai:gpt-4o-mini")
    assert line["gen_ai.provider.name"] == "openai" and line["costroute.dialect"] == "chat"


def test_a_failover_lists_every_attempt(observed: Callable[..., tuple[Any, Collect]]) -> None:
    client, collect = observed()
    client.post("/route", json={"input": "hi", "constraints": {"min_quality": 4, "max_latency_ms": 500}})
    line = collect.last()
    assert [(a["model"], a["outcome"]) for a in line["costroute.attempts"]] == [("mock:down", "upstream"),
                                                                                 ("mock:backup", "ok")]
    assert line["costroute.failovers"] == 1 and line["gen_ai.response.model"] == "mock:backup"


def test_a_stream_is_one_line_once_it_ended(observed: Callable[..., tuple[Any, Collect]], fake_openai: FakeOpenAI) -> None:  # noqa: F811
    client, collect = observed()
    response = client.post("/v1/chat/completions", json={"model": "openai:gpt-4o-mini", "messages": HI, "stream": True,
                                                         "stream_options": {"include_usage": True}})
    response.get_data()
    line = collect.last()
    assert len(collect.records) == 1 and line["costroute.stream"] is True
    assert line["http.response.status_code"] == 200 and "costroute.cost_usd" in line
    fake_openai.enqueue(cut_stream(after_words=1))
    client.post("/v1/chat/completions", json={"model": "openai:gpt-4o-mini", "messages": HI, "stream": True}).get_data()
    assert collect.last()["error.type"] == "upstream_error"


@pytest.mark.parametrize(
    ("path", "body", "settings", "status", "error_type"),
    [
        ("/route", {"input": ""}, {}, 400, "invalid_request_error"),
        ("/route", {"input": "hi", "constraints": {"max_cost_usd": 1e-12}}, {}, 402, "budget_exceeded"),
        ("/v1/chat/completions", {"model": "acme:nope", "messages": HI}, {}, 404, "not_found_error"),
        ("/route", {"input": "x" * 5000}, {"max_body_bytes": 1024}, 413, "request_too_large"),
        ("/route", {"input": "hi", "constraints": {"min_quality": 5, "strict_quality": True, "max_latency_ms": 500}},
         {}, 503, "no_model_available"),
        ("/v1/chat/completions", {"model": "mock:down", "messages": HI}, {}, 502, "upstream_error"),
        ("/route", {"input": "hi"}, {"request_deadline_seconds": 0.1, "models_config_json": json.dumps([
            {"provider": "mock", "name": "slow", "quality": 3, "in_cost_per_1k": 0.1, "out_cost_per_1k": 0.1,
             "latency_ms": 100, "max_output_tokens": 10, "mock_delay_ms": 500}])}, 504, "upstream_timeout"),
    ],
)
def test_each_error_status_has_its_line(observed: Callable[..., tuple[Any, Collect]], path: str, body: dict[str, Any],
                                        settings: dict[str, Any], status: int, error_type: str) -> None:
    client, collect = observed(**settings)
    response = client.post(path, json=body)
    assert response.status_code == status, response.get_json()
    line = collect.last()
    assert (line["http.response.status_code"], line["error.type"]) == (status, error_type)


def test_a_budget_refusal_is_counted(observed: Callable[..., tuple[Any, Collect]], tmp_path: Path) -> None:
    client, collect = observed(budgets_config_json=json.dumps({"default": {"daily_usd": 0.0000001}}),
                               spend_db_path=str(tmp_path / "spend.db"))
    response = client.post("/route", json={"input": "hi"}, headers={"Authorization": "Bearer someone"})
    assert response.status_code == 402
    line = collect.last()
    # A whole day's budget smaller than the cheapest call: no wait helps, and it is the budget's refusal.
    assert line["error.type"] == "budget_exceeded" and line["costroute.budget_refused"] is True
    assert line["costroute.caller"].startswith("sha256:")
    assert emf_document(collect.records[-1])["BudgetRefused"] == 1


def test_on_lambda_the_line_is_emf_written_to_stdout(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import handler

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "RouterFunction-test")
    monkeypatch.setattr(handler, "_app", None)
    event = json.loads((Path(repo_root()) / "events" / "route.json").read_text(encoding="utf-8"))
    handler.lambda_handler(event, None)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (document,) = [line for line in lines if line.get("event.name") == "costroute.request"]
    directives = document["_aws"]["CloudWatchMetrics"]
    assert directives[0]["Namespace"] == "Costroute"
    names = {metric["Name"] for directive in directives for metric in directive["Metrics"]}
    assert {"Requests", "CostUSD", "RouterOverheadMs"} <= names and all(name in document for name in names)
    assert document["costroute.request_id"] == event["requestContext"]["requestId"]


# ---- Prometheus through two gunicorn workers ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = _free_port()
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MODELS_CONFIG", "OPENAI_"))}
    # Sync workers serve one request at a time, and each call waits 100 ms: requests sent four at a time
    # cannot all be served by one worker, so both write samples.
    env.update(PORT=str(port), WEB_CONCURRENCY="2", GUNICORN_WORKER_CLASS="sync", PROMETHEUS_MULTIPROC_DIR=str(multiproc),
               MODELS_CONFIG_JSON=json.dumps([{"provider": "mock", "name": "slow", "quality": 3, "in_cost_per_1k": 0.001,
                                               "out_cost_per_1k": 0.002, "latency_ms": 100, "max_output_tokens": 64,
                                               "mock_delay_ms": 100}]))
    process = subprocess.Popen([os.path.join(repo_root(), ".venv", "bin", "gunicorn"), "-c", "gunicorn.conf.py",
                                "costroute.wsgi:app"], cwd=repo_root(), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.2)
        yield port, multiproc
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)


def _counter(text: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


def _per_worker_requests(multiproc: Path, scratch: Path) -> dict[str, float]:
    """Each worker's own request count, read from its file alone (prometheus_client's collector on a copy)."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    counts: dict[str, float] = {}
    for path in multiproc.glob("counter_*.db"):
        alone = scratch / path.stem
        alone.mkdir()
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, str(alone))  # type: ignore[no-untyped-call]
        counts[path.stem.removeprefix("counter_")] = _counter(generate_latest(registry).decode(),
                                                              "costroute_requests_total")
    return counts


def test_metrics_counts_agree_with_the_requests_sent_through_two_gunicorn_workers(gunicorn: tuple[int, Path],
                                                                                  tmp_path: Path) -> None:
    port, multiproc = gunicorn
    base = f"http://127.0.0.1:{port}"

    def send(index: int) -> int:
        body = json.dumps({"input": f"hi {index}"} if index % 5 else {"input": ""}).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{base}/route", data=body), timeout=10) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(send, range(40)))
    refused = statuses.count(400)
    assert statuses.count(200) + refused == 40
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    assert _counter(text, "costroute_requests_total") == 40  # the readiness probes are not counted
    assert _counter(text, "costroute_errors_total") == refused == 8
    again = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    assert _counter(again, "costroute_requests_total") == 40  # nor are the scrapes
    per_worker = _per_worker_requests(multiproc, tmp_path)
    assert len([count for count in per_worker.values() if count > 0]) == 2, per_worker  # both workers served
    assert sum(per_worker.values()) == 40


# ---- no prompt text and no key in the logs of a full run ---------------------------------------------------------


PROMPT_MARKER = "zebra-quartz-prompt-7f3a"
OPENAI_SECRET = "sk-test-openai-leak-9a8b7c6d5e"
ANTHROPIC_SECRET = "sk-ant-test-leak-1q2w3e4r5t"


def test_no_prompt_text_and_no_key_anywhere_in_the_logs_of_a_full_run(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger too: the SDKs' wire loggers must hold at INFO
    with FakeOpenAI(api_key=OPENAI_SECRET) as compat, FakeAnthropic(api_key=ANTHROPIC_SECRET) as claude, \
            FakeBedrock() as bedrock:
        registry = json.dumps({
            "providers": {
                "compat": {"kind": "openai", "base_url": compat.base_url, "api_key": {"env": "LEAK_OPENAI"}},
                "claude": {"kind": "anthropic", "base_url": claude.base_url, "api_key": {"env": "LEAK_ANTHROPIC"}},
                "br": {"kind": "bedrock", "region": "us-east-1", "endpoint_url": bedrock.endpoint_url},
            },
            "models": [
                ["mock", "basic", 1, 0.0001, 0.0002, 150, 1024],
                {"provider": "compat", "name": "m", "quality": 2, "in_cost_per_1k": 0.001, "out_cost_per_1k": 0.001,
                 "latency_ms": 100, "max_output_tokens": 100},
                {"provider": "claude", "name": "c", "upstream_model": "claude-x", "quality": 3, "in_cost_per_1k": 0.001,
                 "out_cost_per_1k": 0.001, "latency_ms": 100, "max_output_tokens": 100},
                {"provider": "br", "name": "n", "upstream_model": "amazon.nova-micro-v1:0", "quality": 4,
                 "in_cost_per_1k": 0.001, "out_cost_per_1k": 0.001, "latency_ms": 100, "max_output_tokens": 100},
            ],
        })
        environ = {**os.environ, "LEAK_OPENAI": OPENAI_SECRET, "LEAK_ANTHROPIC": ANTHROPIC_SECRET}
        app = make_app(models_config_json=registry, runtime_kwargs={"environ": environ}, log_level="DEBUG",
                       log_format="json")
        client = app.test_client()
        prompt = [{"role": "user", "content": f"Tell me about {PROMPT_MARKER}"}]
        for model in ("auto", "compat:m", "claude:c", "br:n", "mock:basic"):
            for stream in (False, True):
                client.post("/v1/chat/completions", json={"model": model, "messages": prompt, "stream": stream}).get_data()
            client.post("/route", json={"input": f"About {PROMPT_MARKER}", "constraints": {"min_quality": 4}})
        compat.set_default(status(401, message=f"bad key {OPENAI_SECRET} {PROMPT_MARKER}"))
        claude.set_default(anthropic_status(500, message=f"oops {ANTHROPIC_SECRET} {PROMPT_MARKER}"))
        bedrock.set_default(bedrock_error("ValidationException", f"bad {PROMPT_MARKER}"))
        for model in ("compat:m", "claude:c", "br:n"):
            client.post("/v1/chat/completions", json={"model": model, "messages": prompt})
        client.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "wizard", "content": PROMPT_MARKER}]})
    logged = "\n".join(record.getMessage() for record in caplog.records)
    captured = capsys.readouterr()
    everything = logged + captured.out + captured.err
    assert "costroute.request" in everything  # the lines were written: the scan is not vacuous
    for secret in (OPENAI_SECRET, ANTHROPIC_SECRET):
        assert secret not in everything
    assert PROMPT_MARKER not in everything
