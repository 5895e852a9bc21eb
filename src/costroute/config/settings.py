"""Settings read once from the environment; every variable, its default and its meaning.

Reading the environment happens only here (and in bootstrap, which calls ``Settings.from_env``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from costroute.core.fields import is_http_url

DEFAULT_CONFIG_TTL_SECONDS = 300.0
DEFAULT_REQUEST_DEADLINE_SECONDS = 25.0
DEFAULT_PROVIDER_TIMEOUT_SECONDS = 20.0
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_BREAKER_FAILURES = 3
DEFAULT_BREAKER_COOLDOWN_SECONDS = 30.0
DEFAULT_SPEND_DB_PATH = ".cache/spend.sqlite3"
LOG_FORMATS = ("readable", "json", "emf")
# Lambda's longest invocation: no deadline or provider call can sensibly be longer.
MAX_SECONDS = 900.0


class SettingsError(ValueError):
    """An environment variable with a value the service cannot use."""


class OpenAIModelSettings(NamedTuple):
    """The seed's OPENAI_* variables that describe the one OpenAI model added to the default registry."""

    name: str = "gpt-4o-mini"
    input_cost_per_1k: str = "0.00015"
    output_cost_per_1k: str = "0.0006"
    quality: str = "3"
    latency_ms: str = "800"
    max_output_tokens: str = "4096"


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with."""

    models_config_json: str | None = None
    models_config_ssm_parameter: str | None = None
    models_config_file: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    openai_api_key_secret_id: str | None = None
    openai_base_url: str | None = None
    openai_model: OpenAIModelSettings = field(default_factory=OpenAIModelSettings)
    config_ttl_seconds: float = DEFAULT_CONFIG_TTL_SECONDS
    mock_simulate_latency: bool = False
    request_deadline_seconds: float = DEFAULT_REQUEST_DEADLINE_SECONDS
    provider_timeout_seconds: float = DEFAULT_PROVIDER_TIMEOUT_SECONDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    breaker_failure_threshold: int = DEFAULT_BREAKER_FAILURES
    breaker_cooldown_seconds: float = DEFAULT_BREAKER_COOLDOWN_SECONDS
    log_level: str = "INFO"
    # Spend control: a budgets document turns it on; DynamoDB when a table is named, else SQLite.
    budgets_config_json: str | None = None
    budgets_config_ssm_parameter: str | None = None
    spend_table_name: str | None = None
    spend_db_path: str = DEFAULT_SPEND_DB_PATH
    # readable (make run), json, or emf (Lambda: JSON lines that CloudWatch turns into metrics).
    log_format: str = "readable"
    # GET /metrics in Prometheus' format (make serve sets PROMETHEUS_MULTIPROC_DIR, which turns it on).
    prometheus_metrics: bool = False
    on_lambda: bool = False

    @property
    def budgets_configured(self) -> bool:
        """Whether a budgets document is given."""
        return bool(self.budgets_config_json or self.budgets_config_ssm_parameter)

    @property
    def openai_key_configured(self) -> bool:
        """Whether a key is set in the environment or a secret is named for it."""
        return bool(self.openai_api_key or self.openai_api_key_secret_id)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from the environment (or the given mapping); raise SettingsError when invalid."""
        env = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        defaults = OpenAIModelSettings()
        openai_model = OpenAIModelSettings(
            name=text("OPENAI_MODEL_NAME") or defaults.name,
            input_cost_per_1k=text("OPENAI_INPUT_COST_PER_1K") or defaults.input_cost_per_1k,
            output_cost_per_1k=text("OPENAI_OUTPUT_COST_PER_1K") or defaults.output_cost_per_1k,
            quality=text("OPENAI_MODEL_QUALITY") or defaults.quality,
            latency_ms=text("OPENAI_MODEL_LATENCY_MS") or defaults.latency_ms,
            max_output_tokens=text("OPENAI_MODEL_MAX_TOKENS") or defaults.max_output_tokens,
        )
        on_lambda = bool(text("AWS_LAMBDA_FUNCTION_NAME"))
        settings = cls(
            models_config_json=text("MODELS_CONFIG_JSON"),
            models_config_ssm_parameter=text("MODELS_CONFIG_SSM_PARAMETER"),
            models_config_file=text("MODELS_CONFIG_FILE"),
            openai_api_key=text("OPENAI_API_KEY"),
            openai_api_key_secret_id=text("OPENAI_API_KEY_SECRET_ID"),
            openai_base_url=_url(text("OPENAI_BASE_URL"), "OPENAI_BASE_URL"),
            openai_model=openai_model,
            config_ttl_seconds=_number(env, "CONFIG_TTL_SECONDS", DEFAULT_CONFIG_TTL_SECONDS, minimum=0),
            mock_simulate_latency=_flag(env, "MOCK_SIMULATE_LATENCY"),
            request_deadline_seconds=_number(
                env, "REQUEST_DEADLINE_SECONDS", DEFAULT_REQUEST_DEADLINE_SECONDS, minimum=0.1, maximum=MAX_SECONDS
            ),
            provider_timeout_seconds=_number(
                env, "PROVIDER_TIMEOUT_SECONDS", DEFAULT_PROVIDER_TIMEOUT_SECONDS, minimum=0.1, maximum=MAX_SECONDS
            ),
            max_body_bytes=int(_number(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=1, integer=True)),
            breaker_failure_threshold=int(
                _number(env, "BREAKER_FAILURE_THRESHOLD", DEFAULT_BREAKER_FAILURES, minimum=1, integer=True)
            ),
            breaker_cooldown_seconds=_number(
                env, "BREAKER_COOLDOWN_SECONDS", DEFAULT_BREAKER_COOLDOWN_SECONDS, minimum=0
            ),
            log_level=_log_level(env),
            budgets_config_json=text("BUDGETS_CONFIG_JSON"),
            budgets_config_ssm_parameter=text("BUDGETS_CONFIG_SSM_PARAMETER"),
            spend_table_name=text("SPEND_TABLE_NAME"),
            spend_db_path=text("SPEND_DB_PATH") or DEFAULT_SPEND_DB_PATH,
            log_format=_choice(env, "LOG_FORMAT", LOG_FORMATS, "emf" if on_lambda else "readable"),
            prometheus_metrics=_flag(env, "PROMETHEUS_METRICS") or bool(text("PROMETHEUS_MULTIPROC_DIR")),
            on_lambda=on_lambda,
        )
        if settings.on_lambda and settings.budgets_configured and not settings.spend_table_name:
            raise SettingsError("BUDGETS_CONFIG_* is set on Lambda but SPEND_TABLE_NAME is not: budgets on Lambda need "
                                "the DynamoDB table (a SQLite file would be one per container)")
        return settings


def _number(
    env: Mapping[str, str], name: str, default: float, minimum: float, integer: bool = False,
    maximum: float | None = None,
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError as exc:
        kind = "an integer" if integer else "a number"
        raise SettingsError(f"{name} must be {kind}, got {raw!r}") from exc
    if not math.isfinite(value) or value < minimum:
        raise SettingsError(f"{name} must be a finite number of at least {minimum:g}, got {raw!r}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name} must be at most {maximum:g} (Lambda's longest invocation is 15 minutes), "
                            f"got {raw!r}")
    return value


def _url(value: str | None, name: str) -> str | None:
    if value is not None and not is_http_url(value):
        raise SettingsError(f"{name} must be an http or https URL with a host, got {value!r}")
    return value


def _choice(env: Mapping[str, str], name: str, options: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in options:
        raise SettingsError(f"{name} must be one of {', '.join(options)}, got {raw!r}")
    return raw


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(env: Mapping[str, str]) -> str:
    raw = env.get("LOG_LEVEL", "").strip().upper() or "INFO"
    if raw not in LOG_LEVELS:
        raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return raw
