"""Where the budgets document comes from: ``BUDGETS_CONFIG_JSON``, else ``BUDGETS_CONFIG_SSM_PARAMETER``.

Cached and refreshed like the registry (the SSM parameter is re-read after ``CONFIG_TTL_SECONDS``;
a failed re-read keeps the last good document). No document: no budgets.
"""

from __future__ import annotations

from collections.abc import Callable

from costroute.config.aws import AwsClients
from costroute.config.cache import CachedValue
from costroute.config.documents import inline_or_ssm, located
from costroute.config.settings import Settings
from costroute.core.budgets import BudgetsDocument, parse_budgets_text


def budgets_source(settings: Settings, clients: AwsClients, clock: Callable[[], float]) -> CachedValue[BudgetsDocument] | None:
    """The cached budgets document, or None when none is configured."""
    return inline_or_ssm(located(parse_budgets_text, "the budgets document"), settings.budgets_config_json,
                         "BUDGETS_CONFIG_JSON", settings.budgets_config_ssm_parameter, settings, clients, clock)
