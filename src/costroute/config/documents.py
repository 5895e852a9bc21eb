"""A JSON document's source, for the registry and the budgets document alike: inline in an
environment variable (read once), or in an SSM parameter (re-read after ``CONFIG_TTL_SECONDS``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from costroute.config.aws import AwsClients, read_ssm_parameter
from costroute.config.cache import CachedValue, ConfigError
from costroute.config.settings import Settings
from costroute.core.fields import DocumentError

T = TypeVar("T")


def located(parse: Callable[[str], T], what: str) -> Callable[[str, str], T]:
    """``parse`` whose document errors become a ConfigError naming the document and where its text came from."""

    def parse_from(text: str, where: str) -> T:
        try:
            return parse(text)
        except DocumentError as exc:
            raise ConfigError(f"{what} in {where} is invalid: {exc}") from exc

    return parse_from


def inline_or_ssm(
    parse: Callable[[str, str], T], inline: str | None, variable: str, parameter: str | None, settings: Settings,
    clients: AwsClients, clock: Callable[[], float],
) -> CachedValue[T] | None:
    """The document from the variable's text, else from the SSM parameter; None when neither is set."""
    if inline is not None:
        text = inline
        return CachedValue(lambda: parse(text, variable), f"env:{variable}", math.inf, clock)
    if parameter is not None:
        name = parameter
        return CachedValue(lambda: parse(read_ssm_parameter(clients, name), f"SSM parameter '{name}'"), f"ssm:{name}",
                           settings.config_ttl_seconds, clock)
    return None
