"""Provider keys: one source per provider, from the environment or Secrets Manager, cached.

A source knows nothing of any SDK. A secret is read through one cached value per secret id, so
one Secrets Manager secret holding several providers' keys (JSON, one ``field`` each) is read
once per ``CONFIG_TTL_SECONDS``, keeps its last good value when a re-read fails, and after a 401
is re-read at most once every ``KEY_REFRESH_INTERVAL_SECONDS`` (a revoked key makes every request
a 401, which must not become a Secrets Manager read each).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from costroute.config.aws import AwsClients, read_secret_string
from costroute.config.cache import CachedValue, CacheStatus, ConfigError
from costroute.core.registry import CredentialRef, CredentialSource
from costroute.providers.base import KeySource, KeyUnavailable

# After a 401, a secret is re-read (a rotated key) at most once in this many seconds.
KEY_REFRESH_INTERVAL_SECONDS = 10.0


def cache_status(status: CacheStatus) -> dict[str, Any]:
    """A cached value's status for /health: source, whether loaded, age, last error; never the value."""
    result: dict[str, Any] = {"source": status.source, "loaded": status.loaded}
    if status.age_seconds is not None:
        result["age_seconds"] = round(status.age_seconds, 3)
    if status.last_error:
        result["last_error"] = status.last_error
    return result


class SharedSecret:
    """One Secrets Manager secret, cached, shared by every provider whose key it holds."""

    def __init__(self, value: CachedValue[str], clock: Callable[[], float]) -> None:
        self.value = value
        self._clock = clock
        self._forced_at: float | None = None
        self._lock = threading.Lock()

    def refresh(self) -> str:
        """Re-read now, unless it was forced less than KEY_REFRESH_INTERVAL_SECONDS ago."""
        with self._lock:
            now = self._clock()
            due = self._forced_at is None or now - self._forced_at >= KEY_REFRESH_INTERVAL_SECONDS
            if due:
                self._forced_at = now
        return self.value.refresh() if due else self.value.get()


class Secrets:
    """The secrets the registry's providers use, one cached value per secret id."""

    def __init__(self, clients: AwsClients, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clients = clients
        self._ttl = ttl_seconds
        self._clock = clock
        self._secrets: dict[str, SharedSecret] = {}
        self._lock = threading.Lock()

    def get(self, secret_id: str) -> SharedSecret:
        """The shared, cached secret with this id."""
        with self._lock:
            if secret_id not in self._secrets:
                clients = self._clients
                value = CachedValue(lambda: read_secret_string(clients, secret_id), f"secretsmanager:{secret_id}",
                                    self._ttl, self._clock)
                self._secrets[secret_id] = SharedSecret(value, self._clock)
            return self._secrets[secret_id]


class EnvKey:
    """A key in an environment variable."""

    def __init__(self, provider: str, variable: str, environ: Mapping[str, str]) -> None:
        self._provider = provider
        self._variable = variable
        self._environ = environ

    def configured(self) -> bool:
        """Whether the variable is set."""
        return bool(self._environ.get(self._variable, "").strip())

    def get_key(self) -> str:
        """The variable's value."""
        value = self._environ.get(self._variable, "").strip()
        if not value:
            raise KeyUnavailable(self.problem() or "")
        return value

    def refresh_key(self) -> str:
        """The environment cannot change under a running process: the same value."""
        return self.get_key()

    def problem(self) -> str | None:
        """Why the key cannot be used, or None."""
        if self.configured():
            return None
        return f"no API key for provider '{self._provider}': the environment variable {self._variable} is not set"

    def status(self) -> dict[str, Any]:
        """Where the key comes from; never the key."""
        return {"source": f"env:{self._variable}", "configured": self.configured()}


class SecretKey:
    """A key in a Secrets Manager secret: its whole ``SecretString``, or one field of its JSON."""

    def __init__(self, provider: str, secret: SharedSecret, field: str | None, field_optional: bool = False) -> None:
        self._provider = provider
        self._secret = secret
        self._field = field
        self._field_optional = field_optional

    def configured(self) -> bool:
        """A secret is named."""
        return True

    def get_key(self) -> str:
        """The key, read through the cache."""
        return self._extract(self._read(self._secret.value.get))

    def refresh_key(self) -> str:
        """Re-read the secret now (at most every KEY_REFRESH_INTERVAL_SECONDS)."""
        return self._extract(self._read(self._secret.refresh))

    def problem(self) -> str | None:
        """Why the key cannot be used now: the secret's first load failed recently (no network call here)."""
        failure = self._secret.value.load_failure()
        return None if failure is None else f"the key of provider '{self._provider}' is unavailable: {failure}"

    def status(self) -> dict[str, Any]:
        """Where the key comes from and how old it is; never the key."""
        result = {"configured": True, **cache_status(self._secret.value.status())}
        if self._field:
            result["field"] = self._field
        return result

    def _read(self, fetch: Callable[[], str]) -> str:
        try:
            return fetch()
        except ConfigError as exc:
            raise KeyUnavailable(f"the key of provider '{self._provider}' is unavailable: {exc}") from exc

    def _extract(self, text: str) -> str:
        source = self._secret.value.source
        stripped = text.strip()
        if not stripped.startswith("{"):
            if self._field and not self._field_optional:
                raise KeyUnavailable(f"{source} is not JSON, so it has no field '{self._field}' for provider "
                                     f"'{self._provider}'")
            return stripped
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise KeyUnavailable(f"{source} looks like JSON but does not parse") from exc
        if not self._field:
            raise KeyUnavailable(f"{source} is a JSON object: name the field that holds the key of provider "
                                 f"'{self._provider}' with \"field\"")
        key = data.get(self._field) if isinstance(data, dict) else None
        if not isinstance(key, str) or not key.strip():
            raise KeyUnavailable(f"{source} is a JSON object without a non-empty '{self._field}' field")
        return key.strip()


class NoKey:
    """A provider that takes no key: a local server, or Bedrock with the AWS role."""

    def __init__(self, note: str = "none") -> None:
        self._note = note

    def configured(self) -> bool:
        """Nothing to configure."""
        return True

    def get_key(self) -> None:
        """No key."""
        return None

    def refresh_key(self) -> None:
        """No key."""
        return None

    def problem(self) -> None:
        """Never a problem."""
        return None

    def status(self) -> dict[str, Any]:
        """Says that no key is used."""
        return {"source": self._note, "configured": True}


class MissingKey:
    """A provider that needs a key none of whose sources is configured."""

    def __init__(self, provider: str, hint: str | None) -> None:
        self._message = f"no API key is configured for provider '{provider}'" + (f" ({hint})" if hint else "")

    def configured(self) -> bool:
        """Not configured."""
        return False

    def get_key(self) -> str:
        """Always unavailable."""
        raise KeyUnavailable(self._message)

    def refresh_key(self) -> str:
        """Always unavailable."""
        raise KeyUnavailable(self._message)

    def problem(self) -> str:
        """Why: no source is configured."""
        return self._message

    def status(self) -> dict[str, Any]:
        """Not configured."""
        return {"source": None, "configured": False}


def key_source(provider: str, ref: CredentialRef, secrets: Secrets, environ: Mapping[str, str]) -> KeySource:
    """The key source a credential reference names."""
    if ref.source is CredentialSource.ENV and ref.name:
        return EnvKey(provider, ref.name, environ)
    if ref.source is CredentialSource.SECRET and ref.name:
        return SecretKey(provider, secrets.get(ref.name), ref.field, ref.field_optional)
    if ref.source is CredentialSource.MISSING:
        return MissingKey(provider, ref.hint)
    return NoKey()
