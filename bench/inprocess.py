"""Figures 2 and 6: Lambda invocations in process, run in a child with its own environment.

``python -m bench.inprocess lambda``: ``handler.lambda_handler`` with ``events/route.json`` (the
seed's haiku, mock provider, built-in registry) against the floor, a bare Flask app answering a
small JSON POST through ``awsgi.response`` in the same process. The two alternate in rounds so
that drift in the machine's speed hits both alike.

``python -m bench.inprocess dryrun`` (with ``MODELS_CONFIG_JSON`` holding 1,000 mock models): a
``/route`` dry run of the haiku, with and without ``"max_candidates": 5``.

Each prints one JSON object on stdout.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable
from typing import Any

from bench.common import ROOT, haiku_json, summarise_ns, time_calls


class Context:
    """The parts of the Lambda context the handler reads."""

    function_name = "bench"
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def route_event(body: str) -> dict[str, Any]:
    """``events/route.json`` with the given body."""
    with open(ROOT / "events" / "route.json", encoding="utf-8") as file:
        event = json.load(file)
    event["body"] = body
    return event


def _interleaved(functions: dict[str, Callable[[], Any]], rounds: int, per_round: int, warmup: int) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {name: [] for name in functions}
    for function in functions.values():
        time_calls(function, warmup)
    gc.collect()
    for _ in range(rounds):
        for name, function in functions.items():
            samples[name] += time_calls(function, per_round)
    return samples


def lambda_figure(quick: bool) -> dict[str, Any]:
    import awsgi

    import handler
    from bench.floor_app import app as floor_app

    context = Context()
    event = route_event(haiku_json())
    ours = handler.lambda_handler(event, context)
    if ours["statusCode"] != 200:
        raise SystemExit(f"handler answered {ours['statusCode']}: {ours['body'][:500]}")
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
    result = {name: summarise_ns(values) for name, values in samples.items()}
    result["ours"]["response_bytes"] = len(ours["body"].encode())
    result["floor"]["response_bytes"] = len(floor["body"].encode())
    result["ratio_p50"] = round(result["ours"]["p50_us"] / result["floor"]["p50_us"], 2)
    result["ratio_p99"] = round(result["ours"]["p99_us"] / result["floor"]["p99_us"], 2)
    return result


def dryrun_figure(quick: bool) -> dict[str, Any]:
    import handler

    context = Context()
    variants = {
        "all_candidates": route_event(haiku_json(dry_run=True)),
        "max_candidates_5": route_event(haiku_json(dry_run=True, max_candidates=5)),
    }
    result: dict[str, Any] = {}
    for name, event in variants.items():
        response = handler.lambda_handler(event, context)
        if response["statusCode"] != 200:
            raise SystemExit(f"dry run ({name}) answered {response['statusCode']}: {response['body'][:500]}")
        body = json.loads(response["body"])
        result[name] = {"response_bytes": len(response["body"].encode()), "model": body.get("model"),
                        "candidates_total": body.get("candidates_total"),
                        "candidates_listed": len(body.get("candidates") or [])}
    samples = _interleaved(
        {name: (lambda event=event: handler.lambda_handler(event, context)) for name, event in variants.items()},
        rounds=4,
        per_round=5 if quick else 30,
        warmup=3 if quick else 10,
    )
    for name, values in samples.items():
        result[name].update(summarise_ns(values))
    return result


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    figure = sys.argv[1] if len(sys.argv) > 1 else ""
    if figure == "lambda":
        print(json.dumps(lambda_figure(quick)))
    elif figure == "dryrun":
        print(json.dumps(dryrun_figure(quick)))
    else:
        raise SystemExit("usage: python -m bench.inprocess lambda|dryrun [--quick]")
