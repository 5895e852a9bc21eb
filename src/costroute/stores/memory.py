"""The in-memory spend store: one process, one lock; for unit tests and a single-threaded demo."""

from __future__ import annotations

import threading
from decimal import Decimal, localcontext

from costroute.core.budgets import Committed, Limits, Periods, fits
from costroute.core.estimate import EXACT
from costroute.stores.base import LedgerEntry, Reservation, ReserveOutcome, UsageRow


class MemoryStore:
    """Spend, reservations, ledger and usage in dictionaries, behind one lock."""

    def __init__(self) -> None:
        self._settled: dict[tuple[str, str], Decimal] = {}
        self._reservations: dict[str, Reservation] = {}
        self._ledger: dict[str, LedgerEntry] = {}
        self._usage: dict[tuple[str, str, str], UsageRow] = {}
        self._lock = threading.Lock()

    def _committed(self, caller: str, periods: Periods, now: float) -> Committed:
        for rid in [r.id for r in self._reservations.values() if r.caller == caller and r.expires_at <= now]:
            del self._reservations[rid]  # its request's deadline passed: it no longer counts
        open_ = [r for r in self._reservations.values() if r.caller == caller]
        day = self._settled.get((caller, periods.day), Decimal(0))
        month = self._settled.get((caller, periods.month), Decimal(0))
        with localcontext(EXACT):
            held_day = sum((r.amount for r in open_ if r.periods.day == periods.day), Decimal(0))
            held_month = sum((r.amount for r in open_ if r.periods.month == periods.month), Decimal(0))
            return Committed(day + held_day, month + held_month, held_day, held_month)

    def reserve(self, caller: str, periods: Periods, limits: Limits, amount: Decimal, reservation_id: str,
                expires_at: float, now: float) -> ReserveOutcome:
        """Admit the amount if it fits every limited window."""
        with self._lock:
            committed = self._committed(caller, periods, now)
            if not fits(limits, committed, amount):
                return ReserveOutcome(None, committed)
            reservation = Reservation(reservation_id, caller, periods, amount, expires_at)
            self._reservations[reservation_id] = reservation
            return ReserveOutcome(reservation, committed.plus(amount))

    def resize(self, reservation: Reservation, amount: Decimal, limits: Limits, now: float) -> ReserveOutcome:
        """Hold ``amount`` instead: growing must fit, as a new reservation would."""
        with self._lock:
            held = self._reservations.pop(reservation.id, None)
            committed = self._committed(reservation.caller, reservation.periods, now)
            if held is None or held.expires_at <= now:
                return ReserveOutcome(None, committed)  # it expired: a new reservation must be made, not a resize
            if amount > reservation.amount and not fits(limits, committed, amount):
                if held is not None:
                    self._reservations[held.id] = held
                    committed = committed.plus(held.amount)
                return ReserveOutcome(None, committed)
            resized = Reservation(reservation.id, reservation.caller, reservation.periods, amount, reservation.expires_at)
            self._reservations[resized.id] = resized
            return ReserveOutcome(resized, committed.plus(amount))

    def settle(self, reservation: Reservation, actual: Decimal, entry: LedgerEntry | None, now: float) -> None:
        """Replace the reservation by the actual cost, record the entry; a second settle changes nothing."""
        with self._lock, localcontext(EXACT):
            if entry is not None and entry.request_id in self._ledger:
                return
            self._reservations.pop(reservation.id, None)
            for period in (reservation.periods.day, reservation.periods.month):
                key = (reservation.caller, period)
                self._settled[key] = self._settled.get(key, Decimal(0)) + actual
            if entry is not None:
                self._ledger[entry.request_id] = entry
                key3 = (entry.day, entry.caller, entry.model)
                row = self._usage.get(key3) or UsageRow(entry.day, entry.caller, entry.model, 0, Decimal(0),
                                                        Decimal(0), 0, 0, 0)
                self._usage[key3] = UsageRow(row.day, row.caller, row.model, row.requests + 1,
                                             row.cost_usd + entry.cost_usd, row.baseline_cost_usd + entry.baseline_cost_usd,
                                             row.input_tokens + entry.input_tokens,
                                             row.cached_input_tokens + entry.cached_input_tokens,
                                             row.output_tokens + entry.output_tokens)

    def committed(self, caller: str, periods: Periods, now: float) -> Committed:
        """What counts against the caller's windows now."""
        with self._lock:
            return self._committed(caller, periods, now)

    def usage(self, caller: str | None, first_day: str, last_day: str) -> list[UsageRow]:
        """Aggregated usage between two days, inclusive."""
        with self._lock:
            return sorted((row for row in self._usage.values()
                           if first_day <= row.day <= last_day and (caller is None or row.caller == caller)),
                          key=lambda row: (row.day, row.caller, row.model))

    def ledger(self, caller: str | None, first_day: str, last_day: str) -> list[LedgerEntry]:
        """Ledger entries between two days, oldest first."""
        with self._lock:
            return sorted((entry for entry in self._ledger.values()
                           if first_day <= entry.day <= last_day and (caller is None or entry.caller == caller)),
                          key=lambda entry: (entry.time, entry.request_id))
