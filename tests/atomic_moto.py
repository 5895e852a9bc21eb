"""moto's DynamoDB made atomic per request, as DynamoDB itself is.

moto applies a conditional ``UpdateItem`` as read, check, write without a lock, so two threads can
both pass a condition only one of them should (20 threads reserving 0.3 against 1.0 were admitted
4 and 7 times, with lost updates); in server mode the races are rarer, not gone. DynamoDB applies
every write atomically per item (and a transaction atomically as a whole). Tests of concurrent
budgets give moto one lock around each data operation, so the fake keeps the promise the real
service keeps; everything else about moto is unchanged.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

OPERATIONS = ("get_item", "put_item", "update_item", "delete_item", "query", "scan", "transact_write_items",
              "transact_get_items", "batch_get_item", "batch_write_item")


@contextmanager
def atomic_dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Serialize moto's DynamoDB data operations for the duration."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()

    def serialized(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def under_lock(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        return under_lock

    for name in OPERATIONS:
        monkeypatch.setattr(DynamoDBBackend, name, serialized(getattr(DynamoDBBackend, name)))
    yield
