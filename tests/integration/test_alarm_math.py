"""The alarms of template.yaml, fired in a test of their math.

Each alarm is read from the template itself (rendered for given parameter values, so a changed
expression, query, statistic, period, threshold or missing-data rule changes what these tests see)
and evaluated the way CloudWatch evaluates it: every metric's raw samples are reduced per period by
the alarm's statistic, the metric math expression is computed datapoint by datapoint, and the
last EvaluationPeriods datapoints are compared with the threshold, DatapointsToAlarm of them
breaching putting the alarm in ALARM, missing ones counted as TreatMissingData says.

The expression evaluator covers the subset of CloudWatch metric math this project uses or may:
numbers, metric ids, + - * /, comparisons, AND / OR, parentheses, IF, FILL, ABS and MAX / MIN /
SUM / AVG (of an array ``[a, b]``: datapoint by datapoint; of one series: one value over time).

A Metrics Insights query (an Expression that starts with SELECT, with a Period of its own and no
MetricStat) is evaluated for exactly the subset the template uses, ``SELECT AVG|SUM|MAX|MIN|COUNT(m)
FROM SCHEMA(namespace, dimension...) [GROUP BY dimension] [ORDER BY FUNC() [DESC|ASC]] [LIMIT n]``,
as CloudWatch's query-language reference describes it: SCHEMA matches only the metrics with exactly
those dimension names; the SELECT function aggregates, per period, every sample of the metrics of a
group (one group per value of the GROUP BY dimension, in ascending order of that value; one group
without GROUP BY); ORDER BY ranks the series by one scalar, its function of each series' datapoints
over the query's whole time range (ascending unless DESC); LIMIT keeps the first n. Anything else
raises NotImplementedError. Its samples are keyed by the dimensions too (``dimensioned``).

The alarm is assumed to query its evaluation range only, the last EvaluationPeriods periods: that is
the time range over which ORDER BY ranks the series (CloudWatch does not document an alarm's
query range; with metric math, datapoint by datapoint, the range changes nothing).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pytest

from costroute.observe.emf import NAMESPACE, PROVIDER_FAILURE_METRIC, emf_documents
from costroute.observe.record import AttemptRecord, RequestRecord
from tests.integration.test_template import ParameterRejected, Rendered, load_template, metrics_insights

Datapoint = float | None  # None: no datapoint in that period
Series = list[Datapoint]
Dimensions = tuple[tuple[str, str], ...]  # (name, value) pairs, sorted by name
# Raw samples per period, keyed (namespace, metric) for a MetricStat (which names its dimensions itself), or
# (namespace, metric, dimensions) for a Metrics Insights query (which matches metrics by their dimensions).
Samples = Mapping[tuple, Sequence[Sequence[float]]]

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": lambda value, threshold: value > threshold,
    "GreaterThanOrEqualToThreshold": lambda value, threshold: value >= threshold,
    "LessThanThreshold": lambda value, threshold: value < threshold,
    "LessThanOrEqualToThreshold": lambda value, threshold: value <= threshold,
}
ALARMS = ("ErrorRateAlarm", "HourlySpendAlarm", "FailoverRateAlarm", "ProviderFailureAlarm")
API_GATEWAY = "AWS/ApiGateway"
APP = NAMESPACE


# --------------------------------------------------------------------------- statistics


def statistic(name: str, samples: Sequence[float]) -> Datapoint:
    """One period's datapoint from its raw samples; none without samples."""
    if not samples:
        return None
    if name == "Sum":
        return math.fsum(samples)
    if name == "SampleCount":
        return float(len(samples))
    if name == "Average":
        return math.fsum(samples) / len(samples)
    if name == "Minimum":
        return min(samples)
    if name == "Maximum":
        return max(samples)
    match = re.fullmatch(r"p(\d+(?:\.\d+)?)", name)
    if match:  # nearest-rank percentile
        ordered = sorted(samples)
        rank = max(1, math.ceil(float(match.group(1)) / 100 * len(ordered)))
        return ordered[rank - 1]
    raise NotImplementedError(name)


# --------------------------------------------------------------------------- metric math


class Scalar(float):
    """A number in an expression (applies to every datapoint)."""


@dataclass(frozen=True)
class Array:
    """``[a, b, ...]``: several series, aggregated datapoint by datapoint by MAX, MIN, SUM, AVG."""

    members: tuple[Any, ...]


TOKEN = re.compile(r"\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_]\w*)|(?P<op>>=|<=|==|!=|[-+*/()<>\[\],]))")


def tokenize(text: str) -> list[str]:
    """The expression's tokens."""
    tokens, position = [], 0
    while position < len(text):
        match = TOKEN.match(text, position)
        if match is None or match.end() == position:
            if text[position:].strip() == "":
                break
            raise SyntaxError(f"unexpected {text[position:]!r} in {text!r}")
        tokens.append(match.group(match.lastgroup or ""))
        position = match.end()
    return tokens


class Evaluator:
    """Evaluates one metric math expression over series of the same length."""

    def __init__(self, series: Mapping[str, Series], length: int) -> None:
        """Over these series (by id), each ``length`` datapoints long."""
        self.series = series
        self.length = length
        self.tokens: list[str] = []
        self.position = 0

    def evaluate(self, expression: str) -> Series:
        """The expression's value at every datapoint."""
        self.tokens, self.position = tokenize(expression), 0
        value = self._or()
        if self.position != len(self.tokens):
            raise SyntaxError(f"unexpected {self.tokens[self.position]!r} in {expression!r}")
        return self._as_series(value)

    # ---- parsing, lowest precedence first

    def _peek(self) -> str | None:
        """The next token, not consumed."""
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        """The next token, consumed; it must be ``expected`` when given."""
        token = self._peek()
        if token is None or (expected is not None and token != expected):
            raise SyntaxError(f"expected {expected or 'more'}, got {token!r}")
        self.position += 1
        return token

    def _or(self) -> Any:
        """a OR b (lowest precedence)."""
        value = self._and()
        while self._peek() == "OR":
            self._take()
            value = self._combine(value, self._and(), lambda a, b: float(bool(a) or bool(b)))
        return value

    def _and(self) -> Any:
        """a AND b."""
        value = self._comparison()
        while self._peek() == "AND":
            self._take()
            value = self._combine(value, self._comparison(), lambda a, b: float(bool(a) and bool(b)))
        return value

    def _comparison(self) -> Any:
        """a > b and the other comparisons: 1 or 0 per datapoint."""
        value = self._sum()
        operators: dict[str, Callable[[float, float], bool]] = {
            ">": lambda a, b: a > b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
            "<=": lambda a, b: a <= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
        }
        token = self._peek()
        if token in operators:
            self._take()
            compare = operators[token]
            value = self._combine(value, self._sum(), lambda a, b: float(compare(a, b)))
        return value

    def _sum(self) -> Any:
        """a + b, a - b."""
        value = self._product()
        while self._peek() in ("+", "-"):
            if self._take() == "+":
                value = self._combine(value, self._product(), lambda a, b: a + b)
            else:
                value = self._combine(value, self._product(), lambda a, b: a - b)
        return value

    def _product(self) -> Any:
        """a * b, a / b."""
        value = self._unary()
        while self._peek() in ("*", "/"):
            if self._take() == "*":
                value = self._combine(value, self._unary(), lambda a, b: a * b)
            else:
                # Division by zero gives no datapoint.
                value = self._combine(value, self._unary(), lambda a, b: None if b == 0 else a / b)
        return value

    def _unary(self) -> Any:
        """-a."""
        if self._peek() == "-":
            self._take()
            return self._combine(Scalar(0), self._unary(), lambda a, b: a - b)
        return self._primary()

    def _primary(self) -> Any:
        """A number, an id, a function call, (expression) or [array]."""
        token = self._take()
        if token == "(":
            value = self._or()
            self._take(")")
            return value
        if token == "[":
            members = [self._or()]
            while self._peek() == ",":
                self._take()
                members.append(self._or())
            self._take("]")
            return Array(tuple(members))
        if re.fullmatch(r"\d+(?:\.\d+)?", token):
            return Scalar(float(token))
        if self._peek() == "(":
            self._take("(")
            arguments = []
            if self._peek() != ")":
                arguments.append(self._or())
                while self._peek() == ",":
                    self._take()
                    arguments.append(self._or())
            self._take(")")
            return self._call(token, arguments)
        if token not in self.series:
            raise NameError(f"no metric or expression with id {token!r}")
        return list(self.series[token])

    # ---- values

    def _as_series(self, value: Any) -> Series:
        """A value as one series (a number applies to every datapoint)."""
        if isinstance(value, Scalar):
            return [float(value)] * self.length
        if isinstance(value, Array):
            raise TypeError("an alarm's expression must return one time series, not an array")
        return value

    def _combine(self, left: Any, right: Any, operation: Callable[[float, float], Any]) -> Any:
        """A binary operation datapoint by datapoint; a gap on either side is a gap."""
        if isinstance(left, Scalar) and isinstance(right, Scalar):
            result = operation(left, right)
            return Scalar(result) if result is not None else None
        lhs, rhs = self._as_series(left), self._as_series(right)
        return [None if a is None or b is None else operation(a, b) for a, b in zip(lhs, rhs, strict=True)]

    def _call(self, name: str, arguments: list[Any]) -> Any:
        """A metric math function."""
        if name == "IF":
            condition, when_true = self._as_series(arguments[0]), self._as_series(arguments[1])
            when_false = self._as_series(arguments[2]) if len(arguments) > 2 else [None] * self.length
            return [None if c is None else (t if c != 0 else f) for c, t, f in zip(condition, when_true, when_false,
                                                                                   strict=True)]
        if name == "FILL":
            series, (fill,) = self._as_series(arguments[0]), arguments[1:]
            assert isinstance(fill, Scalar), "only FILL(series, number) is implemented"
            return [float(fill) if value is None else value for value in series]
        if name == "ABS":
            return [None if value is None else abs(value) for value in self._as_series(arguments[0])]
        aggregates: dict[str, Callable[[list[float]], float]] = {
            "MAX": max, "MIN": min, "SUM": math.fsum, "AVG": lambda values: math.fsum(values) / len(values)}
        if name in aggregates:
            (argument,) = arguments
            aggregate = aggregates[name]
            if isinstance(argument, Array):  # datapoint by datapoint over the members
                members = [self._as_series(member) for member in argument.members]
                points = []
                for values in zip(*members, strict=True):
                    present = [v for v in values if v is not None]
                    points.append(aggregate(present) if present else None)
                return points
            present = [v for v in self._as_series(argument) if v is not None]  # one value over the whole range
            return Scalar(aggregate(present)) if present else [None] * self.length
        raise NotImplementedError(f"metric math function {name}")


# --------------------------------------------------------------------------- Metrics Insights

# The functions of SELECT (over a period's samples) and of ORDER BY (over a series' datapoints).
INSIGHTS_FUNCTIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "AVG": lambda values: math.fsum(values) / len(values),
    "SUM": math.fsum,
    "MAX": max,
    "MIN": min,
    "COUNT": lambda values: float(len(values)),
}


def dimensioned(namespace: str, metric: str, **dimensions: str) -> tuple[str, str, Dimensions]:
    """The samples key of a metric with these dimensions (what a Metrics Insights query matches)."""
    return namespace, metric, tuple(sorted(dimensions.items()))


def is_insights(query: Mapping[str, Any]) -> bool:
    """Whether a MetricDataQuery is a Metrics Insights query (its Expression is SQL-like, not metric math)."""
    return "Expression" in query and metrics_insights(query["Expression"]) is not None


def insights_series(expression: str, samples: Samples, length: int) -> list[tuple[str | None, Series]]:
    """The time series a Metrics Insights query returns over the samples (``length`` periods), in its order,
    each with its label (the GROUP BY dimension's value; None without GROUP BY)."""
    query = metrics_insights(expression)
    if query is None:
        raise NotImplementedError(f"not a Metrics Insights query: {expression!r}")
    schema = frozenset(query["dimensions"])
    group = query["group"]
    if group is not None and group not in schema:
        raise NotImplementedError(f"GROUP BY {group}, outside SCHEMA's dimensions (CloudWatch's 'Other' group)")
    members: dict[str | None, list[Sequence[Sequence[float]]]] = {}
    for key, periods in samples.items():
        namespace, metric, *rest = key
        if (namespace, metric) != (query["namespace"], query["metric"]):
            continue
        if not rest:
            raise ValueError(f"{key}: a Metrics Insights query matches by dimensions; key the samples with dimensioned()")
        dimensions = dict(rest[0])
        if frozenset(dimensions) != schema:  # SCHEMA: exactly these dimension names, no more, no fewer
            continue
        members.setdefault(dimensions[group] if group is not None else None, []).append(periods)
    aggregate = INSIGHTS_FUNCTIONS[query["function"]]
    returned: list[tuple[str | None, Series]] = []
    for label in sorted(members, key=lambda value: value or ""):  # GROUP BY's order: the label, ascending
        series: Series = []
        for index in range(length):
            observed = [value for periods in members[label] for value in periods[index]]
            series.append(aggregate(observed) if observed else None)
        if any(point is not None for point in series):  # a metric without data in the range returns no series
            returned.append((label, series))
    if query["order"] is not None:
        rank = INSIGHTS_FUNCTIONS[query["order"]]
        returned.sort(key=lambda item: rank([p for p in item[1] if p is not None]), reverse=query["descending"])
    if query["limit"] is not None:
        returned = returned[:query["limit"]]
    return returned


# --------------------------------------------------------------------------- alarms


@dataclass(frozen=True)
class Alarm:
    """An alarm as the template defines it, ready to evaluate."""

    name: str
    queries: tuple[dict, ...]  # MetricDataQuery shapes; a plain metric alarm becomes one query "m"
    comparison: str
    threshold: float
    evaluation_periods: int
    datapoints_to_alarm: int
    treat_missing_data: str

    @property
    def result_query(self) -> dict:
        """The one query whose data the alarm compares (ReturnData true)."""
        (query,) = [q for q in self.queries if q.get("ReturnData", True)]
        return query

    @property
    def period(self) -> int:
        """The period of the alarm's metrics (they must share one): a MetricStat's, or a Metrics Insights query's own."""
        periods = {int(q["MetricStat"]["Period"]) for q in self.queries if "MetricStat" in q}
        periods |= {int(q["Period"]) for q in self.queries if is_insights(q)}
        (period,) = periods
        return period

    def datapoints(self, samples: Samples) -> Series:
        """The series the alarm compares with its threshold, one datapoint per period of the samples."""
        lengths = {len(periods) for periods in samples.values()}
        assert len(lengths) == 1, "every metric needs the same number of periods"
        length = lengths.pop()
        assert length >= self.evaluation_periods
        series: dict[str, Series] = {}
        for query in self.queries:
            if "MetricStat" in query:
                stat = query["MetricStat"]
                metric = stat["Metric"]
                raw = samples.get((metric["Namespace"], metric["MetricName"]), [[]] * length)
                series[query["Id"]] = [statistic(stat["Stat"], period) for period in raw]
            elif is_insights(query):
                returned = insights_series(query["Expression"], samples, length)
                if len(returned) > 1:
                    raise TypeError(f"{query['Id']} returns {len(returned)} time series; this alarm compares one")
                series[query["Id"]] = returned[0][1] if returned else [None] * length
        evaluator = Evaluator(series, length)
        for query in self.queries:  # expressions may name earlier expressions
            if "Expression" in query and not is_insights(query):
                series[query["Id"]] = evaluator.evaluate(query["Expression"])
        return series[self.result_query["Id"]]

    def state(self, samples: Samples) -> str:
        """ALARM or OK after the last period of the samples (each metric's list holds one entry per period)."""
        # The alarm queries its evaluation range: the last EvaluationPeriods periods (see the module's docstring).
        recent = {key: list(periods)[-self.evaluation_periods:] for key, periods in samples.items()}
        window = self.datapoints(recent)
        compare = COMPARISONS[self.comparison]
        if self.treat_missing_data == "notBreaching":
            breaching = sum(1 for value in window if value is not None and compare(value, self.threshold))
        elif self.treat_missing_data == "breaching":
            breaching = sum(1 for value in window if value is None or compare(value, self.threshold))
        else:
            raise NotImplementedError(f"TreatMissingData {self.treat_missing_data}")
        return "ALARM" if breaching >= self.datapoints_to_alarm else "OK"


def read_alarm(stack: Rendered, logical_id: str) -> Alarm:
    """The alarm as rendered for the stack's parameter values."""
    resource = stack.resource(logical_id)
    assert resource is not None and resource["Type"] == "AWS::CloudWatch::Alarm"
    props = resource["Properties"]
    if "Metrics" in props:
        assert not {"MetricName", "Namespace", "Statistic"} & set(props), "metric math alarms name no single metric"
        queries = tuple(props["Metrics"])
    else:
        queries = ({"Id": "m", "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": props["Namespace"], "MetricName": props["MetricName"],
                       "Dimensions": props.get("Dimensions", [])},
            "Period": props["Period"], "Stat": props["Statistic"]}},)
    evaluation_periods = int(props["EvaluationPeriods"])
    return Alarm(
        name=props["AlarmName"],
        queries=queries,
        comparison=props["ComparisonOperator"],
        threshold=float(props["Threshold"]),
        evaluation_periods=evaluation_periods,
        datapoints_to_alarm=int(props.get("DatapointsToAlarm", evaluation_periods)),
        treat_missing_data=props.get("TreatMissingData", "missing"),
    )


@pytest.fixture(scope="module")
def template() -> dict:
    """template.yaml, loaded once."""
    return load_template()


def alarm(template: dict, logical_id: str, **overrides: str) -> Alarm:
    """One alarm of the template, for these parameter values."""
    return read_alarm(Rendered(template, **overrides), logical_id)


def requests_with(count: int, flagged: int) -> list[float]:
    """One period's per-request samples of a 0/1 metric: ``flagged`` ones among ``count``."""
    return [1.0] * flagged + [0.0] * (count - flagged)


def periods(n: int, each: list[float]) -> list[list[float]]:
    """The same samples in each of n periods."""
    return [list(each) for _ in range(n)]


# --------------------------------------------------------------------------- the evaluator itself


def test_evaluator_follows_cloudwatch_metric_math() -> None:
    evaluator = Evaluator({"a": [1.0, None, 6.0], "b": [0.0, 2.0, 3.0]}, 3)
    assert evaluator.evaluate("100 * a / b") == [None, None, 200.0]  # division by zero and a gap: no datapoint
    assert evaluator.evaluate("a / MAX([b, 1])") == [1.0, None, 2.0]  # MAX of an array: datapoint by datapoint
    assert evaluator.evaluate("MAX(b)") == [3.0, 3.0, 3.0]  # MAX of one series: one value over the range
    assert evaluator.evaluate("IF(b > 0, a, 0)") == [0.0, None, 6.0]
    assert evaluator.evaluate("FILL(a, 0) + b") == [1.0, 2.0, 9.0]
    assert evaluator.evaluate("SUM([a, b])") == [1.0, 2.0, 9.0]
    assert evaluator.evaluate("-a + 2 * (b - 1)") == [-3.0, None, -2.0]
    assert evaluator.evaluate("a > 0 AND b > 0") == [0.0, None, 1.0]
    with pytest.raises(NameError):
        evaluator.evaluate("c + 1")
    with pytest.raises(SyntaxError):
        evaluator.evaluate("a +")
    assert statistic("p99", [float(v) for v in range(1, 101)]) == 99.0
    assert statistic("SampleCount", [5.0, 7.0]) == 2.0
    assert statistic("Sum", []) is None


def test_insights_evaluator_follows_the_metrics_insights_reference() -> None:
    samples = {
        dimensioned(APP, "M", Provider="b"): [[0.0, 100.0], [100.0], []],
        dimensioned(APP, "M", Provider="a"): [[0.0, 0.0, 0.0, 100.0], [], [0.0]],
        dimensioned(APP, "M", Provider="c"): [[], [], []],  # no data in the range: no series
        dimensioned(APP, "M", Model="x"): [[100.0], [100.0], [100.0]],  # another dimension set
        dimensioned(APP, "M", Model="x", Provider="a"): [[100.0], [100.0], [100.0]],  # a superset of it
        dimensioned(APP, "M"): [[100.0], [100.0], [100.0]],  # no dimensions
        dimensioned("Other", "M", Provider="a"): [[100.0], [100.0], [100.0]],  # another namespace
        dimensioned(APP, "N", Provider="a"): [[100.0], [100.0], [100.0]],  # another metric
    }

    def run(query: str) -> list[tuple[str | None, Series]]:
        return insights_series(query, samples, 3)

    schema = "FROM SCHEMA(Costroute, Provider)"
    # One series per provider, in the order of its name; only exactly [Provider] is matched.
    assert run(f"SELECT AVG(M) {schema} GROUP BY Provider") == [("a", [25.0, None, 0.0]), ("b", [50.0, 100.0, None])]
    # Without GROUP BY, one series of every matched sample (pooled, not an average of averages).
    assert run(f"SELECT AVG(M) {schema}") == [(None, [200 / 6, 100.0, 0.0])]
    assert run(f"SELECT COUNT(M) {schema}") == [(None, [6.0, 1.0, 1.0])]
    assert run(f"SELECT SUM(M) {schema} GROUP BY Provider") == [("a", [100.0, None, 0.0]), ("b", [100.0, 100.0, None])]
    assert run(f"SELECT MAX(M) {schema} GROUP BY Provider")[0] == ("a", [100.0, None, 0.0])
    assert run(f"SELECT MIN(M) {schema} GROUP BY Provider")[1] == ("b", [0.0, 100.0, None])
    assert run("SELECT AVG(M) FROM SCHEMA(Costroute, Model)") == [(None, [100.0, 100.0, 100.0])]
    assert run('select avg(M) from schema("Costroute", Provider, Model)') == [(None, [100.0, 100.0, 100.0])]
    # ORDER BY: one scalar per series over the whole range (a: AVG(25, 0) = 12.5; b: AVG(50, 100) = 75), ASC by default.
    assert [label for label, _ in run(f"SELECT AVG(M) {schema} GROUP BY Provider ORDER BY AVG() DESC")] == ["b", "a"]
    assert [label for label, _ in run(f"SELECT AVG(M) {schema} GROUP BY Provider ORDER BY AVG()")] == ["a", "b"]
    assert [label for label, _ in run(f"SELECT AVG(M) {schema} GROUP BY Provider ORDER BY COUNT() ASC")] == ["a", "b"]
    assert run(f"SELECT AVG(M) {schema} GROUP BY Provider ORDER BY MAX() DESC LIMIT 1") == [("b", [50.0, 100.0, None])]
    assert run(f"SELECT AVG(M) {schema} GROUP BY Provider LIMIT 1") == [("a", [25.0, None, 0.0])]
    assert run("SELECT AVG(Nothing) FROM SCHEMA(Costroute, Provider) GROUP BY Provider") == []
    for unsupported in (
        "SELECT AVG(M) FROM Costroute",  # FROM a namespace: every dimension set at once
        f"SELECT AVG(M) {schema} WHERE Provider = 'a'",
        "SELECT AVG(M) FROM SCHEMA(Costroute, Provider, Model) GROUP BY Provider, Model",
        f"SELECT AVG(M) {schema} GROUP BY Model",  # outside the SCHEMA: the "Other" group
        f"SELECT p99(M) {schema}",
        "100 * a / b",  # metric math
    ):
        with pytest.raises(NotImplementedError):
            run(unsupported)
    with pytest.raises(ValueError):
        insights_series(f"SELECT AVG(M) {schema}", {(APP, "M"): [[1.0]]}, 1)  # samples without their dimensions


# --------------------------------------------------------------------------- the alarms' shapes


@pytest.mark.parametrize("logical_id", ALARMS)
def test_alarm_definitions_are_well_formed(template: dict, logical_id: str) -> None:
    """Ids CloudWatch accepts, one result series, every id an expression uses defined, a period it allows."""
    definition = alarm(template, logical_id)
    ids = [q["Id"] for q in definition.queries]
    assert len(ids) == len(set(ids))
    for query in definition.queries:
        assert re.fullmatch(r"[a-z][A-Za-z0-9_]*", query["Id"]), query["Id"]
        assert ("Expression" in query) != ("MetricStat" in query)
        if is_insights(query):
            # SQL-like, not metric math: it names its metric itself and carries its own period, and it must
            # return one series (GROUP BY needs LIMIT 1), which CloudWatch compares like any other.
            parsed = metrics_insights(query["Expression"])
            assert parsed is not None and "Period" in query, query
            assert parsed["group"] is None or parsed["limit"] == 1, query
            assert parsed["limit"] is None or parsed["order"] is not None, "LIMIT without ORDER BY keeps whichever comes first"
        elif "Expression" in query:
            used = {t for t in tokenize(query["Expression"]) if re.fullmatch(r"[a-z]\w*", t)}
            assert used <= set(ids) - {query["Id"]}, (query["Expression"], ids)
            assert "Period" not in query, "a metric math expression takes its metrics' period"
    assert definition.result_query  # exactly one ReturnData
    assert definition.comparison in COMPARISONS
    assert 1 <= definition.datapoints_to_alarm <= definition.evaluation_periods
    assert definition.period % 60 == 0 and definition.period * definition.evaluation_periods <= 86400
    assert definition.treat_missing_data == "notBreaching"


# --------------------------------------------------------------------------- (a) 5xx rate


def five_xx_samples(requests: list[int], errors: list[int]) -> Samples:
    """API Gateway's samples for periods with these request and 5xx counts (1 per request)."""
    return {
        (API_GATEWAY, "Count"): [[1.0] * n for n in requests],
        (API_GATEWAY, "5XXError"): [requests_with(n, e) for n, e in zip(requests, errors, strict=True)],
    }


def five_xx(definition: Alarm, requests: list[int], errors: list[int]) -> str:
    """The 5xx alarm's state after periods with these request and 5xx counts."""
    return definition.state(five_xx_samples(requests, errors))


def test_error_rate_alarm_compares_the_percentage_of_5xx_responses(template: dict) -> None:
    definition = alarm(template, "ErrorRateAlarm")
    assert definition.datapoints(five_xx_samples([100, 200, 0, 3], [7, 1, 0, 3])) == [7.0, 0.5, None, 100.0]


def test_error_rate_alarm_fires_at_10_percent_against_5(template: dict) -> None:
    definition = alarm(template, "ErrorRateAlarm")
    assert definition.threshold == 5.0  # the default of ErrorRateAlarmPercent
    n = definition.evaluation_periods
    assert five_xx(definition, [100] * n, [10] * n) == "ALARM"


def test_error_rate_alarm_stays_ok_at_4_percent_at_exactly_5_and_without_traffic(template: dict) -> None:
    definition = alarm(template, "ErrorRateAlarm")
    n = definition.evaluation_periods
    assert five_xx(definition, [100] * n, [4] * n) == "OK"
    assert five_xx(definition, [100] * n, [5] * n) == "OK"  # above the threshold, not at it
    assert five_xx(definition, [0] * n, [0] * n) == "OK"  # no requests: no datapoints, not breaching
    assert five_xx(definition, [100] * n, [0] * n) == "OK"


def test_error_rate_alarm_needs_its_datapoints_to_alarm(template: dict) -> None:
    definition = alarm(template, "ErrorRateAlarm")
    n, needed = definition.evaluation_periods, definition.datapoints_to_alarm
    bad, good = [10], [0]
    assert five_xx(definition, [100] * n, good * (n - needed) + bad * needed) == "ALARM"
    assert five_xx(definition, [100] * n, good * (n - needed + 1) + bad * (needed - 1)) == "OK"
    # A burst long gone does not keep it firing: only the last EvaluationPeriods count.
    assert five_xx(definition, [100] * (2 * n), bad * n + good * n) == "OK"
    # One bad period among quiet ones (no traffic) is not enough either.
    assert five_xx(definition, [0] * (n - 1) + [100], [0] * (n - 1) + [50]) == ("ALARM" if needed == 1 else "OK")


def test_error_rate_alarm_follows_its_parameter(template: dict) -> None:
    definition = alarm(template, "ErrorRateAlarm", ErrorRateAlarmPercent="15")
    n = definition.evaluation_periods
    assert five_xx(definition, [100] * n, [10] * n) == "OK"
    assert five_xx(definition, [100] * n, [20] * n) == "ALARM"
    # Small traffic is a rate too: 1 failure in 3 requests is 33%.
    assert five_xx(definition, [3] * n, [1] * n) == "ALARM"


# --------------------------------------------------------------------------- (b) spend per hour


def spend(definition: Alarm, hourly_costs: list[list[float]]) -> str:
    """The spend alarm's state after hours with these per-request costs (the app's CostUSD samples)."""
    return definition.state({(APP, "CostUSD"): hourly_costs})


def test_spend_alarm_fires_at_6_dollars_an_hour_against_5(template: dict) -> None:
    definition = alarm(template, "HourlySpendAlarm")
    assert definition.period == 3600
    assert definition.threshold == 5.0  # the default of HourlySpendAlarmUsd
    n = definition.evaluation_periods
    assert spend(definition, periods(n, [0.10] * 60)) == "ALARM"  # 60 requests of $0.10
    assert spend(definition, periods(n, [0.001] * 6000)) == "ALARM"  # many small ones add up the same
    assert spend(definition, periods(n, [6.0])) == "ALARM"


def test_spend_alarm_compares_the_hours_total_cost(template: dict) -> None:
    definition = alarm(template, "HourlySpendAlarm")
    assert definition.datapoints({(APP, "CostUSD"): [[0.25, 0.5, 1.25], [], [4.0]]}) == [2.0, None, 4.0]


def test_spend_alarm_stays_ok_at_4_dollars_and_without_spend(template: dict) -> None:
    definition = alarm(template, "HourlySpendAlarm")
    n = definition.evaluation_periods
    assert spend(definition, periods(n, [0.10] * 40)) == "OK"
    assert spend(definition, periods(n, [5.0])) == "OK"  # above the threshold, not at it
    assert spend(definition, periods(n, [])) == "OK"  # no cost at all: no datapoint
    # Yesterday's expensive hour does not keep it firing.
    assert spend(definition, [[6.0]] + periods(n, [1.0])) == "OK"


def test_spend_alarm_follows_its_parameter(template: dict) -> None:
    definition = alarm(template, "HourlySpendAlarm", HourlySpendAlarmUsd="10")
    n = definition.evaluation_periods
    assert spend(definition, periods(n, [6.0])) == "OK"
    assert spend(definition, periods(n, [10.5])) == "ALARM"


# --------------------------------------------------------------------------- (c) failovers


def failover_samples(calls: list[int], failed_over: list[int], health_checks: int = 0) -> Samples:
    """The app's samples for periods with this many provider-calling requests, of which ``failed_over`` failed
    over once, plus requests that called no provider (/health: Failovers 0 and no ProviderLatencyMs)."""
    return {
        (APP, "Failovers"): [requests_with(c, f) + [0.0] * health_checks for c, f in zip(calls, failed_over, strict=True)],
        (APP, "ProviderLatencyMs"): [[250.0] * c for c in calls],
        (APP, "Requests"): [[1.0] * (c + health_checks) for c in calls],
    }


def failovers(definition: Alarm, calls: list[int], failed_over: list[int], health_checks: int = 0) -> str:
    """The failover alarm's state after such periods."""
    return definition.state(failover_samples(calls, failed_over, health_checks))


def test_failover_alarm_compares_failovers_per_100_provider_calls(template: dict) -> None:
    definition = alarm(template, "FailoverRateAlarm")
    assert definition.datapoints(failover_samples([100, 40, 0], [7, 10, 0], health_checks=60)) == [7.0, 25.0, None]


def test_failover_alarm_fires_at_20_per_100_against_10(template: dict) -> None:
    definition = alarm(template, "FailoverRateAlarm")
    assert definition.threshold == 10.0  # the default of FailoverRateAlarmPercent
    n = definition.evaluation_periods
    assert failovers(definition, [100] * n, [20] * n) == "ALARM"
    # Health checks and playground loads do not dilute it: they called no provider.
    assert failovers(definition, [100] * n, [20] * n, health_checks=1000) == "ALARM"


def test_failover_alarm_stays_ok_when_providers_hold(template: dict) -> None:
    definition = alarm(template, "FailoverRateAlarm")
    n = definition.evaluation_periods
    assert failovers(definition, [100] * n, [5] * n) == "OK"
    assert failovers(definition, [100] * n, [10] * n) == "OK"  # at the threshold
    assert failovers(definition, [0] * n, [0] * n) == "OK"  # no traffic
    assert failovers(definition, [0] * n, [0] * n, health_checks=50) == "OK"  # only /health


def test_failover_alarm_follows_its_parameter(template: dict) -> None:
    definition = alarm(template, "FailoverRateAlarm", FailoverRateAlarmPercent="25")
    n = definition.evaluation_periods
    assert failovers(definition, [100] * n, [20] * n) == "OK"
    assert failovers(definition, [100] * n, [30] * n) == "ALARM"


# --------------------------------------------------------------------------- (d) a provider's failure rate

FLAKY, STEADY = "openai-main", "bedrock"  # the failing provider sorts last: only ORDER BY ... DESC finds it


def provider_failure_samples(calls: Mapping[str, Sequence[tuple[int, int]]]) -> Samples:
    """ProviderFailurePercent as the app writes it: for each provider, per period (calls, failed calls), one sample
    per call, 100 when it failed and 0 when it answered, with dimension set [Provider]."""
    return {dimensioned(APP, PROVIDER_FAILURE_METRIC, Provider=provider): [[100.0] * failed + [0.0] * (n - failed)
                                                                           for n, failed in periods]
            for provider, periods in calls.items()}


def provider_failures(definition: Alarm, calls: Mapping[str, Sequence[tuple[int, int]]]) -> str:
    """The provider-failure alarm's state after such periods."""
    return definition.state(provider_failure_samples(calls))


def test_provider_failure_alarm_compares_the_worst_providers_failure_rate(template: dict) -> None:
    definition = alarm(template, "ProviderFailureAlarm")
    assert definition.period == 300
    calls = {FLAKY: [(100, 30), (40, 10), (0, 0)], STEADY: [(100, 0), (1000, 20), (10, 5)]}
    # The flaky provider's rate in each period (no calls: no datapoint), however many calls the other made.
    assert definition.datapoints(provider_failure_samples(calls)) == [30.0, 25.0, None]


def test_provider_failure_alarm_fires_when_one_provider_fails_30_percent_against_20(template: dict) -> None:
    definition = alarm(template, "ProviderFailureAlarm")
    assert definition.threshold == 20.0  # the default of ProviderFailureAlarmPercent
    n = definition.evaluation_periods
    assert provider_failures(definition, {FLAKY: [(100, 30)] * n, STEADY: [(100, 0)] * n}) == "ALARM"
    # A provider with few calls is not drowned by a busy healthy one (the rate is per provider, not pooled).
    assert provider_failures(definition, {FLAKY: [(10, 3)] * n, STEADY: [(10_000, 0)] * n}) == "ALARM"
    # Its only provider failing is enough too.
    assert provider_failures(definition, {FLAKY: [(4, 4)] * n}) == "ALARM"


def test_provider_failure_alarm_stays_ok_when_no_provider_fails_more_than_20_percent(template: dict) -> None:
    definition = alarm(template, "ProviderFailureAlarm")
    n, needed = definition.evaluation_periods, definition.datapoints_to_alarm
    assert provider_failures(definition, {FLAKY: [(100, 10)] * n, STEADY: [(100, 10)] * n}) == "OK"
    assert provider_failures(definition, {FLAKY: [(100, 20)] * n, STEADY: [(100, 0)] * n}) == "OK"  # above, not at it
    assert provider_failures(definition, {FLAKY: [(0, 0)] * n, STEADY: [(0, 0)] * n}) == "OK"  # no calls: no datapoints
    assert provider_failures(definition, {FLAKY: [(0, 0)] * n, STEADY: [(100, 0)] * n}) == "OK"  # one provider idle
    # Fewer bad periods than DatapointsToAlarm: the rest without calls (missing, not breaching) or healthy.
    bad = [(5, 5)] * (needed - 1)
    assert provider_failures(definition, {FLAKY: bad + [(0, 0)] * (n - needed + 1)}) == "OK"
    assert provider_failures(definition, {FLAKY: bad + [(100, 0)] * (n - needed + 1)}) == "OK"
    assert provider_failures(definition, {FLAKY: [(100, 0)] * (n - needed) + [(5, 5)] * needed}) == "ALARM"
    # A burst long gone does not keep it firing.
    assert provider_failures(definition, {FLAKY: [(100, 100)] * n + [(100, 0)] * n}) == "OK"


def test_provider_failure_alarm_follows_its_parameter(template: dict) -> None:
    n = alarm(template, "ProviderFailureAlarm").evaluation_periods
    higher = alarm(template, "ProviderFailureAlarm", ProviderFailureAlarmPercent="35")
    assert provider_failures(higher, {FLAKY: [(100, 30)] * n, STEADY: [(100, 0)] * n}) == "OK"
    assert provider_failures(higher, {FLAKY: [(100, 40)] * n, STEADY: [(100, 0)] * n}) == "ALARM"
    lower = alarm(template, "ProviderFailureAlarm", ProviderFailureAlarmPercent="5")
    assert provider_failures(lower, {FLAKY: [(100, 10)] * n, STEADY: [(100, 10)] * n}) == "ALARM"
    for refused in ("101", "-1"):  # a percentage
        with pytest.raises(ParameterRejected, match="ProviderFailureAlarmPercent"):
            Rendered(template, ProviderFailureAlarmPercent=refused)


def test_provider_failure_alarm_reads_only_provider_failure_percent_by_provider(template: dict) -> None:
    """SCHEMA(Costroute, Provider) matches exactly the dimension set [Provider]: the app's other metrics and
    dimension sets (CostUSD by Model, Errors by Provider, a metric with no dimension) never reach it."""
    definition = alarm(template, "ProviderFailureAlarm")
    n = definition.evaluation_periods
    failing = [[100.0] * 10] * n
    samples = {
        **provider_failure_samples({FLAKY: [(100, 0)] * n, STEADY: [(100, 0)] * n}),
        dimensioned(APP, "CostUSD", Model="openai-main:gpt-4o"): failing,
        dimensioned(APP, "Errors", Provider=FLAKY): failing,
        dimensioned(APP, PROVIDER_FAILURE_METRIC, Model="openai-main:gpt-4o"): failing,
        dimensioned(APP, PROVIDER_FAILURE_METRIC, Model="openai-main:gpt-4o", Provider=FLAKY): failing,
        dimensioned(APP, PROVIDER_FAILURE_METRIC): failing,
        dimensioned("Elsewhere", PROVIDER_FAILURE_METRIC, Provider=FLAKY): failing,
    }
    assert definition.datapoints(samples) == [0.0] * n
    assert definition.state(samples) == "OK"


def test_provider_failure_alarm_depends_on_each_clause_of_its_query(template: dict) -> None:
    """Each part of the query matters: another function in SELECT or ORDER BY, no GROUP BY, ascending order, no
    ORDER BY, no LIMIT or another threshold each gets at least one of these verdicts wrong (or returns a series per
    provider, which is not one the alarm can compare)."""
    definition = alarm(template, "ProviderFailureAlarm")
    assert definition.evaluation_periods == 3 and definition.datapoints_to_alarm == 2
    scenarios: dict[str, tuple[dict[str, list[tuple[int, int]]], str]] = {
        "one failing": ({FLAKY: [(100, 30)] * 3, STEADY: [(100, 0)] * 3}, "ALARM"),
        "both mild": ({FLAKY: [(100, 10)] * 3, STEADY: [(100, 10)] * 3}, "OK"),
        # The flaky provider has the highest average but not the highest minimum, sum or maximum.
        "worst on average, one good period": ({FLAKY: [(100, 0), (100, 50), (100, 50)], STEADY: [(100, 10)] * 3}, "ALARM"),
        "worst on average, one idle period": ({FLAKY: [(0, 0), (100, 25), (100, 25)], STEADY: [(100, 19)] * 3}, "ALARM"),
        "worst on average, not at its peak": ({FLAKY: [(100, 30)] * 3, STEADY: [(100, 0), (100, 0), (100, 60)]}, "ALARM"),
    }

    def verdicts(candidate: Alarm) -> dict[str, str]:
        return {name: provider_failures(candidate, calls) for name, (calls, _) in scenarios.items()}

    expected = {name: verdict for name, (_, verdict) in scenarios.items()}
    assert verdicts(definition) == expected
    (query,) = definition.queries
    text = query["Expression"]
    mutants = {f"SELECT {function}": text.replace("SELECT AVG(", f"SELECT {function}(")
               for function in ("SUM", "MAX", "MIN", "COUNT")}
    mutants |= {f"ORDER BY {function}": text.replace("ORDER BY AVG()", f"ORDER BY {function}()")
                for function in ("SUM", "MAX", "MIN", "COUNT")}
    mutants |= {
        "no GROUP BY": text.replace(" GROUP BY Provider", ""),
        "ASC": text.replace(" DESC", " ASC"),
        "no direction": text.replace(" DESC", ""),
        "no ORDER BY": re.sub(r" ORDER BY \w+\(\) DESC", "", text),
        "no LIMIT": text.replace(" LIMIT 1", ""),
    }
    for name, expression in mutants.items():
        assert expression != text, name
        mutant = replace(definition, queries=({**query, "Expression": expression},))
        if name == "no LIMIT":  # a series per provider: not one that the alarm can compare with its threshold
            with pytest.raises(TypeError):
                verdicts(mutant)
            continue
        assert verdicts(mutant) != expected, name
    for threshold in (9.0, 30.0):
        assert verdicts(replace(definition, threshold=threshold)) != expected, threshold


def test_provider_failure_alarm_ranks_the_providers_over_its_whole_range(template: dict) -> None:
    """ORDER BY ranks each provider by its average over the query's range, then the alarm compares that one
    provider's datapoints: a provider failing worse in one period can hide one that fails in two."""
    definition = alarm(template, "ProviderFailureAlarm")
    assert definition.evaluation_periods == 3 and definition.datapoints_to_alarm == 2
    calls = {FLAKY: [(100, 30), (100, 30), (0, 0)], STEADY: [(0, 0), (0, 0), (10, 8)]}
    assert definition.datapoints(provider_failure_samples(calls)) == [None, None, 80.0]
    assert provider_failures(definition, calls) == "OK"  # the known limit of LIMIT 1
    # Once the worst provider fails in 2 periods, it fires.
    calls[STEADY] = [(0, 0), (10, 8), (10, 8)]
    assert provider_failures(definition, calls) == "ALARM"


# ---- the same alarm on the app's own EMF documents

T0 = 1_764_612_000.0


def attempt(provider: str, outcome: str = "ok") -> AttemptRecord:
    """One provider call of a request."""
    status = {"ok": 200, "bad_request": 400, "timeout": None}.get(outcome, 502)
    return AttemptRecord(f"{provider}:model", provider, outcome, status, 250.0)


def request(number: int, *attempts: AttemptRecord) -> RequestRecord:
    """A /route request that made these calls, served (or failed) by the last one, as the web layer records it."""
    last = attempts[-1]
    answered = last.outcome == "ok"
    status = 200 if answered else (last.status or 504)
    return RequestRecord(
        request_id=f"req-{number:06d}", timestamp=T0 + number, dialect="route", method="POST", path="/route",
        http_status=status, error_type=None if answered else f"upstream_{last.outcome}", model=last.model,
        provider=last.provider, provider_kind="openai" if last.provider == FLAKY else "bedrock",
        upstream_model="model", rung=1, attempts=attempts, failovers=len(attempts) - 1,
        input_tokens=10, output_tokens=5 if answered else 0, usage_reported=answered,
        estimated_cost_usd=Decimal("0.0008"), cost_usd=Decimal("0.0001") if answered else None,
        router_overhead_ms=0.3, provider_ms=250.0 * len(attempts),
    )


def one_period(failovers: int, answered: int, failed: int, caller_mistakes: int, steady_only: int) -> list[RequestRecord]:
    """One period of requests: ``failovers`` to the steady provider after the flaky one timed out, ``answered`` by
    the flaky one, ``failed`` by it with nothing to fail over to, ``caller_mistakes`` refused by it (400: answered,
    as far as the provider goes) and ``steady_only`` served by the steady one alone."""
    kinds = ([(attempt(FLAKY, "timeout"), attempt(STEADY))] * failovers + [(attempt(FLAKY),)] * answered
             + [(attempt(FLAKY, "upstream"),)] * failed + [(attempt(FLAKY, "bad_request"),)] * caller_mistakes
             + [(attempt(STEADY),)] * steady_only)
    return [request(number, *calls) for number, calls in enumerate(kinds)]


def emf_samples(periods_of_records: Sequence[Sequence[RequestRecord]]) -> Samples:
    """What CloudWatch extracts from the app's EMF documents (``emf_documents``), period by period: for each
    directive of ``_aws.CloudWatchMetrics``, each of its dimension sets and metrics, the member's value (each value
    of an array is one sample), keyed by namespace, metric and the document's values of those dimensions."""
    extracted: dict[tuple, list[list[float]]] = {}
    for index, records in enumerate(periods_of_records):
        for record in records:
            for document in emf_documents(record):
                for directive in document["_aws"]["CloudWatchMetrics"]:
                    for names in directive["Dimensions"]:
                        dimensions = {name: document[name] for name in names}
                        for metric in directive["Metrics"]:
                            value = document[metric["Name"]]
                            key = dimensioned(directive["Namespace"], metric["Name"], **dimensions)
                            periods = extracted.setdefault(key, [[] for _ in periods_of_records])
                            periods[index].extend(float(v) for v in (value if isinstance(value, list) else [value]))
    return extracted


def test_provider_failure_alarm_fires_on_the_apps_own_emf_documents(template: dict) -> None:
    """From RequestRecords to the alarm: the app's documents give each call one ProviderFailurePercent sample under
    the provider it called (the served one in the request's document, the others in their own), so a flaky
    provider whose failures the router hides by failing over still fires the alarm."""
    definition = alarm(template, "ProviderFailureAlarm")
    n = definition.evaluation_periods
    # The flaky provider: 20 timeouts failed over, 10 failures, 50 answers and 5 caller mistakes: 30 of 85 calls.
    failing = emf_samples([one_period(failovers=20, answered=50, failed=10, caller_mistakes=5, steady_only=30)] * n)
    by_provider = {key: periods for key, periods in failing.items() if key[1] == PROVIDER_FAILURE_METRIC}
    assert set(by_provider) == {dimensioned(APP, PROVIDER_FAILURE_METRIC, Provider=p) for p in (FLAKY, STEADY)}
    flaky = by_provider[dimensioned(APP, PROVIDER_FAILURE_METRIC, Provider=FLAKY)][0]
    assert (len(flaky), flaky.count(100.0)) == (85, 30)
    steady = by_provider[dimensioned(APP, PROVIDER_FAILURE_METRIC, Provider=STEADY)][0]
    assert (len(steady), set(steady)) == (50, {0.0})
    assert definition.datapoints(failing) == [pytest.approx(100 * 30 / 85)] * n
    assert definition.state(failing) == "ALARM"
    # The same traffic with 2 failovers and no failures: 2 of 75 calls, under the threshold.
    healthy = emf_samples([one_period(failovers=2, answered=68, failed=0, caller_mistakes=5, steady_only=30)] * n)
    assert definition.datapoints(healthy) == [pytest.approx(100 * 2 / 75)] * n
    assert definition.state(healthy) == "OK"
    # Errors by Provider, from the same documents, would not have told: it names the provider that served, so it
    # counts the 10 failures and the 5 caller mistakes (4xx) of the flaky provider, not its 20 failed-over timeouts.
    errors = failing[dimensioned(APP, "Errors", Provider=FLAKY)][0]
    assert (len(errors), sum(errors)) == (65, 15)
