"""The SQLite spend store: the embedded default locally (``SPEND_DB_PATH``, default under ``.cache/``).

Safe across gunicorn workers and threads: every thread has its own connection, the database is in
WAL mode, and every reservation and settlement is one ``BEGIN IMMEDIATE`` transaction (the write
lock is taken first, so the read of what is committed and the write that depends on it cannot
interleave with another's). Amounts are stored as exact decimal text and added in Python inside
the transaction, so nothing is ever a float.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, localcontext
from typing import Any

from costroute.core.budgets import Committed, Limits, Periods, fits
from costroute.core.estimate import EXACT
from costroute.stores import StoreUnavailable
from costroute.stores.base import LedgerEntry, Reservation, ReserveOutcome, UsageRow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    caller TEXT NOT NULL, period TEXT NOT NULL, settled TEXT NOT NULL, PRIMARY KEY (caller, period));
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY, caller TEXT NOT NULL, day TEXT NOT NULL, month TEXT NOT NULL, amount TEXT NOT NULL,
    expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS reservations_by_caller ON reservations (caller);
CREATE TABLE IF NOT EXISTS ledger (
    request_id TEXT PRIMARY KEY, time REAL NOT NULL, caller TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL,
    provider TEXT NOT NULL, input_tokens INTEGER NOT NULL, cached_input_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, estimated_cost_usd TEXT NOT NULL,
    cost_usd TEXT NOT NULL, baseline_cost_usd TEXT NOT NULL, attempts INTEGER NOT NULL, outcome TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ledger_by_day ON ledger (day, caller);
CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL, caller TEXT NOT NULL, model TEXT NOT NULL, requests INTEGER NOT NULL, cost_usd TEXT NOT NULL,
    baseline_cost_usd TEXT NOT NULL, input_tokens INTEGER NOT NULL, cached_input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, PRIMARY KEY (day, caller, model));
"""
BUSY_TIMEOUT_SECONDS = 10.0


def _prepare(connection: sqlite3.Connection) -> None:
    """Put the file in WAL mode and create the tables, waiting out other processes doing the same."""
    # Switching to WAL takes an exclusive lock, and SQLite answers "database is locked" at once
    # instead of calling the busy handler when another connection holds the file meanwhile (every
    # gunicorn worker opening a new file together): retried here within the busy timeout. WAL
    # mode is kept in the file, so later connections need no switch.
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class SQLiteStore:
    """Spend, reservations, ledger and usage in one SQLite file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            try:
                directory = os.path.dirname(os.path.abspath(self.path))
                os.makedirs(directory, exist_ok=True)
                connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
                if not self._schema_ready:
                    with self._schema_lock:
                        if not self._schema_ready:
                            _prepare(connection)
                            self._schema_ready = True
            except (OSError, sqlite3.Error) as exc:
                raise StoreUnavailable(f"the spend database '{self.path}' could not be opened: {exc}") from exc
            self._local.connection = connection
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the spend database '{self.path}' is unavailable: {exc}") from exc
        try:
            with localcontext(EXACT):  # every sum of money inside a transaction is exact, never rounded at 28 digits
                yield connection
            connection.execute("COMMIT")
        except BaseException as exc:
            try:
                connection.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # a failed COMMIT may already have ended the transaction
            if isinstance(exc, sqlite3.Error):
                # Disk full, I/O error, a damaged file: the store is unavailable, never a raw sqlite3 error.
                raise StoreUnavailable(f"the spend database '{self.path}' failed: {exc}") from exc
            raise

    @staticmethod
    def _committed_in(connection: sqlite3.Connection, caller: str, periods: Periods, now: float) -> Committed:
        # A reservation whose request's deadline passed no longer counts (its container may be gone).
        connection.execute("DELETE FROM reservations WHERE caller = ? AND expires_at <= ?", (caller, now))
        settled = dict(connection.execute("SELECT period, settled FROM spend WHERE caller = ? AND period IN (?, ?)",
                                          (caller, periods.day, periods.month)).fetchall())
        rows = connection.execute("SELECT day, month, amount FROM reservations WHERE caller = ?", (caller,)).fetchall()
        with localcontext(EXACT):
            held_day = sum((Decimal(a) for d, _, a in rows if d == periods.day), Decimal(0))
            held_month = sum((Decimal(a) for _, m, a in rows if m == periods.month), Decimal(0))
            day = Decimal(settled.get(periods.day, "0")) + held_day
            month = Decimal(settled.get(periods.month, "0")) + held_month
        return Committed(day, month, held_day, held_month)

    def reserve(self, caller: str, periods: Periods, limits: Limits, amount: Decimal, reservation_id: str,
                expires_at: float, now: float) -> ReserveOutcome:
        """Admit the amount if it fits every limited window, in one write transaction."""
        with self._transaction() as connection:
            committed = self._committed_in(connection, caller, periods, now)
            if not fits(limits, committed, amount):
                return ReserveOutcome(None, committed)
            connection.execute("INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?)",
                               (reservation_id, caller, periods.day, periods.month, str(amount), expires_at))
        return ReserveOutcome(Reservation(reservation_id, caller, periods, amount, expires_at),
                              committed.plus(amount))

    def resize(self, reservation: Reservation, amount: Decimal, limits: Limits, now: float) -> ReserveOutcome:
        """Hold ``amount`` instead: growing must fit, as a new reservation would."""
        with self._transaction() as connection:
            held = connection.execute("SELECT amount FROM reservations WHERE id = ?", (reservation.id,)).fetchone()
            connection.execute("DELETE FROM reservations WHERE id = ?", (reservation.id,))
            committed = self._committed_in(connection, reservation.caller, reservation.periods, now)
            if held is None or reservation.expires_at <= now:
                return ReserveOutcome(None, committed)  # it expired: a new reservation must be made, not a resize
            if amount > reservation.amount and not fits(limits, committed, amount):
                if held is not None:
                    connection.execute("INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?)",
                                       (reservation.id, reservation.caller, reservation.periods.day,
                                        reservation.periods.month, held[0], reservation.expires_at))
                    committed = committed.plus(Decimal(held[0]))
                return ReserveOutcome(None, committed)
            connection.execute("INSERT INTO reservations VALUES (?, ?, ?, ?, ?, ?)",
                               (reservation.id, reservation.caller, reservation.periods.day, reservation.periods.month,
                                str(amount), reservation.expires_at))
        resized = Reservation(reservation.id, reservation.caller, reservation.periods, amount, reservation.expires_at)
        return ReserveOutcome(resized, committed.plus(amount))

    def settle(self, reservation: Reservation, actual: Decimal, entry: LedgerEntry | None, now: float) -> None:
        """Replace the reservation by the actual cost and record the entry, in one transaction; idempotent."""
        with self._transaction() as connection:
            if entry is not None and connection.execute("SELECT 1 FROM ledger WHERE request_id = ?",
                                                        (entry.request_id,)).fetchone():
                return
            connection.execute("DELETE FROM reservations WHERE id = ?", (reservation.id,))
            for period in (reservation.periods.day, reservation.periods.month):
                row = connection.execute("SELECT settled FROM spend WHERE caller = ? AND period = ?",
                                         (reservation.caller, period)).fetchone()
                total = (Decimal(row[0]) if row else Decimal(0)) + actual
                connection.execute("INSERT INTO spend VALUES (?, ?, ?) ON CONFLICT (caller, period) "
                                   "DO UPDATE SET settled = excluded.settled", (reservation.caller, period, str(total)))
            if entry is not None:
                self._record(connection, entry)

    @staticmethod
    def _record(connection: sqlite3.Connection, entry: LedgerEntry) -> None:
        connection.execute(
            "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.request_id, entry.time, entry.caller, entry.day, entry.model, entry.provider, entry.input_tokens,
             entry.cached_input_tokens, entry.cache_write_tokens, entry.output_tokens, str(entry.estimated_cost_usd),
             str(entry.cost_usd), str(entry.baseline_cost_usd), entry.attempts, entry.outcome))
        row = connection.execute("SELECT requests, cost_usd, baseline_cost_usd, input_tokens, cached_input_tokens, "
                                 "output_tokens FROM usage WHERE day = ? AND caller = ? AND model = ?",
                                 (entry.day, entry.caller, entry.model)).fetchone()
        requests, cost, baseline, tokens_in, cached, tokens_out = row or (0, "0", "0", 0, 0, 0)
        connection.execute(
            "INSERT OR REPLACE INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.day, entry.caller, entry.model, requests + 1, str(Decimal(cost) + entry.cost_usd),
             str(Decimal(baseline) + entry.baseline_cost_usd), tokens_in + entry.input_tokens,
             cached + entry.cached_input_tokens, tokens_out + entry.output_tokens))

    def committed(self, caller: str, periods: Periods, now: float) -> Committed:
        """What counts against the caller's windows now."""
        with self._transaction() as connection:
            return self._committed_in(connection, caller, periods, now)

    def usage(self, caller: str | None, first_day: str, last_day: str) -> list[UsageRow]:
        """Aggregated usage between two days, inclusive."""
        query = "SELECT * FROM usage WHERE day BETWEEN ? AND ?"
        args: tuple[str, ...] = (first_day, last_day)
        if caller is not None:
            query, args = query + " AND caller = ?", (*args, caller)
        rows = self._read(query + " ORDER BY day, caller, model", args)
        return [UsageRow(day, who, model, requests, Decimal(cost), Decimal(baseline), tokens_in, cached, tokens_out)
                for day, who, model, requests, cost, baseline, tokens_in, cached, tokens_out in rows]

    def ledger(self, caller: str | None, first_day: str, last_day: str) -> list[LedgerEntry]:
        """Ledger entries between two days, oldest first."""
        query = "SELECT * FROM ledger WHERE day BETWEEN ? AND ?"
        args: tuple[str, ...] = (first_day, last_day)
        if caller is not None:
            query, args = query + " AND caller = ?", (*args, caller)
        rows = self._read(query + " ORDER BY time, request_id", args)
        return [LedgerEntry(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], Decimal(r[10]), Decimal(r[11]),
                            Decimal(r[12]), r[13], r[14]) for r in rows]

    def _read(self, query: str, args: tuple[str, ...]) -> list[tuple[Any, ...]]:
        try:
            return self._connection().execute(query, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the spend database '{self.path}' could not be read: {exc}") from exc
