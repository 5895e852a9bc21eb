"""One test suite for the three spend stores: memory, SQLite (a real file) and DynamoDB (moto).

moto's DynamoDB gets the per-item atomicity DynamoDB has (tests/atomic_moto.py), without which its
concurrent conditional updates race.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from costroute.core.budgets import Committed, Limits, Periods, periods_at
from costroute.core.selection import plain_decimal
from costroute.stores import StoreUnavailable
from costroute.stores.base import LedgerEntry, Reservation, SpendStore
from costroute.stores.dynamodb import DynamoDBStore
from costroute.stores.dynamodb import _n as dynamodb_number
from costroute.stores.memory import MemoryStore
from costroute.stores.sqlite import SQLiteStore
from tests.atomic_moto import atomic_dynamodb

DAY1 = Periods("2026-12-01", "2026-12")
DAY2 = Periods("2026-12-02", "2026-12")
NEXT_MONTH = Periods("2027-01-01", "2027-01")
NOW = 1_000.0
LATER = NOW + 100  # every reservation below expires at NOW + 30
D = Decimal


def create_table(name: str, client: Any) -> None:
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}])


@pytest.fixture(params=["memory", "sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SpendStore]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        yield SQLiteStore(str(tmp_path / "spend.sqlite3"))
    else:
        with mock_aws(), atomic_dynamodb(request.getfixturevalue("monkeypatch")):
            client = boto3.client("dynamodb")
            create_table("spend", client)
            yield DynamoDBStore("spend", lambda: client)


def reserve(store: SpendStore, amount: str, rid: str, limits: Limits, periods: Periods = DAY1, caller: str = "a",
            now: float = NOW) -> Reservation | None:
    return store.reserve(caller, periods, limits, D(amount), rid, now + 30, now).reservation


def entry(rid: str, cost: str, caller: str = "a", day: str = "2026-12-01", model: str = "mock:m",
          baseline: str = "0.5") -> LedgerEntry:
    return LedgerEntry(request_id=rid, time=NOW + len(rid), caller=caller, day=day, model=model, provider="mock",
                       input_tokens=10, cached_input_tokens=2, cache_write_tokens=0, output_tokens=5,
                       estimated_cost_usd=D("0.2"), cost_usd=D(cost), baseline_cost_usd=D(baseline), attempts=1,
                       outcome="ok")


def test_reservations_fit_every_limited_window_or_are_refused_with_what_is_committed(store: SpendStore) -> None:
    limits = Limits(daily_usd=D("1"), monthly_usd=D("1.5"))
    assert reserve(store, "0.6", "r1", limits) is not None
    refused = store.reserve("a", DAY1, limits, D("0.5"), "r2", NOW + 30, NOW)
    assert refused.reservation is None and refused.committed == Committed(day=D("0.6"), month=D("0.6"))
    assert reserve(store, "0.4", "r3", limits) is not None  # exactly to the daily limit
    assert reserve(store, "0.4", "r4", limits, DAY2) is not None  # a new day, the same month
    assert reserve(store, "0.2", "r5", limits, DAY2) is None  # the month is full: 1.4 + 0.2 > 1.5
    assert store.committed("a", DAY2, NOW) == Committed(day=D("0.4"), month=D("1.4"))
    assert reserve(store, "1", "r6", limits, NEXT_MONTH) is not None  # a new month
    assert reserve(store, "0.3", "other", limits, caller="b") is not None  # another caller's own windows


def test_an_amount_above_a_whole_limit_is_refused_even_on_a_fresh_window(store: SpendStore) -> None:
    limits = Limits(daily_usd=D("1"))
    outcome = store.reserve("fresh", DAY1, limits, D("1.01"), "r1", NOW + 30, NOW)
    assert outcome.reservation is None and outcome.committed == Committed()
    assert store.committed("fresh", DAY1, NOW) == Committed()


def test_without_limits_everything_fits_and_still_counts(store: SpendStore) -> None:
    assert reserve(store, "1000000", "r1", Limits()) is not None
    assert store.committed("a", DAY1, NOW) == Committed(day=D("1000000"), month=D("1000000"))


def test_settling_replaces_the_reservation_by_the_actual_cost_and_is_idempotent(store: SpendStore) -> None:
    limits = Limits(daily_usd=D("1"))
    held = reserve(store, "0.8", "r1", limits)
    assert held is not None
    store.settle(held, D("0.25"), entry("r1", "0.25"), NOW)
    assert store.committed("a", DAY1, NOW) == Committed(day=D("0.25"), month=D("0.25"))
    store.settle(held, D("0.25"), entry("r1", "0.25"), NOW)  # a retried settlement
    assert store.committed("a", DAY1, NOW) == Committed(day=D("0.25"), month=D("0.25"))
    assert [e.cost_usd for e in store.ledger("a", "2026-12-01", "2026-12-31")] == [D("0.25")]
    assert reserve(store, "0.75", "r2", limits) is not None  # the money returned is available again


def test_a_reservation_stops_counting_once_its_deadline_has_passed(store: SpendStore) -> None:
    limits = Limits(daily_usd=D("1"))
    killed = reserve(store, "0.9", "killed", limits)  # its container dies: it is never settled
    assert killed is not None
    assert reserve(store, "0.5", "r2", limits, now=NOW + 10) is None
    assert reserve(store, "0.5", "r3", limits, now=LATER) is not None
    assert store.committed("a", DAY1, LATER) == Committed(day=D("0.5"), month=D("0.5"))


def test_a_late_settlement_of_a_reclaimed_reservation_still_counts_its_cost(store: SpendStore) -> None:
    limits = Limits(daily_usd=D("1"))
    late = reserve(store, "0.4", "late", limits)
    assert late is not None
    assert reserve(store, "0.1", "other", limits, now=LATER) is not None  # reclaims "late" on the way
    store.settle(late, D("0.3"), entry("late", "0.3"), LATER)
    assert store.committed("a", DAY1, LATER) == Committed(day=D("0.4"), month=D("0.4"))


def test_resizing_grows_only_within_the_limits_and_shrinks_freely(store: SpendStore) -> None:
    limits = Limits(daily_usd=D("1"))
    held = reserve(store, "0.3", "r1", limits)
    assert held is not None and reserve(store, "0.4", "r2", limits) is not None
    grown = store.resize(held, D("0.6"), limits, NOW)
    assert grown.reservation is not None and grown.reservation.amount == D("0.6")
    refused = store.resize(grown.reservation, D("0.7"), limits, NOW)
    assert refused.reservation is None and refused.committed.day == D("1.0")
    shrunk = store.resize(grown.reservation, D("0.1"), limits, NOW)
    assert shrunk.reservation is not None and store.committed("a", DAY1, NOW).day == D("0.5")


def test_an_expired_reservation_cannot_be_resized_back_to_life(store: SpendStore) -> None:
    limits = Limits(daily_usd=D("1"))
    held = reserve(store, "0.3", "r1", limits)
    assert held is not None
    refused = store.resize(held, D("0.2"), limits, LATER)  # its deadline passed: the money may be someone else's
    assert refused.reservation is None
    assert store.committed("a", DAY1, LATER) == Committed()


def test_amounts_longer_than_28_digits_are_written_exactly() -> None:
    amount = D("0.12345678901234567890123456789012345")  # 35 digits: normalize() at 28 digits would round it
    assert plain_decimal(amount) == "0.12345678901234567890123456789012345"
    assert dynamodb_number(amount) == {"N": "0.12345678901234567890123456789012345"}
    # Beyond DynamoDB's 38 digits an amount is rounded up, never down.
    assert dynamodb_number(D("0.1234567890123456789012345678901234567891")) == {
        "N": "0.12345678901234567890123456789012345679"}


def test_a_resize_sent_twice_after_a_lost_reply_is_applied_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with mock_aws(), atomic_dynamodb(monkeypatch):
        client = boto3.client("dynamodb")
        create_table("spend", client)
        store = DynamoDBStore("spend", lambda: client)
        limits = Limits(daily_usd=D("1"))
        held = reserve(store, "0.5", "r1", limits)
        assert held is not None
        real_update = client.update_item
        replays: list[dict[str, Any]] = []

        def lose_the_first_reply(**arguments: Any) -> Any:
            answer = real_update(**arguments)
            if not replays and "#a" in arguments.get("ExpressionAttributeNames", {}):
                replays.append(arguments)
                return real_update(**arguments)  # what boto3 does when the reply to a write that landed is lost
            return answer

        monkeypatch.setattr(client, "update_item", lose_the_first_reply)
        shrunk = store.resize(held, D("0.2"), limits, NOW)
        assert replays, "the resize was not replayed"
        assert shrunk.reservation is not None and shrunk.reservation.amount == D("0.2")
        assert store.committed("a", DAY1, NOW).day == D("0.2")  # once, not 0.5 - 0.3 - 0.3


def test_a_settlement_that_meets_a_transaction_conflict_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    with mock_aws(), atomic_dynamodb(monkeypatch):
        client = boto3.client("dynamodb")
        create_table("spend", client)
        store = DynamoDBStore("spend", lambda: client)
        limits = Limits(daily_usd=D("1"))
        held = reserve(store, "0.5", "r1", limits)
        assert held is not None
        real_transact = client.transact_write_items
        conflicts = [1]

        def conflict_once(**arguments: Any) -> Any:
            if conflicts:
                conflicts.pop()
                raise ClientError({"Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                                   "CancellationReasons": [{"Code": "TransactionConflict"}, {"Code": "None"},
                                                           {"Code": "None"}, {"Code": "None"}]}, "TransactWriteItems")
            return real_transact(**arguments)

        monkeypatch.setattr(client, "transact_write_items", conflict_once)
        store.settle(held, D("0.1"), entry("r1", "0.1"), NOW)
        # The reservation was replaced by the cost: not kept beside it, as if it had been reclaimed.
        assert store.committed("a", DAY1, NOW).day == D("0.1")


def test_a_sqlite_failure_inside_a_transaction_is_the_store_being_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "spend.sqlite3"))
    held = reserve(store, "0.5", "r1", Limits(daily_usd=D("1")))
    assert held is not None
    store._connection().execute("DROP TABLE usage")  # a damaged file
    with pytest.raises(StoreUnavailable):
        store.settle(held, D("0.1"), entry("r1", "0.1"), NOW)
    assert store.committed("a", DAY1, NOW).day == D("0.5")  # rolled back whole: the hold is still there


def test_usage_is_aggregated_per_day_caller_and_model(store: SpendStore) -> None:
    limits = Limits()
    for rid, caller, day, model, cost in (("r1", "a", "2026-12-01", "m:x", "0.1"), ("r2", "a", "2026-12-01", "m:x", "0.2"),
                                          ("r3", "a", "2026-12-02", "m:y", "0.3"), ("r4", "b", "2026-12-01", "m:x", "0.4")):
        periods = Periods(day, "2026-12")
        held = reserve(store, "1", rid, limits, periods, caller)
        assert held is not None
        store.settle(held, D(cost), entry(rid, cost, caller, day, model), NOW)
    mine = store.usage("a", "2026-12-01", "2026-12-31")
    assert [(r.day, r.model, r.requests, r.cost_usd, r.baseline_cost_usd) for r in mine] == [
        ("2026-12-01", "m:x", 2, D("0.3"), D("1.0")), ("2026-12-02", "m:y", 1, D("0.3"), D("0.5"))]
    everyone = store.usage(None, "2026-12-01", "2026-12-01")
    assert [(r.caller, r.cost_usd, r.input_tokens, r.cached_input_tokens, r.output_tokens) for r in everyone] == [
        ("a", D("0.3"), 20, 4, 10), ("b", D("0.4"), 10, 2, 5)]
    assert store.usage("a", "2026-12-02", "2026-12-02")[0].model == "m:y"
    assert sum(e.cost_usd for e in store.ledger(None, "2026-12-01", "2026-12-31")) == D("1.0")


def test_exact_amounts_survive_the_round_trip(store: SpendStore) -> None:
    held = reserve(store, "0.000000123456789012345", "r1", Limits(daily_usd=D("0.01")))
    assert held is not None
    store.settle(held, D("0.0000000987654321"), entry("r1", "0.0000000987654321"), NOW)
    assert store.committed("a", DAY1, NOW).day == D("0.0000000987654321")
    assert store.ledger("a", "2026-12-01", "2026-12-01")[0].cost_usd == D("0.0000000987654321")


def test_concurrent_reservations_never_pass_the_limit(store: SpendStore) -> None:
    """20 threads reserve 0.3 against a daily limit of 1.0: exactly 3 are admitted."""
    limits = Limits(daily_usd=D("1.0"))
    admitted: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def attempt(index: int) -> None:
        barrier.wait()
        try:
            if reserve(store, "0.3", f"r{index}", limits) is not None:
                admitted.append(f"r{index}")
        except BaseException as exc:  # noqa: BLE001  (reported below: a thread's error must fail the test)
            errors.append(exc)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []  # every thread got an answer: none was told the store is unavailable
    assert len(admitted) == 3
    assert store.committed("a", DAY1, NOW).day == D("0.9")


def test_a_new_sqlite_file_held_by_another_writer_is_waited_for_not_unavailable(tmp_path: Path) -> None:
    """Switching a new file to WAL needs it alone, and SQLite refuses that at once while another
    connection writes (every gunicorn worker opening a new file together): the store waits instead."""
    import sqlite3

    path = str(tmp_path / "spend.sqlite3")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE other_writer (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO other_writer VALUES (1)")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        held = reserve(SQLiteStore(path), "0.5", "r1", Limits(daily_usd=D("1")))
    finally:
        release.join()
        other.close()
    assert held is not None
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    check.close()


def test_what_is_held_by_requests_in_flight_is_reported_apart_from_what_is_spent(store: SpendStore) -> None:
    limits = Limits(daily_usd=D("1"))
    settled = reserve(store, "0.4", "r1", limits)
    assert settled is not None
    store.settle(settled, D("0.1"), entry("r1", "0.1"), NOW)
    assert reserve(store, "0.3", "r2", limits) is not None
    refused = store.reserve("a", DAY1, limits, D("0.7"), "r3", NOW + 30, NOW)
    assert refused.reservation is None
    assert (refused.committed.day, refused.committed.held_day) == (D("0.4"), D("0.3"))
    assert (refused.committed.month, refused.committed.held_month) == (D("0.4"), D("0.3"))
    later = store.committed("a", DAY1, LATER)  # r2's request cannot be running any more
    assert (later.day, later.held_day) == (D("0.1"), D("0"))


def test_sums_are_exact_beyond_28_digits(store: SpendStore) -> None:
    """The default decimal context rounds at 28 digits: 0.5 + 0.50000000000000000000000000001 would fit 1."""
    limits = Limits(daily_usd=D("1"))
    assert reserve(store, "0.5", "r1", limits) is not None
    assert reserve(store, "0.50000000000000000000000000001", "r2", limits) is None
    assert reserve(store, "0.5", "r3", limits) is not None


def test_periods_are_utc_calendar_days_and_months() -> None:
    assert periods_at(1_796_083_199.5) == Periods("2026-11-30", "2026-11")  # 23:59:59.5 UTC
    assert periods_at(1_796_083_200.0) == Periods("2026-12-01", "2026-12")  # midnight UTC


def test_the_sqlite_store_is_shared_by_processes(tmp_path: Path) -> None:
    """Two gunicorn workers are two processes on one file: a reservation in one counts in the other."""
    import subprocess
    import sys

    path = tmp_path / "spend.sqlite3"
    script = ("import sys; from decimal import Decimal; from costroute.stores.sqlite import SQLiteStore; "
              "from costroute.core.budgets import Limits, Periods; s = SQLiteStore(sys.argv[1]); "
              "o = s.reserve('a', Periods('2026-12-01', '2026-12'), Limits(daily_usd=Decimal('1')), Decimal('0.7'), "
              "sys.argv[2], 2e9, 1000.0); print('ok' if o.reservation else 'refused')")
    results = [subprocess.run([sys.executable, "-c", script, str(path), f"p{i}"], capture_output=True, text=True,
                              check=True, timeout=60).stdout.strip() for i in range(2)]
    assert results == ["ok", "refused"]


