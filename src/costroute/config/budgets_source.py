"""Where the budgets document comes from: ``BUDGETS_CONFIG_JSON``, else ``BUDGETS_CONFIG_SSM_PARAMETER``.

Cached and refreshed like the registry (the SSM parameter is re-read after ``CONFIG_TTL_SECONDS``;
a failed re-read keeps the last good document). No document: no budgets.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from costroute.config.aws import AwsClients, read_ssm_parameter
from costroute.config.cache import CachedValue, ConfigError
from costroute.config.settings import Settings
from costroute.core.budgets import BudgetsDocument, BudgetsError, parse_budgets_text


def budgets_source(settings: Settings, clients: AwsClients, clock: Callable[[], float]) -> CachedValue[BudgetsDocument] | None:
    """The cached budgets document, or None when none is configured."""

    def parse(text: str, where: str) -> BudgetsDocument:
        try:
            return parse_budgets_text(text)
        except BudgetsError as exc:
            raise ConfigError(f"the budgets document in {where} is invalid: {exc}") from exc

    if settings.budgets_config_json is not None:
        text = settings.budgets_config_json
        return CachedValue(lambda: parse(text, "BUDGETS_CONFIG_JSON"), "env:BUDGETS_CONFIG_JSON", math.inf, clock)
    if settings.budgets_config_ssm_parameter is not None:
        name = settings.budgets_config_ssm_parameter
        return CachedValue(lambda: parse(read_ssm_parameter(clients, name), f"SSM parameter '{name}'"), f"ssm:{name}",
                           settings.config_ttl_seconds, clock)
    return None
