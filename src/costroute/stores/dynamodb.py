"""The DynamoDB spend store (Lambda): one table, named by ``SPEND_TABLE_NAME``.

Items (partition key ``pk``, sort key ``sk``, TTL attribute ``ttl``):

* ``BUDGET#<caller>`` / ``MONTH#2026-12``: ``m`` (committed this month), ``d01``..``d31``
  (committed each day of the month), and one top-level attribute ``r_<id>`` per open reservation
  (``{a: amount, d: day, x: expires_at}``). Committed means settled plus reserved.
* ``LEDGER#<caller>`` / ``<day>#<time>#<request id>``: one ledger entry (no prompt, no answer).
* ``USAGE#<caller>`` / ``<day>#<model>`` and ``USAGE#*`` / ``<day>#<caller>#<model>``: counters
  pre-aggregated at settlement (requests, cost, baseline cost, tokens), so ``GET /usage`` is one
  query over a key range, never a table scan.

Round trips on the hot path: one conditional ``UpdateItem`` to reserve (the condition holds every
limited window: ``attribute_not_exists(w) OR w <= limit - amount``, the subtraction done in
Python because condition expressions cannot do arithmetic; an amount above a limit is refused
without a write, since ``attribute_not_exists`` would admit it on a fresh item) and one
``TransactWriteItems`` to settle (the reservation replaced by the actual cost, the ledger entry,
both usage counters). A refused reservation reads the item back (``ALL_OLD``): reservations whose
request's deadline passed are reclaimed in one conditional update and the reservation is tried
again. Settlement is idempotent: the ledger put is conditioned on the entry not existing.

Amounts are DynamoDB numbers written in plain decimal notation. DynamoDB keeps 38 significant
digits and adds exactly within them; an amount with more digits (a price written with absurd
precision) is rounded up, never down, to 38. Real prices and token counts give far fewer digits,
so nothing is rounded in practice and sums are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import ROUND_CEILING, Context, Decimal, localcontext
from typing import Any

from costroute.core.budgets import Committed, Limits, Periods, Window, ceilings_for
from costroute.core.estimate import EXACT
from costroute.core.selection import plain_decimal
from costroute.stores import StoreUnavailable
from costroute.stores.base import LedgerEntry, Reservation, ReserveOutcome, UsageRow

# How long ledger items and old months' budget items stay before DynamoDB's TTL deletes them.
RETENTION_SECONDS = 400 * 86400
_DYNAMODB_DIGITS = Context(prec=38, rounding=ROUND_CEILING)
_RESERVE_TRIES = 3
_SETTLE_TRIES = 4


def _n(amount: Decimal | int | float) -> dict[str, str]:
    if isinstance(amount, Decimal):
        fitted = amount if len(amount.as_tuple().digits) <= 38 else _DYNAMODB_DIGITS.plus(amount)
        return {"N": plain_decimal(fitted)}
    return {"N": str(amount)}


def _s(text: str) -> dict[str, str]:
    return {"S": text}


def _decimal(item: Mapping[str, Any], name: str) -> Decimal:
    value = item.get(name)
    return Decimal(value["N"]) if isinstance(value, dict) and "N" in value else Decimal(0)


def _day_attribute(periods: Periods) -> str:
    return "d" + periods.day[-2:]


class DynamoDBStore:
    """Spend, reservations, ledger and usage in one DynamoDB table."""

    def __init__(self, table: str, client: Callable[[], Any]) -> None:
        self.table = table
        self._client = client

    # ---- reading an item ------------------------------------------------------------------------

    @staticmethod
    def _open_reservations(item: Mapping[str, Any]) -> dict[str, tuple[Decimal, str, float]]:
        open_: dict[str, tuple[Decimal, str, float]] = {}
        for name, value in item.items():
            if name.startswith("r_") and isinstance(value, dict) and "M" in value:
                entry = value["M"]
                open_[name] = (Decimal(entry["a"]["N"]), entry["d"]["S"], float(entry["x"]["N"]))
        return open_

    def _committed_of(self, item: Mapping[str, Any], periods: Periods, now: float) -> Committed:
        open_ = self._open_reservations(item).values()
        expired = [(a, d) for a, d, x in open_ if x <= now]
        live = [(a, d) for a, d, x in open_ if x > now]
        with localcontext(EXACT):
            month = _decimal(item, "m") - sum((a for a, _ in expired), Decimal(0))
            day = _decimal(item, _day_attribute(periods)) - sum((a for a, d in expired if d == periods.day), Decimal(0))
            held_month = sum((a for a, _ in live), Decimal(0))
            held_day = sum((a for a, d in live if d == periods.day), Decimal(0))
        return Committed(day, month, held_day, held_month)

    def _budget_key(self, caller: str, periods: Periods) -> dict[str, Any]:
        return {"pk": _s(f"BUDGET#{caller}"), "sk": _s(f"MONTH#{periods.month}")}

    # ---- reservations -----------------------------------------------------------------------------

    def reserve(self, caller: str, periods: Periods, limits: Limits, amount: Decimal, reservation_id: str,
                expires_at: float, now: float) -> ReserveOutcome:
        """One conditional write; on refusal, reclaim expired reservations and try again."""
        reservation = Reservation(reservation_id, caller, periods, amount, expires_at)
        if any(ceiling < 0 for ceiling in ceilings_for(limits, amount).values()):
            return ReserveOutcome(None, self.committed(caller, periods, now))  # more than a whole window's limit
        for _ in range(_RESERVE_TRIES):
            outcome, old = self._conditional_add(reservation, amount, limits, grow=amount, now=now)
            if outcome is not None:
                return outcome
            if old is None or not self._reclaim(caller, periods, old, now):
                committed = self._committed_of(old or {}, periods, now)
                return ReserveOutcome(None, committed)
        return ReserveOutcome(None, self.committed(caller, periods, now))

    def resize(self, reservation: Reservation, amount: Decimal, limits: Limits, now: float) -> ReserveOutcome:
        """Hold ``amount`` instead; growing must fit as a new reservation would."""
        delta = amount - reservation.amount
        resized = Reservation(reservation.id, reservation.caller, reservation.periods, amount, reservation.expires_at)
        for _ in range(_RESERVE_TRIES):
            outcome, old = self._conditional_add(resized, delta, limits, grow=max(delta, Decimal(0)), now=now,
                                                 previous=reservation.amount)
            if outcome is not None:
                return outcome
            if old is None or not self._reclaim(reservation.caller, reservation.periods, old, now):
                return ReserveOutcome(None, self._committed_of(old or {}, reservation.periods, now))
        return ReserveOutcome(None, self.committed(reservation.caller, reservation.periods, now))

    def _conditional_add(
        self, reservation: Reservation, delta: Decimal, limits: Limits, grow: Decimal, now: float,
        previous: Decimal | None = None,
    ) -> tuple[ReserveOutcome | None, dict[str, Any] | None]:
        """Add ``delta`` to the windows and (re)write the reservation if ``grow`` fits; (outcome, item read back).

        ``previous``: the amount an existing reservation holds now (a resize). The write is conditioned
        on it, so a write that boto3 sends again after a lost reply is refused rather than applied twice.
        """
        existing = previous is not None
        ceilings = ceilings_for(limits, grow) if grow > 0 else {}
        if any(ceiling < 0 for ceiling in ceilings.values()):
            # More than a whole window's limit: refused without a write (attribute_not_exists would admit it).
            return None, self._get(reservation.caller, reservation.periods)
        names = {"#m": "m", "#d": _day_attribute(reservation.periods), "#r": f"r_{reservation.id}", "#ttl": "ttl"}
        values: dict[str, Any] = {
            ":delta": _n(delta),
            ":entry": {"M": {"a": _n(reservation.amount), "d": _s(reservation.periods.day),
                             "x": _n(reservation.expires_at)}},
            ":ttl": _n(int(now) + RETENTION_SECONDS),
        }
        conditions = ["attribute_not_exists(#r)"]
        if previous is not None:
            # Still held at the amount it had (and not expired): a replayed resize or a dead hold is refused.
            names.update({"#a": "a", "#x": "x"})
            values.update({":previous": _n(previous), ":now": _n(now)})
            conditions = ["#r.#a = :previous", "#r.#x > :now"]
        for window, ceiling in ceilings.items():
            attribute = "#m" if window is Window.MONTH else "#d"
            placeholder = f":max_{window.value}"
            values[placeholder] = _n(ceiling)
            conditions.append(f"(attribute_not_exists({attribute}) OR {attribute} <= {placeholder})")
        try:
            response = self._call(
                "update_item", conditional=True, TableName=self.table,
                Key=self._budget_key(reservation.caller, reservation.periods),
                UpdateExpression="ADD #m :delta, #d :delta SET #r = :entry, #ttl = if_not_exists(#ttl, :ttl)",
                ConditionExpression=" AND ".join(conditions), ExpressionAttributeNames=names,
                ExpressionAttributeValues=values, ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except _ConditionFailed as failed:
            old = failed.item
            mine = old.get(f"r_{reservation.id}")
            if mine is not None and (not existing or _decimal(mine.get("M", {}), "a") == reservation.amount):
                # A retried write whose first try had succeeded: the reservation is ours, at this amount.
                return ReserveOutcome(reservation, self._committed_of(old, reservation.periods, now)), old
            return None, old
        return ReserveOutcome(reservation, self._committed_of(response["Attributes"], reservation.periods, now)), None

    def _reclaim(self, caller: str, periods: Periods, item: Mapping[str, Any], now: float) -> bool:
        """Remove the reservations whose deadline passed from one budget item; whether there were any."""
        expired = {name: (a, d) for name, (a, d, x) in self._open_reservations(item).items() if x <= now}
        if not expired:
            return False
        names: dict[str, str] = {"#m": "m"}
        values: dict[str, Any] = {":month": _n(-sum((a for a, _ in expired.values()), Decimal(0)))}
        adds = ["#m :month"]
        by_day: dict[str, Decimal] = {}
        for amount, day in expired.values():
            by_day[day] = by_day.get(day, Decimal(0)) + amount
        for index, (day, total) in enumerate(sorted(by_day.items())):
            names[f"#d{index}"] = "d" + day[-2:]
            values[f":d{index}"] = _n(-total)
            adds.append(f"#d{index} :d{index}")
        removes = []
        for index, name in enumerate(sorted(expired)):
            names[f"#r{index}"] = name
            removes.append(f"#r{index}")
        try:
            self._call("update_item", conditional=True, TableName=self.table, Key=self._budget_key(caller, periods),
                       UpdateExpression=f"REMOVE {', '.join(removes)} ADD {', '.join(adds)}",
                       ConditionExpression=" AND ".join(f"attribute_exists({r})" for r in removes),
                       ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except _ConditionFailed:
            pass  # another request reclaimed them first: the retry sees their effect either way
        return True

    # ---- settlement ---------------------------------------------------------------------------------

    def settle(self, reservation: Reservation, actual: Decimal, entry: LedgerEntry | None, now: float) -> None:
        """One transaction: the reservation replaced by the actual cost, the ledger entry, the usage counters."""
        held = True
        for _ in range(_SETTLE_TRIES):
            items = [self._settle_budget(reservation, actual, held)]
            if entry is not None:
                items += self._ledger_items(entry)
            try:
                self._call("transact_write_items", conditional=True, TransactItems=items)
                return
            except _ConditionFailed as failed:
                codes = [reason.get("Code") for reason in failed.reasons]
                if entry is not None and len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                    return  # this entry is already in the ledger: settled before (a retried settlement)
                if held and codes and codes[0] == "ConditionalCheckFailed":
                    held = False  # the reservation had been reclaimed (it expired): add the actual cost alone
                    continue
                if "TransactionConflict" in codes:
                    continue  # another request wrote one of these items meanwhile: the same transaction again
                raise StoreUnavailable(f"settling request {reservation.id} in table '{self.table}' was refused: "
                                       f"{', '.join(str(code) for code in codes)}") from None
        raise StoreUnavailable(f"settling request {reservation.id} in table '{self.table}' kept conflicting")

    def _settle_budget(self, reservation: Reservation, actual: Decimal, held: bool) -> dict[str, Any]:
        names = {"#m": "m", "#d": _day_attribute(reservation.periods)}
        update: dict[str, Any] = {"TableName": self.table, "Key": self._budget_key(reservation.caller, reservation.periods),
                                  "ExpressionAttributeNames": names}
        if held:
            names["#r"] = f"r_{reservation.id}"
            update.update(UpdateExpression="REMOVE #r ADD #m :delta, #d :delta", ConditionExpression="attribute_exists(#r)",
                          ExpressionAttributeValues={":delta": _n(actual - reservation.amount)})
        else:
            update.update(UpdateExpression="ADD #m :delta, #d :delta", ExpressionAttributeValues={":delta": _n(actual)})
        return {"Update": update}

    def _ledger_items(self, entry: LedgerEntry) -> list[dict[str, Any]]:
        ledger = {
            "pk": _s(f"LEDGER#{entry.caller}"), "sk": _s(f"{entry.day}#{entry.time:017.6f}#{entry.request_id}"),
            "request_id": _s(entry.request_id), "time": _n(entry.time), "caller": _s(entry.caller), "day": _s(entry.day),
            "model": _s(entry.model), "provider": _s(entry.provider), "input_tokens": _n(entry.input_tokens),
            "cached_input_tokens": _n(entry.cached_input_tokens), "cache_write_tokens": _n(entry.cache_write_tokens),
            "output_tokens": _n(entry.output_tokens), "estimated_cost_usd": _n(entry.estimated_cost_usd),
            "cost_usd": _n(entry.cost_usd), "baseline_cost_usd": _n(entry.baseline_cost_usd),
            "attempts": _n(entry.attempts), "outcome": _s(entry.outcome), "ttl": _n(int(entry.time) + RETENTION_SECONDS),
        }
        counters = {"#n": "requests", "#c": "cost_usd", "#b": "baseline_cost_usd", "#i": "input_tokens",
                    "#k": "cached_input_tokens", "#o": "output_tokens", "#day": "day", "#caller": "caller",
                    "#model": "model", "#ttl": "ttl"}
        amounts = {":one": _n(1), ":c": _n(entry.cost_usd), ":b": _n(entry.baseline_cost_usd), ":i": _n(entry.input_tokens),
                   ":k": _n(entry.cached_input_tokens), ":o": _n(entry.output_tokens), ":day": _s(entry.day),
                   ":caller": _s(entry.caller), ":model": _s(entry.model), ":ttl": _n(int(entry.time) + RETENTION_SECONDS)}
        expression = ("ADD #n :one, #c :c, #b :b, #i :i, #k :k, #o :o "
                      "SET #day = :day, #caller = :caller, #model = :model, #ttl = :ttl")
        return [
            {"Put": {"TableName": self.table, "Item": ledger, "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Update": {"TableName": self.table,
                        "Key": {"pk": _s(f"USAGE#{entry.caller}"), "sk": _s(f"{entry.day}#{entry.model}")},
                        "UpdateExpression": expression, "ExpressionAttributeNames": counters,
                        "ExpressionAttributeValues": amounts}},
            {"Update": {"TableName": self.table,
                        "Key": {"pk": _s("USAGE#*"), "sk": _s(f"{entry.day}#{entry.caller}#{entry.model}")},
                        "UpdateExpression": expression, "ExpressionAttributeNames": counters,
                        "ExpressionAttributeValues": amounts}},
        ]

    # ---- reads ----------------------------------------------------------------------------------------

    def _get(self, caller: str, periods: Periods) -> dict[str, Any]:
        response = self._call("get_item", TableName=self.table, Key=self._budget_key(caller, periods),
                              ConsistentRead=True)
        item: dict[str, Any] = response.get("Item") or {}
        return item

    def committed(self, caller: str, periods: Periods, now: float) -> Committed:
        """What counts against the caller's windows now (one strongly consistent read)."""
        return self._committed_of(self._get(caller, periods), periods, now)

    def _query(self, pk: str, first: str, last: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            args: dict[str, Any] = {
                "TableName": self.table, "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
                "ExpressionAttributeValues": {":pk": _s(pk), ":first": _s(first), ":last": _s(last + "~")},
            }
            if start is not None:
                args["ExclusiveStartKey"] = start
            response = self._call("query", **args)
            items += response.get("Items", [])
            start = response.get("LastEvaluatedKey")
            if not start:
                return items

    def usage(self, caller: str | None, first_day: str, last_day: str) -> list[UsageRow]:
        """One query over the pre-aggregated counters of a caller (or of everyone)."""
        items = self._query(f"USAGE#{caller}" if caller is not None else "USAGE#*", first_day, last_day)
        rows = [UsageRow(item["day"]["S"], item["caller"]["S"], item["model"]["S"], int(_decimal(item, "requests")),
                         _decimal(item, "cost_usd"), _decimal(item, "baseline_cost_usd"), int(_decimal(item, "input_tokens")),
                         int(_decimal(item, "cached_input_tokens")), int(_decimal(item, "output_tokens")))
                for item in items]
        return sorted(rows, key=lambda row: (row.day, row.caller, row.model))

    def ledger(self, caller: str | None, first_day: str, last_day: str) -> list[LedgerEntry]:
        """A caller's ledger entries between two days (one query); everyone's needs a caller list, so None
        reads the callers from the usage counters first (an audit, not the hot path)."""
        callers = [caller] if caller is not None else sorted({row.caller for row in self.usage(None, first_day, last_day)})
        entries = [self._entry(item) for who in callers for item in self._query(f"LEDGER#{who}", first_day, last_day)]
        return sorted(entries, key=lambda entry: (entry.time, entry.request_id))

    @staticmethod
    def _entry(item: Mapping[str, Any]) -> LedgerEntry:
        return LedgerEntry(
            request_id=item["request_id"]["S"], time=float(_decimal(item, "time")), caller=item["caller"]["S"],
            day=item["day"]["S"], model=item["model"]["S"], provider=item["provider"]["S"],
            input_tokens=int(_decimal(item, "input_tokens")), cached_input_tokens=int(_decimal(item, "cached_input_tokens")),
            cache_write_tokens=int(_decimal(item, "cache_write_tokens")), output_tokens=int(_decimal(item, "output_tokens")),
            estimated_cost_usd=_decimal(item, "estimated_cost_usd"), cost_usd=_decimal(item, "cost_usd"),
            baseline_cost_usd=_decimal(item, "baseline_cost_usd"), attempts=int(_decimal(item, "attempts")),
            outcome=item["outcome"]["S"])

    # ---- errors ------------------------------------------------------------------------------------------

    def _call(self, operation: str, conditional: bool = False, **arguments: Any) -> Any:
        """One DynamoDB operation; its errors translated (a failed condition raised as _ConditionFailed)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client(), operation)(**arguments)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if conditional and code == "ConditionalCheckFailedException":
                raise _ConditionFailed(exc.response.get("Item") or {}, []) from exc
            if conditional and code == "TransactionCanceledException":
                raise _ConditionFailed({}, exc.response.get("CancellationReasons") or []) from exc
            raise StoreUnavailable(f"{operation} on table '{self.table}' failed: {code}: {error.get('Message', '')}") from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"{operation} on table '{self.table}' failed: {exc}") from exc


class _ConditionFailed(Exception):
    """A condition of a write was not met: the item as it was, or a transaction's reasons."""

    def __init__(self, item: dict[str, Any], reasons: list[dict[str, Any]]) -> None:
        super().__init__("condition failed")
        self.item = item
        self.reasons = reasons
