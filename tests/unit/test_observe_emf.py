"""EMF documents: valid by the CloudWatch Embedded Metric Format specification, bounded dimensions, exact costs kept."""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import time
from decimal import Decimal
from typing import Any

import jsonschema
import pytest

from costroute.observe.emf import METRIC_UNITS, NAMESPACE, emf_document, emf_documents, emf_line, emf_lines, metric_values
from costroute.observe.logline import MAX_TEXT, log_fields
from costroute.observe.record import AttemptRecord
from costroute.observe.sinks import EmfObserver
from tests.unit.test_observe_logline import MARKED, SCENARIOS, assert_markers_only_where_meant, record

# The units the specification allows (MetricDefinition.Unit).
UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes", "Bits",
    "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second", "Kilobytes/Second",
    "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second",
    "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}

# The ``_aws`` metadata object as the specification describes it.
AWS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["Timestamp", "CloudWatchMetrics"],
    "properties": {
        "Timestamp": {"type": "integer", "minimum": 0},
        "LogGroupName": {"type": "string"},
        "CloudWatchMetrics": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["Namespace", "Dimensions", "Metrics"],
                "additionalProperties": False,
                "properties": {
                    "Namespace": {"type": "string", "minLength": 1, "maxLength": 255},
                    "Dimensions": {
                        "type": "array",
                        "items": {
                            "type": "array",
                            "maxItems": 30,
                            "uniqueItems": True,
                            "items": {"type": "string", "minLength": 1, "maxLength": 250},
                        },
                    },
                    "Metrics": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 100,
                        "items": {
                            "type": "object",
                            "required": ["Name"],
                            "additionalProperties": False,
                            "properties": {
                                "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                                "Unit": {"enum": sorted(UNITS)},
                                "StorageResolution": {"enum": [1, 60]},
                            },
                        },
                    },
                },
            },
        },
    },
}


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def emf_problems(document: Any) -> list[str]:
    """What makes a document invalid EMF (empty: valid), checked rule by rule against the specification."""
    if not isinstance(document, dict):
        return ["the root is not an object"]
    aws = document.get("_aws")
    if not isinstance(aws, dict):
        return ["no _aws object"]
    problems = []
    timestamp = aws.get("Timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        problems.append("Timestamp is not an integer")
    elif timestamp < 10**12:
        problems.append("Timestamp is not in milliseconds")
    directives = aws.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        return [*problems, "CloudWatchMetrics is not a non-empty list"]
    for index, directive in enumerate(directives):
        where = f"directive {index}"
        if not isinstance(directive, dict):
            problems.append(f"{where} is not an object")
            continue
        if not isinstance(directive.get("Namespace"), str) or not directive["Namespace"]:
            problems.append(f"{where}: Namespace is not a string")
        dimension_sets = directive.get("Dimensions")
        if not isinstance(dimension_sets, list):
            problems.append(f"{where}: Dimensions is not a list")
            dimension_sets = []
        for dimension_set in dimension_sets:
            if not isinstance(dimension_set, list):
                problems.append(f"{where}: a dimension set is not a list")
                continue
            if len(dimension_set) > 30:
                problems.append(f"{where}: {len(dimension_set)} dimensions in a set")
            for name in dimension_set:
                value = document.get(name)
                if not isinstance(value, str) or not value:
                    problems.append(f"{where}: dimension {name!r} is not a root member holding a string")
                elif not (value.isascii() and value.isprintable()) or len(value) > 1024:
                    problems.append(f"{where}: dimension {name!r} is not up to 1024 printable ASCII characters")
        metrics = directive.get("Metrics")
        if not isinstance(metrics, list) or not metrics:
            problems.append(f"{where}: Metrics is not a non-empty list")
            continue
        if len(metrics) > 100:
            problems.append(f"{where}: {len(metrics)} metrics")
        for metric in metrics:
            name = metric.get("Name") if isinstance(metric, dict) else None
            if not isinstance(name, str):
                problems.append(f"{where}: a metric has no name")
                continue
            value = document.get(name)
            numbers = value if isinstance(value, list) else [value]
            if not numbers or not all(is_number(number) for number in numbers) or len(numbers) > 100:
                problems.append(f"{where}: metric {name!r} is not a root member holding a number or list of numbers")
            if "Unit" in metric and metric["Unit"] not in UNITS:
                problems.append(f"{where}: metric {name!r} has unit {metric['Unit']!r}")
    return problems


def assert_valid(document: dict[str, Any]) -> None:
    assert emf_problems(document) == []
    jsonschema.validate(document["_aws"], AWS_SCHEMA)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_document_is_valid_emf(name: str) -> None:
    assert_valid(emf_document(SCENARIOS[name]))
    assert_valid(json.loads(emf_line(SCENARIOS[name])))
    for line in emf_lines(SCENARIOS[name]):
        assert_valid(json.loads(line))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_document_is_the_log_line_plus_metrics(name: str) -> None:
    document = emf_document(SCENARIOS[name])
    fields = log_fields(SCENARIOS[name])
    assert {key: document[key] for key in fields} == fields
    metric_names = {m["Name"] for d in document["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    dimension_names = {n for d in document["_aws"]["CloudWatchMetrics"] for s in d["Dimensions"] for n in s}
    # Metric, dimension and field names never collide (CostUSD the float, costroute.cost_usd the exact string).
    assert not metric_names & set(fields) and not dimension_names & set(fields)
    assert set(document) == set(fields) | metric_names | dimension_names | {"_aws"}


def test_the_first_directive_layout() -> None:
    document = emf_document(SCENARIOS["routed"])
    directive, calls = document["_aws"]["CloudWatchMetrics"]
    assert calls == {"Namespace": "Costroute", "Dimensions": [["Provider"]],
                     "Metrics": [{"Name": "ProviderFailurePercent", "Unit": "Percent"}]}
    assert document["ProviderFailurePercent"] == [0]  # one call to the provider that served, which answered
    assert directive["Namespace"] == NAMESPACE == "Costroute"
    assert directive["Dimensions"] == [[], ["Model"], ["Provider"]]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "Requests": "Count", "Errors": "Count", "CostUSD": "None", "EstimatedCostUSD": "None",
        "InputTokens": "Count", "CachedInputTokens": "Count", "CacheWriteInputTokens": "Count",
        "OutputTokens": "Count", "RouterOverheadMs": "Milliseconds", "ProviderLatencyMs": "Milliseconds",
        "Failovers": "Count", "CeilingClamped": "Count", "OverBudget": "Count", "BudgetRefused": "Count"}
    assert (document["Model"], document["Provider"]) == ("mock:advanced", "mock")
    assert (document["Requests"], document["Errors"], document["InputTokens"], document["OutputTokens"]) == (1, 0, 14, 13)
    assert document["_aws"]["Timestamp"] == 1_764_612_000_250


def test_costs_are_floats_in_metrics_and_exact_strings_in_fields() -> None:
    document = emf_document(SCENARIOS["stream"])
    assert document["CostUSD"] == 1e-7 and isinstance(document["CostUSD"], float)
    assert document["costroute.cost_usd"] == "0.0000001"
    assert document["EstimatedCostUSD"] == 3e-7 and document["OverBudgetUSD"] == 2.5e-8
    assert (document["CeilingClamped"], document["OverBudget"]) == (1, 1)
    line = emf_line(SCENARIOS["stream"])
    assert '"costroute.cost_usd":"0.0000001"' in line and '"CostUSD":1e-07' in line


def test_errors_by_type_have_their_own_directive() -> None:
    document = emf_document(SCENARIOS["402_budget_exhausted"])
    first, errors = document["_aws"]["CloudWatchMetrics"]  # no provider was called: no third directive
    assert errors == {"Namespace": "Costroute", "Dimensions": [["ErrorType"]], "Metrics": [{"Name": "Errors", "Unit": "Count"}]}
    assert document["ErrorType"] == "budget_exhausted" and document["Errors"] == 1
    assert document["BudgetRefused"] == 1
    assert (document["Model"], document["Provider"]) == ("none", "none")
    # A refused request has no cost and called no provider: those metrics are left out, not sent as 0.
    names = {m["Name"] for m in first["Metrics"]}
    assert not names & {"CostUSD", "EstimatedCostUSD", "ProviderLatencyMs", "OverBudgetUSD"}
    assert not {"CostUSD", "EstimatedCostUSD", "ProviderLatencyMs"} & set(document)
    assert len(emf_document(SCENARIOS["dry_run"])["_aws"]["CloudWatchMetrics"]) == 1
    stream_error = emf_document(SCENARIOS["stream_error"])
    assert stream_error["ErrorType"] == "upstream_error" and stream_error["Errors"] == 1


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_dimensions_are_bounded_names_only(name: str) -> None:
    document = emf_document(SCENARIOS[name])
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            assert set(dimension_set) <= {"Model", "Provider", "ErrorType"}
    for extra in emf_documents(SCENARIOS[name])[1:]:
        assert extra["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Provider"]]
    caller = SCENARIOS[name].caller
    if caller is not None:
        assert [key for key, value in document.items() if value == caller] == ["costroute.caller"]


def test_a_registry_name_outside_printable_ascii_is_a_valid_dimension_and_stays_whole_in_its_field() -> None:
    """CloudWatch drops the metrics of a document whose dimension value is not printable ASCII."""
    name = "mock:mod\u00e8le-\u00fc\x7f"
    served = record(model=name, provider="l\u00f6cal",
                    attempts=(AttemptRecord(model=name, provider="l\u00f6cal", outcome="ok", status=None, duration_ms=1.0),))
    for document in emf_documents(served):
        assert_valid(document)
    main = emf_document(served)
    assert main["Model"] == "mock:mod?le-??" and main["Provider"] == "l?cal"
    assert main["gen_ai.response.model"] == name  # the field keeps the name as the registry has it


def test_each_provider_called_gets_its_failure_values_in_one_document() -> None:
    main, other = emf_documents(SCENARIOS["failover"])  # bedrock timed out, then anthropic answered
    assert (main["Provider"], main["ProviderFailurePercent"]) == ("anthropic", [0])
    assert other["event.name"] == "costroute.provider_calls" and other["Provider"] == "bedrock"
    assert other["ProviderFailurePercent"] == [100]
    assert other["costroute.request_id"] == main["costroute.request_id"]
    assert set(other) == {"event.name", "costroute.request_id", "Provider", "ProviderFailurePercent", "_aws"}
    # A request that failed on every model: the last model's provider in its document, the other in its own.
    refused, bedrock = emf_documents(SCENARIOS["504"])
    assert (refused["Provider"], refused["ProviderFailurePercent"]) == ("anthropic", [100])
    assert (bedrock["Provider"], bedrock["ProviderFailurePercent"]) == ("bedrock", [100])


def test_a_call_the_caller_got_wrong_is_not_the_providers_failure() -> None:
    mistaken = record(attempts=(AttemptRecord("mock:advanced", "mock", "bad_request", 400, 3.0),
                                AttemptRecord("mock:advanced", "mock", "rate_limited", 429, 3.0)))
    assert emf_document(mistaken)["ProviderFailurePercent"] == [0, 100]


def test_the_metric_table_names_every_metric() -> None:
    every = set(METRIC_UNITS)
    assert every >= {"Requests", "Errors", "CostUSD", "EstimatedCostUSD", "InputTokens", "CachedInputTokens",
                     "OutputTokens", "RouterOverheadMs", "ProviderLatencyMs", "Failovers", "CeilingClamped",
                     "OverBudget", "BudgetRefused"}
    assert set(metric_values(record(over_budget=True, over_budget_usd=Decimal("0.01")))) == every
    assert set(METRIC_UNITS.values()) <= UNITS


def test_markers_stay_in_their_fields_and_dimensions() -> None:
    document = json.loads(emf_line(MARKED))
    assert_markers_only_where_meant(document)
    assert (document["Model"], document["Provider"], document["ErrorType"]) == ("MRK-model", "MRK-provider", "MRK-error")


def test_a_line_stays_small_whatever_the_client_sent() -> None:
    huge = record(dialect="chat", requested_model="m" * 1_000_000, path="/" + "p" * 1_000_000)
    line = emf_line(huge)
    assert len(line) < 8_000 and "\n" not in line
    assert len(json.loads(line)["gen_ai.request.model"]) == MAX_TEXT
    assert emf_document(record(model="x" * 5000))["Model"] == "x" * 250


@pytest.mark.parametrize("timestamp", [float("nan"), float("inf"), 1e300, -1.0])
def test_a_broken_clock_still_gives_a_timestamp_in_milliseconds(timestamp: float) -> None:
    document = emf_document(record(timestamp=timestamp))
    assert_valid(document)
    assert abs(document["_aws"]["Timestamp"] / 1000 - time.time()) < 60


# ---------------------------------------------------------------------------------------------
# The validator is not vacuous


def _broken(change: str) -> dict[str, Any]:
    document = copy.deepcopy(emf_document(SCENARIOS["504"]))
    aws, first = document["_aws"], document["_aws"]["CloudWatchMetrics"][0]
    if change == "metric not a root member":
        del document["CostUSD" if "CostUSD" in document else "Requests"]
    elif change == "metric value a string":
        document["Requests"] = "1"
    elif change == "metric value a boolean":
        document["Errors"] = True
    elif change == "metric values not all numbers":
        document["Requests"] = [1, "2"]
    elif change == "unknown unit":
        first["Metrics"][0]["Unit"] = "Dollars"
    elif change == "dimension not a root member":
        del document["Model"]
    elif change == "dimension value a number":
        document["ErrorType"] = 504
    elif change == "101 metrics":
        for n in range(101):
            document[f"M{n}"] = n
        first["Metrics"] = [{"Name": f"M{n}", "Unit": "Count"} for n in range(101)]
    elif change == "31 dimensions":
        for n in range(31):
            document[f"D{n}"] = "x"
        first["Dimensions"] = [[f"D{n}" for n in range(31)]]
    elif change == "timestamp in seconds":
        aws["Timestamp"] = 1_764_612_000
    elif change == "timestamp a float":
        aws["Timestamp"] = 1_764_612_000_250.5
    elif change == "namespace not a string":
        first["Namespace"] = 7
    elif change == "no directive":
        aws["CloudWatchMetrics"] = []
    else:
        raise AssertionError(change)
    return document


BREAKS = ["metric not a root member", "metric value a string", "metric value a boolean", "metric values not all numbers",
          "unknown unit", "dimension not a root member", "dimension value a number", "101 metrics", "31 dimensions",
          "timestamp in seconds", "timestamp a float", "namespace not a string", "no directive"]
# What the schema of _aws alone can see (the root members are the validator's part).
SCHEMA_SEES = {"unknown unit", "101 metrics", "31 dimensions", "timestamp a float", "namespace not a string", "no directive"}


@pytest.mark.parametrize("change", BREAKS)
def test_the_validator_catches_a_broken_document(change: str) -> None:
    document = _broken(change)
    assert emf_problems(document), change
    if change in SCHEMA_SEES:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(document["_aws"], AWS_SCHEMA)


# ---------------------------------------------------------------------------------------------
# The EMF observer


def test_emf_observer_writes_whole_lines_directly_and_flushes() -> None:
    class Stream(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1
            super().flush()

    stream = Stream()
    observer = EmfObserver(stream)
    observer.observe(SCENARIOS["routed"])
    observer.observe(SCENARIOS["504"])
    lines = stream.getvalue().split("\n")
    # routed: one document; 504: its own and one per provider it reached (bedrock; anthropic is the record's).
    assert lines[-1] == "" and len(lines) == 1 + 2 + 1 and stream.flushes == 2
    for line in lines[:-1]:
        assert_valid(json.loads(line))


def test_emf_observer_follows_sys_stdout_and_bypasses_logging(capsys: pytest.CaptureFixture[str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        EmfObserver().observe(SCENARIOS["failover"])
    out = capsys.readouterr().out
    assert out == "".join(line + "\n" for line in emf_lines(SCENARIOS["failover"]))
    assert out.count("\n") == 2  # the request's document, and bedrock's failed call
    assert not caplog.records


def test_emf_observer_namespace() -> None:
    stream = io.StringIO()
    EmfObserver(stream, namespace="CostrouteStaging").observe(SCENARIOS["routed"])
    assert json.loads(stream.getvalue())["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "CostrouteStaging"


def test_a_closed_stream_does_not_fail_the_request(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    stream.close()
    observer = EmfObserver(stream)
    with caplog.at_level(logging.WARNING, logger="costroute.observe"):
        observer.observe(SCENARIOS["routed"])
        observer.observe(SCENARIOS["routed"])
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert caplog.records[0].exc_info is not None and caplog.records[1].exc_info is None
