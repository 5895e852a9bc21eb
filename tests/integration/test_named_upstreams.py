"""Many real providers at once: named upstreams, each with its own endpoint and credential.

Three FakeOpenAI servers on loopback play Groq (a key in the environment), Together (a key in a
Secrets Manager secret, moto) and a local Ollama (no key); the built-in mock is always there.
Everything goes through the real openai SDK inside the adapter, and through /route and /v1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from flask import Flask
from moto import mock_aws

from costroute.config.aws import AwsClients
from tests.conftest import FakeClock
from tests.fakes.fake_openai import FakeOpenAI, raw_json, status
from tests.health import provider_entry

GROQ_KEY = "gsk-test-groq-1111111111"
TOGETHER_KEY = "tgp-test-together-2222222222"
OPENAI_KEY = "sk-test-openai-3333333333"
SECRET = "costroute/provider-keys"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def groq() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=GROQ_KEY) as fake:
        yield fake


@pytest.fixture
def together() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=TOGETHER_KEY) as fake:
        yield fake


@pytest.fixture
def local() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=None) as fake:
        yield fake


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def create_secret(value: dict[str, str] | str) -> None:
    boto3.client("secretsmanager").create_secret(Name=SECRET, SecretString=value if isinstance(value, str)
                                                 else json.dumps(value))


def model(provider: str, name: str, quality: int, price_in: float, price_out: float, **extra: Any) -> dict[str, Any]:
    return {"provider": provider, "name": name, "quality": quality, "in_cost_per_1k": price_in,
            "out_cost_per_1k": price_out, "latency_ms": 300, "max_output_tokens": 2048, **extra}


def document(groq: FakeOpenAI, together: FakeOpenAI, local: FakeOpenAI, *models: Any) -> str:
    return json.dumps({
        "providers": {
            "groq": {"kind": "openai", "base_url": groq.base_url, "api_key": {"env": "GROQ_API_KEY"}},
            "together": {"kind": "openai", "base_url": together.base_url,
                         "api_key": {"secret_id": SECRET, "field": "together"}},
            "local": {"kind": "openai", "base_url": local.base_url},
        },
        "models": list(models) or [
            model("groq", "llama-3.1-8b", 2, 0.00005, 0.00008),
            model("together", "big", 4, 0.0009, 0.0009, upstream_model="meta-llama/Llama-3.3-70B-Instruct-Turbo"),
            model("local", "llama3.1:8b", 2, 0, 0, latency_ms=900),
            ["mock", "basic", 1, 0.0001, 0.0002, 150, 1024],
        ],
    })


@pytest.fixture
def build(
    make_app: Callable[..., Flask], groq: FakeOpenAI, together: FakeOpenAI, local: FakeOpenAI, aws: None,
    clock: FakeClock,
) -> Callable[..., Flask]:
    def factory(*models: Any, environ: dict[str, str] | None = None, **settings: Any) -> Flask:
        return make_app(
            runtime_kwargs={"environ": {"GROQ_API_KEY": GROQ_KEY, **(environ or {})}, "clock": clock,
                            "sleep": clock.sleep, "aws_clients": AwsClients()},
            models_config_json=document(groq, together, local, *models), **settings,
        )

    return factory


def route(app: Flask, **constraints: Any) -> dict[str, Any]:
    response = app.test_client().post("/route", json={"input": "hi", "constraints": constraints})
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def authorizations(fake: FakeOpenAI) -> set[str | None]:
    return {request.headers.get("authorization") for request in fake.chat_requests}


def test_the_ladder_picks_across_providers_by_price_and_each_upstream_sees_only_its_own_key(
    build: Callable[..., Flask], groq: FakeOpenAI, together: FakeOpenAI, local: FakeOpenAI
) -> None:
    create_secret({"together": TOGETHER_KEY, "other": "unrelated-key-value"})
    app = build()
    assert route(app, min_quality=2)["model"] == "local:llama3.1:8b"  # free beats $0.00005
    assert route(app, min_quality=2, max_latency_ms=500)["model"] == "groq:llama-3.1-8b"  # the local one is slow
    assert route(app, min_quality=4)["model"] == "together:big"
    assert authorizations(groq) == {f"Bearer {GROQ_KEY}"}
    assert authorizations(together) == {f"Bearer {TOGETHER_KEY}"}
    assert authorizations(local) == {None}  # no key configured: none sent
    assert [r.body["model"] for r in together.chat_requests if r.body] == ["meta-llama/Llama-3.3-70B-Instruct-Turbo"]
    assert [r.body["model"] for r in local.chat_requests if r.body] == ["llama3.1:8b"]


def test_a_free_local_model_settles_at_zero(build: Callable[..., Flask]) -> None:
    body = route(build(), min_quality=2)
    assert body["actual_cost_usd"] == 0 and body["estimate"]["cost_usd"] == 0


def test_failover_from_one_upstream_to_another_and_to_a_mock_within_the_deadline(
    build: Callable[..., Flask], groq: FakeOpenAI, local: FakeOpenAI, together: FakeOpenAI
) -> None:
    create_secret({"together": TOGETHER_KEY})
    local.set_default(status(503))
    app = build()
    body = route(app, min_quality=2)
    assert [(a["model"], a["outcome"]) for a in body["attempts"]] == [
        ("local:llama3.1:8b", "upstream"), ("groq:llama-3.1-8b", "ok")]
    groq.set_default(status(500))
    together.set_default(status(502))
    body = route(app, min_quality=1)
    outcomes = [(a["model"], a["outcome"]) for a in body["attempts"]]
    assert outcomes[-1] == ("mock:basic", "ok")
    assert {"groq:llama-3.1-8b", "local:llama3.1:8b"} <= {model_id for model_id, _ in outcomes}


def test_one_providers_secret_unavailable_makes_only_its_models_unavailable(
    build: Callable[..., Flask], together: FakeOpenAI
) -> None:
    app = build()  # no secret created: Secrets Manager answers ResourceNotFoundException
    client = app.test_client()
    first = route(app, min_quality=4)  # only together:big has quality 4: it is tried, then the ladder relaxes
    assert first["attempts"][0]["model"] == "together:big"
    assert first["attempts"][0]["outcome"] == "key_unavailable"
    assert SECRET in first["attempts"][0]["message"]
    models = {m["id"]: m for m in client.get("/models").get_json()["models"]}
    assert models["together:big"]["available"] is False
    assert "the key of provider 'together' is unavailable" in models["together:big"]["unavailable_reason"]
    assert "ResourceNotFoundException" in models["together:big"]["unavailable_reason"]
    assert models["groq:llama-3.1-8b"]["available"] and models["local:llama3.1:8b"]["available"]
    second = client.post("/route", json={"input": "hi", "constraints": {"min_quality": 4}, "dry_run": True}).get_json()
    candidate = next(c for c in second["candidates"] if c["model"] == "together:big")
    assert candidate["verdict"] == "excluded" and "unavailable" in candidate["reason"]
    assert together.chat_requests == []
    health = client.get("/health").get_json()
    assert health["status"] == "degraded"
    assert provider_entry(health, "groq")["key"] == {"source": "env:GROQ_API_KEY", "configured": True}


def test_one_secret_serves_several_providers_and_is_read_once_per_ttl(
    make_app: Callable[..., Flask], groq: FakeOpenAI, together: FakeOpenAI, aws: None, clock: FakeClock
) -> None:
    create_secret({"groq": GROQ_KEY, "together": TOGETHER_KEY})
    clients = AwsClients()
    reads: list[str] = []
    clients.client("secretsmanager").meta.events.register(
        "before-call.secrets-manager.GetSecretValue", lambda **kwargs: reads.append("read"))
    registry = json.dumps({
        "providers": {
            "groq": {"kind": "openai", "base_url": groq.base_url, "api_key": {"secret_id": SECRET, "field": "groq"}},
            "together": {"kind": "openai", "base_url": together.base_url,
                         "api_key": {"secret_id": SECRET, "field": "together"}},
        },
        "models": [model("groq", "small", 2, 0.0001, 0.0001), model("together", "big", 4, 0.001, 0.001)],
    })
    app = make_app(runtime_kwargs={"clock": clock, "aws_clients": clients}, models_config_json=registry,
                   config_ttl_seconds=300)
    for quality in (2, 4, 2, 4):
        route(app, min_quality=quality)
    assert len(reads) == 1
    assert authorizations(groq) == {f"Bearer {GROQ_KEY}"} and authorizations(together) == {f"Bearer {TOGETHER_KEY}"}
    clock.advance(301)
    route(app, min_quality=2)
    route(app, min_quality=4)
    assert len(reads) == 2


def test_the_sdk_reads_no_credential_or_header_from_the_environment_for_another_upstream(
    build: Callable[..., Flask], groq: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_ORG_ID": "org-leak", "OPENAI_PROJECT_ID": "proj-leak",
                        "OPENAI_ADMIN_KEY": "sk-admin-leak-4444", "OPENAI_CUSTOM_HEADERS": "X-Leak: yes",
                        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}.items():
        monkeypatch.setenv(name, value)
    app = build()
    route(app, min_quality=2, max_latency_ms=500)
    (request,) = groq.chat_requests
    headers = request.headers
    assert headers["authorization"] == f"Bearer {GROQ_KEY}"
    assert not {"openai-organization", "openai-project", "x-leak"} & set(headers)
    assert OPENAI_KEY not in json.dumps(headers) and "sk-admin-leak" not in json.dumps(headers)


def test_bare_names_and_upstream_names_resolve_and_ambiguity_is_a_400_listing_the_ids(
    build: Callable[..., Flask], together: FakeOpenAI, aws: None
) -> None:
    create_secret({"together": TOGETHER_KEY})
    app = build(
        model("groq", "llama-3.1-8b", 2, 0.00005, 0.00008),
        model("together", "big", 4, 0.0009, 0.0009, upstream_model="meta-llama/Llama-3.3-70B-Instruct-Turbo"),
        model("local", "llama-3.1-8b", 2, 0, 0),
    )
    client = app.test_client()
    for name in ("big", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "together:big"):
        response = client.post("/v1/chat/completions", json={"model": name, "messages": HI})
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["model"] == "together:big"
    ambiguous = client.post("/v1/chat/completions", json={"model": "llama-3.1-8b", "messages": HI})
    assert ambiguous.status_code == 400
    error = ambiguous.get_json()["error"]
    assert error["param"] == "model" and "groq:llama-3.1-8b, local:llama-3.1-8b" in error["message"]
    assert client.get("/v1/models/big").get_json()["id"] == "together:big"
    assert client.get("/v1/models/llama-3.1-8b").status_code == 400
    listed = client.get("/v1/models").get_json()["data"]
    assert [(m["id"], m["owned_by"]) for m in listed] == [
        ("auto", "costroute"), ("groq:llama-3.1-8b", "groq"), ("together:big", "together"),
        ("local:llama-3.1-8b", "local")]


def test_the_built_in_registry_with_a_key_never_routes_to_a_mock(
    make_app: Callable[..., Flask], groq: FakeOpenAI
) -> None:
    app = make_app(openai_api_key=GROQ_KEY, openai_base_url=groq.base_url)
    client = app.test_client()
    for constraints in ({}, {"min_quality": 1}, {"max_cost_usd": 0.001}, {"prefer_provider": "mock"}):
        body = client.post("/route", json={"input": "hi", "constraints": constraints}).get_json()
        assert body["model"] == "openai:gpt-4o-mini", (constraints, body)
        assert not body["response"].startswith("[MOCK")
    chat = client.post("/v1/chat/completions", json={"model": "auto", "messages": HI}).get_json()
    assert chat["model"] == "openai:gpt-4o-mini"
    models = {m["id"]: m for m in client.get("/models").get_json()["models"]}
    assert models["mock:basic"]["available"] is False and models["mock:basic"]["pinnable"] is True
    assert "a real provider is configured" in models["mock:basic"]["unavailable_reason"]
    pinned = client.post("/v1/chat/completions", json={"model": "mock:basic", "messages": HI}).get_json()
    assert pinned["choices"][0]["message"]["content"] == "[MOCK:basic] Echo: hi"


def test_a_users_own_registry_routes_to_whatever_it_lists_mocks_included(
    make_app: Callable[..., Flask], groq: FakeOpenAI
) -> None:
    registry = json.dumps([["mock", "basic", 1, 0.0001, 0.0002, 150, 1024],
                           ["openai", "gpt-4o-mini", 3, 0.00015, 0.0006, 800, 4096]])
    app = make_app(openai_api_key=GROQ_KEY, openai_base_url=groq.base_url, models_config_json=registry)
    assert app.test_client().post("/route", json={"input": "hi"}).get_json()["model"] == "mock:basic"


@pytest.mark.parametrize(
    ("usage", "settled"),
    [
        # OpenAI: cached tokens are a subset of prompt_tokens, priced at the cached rate.
        ({"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
          "prompt_tokens_details": {"cached_tokens": 800}},
         Decimal("200") * Decimal("0.0009") / 1000 + Decimal("800") * Decimal("0.00045") / 1000
         + Decimal("100") * Decimal("0.0009") / 1000),
        # DeepSeek: prompt_cache_hit_tokens and prompt_cache_miss_tokens.
        ({"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100, "prompt_cache_hit_tokens": 600,
          "prompt_cache_miss_tokens": 400},
         Decimal("400") * Decimal("0.0009") / 1000 + Decimal("600") * Decimal("0.00045") / 1000
         + Decimal("100") * Decimal("0.0009") / 1000),
    ],
    ids=["openai-cached-tokens", "deepseek-cache-hit"],
)
def test_cached_input_is_priced_at_its_own_rate_to_the_last_digit(
    build: Callable[..., Flask], together: FakeOpenAI, usage: dict[str, Any], settled: Decimal
) -> None:
    create_secret({"together": TOGETHER_KEY})
    together.set_default(raw_json({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                                "finish_reason": "stop"}], "usage": usage}))
    app = build(model("together", "big", 4, 0.0009, 0.0009, cached_input_cost_per_1k=0.00045))
    response = app.test_client().post("/v1/chat/completions", json={"model": "together:big", "messages": HI})
    assert Decimal(response.headers["x-route-cost-usd"]) == settled
    body = response.get_json()
    assert body["usage"]["prompt_tokens"] == 1000
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == usage.get("prompt_cache_hit_tokens", 800)


def test_without_a_cached_rate_cached_tokens_are_priced_at_the_input_price_and_the_trace_says_so(
    build: Callable[..., Flask], together: FakeOpenAI
) -> None:
    create_secret({"together": TOGETHER_KEY})
    together.set_default(raw_json({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                                "finish_reason": "stop"}],
                                   "usage": {"prompt_tokens": 1000, "completion_tokens": 0,
                                             "prompt_tokens_details": {"cached_tokens": 800}}}))
    app = build(model("together", "big", 4, 0.0009, 0.0009))
    response = app.test_client().post("/route", json={"input": "hi"})
    body = response.get_json()
    assert Decimal(repr(body["actual_cost_usd"])) == Decimal("0.0009")
    assert "800 cache-read tokens priced at the full input price: the registry gives together:big no " \
           "cached_input_cost_per_1k." in body["decision_trace"]


def test_a_registry_from_a_file(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:11434/v1"}},
                                "models": [model("local", "llama3.1:8b", 2, 0, 0)]}), encoding="utf-8")
    client = make_app(models_config_file=str(path)).test_client()
    assert [m["id"] for m in client.get("/models").get_json()["models"]] == ["local:llama3.1:8b"]
    assert client.get("/health").get_json()["registry"]["source"] == f"file:{path}"
    missing = make_app(models_config_file=str(tmp_path / "absent.json")).test_client().get("/models")
    assert missing.status_code == 503 and "MODELS_CONFIG_FILE" in missing.get_json()["error"]["message"]


def test_a_version_2_registry_from_ssm(make_app: Callable[..., Flask], aws: None, groq: FakeOpenAI) -> None:
    boto3.client("ssm").put_parameter(Name="/costroute/test/models", Type="String", Value=json.dumps({
        "providers": {"groq": {"kind": "openai", "base_url": groq.base_url, "api_key": {"env": "GROQ_API_KEY"}}},
        "models": [model("groq", "llama-3.1-8b", 2, 0.00005, 0.00008)]}))
    app = make_app(runtime_kwargs={"environ": {"GROQ_API_KEY": GROQ_KEY}, "aws_clients": AwsClients()},
                   models_config_ssm_parameter="/costroute/test/models")
    assert route(app)["model"] == "groq:llama-3.1-8b"
    assert authorizations(groq) == {f"Bearer {GROQ_KEY}"}


def test_a_registry_source_is_read_in_the_documented_order(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps([["mock", "from-file", 1, 0.1, 0.1, 10, 10]]), encoding="utf-8")
    env = json.dumps([["mock", "from-env", 1, 0.1, 0.1, 10, 10]])
    both = make_app(models_config_json=env, models_config_file=str(path)).test_client()
    assert [m["id"] for m in both.get("/models").get_json()["models"]] == ["mock:from-env"]
