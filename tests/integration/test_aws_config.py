"""The registry from SSM Parameter Store and the OpenAI key from Secrets Manager, under moto in process.

OpenAI calls go to tests/fakes/fake_openai.FakeOpenAI on loopback, through the real openai SDK.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from flask import Flask
from moto import mock_aws

from costroute.config.aws import AwsClients
from tests.conftest import FakeClock
from tests.fakes.fake_openai import FakeOpenAI, status
from tests.health import provider_entry
from tests.payloads import HAIKU_REQUEST, MOCK_ROWS, OPENAI_MODEL, OPENAI_ROUTE, repo_root

PARAMETER = "/costroute/test/models"
SECRET = "costroute/openai-api-key"
OPENAI_KEY = "sk-test-costroute-0123456789abcdefSECRET"
TTL = 60.0

REGISTRY_WITH_OPENAI = json.dumps([*MOCK_ROWS, OPENAI_MODEL])


@pytest.fixture
def aws() -> Iterator[None]:
    """moto's in-process mock of every AWS service, for one test."""
    with mock_aws():
        yield


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A FakeOpenAI that accepts only OPENAI_KEY."""
    fake = FakeOpenAI(api_key=OPENAI_KEY)
    try:
        yield fake
    finally:
        fake.close()


def put_parameter(value: str, parameter_type: str = "String", name: str = PARAMETER) -> None:
    """Create or overwrite an SSM parameter."""
    boto3.client("ssm").put_parameter(Name=name, Value=value, Type=parameter_type, Overwrite=True)


def create_secret(value: str, name: str = SECRET) -> str:
    """Create a Secrets Manager secret; return its ARN."""
    return boto3.client("secretsmanager").create_secret(Name=name, SecretString=value)["ARN"]


def model_ids(app: Flask) -> list[str]:
    """The ids /models lists, asserting it answered 200."""
    response = app.test_client().get("/models")
    assert response.status_code == 200, response.get_json()
    return [model["id"] for model in response.get_json()["models"]]


def ssm_app(make_app: Callable[..., Flask], clock: FakeClock, **settings: Any) -> Flask:
    """An app whose registry comes from PARAMETER, with the fake clock and TTL."""
    return make_app(
        runtime_kwargs={"clock": clock},
        models_config_ssm_parameter=PARAMETER,
        config_ttl_seconds=TTL,
        **settings,
    )


# --------------------------------------------------------------------------- registry from SSM


@pytest.mark.parametrize("parameter_type", ["String", "SecureString"])
def test_registry_from_ssm(aws: None, make_app: Callable[..., Flask], clock: FakeClock, parameter_type: str) -> None:
    put_parameter(json.dumps(MOCK_ROWS), parameter_type)
    app = ssm_app(make_app, clock)
    assert model_ids(app) == ["mock:basic", "mock:advanced"]
    response = app.test_client().post("/route", json=HAIKU_REQUEST)
    assert response.status_code == 200
    assert response.get_json()["model"] == "mock:advanced"


def test_registry_from_environment_variable(aws: None, monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """Settings.from_env reads MODELS_CONFIG_SSM_PARAMETER (what the template sets)."""
    from costroute.entry import build_app as create_app

    put_parameter(json.dumps(MOCK_ROWS))
    monkeypatch.setenv("MODELS_CONFIG_SSM_PARAMETER", PARAMETER)
    app = create_app()
    assert model_ids(app) == ["mock:basic", "mock:advanced"]
    assert app.test_client().get("/models").get_json()["source"] == f"ssm:{PARAMETER}"


def test_changed_parameter_is_picked_up_after_the_ttl_not_before(
    aws: None, make_app: Callable[..., Flask], clock: FakeClock
) -> None:
    put_parameter(json.dumps(MOCK_ROWS))
    app = ssm_app(make_app, clock)
    assert model_ids(app) == ["mock:basic", "mock:advanced"]

    put_parameter(json.dumps(MOCK_ROWS[:1]))
    clock.advance(TTL - 1)
    assert model_ids(app) == ["mock:basic", "mock:advanced"]
    clock.advance(2)
    assert model_ids(app) == ["mock:basic"]


@pytest.mark.parametrize("breakage", ["deleted", "invalid_json", "invalid_registry"])
def test_failed_refresh_keeps_the_last_good_value_and_warns(
    aws: None, make_app: Callable[..., Flask], clock: FakeClock, caplog: pytest.LogCaptureFixture, breakage: str
) -> None:
    put_parameter(json.dumps(MOCK_ROWS))
    app = ssm_app(make_app, clock)
    assert model_ids(app) == ["mock:basic", "mock:advanced"]

    if breakage == "deleted":
        boto3.client("ssm").delete_parameter(Name=PARAMETER)
    elif breakage == "invalid_json":
        put_parameter("[this is not json")
    else:
        put_parameter(json.dumps([["mock", "basic", 1, 0.0001]]))
    clock.advance(TTL + 1)
    with caplog.at_level(logging.WARNING, logger="costroute.config"):
        assert model_ids(app) == ["mock:basic", "mock:advanced"]
        response = app.test_client().post("/route", json=HAIKU_REQUEST)
    assert response.status_code == 200
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and PARAMETER in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "keeping the last good value" in warnings[0].getMessage()

    health = app.test_client().get("/health").get_json()
    assert health["status"] == "ok"
    assert PARAMETER in health["registry"]["last_error"]


def test_age_after_a_failed_refresh_is_the_age_of_the_value_kept(
    aws: None, make_app: Callable[..., Flask], clock: FakeClock
) -> None:
    """/health must not present a stale registry as fresh: its age counts from the last good load."""
    clients = AwsClients()
    reads = count_calls(clients, "ssm", "GetParameter")
    put_parameter(json.dumps(MOCK_ROWS))
    app = make_app(
        runtime_kwargs={"clock": clock, "aws_clients": clients},
        models_config_ssm_parameter=PARAMETER,
        config_ttl_seconds=TTL,
    )
    model_ids(app)
    boto3.client("ssm").delete_parameter(Name=PARAMETER)
    clock.advance(TTL + 1)
    model_ids(app)  # the failed refresh
    assert len(reads) == 2
    clock.advance(5)
    registry = app.test_client().get("/health").get_json()["registry"]
    assert registry["age_seconds"] == TTL + 6
    assert "ParameterNotFound" in registry["last_error"]
    # A failed refresh is retried after another TTL, not on every request.
    model_ids(app)
    assert len(reads) == 2
    clock.advance(TTL)
    model_ids(app)
    assert len(reads) == 3


def count_calls(clients: AwsClients, service: str, operation: str) -> list[str]:
    """A list that grows by one at every ``operation`` call made through ``clients``."""
    calls: list[str] = []
    clients.client(service).meta.events.register(
        f"before-call.{service}.{operation}", lambda **_: calls.append(operation)
    )
    return calls


def test_one_route_reads_the_registry_once(aws: None, make_app: Callable[..., Flask], clock: FakeClock) -> None:
    clients = AwsClients()
    reads = count_calls(clients, "ssm", "GetParameter")
    put_parameter(json.dumps(MOCK_ROWS))
    app = make_app(
        runtime_kwargs={"clock": clock, "aws_clients": clients},
        models_config_ssm_parameter=PARAMETER,
        config_ttl_seconds=0,
    )
    response = app.test_client().post("/route", json=HAIKU_REQUEST)
    assert response.status_code == 200
    assert len(reads) == 1


def test_recovered_parameter_is_used_after_a_failed_refresh(
    aws: None, make_app: Callable[..., Flask], clock: FakeClock
) -> None:
    put_parameter(json.dumps(MOCK_ROWS))
    app = ssm_app(make_app, clock)
    model_ids(app)
    put_parameter("{broken")
    clock.advance(TTL + 1)
    assert model_ids(app) == ["mock:basic", "mock:advanced"]
    put_parameter(json.dumps(MOCK_ROWS[1:]))
    clock.advance(TTL + 1)
    assert model_ids(app) == ["mock:advanced"]
    assert "last_error" not in app.test_client().get("/health").get_json()["registry"]


def test_missing_parameter_on_first_load_is_a_503_naming_it(
    aws: None, make_app: Callable[..., Flask], clock: FakeClock
) -> None:
    app = ssm_app(make_app, clock)
    client = app.test_client()
    for response in (client.post("/route", json=HAIKU_REQUEST), client.get("/models"), client.get("/v1/models")):
        assert response.status_code == 503
        error = response.get_json()["error"]
        assert error["type"] == "config_unavailable"
        assert PARAMETER in error["message"]
        assert "ParameterNotFound" in error["message"]

    health = client.get("/health")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "degraded"
    assert body["registry"]["source"] == f"ssm:{PARAMETER}"
    assert body["registry"]["loaded"] is False
    assert PARAMETER in body["registry"]["error"]


def test_parameter_created_after_a_failed_first_load_is_used_once_retried(
    aws: None, make_app: Callable[..., Flask], clock: FakeClock
) -> None:
    app = ssm_app(make_app, clock)
    assert app.test_client().get("/models").status_code == 503
    put_parameter(json.dumps(MOCK_ROWS))
    clock.advance(TTL + 1)
    assert model_ids(app) == ["mock:basic", "mock:advanced"]


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        ([MOCK_ROWS[0], ["mock", "broken", 9, 0.001, 0.002, 100, 100]], ["entry 2", "mock:broken", "'quality'"]),
        ([MOCK_ROWS[0], {**OPENAI_MODEL, "out_cost_per_1k": None}], ["entry 2", "'out_cost_per_1k'"]),
        ([{k: v for k, v in OPENAI_MODEL.items() if k != "in_cost_per_1k"}], ["entry 1", "'in_cost_per_1k'"]),
    ],
    ids=["quality-out-of-range", "null-price", "missing-price"],
)
def test_invalid_registry_in_ssm_is_refused(
    aws: None, make_app: Callable[..., Flask], clock: FakeClock, registry: list[Any], expected: list[str]
) -> None:
    put_parameter(json.dumps(registry))
    client = ssm_app(make_app, clock).test_client()
    for response in (client.post("/route", json=HAIKU_REQUEST), client.get("/models")):
        assert response.status_code == 503
        message = response.get_json()["error"]["message"]
        assert PARAMETER in message
        for fragment in expected:
            assert fragment in message
    assert client.get("/health").get_json()["status"] == "degraded"


def test_aws_clients_bound_every_read_well_inside_the_request_deadline(aws: None) -> None:
    """botocore's defaults (60 s connect, 60 s read, 3 attempts) would outlive API Gateway's 29 s."""
    from costroute.config.settings import DEFAULT_REQUEST_DEADLINE_SECONDS

    clients = AwsClients()
    for service in ("ssm", "secretsmanager"):
        config = clients.client(service).meta.config
        attempts = config.retries["total_max_attempts"]
        worst = (config.connect_timeout + config.read_timeout) * attempts
        # The registry and the key may both be read while serving one request.
        assert 2 * worst < DEFAULT_REQUEST_DEADLINE_SECONDS, (service, config.connect_timeout, config.read_timeout)


def test_an_unresponsive_endpoint_is_a_503_within_the_timeouts(
    monkeypatch: pytest.MonkeyPatch, make_app: Callable[..., Flask], clock: FakeClock
) -> None:
    """An endpoint that accepts connections and never answers: a prompt 503 naming the parameter."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        clients = AwsClients(connect_timeout_s=0.2, read_timeout_s=0.3, max_attempts=2)
        app = make_app(
            runtime_kwargs={"clock": clock, "aws_clients": clients}, models_config_ssm_parameter=PARAMETER
        )
        started = time.monotonic()
        response = app.test_client().get("/models")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    message = response.get_json()["error"]["message"]
    assert PARAMETER in message
    assert "timeout" in message.lower()
    assert elapsed < 5


# --------------------------------------------------------------------------- key from Secrets Manager


def openai_app(make_app: Callable[..., Flask], clock: FakeClock, fake: FakeOpenAI, secret_id: str) -> Flask:
    """An app with the registry in SSM (with the OpenAI model) and the key in Secrets Manager."""
    put_parameter(REGISTRY_WITH_OPENAI)
    return ssm_app(make_app, clock, openai_api_key_secret_id=secret_id, openai_base_url=fake.base_url)


@pytest.mark.parametrize("secret_format", ["plain", "json"])
@pytest.mark.parametrize("by", ["name", "arn"])
def test_key_from_secrets_manager(
    aws: None,
    make_app: Callable[..., Flask],
    clock: FakeClock,
    fake_openai: FakeOpenAI,
    secret_format: str,
    by: str,
) -> None:
    value = OPENAI_KEY if secret_format == "plain" else json.dumps({"OPENAI_API_KEY": OPENAI_KEY, "other": "x"})
    arn = create_secret(value)
    app = openai_app(make_app, clock, fake_openai, SECRET if by == "name" else arn)

    response = app.test_client().post("/route", json=OPENAI_ROUTE)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["model"] == "openai:gpt-4o-mini"
    assert body["response"].startswith("[FAKE:gpt-4o-mini]")
    (call,) = fake_openai.chat_requests
    assert call.headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_key_from_environment_variable_names_the_secret(
    aws: None, monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI
) -> None:
    """Settings.from_env reads OPENAI_API_KEY_SECRET_ID and OPENAI_BASE_URL."""
    from costroute.entry import build_app as create_app

    create_secret(OPENAI_KEY)
    put_parameter(REGISTRY_WITH_OPENAI)
    monkeypatch.setenv("MODELS_CONFIG_SSM_PARAMETER", PARAMETER)
    monkeypatch.setenv("OPENAI_API_KEY_SECRET_ID", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    response = create_app().test_client().post("/route", json=OPENAI_ROUTE)
    assert response.status_code == 200, response.get_json()
    assert fake_openai.chat_requests[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_missing_secret_is_an_attempt_that_names_it_and_fails_over(
    aws: None, make_app: Callable[..., Flask], clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    app = openai_app(make_app, clock, fake_openai, "costroute/does-not-exist")
    response = app.test_client().post("/route", json=OPENAI_ROUTE)
    body = response.get_json()
    assert response.status_code == 200, body
    first = body["attempts"][0]
    assert first["model"] == "openai:gpt-4o-mini"
    assert first["outcome"] == "key_unavailable"
    assert "costroute/does-not-exist" in first["message"]
    assert "ResourceNotFoundException" in first["message"]
    assert body["model"] != "openai:gpt-4o-mini"
    assert fake_openai.chat_requests == []
    health = app.test_client().get("/health").get_json()
    assert health["status"] == "degraded"
    assert "costroute/does-not-exist" in provider_entry(health, "openai")["key"]["last_error"]


def test_missing_secret_with_only_openai_models_answers_503_naming_it(
    aws: None, make_app: Callable[..., Flask], clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    put_parameter(json.dumps([OPENAI_MODEL]))
    app = ssm_app(make_app, clock, openai_api_key_secret_id="costroute/absent", openai_base_url=fake_openai.base_url)
    response = app.test_client().post("/route", json=OPENAI_ROUTE)
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["type"] == "key_unavailable"
    assert "costroute/absent" in error["message"] and "ResourceNotFoundException" in error["message"]


# --------------------------------------------------------------------------- /health and the key


def test_health_shows_sources_and_ages_but_never_the_key(
    aws: None, make_app: Callable[..., Flask], clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    create_secret(json.dumps({"OPENAI_API_KEY": OPENAI_KEY}))
    app = openai_app(make_app, clock, fake_openai, SECRET)
    client = app.test_client()

    # /health as the very first request loads the registry and reports its age.
    first = client.get("/health")
    assert first.status_code == 200
    body = first.get_json()
    assert body["status"] == "ok"
    assert body["registry"]["source"] == f"ssm:{PARAMETER}"
    assert body["registry"]["loaded"] is True
    assert body["registry"]["age_seconds"] == 0
    assert body["registry"]["models"] == 3
    assert provider_entry(body, "openai")["key"]["source"] == f"secretsmanager:{SECRET}"
    assert provider_entry(body, "openai")["key"]["configured"] is True

    assert client.post("/route", json=OPENAI_ROUTE).status_code == 200
    clock.advance(12.5)
    after = client.get("/health")
    body = after.get_json()
    assert body["registry"]["age_seconds"] == 12.5
    assert provider_entry(body, "openai")["key"]["loaded"] is True
    assert provider_entry(body, "openai")["key"]["age_seconds"] == 12.5
    for response in (first, after):
        assert OPENAI_KEY not in response.get_data(as_text=True)
        assert OPENAI_KEY not in str(response.headers)


def test_key_never_appears_in_responses_or_logs(
    aws: None,
    make_app: Callable[..., Flask],
    clock: FakeClock,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    create_secret(json.dumps({"OPENAI_API_KEY": OPENAI_KEY}))
    app = openai_app(make_app, clock, fake_openai, SECRET)
    client = app.test_client()
    caplog.clear()
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="costroute"):
        responses = [
            client.post("/route", json=OPENAI_ROUTE),
            client.post(
                "/v1/chat/completions",
                json={"model": "openai:gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            ),
            client.get("/health"),
            client.get("/models"),
        ]
        # A rejected key (401) is re-read from Secrets Manager once: that path must not leak either.
        fake_openai.enqueue(status(401))
        responses.append(client.post("/route", json=OPENAI_ROUTE))
    assert [r.status_code for r in responses[:4]] == [200, 200, 200, 200]
    assert responses[4].status_code >= 400
    assert len(fake_openai.chat_requests) == 3
    assert {r.headers["authorization"] for r in fake_openai.chat_requests} == {f"Bearer {OPENAI_KEY}"}

    # AWS's wire logs carry request signatures and the session token: they stay at INFO and
    # above even when everything else logs at DEBUG.
    assert not [r for r in caplog.records if r.name.startswith(("botocore", "urllib3")) and r.levelno < logging.INFO]
    for record in caplog.records:
        assert OPENAI_KEY not in record.getMessage(), (record.name, record.getMessage()[:300])
    assert OPENAI_KEY not in caplog.text
    for response in responses:
        assert OPENAI_KEY not in response.get_data(as_text=True)
        assert OPENAI_KEY not in str(response.headers)


# --------------------------------------------------------------------------- boto3 only when needed


def test_boto3_is_not_imported_without_an_aws_source() -> None:
    code = (
        "import json, sys\n"
        "from costroute.entry import build_app as create_app\n"
        "client = create_app().test_client()\n"
        f"response = client.post('/route', json={HAIKU_REQUEST!r})\n"
        "assert response.status_code == 200, response.get_json()\n"
        "assert client.get('/health').status_code == 200\n"
        "print('boto3' in sys.modules, 'botocore' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root(), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == ["False", "False"]  # after the request's log line



def test_a_revoked_key_rereads_the_secret_at_most_once_per_interval(
    aws: None, make_app: Callable[..., Flask], clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    from costroute.config.credentials import KEY_REFRESH_INTERVAL_SECONDS

    create_secret(OPENAI_KEY)
    put_parameter(json.dumps([OPENAI_MODEL]))
    clients = AwsClients()
    reads = count_calls(clients, "secretsmanager", "GetSecretValue")
    app = make_app(
        runtime_kwargs={"clock": clock, "aws_clients": clients},
        models_config_ssm_parameter=PARAMETER,
        config_ttl_seconds=TTL,
        openai_api_key_secret_id=SECRET,
        openai_base_url=fake_openai.base_url,
    )
    client = app.test_client()
    fake_openai.set_default(status(401))
    for _ in range(3):
        assert client.post("/route", json=OPENAI_ROUTE).status_code == 502
    assert len(reads) == 2, "one first read, then one re-read after the first 401 only"
    clock.advance(KEY_REFRESH_INTERVAL_SECONDS)
    client.post("/route", json=OPENAI_ROUTE)
    assert len(reads) == 3
