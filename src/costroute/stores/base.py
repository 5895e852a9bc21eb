"""The spend store: reservations and settlements per caller and window, the ledger, pre-aggregated usage.

One interface, three backends with the same semantics (the same test suite runs against each):
``memory`` (unit tests), ``sqlite`` (the embedded default locally, safe across gunicorn workers
and threads) and ``dynamodb`` (Lambda). The rule they apply atomically is ``core.budgets.fits``:
a reservation is admitted only when every limited window's committed amount (settled spend plus
open, unexpired reservations) plus the reservation stays within its limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from costroute.core.budgets import Committed, Limits, Periods


@dataclass(frozen=True)
class Reservation:
    """Money held for one request until it settles or its deadline passes."""

    id: str
    caller: str
    periods: Periods
    amount: Decimal
    expires_at: float  # epoch seconds: the request's deadline


@dataclass(frozen=True)
class ReserveOutcome:
    """A reservation admitted (``reservation`` set) or refused, and what was committed then."""

    reservation: Reservation | None
    committed: Committed


@dataclass(frozen=True)
class LedgerEntry:
    """One request that reached a provider: who, what, how much; never prompt or answer text."""

    request_id: str
    time: float  # epoch seconds
    caller: str
    day: str
    model: str
    provider: str
    input_tokens: int  # every input token, cached ones included
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    estimated_cost_usd: Decimal
    cost_usd: Decimal
    baseline_cost_usd: Decimal
    attempts: int
    outcome: str  # "ok", or the failure kind that ended the request or its stream


@dataclass(frozen=True)
class UsageRow:
    """Pre-aggregated usage of one caller on one model on one day."""

    day: str
    caller: str
    model: str
    requests: int
    cost_usd: Decimal
    baseline_cost_usd: Decimal
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int


class SpendStore(Protocol):
    """Where reservations, spend, the ledger and usage live."""

    def reserve(self, caller: str, periods: Periods, limits: Limits, amount: Decimal, reservation_id: str,
                expires_at: float, now: float) -> ReserveOutcome:
        """Admit ``amount`` for ``caller`` atomically if it fits every limited window, else refuse."""
        ...

    def resize(self, reservation: Reservation, amount: Decimal, limits: Limits, now: float) -> ReserveOutcome:
        """Change a reservation to hold ``amount`` (more needs to fit, as a new reservation would); an expired
        or unknown reservation is refused."""
        ...

    def settle(self, reservation: Reservation, actual: Decimal, entry: LedgerEntry | None, now: float) -> None:
        """Replace the reservation by the actual cost and write the ledger entry, atomically; idempotent
        (a second settle of the same request's entry changes nothing)."""
        ...

    def committed(self, caller: str, periods: Periods, now: float) -> Committed:
        """What counts against the caller's windows now."""
        ...

    def usage(self, caller: str | None, first_day: str, last_day: str) -> list[UsageRow]:
        """Pre-aggregated usage between two days (inclusive), of one caller or (None) of everyone."""
        ...

    def ledger(self, caller: str | None, first_day: str, last_day: str) -> list[LedgerEntry]:
        """The ledger entries between two days (inclusive), oldest first."""
        ...
