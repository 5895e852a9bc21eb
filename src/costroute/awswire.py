"""What every boto3 client of this service shares: its wire logs kept quiet, secret bodies blanked.

botocore logs every response body at DEBUG (logger ``botocore.parsers``), a Secrets Manager
secret or a decrypted SecureString included, and botocore's and urllib3's DEBUG lines carry
request signatures and session tokens. ``install_log_redaction`` (called before the first client
of any kind is created: the configuration sources', Bedrock's) keeps those loggers at INFO even at
``LOG_LEVEL=DEBUG`` and blanks such bodies, so no log line ever holds a key. It imports nothing of
the AWS SDK itself.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from costroute.wirelogs import hold_at_info

# A boto3 client never waits longer than this to connect: a slow connect is a dead endpoint.
CONNECT_TIMEOUT_SECONDS = 2.0

# botocore's logger that writes "Response body:\n%r" at DEBUG.
BOTOCORE_BODY_LOGGER = "botocore.parsers"
_SECRET_BODY = re.compile(r'"(?:SecretString|SecretBinary)"|"Type"\s*:\s*"SecureString"')
REDACTED_BODY = "<response body withheld by costroute: it holds a secret>"


class SecretBodyFilter(logging.Filter):
    """Blanks log arguments that are AWS response bodies holding a secret or a SecureString value."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, with any secret-holding argument replaced."""
        args = record.args
        if isinstance(args, tuple) and any(_holds_secret(arg) for arg in args):
            record.args = tuple(REDACTED_BODY if _holds_secret(arg) else arg for arg in args)
        elif isinstance(record.msg, (str, bytes)) and _holds_secret(record.msg):
            record.msg, record.args = REDACTED_BODY, None
        return True


def _holds_secret(value: Any) -> bool:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    return isinstance(value, str) and _SECRET_BODY.search(value) is not None


_BODY_FILTER = SecretBodyFilter()


# botocore's and urllib3's DEBUG lines carry request headers: signatures and the session token.
WIRE_LOGGERS = ("botocore", "boto3", "urllib3")


def install_log_redaction() -> None:
    """Keep AWS wire logs at INFO or above and blank secret bodies (idempotent)."""
    hold_at_info(WIRE_LOGGERS)
    logger = logging.getLogger(BOTOCORE_BODY_LOGGER)
    if _BODY_FILTER not in logger.filters:
        logger.addFilter(_BODY_FILTER)
