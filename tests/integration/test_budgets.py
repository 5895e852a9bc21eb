"""Spend control: no caller ever spends more than its budget, even under concurrency; the ledger and /usage.

The upstream is FakeOpenAI spending every token it is allowed (``spend_all``), so every call costs
its whole worst case but for the prompt (the fake counts it below our bound): the budget is
tested where it is tightest.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from flask import Flask
from moto import mock_aws

import handler
from costroute.core.budgets import periods_at
from costroute.stores.sqlite import SQLiteStore
from tests.atomic_moto import atomic_dynamodb
from tests.conftest import FakeClock
from tests.fakes.fake_openai import FakeOpenAI, cut_stream, spend_all
from tests.integration.servers import FAKE_KEY, fake_openai, serving  # noqa: F401

D = Decimal
HI = [{"role": "user", "content": "hi"}]
# 2026-12-01 12:00:00 UTC
NOON = 1_796_126_400.0
MODEL = {"provider": "openai", "name": "m", "quality": 3, "in_cost_per_1k": 0.001, "out_cost_per_1k": 0.002,
         "latency_ms": 100, "max_output_tokens": 200}
# The prompt bound of [{"role": "user", "content": "hi"}] is 22 tokens: the input's worst case is
# $0.000022, a whole call's $0.000022 + 200 x $0.000002 = $0.000422; the cheapest possible answer
# (one output token) costs $0.000024.
WORST = D("0.000422")
MIN_COST = D("0.000024")
TOKEN = "local-dev-token-1234"
LOCAL_CALLER = "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest()


class WallClock:
    """An injected wall clock (epoch seconds)."""

    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def budgets(**callers: dict[str, Any]) -> str:
    return json.dumps({"default": {"daily_usd": 1}, "callers": callers, "admins": ["boss"]})


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


@pytest.fixture
def build(make_app: Callable[..., Flask], fake_openai: FakeOpenAI, tmp_path: Path,  # noqa: F811
          wall: WallClock) -> Callable[..., Flask]:
    fake_openai.set_default(spend_all())

    def factory(document: str, *, clock: FakeClock | None = None, **settings: Any) -> Flask:
        runtime_kwargs: dict[str, Any] = {"wall_clock": wall, "spend_store": SQLiteStore(str(tmp_path / "spend.db"))}
        if clock is not None:
            runtime_kwargs.update(clock=clock, sleep=clock.sleep)
        return make_app(runtime_kwargs=runtime_kwargs, models_config_json=json.dumps([MODEL]),
                        openai_api_key=FAKE_KEY, openai_base_url=fake_openai.base_url, budgets_config_json=document,
                        **settings)

    return factory


def chat(client: Any, token: str | None = TOKEN, **routing: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/v1/chat/completions", json={"model": "auto", "messages": HI, "routing": routing}, headers=headers)


# ---- the promise, under concurrency --------------------------------------------------------------------


def _check_the_promise(limit: Decimal, answers: list[tuple[int, dict[str, Any], dict[str, str]]],
                       ledger_costs: list[Decimal], committed: Decimal) -> None:
    served = [(body, headers) for status, body, headers in answers if status == 200]
    refused = [body for status, body, _ in answers if status == 402]
    assert len(served) + len(refused) == len(answers), [s for s, _, _ in answers if s not in (200, 402)]
    costs = [D(headers["x-route-cost-usd"]) for _, headers in served]
    assert sum(costs) <= limit, "the caller spent more than its budget"
    assert sorted(ledger_costs) == sorted(costs), "the ledger must hold exactly the costs the answers returned"
    assert committed == sum(costs), "no reservation may be left behind"
    assert len(served) >= 10, len(served)  # the budget fits about ten whole calls, and shorter ones after
    for body in refused:
        error = body["error"]
        assert error["type"] == "budget_exhausted"
        assert D(repr(error["budget"]["remaining_usd"])) < MIN_COST, "refused while money was left for it"


def test_forty_parallel_requests_through_http_never_pass_the_budget(
    build: Callable[..., Flask], tmp_path: Path, wall: WallClock
) -> None:
    limit = D("0.0045")  # about ten whole worst cases
    app = build(budgets(**{LOCAL_CALLER: {"name": "local-dev", "daily_usd": float(limit)}}))
    answers: list[tuple[int, dict[str, Any], dict[str, str]]] = []
    lock = threading.Lock()
    with serving(app) as base_url:
        parts = urlsplit(base_url)
        barrier = threading.Barrier(40)

        def one() -> None:
            connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
            barrier.wait()
            connection.request("POST", "/v1/chat/completions", body=json.dumps({"model": "auto", "messages": HI}),
                               headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            response = connection.getresponse()
            body = json.loads(response.read())
            with lock:
                answers.append((response.status, body, {k.lower(): v for k, v in response.getheaders()}))
            connection.close()

        threads = [threading.Thread(target=one) for _ in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    store = SQLiteStore(str(tmp_path / "spend.db"))
    day = periods_at(wall.now)
    ledger = [entry.cost_usd for entry in store.ledger(LOCAL_CALLER, day.day, day.day)]
    _check_the_promise(limit, answers, ledger, store.committed(LOCAL_CALLER, day, wall.now).day)


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's DynamoDB, atomic per item as DynamoDB is (tests/atomic_moto.py), with the spend table."""
    with mock_aws(), atomic_dynamodb(monkeypatch):
        boto3.client("dynamodb").create_table(
            TableName="costroute-spend", BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}])
        yield "costroute-spend"


def lambda_event(api_key_id: str, body: dict[str, Any], headers: dict[str, str] | None = None,
                 path: str = "/v1/chat/completions", method: str = "POST") -> dict[str, Any]:
    event = json.loads((Path(__file__).parents[2] / "events" / "chat_completions.json").read_text(encoding="utf-8"))
    event.update(path=path, httpMethod=method, body=json.dumps(body) if method == "POST" else None)
    event["headers"] = {**(event.get("headers") or {}), **(headers or {})}
    event["requestContext"] = {**(event.get("requestContext") or {}), "identity": {"apiKeyId": api_key_id},
                               "requestId": f"req-{api_key_id}-{threading.get_ident()}-{id(event)}"}
    return event


class LambdaContext:
    function_name = "RouterFunction-test"
    aws_request_id = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 28_000


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch, dynamodb: str, fake_openai: FakeOpenAI) -> Callable[[str], None]:  # noqa: F811
    fake_openai.set_default(spend_all())

    def configure(document: str) -> None:
        for name, value in {"MODELS_CONFIG_JSON": json.dumps([MODEL]), "OPENAI_API_KEY": FAKE_KEY,
                            "OPENAI_BASE_URL": fake_openai.base_url, "BUDGETS_CONFIG_JSON": document,
                            "SPEND_TABLE_NAME": dynamodb, "AWS_LAMBDA_FUNCTION_NAME": "RouterFunction-test",
                            "LOG_FORMAT": "json"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(handler, "_app", None)

    return configure


def test_forty_parallel_invocations_of_the_lambda_handler_never_pass_the_budget(
    lambda_env: Callable[[str], None], dynamodb: str
) -> None:
    limit = D("0.0045")
    lambda_env(budgets(**{"key-a": {"name": "team-a", "daily_usd": float(limit)}}))
    answers: list[tuple[int, dict[str, Any], dict[str, str]]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(40)

    def one(index: int) -> None:
        barrier.wait()
        response = handler.lambda_handler(lambda_event("key-a", {"model": "auto", "messages": HI}), LambdaContext())
        with lock:
            answers.append((response["statusCode"], json.loads(response["body"]),
                            {k.lower(): v for k, v in response["headers"].items()}))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    from costroute.stores.dynamodb import DynamoDBStore

    client = boto3.client("dynamodb")
    store = DynamoDBStore(dynamodb, lambda: client)
    import time

    now = time.time()
    day = periods_at(now)
    ledger = [entry.cost_usd for entry in store.ledger("key-a", day.day, day.day)]
    _check_the_promise(limit, answers, ledger, store.committed("key-a", day, now).day)


def test_a_header_cannot_make_one_caller_spend_anothers_budget_on_lambda(
    lambda_env: Callable[[str], None], dynamodb: str
) -> None:
    lambda_env(budgets(**{"key-a": {"daily_usd": 1}, "key-b": {"daily_usd": 1}}))
    forged = {"Authorization": "Bearer key-b", "x-api-key": "key-b", "x-api-key-id": "key-b", "x-caller": "key-b"}
    response = handler.lambda_handler(lambda_event("key-a", {"model": "auto", "messages": HI}, forged), LambdaContext())
    assert response["statusCode"] == 200, response["body"]
    assert json.loads(response["body"])["routing"]["budget"]["caller"] == "key-a"
    usage = handler.lambda_handler(lambda_event("key-b", {}, path="/usage", method="GET"), LambdaContext())
    assert json.loads(usage["body"])["totals"]["requests"] == 0


# ---- where a caller stands ---------------------------------------------------------------------------------


def test_every_answer_says_where_the_caller_stands(build: Callable[..., Flask]) -> None:
    client = build(budgets(**{LOCAL_CALLER: {"name": "local-dev", "daily_usd": 0.01, "monthly_usd": 0.5}})).test_client()
    response = chat(client)
    assert response.status_code == 200
    cost = D(response.headers["x-route-cost-usd"])
    assert D(response.headers["x-route-budget-remaining-usd"]) == D("0.01") - cost
    budget = response.get_json()["routing"]["budget"]
    assert (budget["caller"], budget["name"]) == (LOCAL_CALLER, "local-dev")
    windows = {w["window"]: w for w in budget["windows"]}
    assert windows["day"]["period"] == "2026-12-01" and windows["month"]["period"] == "2026-12"
    assert D(repr(windows["month"]["remaining_usd"])) == D("0.5") - cost
    assert windows["day"]["resets_at"] == "2026-12-02T00:00:00Z"
    native = client.post("/route", json={"input": "hi"}, headers={"Authorization": f"Bearer {TOKEN}"}).get_json()
    assert native["budget"]["caller"] == LOCAL_CALLER
    assert any(line.startswith("Budget: held $") for line in native["decision_trace"])


def test_a_caller_with_little_left_still_gets_an_answer_that_costs_at_most_that(build: Callable[..., Flask]) -> None:
    client = build(budgets(**{LOCAL_CALLER: {"daily_usd": 0.0003}})).test_client()
    response = chat(client)
    assert response.status_code == 200, response.get_json()
    assert D(response.headers["x-route-cost-usd"]) <= D("0.0003")
    routing = response.get_json()["routing"]
    assert routing["cost_ceiling_applied"] and routing["max_tokens"] == 139
    assert any("can hold at most $0.0003" in line for line in routing["decision_trace"])


def test_when_not_even_the_input_fits_it_is_a_402_with_retry_after_the_windows_reset(
    build: Callable[..., Flask], wall: WallClock
) -> None:
    client = build(budgets(**{LOCAL_CALLER: {"daily_usd": 0.0005}})).test_client()
    while (response := chat(client)).status_code == 200:
        pass
    assert response.status_code == 402
    error = response.get_json()["error"]
    assert error["type"] == "budget_exhausted"
    assert int(response.headers["Retry-After"]) == 12 * 3600  # noon to midnight UTC
    assert response.headers["x-should-retry"] == "false"
    assert D(repr(error["budget"]["windows"][0]["remaining_usd"])) < MIN_COST


def test_retry_after_waits_for_every_window_that_blocks(build: Callable[..., Flask], wall: WallClock) -> None:
    client = build(budgets(**{LOCAL_CALLER: {"daily_usd": 0.0005, "monthly_usd": 0.0005}})).test_client()
    while (response := chat(client)).status_code == 200:
        pass
    # Both windows are spent alike: midnight resets the day, but the month still blocks until 1 January.
    assert int(response.headers["Retry-After"]) == 31 * 86400 - 12 * 3600


def test_a_call_that_could_never_fit_the_whole_limit_is_budget_exceeded_without_retry_after(
    build: Callable[..., Flask]
) -> None:
    client = build(budgets(**{LOCAL_CALLER: {"daily_usd": 0.00002}})).test_client()
    response = chat(client)  # the least call costs $0.000024: no reset ever makes room for it
    assert response.status_code == 402
    error = response.get_json()["error"]
    assert error["type"] == "budget_exceeded" and "whole daily limit of $0.00002" in error["message"]
    assert "Retry-After" not in response.headers and response.headers["x-should-retry"] == "false"
    assert error["budget"]["windows"][0]["remaining_usd"] == 0.00002


def test_a_dry_run_shows_what_the_caller_has_spent(build: Callable[..., Flask]) -> None:
    client = build(budgets(**{LOCAL_CALLER: {"daily_usd": 0.01}})).test_client()
    cost = D(chat(client).headers["x-route-cost-usd"])
    dry = client.post("/route", json={"input": "hi", "dry_run": True}, headers={"Authorization": f"Bearer {TOKEN}"})
    window = dry.get_json()["budget"]["windows"][0]
    assert D(repr(window["spent_usd"])) == cost and D(repr(window["remaining_usd"])) == D("0.01") - cost


def test_a_spend_store_that_cannot_be_reached_is_a_503_and_no_call_is_made(
    make_app: Callable[..., Flask], fake_openai: FakeOpenAI, tmp_path: Path  # noqa: F811
) -> None:
    (tmp_path / "not-a-directory").write_text("", encoding="utf-8")
    app = make_app(models_config_json=json.dumps([MODEL]), openai_api_key=FAKE_KEY, openai_base_url=fake_openai.base_url,
                   budgets_config_json=budgets(), spend_db_path=str(tmp_path / "not-a-directory" / "spend.db"))
    response = chat(app.test_client())
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"]["type"] == "spend_store_unavailable"
    assert response.headers["x-should-retry"] == "true" and int(response.headers["Retry-After"]) >= 1
    assert fake_openai.requests == []  # no call whose cost could not be accounted for


def test_the_day_rolls_over_at_utc_midnight_and_the_month_still_counts(
    build: Callable[..., Flask], wall: WallClock
) -> None:
    client = build(budgets(**{LOCAL_CALLER: {"daily_usd": 0.0005, "monthly_usd": 0.0009}})).test_client()
    spent = D(0)
    while (response := chat(client)).status_code == 200:  # whole answers first, then shorter ones
        spent += D(response.headers["x-route-cost-usd"])
    assert response.status_code == 402 and spent <= D("0.0005") and D("0.0005") - spent < MIN_COST
    wall.now = NOON + 12 * 3600  # 2026-12-02 00:00:00 UTC
    second = chat(client)
    assert second.status_code == 200
    spent += D(second.headers["x-route-cost-usd"])
    assert spent <= D("0.0009")
    windows = {w["window"]: w for w in second.get_json()["routing"]["budget"]["windows"]}
    assert windows["day"]["period"] == "2026-12-02"
    assert D(repr(windows["month"]["spent_usd"])) == spent


def test_a_killed_calls_reservation_stops_counting_once_the_request_cannot_be_running(
    build: Callable[..., Flask], wall: WallClock
) -> None:
    app = build(budgets(**{LOCAL_CALLER: {"daily_usd": 0.0005}}), request_deadline_seconds=20)
    gate = app.extensions["costroute"].spend
    killed = gate.open(gate.admit(LOCAL_CALLER), "killed-request", 20)
    assert killed.cover(D("0.00049")) is None  # its container dies mid-call: never settled
    client = app.test_client()
    assert chat(client).status_code == 402
    # Past its deadline the request may still be streaming (one read of the upstream can take up to
    # the deadline): its hold still counts, so nobody can spend that money twice.
    wall.now += 21
    assert chat(client).status_code == 402
    wall.now += 2 * 20 + 30 - 21  # twice the deadline, plus the margin for settlement: it cannot be running now
    assert chat(client).status_code == 200


def test_money_held_by_a_request_in_flight_is_worth_asking_for_again_in_a_second_not_at_midnight(
    build: Callable[..., Flask], wall: WallClock
) -> None:
    app = build(budgets(**{LOCAL_CALLER: {"daily_usd": 0.0005}}))
    gate = app.extensions["costroute"].spend
    in_flight = gate.open(gate.admit(LOCAL_CALLER), "in-flight", 20)
    assert in_flight.cover(D("0.00049")) is None  # another request of the caller, still running
    client = app.test_client()
    response = chat(client)
    assert response.status_code == 402
    error = response.get_json()["error"]
    assert error["type"] == "budget_exhausted" and "requests in flight hold $0.00049" in error["message"]
    assert int(response.headers["Retry-After"]) == 1
    in_flight.settle(D("0.00001"), None)  # it ends, using far less than its worst case
    assert chat(client).status_code == 200


def _stream(client: Any, **body: Any) -> Any:
    return client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {TOKEN}"}, buffered=False,
                       json={"model": "auto", "messages": HI, "stream": True, **body})


def _events(response: Any) -> list[dict[str, Any]]:
    text = b"".join(response.response).decode()
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def test_a_stream_holds_its_worst_case_while_it_runs_and_settles_its_actual_cost_when_it_ends(
    build: Callable[..., Flask], tmp_path: Path, wall: WallClock
) -> None:
    app = build(budgets(**{LOCAL_CALLER: {"daily_usd": 0.01}}))
    client = app.test_client()
    store = SQLiteStore(str(tmp_path / "spend.db"))
    day = periods_at(wall.now)
    response = _stream(client, stream_options={"include_usage": True})
    assert store.committed(LOCAL_CALLER, day, wall.now).day == WORST  # held before the first piece is read
    routing = _events(response)[-1]["routing"]
    cost = D(repr(routing["actual_cost_usd"]))
    assert MIN_COST < cost < WORST
    assert store.committed(LOCAL_CALLER, day, wall.now).day == cost  # the hold became the actual cost
    assert [(entry.cost_usd, entry.outcome) for entry in store.ledger(LOCAL_CALLER, day.day, day.day)] == [(cost, "ok")]
    assert D(repr(routing["budget"]["windows"][0]["remaining_usd"])) == D("0.01") - cost


def test_a_client_that_goes_away_mid_stream_is_charged_the_worst_case(
    build: Callable[..., Flask], tmp_path: Path, wall: WallClock
) -> None:
    app = build(budgets(**{LOCAL_CALLER: {"daily_usd": 0.01}}))
    response = _stream(app.test_client())
    chunks = iter(response.response)
    next(chunks), next(chunks)  # the role, then the first words: the answer is under way
    response.close()  # the client hangs up
    store = SQLiteStore(str(tmp_path / "spend.db"))
    day = periods_at(wall.now)
    # What the provider billed for the part it generated is unknown: the worst case it could have been.
    assert store.committed(LOCAL_CALLER, day, wall.now).day == WORST
    assert [(entry.cost_usd, entry.outcome) for entry in store.ledger(LOCAL_CALLER, day.day, day.day)] == [
        (WORST, "client_closed")]


def test_a_stream_cut_by_the_upstream_is_charged_the_worst_case(
    build: Callable[..., Flask], fake_openai: FakeOpenAI, tmp_path: Path, wall: WallClock  # noqa: F811
) -> None:
    app = build(budgets(**{LOCAL_CALLER: {"daily_usd": 0.01}}))
    fake_openai.enqueue(cut_stream(after_words=3))
    events = _events(_stream(app.test_client()))
    assert events[-1]["error"]["type"] == "upstream_error"
    store = SQLiteStore(str(tmp_path / "spend.db"))
    day = periods_at(wall.now)
    assert store.committed(LOCAL_CALLER, day, wall.now).day == WORST
    assert D(repr(events[-1]["routing"]["budget"]["windows"][0]["remaining_usd"])) == D("0.01") - WORST


def test_unknown_callers_are_refused_when_only_known_ones_are_admitted(build: Callable[..., Flask]) -> None:
    document = json.dumps({"callers": {LOCAL_CALLER: {"daily_usd": 1}}, "require_known_callers": True})
    client = build(document).test_client()
    assert chat(client).status_code == 200
    for token in ("someone-else", None):
        response = chat(client, token=token)
        assert response.status_code == 401
        assert response.get_json()["error"]["type"] == "unknown_caller"


def test_without_a_document_there_are_no_budgets_and_no_usage(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    answer = client.post("/route", json={"input": "hi"}).get_json()
    assert answer["budget"] is None and not any(line.startswith("Budget:") for line in answer["decision_trace"])
    assert client.get("/usage").status_code == 404


# ---- the ledger and /usage ----------------------------------------------------------------------------------


def test_usage_agrees_with_the_answers_to_the_last_digit_and_measures_the_saving(
    make_app: Callable[..., Flask], fake_openai: FakeOpenAI, tmp_path: Path, wall: WallClock  # noqa: F811
) -> None:
    fake_openai.set_default(spend_all())
    dear = {**MODEL, "name": "dear", "quality": 5, "in_cost_per_1k": 0.01, "out_cost_per_1k": 0.03}
    app = make_app(runtime_kwargs={"wall_clock": wall, "spend_store": SQLiteStore(str(tmp_path / "spend.db"))},
                   models_config_json=json.dumps([MODEL, dear]), openai_api_key=FAKE_KEY,
                   openai_base_url=fake_openai.base_url,
                   budgets_config_json=json.dumps({"default": {"daily_usd": 1}, "admins": [LOCAL_CALLER]}))
    client = app.test_client()
    costs: list[Decimal] = []
    for token, quality in ((TOKEN, 3), (TOKEN, 3), (TOKEN, 5), ("other-token", 3)):
        response = chat(client, token=token, min_quality=quality)
        costs.append(D(response.headers["x-route-cost-usd"]))
    wall.now += 86400  # the next day
    costs.append(D(chat(client, min_quality=3).headers["x-route-cost-usd"]))

    everyone = client.get("/usage?from=2026-12-01&to=2026-12-02", headers={"Authorization": f"Bearer {TOKEN}"})
    body = everyone.get_json()
    assert (body["scope"], body["baseline_model"], body["group_by"]) == ("all", "openai:dear", "day")
    assert D(body["totals"]["cost_usd_exact"]) == sum(costs)
    assert body["totals"]["requests"] == 5
    assert [g["key"] for g in body["groups"]] == ["2026-12-01", "2026-12-02"]
    first_day = body["groups"][0]
    assert set(first_day["by_model"]) == {"openai:m", "openai:dear"}
    # The baseline prices the same usage on openai:dear: what always choosing it would have cost.
    assert D(body["totals"]["saved_usd_exact"]) == D(body["totals"]["baseline_cost_usd_exact"]) - sum(costs)
    assert D(body["totals"]["saved_usd_exact"]) > 0

    by_model = client.get("/usage?from=2026-12-01&to=2026-12-02&group_by=model",
                          headers={"Authorization": f"Bearer {TOKEN}"}).get_json()
    assert {g["key"]: g["requests"] for g in by_model["groups"]} == {"openai:dear": 1, "openai:m": 4}

    other = client.get("/usage?from=2026-12-01&to=2026-12-02", headers={"Authorization": "Bearer other-token"})
    mine = other.get_json()
    assert mine["scope"] == "caller" and mine["totals"]["requests"] == 1
    assert D(mine["totals"]["cost_usd_exact"]) == costs[3]
    forbidden = client.get(f"/usage?caller={LOCAL_CALLER}", headers={"Authorization": "Bearer other-token"})
    assert forbidden.status_code == 403
    one = client.get("/usage?from=2026-12-01&to=2026-12-01&group_by=caller&caller=anonymous",
                     headers={"Authorization": f"Bearer {TOKEN}"}).get_json()
    assert one["groups"] == []  # the anonymous request came the next day


@pytest.mark.parametrize(
    ("query", "param"),
    [("from=2026-13-01", "from"), ("to=yesterday", "to"), ("group_by=week", "group_by"),
     ("from=2026-12-05&to=2026-12-01", "from"), ("from=2024-01-01&to=2026-12-01", "to")],
)
def test_usage_refuses_bad_queries_naming_the_parameter(build: Callable[..., Flask], query: str, param: str) -> None:
    response = build(budgets()).test_client().get(f"/usage?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == param


def test_a_budgets_document_is_validated_as_a_whole(make_app: Callable[..., Flask]) -> None:
    document = json.dumps({"default": {"daily_usd": -1, "weekly_usd": 3}, "callers": {"a": {"monthly_usd": "lots"}},
                           "admins": "a", "surprise": True})
    client = make_app(budgets_config_json=document).test_client()
    response = client.post("/route", json={"input": "hi"})
    assert response.status_code == 503
    message = response.get_json()["error"]["message"]
    for fragment in ("budgets: unknown field 'surprise'", "'default': unknown field 'weekly_usd'",
                     "'default': field 'daily_usd' must be a number", "caller 'a': field 'monthly_usd' must be a finite number",
                     "field 'admins' must be an array"):
        assert fragment in message, message
    assert client.get("/health").get_json()["status"] == "degraded"


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ('{"default": {"daily_usd": 1e999999999}}', "field 'daily_usd' must be 0 or a number from 1E-30 to 1E+15"),
        ('{"default": {"daily_usd": 1' + "0" * 5000 + '}}', "not valid JSON: Exceeds the limit (4300 digits)"),
        ('{"default": {"daily_usd": 1}, "default": {"daily_usd": 1000}}', "the key 'default' appears twice"),
    ],
)
def test_a_budgets_document_with_impossible_numbers_or_a_repeated_key_is_refused_not_a_500(
    make_app: Callable[..., Flask], document: str, fragment: str
) -> None:
    client = make_app(budgets_config_json=document).test_client()
    response = client.post("/route", json={"input": "hi"})
    assert response.status_code == 503
    assert fragment in response.get_json()["error"]["message"]


def test_settings_refuse_budgets_on_lambda_without_the_table() -> None:
    from costroute.config.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="SPEND_TABLE_NAME"):
        Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "f", "BUDGETS_CONFIG_JSON": "{}"})
    assert os.environ.get("SPEND_TABLE_NAME") is None
