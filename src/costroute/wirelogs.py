"""SDK wire loggers held at INFO, whatever the root logger's level.

At DEBUG the openai and anthropic SDKs log every request's options, messages included, and
their transport (httpx2, httpcore2) logs each step of the exchange; botocore logs response bodies and signatures
(see ``awswire``). A prompt or a key in a log line is a leak, so every adapter holds its SDK's
loggers at INFO before creating its first client: ``LOG_LEVEL=DEBUG`` (which is ``costroute``'s
own logger) or a root logger at DEBUG never turns them on. Their INFO lines (an HTTP status, a
retry) stay.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

# The openai SDK 3.x and the anthropic SDK 2.x both send through httpx2 (a fork of httpx).
OPENAI_WIRE_LOGGERS = ("openai", "httpx2", "httpcore2")
ANTHROPIC_WIRE_LOGGERS = ("anthropic", "httpx2", "httpcore2")


def hold_at_info(names: Iterable[str]) -> None:
    """Raise each named logger to INFO when its effective level is below it (idempotent)."""
    for name in names:
        wire = logging.getLogger(name)
        if wire.getEffectiveLevel() < logging.INFO:
            wire.setLevel(logging.INFO)
