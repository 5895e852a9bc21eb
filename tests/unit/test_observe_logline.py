"""The request log line: OpenTelemetry names, exact decimal strings, one line, no text, no key; the line observers."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from costroute.observe import logline
from costroute.observe.logline import decimal_text, json_line, log_fields, readable_line
from costroute.observe.record import AttemptRecord, RequestRecord
from costroute.observe.sinks import REQUEST_LOGGER, CompositeObserver, LogLineObserver

T0 = 1_764_612_000.25  # 2025-12-01T18:00:00.250Z


def record(**overrides: Any) -> RequestRecord:
    """A routed /route request served by the mock, as the web layer would record it; fields overridden."""
    values: dict[str, Any] = {
        "request_id": "ab12cd34-0000-4000-8000-000000000001",
        "timestamp": T0,
        "dialect": "route",
        "method": "POST",
        "path": "/route",
        "http_status": 200,
        "model": "mock:advanced",
        "provider": "mock",
        "provider_kind": "mock",
        "upstream_model": "advanced",
        "rung": 1,
        "attempts": (AttemptRecord("mock:advanced", "mock", "ok", 200, 500.0),),
        "input_tokens": 14,
        "output_tokens": 13,
        "usage_reported": True,
        "estimated_cost_usd": Decimal("0.000803"),
        "cost_usd": Decimal("0.000113"),
        "router_overhead_ms": 0.3,
        "provider_ms": 500.0,
    }
    values.update(overrides)
    return RequestRecord(**values)


def refused(status: int, error_type: str | None, **overrides: Any) -> RequestRecord:
    """A request that failed before any provider call."""
    values: dict[str, Any] = {"http_status": status, "error_type": error_type, "model": None, "provider": None,
                              "provider_kind": None, "upstream_model": None, "rung": None, "attempts": (),
                              "input_tokens": 0, "output_tokens": 0, "usage_reported": False,
                              "estimated_cost_usd": None, "cost_usd": None, "provider_ms": 0.0}
    values.update(overrides)
    return record(**values)


CHAT = {"dialect": "chat", "path": "/v1/chat/completions"}

# Every path through the router, as the web layer builds the record for it.
SCENARIOS: dict[str, RequestRecord] = {
    "routed": record(),
    "pinned": record(**CHAT, requested_model="gpt-4o-mini", model="openai-main:gpt-4o-mini", provider="openai-main",
                     provider_kind="openai", upstream_model="gpt-4o-mini-2024-07-18", rung=None,
                     attempts=(AttemptRecord("openai-main:gpt-4o-mini", "openai-main", "ok", 200, 812.5),),
                     input_tokens=1200, cached_input_tokens=1024, output_tokens=40,
                     estimated_cost_usd=Decimal("0.00024"), cost_usd=Decimal("0.0000516"), provider_ms=812.5),
    "failover": record(**CHAT, requested_model="auto", model="anthropic:claude-haiku", provider="anthropic", provider_kind="anthropic",
                       upstream_model="claude-3-5-haiku-latest", rung=2, failovers=1,
                       attempts=(AttemptRecord("bedrock:nova-micro", "bedrock", "timeout", None, 5000.0),
                                 AttemptRecord("anthropic:claude-haiku", "anthropic", "ok", 200, 640.0)),
                       cache_write_tokens=300, cost_usd=Decimal("0.00150"), provider_ms=5640.0),
    "stream": record(**CHAT, stream=True, requested_model="auto", model="bedrock:nova-micro", provider="bedrock",
                     provider_kind="bedrock", cost_usd=Decimal("1E-7"), estimated_cost_usd=Decimal("3E-7"),
                     ceiling_applied=True, over_budget=True, over_budget_usd=Decimal("2.5E-8"), caller="team-a"),
    "dry_run": record(dry_run=True, attempts=(), cost_usd=None, input_tokens=14, output_tokens=0,
                      usage_reported=False, provider_ms=0.0),
    "400": refused(400, "invalid_request_error"),
    "402_budget_exceeded": refused(402, "budget_exceeded", model="mock:advanced", provider="mock", provider_kind="mock",
                                   rung=1, estimated_cost_usd=Decimal("0.000803")),
    "402_budget_exhausted": refused(402, "budget_exhausted", caller="team-b", budget_refused=True),
    "404": refused(404, "not_found_error", **CHAT, requested_model="no-such-model"),
    "413": refused(413, "request_too_large"),
    "422": refused(422, "quality_unmet"),
    "502": refused(502, "upstream_error", model="mock:advanced", provider="mock", provider_kind="mock", rung=1,
                   attempts=(AttemptRecord("mock:advanced", "mock", "upstream", 500, 120.0),), provider_ms=120.0,
                   estimated_cost_usd=Decimal("0.000803")),
    "503": refused(503, "no_model_available"),
    "504": refused(504, "deadline_exceeded", **CHAT, requested_model="auto", model="anthropic:claude-haiku", provider="anthropic",
                   provider_kind="anthropic", failovers=1, provider_ms=25000.0,
                   attempts=(AttemptRecord("bedrock:nova-micro", "bedrock", "timeout", None, 12000.0),
                             AttemptRecord("anthropic:claude-haiku", "anthropic", "timeout", 504, 13000.0))),
    "stream_error": record(**CHAT, stream=True, error_type="upstream_error", requested_model="auto",
                           attempts=(AttemptRecord("mock:advanced", "mock", "upstream", None, 90.0),), provider_ms=90.0),
    "other_405": refused(405, "method_not_allowed", dialect="other", method="GET", path="/route"),
}

# What each scenario's log line must say (a subset of its fields; absent: None).
EXPECTED: dict[str, dict[str, Any]] = {
    "routed": {
        "costroute.request_id": "ab12cd34-0000-4000-8000-000000000001", "costroute.dialect": "route",
        "http.request.method": "POST", "url.path": "/route", "http.response.status_code": 200, "error.type": None,
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "auto", "gen_ai.response.model": "mock:advanced",
        "gen_ai.provider.name": "costroute.mock", "costroute.provider": "mock", "costroute.rung": 1,
        "costroute.attempts": [{"model": "mock:advanced", "provider": "mock", "outcome": "ok", "status": 200,
                                "duration_ms": 500.0}],
        "costroute.failovers": 0, "gen_ai.usage.input_tokens": 14, "gen_ai.usage.output_tokens": 13,
        "gen_ai.usage.cache_read.input_tokens": 0, "costroute.cost_usd": "0.000113",
        "costroute.estimated_cost_usd": "0.000803", "costroute.router_overhead_ms": 0.3, "costroute.provider_ms": 500.0,
        "costroute.over_budget": False, "costroute.ceiling_applied": False, "costroute.budget_refused": False,
        "costroute.usage_reported": True, "costroute.stream": False, "costroute.dry_run": False,
        "costroute.caller": None, "timestamp": "2025-12-01T18:00:00.250Z", "event.name": "costroute.request",
    },
    "pinned": {
        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "openai-main:gpt-4o-mini", "gen_ai.provider.name": "openai",
        "costroute.provider": "openai-main", "costroute.upstream_model": "gpt-4o-mini-2024-07-18", "costroute.rung": None,
        "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.cache_read.input_tokens": 1024,
        "costroute.cost_usd": "0.0000516", "costroute.estimated_cost_usd": "0.00024", "url.path": "/v1/chat/completions",
        "costroute.dialect": "chat",
    },
    "failover": {
        "costroute.failovers": 1, "gen_ai.provider.name": "anthropic", "costroute.cost_usd": "0.0015",
        "gen_ai.usage.cache_creation.input_tokens": 300,
        "costroute.attempts": [
            {"model": "bedrock:nova-micro", "provider": "bedrock", "outcome": "timeout", "status": None, "duration_ms": 5000.0},
            {"model": "anthropic:claude-haiku", "provider": "anthropic", "outcome": "ok", "status": 200, "duration_ms": 640.0}],
    },
    "stream": {
        "costroute.stream": True, "gen_ai.provider.name": "aws.bedrock", "costroute.cost_usd": "0.0000001",
        "costroute.estimated_cost_usd": "0.0000003", "costroute.ceiling_applied": True, "costroute.over_budget": True,
        "costroute.over_budget_usd": "0.000000025", "costroute.caller": "team-a",
    },
    "dry_run": {"costroute.dry_run": True, "costroute.cost_usd": None, "costroute.estimated_cost_usd": "0.000803",
                "costroute.attempts": [], "costroute.usage_reported": False},
    "400": {"http.response.status_code": 400, "error.type": "invalid_request_error", "gen_ai.response.model": None,
            "gen_ai.provider.name": None, "costroute.cost_usd": None, "costroute.attempts": []},
    "402_budget_exceeded": {"http.response.status_code": 402, "error.type": "budget_exceeded",
                            "costroute.estimated_cost_usd": "0.000803", "costroute.cost_usd": None,
                            "costroute.budget_refused": False},
    "402_budget_exhausted": {"http.response.status_code": 402, "error.type": "budget_exhausted",
                             "costroute.budget_refused": True, "costroute.caller": "team-b"},
    "404": {"http.response.status_code": 404, "error.type": "not_found_error", "gen_ai.request.model": "no-such-model",
            "gen_ai.response.model": None},
    "413": {"http.response.status_code": 413, "error.type": "request_too_large"},
    "422": {"http.response.status_code": 422, "error.type": "quality_unmet"},
    "502": {"http.response.status_code": 502, "error.type": "upstream_error", "costroute.provider_ms": 120.0,
            "costroute.attempts": [{"model": "mock:advanced", "provider": "mock", "outcome": "upstream", "status": 500,
                                    "duration_ms": 120.0}]},
    "503": {"http.response.status_code": 503, "error.type": "no_model_available"},
    "504": {"http.response.status_code": 504, "error.type": "deadline_exceeded", "costroute.failovers": 1,
            "gen_ai.request.model": "auto"},
    "stream_error": {"http.response.status_code": 200, "error.type": "upstream_error", "costroute.stream": True},
    "other_405": {"costroute.dialect": "other", "gen_ai.operation.name": None, "gen_ai.request.model": None,
                  "error.type": "method_not_allowed", "http.request.method": "GET"},
}

# The field names of the module docstring's table.
DOCUMENTED = set(re.findall(r"^``([a-z_.]+)``", logline.__doc__ or "", flags=re.MULTILINE))
ALWAYS = {"event.name", "timestamp", "costroute.request_id", "costroute.dialect", "http.request.method", "url.path",
          "http.response.status_code", "costroute.stream", "costroute.dry_run", "costroute.attempts",
          "costroute.failovers", "gen_ai.usage.input_tokens", "gen_ai.usage.cache_read.input_tokens",
          "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.output_tokens", "costroute.usage_reported",
          "costroute.ceiling_applied", "costroute.over_budget", "costroute.budget_refused",
          "costroute.router_overhead_ms", "costroute.provider_ms"}
AMOUNTS = ("costroute.cost_usd", "costroute.estimated_cost_usd", "costroute.over_budget_usd")


def test_every_path_has_its_expectations() -> None:
    assert set(SCENARIOS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_log_fields_say_what_the_record_says(name: str) -> None:
    fields = log_fields(SCENARIOS[name])
    for field, expected in EXPECTED[name].items():
        assert fields.get(field) == expected, field
        if expected is None:
            assert field not in fields  # a fact that does not apply is left out, not null


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_fields_are_the_documented_ones_with_exact_amount_strings(name: str) -> None:
    fields = log_fields(SCENARIOS[name])
    assert set(fields) <= DOCUMENTED
    assert set(fields) >= ALWAYS
    assert None not in fields.values()
    for amount in AMOUNTS:
        if amount in fields:
            text = fields[amount]
            assert isinstance(text, str) and re.fullmatch(r"\d+(\.\d*[1-9])?", text), text
            assert Decimal(text) == getattr(SCENARIOS[name], amount.removeprefix("costroute."))


def test_the_docstring_table_is_read() -> None:
    assert len(DOCUMENTED) >= 30
    assert {"gen_ai.provider.name", "costroute.cost_usd", "error.type"} <= DOCUMENTED


@pytest.mark.parametrize(("amount", "text"), [
    (Decimal("0.000113"), "0.000113"),
    (Decimal("1E-7"), "0.0000001"),
    (Decimal("0.0001130"), "0.000113"),
    (Decimal("12.50"), "12.5"),
    (Decimal("1E+2"), "100"),
    (Decimal("0"), "0"),
    (Decimal("0E-12"), "0"),
    (Decimal("2.5E-8"), "0.000000025"),
    # More digits than the default context's 28: normalize() alone would round it.
    (Decimal("0.12345678901234567890123456789012"), "0.12345678901234567890123456789012"),
])
def test_decimal_text_is_exact_and_plain(amount: Decimal, text: str) -> None:
    assert decimal_text(amount) == text
    assert Decimal(text) == amount


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_json_line_is_one_compact_line_of_the_fields(name: str) -> None:
    line = json_line(SCENARIOS[name])
    assert "\n" not in line and len(line.splitlines()) == 1
    assert json.loads(line) == log_fields(SCENARIOS[name])
    assert line == json.dumps(json.loads(line), separators=(",", ":"))  # compact
    assert line.isascii()


def test_json_line_keys_in_the_table_order() -> None:
    keys = list(json.loads(json_line(SCENARIOS["routed"])))
    assert keys[:3] == ["event.name", "timestamp", "costroute.request_id"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_readable_line_is_one_line(name: str) -> None:
    line = readable_line(SCENARIOS[name])
    assert len(line.splitlines()) == 1 and "\n" not in line
    assert line.startswith(f"{SCENARIOS[name].method} {SCENARIOS[name].path} {SCENARIOS[name].http_status}")
    assert line.endswith(f"req={SCENARIOS[name].request_id}")


def test_readable_line_of_a_routed_request() -> None:
    assert readable_line(SCENARIOS["routed"]) == (
        "POST /route 200 mock:advanced rung 1 $0.000113 (est $0.000803) 14+13 tok 0.3 ms router, 500 ms provider, "
        "1 attempt req=ab12cd34-0000-4000-8000-000000000001")


def test_readable_line_shows_errors_failovers_and_flags() -> None:
    assert "POST /v1/chat/completions 504 deadline_exceeded anthropic:claude-haiku" in readable_line(SCENARIOS["504"])
    assert "2 attempts: bedrock:nova-micro timeout > anthropic:claude-haiku timeout 504" in readable_line(SCENARIOS["504"])
    assert "2 attempts: bedrock:nova-micro timeout > anthropic:claude-haiku ok 200" in readable_line(SCENARIOS["failover"])
    stream = readable_line(SCENARIOS["stream"])
    assert "stream" in stream and "$0.0000001 (est $0.0000003)" in stream
    assert "ceiling over-budget +$0.000000025" in stream and "caller=team-a" in stream
    assert "budget-refused" in readable_line(SCENARIOS["402_budget_exhausted"])
    assert "120 ms provider, 1 attempt: mock:advanced upstream 500 req=" in readable_line(SCENARIOS["502"])
    assert "no call" in readable_line(SCENARIOS["400"]) and "$" not in readable_line(SCENARIOS["400"])
    assert "dry-run" in readable_line(SCENARIOS["dry_run"]) and "(est $0.000803)" in readable_line(SCENARIOS["dry_run"])
    assert "(1024 cached)" in readable_line(SCENARIOS["pinned"])
    assert "(asked no-such-model)" in readable_line(SCENARIOS["404"])
    assert "asked" not in readable_line(SCENARIOS["pinned"])  # the bare name of the id that served
    assert "(asked openai-main:gpt-4o)" in readable_line(record(requested_model="openai-main:gpt-4o"))
    assert "worst case" in readable_line(record(usage_reported=False))


@pytest.mark.parametrize("timestamp", [float("nan"), float("inf"), 1e300])
def test_an_impossible_timestamp_does_not_raise(timestamp: float) -> None:
    assert json.loads(json_line(record(timestamp=timestamp)))["timestamp"] == str(timestamp)


def test_an_error_status_without_a_type_gets_the_status_as_its_type() -> None:
    fields = log_fields(refused(500, None))
    assert fields["error.type"] == "500"
    assert "error.type" not in log_fields(record())


def test_client_strings_cannot_break_or_bloat_a_line() -> None:
    hostile = record(dialect="chat", requested_model="x\ny\r\u2028z" + "m" * 100_000, path="/v1/chat/completions\n200 fake",
                     caller="c\tc")
    line = readable_line(hostile)
    assert len(line.splitlines()) == 1 and len(line) < 600
    assert "\\n" in line and "\\u2028" in line
    text = json_line(hostile)
    assert len(text.splitlines()) == 1 and len(text) < 2000
    assert len(log_fields(hostile)["gen_ai.request.model"]) == logline.MAX_TEXT


# ---------------------------------------------------------------------------------------------
# No prompt text, no key

MARKED = RequestRecord(
    request_id="MRK-request-id", timestamp=T0, dialect="chat", method="MRKMETHOD", path="/MRK-path",
    http_status=502, error_type="MRK-error", caller="MRK-caller", requested_model="MRK-requested",
    model="MRK-model", provider="MRK-provider", provider_kind="MRK-kind", upstream_model="MRK-upstream",
    attempts=(AttemptRecord("MRK-attempt-model", "MRK-attempt-provider", "MRK-outcome", 500, 1.0),),
)
# Where each marker may appear (paths: field names, attempts as costroute.attempts[].<key>).
ALLOWED_AT = {
    "MRK-request-id": {"costroute.request_id"},
    "MRKMETHOD": {"http.request.method"},
    "MRK-path": {"url.path"},
    "MRK-error": {"error.type", "ErrorType"},
    "MRK-caller": {"costroute.caller"},
    "MRK-requested": {"gen_ai.request.model"},
    "MRK-model": {"gen_ai.response.model", "Model"},
    "MRK-provider": {"costroute.provider", "Provider"},
    "MRK-kind": {"gen_ai.provider.name"},
    "MRK-upstream": {"costroute.upstream_model"},
    "MRK-attempt-model": {"costroute.attempts[].model"},
    "MRK-attempt-provider": {"costroute.attempts[].provider"},
    "MRK-outcome": {"costroute.attempts[].outcome"},
}
FORBIDDEN_NAME = re.compile(r"content|prompt|messages|text|api_?key|secret|authorization|password|answer", re.IGNORECASE)


def strings_by_path(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a JSON-like value, with where it sits."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from strings_by_path(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for item in value:
            yield from strings_by_path(item, f"{path}[]")
    elif isinstance(value, str):
        yield path, value


def keys_of(value: Any) -> Iterator[str]:
    """Every key of a JSON-like value, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from keys_of(item)
    elif isinstance(value, list):
        for item in value:
            yield from keys_of(item)


def assert_markers_only_where_meant(document: dict[str, Any]) -> None:
    """No field is named like text or a key, each marker of MARKED sits only where meant, and each one is there."""
    forbidden = [key for key in keys_of(document) if FORBIDDEN_NAME.search(key)]
    assert not forbidden, f"forbidden field names {forbidden}"
    seen: set[str] = set()
    for path, text in strings_by_path(document):
        for marker, allowed in ALLOWED_AT.items():
            if marker in text:
                assert path in allowed, f"{marker} at {path}"
                seen.add(marker)
    assert seen == set(ALLOWED_AT), f"markers missing: {set(ALLOWED_AT) - seen}"


def test_no_marker_contains_another() -> None:
    assert not [(a, b) for a in ALLOWED_AT for b in ALLOWED_AT if a != b and a in b]


def test_markers_appear_only_in_their_fields_of_the_log_line() -> None:
    fields = json.loads(json_line(MARKED))
    assert_markers_only_where_meant(fields)
    assert {path for path, text in strings_by_path(fields) if "MRK" in text} == {
        p for paths in ALLOWED_AT.values() for p in paths if p not in ("ErrorType", "Model", "Provider")}


def test_markers_stay_in_their_place_in_the_readable_line() -> None:
    line = readable_line(MARKED)
    for marker in ALLOWED_AT:
        assert line.count(marker) <= 1, marker


def test_the_record_holds_no_text_and_no_key() -> None:
    for cls in (RequestRecord, AttemptRecord):
        names = list(cls._fields)
        assert names and not [name for name in names if FORBIDDEN_NAME.search(name)], cls


def test_the_marker_check_is_not_vacuous() -> None:
    fields = json.loads(json_line(MARKED))
    with pytest.raises(AssertionError, match="forbidden field names"):
        assert_markers_only_where_meant({**fields, "gen_ai.prompt": "hi"})
    with pytest.raises(AssertionError, match="forbidden field names"):
        assert_markers_only_where_meant({**fields, "costroute.attempts": [{"messages": []}]})
    with pytest.raises(AssertionError, match="MRK-caller at url.path"):
        assert_markers_only_where_meant({**fields, "url.path": "/x?MRK-caller"})
    with pytest.raises(AssertionError, match="markers missing"):
        assert_markers_only_where_meant({k: v for k, v in fields.items() if k != "costroute.caller"})


# ---------------------------------------------------------------------------------------------
# The line observers


@pytest.fixture
def request_logger() -> Iterator[logging.Logger]:
    """The request logger as no app configured it, restored afterwards."""
    logger = logging.getLogger(REQUEST_LOGGER)
    parent = logging.getLogger("costroute")
    saved = (list(logger.handlers), logger.level, logger.propagate, parent.level)
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    parent.setLevel(logging.NOTSET)
    yield logger
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
    parent.setLevel(saved[3])


def test_readable_lines_reach_stdout_without_any_logging_setup(request_logger: logging.Logger,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    LogLineObserver("readable").observe(SCENARIOS["routed"])
    out = capsys.readouterr().out
    assert out == readable_line(SCENARIOS["routed"]) + "\n"


def test_json_lines_parse_and_are_not_doubled(request_logger: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger().addHandler(root := logging.StreamHandler(io.StringIO()))
    try:
        first, second = LogLineObserver("json"), LogLineObserver("json")
        first.observe(SCENARIOS["failover"])
        second.observe(SCENARIOS["504"])
    finally:
        logging.getLogger().removeHandler(root)
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["costroute.request_id"] for line in lines] == [SCENARIOS["failover"].request_id,
                                                                           SCENARIOS["504"].request_id]
    assert len(request_logger.handlers) == 1 and request_logger.propagate is False
    assert isinstance(root.stream, io.StringIO) and root.stream.getvalue() == ""


def test_a_level_the_app_chose_silences_the_lines(request_logger: logging.Logger,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    observer = LogLineObserver("readable")
    logging.getLogger("costroute").setLevel(logging.WARNING)
    observer.observe(SCENARIOS["routed"])
    assert capsys.readouterr().out == ""
    logging.getLogger("costroute").setLevel(logging.INFO)
    observer.observe(SCENARIOS["routed"])
    assert capsys.readouterr().out.count("\n") == 1


def test_a_configured_handler_is_kept(request_logger: logging.Logger) -> None:
    stream = io.StringIO()
    request_logger.addHandler(handler := logging.StreamHandler(stream))
    request_logger.setLevel(logging.INFO)
    LogLineObserver("json").observe(SCENARIOS["routed"])
    assert request_logger.handlers == [handler] and request_logger.propagate is True
    assert json.loads(stream.getvalue())["costroute.cost_usd"] == "0.000113"


def test_an_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError, match="style"):
        LogLineObserver("yaml")  # type: ignore[arg-type]


class Recorder:
    """An observer that keeps what it saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def observe(self, record: RequestRecord) -> None:
        self.seen.append(record.request_id)


class Broken:
    """An observer with a bug."""

    def observe(self, record: RequestRecord) -> None:
        raise ZeroDivisionError("a metrics bug")


def test_one_failing_observer_stops_neither_the_others_nor_the_request(caplog: pytest.LogCaptureFixture) -> None:
    before, after = Recorder(), Recorder()
    composite = CompositeObserver([before, Broken(), after])
    with caplog.at_level(logging.WARNING, logger="costroute.observe"):
        composite.observe(SCENARIOS["routed"])
        composite.observe(SCENARIOS["504"])
    assert before.seen == after.seen == [SCENARIOS["routed"].request_id, SCENARIOS["504"].request_id]
    warnings = [r for r in caplog.records if r.name == "costroute.observe"]
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
    assert warnings[0].exc_info is not None and "Broken" in warnings[0].getMessage()
    assert warnings[1].exc_info is None and "2 times so far" in warnings[1].getMessage()


def test_a_composite_lets_interrupts_through() -> None:
    class Interrupted:
        def observe(self, record: RequestRecord) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        CompositeObserver([Interrupted()]).observe(SCENARIOS["routed"])
