"""Settings from the environment: defaults, parsing, refusals, and the key kept out of repr."""

from __future__ import annotations

import pytest

from costroute.config.settings import Settings, SettingsError


def test_defaults_with_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings.models_config_json is None and settings.models_config_ssm_parameter is None
    assert settings.config_ttl_seconds == 300 and settings.request_deadline_seconds == 25
    assert settings.max_body_bytes == 1024 * 1024 and settings.log_level == "INFO"
    assert not settings.openai_key_configured and not settings.mock_simulate_latency
    assert settings.openai_model.name == "gpt-4o-mini"


def test_values_are_read_and_blank_means_unset() -> None:
    settings = Settings.from_env({
        "MODELS_CONFIG_JSON": "  ", "OPENAI_API_KEY_SECRET_ID": "costroute/key", "CONFIG_TTL_SECONDS": "0",
        "MOCK_SIMULATE_LATENCY": "yes", "LOG_LEVEL": "debug", "BREAKER_FAILURE_THRESHOLD": "5",
    })
    assert settings.models_config_json is None
    assert settings.openai_key_configured
    assert settings.config_ttl_seconds == 0 and settings.mock_simulate_latency
    assert settings.log_level == "DEBUG" and settings.breaker_failure_threshold == 5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CONFIG_TTL_SECONDS", "soon"),
        ("CONFIG_TTL_SECONDS", "-1"),
        ("REQUEST_DEADLINE_SECONDS", "nan"),
        ("MAX_BODY_BYTES", "1.5"),
        ("BREAKER_FAILURE_THRESHOLD", "0"),
        ("MOCK_SIMULATE_LATENCY", "maybe"),
        ("LOG_LEVEL", "loud"),
        ("PROVIDER_TIMEOUT_SECONDS", "1e9"),
        ("REQUEST_DEADLINE_SECONDS", "901"),
        ("OPENAI_BASE_URL", "not-a-url"),
        ("OPENAI_BASE_URL", "ftp://example.com/v1"),
    ],
)
def test_unusable_values_are_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({variable: value})


def test_the_key_is_not_in_the_settings_repr() -> None:
    settings = Settings.from_env({"OPENAI_API_KEY": "sk-test-repr-secret"})
    assert settings.openai_key_configured
    assert "sk-test-repr-secret" not in repr(settings)


def test_the_longest_lambda_invocation_is_the_most_a_deadline_or_timeout_can_be() -> None:
    settings = Settings.from_env({"REQUEST_DEADLINE_SECONDS": "900", "PROVIDER_TIMEOUT_SECONDS": "900",
                                  "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"})
    assert (settings.request_deadline_seconds, settings.provider_timeout_seconds) == (900, 900)
    with pytest.raises(SettingsError, match="PROVIDER_TIMEOUT_SECONDS must be at most 900"):
        Settings.from_env({"PROVIDER_TIMEOUT_SECONDS": "1e9"})
