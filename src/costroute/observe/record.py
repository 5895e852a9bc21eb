"""The record of one HTTP request to the router: what every observer (log line, EMF, Prometheus) reads.

The web layer builds it when the answer is complete (for a stream, when the stream ends) from the
routing outcome or the failure, the HTTP status and the request's own facts. It holds no prompt
or answer text and no key: only names, counts, exact amounts and timings.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, NamedTuple, Protocol

Dialect = Literal["route", "chat", "other"]


class AttemptRecord(NamedTuple):
    """One provider call of the request."""

    model: str
    provider: str
    outcome: str  # "ok" or a failure kind (core.outcome.FailureKind values)
    status: int | None
    duration_ms: float


class RequestRecord(NamedTuple):
    """Everything the observers may say about one request; ``None`` where it does not apply."""

    request_id: str
    timestamp: float  # seconds since the epoch, when the request arrived
    dialect: Dialect
    method: str
    path: str
    http_status: int
    error_type: str | None = None  # the error's ``type`` in the JSON error (or the stream's error event)
    caller: str | None = None  # only when budgets exist
    requested_model: str | None = None  # /v1's ``model`` as sent ("auto" or a pin); None for /route
    model: str | None = None  # the model that served (or was chosen, for a dry run or a failure)
    provider: str | None = None  # that model's provider name
    provider_kind: str | None = None  # mock, openai, anthropic, bedrock
    upstream_model: str | None = None  # the name the provider was sent
    rung: int | None = None
    stream: bool = False
    dry_run: bool = False
    attempts: tuple[AttemptRecord, ...] = ()
    failovers: int = 0
    input_tokens: int = 0  # every input token, cached ones included (OpenAI's prompt_tokens)
    cached_input_tokens: int = 0  # read from a prompt cache
    cache_write_tokens: int = 0  # written to a prompt cache
    output_tokens: int = 0
    usage_reported: bool = False  # False: settled on the worst case
    estimated_cost_usd: Decimal | None = None
    cost_usd: Decimal | None = None
    router_overhead_ms: float = 0.0
    provider_ms: float = 0.0
    ceiling_applied: bool = False
    over_budget: bool = False
    over_budget_usd: Decimal | None = None
    budget_refused: bool = False  # refused by the caller's budget (402: exhausted, or too small for any call)


class RequestObserver(Protocol):
    """Told about every request once its answer is complete."""

    def observe(self, record: RequestRecord) -> None:
        """Take the record (must not raise; must not block on the network)."""
        ...
