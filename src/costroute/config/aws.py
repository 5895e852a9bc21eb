"""AWS configuration sources: the registry in SSM Parameter Store, provider keys in Secrets Manager.

boto3 is imported, and each client created, on first use only, then reused while the process
lives. AWS errors become ``ConfigError`` with the parameter or secret named and AWS's own code
and message (which never carry the secret's value).

The first client created installs ``awswire.install_log_redaction``, so ``LOG_LEVEL=DEBUG`` never
writes a provider's key to the logs.
"""

from __future__ import annotations

import threading
from typing import Any

from costroute.awswire import CONNECT_TIMEOUT_SECONDS, install_log_redaction
from costroute.config.cache import ConfigError

# botocore's defaults (60 s to connect, 60 s to read, 3 attempts) would let one slow read outlive
# the request deadline and API Gateway's 29 s. A read now costs at most
# (CONNECT + READ) * MAX_ATTEMPTS = 10 s, so the registry and the key together stay under 25 s.
READ_TIMEOUT_SECONDS = 3.0
MAX_ATTEMPTS = 2


class AwsClients:
    """Lazily created, shared boto3 clients with bounded timeouts and retries."""

    def __init__(
        self,
        connect_timeout_s: float = CONNECT_TIMEOUT_SECONDS,
        read_timeout_s: float = READ_TIMEOUT_SECONDS,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_attempts = max_attempts

    def client(self, service: str) -> Any:
        """The client for a service, created on first call."""
        with self._lock:
            if service not in self._clients:
                import boto3  # deferred: ~165 ms, paid only when an AWS source is configured
                from botocore.config import Config

                install_log_redaction()
                config = Config(
                    connect_timeout=self._connect_timeout_s,
                    read_timeout=self._read_timeout_s,
                    retries={"mode": "standard", "total_max_attempts": self._max_attempts},
                )
                self._clients[service] = boto3.client(service, config=config)
            return self._clients[service]


def read_ssm_parameter(clients: AwsClients, name: str) -> str:
    """The value of a String or SecureString parameter, decrypted."""
    try:
        response = clients.client("ssm").get_parameter(Name=name, WithDecryption=True)
        value: str = response["Parameter"]["Value"]
        return value
    except Exception as exc:
        raise _aws_error(exc, f"SSM parameter '{name}'") from exc


def read_secret_string(clients: AwsClients, secret_id: str) -> str:
    """The ``SecretString`` of a Secrets Manager secret (by name or ARN)."""
    try:
        response = clients.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except Exception as exc:
        raise _aws_error(exc, f"secret '{secret_id}'") from exc
    text = response.get("SecretString")
    if not isinstance(text, str) or not text:
        raise ConfigError(f"secret '{secret_id}' has no SecretString (a binary secret cannot hold a key)")
    return text


def _aws_error(exc: Exception, what: str) -> ConfigError:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return ConfigError(f"{what} could not be read: {error.get('Code', 'Error')}: {error.get('Message', '')}".rstrip(": "))
    if isinstance(exc, BotoCoreError):
        return ConfigError(f"{what} could not be read: {exc}")
    raise exc
