"""One request's money: the caller's budget, the reservation that holds the call's worst case, settlement.

The router asks ``RequestSpend.cover`` to hold a plan's worst case before every call; when the
store refuses, ``cover`` says how much this request could hold now (what it already holds plus
what is left in the tightest window), and the router plans again within that. After the call
(success, failure, or a stream that ended any way), ``settle`` replaces the reservation by the
actual cost and writes the ledger entry. A settlement write that fails is retried, then logged
with the whole entry (never any text), so it can be reconciled: the ledger stays the truth.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from costroute.core.budgets import (
    BudgetsDocument,
    CallerBudget,
    Committed,
    Periods,
    Window,
    periods_at,
    remaining,
    reset_time,
    seconds_until_reset,
    tightest,
)
from costroute.core.outcome import ErrorReason, RoutingFailed
from costroute.core.registry import Model, Registry
from costroute.core.selection import format_usd
from costroute.stores import STORE_RETRY_AFTER_SECONDS, StoreUnavailable
from costroute.stores.base import LedgerEntry, Reservation, SpendStore

logger = logging.getLogger("costroute.spend")

SETTLE_TRIES = 3
SETTLE_BACKOFF_SECONDS = 0.05
# A reservation must outlive its request, or its money could be spent twice. A request can outlive
# its deadline: a stream checks the deadline between pieces, and the wait for one piece is bounded
# by the read timeout, which is at most the time the deadline left at the call's start (so at most
# the deadline); then settlement may retry. So a hold stops counting only after twice the deadline
# plus this margin, when the request cannot be running any more.
HOLD_MARGIN_SECONDS = 30.0
# When only other requests' holds stand in the way: they settle when they end, usually within seconds.
IN_FLIGHT_RETRY_AFTER_SECONDS = 1.0


def hold_seconds(deadline_seconds: float) -> float:
    """How long a request's reservation counts: until the request cannot be running any more."""
    return 2 * deadline_seconds + HOLD_MARGIN_SECONDS


def store_unavailable(exc: StoreUnavailable) -> RoutingFailed:
    """The 503 when the spend store cannot be reached: no call is made that could not be accounted for."""
    return RoutingFailed(ErrorReason.SPEND_STORE_UNAVAILABLE, f"the spend store is unavailable: {exc}",
                         retry_after_s=STORE_RETRY_AFTER_SECONDS)


@dataclass(frozen=True)
class WindowView:
    """Where a caller stands in one window."""

    window: Window
    period: str
    limit_usd: Decimal
    committed_usd: Decimal
    remaining_usd: Decimal
    resets_at: str


@dataclass(frozen=True)
class BudgetView:
    """Where a caller stands, window by window (the answer's ``budget`` object)."""

    caller: str
    name: str | None
    windows: tuple[WindowView, ...]

    @property
    def tightest_remaining_usd(self) -> Decimal | None:
        """What is left in the tightest window, or None when no window is limited."""
        return min((w.remaining_usd for w in self.windows), default=None)


def view_of(budget: CallerBudget, periods: Periods, committed: Committed, now: float) -> BudgetView:
    """The budget view for what is committed now."""
    left = remaining(budget.limits, committed)
    windows = tuple(
        WindowView(window, periods.of(window), limit, committed.of(window), left[window], reset_time(window, now))
        for window in Window if (limit := budget.limits.of(window)) is not None
    )
    return BudgetView(budget.caller, budget.name, windows)


def baseline_model(document: BudgetsDocument, registry: Registry) -> Model | None:
    """The model the router's savings are measured against: the document's, else the best (then dearest) model."""
    if document.baseline_model is not None:
        named = registry.get(document.baseline_model)
        if named is not None:
            return named
    return max(registry.models, key=lambda m: (m.quality, m.input_cost_per_1k + m.output_cost_per_1k, m.id), default=None)


class SpendGate:
    """Budgets and the spend store, for the router."""

    def __init__(
        self,
        budgets: Callable[[], BudgetsDocument],
        store: SpendStore,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._budgets = budgets
        self.store = store
        self._wall_clock = wall_clock
        self._sleep = sleep

    def document(self) -> BudgetsDocument:
        """The current budgets document (raises ConfigError when it cannot be loaded)."""
        return self._budgets()

    def now(self) -> float:
        """Wall-clock time, in epoch seconds."""
        return self._wall_clock()

    def admit(self, caller: str) -> CallerBudget:
        """The caller's budget; an unknown caller is refused when only known callers are admitted."""
        budget = self._budgets().budget_of(caller)
        if budget is None:
            raise RoutingFailed(ErrorReason.UNKNOWN_CALLER, f"caller '{caller}' is not in the budgets document, and "
                                "require_known_callers admits only the callers it lists")
        return budget

    def open(self, budget: CallerBudget, request_id: str, deadline_seconds: float) -> RequestSpend:
        """The spend of one request, whose reservation stops counting once the request cannot be running."""
        now = self._wall_clock()
        return RequestSpend(self, budget, request_id, periods_at(now), now + hold_seconds(deadline_seconds))

    def view(self, budget: CallerBudget) -> BudgetView:
        """Where the caller stands now (one read)."""
        now = self._wall_clock()
        periods = periods_at(now)
        try:
            committed = self.store.committed(budget.caller, periods, now)
        except StoreUnavailable as exc:
            raise store_unavailable(exc) from exc
        return view_of(budget, periods, committed, now)

    def settle(self, reservation: Reservation, actual: Decimal, entry: LedgerEntry | None) -> None:
        """Settle, retrying a failed write; a settlement that cannot be written is logged whole."""
        for attempt in range(1, SETTLE_TRIES + 1):
            try:
                self.store.settle(reservation, actual, entry, self._wall_clock())
                return
            except StoreUnavailable as exc:
                if attempt == SETTLE_TRIES:
                    logger.error("settlement of request %s could not be written after %d tries (%s); reconcile from "
                                 "this line: reservation %s of %s for caller %s, actual cost %s, ledger entry %r",
                                 reservation.id, SETTLE_TRIES, exc, reservation.id, reservation.amount,
                                 reservation.caller, actual, entry)
                    return
                logger.warning("settlement of request %s failed (%s); retrying", reservation.id, exc)
                self._sleep(SETTLE_BACKOFF_SECONDS * attempt)


class RequestSpend:
    """The money of one request: its budget, and the reservation holding its current plan's worst case."""

    def __init__(self, gate: SpendGate, budget: CallerBudget, request_id: str, periods: Periods,
                 expires_at: float) -> None:
        self.gate = gate
        self.budget = budget
        self.request_id = request_id
        self.periods = periods
        self.expires_at = expires_at
        self.reservation: Reservation | None = None
        self.committed_at_reserve = Committed()
        self.refusal: Committed | None = None
        self.settled = False

    @property
    def limited(self) -> bool:
        """Whether any of the caller's windows has a limit."""
        return self.budget.limits.limited

    def cover(self, worst_case_usd: Decimal) -> Decimal | None:
        """Hold ``worst_case_usd``; None when held, else the most this request can hold now."""
        now = self.gate.now()
        store = self.gate.store
        if self.reservation is not None and worst_case_usd == self.reservation.amount:
            return None
        try:
            if self.reservation is None:
                outcome = store.reserve(self.budget.caller, self.periods, self.budget.limits, worst_case_usd,
                                        self.request_id, self.expires_at, now)
            else:
                outcome = store.resize(self.reservation, worst_case_usd, self.budget.limits, now)
        except StoreUnavailable as exc:
            raise store_unavailable(exc) from exc
        if outcome.reservation is not None:
            self.reservation = outcome.reservation
            self.committed_at_reserve = outcome.committed
            self.refusal = None
            return None
        self.refusal = outcome.committed
        held = self.reservation.amount if self.reservation is not None else Decimal(0)
        left = tightest(remaining(self.budget.limits, outcome.committed))
        return held + (left[1] if left is not None else Decimal(0))

    def exhausted(self, message: str, trace: tuple[str, ...], needed_usd: Decimal | None) -> RoutingFailed:
        """The 402 when not even the input fits what is left (``needed_usd``: the least a call could cost).

        Retry-After is when every window that cannot hold ``needed_usd`` has reset (the latest of their
        resets), or a second when what blocks it is only held by requests in flight, not spent. When a
        window could not hold it even empty, no wait helps: ``budget_exceeded``, and no Retry-After.
        """
        now = self.gate.now()
        committed = self.refusal or self.committed_at_reserve
        left = remaining(self.budget.limits, committed)
        view = view_of(self.budget, self.periods, committed, now)
        details: dict[str, Any] = {"budget": view}
        too_small = [w for w in left if needed_usd is not None and needed_usd > (self.budget.limits.of(w) or 0)]
        if too_small:
            window = too_small[0]
            adjective = "daily" if window is Window.DAY else "monthly"
            return RoutingFailed(ErrorReason.BUDGET_EXCEEDED, f"{message}; the cheapest call could cost more than the "
                                 f"caller's whole {adjective} limit of {format_usd(self.budget.limits.of(window))}",
                                 trace=trace, details=details)
        blocking = [w for w in left if left[w] <= 0 or (needed_usd is not None and left[w] < needed_usd)]
        if not blocking:
            binding = tightest(left)
            blocking = [binding[0]] if binding is not None else [Window.DAY]
        retry_after = max(seconds_until_reset(window, now) for window in blocking)
        held = {w: committed.held_of(w) for w in blocking}
        if needed_usd is not None and all(held[w] > 0 and left[w] + held[w] >= needed_usd for w in blocking):
            # Not spent but held by requests in flight, which give back what they do not use when they
            # end: worth asking again in a moment, not at the window's reset.
            retry_after = min(retry_after, IN_FLIGHT_RETRY_AFTER_SECONDS)
            message += (f"; requests in flight hold {format_usd(max(held.values()))} of it until they settle, so "
                        f"retry in {IN_FLIGHT_RETRY_AFTER_SECONDS:.0f} s")
        return RoutingFailed(ErrorReason.BUDGET_EXHAUSTED, message, trace=trace, retry_after_s=retry_after,
                             details=details)

    def settle(self, actual: Decimal, entry: LedgerEntry | None) -> BudgetView | None:
        """Replace the reservation by the actual cost (once); where the caller stands after it."""
        if self.settled or self.reservation is None:
            return None
        self.settled = True
        self.gate.settle(self.reservation, actual, entry)
        held = self.reservation.amount
        after = Committed(self.committed_at_reserve.day - held + actual, self.committed_at_reserve.month - held + actual)
        return view_of(self.budget, self.periods, after, self.gate.now())

    def look(self) -> BudgetView:
        """Where the caller stands now, read from the store (a dry run, which holds nothing)."""
        now = self.gate.now()
        try:
            self.committed_at_reserve = self.gate.store.committed(self.budget.caller, self.periods, now)
        except StoreUnavailable as exc:
            raise store_unavailable(exc) from exc
        return view_of(self.budget, self.periods, self.committed_at_reserve, now)

    def view(self) -> BudgetView:
        """Where the caller stands with this request's reservation held."""
        return view_of(self.budget, self.periods, self.committed_at_reserve, self.gate.now())
