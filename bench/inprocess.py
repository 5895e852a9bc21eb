"""Figures 2, 6, 7 (in process) and 9 (in process, DynamoDB calls): Lambda invocations in a child.

Every child here calls ``bench.common.discard_stdout`` first: the service's one line per request
(``LOG_FORMAT`` as the figure sets it) is formatted and written to /dev/null, as it would be
written to the function's stdout on Lambda, and only the result line reaches the parent.

``python -m bench.inprocess lambda``: ``handler.lambda_handler`` with ``events/route.json`` (the
seed's haiku, mock provider, built-in registry) against the floor, a bare Flask app answering a
small JSON POST through ``awsgi.response`` in the same process. The two alternate in rounds so
that drift in the machine's speed hits both alike.

``python -m bench.inprocess dryrun`` (with ``MODELS_CONFIG_JSON`` holding 1,000 mock models): a
``/route`` dry run of the haiku, with and without ``"max_candidates": 5``.

``python -m bench.inprocess observe``: figure 2's invocation with each observer: the EMF line
(Lambda's), the JSON and the readable log lines (``LOG_FORMAT=json|readable``), and none
(``runtime.observer`` replaced by ``NoObserver``), alternating in rounds.

``python -m bench.inprocess budgets`` (with ``BUDGETS_CONFIG_JSON`` and ``SPEND_DB_PATH``): figure
2's invocation with budgets (a reservation and a settlement in SQLite per request) and without
(the same settings, ``budgets_config_json`` removed), alternating; each invocation has a request
id of its own, as API Gateway gives, since the ledger keeps one entry per request id.

``python -m bench.inprocess dynamodb`` (with ``SPEND_TABLE_NAME`` and ``BUDGETS_CONFIG_JSON``):
routed requests through the handler against moto's DynamoDB, counting the DynamoDB API calls of
each request on the client the app uses; then dry runs.

Each prints one JSON object on stdout.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from bench.common import ROOT, discard_stdout, haiku_json, print_result, summarise_ns, time_calls

AnyApp = Callable[..., Iterable[bytes]]


class Context:
    """The parts of the Lambda context the handler reads."""

    function_name = "bench"
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def route_event(body: str) -> dict[str, Any]:
    """``events/route.json`` with the given body."""
    with open(ROOT / "events" / "route.json", encoding="utf-8") as file:
        event: dict[str, Any] = json.load(file)
    event["body"] = body
    return event


def _interleaved(
    functions: dict[str, Callable[[], Any]],
    rounds: int,
    per_round: int,
    warmup: int,
    before: dict[str, Callable[[], None]] | None = None,
) -> dict[str, list[int]]:
    """Each function ``warmup`` times, then ``rounds`` rounds of ``per_round`` calls of each in turn.

    ``before[name]`` runs (untimed) before each batch of ``name``: it selects that variant's app.
    """
    before = before or {}
    samples: dict[str, list[int]] = {name: [] for name in functions}
    for name, function in functions.items():
        if name in before:
            before[name]()
        time_calls(function, warmup)
    gc.collect()
    for _ in range(rounds):
        for name, function in functions.items():
            if name in before:
                before[name]()
            samples[name] += time_calls(function, per_round)
    return samples


def handler_app(settings_changes: dict[str, Any] | None = None, no_observer: bool = False,
                **runtime_kwargs: Any) -> AnyApp:
    """``handler``'s own application (its WSGI wrapper around the Flask app) for a variant of the settings.

    ``handler._application`` builds the app with ``build_runtime(Settings.from_env())``; this builds
    it the same way with ``build_runtime`` wrapped: the settings changed by ``dataclasses.replace``,
    ``build_runtime`` given ``runtime_kwargs`` (``aws_clients``), and ``runtime.observer`` replaced
    by ``NoObserver()`` when asked. ``handler._app`` is left unset; ``use(app)`` selects one.
    """
    import costroute.bootstrap as bootstrap
    import handler
    from costroute.runtime import NoObserver

    original = bootstrap.build_runtime

    def build(settings: Any, **kwargs: Any) -> Any:
        runtime = original(dataclasses.replace(settings, **(settings_changes or {})), **{**kwargs, **runtime_kwargs})
        if no_observer:
            runtime.observer = NoObserver()
        return runtime

    bootstrap.build_runtime = build
    handler._app = None
    try:
        app = handler._application()
    finally:
        bootstrap.build_runtime = original
        handler._app = None
    return app


def use(app: AnyApp) -> Callable[[], None]:
    """A function that makes ``handler.lambda_handler`` serve with ``app``."""
    import handler

    def select() -> None:
        handler._app = app

    return select


def _checked(response: dict[str, Any], what: str) -> dict[str, Any]:
    if response["statusCode"] != 200:
        raise SystemExit(f"{what} answered {response['statusCode']}: {response['body'][:500]}")
    return response


def lambda_figure(quick: bool) -> dict[str, Any]:
    import awsgi

    import handler
    from bench.floor_app import app as floor_app

    context = Context()
    event = route_event(haiku_json())
    ours = _checked(handler.lambda_handler(event, context), "handler")
    floor = awsgi.response(floor_app, dict(event), context)
    if int(floor["statusCode"]) != 200:
        raise SystemExit(f"floor answered {floor['statusCode']}")
    samples = _interleaved(
        {
            "ours": lambda: handler.lambda_handler(event, context),
            "floor": lambda: awsgi.response(floor_app, event, context),
        },
        rounds=10,
        per_round=60 if quick else 400,
        warmup=50 if quick else 300,
    )
    result: dict[str, Any] = {name: summarise_ns(values) for name, values in samples.items()}
    result["ours"]["response_bytes"] = len(ours["body"].encode())
    result["floor"]["response_bytes"] = len(floor["body"].encode())
    result["ratio_p50"] = round(result["ours"]["p50_us"] / result["floor"]["p50_us"], 2)
    result["ratio_p99"] = round(result["ours"]["p99_us"] / result["floor"]["p99_us"], 2)
    result["log_format"] = _settings().log_format
    return result


def _settings() -> Any:
    from costroute.config.settings import Settings

    return Settings.from_env()


def dryrun_figure(quick: bool) -> dict[str, Any]:
    import handler

    context = Context()
    variants = {
        "all_candidates": route_event(haiku_json(dry_run=True)),
        "max_candidates_5": route_event(haiku_json(dry_run=True, max_candidates=5)),
    }
    result: dict[str, Any] = {}
    for name, event in variants.items():
        response = _checked(handler.lambda_handler(event, context), f"dry run ({name})")
        body = json.loads(response["body"])
        result[name] = {"response_bytes": len(response["body"].encode()), "model": body.get("model"),
                        "candidates_total": body.get("candidates_total"),
                        "candidates_listed": len(body.get("candidates") or [])}
    def invoker(event: dict[str, Any]) -> Callable[[], Any]:
        return lambda: handler.lambda_handler(event, context)

    samples = _interleaved(
        {name: invoker(event) for name, event in variants.items()},
        rounds=4,
        per_round=5 if quick else 30,
        warmup=3 if quick else 10,
    )
    for name, values in samples.items():
        result[name].update(summarise_ns(values))
    result["log_format"] = _settings().log_format
    return result


def _differences(result: dict[str, Any], base: str, names: Iterable[str]) -> dict[str, dict[str, float]]:
    """Each variant minus ``base``, in µs, at p50 and mean."""
    return {
        name: {"p50_us": round(result[name]["p50_us"] - result[base]["p50_us"], 2),
               "mean_us": round(result[name]["mean_us"] - result[base]["mean_us"], 2)}
        for name in names if name != base
    }


def observe_figure(quick: bool) -> dict[str, Any]:
    """Figure 2's invocation with the EMF line, the JSON line, the readable line, and no observer at all."""
    import handler

    context = Context()
    event = route_event(haiku_json())
    apps = {
        "emf": handler_app({"log_format": "emf"}),
        "json": handler_app({"log_format": "json"}),
        "readable": handler_app({"log_format": "readable"}),
        "off": handler_app(no_observer=True),
    }
    for name, app in apps.items():
        use(app)()
        _checked(handler.lambda_handler(event, context), f"handler ({name})")
    samples = _interleaved(
        {name: (lambda: handler.lambda_handler(event, context)) for name in apps},
        # Short rounds, many of them: the variants differ by tens of µs, and a shared machine's speed drifts.
        rounds=10 if quick else 40,
        per_round=60 if quick else 100,
        warmup=50 if quick else 300,
        before={name: use(app) for name, app in apps.items()},
    )
    result: dict[str, Any] = {name: summarise_ns(values) for name, values in samples.items()}
    result["minus_off"] = _differences(result, "off", apps)
    return result


def budgets_figure(quick: bool) -> dict[str, Any]:
    """Figure 2's invocation with budgets (SQLite at SPEND_DB_PATH) and without."""
    import handler

    settings = _settings()
    if not settings.budgets_configured:
        raise SystemExit("budgets figure: BUDGETS_CONFIG_JSON is not set")
    context = Context()
    event = route_event(haiku_json())
    ids = itertools.count(1)

    def invoke() -> dict[str, Any]:
        # One request id per invocation, as API Gateway gives: the ledger holds one entry per request.
        event["requestContext"]["requestId"] = f"bench-{next(ids)}"
        response: dict[str, Any] = handler.lambda_handler(event, context)
        return response

    apps = {"budgets": handler_app(), "none": handler_app({"budgets_config_json": None})}
    answers = {}
    for name, app in apps.items():
        use(app)()
        answers[name] = json.loads(_checked(invoke(), f"handler ({name})")["body"])
    if not answers["budgets"].get("budget") or answers["none"].get("budget") is not None:
        raise SystemExit("budgets figure: the answer with budgets must carry a budget object, the other must not")
    samples = _interleaved(
        {name: invoke for name in apps},
        rounds=10 if quick else 40,
        per_round=40 if quick else 75,
        warmup=30 if quick else 200,
        before={name: use(app) for name, app in apps.items()},
    )
    result: dict[str, Any] = {name: summarise_ns(values) for name, values in samples.items()}
    result["minus_none"] = _differences(result, "none", apps)["budgets"]
    result["store"] = "SQLiteStore"
    result["spend_db_path"] = settings.spend_db_path
    result["log_format"] = settings.log_format
    return result


def dynamodb_figure(quick: bool) -> dict[str, Any]:
    """DynamoDB API calls per request on the client the app uses, against moto."""
    from moto import mock_aws

    import handler
    from costroute.config.aws import AwsClients

    settings = _settings()
    if not settings.spend_table_name or not settings.budgets_configured:
        raise SystemExit("dynamodb figure: SPEND_TABLE_NAME and BUDGETS_CONFIG_JSON must be set")
    routed = 10 if quick else 50
    dry_runs = 3 if quick else 10
    context = Context()
    with mock_aws():
        clients = AwsClients()
        dynamodb = clients.client("dynamodb")
        dynamodb.create_table(
            TableName=settings.spend_table_name, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}])
        calls: list[str] = []

        def count(model: Any, **_: Any) -> None:
            calls.append(model.name)

        dynamodb.meta.events.register("before-call.dynamodb", count)
        app = handler_app(aws_clients=clients)
        use(app)()

        def per_request(body: str, n: int, prefix: str) -> list[Counter[str]]:
            counted: list[Counter[str]] = []
            for index in range(n):
                event = route_event(body)
                event["requestContext"]["requestId"] = f"{prefix}-{index}"
                del calls[:]
                answer = json.loads(_checked(handler.lambda_handler(event, context), prefix)["body"])
                if not answer.get("budget"):
                    raise SystemExit("dynamodb figure: the answer carries no budget object (budgets are off?)")
                counted.append(Counter(calls))
            return counted

        route_counts = per_request(haiku_json(), routed, "route")
        dry_counts = per_request(haiku_json(dry_run=True), dry_runs, "dry")

    def summary(counted: list[Counter[str]]) -> dict[str, Any]:
        operations = sorted({name for c in counted for name in c})
        totals = [sum(c.values()) for c in counted]
        return {
            "requests": len(counted),
            "per_request": {name: round(statistics.fmean(c.get(name, 0) for c in counted), 2) for name in operations},
            "calls_per_request_max": max(totals),
            "calls_per_request_mean": round(statistics.fmean(totals), 2),
            "first_request": dict(counted[0]),
        }

    return {"table": settings.spend_table_name, "routed": summary(route_counts), "dry_run": summary(dry_counts)}


FIGURES: dict[str, Callable[[bool], dict[str, Any]]] = {
    "lambda": lambda_figure,
    "dryrun": dryrun_figure,
    "observe": observe_figure,
    "budgets": budgets_figure,
    "dynamodb": dynamodb_figure,
}


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    figure = sys.argv[1] if len(sys.argv) > 1 else ""
    if figure not in FIGURES:
        raise SystemExit(f"usage: python -m bench.inprocess {'|'.join(FIGURES)} [--quick]")
    out = discard_stdout()
    print_result(out, FIGURES[figure](quick))
