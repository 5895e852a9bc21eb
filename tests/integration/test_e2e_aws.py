"""End to end over real HTTP on loopback: moto in server mode, the service as a separate `flask run`
process reading its registry from SSM and its OpenAI key from Secrets Manager, and FakeOpenAI.

The service process logs everything at DEBUG to its stderr (except the SDKs' wire logs, which the
service keeps at INFO), so the check that the key appears nowhere in its output covers what a
DEBUG log level would write in production.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.fakes.fake_openai import FakeOpenAI
from tests.health import provider_entry
from tests.payloads import HAIKU_REQUEST, MOCK_ROWS, OPENAI_MODEL, repo_root

pytestmark = pytest.mark.slow

PARAMETER = "/costroute/e2e/models"
SECRET = "costroute/e2e/openai-api-key"
OPENAI_KEY = "sk-e2e-costroute-9f8e7d6c5b4a3210KEY"
REGION = "us-east-1"
STARTUP_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 15.0

REGISTRY: list[Any] = [*MOCK_ROWS, OPENAI_MODEL]
# Only the OpenAI model reaches quality 5.
OPENAI_ROUTE: dict[str, Any] = {"input": "Tell the tide a secret.", "constraints": {"min_quality": 5}}

# The service process: flask run, with the root logger at DEBUG on stderr.
SERVICE_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
logging.getLogger("e2e.probe").debug("the root logger is at DEBUG")
from flask.cli import main
sys.argv = ["flask", "--app", "costroute.wsgi:app", "run", "--host", "127.0.0.1", "--port", sys.argv[1]]
main()
"""

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Exchange:
    """One HTTP exchange with the service: status, headers and body as text."""

    status: int
    headers: str
    body: str

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.body)


@dataclass
class Service:
    """The running service process and everything said to and by it."""

    process: subprocess.Popen[bytes]
    base_url: str
    stdout_path: Path
    stderr_path: Path
    exchanges: list[Exchange] = field(default_factory=list)

    def request(self, method: str, path: str, body: Any = None) -> Exchange:
        """Send one request (JSON body if given) and record the exchange."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _NO_PROXY.open(request, timeout=REQUEST_TIMEOUT_S) as response:
                exchange = Exchange(response.status, str(response.headers), response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            exchange = Exchange(error.code, str(error.headers), error.read().decode("utf-8"))
        self.exchanges.append(exchange)
        return exchange

    def stop(self) -> None:
        """Terminate the process (kill it if it lingers); idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode on loopback; yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    """A FakeOpenAI that accepts only the key kept in Secrets Manager."""
    fake = FakeOpenAI(api_key=OPENAI_KEY)
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture(scope="module")
def seeded_aws(moto_endpoint: str) -> str:
    """The registry in SSM and the key in Secrets Manager, on the moto server; yields the endpoint."""
    options: dict[str, Any] = {
        "endpoint_url": moto_endpoint,
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    boto3.client("ssm", **options).put_parameter(
        Name=PARAMETER, Value=json.dumps(REGISTRY), Type="SecureString", Overwrite=True
    )
    boto3.client("secretsmanager", **options).create_secret(
        Name=SECRET, SecretString=json.dumps({"OPENAI_API_KEY": OPENAI_KEY})
    )
    return moto_endpoint


@pytest.fixture(scope="module")
def service(seeded_aws: str, fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service as a separate process, configured only through its environment; stopped afterwards."""
    logs = tmp_path_factory.mktemp("service")
    port = free_port()
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "HOME": str(logs),
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": seeded_aws,
        "MODELS_CONFIG_SSM_PARAMETER": PARAMETER,
        "OPENAI_API_KEY_SECRET_ID": SECRET,
        "OPENAI_BASE_URL": fake_openai.base_url,
    }
    stdout_path, stderr_path = logs / "stdout.log", logs / "stderr.log"
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVICE_SCRIPT, str(port)],
            cwd=repo_root(),
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    running = Service(process, f"http://127.0.0.1:{port}", stdout_path, stderr_path)
    try:
        _wait_until_healthy(running)
        yield running
    finally:
        running.stop()


def _wait_until_healthy(service: Service) -> None:
    """Poll /health until it answers, the process dies, or STARTUP_TIMEOUT_S passes."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            pytest.fail(f"the service exited with {service.process.returncode}:\n{service.output()[-3000:]}")
        try:
            with _NO_PROXY.open(service.base_url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    pytest.fail(f"the service did not answer /health within {STARTUP_TIMEOUT_S} s:\n{service.output()[-3000:]}")


def test_route_to_openai_with_the_key_from_secrets_manager(service: Service, fake_openai: FakeOpenAI) -> None:
    before = len(fake_openai.chat_requests)
    exchange = service.request("POST", "/route", OPENAI_ROUTE)
    assert exchange.status == 200, exchange.body
    body = exchange.json()
    assert body["model"] == "openai:gpt-4o-mini"
    assert body["response"] == "[FAKE:gpt-4o-mini] " + OPENAI_ROUTE["input"]
    assert body["usage"]["prompt_tokens"] > 0
    calls = fake_openai.chat_requests[before:]
    assert len(calls) == 1
    assert calls[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert calls[0].body is not None and calls[0].body["model"] == "gpt-4o-mini"


def test_registry_comes_from_ssm(service: Service) -> None:
    exchange = service.request("GET", "/models")
    assert exchange.status == 200, exchange.body
    body = exchange.json()
    assert body["source"] == f"ssm:{PARAMETER}"
    assert [model["id"] for model in body["models"]] == ["mock:basic", "mock:advanced", "openai:gpt-4o-mini"]
    assert all(model["available"] for model in body["models"])

    # The OpenAI model (800 ms) is too slow for this request: the SSM registry's mock tier serves it.
    mock = service.request("POST", "/route", {**HAIKU_REQUEST, "constraints": {"min_quality": 3, "max_latency_ms": 600}})
    assert mock.status == 200, mock.body
    assert mock.json()["model"] == "mock:advanced"


def test_openai_compatible_endpoint_with_the_key_from_secrets_manager(
    service: Service, fake_openai: FakeOpenAI
) -> None:
    before = len(fake_openai.chat_requests)
    exchange = service.request(
        "POST",
        "/v1/chat/completions",
        {"model": "openai:gpt-4o-mini", "messages": [{"role": "user", "content": "Ebb and flow."}]},
    )
    assert exchange.status == 200, exchange.body
    assert exchange.json()["choices"][0]["message"]["content"] == "[FAKE:gpt-4o-mini] Ebb and flow."
    (call,) = fake_openai.chat_requests[before:]
    assert call.headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_health_names_the_sources_not_the_key(service: Service) -> None:
    exchange = service.request("GET", "/health")
    assert exchange.status == 200
    body = exchange.json()
    assert body["status"] == "ok"
    assert body["registry"]["source"] == f"ssm:{PARAMETER}"
    assert body["registry"]["loaded"] is True
    assert "age_seconds" in body["registry"]
    assert provider_entry(body, "openai")["key"]["source"] == f"secretsmanager:{SECRET}"
    assert provider_entry(body, "openai")["key"]["loaded"] is True


def test_key_appears_nowhere_in_responses_or_process_output(service: Service, fake_openai: FakeOpenAI) -> None:
    """Runs last in this module: stops the service so that all its output is on disk."""
    if not any(call.headers.get("authorization") == f"Bearer {OPENAI_KEY}" for call in fake_openai.chat_requests):
        service.request("POST", "/route", OPENAI_ROUTE)
    service.stop()
    assert service.exchanges, "no exchange was recorded"
    for exchange in service.exchanges:
        assert OPENAI_KEY not in exchange.body
        assert OPENAI_KEY not in exchange.headers
    output = service.output()
    # The process did log at DEBUG, while the SDKs' wire logs, which carry request bodies, signatures
    # and tokens, stayed at INFO and above (their INFO lines, an HTTP status each, still show).
    assert "DEBUG e2e.probe the root logger is at DEBUG" in output, output[-3000:]
    assert "HTTP Request: POST" in output
    assert "Making request" not in output and "Response body" not in output  # botocore's DEBUG lines
    assert "Request options" not in output and "DEBUG httpcore" not in output  # the openai SDK's, its transport's
    assert OPENAI_KEY not in output
    # Not even a fragment long enough to matter.
    assert OPENAI_KEY[8:28] not in output
