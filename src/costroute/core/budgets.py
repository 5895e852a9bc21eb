"""Dollar budgets per caller: the budgets document, UTC calendar windows, and the reservation rule.

The document (JSON, ``BUDGETS_CONFIG_JSON`` or ``BUDGETS_CONFIG_SSM_PARAMETER``)::

    {"default": {"daily_usd": 5, "monthly_usd": 100},
     "callers": {"a1b2c3d4e5": {"name": "team-a", "daily_usd": 20, "monthly_usd": 300},
                 "sha256:9f86d0...": {"name": "local-dev", "daily_usd": 1}},
     "admins": ["a1b2c3d4e5"],
     "require_known_callers": false,
     "baseline_model": "openai:gpt-4o"}

A caller without an entry gets ``default`` (no default: no limit); with ``require_known_callers``
an unknown caller is refused. Windows are UTC calendar days and months.

The promise: no caller ever spends more than a window's limit, even under concurrency. Every call
reserves its worst case (known before the call, thanks to the hard per-request ceiling) with one
atomic check-and-add per window: ``committed + amount <= limit``, where ``committed`` is what was
settled plus every reservation still open. A reservation stops counting once its request's
deadline has passed (a container killed mid-call never settles it). Settlement replaces the
reservation by the actual cost. This module holds the rule; the stores apply it atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from enum import StrEnum
from typing import Any

from costroute.core.estimate import EXACT
from costroute.core.fields import DocumentError, FieldReader, json_type, load_json_document

MAX_LIMIT_USD = Decimal(1_000_000_000)
DOCUMENT_FIELDS = ("default", "callers", "admins", "require_known_callers", "baseline_model")
LIMIT_FIELDS = ("daily_usd", "monthly_usd")


class BudgetsError(DocumentError):
    """A budgets document that cannot be used; the message names every wrong entry and field."""


class Window(StrEnum):
    """A budget window: a UTC calendar day or month."""

    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True)
class Limits:
    """A caller's limits; None means no limit in that window."""

    daily_usd: Decimal | None = None
    monthly_usd: Decimal | None = None

    def of(self, window: Window) -> Decimal | None:
        """The limit of one window."""
        return self.daily_usd if window is Window.DAY else self.monthly_usd

    @property
    def limited(self) -> bool:
        """Whether any window has a limit."""
        return self.daily_usd is not None or self.monthly_usd is not None


@dataclass(frozen=True)
class CallerBudget:
    """Who a caller is to the budgets: its id, its name if the document gives one, its limits."""

    caller: str
    name: str | None
    limits: Limits
    admin: bool = False
    known: bool = True


@dataclass(frozen=True)
class BudgetsDocument:
    """A validated budgets document."""

    default: Limits | None = None
    callers: dict[str, CallerBudget] = field(default_factory=dict)
    admins: frozenset[str] = frozenset()
    require_known_callers: bool = False
    baseline_model: str | None = None

    def budget_of(self, caller: str) -> CallerBudget | None:
        """The caller's budget; None when the caller is unknown and only known callers are admitted."""
        entry = self.callers.get(caller)
        if entry is not None:
            return entry
        if self.require_known_callers:
            return None
        return CallerBudget(caller=caller, name=None, limits=self.default or Limits(), admin=caller in self.admins,
                            known=False)


@dataclass(frozen=True)
class Periods:
    """The windows a moment falls in: ``2026-12-01`` and ``2026-12``."""

    day: str
    month: str

    def of(self, window: Window) -> str:
        """The period of one window."""
        return self.day if window is Window.DAY else self.month


def periods_at(epoch_seconds: float) -> Periods:
    """The UTC day and month of a moment."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return Periods(day=moment.strftime("%Y-%m-%d"), month=moment.strftime("%Y-%m"))


def seconds_until_reset(window: Window, epoch_seconds: float) -> float:
    """Seconds from a moment until the window it falls in ends (UTC midnight, or the 1st of next month)."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    day_start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if window is Window.DAY:
        end = datetime.fromordinal(day_start.toordinal() + 1).replace(tzinfo=UTC)
    else:
        year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        end = datetime(year, month, 1, tzinfo=UTC)
    return max(0.0, (end - moment).total_seconds())


def reset_time(window: Window, epoch_seconds: float) -> str:
    """When the window a moment falls in resets, as an ISO 8601 UTC time."""
    end = epoch_seconds + seconds_until_reset(window, epoch_seconds)
    return datetime.fromtimestamp(end, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Committed:
    """What counts against a caller's windows now: settled spend plus open reservations, per window."""

    day: Decimal = Decimal(0)
    month: Decimal = Decimal(0)
    # Of which open reservations (requests in flight): money that comes back when they settle. Not
    # part of equality: two readings that commit the same amounts agree whoever holds them.
    held_day: Decimal = field(default=Decimal(0), compare=False)
    held_month: Decimal = field(default=Decimal(0), compare=False)

    def of(self, window: Window) -> Decimal:
        """The committed amount of one window."""
        return self.day if window is Window.DAY else self.month

    def held_of(self, window: Window) -> Decimal:
        """What open reservations hold of one window."""
        return self.held_day if window is Window.DAY else self.held_month

    def plus(self, amount: Decimal) -> Committed:
        """The same with one more reservation of ``amount`` held in both windows."""
        with localcontext(EXACT):
            return Committed(self.day + amount, self.month + amount, self.held_day + amount, self.held_month + amount)


def remaining(limits: Limits, committed: Committed) -> dict[Window, Decimal]:
    """What is left in each limited window (never below zero)."""
    left = {}
    with localcontext(EXACT):
        for window in Window:
            limit = limits.of(window)
            if limit is not None:
                left[window] = max(Decimal(0), limit - committed.of(window))
    return left


def tightest(left: dict[Window, Decimal]) -> tuple[Window, Decimal] | None:
    """The window with the least left (the day on a tie), or None when nothing is limited."""
    if not left:
        return None
    window = min(left, key=lambda w: (left[w], 0 if w is Window.DAY else 1))
    return window, left[window]


def fits(limits: Limits, committed: Committed, amount: Decimal) -> bool:
    """The reservation rule: the amount fits every limited window."""
    with localcontext(EXACT):  # exact: the default context would round at 28 digits and admit too much
        return all(committed.of(w) + amount <= limit for w in Window if (limit := limits.of(w)) is not None)


def ceilings_for(limits: Limits, amount: Decimal) -> dict[Window, Decimal]:
    """For each limited window, the most that may already be committed for ``amount`` to fit: ``limit - amount``.

    A condition expression cannot do arithmetic (DynamoDB), so the subtraction is done here.
    """
    with localcontext(EXACT):
        return {w: limit - amount for w in Window if (limit := limits.of(w)) is not None}


def parse_budgets_text(text: str) -> BudgetsDocument:
    """Parse and validate a budgets document; raise BudgetsError naming every wrong entry and field."""
    data = load_json_document(text, BudgetsError, "the budgets document")
    return build_budgets(data)


def build_budgets(data: Any) -> BudgetsDocument:
    """Validate a decoded budgets document as a whole."""
    if not isinstance(data, dict):
        raise BudgetsError([f"the budgets document must be a JSON object, got {json_type(data)}"])
    errors: list[str] = []
    top = FieldReader(data, "budgets", errors)
    top.refuse_unknown(DOCUMENT_FIELDS)
    default_values = top.mapping("default")
    default = None
    if default_values is not None:
        default_reader = FieldReader(default_values, "budgets: 'default'", errors)
        default_reader.refuse_unknown(LIMIT_FIELDS)
        default = _limits(default_reader)
    admins_value = data.get("admins", [])
    admins: set[str] = set()
    if not isinstance(admins_value, list):
        errors.append(f"budgets: field 'admins' must be an array of caller ids, got {json_type(admins_value)}")
    else:
        for index, caller in enumerate(admins_value, start=1):
            if not isinstance(caller, str) or not caller.strip():
                errors.append(f"budgets: admins entry {index} must be a non-empty caller id, got {json_type(caller)}")
            else:
                admins.add(caller)
    callers: dict[str, CallerBudget] = {}
    for caller, values in (top.mapping("callers") or {}).items():
        label = f"budgets: caller '{caller}'"
        if not caller.strip() or caller != caller.strip():
            errors.append(f"{label}: a caller id must be non-empty, without surrounding spaces")
            continue
        if not isinstance(values, dict):
            errors.append(f"{label}: must be an object with daily_usd and/or monthly_usd, got {json_type(values)}")
            continue
        reader = FieldReader(values, label, errors)
        reader.refuse_unknown(("name", *LIMIT_FIELDS))
        name = reader.text("name")
        callers[caller] = CallerBudget(caller=caller, name=name, limits=_limits(reader), admin=caller in admins)
    require = top.boolean("require_known_callers") or False
    baseline = top.text("baseline_model")
    if errors:
        raise BudgetsError(errors)
    return BudgetsDocument(default=default, callers=callers, admins=frozenset(admins), require_known_callers=require,
                           baseline_model=baseline)


def _limits(reader: FieldReader) -> Limits:
    daily = reader.number("daily_usd", minimum=Decimal(0), maximum=MAX_LIMIT_USD)
    monthly = reader.number("monthly_usd", minimum=Decimal(0), maximum=MAX_LIMIT_USD)
    return Limits(daily_usd=daily, monthly_usd=monthly)
